"""Contrastive search (Su et al. 2022): deterministic decoding that trades probability for novelty.

At each step the ``top_k`` most likely tokens are candidates; each is scored by

    (1 - penalty_alpha) * p(token)  -  penalty_alpha * max_j cos(h_token, h_j)

where ``h_token`` is the model's final hidden state at the candidate and ``h_j`` those of the tokens
already in the context window. A candidate whose representation is close to something already said
(the start of a loop) loses to one that moves on. ``penalty_alpha=0`` is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import is_real
from .config import bad_value, check_int
from .context import ContextWindow, eval_no_grad
from .processors import LogitsProcessor, apply_processors, descending_order
from .search import start_search
from .values import check_callback

__all__ = ["check_penalty_alpha", "contrastive_search"]


def check_penalty_alpha(value: Any) -> None:
    """Raise GenerationError unless ``value`` is a real number in [0, 1]."""
    if not (is_real(value) and 0 <= value <= 1):  # NaN and inf fail the range
        raise bad_value("penalty_alpha", value, "it must be a number in [0, 1] (0 = greedy)")


def contrastive_search(
    model: nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    *,
    penalty_alpha: float = 0.6,
    top_k: int = 4,
    eos_id: int | None = None,
    bos_id: int | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    use_cache: bool = True,
    context_keep: int | None = None,
    tokenizer: Any = None,
    on_tokens: Callable[[list[int]], Any] | None = None,
) -> list[int]:
    """The new token ids of one prompt's continuation by contrastive search (ending with ``eos_id`` if
    it stopped there). ``on_tokens`` (optional) is called with each token as a one-id list as soon as it
    is chosen, to show the text as it comes (the command line's ``--stream``).

    ``penalty_alpha`` in [0, 1] weighs the degeneration penalty (Su et al. use 0.6 with ``top_k`` 4-10;
    Hugging Face's ``penalty_alpha``); 0 is greedy decoding. Each step runs the ``top_k`` candidates
    through the model in one batch (with the KV cache, one token each). The context the candidates are
    compared with is the window the model sees, so past the context window it follows the same policy as
    :func:`generate` (``context_keep``). Ties go to the more probable candidate, then the lower id. The
    optional penalties are applied to the probabilities first; ``tokenizer`` gives the default ``bos_id``
    and keeps a padded vocabulary's extra ids out, as in :func:`generate`.
    """
    check_penalty_alpha(penalty_alpha)
    check_int("top_k", top_k, 1)
    check_int("max_new_tokens", max_new_tokens, 0)
    check_callback(on_tokens)
    start = start_search(
        model, prompt_ids, "contrastive_search", eos_id=eos_id, bos_id=bos_id,
        repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
        context_keep=context_keep, tokenizer=tokenizer,
    )  # fmt: skip
    with eval_no_grad(model):
        context = ContextWindow(
            model, [start.window], keep=start.keep, use_cache=use_cache, track_hidden=True
        )
        return _contrastive_search(
            context, start.prompt, max_new_tokens, float(penalty_alpha), int(top_k), eos_id, start.processors,
            on_tokens,
        )  # fmt: skip


def _contrastive_search(
    context: ContextWindow,
    prompt: list[int],
    max_new_tokens: int,
    alpha: float,
    top_k: int,
    eos_id: int | None,
    processors: list[LogitsProcessor],
    on_tokens: Callable[[list[int]], Any] | None,
) -> list[int]:
    ids: list[int] = []
    for _ in range(max_new_tokens):
        logits = apply_processors(context.next_logits(), [prompt + ids], processors)
        probs = F.softmax(logits, dim=-1)[0]  # float64 on the CPU
        ranked = descending_order(probs.unsqueeze(0))[0, :top_k].tolist()
        candidates = [t for t in ranked if probs[t] > 0]  # a banned token is never a candidate
        # One row per candidate: the context's cache is copied k times, and each row gets its candidate.
        context.select([0] * len(candidates))
        context.append(candidates)
        hidden = context.hidden_states()  # per row: the window's tokens, then the candidate
        similarity = torch.tensor([_max_similarity(h) for h in hidden], dtype=torch.float64)
        scores = (1 - alpha) * probs[candidates] - alpha * similarity
        best = int(descending_order(scores.unsqueeze(0))[0, 0])  # a tie: the more probable candidate
        context.select([best])  # its logits are the next step's
        ids.append(candidates[best])
        if on_tokens is not None:
            on_tokens([candidates[best]])
        if eos_id is not None and candidates[best] == eos_id:
            break
    return ids


def _max_similarity(hidden: torch.Tensor) -> float:
    """The largest cosine similarity between the last hidden state and each earlier one (0 if none: a
    window cut down to the candidate alone, with ``context_keep=1``)."""
    if len(hidden) < 2:
        return 0.0
    return float(F.cosine_similarity(hidden[-1:].float(), hidden[:-1].float(), dim=-1).max())
