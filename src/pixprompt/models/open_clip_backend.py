"""open_clip backend: built-in configs with pretrained tags, `hf-hub:` repos and `local-dir:` folders."""
from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.model import CustomTextCLIP
from open_clip.tokenizer import SimpleTokenizer, basic_clean, canonicalize_text
from open_clip.transformer import text_global_pool
from PIL import Image

from pixprompt.errors import UnavailableError
from pixprompt.models.base import ImageFeatures, ModelInfo, VisionLanguageModel
from pixprompt.models.device import PRECISIONS
from pixprompt.models.info import REPARAMETERISED_NOTE, preprocess_fact, tokenizer_fact
from pixprompt.models.preprocessing import bounded

SCHEMAS = ("hf-hub:", "local-dir:")
log = logging.getLogger(__name__)


def needs_quick_gelu(model_name: str, pretrained: str | None) -> bool:
    """Whether weights were trained with QuickGELU: OpenAI's tags and the `*-quickgelu` configs were.

    open_clip only warns when the activation does not match the tag; loading OpenAI weights with
    plain GELU silently costs accuracy, so pixprompt decides from the tag's own metadata.
    """
    config = open_clip.get_model_config(model_name) or {}
    if config.get("quick_gelu", False):
        return True
    if pretrained is None:
        return False
    return bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu", False))


def quick_gelu_name(model_name: str) -> str:
    """The name of the QuickGELU variant of a built-in config (`ViT-B-32` → `ViT-B-32-quickgelu`), or the name
    itself when it already uses QuickGELU or has no such variant."""
    if (open_clip.get_model_config(model_name) or {}).get("quick_gelu", False):
        return model_name
    variant = f"{model_name}-quickgelu"
    return variant if variant in open_clip.list_models() else model_name


def activation_note(model_name: str, pretrained: str | None) -> str | None:
    """How the activation was chosen when weights come from a checkpoint file, which does not say how it was
    trained: the config's own (GELU unless it is a `-quickgelu` one), and the name that gives OpenAI's."""
    if not pretrained or not Path(pretrained).is_file() or needs_quick_gelu(model_name, None):
        return None
    variant = quick_gelu_name(model_name)
    advice = f"; OpenAI-trained weights need QuickGELU: --model {variant}" if variant != model_name else ""
    return (f"{model_name} with the checkpoint file {Path(pretrained).name}: built with GELU, {model_name}'s own "
            f"activation (a file does not say how it was trained){advice}")


def reparameterised(model: torch.nn.Module) -> tuple[str, ...]:
    """Fold the training-time branches of MobileCLIP's and MobileCLIP 2's image towers (MobileOne and FastViT
    blocks, timm's `reparameterize()`) into single convolutions, as Apple's README requires before inference
    (its `reparameterize_model` does the same): the same function, computed the way it was meant to run. The
    catalog's note saying so, or none for models without such blocks."""
    blocks = [module for module in model.modules() if hasattr(module, "reparameterize")]
    for block in blocks:  # a block folds its own children first; they then return at once
        block.reparameterize()
    return REPARAMETERISED_NOTE if blocks else ()


