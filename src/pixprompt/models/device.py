"""Choosing the device and numeric precision a model runs in."""
from __future__ import annotations

import torch

from pixprompt.errors import UsageError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(requested: str | None = None) -> torch.device:
    """`auto` (or None) picks CUDA, then Apple MPS, then the CPU; anything else must be a valid torch device.

    In a multi-process job (torchrun, srun) `auto` and `cuda` mean this rank's GPU, `cuda:LOCAL_RANK`.
    """
    from pixprompt.distributed import discover

    local_rank = discover().local_rank
    if requested in (None, "", "auto", "cuda") and torch.cuda.is_available() and discover().world > 1:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {requested!r} requested but CUDA is not available here: use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {requested!r} requested but Apple MPS is not available here: use --device cpu")
    return device


def resolve_precision(requested: str | None, device: torch.device) -> str:
    """`auto` (or None) is fp16 on CUDA and fp32 elsewhere; otherwise one of fp32, fp16, bf16."""
    if requested in (None, "", "auto"):
        return "fp16" if device.type == "cuda" else "fp32"
    if requested not in PRECISIONS:
        raise UsageError(f"unknown precision {requested!r}: use one of auto, {', '.join(PRECISIONS)}")
    return requested
