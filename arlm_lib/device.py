"""Choosing a device and the numeric precision to train in."""

from __future__ import annotations

import contextlib
import warnings

import torch

from .errors import ConfigError, DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; an explicit device must exist on this machine."""
    base = name.split(":", 1)[0]
    if base not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {name!r}: choose one of {DEVICE_CHOICES} (cuda may take an index, cuda:1)")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} was requested but CUDA is not available on this machine: use --device cpu")
    if base == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {name!r} was requested but Apple MPS is not available: use --device cpu")
    if base == "cuda" and ":" in name:
        index = int(name.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bf16 on GPUs that support it, fp16 on older GPUs, float32 elsewhere."""
    if name not in DTYPE_CHOICES:
        raise ConfigError(f"unknown dtype {name!r}: choose one of {DTYPE_CHOICES}")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtype = getattr(torch, name)
    if dtype is torch.float16 and device.type == "cpu":
        raise ConfigError("dtype 'float16' is not supported on the CPU: use 'bfloat16' or 'float32'")
    return dtype


def autocast_context(device: torch.device, dtype: torch.dtype):
    """Mixed precision for the forward pass: weights stay float32, matmuls run in ``dtype``."""
    if dtype is torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def enable_fast_matmul(device: torch.device) -> None:
    """Allow TF32 tensor cores on Ampere+ GPUs: float32 matmuls at ~8x the speed, 10-bit mantissa."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile`` the model, falling back to eager mode with a warning if no backend works."""
    if not enabled:
        return model
    try:
        return torch.compile(model)
    except Exception as exc:  # compile is an optimisation: never a reason to lose the run
        warnings.warn(f"torch.compile is unavailable here ({exc}); training continues in eager mode", stacklevel=2)
        return model
