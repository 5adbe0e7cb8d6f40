"""transformers backend: CLIP, SigLIP and SigLIP 2 (fixed resolution and NaFlex) by Hub id or local folder."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from pixprompt.data.images import ImageRejected
from pixprompt.errors import UnavailableError, UsageError
from pixprompt.models.base import ImageFeatures, ModelInfo, VisionLanguageModel
from pixprompt.models.device import PRECISIONS
from pixprompt.models.preprocessing import resized_size

#: A short-side resize larger than this many crops (an aspect ratio past 16:1) is refused, not materialised.
REFUSE_ABOVE_CROP_AREAS = 16

#: model_type → how its text is tokenised and its logits scored, as the authors trained it.
#: SigLIP's text tower pools the last position, so prompts are padded to the fixed training length.
#: SigLIP 2 NaFlex (`siglip2`) lower-cases in its own tokenizer (transformers' `Siglip2Tokenizer`) and pads to 64.
TEXT_RULES: dict[str, dict[str, Any]] = {
    "clip": {"padding": "longest", "scoring": "softmax"},
    "siglip": {"padding": "max_length", "scoring": "sigmoid"},
    "siglip2": {"padding": "max_length", "scoring": "sigmoid"},
}


def _features(output: Any) -> torch.Tensor:
    """transformers ≥ 5 returns a model output with the projected `pooler_output`; older ones a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _image_features(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return _features(model.get_image_features(pixel_values=pixels))


#: The most patches a NaFlex image may become (a 128 × 128 grid; SigLIP 2's own configs use at most 1,024).
MAX_NAFLEX_PATCHES = 1 << 14


def check_naflex_processor(model_id: str, image_processor: Any, patch_size: int, tokens: Any) -> None:
    """Refuse, before any image, a NaFlex processor config that cannot work: a patch size other than the model's
    (its patch embedding would not fit), or a patch budget that is not a whole number from 1 to MAX_NAFLEX_PATCHES."""
    given = getattr(image_processor, "patch_size", patch_size)
    if not isinstance(given, int) or isinstance(given, bool) or given != patch_size:
        raise UnavailableError(f"{model_id}: its image processor cuts {given!r}-pixel patches but the model embeds "
                               f"{patch_size}-pixel ones: fix patch_size in preprocessor_config.json")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= MAX_NAFLEX_PATCHES:
        raise UnavailableError(f"{model_id}: its image processor's max_num_patches is {tokens!r}: give a whole number "
                               f"from 1 to {MAX_NAFLEX_PATCHES:,} in preprocessor_config.json")


def pack_naflex(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """One image's NaFlex inputs as one tensor, so that images batch, cache and travel as fixed-resolution ones do:
    (P + 1, F + 1) — the P patch rows of F values each with the attention mask in the last column, and a last row
    holding the patch grid's (height, width)."""
    pixels, mask, grid = inputs["pixel_values"][0], inputs["pixel_attention_mask"][0], inputs["spatial_shapes"][0]
    packed = torch.zeros(pixels.shape[0] + 1, pixels.shape[1] + 1, dtype=torch.float32)
    packed[:-1, :-1], packed[:-1, -1], packed[-1, :2] = pixels, mask.float(), grid.float()
    return packed


def _naflex_image_features(model: torch.nn.Module, packed: torch.Tensor) -> torch.Tensor:
    """`get_image_features` of a batch of `pack_naflex` tensors."""
    return _features(model.get_image_features(pixel_values=packed[:, :-1, :-1],
                                              pixel_attention_mask=packed[:, :-1, -1].round().long(),
                                              spatial_shapes=packed[:, -1, :2].round().long()))


class TransformersModel(VisionLanguageModel):
    """A dual encoder loaded with `AutoModel` and `AutoProcessor`."""

    def __init__(self, model: torch.nn.Module, processor: Any, info: ModelInfo, device: torch.device,
                 precision: str):
        self.model = model.eval()
        self.image_processor = processor.image_processor
        self.tokenizer = processor.tokenizer
        self.info = info
        self.device = device
        self.dtype = PRECISIONS[precision]
        self._padding = TEXT_RULES[model.config.model_type]["padding"]
        self.text_padding_free = self._padding == "longest"
        self.naflex = model.config.model_type == "siglip2"
        self.image_tower = ImageFeatures(self.model, _naflex_image_features if self.naflex else _image_features)
        self.logit_scale = float(model.logit_scale.detach().exp())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach()) if bias is not None else 0.0

    @classmethod
    def load(cls, model_id: str, device: torch.device, precision: str,
             cache_dir: str | None = None) -> TransformersModel:
        """Load weights, image processor and tokenizer from a Hub id or a local folder."""
        from transformers import AutoConfig, AutoModel, AutoProcessor
        from transformers import logging as transformers_logging

        from pixprompt import progress

        if not progress.ENABLED:  # --quiet: no weight-loading bars either
            transformers_logging.disable_progress_bar()

        config = AutoConfig.from_pretrained(model_id, cache_dir=cache_dir)
        if config.model_type not in TEXT_RULES:
            raise UsageError(
                f"{model_id} is a {config.model_type!r} model; the transformers backend supports "
                f"{', '.join(TEXT_RULES)}."
            )
        model = AutoModel.from_pretrained(model_id, cache_dir=cache_dir, dtype=PRECISIONS[precision]).to(device)
        processor = AutoProcessor.from_pretrained(model_id, cache_dir=cache_dir)
        text_config, vision_config = config.text_config, config.vision_config
        # NaFlex: each image becomes at most max_num_patches patches of its own aspect ratio (its sequence length)
        tokens = getattr(processor.image_processor, "max_num_patches", None) if config.model_type == "siglip2" \
            else None
        if config.model_type == "siglip2":
            check_naflex_processor(model_id, processor.image_processor, vision_config.patch_size, tokens)
        info = ModelInfo(
            backend="transformers",
            name=model_id,
            pretrained=None,
            quick_gelu=getattr(text_config, "hidden_act", None) == "quick_gelu",
            image_size=vision_config.patch_size * math.isqrt(tokens) if tokens else vision_config.image_size,
            image_tokens=tokens,
            embed_dim=getattr(config, "projection_dim", None) or vision_config.hidden_size,
            params=sum(p.numel() for p in model.parameters()),
            context_length=text_config.max_position_embeddings,
            scoring=TEXT_RULES[config.model_type]["scoring"],
        )
        return cls(model, processor, info, device, precision)

    def lower_precision(self, dtype: torch.dtype) -> None:
        """transformers' own cast: every weight in `dtype`, as `from_pretrained(dtype=…)` loads it."""
        self.model.to(dtype)
        self.dtype = dtype

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        if self.naflex:
            return pack_naflex(self.image_processor(images=image, return_tensors="pt"))
        short_side = (getattr(self.image_processor, "size", None) or {}).get("shortest_edge")
        if short_side:  # CLIP's processor resizes the short side first: refuse what that would blow up
            width, height = resized_size(*image.size, short_side)
            if width * height > REFUSE_ABOVE_CROP_AREAS * short_side**2:
                raise ImageRejected(f"{image.width}×{image.height} is too elongated for this model's "
                                    f"preprocessing (its resize would make {width}×{height} pixels): crop it first")
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def token_counts(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]

    def _forward_text(self, prompts: Sequence[str]) -> torch.Tensor:
        inputs = self.tokenizer(list(prompts), padding=self._padding, max_length=self.context_length,
                                truncation=True, return_tensors="pt").to(self.device)
        return _features(self.model.get_text_features(**inputs))
