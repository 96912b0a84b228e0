"""Choosing a device and the numeric precision to train in, and what the device can do at best.

* ``resolve_device("auto")`` picks CUDA, then Apple MPS, then the CPU.
* ``resolve_dtype("auto")`` picks bf16 on GPUs that have it, fp16 (with a loss scaler in the trainer)
  on older GPUs, and float32 elsewhere.
* :func:`cpu_threads` is how many CPU threads to give torch: what the machine (or container) allows.
* :func:`measure_peak_flops` times a large matmul: the "peak" an MFU figure is measured against when
  no datasheet number is given. :func:`spec_peak_flops` knows the datasheet numbers of a few GPUs.

Apple MPS: PyTorch does not implement every op on MPS. By default a missing op raises
``NotImplementedError``; the trainer runs one tiny forward/backward first
(:func:`fall_back_if_ops_missing`) and, if that raises, warns and trains on the CPU instead. Setting the
environment variable ``PYTORCH_ENABLE_MPS_FALLBACK=1`` *before Python starts* makes PyTorch run just the
missing ops on the CPU (with its own warning) and keep the rest on the GPU; the probe then passes.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings

import torch

from .errors import ConfigError, DeviceError

#: Where Linux states a container's CPU quota: cgroup v2, then v1 (quota and period files).
_CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
_CGROUP_V1_QUOTA = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")

# Dense (no sparsity) bf16/fp16 tensor-core peaks from NVIDIA's datasheets, in FLOP/s, by a substring of
# torch.cuda.get_device_name(). The first match wins, so more specific names come first. These are the
# numbers nanoGPT and llm.c divide by when they report MFU.
SPEC_PEAK_FLOPS_BF16: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200 NVL", 835e12),
    ("H200", 989e12),  # SXM, and GH200
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),  # before "L4", which it contains
    ("L4", 121e12),
    ("A10", 125e12),
)


def _cgroup_cpu_quota() -> float | None:
    """The container's CPU quota in CPUs (1.5 = one and a half), or None where it sets none."""
    try:
        with open(_CGROUP_CPU_MAX) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(_CGROUP_V1_QUOTA[0]) as fq, open(_CGROUP_V1_QUOTA[1]) as fp:
            quota_us, period_us = int(fq.read()), int(fp.read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def cpu_threads(at_most: int = 2) -> int:
    """How many threads torch should use on the CPU: the CPUs this process may run on, at most ``at_most``.

    Counts the CPUs in the process's affinity mask, and a container's CPU quota where one is set (Binder's
    pods see every core of the host but may use about one). More threads than CPUs is far slower, not
    faster: torch's threads spin while they wait for a core. The book's chapters use at most 2, the
    threads its numbers were computed with.
    """
    if isinstance(at_most, bool) or not isinstance(at_most, int) or at_most < 1:
        raise ConfigError(f"at_most must be a positive integer, got {at_most!r}")
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        available = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        available = min(available, max(1, int(quota)))
    return max(1, min(available, at_most))


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; an explicit device must exist on this machine."""
    base, _, index = str(name).partition(":")
    if base not in DEVICE_CHOICES or (index and (base != "cuda" or not index.isdigit())):
        raise DeviceError(
            f"unknown device {name!r}: choose one of {DEVICE_CHOICES} (cuda may take an index, cuda:1)"
        )
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {name!r} was requested but CUDA is not available on this machine: use --device cpu"
        )
    if base == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {name!r} was requested but Apple MPS is not available: use --device cpu")
    if base == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise DeviceError(
            f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
        )
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
    """Allow TF32 tensor cores on Ampere+ GPUs: float32 matmuls at ~8x the speed, 10-bit mantissa.

    These are process-wide PyTorch switches; they only touch CUDA, so CPU runs stay bit-reproducible.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# torch.compile's modes, for a torch without ``torch._inductor.list_mode_options`` to ask.
KNOWN_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_modes() -> tuple[str, ...]:
    """The ``mode=`` values this torch's ``torch.compile`` knows.

    Read from torch itself where it can tell (the list grows between versions); importing the compiler
    to ask takes about a second, so only code that is about to compile calls this.
    """
    try:
        from torch._inductor import list_mode_options

        return tuple(list_mode_options())
    except Exception:  # an older or trimmed torch: the modes every torch 2.x has
        return KNOWN_COMPILE_MODES


def compile_or_warn(model: torch.nn.Module, warn: bool = True, mode: str | None = None) -> torch.nn.Module:
    """``torch.compile(model, mode=mode)``, or ``model`` itself with a warning if compiling is not
    possible here. ``mode=None`` leaves torch.compile's own default."""
    try:
        return torch.compile(model) if mode is None else torch.compile(model, mode=mode)
    except Exception as exc:  # compile is an optimisation: never a reason to lose the run
        if warn:
            warn_compile_fallback(exc)
        return model


def warn_compile_fallback(exc: BaseException) -> None:
    """The one message shown when ``--compile`` cannot be honoured (at wrap time or at the first call).

    It names the root cause: torch wraps a compiler's error (``BackendCompilerFailed: backend=... raised:``)
    and puts the reason on a later line, or in the exception it wraps.
    """
    cause, seen = exc, {id(exc)}
    while (inner := getattr(cause, "inner_exception", None) or cause.__cause__) is not None:
        if id(inner) in seen:
            break
        seen.add(id(inner))
        cause = inner
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = f"{type(cause).__name__}: {lines[0][:300] if lines else '(no message)'}"
    if cause is not exc:
        reason = f"{type(exc).__name__}, from {reason}"
    warnings.warn(
        f"--compile: torch.compile failed ({reason}); "
        "training continues in eager mode, which gives the same results, only slower",
        RuntimeWarning,
        stacklevel=3,
    )


def runs_asynchronously(device: torch.device) -> bool:
    """True where the host only queues the work (CUDA, MPS): a timing then needs a sync point."""
    return device.type in ("cuda", "mps")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def default_matmul_dtype(device: torch.device) -> torch.dtype:
    """The dtype training would compute in on ``device`` (bf16/fp16 on CUDA, float32 elsewhere)."""
    return resolve_dtype("auto", device)


def measure_peak_flops(
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    size: int | None = None,
    min_time_s: float = 0.25,
) -> float:
    """FLOP/s of a large square matmul on ``device``: an achievable peak to divide by for MFU.

    A measured peak is below the datasheet number (clocks, power), so MFU against it reads higher than
    MFU against :func:`spec_peak_flops`. The global RNG is not touched.
    """
    device = torch.device(device)
    dtype = dtype or default_matmul_dtype(device)
    n = size or (8192 if device.type == "cuda" else 2048 if device.type == "mps" else 512)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernel selection, clocks ramping up, caches
        a @ b
    synchronize(device)
    iters, t0 = 0, time.perf_counter()
    while True:
        for _ in range(5):
            a @ b
        iters += 5
        synchronize(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time_s:
            return 2 * n**3 * iters / elapsed


def spec_peak_flops(device: torch.device | str, dtype: torch.dtype = torch.bfloat16) -> float | None:
    """Datasheet dense bf16/fp16 tensor-core peak of a known CUDA GPU, or ``None`` if unknown."""
    device = torch.device(device)
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in SPEC_PEAK_FLOPS_BF16 if key in name), None)


