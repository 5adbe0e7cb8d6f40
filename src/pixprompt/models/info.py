"""What a model is, as plain facts: importable without torch (`pixprompt models` lists these)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Scoring = Literal["softmax", "sigmoid"]


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a loaded (or listable) model, shown by `pixprompt models` and stored with results."""

    backend: str
    name: str
    pretrained: str | None
    quick_gelu: bool | None = None
    image_size: int | None = None
    embed_dim: int | None = None
    params: int | None = None
    context_length: int | None = None
    scoring: Scoring = "softmax"

    @property
    def identity(self) -> str:
        """A string naming the model and its weights, used in cache keys and saved classifiers."""
        return f"{self.backend}:{self.name}:{self.pretrained or ''}"

    @property
    def label(self) -> str:
        """The model as people read it (`model_label`); `identity` stays the exact name for caches."""
        return model_label(self.name, self.pretrained)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def display_model(name: str | None) -> str | None:
    """A model as a table shows it: a local folder by its folder name (the full path stays in JSON)."""
    if not name:
        return name
    path = name.removeprefix("local-dir:")
    if path != name or path.startswith(("/", ".", "~")) or "\\" in path:
        return Path(path).name or path
    return name


def model_label(name: str, pretrained: str | None) -> str:
    """A model as people read it in tables, figures and the web page: `display_model` and the pretrained tag."""
    return display_model(name) + (f" ({pretrained})" if pretrained else "")
