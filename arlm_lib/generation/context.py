"""The context window that generation conditions on, with or without a KV cache.

:class:`ContextWindow` holds, for each row of a batch, the tokens the model currently sees, and hands
out next-token logits. Rows may have different lengths: they are left-padded, with an attention mask,
and their position ids restart at 0 after the padding, so a padded row computes what it would alone.

The past-context policy (see :class:`~.config.GenerationConfig`): a window grows to ``block_size``
tokens; when one more would not fit, it is cut back to its last ``keep`` tokens. With the cache, that
cut (or a full cache) means re-encoding the windows from scratch; without it, every step re-encodes
them anyway. Both paths see the same windows, so they give the same tokens.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..checks import is_token_id
from ..errors import GenerationError
from ..model import KVCache, StaticKVCache
from .compiled import compiled_decode_step, static_caches

__all__ = [
    "ContextWindow",
    "check_model",
    "eval_no_grad",
    "is_single_prompt",
    "model_device",
    "normalize_prompts",
]


@contextmanager
def eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Run a block in eval mode (no dropout) without autograd; restore the model's previous mode after."""
    was_training = model.training
    if was_training:  # switching walks every submodule: skip it when there is nothing to switch
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def check_model(model: object, call: str) -> None:
    """GenerationError unless ``model`` is a GPT-like module (``config.vocab_size`` and ``block_size``).

    ``call`` is the function's signature as a reader writes it, e.g. ``generate_text(model, tokenizer,
    prompt)``: the usual mistake is arguments in the wrong order, which would otherwise end in an
    AttributeError about ``config`` deep inside.
    """
    config = getattr(model, "config", None)
    if not (isinstance(model, nn.Module) and hasattr(config, "vocab_size") and hasattr(config, "block_size")):
        raise GenerationError(
            f"model must be a GPT (arlm_lib.model.GPT), got {type(model).__name__}: the call is {call}"
        )


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def is_single_prompt(prompt_ids: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor) -> bool:
    """True for one prompt (a flat sequence or 1-D tensor/array, or empty), False for a batch of prompts."""
    # By dimension, for a numpy array too: its rows are not Sequences, so a 2-D array would otherwise
    # pass for one prompt whose "ids" are rows.
    if isinstance(prompt_ids, (torch.Tensor, np.ndarray)):
        return prompt_ids.ndim == 1
    items = list(prompt_ids)
    if not items:
        return True
    first = items[0]
    if isinstance(first, (torch.Tensor, np.ndarray)):
        # A 0-d tensor is one token id (what iterating over a 1-D tensor gives), not a prompt.
        return first.ndim == 0
    return not isinstance(first, Sequence)


def normalize_prompts(
    prompt_ids: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    vocab_size: int,
    bos_id: int | None,
) -> tuple[list[list[int]], bool]:
    """Turn one prompt or a batch of prompts into lists of ints; return (prompts, was_a_single_prompt).

    Accepts a 1-D tensor or list of ints (one prompt), or a 2-D tensor / list of lists (a batch). An
    empty prompt becomes ``[bos_id]``: generation starts from the document-start token.
    """
    if isinstance(prompt_ids, str):
        raise GenerationError("prompt_ids must be token ids, not a str: use generate_text() for text")
    if bos_id is not None and not is_token_id(bos_id, vocab_size):
        raise GenerationError(
            f"bos_id {bos_id!r} is not a token id: ids must be integers in 0..{vocab_size - 1}"
        )
    if isinstance(prompt_ids, (torch.Tensor, np.ndarray)):
        if prompt_ids.ndim not in (1, 2):
            kind = "tensor" if isinstance(prompt_ids, torch.Tensor) else "array"
            raise GenerationError(f"prompt {kind} must be 1-D or 2-D, got shape {tuple(prompt_ids.shape)}")
    single = is_single_prompt(prompt_ids)
    if isinstance(prompt_ids, np.ndarray):
        prompt_ids = prompt_ids.tolist()  # Python scalars: errors name 1.5, not np.float64(1.5)
    if isinstance(prompt_ids, torch.Tensor):
        prompts = [prompt_ids.tolist()] if single else prompt_ids.tolist()
    else:
        raw = [list(prompt_ids)] if single else list(prompt_ids)
        prompts = [p.tolist() if isinstance(p, (torch.Tensor, np.ndarray)) else list(p) for p in raw]
        # 0-d tensors (iterating over a 1-D tensor gives them) are plain ids once unwrapped.
        prompts = [
            [t.item() if isinstance(t, torch.Tensor) and t.dim() == 0 else t for t in p] for p in prompts
        ]
    if not prompts:
        raise GenerationError("no prompts given: pass at least one (an empty prompt [] is allowed)")
    out = []
    for row, prompt in enumerate(prompts):
        for t in prompt:
            if not is_token_id(t, vocab_size):
                raise GenerationError(
                    f"{prompt_name(row, len(prompts))} has token id {t!r}: ids must be integers in "
                    f"0..{vocab_size - 1}"
                )
        prompt = [int(t) for t in prompt]
        if not prompt:
            if bos_id is None:
                raise GenerationError("an empty prompt needs a start token: pass bos_id= or tokenizer=")
            prompt = [int(bos_id)]
        out.append(prompt)
    return out, single


