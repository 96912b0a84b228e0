"""Compiled decoding: one-token steps over a :class:`~arlm_lib.model.StaticKVCache`.

With a plain KV cache, each new token costs one forward pass of small operations (a few hundred kernel
launches for GPT-2 small), and at batch size 1 on a GPU the host's Python and launch overhead, not the
GPU, sets the pace: bench/RESULTS.md measured 3.7 ms of wall time for 0.64 ms of GPU work per token on an
H200. Compiling the step fuses those operations; on CUDA, ``mode="reduce-overhead"`` also captures it
in a CUDA graph, replayed with one launch per token. Both need every step to have the same shapes,
which is what the static cache provides, and the same tensors: a graph reads and writes the cache where
it was captured. So static caches are pooled per model and reused by later generation calls.
"""

from __future__ import annotations

import functools
import warnings
import weakref

import torch
from torch import nn

from ..model import StaticKVCache

__all__ = ["CachePool", "compiled_decode_step", "decode_step"]


def decode_step(
    model: nn.Module, idx: torch.Tensor, position_ids: torch.Tensor | None, cache: StaticKVCache
) -> torch.Tensor:
    """Next-token logits (B, V) for one new token per row (``idx``: (B, 1)), written into ``cache``
    at the slot its ``prepare(1)`` chose."""
    return model(idx, position_ids=position_ids, kv_cache=cache).logits[:, -1, :]


class _CompiledStep:
    """``decode_step`` through torch.compile, or eagerly (with one warning) where compiling fails.

    torch.compile is lazy: a missing C++ compiler or Triton only shows at the first call, so that call
    is the one that may fall back. Eager decoding over the static cache gives the same tokens.
    """

    def __init__(self, device_type: str) -> None:
        # CUDA graphs remove the per-kernel launch cost that dominates one-token steps on a GPU; other
        # devices have no graphs to capture, and the default mode's fusion is what helps there.
        self.cuda = device_type == "cuda"
        self._compiled = torch.compile(
            decode_step, mode="reduce-overhead" if self.cuda else None, dynamic=False
        )
        self._state = "untried"  # "untried" -> "compiled" or "eager"

    def __call__(self, model, idx, position_ids, cache):
        if self._state == "eager":
            return decode_step(model, idx, position_ids, cache)
        if self._state == "compiled":
            # A copy: on CUDA the output lives in the graph's memory pool, which the next replay (this
            # stream's or an interleaved one's) overwrites; the caller may still read it after that.
            return self._compiled(model, idx, position_ids, cache).clone()
        try:  # the first call compiles: the only one allowed to fall back
            logits = self._compiled(model, idx, position_ids, cache)
        except Exception as exc:
            self._state = "eager"
            reason = (str(exc).strip().splitlines() or [""])[0][:300]
            warnings.warn(
                f"compiled decoding is not available here ({type(exc).__name__}: {reason}); "
                "generating eagerly, which gives the same tokens",
                RuntimeWarning,
                stacklevel=2,
            )
            return decode_step(model, idx, position_ids, cache)
        self._state = "compiled"
        return logits.clone()


@functools.cache
def compiled_decode_step(device_type: str) -> _CompiledStep:
    """The process's compiled step for a device type: one, so its compiled code (and, on CUDA, its
    captured graphs) is reused by every generation call."""
    return _CompiledStep(device_type)


class CachePool:
    """Static caches kept per model for reuse: a later generation call gets the same tensors, so the
    compiled step's guards hold and a captured CUDA graph stays valid (no recompile, no re-capture).

    A cache is lent to one caller at a time (two interleaved streams on one model get two caches).
    """

    def __init__(self) -> None:
        self._free: weakref.WeakKeyDictionary[nn.Module, list[StaticKVCache]] = weakref.WeakKeyDictionary()

    def acquire(self, model: nn.Module, batch_size: int) -> StaticKVCache:
        """An empty static cache for ``batch_size`` rows, in the model's current device and dtype."""
        wanted = model.new_kv_cache(0, static=True)  # no memory: only to learn the device and dtype
        free = self._free.setdefault(model, [])
        for i, cache in enumerate(free):
            layer = cache.layer_keys[0]
            if (
                (len(cache.layer_keys), cache.batch_size) == (model.config.n_layer, batch_size)
                and cache.max_length == model.config.block_size
                and (layer.device, layer.dtype) == (wanted.layer_keys[0].device, wanted.layer_keys[0].dtype)
            ):
                cache = free.pop(i)
                cache.reset()
                return cache
        cache = model.new_kv_cache(batch_size, static=True)
        if cache.real.device.type == "cuda":
            # A replayed graph reads and writes the cache in place: torch must not copy these tensors
            # into buffers of its own. Handed other tensors, it records the graph again (the mark
            # does not guard by default in recent torch, so that is no recompile).
            for tensor in cache.tensors():
                torch._dynamo.mark_static_address(tensor)
        return cache

    def release(self, model: nn.Module, cache: StaticKVCache) -> None:
        """Give ``cache`` back for a later call (at most a few kept per model: they hold memory)."""
        free = self._free.setdefault(model, [])
        if all(c is not cache for c in free):
            free.append(cache)
            del free[:-4]


static_caches = CachePool()
