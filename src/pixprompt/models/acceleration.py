"""Optional faster image paths (torch.compile, channels-last, ONNX Runtime), each switched on only after
it reproduces the eager fp32 embeddings on a probe batch."""
from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from pixprompt.errors import UsageError
from pixprompt.models.base import VisionLanguageModel

log = logging.getLogger(__name__)

ImageForward = Callable[[torch.Tensor], torch.Tensor]

#: The least cosine similarity to the eager embeddings, on every probe image, for a path to be used.
MIN_COSINE = 0.9999


def _compiled(model: VisionLanguageModel) -> ImageForward:
    """torch.compile's default mode: pays off for long runs on GPUs and recent CPUs (needs a C++ compiler)."""
    return torch.compile(model.image_tower)


def _channels_last(model: VisionLanguageModel) -> ImageForward:
    """NHWC memory layout, which convolutional towers (ResNet, ConvNeXt) run faster in; ViTs gain nothing."""
    tower = model.image_tower.to(memory_format=torch.channels_last)
    return lambda pixels: tower(pixels.contiguous(memory_format=torch.channels_last))


def _onnx_runtime(model: VisionLanguageModel) -> ImageForward:
    """The image tower exported to ONNX and run by ONNX Runtime on the CPU (fp32)."""
    try:
        import onnxruntime
    except ImportError:
        raise UsageError("--accelerate onnx needs ONNX Runtime: pip install 'pixprompt[onnx]'") from None
    if model.device.type != "cpu" or model.dtype != torch.float32:
        raise UsageError("--accelerate onnx runs on the CPU in fp32: add --device cpu --precision fp32")
    size = model.info.image_size
    example = torch.zeros(1, 3, size, size)
    with tempfile.TemporaryDirectory(prefix="pixprompt-onnx-") as folder:
        path = Path(folder) / "image_tower.onnx"
        with warnings.catch_warnings():  # the tracer's notes on shape checks it keeps as constants
            warnings.simplefilter("ignore")
            torch.onnx.export(model.image_tower, (example,), str(path), input_names=["pixels"],
                              output_names=["features"], dynamo=False,
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda pixels: torch.from_numpy(session.run(None, {"pixels": pixels.numpy()})[0])


ACCELERATIONS: dict[str, Callable[[VisionLanguageModel], ImageForward]] = {
    "compile": _compiled,
    "channels-last": _channels_last,
    "onnx": _onnx_runtime,
}


def probe_pixels(model: VisionLanguageModel, count: int = 4) -> torch.Tensor:
    """A fixed batch of normalised-range inputs of the model's size, for comparing image paths."""
    generator = torch.Generator().manual_seed(0)
    size = model.info.image_size
    return torch.randn(count, 3, size, size, generator=generator)


def accelerate(model: VisionLanguageModel, name: str) -> bool:
    """Switch `model`'s image path to `name` if it matches the eager embeddings; else keep eager and warn.

    Returns whether the faster path is now in use.
    """
    if name not in ACCELERATIONS:
        raise UsageError(f"unknown --accelerate {name!r}: use one of {', '.join(ACCELERATIONS)}")
    probe = probe_pixels(model)
    eager = model.encode_images(probe)
    try:
        model.image_forward = ACCELERATIONS[name](model)
        faster = model.encode_images(probe)
    except UsageError:
        raise
    except Exception as error:  # a compiler or exporter that cannot handle this model
        model.image_forward = model.image_tower
        log.warning("--accelerate %s is not possible for %s (%s); using the eager model", name, model.info.name,
                    str(error).splitlines()[0][:200] if str(error) else type(error).__name__)
        return False
    cosine = float(torch.nn.functional.cosine_similarity(eager, faster).min())
    if cosine < MIN_COSINE:
        model.image_forward = model.image_tower
        log.warning("--accelerate %s changes %s's embeddings (cosine %.6f < %s); using the eager model",
                    name, model.info.name, cosine, MIN_COSINE)
        return False
    log.info("--accelerate %s in use (cosine to eager ≥ %.6f)", name, cosine)
    return True
