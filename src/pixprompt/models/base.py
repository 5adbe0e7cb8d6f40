"""The interface every backend implements: preprocess → encode → score, with backend specifics inside."""
from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import cached_property
from typing import Any

import torch
from PIL import Image

from pixprompt.models.batching import ShrinkingBatches
from pixprompt.models.info import ModelInfo, Scoring

log = logging.getLogger(__name__)



def module_fingerprint(module: torch.nn.Module) -> str:
    """A digest of a module's weights themselves (each parameter's and buffer's name, shape, dtype and its first and
    last 4,096 values), so that processes that load other weights under the same name can tell (ranks compare it)."""
    import hashlib

    digest = hashlib.sha256()
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    with torch.no_grad():
        for name, tensor in sorted(tensors.items()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            for part in (flat[:4096], flat[-4096:]):
                digest.update(part.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


class ImageFeatures(torch.nn.Module):
    """A dual encoder's unnormalised image features as one module: what `encode_images` runs and what
    `models.acceleration` compiles or exports.

    It calls the library's own image method on the whole model, so designs whose vision tower returns
    more than the features (CoCa's tokens, transformers' output objects) stay the library's business.
    """

    def __init__(self, model: torch.nn.Module, features: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self.features = features

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(self.model, pixels)


class VisionLanguageModel(ABC):
    """A CLIP-like dual encoder: images and prompts to L2-normalised embeddings in one space.

    Subclasses load a concrete library's model; everything downstream (classifiers, evaluation)
    sees only this interface. Embeddings come back as float32 on the CPU.
    """

    info: ModelInfo
    #: The module mapping a batch of preprocessed pixels to unnormalised image features.
    image_tower: ImageFeatures
    device: torch.device
    dtype: torch.dtype
    logit_scale: float
    logit_bias: float

    #: Sizes and modification times of the local weights files it was loaded from ("" for Hub downloads),
    #: so that features and classifiers cached for replaced weights are not reused (set by `load_model`).
    weights_stamp: str = ""

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

    #: Why the model runs in its precision (`choose_precision`, and the bf16 check's measure where it ran).
    precision_reason: str = ""

    def lower_precision(self, dtype: torch.dtype) -> None:
        """Cast the loaded fp32 weights to `dtype` in place, as the model's library casts them when loaded in it."""
        raise NotImplementedError(f"{type(self).__name__} cannot change its precision after loading")

    @cached_property
    def weights_fingerprint(self) -> str:
        """A digest of the loaded weights themselves (see `module_fingerprint`)."""
        return module_fingerprint(self.image_tower.model)

    # -- images -------------------------------------------------------------------------------
    @property
    def decode_size(self) -> int:
        """The side preprocessing resizes images to; JPEG draft decoding never goes below it."""
        assert self.info.image_size is not None
        return self.info.image_size

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Turn one RGB image into the model's input tensor (C, H, W), exactly as the model expects."""

    @cached_property
    def image_forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """What `encode_images` runs: the eager tower, or a checked faster path (`models.acceleration`)."""
        return self.image_tower

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on GPUs when running in fp16/bf16: norms and softmax stay in fp32."""
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def _embed(self, forward: Callable[[Any], torch.Tensor], inputs: Any) -> torch.Tensor:
        """Run one tower on a batch: L2-normalised float32 embeddings on the CPU."""
        with self.autocast():
            features = forward(inputs).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu()

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 CPU embeddings (N, D) of a batch of preprocessed images."""
        return self._embed(self.image_forward, pixels.to(self.device, dtype=self.dtype, non_blocking=True))

    # -- text ---------------------------------------------------------------------------------
    @abstractmethod
    def token_counts(self, prompts: Sequence[str]) -> list[int]:
        """Number of tokens each prompt takes, special tokens included, before truncation."""

    @abstractmethod
    def _forward_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unnormalised text features for one batch of prompts (tokenised the model's way)."""

    def warn_if_truncated(self, prompts: Sequence[str], counts: Sequence[int]) -> None:
        """Log one warning naming how many prompts the tokenizer will cut, and the longest of them."""
        too_long = [(n, p) for n, p in zip(counts, prompts) if n > self.context_length]
        if too_long:
            longest = max(too_long)[1]
            log.warning(
                "%d prompt(s) exceed the model's %d-token context and are truncated as its tokenizer does, "
                "e.g. %r", len(too_long), self.context_length, longest[:120],
            )

    @cached_property
    def _text_batches(self) -> ShrinkingBatches:
        return ShrinkingBatches(lambda prompts: self._embed(self._forward_text, prompts), "prompts")

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str], batch_size: int = 256,
                    guard: Callable[[], AbstractContextManager] = nullcontext) -> torch.Tensor:
        """L2-normalised float32 CPU embeddings (N, D) of prompts, in input order.

        Padding-free towers get their prompts sorted by length, so each batch is as short as its
        prompts allow; the others are encoded in input order at their fixed length. Each batch runs
        inside `guard()` (a server's model lock: other requests get the model between batches).
        """
        from pixprompt.progress import progress_bar

        if not prompts:
            raise ValueError("encode_text needs at least one prompt")
        counts = self.token_counts(prompts)
        self.warn_if_truncated(prompts, counts)
        order = sorted(range(len(prompts)), key=counts.__getitem__) if self.text_padding_free \
            else list(range(len(prompts)))
        chunks = []
        with progress_bar(total=len(prompts), desc="encode prompts", unit="prompt") as bar:
            for start in range(0, len(prompts), batch_size):
                batch = [prompts[i] for i in order[start:start + batch_size]]
                with guard():
                    chunks.append(self._text_batches(batch))
                bar.update(len(batch))
        embeddings = torch.empty(len(prompts), chunks[0].shape[1])
        embeddings[torch.tensor(order)] = torch.cat(chunks)
        broken = (~torch.isfinite(embeddings).all(dim=1)).nonzero().flatten()
        if len(broken):  # no score, classifier or cache is ever made from them
            from pixprompt.errors import UnavailableError
            from pixprompt.models.device import precision_name

            example, precision = prompts[int(broken[0])][:80], precision_name(self.dtype)
            raise UnavailableError(f"model {self.info.label} gave a non-finite text embedding (NaN or inf) for "
                                   f"{len(broken):,} of {len(prompts):,} prompts, e.g. {example!r}, in {precision}: "
                                   "its weights are broken or the precision overflowed (try --precision fp32)")
        return embeddings

    # -- scoring ------------------------------------------------------------------------------
    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Scaled similarities (N, C) as the model was trained to produce them (bias included)."""
        return self.logit_scale * image_features @ text_features.T + self.logit_bias

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's own probabilities: softmax over classes (CLIP) or per-class sigmoid (SigLIP)."""
        if self.scoring == "sigmoid":
            return torch.sigmoid(logits)
        return logits.softmax(dim=-1)
