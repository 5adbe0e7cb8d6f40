"""The interface every backend implements: preprocess → encode → score, with backend specifics inside."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from PIL import Image

log = logging.getLogger(__name__)

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


class VisionLanguageModel(ABC):
    """A CLIP-like dual encoder: images and prompts to L2-normalised embeddings in one space.

    Subclasses load a concrete library's model; everything downstream (classifiers, evaluation)
    sees only this interface. Embeddings come back as float32 on the CPU.
    """

    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    logit_scale: float
    logit_bias: float

    #: Whether a prompt's embedding is independent of the padding after it (causal text towers),
    #: so a batch may be encoded only up to its longest prompt.
    text_padding_free: bool = False

    @property
    def scoring(self) -> Scoring:
        return self.info.scoring

    @property
    def context_length(self) -> int:
        assert self.info.context_length is not None
        return self.info.context_length

    # -- images -------------------------------------------------------------------------------
    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Turn one RGB image into the model's input tensor (C, H, W), exactly as the model expects."""

    @abstractmethod
    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features for a batch already on `self.device` in `self.dtype`."""

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 CPU embeddings (N, D) of a batch of preprocessed images."""
        pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
        features = self._forward_images(pixels).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu()

    # -- text ---------------------------------------------------------------------------------
    @abstractmethod
    def token_counts(self, prompts: Sequence[str]) -> list[int]:
        """Number of tokens each prompt takes, special tokens included, before truncation."""

    @abstractmethod
    def _forward_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unnormalised text features for one batch of prompts (tokenised the model's way)."""

    def warn_if_truncated(self, prompts: Sequence[str]) -> None:
        """Log one warning naming how many prompts the tokenizer will cut, and the longest of them."""
        counts = self.token_counts(prompts)
        too_long = [(n, p) for n, p in zip(counts, prompts) if n > self.context_length]
        if too_long:
            longest = max(too_long)[1]
            log.warning(
                "%d prompt(s) exceed the model's %d-token context and are truncated as its tokenizer does, "
                "e.g. %r", len(too_long), self.context_length, longest[:120],
            )

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised float32 CPU embeddings (N, D) of prompts, encoded in batches."""
        from pixprompt.progress import progress_bar

        if not prompts:
            raise ValueError("encode_text needs at least one prompt")
        self.warn_if_truncated(prompts)
        chunks = []
        with progress_bar(total=len(prompts), desc="encode prompts", unit="prompt") as bar:
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start:start + batch_size]
                chunks.append(torch.nn.functional.normalize(self._forward_text(batch).float(), dim=-1).cpu())
                bar.update(len(batch))
        return torch.cat(chunks)

    # -- scoring ------------------------------------------------------------------------------
    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Scaled similarities (N, C) as the model was trained to produce them (bias included)."""
        return self.logit_scale * image_features @ text_features.T + self.logit_bias

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's own probabilities: softmax over classes (CLIP) or per-class sigmoid (SigLIP)."""
        if self.scoring == "sigmoid":
            return torch.sigmoid(logits)
        return logits.softmax(dim=-1)
