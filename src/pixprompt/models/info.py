"""What a model is, as plain facts: importable without torch (`pixprompt models` lists these)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
