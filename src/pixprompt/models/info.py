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
    #: How images are prepared (`preprocess_fact`) and prompts tokenised, as the model's authors do.
    preprocess: str | None = None
    tokenizer: str | None = None
    #: What pixprompt does to the model as loaded, as its authors require (MobileCLIP's re-parameterisation).
    notes: tuple[str, ...] = ()
    #: SigLIP 2 NaFlex: the most patches an image becomes (its image sequence length; `image_size` is then the
    #: side of a square image of that many patches). None: a fixed resolution.
    image_tokens: int | None = None

    @property
    def identity(self) -> str:
        """A string naming the model and its weights (and a NaFlex sequence length: it changes every image's
        features), used in cache keys and saved classifiers."""
        tokens = f":{self.image_tokens}-patches" if self.image_tokens else ""
        return f"{self.backend}:{self.name}:{self.pretrained or ''}{tokens}"

    @property
    def label(self) -> str:
        """The model as people read it (`model_label`); `identity` stays the exact name for caches."""
        return model_label(self.name, self.pretrained)

    def to_dict(self) -> dict[str, Any]:
        """The facts as JSON holds them (notes as a list)."""
        return {**asdict(self), "notes": list(self.notes)}


#: MobileCLIP's image towers (timm's FastViT and MobileOne) are re-parameterised when loaded (see
#: `open_clip_backend.reparameterised`).
REPARAMETERISED_NOTE = ("re-parameterised for inference (MobileOne/FastViT blocks folded), as Apple requires",)


def is_reparameterised(vision_cfg: dict) -> bool:
    """Whether an open_clip vision config's tower is one `reparameterised` folds (FastViT, MobileOne)."""
    return str(vision_cfg.get("timm_model_name", "")).startswith(("fastvit", "mobileone"))


#: CLIP's normalisation, which open_clip uses where a tag's config names none.
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def preprocess_fact(config: dict, size: int | None) -> str:
    """An open_clip preprocessing config (`resize_mode`, `interpolation`, `mean`, `std`) in one line:
    `squash to 256, bicubic, mean 0.5, std 0.5`; open_clip's defaults where the config is silent."""
    def values(numbers) -> str:
        numbers = [round(float(n), 4) for n in numbers]
        return f"{numbers[0]:g}" if len(set(numbers)) == 1 else "/".join(f"{n:g}" for n in numbers)

    resize = {"shortest": "short side to", "longest": "long side to", "squash": "squash to"}
    mode = config.get("resize_mode") or "shortest"
    return (f"{resize.get(mode, mode)} {size}, {config.get('interpolation') or 'bicubic'}, "
            f"mean {values(config.get('mean') or CLIP_MEAN)}, std {values(config.get('std') or CLIP_STD)}")


def tokenizer_fact(text_config: dict) -> str:
    """An open_clip text config's tokenizer in a few words: the Hugging Face tokenizer it names, else open_clip's
    CLIP BPE; with its text cleaning where the config asks for one (SigLIP 2 canonicalises: lower case, no
    punctuation)."""
    name = text_config.get("hf_tokenizer_name") or text_config.get("hf_model_name")
    clean = (text_config.get("tokenizer_kwargs") or {}).get("clean")
    return (f"{name} (Hugging Face)" if name else "CLIP BPE") + (f", {clean}" if clean else "") + \
        f", {text_config.get('context_length', 77)} tokens"


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