def resolve_peak_flops(value: float | str | None, device: torch.device, dtype: torch.dtype) -> float | None:
    """The peak FLOP/s behind the MFU column: a given number, ``"auto"`` (measured once), or ``None``."""
    if value is None:
        return None
    if value == "auto":
        return measure_peak_flops(device, dtype)
    return float(value)


def fall_back_if_ops_missing(
    model: torch.nn.Module, device: torch.device, dtype: torch.dtype, seq_len: int
) -> torch.device:
    """Probe one tiny forward/backward of ``model`` (already on ``device``); if an op is missing there
    (``NotImplementedError``, as MPS raises), warn, move the model to the CPU and return the CPU.

    The probe runs in eval mode on a batch of zeros, so it draws no random numbers, and its gradients
    are discarded.
    """
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, max(1, min(seq_len, 8)), dtype=torch.long, device=device)
        with autocast_context(device, dtype):
            loss = model(x, x).loss
        loss.backward()
        return device
    except NotImplementedError as exc:
        warnings.warn(
            f"an operation the model needs is not implemented on {device.type} "
            f"({str(exc).strip().splitlines()[0][:200]}); training on the CPU instead. "
            "Set PYTORCH_ENABLE_MPS_FALLBACK=1 before starting Python to run only the missing ops on the CPU.",
            RuntimeWarning,
            stacklevel=2,
        )
        model.to("cpu")
        return torch.device("cpu")
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
