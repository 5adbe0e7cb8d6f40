"""bf16 on the CPU, checked like `--accelerate`: `auto` loads the model in fp32, embeds a fixed probe (images and
prompts) in fp32, casts the weights to bf16 as the model's library casts them, embeds the probe again, and keeps
bf16 only when every embedding's cosine to its fp32 one is at least PROBE_COSINE and the probe images' top-1 prompt
is the same; otherwise it says so in one line and the model is loaded again in fp32."""
from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from pixprompt.errors import first_line
from pixprompt.models.base import VisionLanguageModel

log = logging.getLogger(__name__)

#: The least cosine between a probe embedding in bf16 and in fp32 (the issue's measure on real images: 0.99995).
PROBE_COSINE = 0.9999
#: The probe's prompts: everyday classes, each under the standard template.
PROBE_WORDS = ("dog", "cat", "car", "tree", "house", "bird", "boat", "flower", "mountain", "person", "chair", "cup",
               "horse", "road", "river", "clock")


def probe_images(count: int = 8, size: int = 256) -> list[Image.Image]:
    """Deterministic photos-like images: smooth colour gradients, a disc and stripes of their own, some noise."""
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for number in range(count):
        base = np.stack([x * rng.uniform(0.2, 1), y * rng.uniform(0.2, 1), (1 - x) * rng.uniform(0.2, 1)], axis=-1)
        centre, radius = rng.uniform(0.2, 0.8, 2), rng.uniform(0.1, 0.3)
        disc = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) < radius ** 2
        base[disc] = rng.uniform(0, 1, 3)
        base += 0.15 * np.sin(2 * np.pi * (number + 2) * (x + y))[..., None]
        base += rng.normal(scale=0.03, size=base.shape)
        images.append(Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)))
    return images


def _probe_embeddings(model: VisionLanguageModel) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = [model.preprocess(image) for image in probe_images()]
    images = model.encode_images(torch.stack(pixels))
    with torch.inference_mode():
        texts = model._embed(model._forward_text, [f"a photo of a {word}." for word in PROBE_WORDS])
    return images, texts


def keeps_answers_in_bf16(model: VisionLanguageModel) -> tuple[bool, str]:
    """Cast `model` (loaded in fp32) to bf16 in place and say whether its probe embeddings still hold, with the
    measure; when they do not, the model is left in bf16 and must be loaded again."""
    images32, texts32 = _probe_embeddings(model)
    try:
        model.lower_precision(torch.bfloat16)
        images16, texts16 = _probe_embeddings(model)
    except Exception as error:  # the library's own cast or forward does not support bf16 for this model
        return False, f"bf16 does not run: {first_line(error, 120)}"
    cosine = float(torch.cat([torch.nn.functional.cosine_similarity(images16, images32),
                              torch.nn.functional.cosine_similarity(texts16, texts32)]).min())
    same_top1 = bool(((images16 @ texts16.T).argmax(1) == (images32 @ texts32.T).argmax(1)).all())
    measure = f"probe: least cosine to fp32 {cosine:.6f}, {'the same' if same_top1 else 'another'} top-1"
    return cosine >= PROBE_COSINE and same_top1, measure
