"""Choosing the device and numeric precision a model runs in."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from pixprompt.errors import UsageError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def precision_name(dtype: torch.dtype) -> str:
    """A dtype as `--precision` names it (fp32, fp16, bf16), else torch's own name."""
    return next((name for name, known in PRECISIONS.items() if known == dtype), str(dtype).removeprefix("torch."))


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


#: Linux CPU flags of bf16 matrix units: AMX tiles (Intel since Sapphire Rapids) and AVX512-BF16 (Intel since
#: Cooper Lake, AMD since Zen 4). Without them torch emulates bf16 products, slower than fp32's.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: `PIXPROMPT_CPU_BF16`: `auto` (the CPU's flags), `off` (never bf16 by default) or `on` (as if the units were there).
BF16_SWITCH = "PIXPROMPT_CPU_BF16"


def cpu_bf16_units() -> str | None:
    """The CPU's bf16 matrix unit as its flag names it (read from /proc/cpuinfo on Linux; elsewhere none is
    assumed), or what $PIXPROMPT_CPU_BF16 says; None: no such unit."""
    import os

    switch = os.environ.get(BF16_SWITCH, "auto").strip().lower()
    if switch in ("0", "off", "no", "false"):
        return None
    if switch in ("1", "on", "yes", "true"):
        return f"{BF16_SWITCH}={switch}"
    if switch not in ("", "auto"):
        raise UsageError(f"{BF16_SWITCH}={switch[:20]!r}: use auto, on or off")
    flags = _cpu_flags()
    return next((flag for flag in BF16_FLAGS if flag in flags), None)


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: no flags to read
        return frozenset()
    return frozenset(word for line in text.splitlines() if line.startswith(("flags", "Features"))
                     for word in line.split(":", 1)[-1].split())


def choose_precision(requested: str | None, device: torch.device) -> tuple[str, str]:
    """(precision, why): an asked-for one as it is; `auto` (or None) fp16 on CUDA, bf16 on a CPU with bf16 matrix
    units (then checked against fp32 at load, see `models.cpu_precision`), fp32 elsewhere."""
    if requested not in (None, "", "auto"):
        if requested not in PRECISIONS:
            raise UsageError(f"unknown precision {requested!r}: use one of auto, {', '.join(PRECISIONS)}")
        return requested, f"asked for (--precision {requested})"
    if device.type == "cuda":
        return "fp16", "auto: fp16 on CUDA"
    if device.type == "cpu":
        units = cpu_bf16_units()
        if units:
            return "bf16", f"auto: the CPU has bf16 matrix units ({units})"
        if _cpu_flags() & set(BF16_FLAGS):
            return "fp32", f"auto: fp32 ({BF16_SWITCH}=off)"
        return "fp32", "auto: the CPU has no bf16 matrix units (bf16 would be emulated, slower than fp32)"
    return "fp32", f"auto: fp32 on {device.type}"