def prompt_name(row: int, count: int) -> str:
    """How messages name prompt ``row`` of ``count``: by its row (0-based, as in Python) in a batch of
    several, or as "the prompt" when there is one (a batch of one included: the command line and
    generate_text pass one so)."""
    return "the prompt" if count == 1 else f"prompt {row}"


def crop_prompt(prompt: list[int], block_size: int, row: int = 0, count: int = 1) -> list[int]:
    """The last ``block_size`` tokens of ``prompt`` (row ``row`` of ``count`` prompts), with a warning
    if anything was cut."""
    if len(prompt) > block_size:
        warnings.warn(
            f"{prompt_name(row, count)} has {len(prompt)} tokens, more than the context window (block_size="
            f"{block_size}); it is cropped from the left to its last {block_size} tokens",
            stacklevel=3,
        )
        return prompt[-block_size:]
    return prompt


class ContextWindow:
    """Per-row token windows and (optionally) their KV cache; gives each row's next-token logits.

    With ``track_hidden=True`` it also keeps, per row, the final hidden state of every token of the
    window (what contrastive search compares a candidate with), computed with the same forward passes.
    """

    def __init__(
        self,
        model: nn.Module,
        windows: Sequence[Sequence[int]],
        *,
        keep: int,
        use_cache: bool = True,
        track_hidden: bool = False,
        compile: bool = False,
    ) -> None:
        self.model = model
        self.block_size: int = model.config.block_size
        self.keep = keep
        self.use_cache = use_cache
        self.device = model_device(model)
        self.windows = [list(w) for w in windows]
        self._cache: KVCache | None = None
        # compile=True: one StaticKVCache, reused when the windows are re-encoded (its tensors keep their
        # addresses, which a captured CUDA graph needs), and a compiled one-token step.
        self._static: StaticKVCache | None = None
        if compile and track_hidden:
            raise ValueError("compile=True gives logits only: it cannot track hidden states")
        if compile and not use_cache:
            raise ValueError("compile=True decodes through a static KV cache: it needs use_cache=True")
        self._decode = compiled_decode_step(self.device.type) if compile else None
        self._mask: torch.Tensor | None = None  # (B, L) 1 = real token; None when no row is padded
        self._pending: list[int] | None = None  # tokens appended but not yet fed through the cache
        self._logits: torch.Tensor | None = None  # (B, V) next-token logits for the current windows
        self.track_hidden = track_hidden
        self._hidden: list[torch.Tensor] = []  # per row (window length, n_embd), with the logits

    @property
    def batch_size(self) -> int:
        """How many rows (prompts) are still being generated."""
        return len(self.windows)

    def next_logits(self) -> torch.Tensor:
        """Next-token logits (B, V) of each row given its current window (computed lazily, once)."""
        if self._logits is None:
            if self.use_cache and self._cache is not None and self._pending is not None:
                self._logits = self._feed(self._pending)
            else:
                self._logits = self._encode()
            self._pending = None
        return self._logits

    def hidden_states(self) -> list[torch.Tensor]:
        """Per row, the final hidden state (n_tokens, n_embd) of each token of its current window."""
        if not self.track_hidden:
            raise ValueError("hidden_states() needs a ContextWindow made with track_hidden=True")
        self.next_logits()
        return self._hidden

    def append(self, tokens: Sequence[int]) -> None:
        """Add one token to every row's window, applying the past-context cut where a window overflows."""
        if len(tokens) != len(self.windows):
            raise ValueError(f"append needs one token per row ({len(self.windows)}), got {len(tokens)}")
        overflow = False
        for window, token in zip(self.windows, tokens):
            window.append(int(token))
            if len(window) > self.block_size:
                del window[: len(window) - self.keep]
                overflow = True
        self._logits = None
        if self._cache is not None and (overflow or self._cache.length >= self._cache.max_length):
            self._cache, self._mask = None, None  # cut windows (or a full cache): re-encode next time
        self._pending = [int(t) for t in tokens] if self._cache is not None else None

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in this order, repeats allowed): drops finished rows, reorders beams."""
        rows = [int(r) for r in rows]
        self.windows = [list(self.windows[r]) for r in rows]
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        if self._cache is not None and self._cache is self._static:
            self._select_static(index)
        elif self._cache is not None:
            # Row selection on the preallocated tensors: the cache keeps its length and capacity.
            self._cache.select_rows(index)
        if self._mask is not None:
            self._mask = self._mask.index_select(0, index)
        if self._logits is not None:
            self._logits = self._logits.index_select(0, index)
        if self._hidden:  # also between append and the next forward pass, which extends it
            self._hidden = [self._hidden[r] for r in rows]
        if self._pending is not None:
            self._pending = [self._pending[r] for r in rows]

    def _encode(self) -> torch.Tensor:
        """Run the whole (left-padded) windows through the model; start a fresh cache if enabled."""
        lengths = [len(w) for w in self.windows]
        width = max(lengths)
        idx = torch.zeros(len(lengths), width, dtype=torch.long)
        mask = torch.zeros(len(lengths), width, dtype=torch.long)
        for row, window in enumerate(self.windows):
            idx[row, width - len(window) :] = torch.as_tensor(window, dtype=torch.long)
            mask[row, width - len(window) :] = 1
        idx, mask = idx.to(self.device), mask.to(self.device)
        padded = min(lengths) < width
        # Positions count real tokens only, so a left-padded row gets the positions it has alone.
        positions = (mask.cumsum(1) - 1).clamp(min=0) if padded else None
        if self._decode is not None:
            cache = self._static_cache(len(lengths))
            cache.prepare(width, real=mask if padded else None)
            out = self.model(idx, position_ids=positions, kv_cache=cache)  # the prompt: eager, any length
        else:
            cache = self.model.new_kv_cache(len(lengths)) if self.use_cache else None
            out = self.model(
                idx, attention_mask=mask if padded else None, position_ids=positions, kv_cache=cache
            )
        self._cache = cache
        self._mask = mask if (padded and cache is not None) else None
        if self.track_hidden:  # each row's real tokens: the last len(window) positions
            self._hidden = [out.hidden_states[row, width - n :] for row, n in enumerate(lengths)]
        return out.logits[:, -1, :]

    def _static_cache(self, batch_size: int) -> StaticKVCache:
        """This window's static cache, emptied; another one from the pool if the batch changed size."""
        if self._static is None or self._static.batch_size != batch_size:
            self.close()
            self._static = static_caches.acquire(self.model, batch_size)
        self._static.reset()
        return self._static

    def _select_static(self, index: torch.Tensor) -> None:
        """Row selection for the static cache: the rows move into a pooled cache of the new size (tensors
        the compiled step already knows), not into fresh tensors as ``KVCache.select_rows`` makes."""
        old = self._static
        new = static_caches.acquire(self.model, len(index))
        new.copy_rows(old, index)
        static_caches.release(self.model, old)
        self._static = self._cache = new

    def close(self) -> None:
        """Give the static cache (``compile=True``) back to the pool, for the next generation call."""
        if self._static is not None:
            static_caches.release(self.model, self._static)
            self._static = None
            self._cache = None

    def _feed(self, tokens: list[int]) -> torch.Tensor:
        """Feed one new token per row through the cache."""
        idx = torch.as_tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        positions = None
        if self._mask is not None:
            if self._decode is None:  # a static cache records the padding itself (StaticKVCache.real)
                ones = torch.ones(len(tokens), 1, dtype=self._mask.dtype, device=self.device)
                self._mask = torch.cat([self._mask, ones], dim=1)
            # The new token sits at (window length - 1) in its own row's numbering.
            positions = torch.as_tensor(
                [len(w) - 1 for w in self.windows], dtype=torch.long, device=self.device
            ).unsqueeze(1)
        if self._decode is not None:
            self._cache.prepare(1)
            return self._decode(self.model, idx, positions, self._cache)
        out = self.model(idx, attention_mask=self._mask, position_ids=positions, kv_cache=self._cache)
        if self.track_hidden:
            self._hidden = [torch.cat([h, new]) for h, new in zip(self._hidden, out.hidden_states[:, -1:])]
        return out.logits[:, -1, :]