def check_known(model_name: str, pretrained: str | None) -> None:
    """Refuse unknown built-in names and tags with the closest matches, before anything is downloaded."""
    if model_name.startswith(SCHEMAS):
        return
    names = open_clip.list_models()
    if model_name not in names:
        close = difflib.get_close_matches(model_name, names, n=5, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise UnavailableError(f"unknown model {model_name!r}.{hint} `pixprompt models` lists them all.")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained is None:
        raise UnavailableError(
            f"model {model_name!r} needs --pretrained: one of {', '.join(tags) or '(none published)'}"
            " or a checkpoint file path."
        )
    if pretrained not in tags and not Path(pretrained).is_file():
        close = difflib.get_close_matches(pretrained, tags, n=5, cutoff=0.3) or tags
        raise UnavailableError(
            f"unknown pretrained tag {pretrained!r} for {model_name}: use one of {', '.join(close)},"
            " or a path to a checkpoint file."
        )


def _token_counter(tokenizer: object) -> Callable[[str], int]:
    """How many tokens open_clip's tokenizer gives one prompt, special tokens included."""
    if isinstance(tokenizer, SimpleTokenizer):
        return lambda text: len(tokenizer.encode(text)) + 2  # start and end of text
    clean = getattr(tokenizer, "clean_fn", None) or (lambda t: canonicalize_text(basic_clean(t)))
    hf_tokenizer = tokenizer.tokenizer  # HFTokenizer and SigLipTokenizer wrap a transformers tokenizer
    return lambda text: len(hf_tokenizer(clean(text))["input_ids"])


@dataclass(frozen=True)
class CausalTextTower:
    """An open_clip text transformer with a causal mask, pooled at the end-of-text token.

    Under a causal mask the pooled position never attends to the padding after it, so each batch is
    encoded only up to its last end-of-text token: the same embeddings as the full 77-token
    computation for a fraction of its cost.
    """

    tower: torch.nn.Module  # CLIP itself, or CustomTextCLIP's `.text`: both hold the same parts
    pool_type: str
    eos_id: int | None

    @classmethod
    def find(cls, model: torch.nn.Module) -> CausalTextTower | None:
        """The model's text tower if it is causal and end-of-text pooled; None for any other design."""
        tower = model.text if isinstance(model, CustomTextCLIP) else model
        if not hasattr(tower, "token_embedding") or getattr(tower, "attn_mask", None) is None:
            return None  # a Hugging Face text tower, or a bidirectional one (SigLIP)
        if getattr(tower, "cls_emb", None) is not None:
            return None  # CoCa appends a class token at the end: its output depends on the length
        pool_type = getattr(tower, "pool_type", getattr(model, "text_pool_type", None))
        if pool_type not in ("argmax", "eos"):
            return None
        return cls(tower, pool_type, getattr(tower, "eos_id", getattr(model, "text_eos_id", None)))

    def end_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of each row's pooled token, found the way `text_global_pool` finds it."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        return (tokens == self.eos_id).int().argmax(dim=-1)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        length = int(self.end_positions(tokens).max()) + 1
        tokens = tokens[:, :length]
        tower = self.tower
        cast_dtype = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(tokens).to(cast_dtype) + tower.positional_embedding[:length].to(cast_dtype)
        x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
        pooled = text_global_pool(tower.ln_final(x), tokens, self.pool_type, eos_token_id=self.eos_id)
        projection = tower.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection


class OpenClipModel(VisionLanguageModel):
    """A model created by open_clip, with its own validation preprocessing and tokenizer."""

    def __init__(self, model: torch.nn.Module, preprocess: Callable, tokenizer: object, info: ModelInfo,
                 device: torch.device, precision: str):
        self.model = model.eval()
        self._preprocess = bounded(preprocess)
        self.tokenizer = tokenizer
        self._count_tokens = _token_counter(tokenizer)
        self.info = info
        self.device = device
        self.dtype = PRECISIONS[precision]
        self.logit_scale = float(model.logit_scale.detach().exp())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach()) if bias is not None else 0.0
        self.image_tower = ImageFeatures(self.model, lambda m, pixels: m.encode_image(pixels))
        self.causal_text = CausalTextTower.find(model)
        self.text_padding_free = self.causal_text is not None

    @classmethod
    def load(cls, model_name: str, pretrained: str | None, device: torch.device, precision: str,
             cache_dir: str | None = None) -> OpenClipModel:
        """Create the model the way its weights were trained (QuickGELU included) and load the weights."""
        check_known(model_name, pretrained)
        is_builtin = not model_name.startswith(SCHEMAS)
        quick_gelu = needs_quick_gelu(model_name, pretrained) if is_builtin else None
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=pretrained if is_builtin else None,
            precision=precision,
            device=device,
            force_quick_gelu=bool(quick_gelu),
            cache_dir=cache_dir,
        )
        tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
        params = sum(p.numel() for p in model.parameters())  # as trained and listed, before any folding
        notes = reparameterised(model.eval())
        note = activation_note(model_name, pretrained) if is_builtin else None
        if note:
            log.warning("%s", note)
        if quick_gelu is None:  # hf-hub: and local-dir: configs carry their own activation
            quick_gelu = any(isinstance(m, open_clip.transformer.QuickGELU) for m in model.modules())
        size = model.visual.preprocess_cfg.get("size", getattr(model.visual, "image_size", None))
        info = ModelInfo(
            backend="open_clip",
            name=model_name,
            pretrained=pretrained if is_builtin else None,
            quick_gelu=quick_gelu,
            image_size=size[0] if isinstance(size, (tuple, list)) else size,
            embed_dim=_embed_dim(model),
            params=params,
            context_length=tokenizer.context_length,
            preprocess=preprocess_fact(model.visual.preprocess_cfg, size[0] if isinstance(size, (tuple, list))
                                       else size),
            tokenizer=tokenizer_fact((open_clip.get_model_config(model_name) or {}).get("text_cfg", {}))
            if is_builtin else type(tokenizer).__name__,
            scoring="sigmoid" if getattr(model, "logit_bias", None) is not None else "softmax",
            notes=notes,
        )
        return cls(model, preprocess, tokenizer, info, device, precision)

    def lower_precision(self, dtype: torch.dtype) -> None:
        """open_clip's own cast for `precision="bf16"`/"fp16"`: linear and attention weights low, LayerNorms as
        their class says (its factory's `_set_model_device_and_precision`)."""
        from open_clip import factory

        name = "bf16" if dtype == torch.bfloat16 else "fp16"
        factory._set_model_device_and_precision(self.model, self.device, name,
                                                is_timm_model=type(getattr(self.model, "visual", None)).__name__
                                                == "TimmModel")
        self.dtype = dtype

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._preprocess(image)

    def token_counts(self, prompts: Sequence[str]) -> list[int]:
        return [self._count_tokens(p) for p in prompts]

    def _forward_text(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        if self.causal_text is not None:
            return self.causal_text(tokens)
        return self.model.encode_text(tokens)


def _embed_dim(model: torch.nn.Module) -> int | None:
    """The joint embedding width: the text projection's output (or the visual tower's output dim)."""
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.nn.Linear):
        return projection.out_features
    if isinstance(projection, torch.Tensor):
        return projection.shape[1]
    return getattr(model.visual, "output_dim", None)
