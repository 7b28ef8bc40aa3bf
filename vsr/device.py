"""Choosing the compute device and the numeric precision (autocast dtype) for it."""
from __future__ import annotations

import contextlib

import torch

from vsr.errors import VsrError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else cpu; anything else is validated."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise VsrError(f"--device {name!r} is not a device name (use auto, cpu, cuda, cuda:1, ...)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VsrError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise VsrError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                       f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return dev


def resolve_devices(spec: str) -> list[str]:
    """``--device`` for several workers: ``cuda:0,cuda:1`` (a list), ``cuda:all`` (every GPU), or one device."""
    if spec == "cuda:all":
        if not torch.cuda.is_available():
            raise VsrError("--device cuda:all: CUDA is not available on this machine (use --device cpu)")
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise VsrError(f"--device {spec!r}: no device named")
    devices = [str(resolve_device(n)) for n in names]
    if len({torch.device(d).type for d in devices}) > 1:
        raise VsrError(f"--device {spec}: all workers' devices must be of one kind (all GPUs or the CPU)")
    return devices


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN reports native bf16 support (AVX512-BF16 / AMX), where bf16 beats fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: torch.device, name: str = "auto") -> str:
    """``auto`` -> bf16 where the device runs it natively, fp16 on older GPUs, fp32 otherwise."""
    if name not in PRECISIONS:
        raise VsrError(f"--precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise VsrError("--precision fp16 is for GPUs; on the CPU use bf16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
