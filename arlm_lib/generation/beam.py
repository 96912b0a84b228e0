"""Beam search: keep the ``num_beams`` most probable partial continuations at every step."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .config import bad_value, check_int
from .context import ContextWindow, eval_no_grad
from .processors import LogitsProcessor, apply_processors, descending_order
from .search import start_search
from .values import check_callback

__all__ = ["BeamHypothesis", "beam_search"]


class BeamHypothesis(NamedTuple):
    """A finished beam: the new token ids (ending with ``eos_id`` if it stopped there) and its score.

    ``score = sum of log-probs / len(ids) ** length_penalty`` (natural log; with length_penalty=0 it
    is the plain log-probability of the continuation given the prompt).
    """

    ids: list[int]
    score: float


def beam_search(
    model: nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
    *,
    bos_id: int | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    use_cache: bool = True,
    context_keep: int | None = None,
    tokenizer: Any = None,
    on_step: Callable[[list[BeamHypothesis]], Any] | None = None,
) -> list[BeamHypothesis]:
    """Return up to ``num_beams`` continuations of one prompt, best score first.

    Each step extends every beam by every token, and keeps the ``num_beams`` best partial sequences
    that did not just end; a sequence ending in ``eos_id`` becomes a finished hypothesis. The search
    stops after ``max_new_tokens``, or once ``num_beams`` hypotheses are finished and the best running
    beam, scored at its current length, cannot beat the worst of them (Hugging Face's default
    heuristic). ``length_penalty`` > 0 favours longer sequences, < 0 shorter ones. The optional
    penalties are the logits processors of ``arlm_lib.generation.processors``; the score then uses
    penalized log-probs.
    Ties between equal scores go to the lower beam, then the lower token id, so width 1 is greedy.
    ``tokenizer`` (optional) gives the default ``bos_id``, and, if it has fewer ids than the model's
    vocabulary (a padded one), keeps the ids past its own out of every beam, as :func:`generate` does.
    ``on_step`` (optional) is called after every step with what the search would return if it ended
    there: the finished hypotheses and the running beams, each scored at its current length, best first
    (the last call gets the returned list). With it a caller can show progress, or keep the best
    continuations so far when the search is interrupted (the ``sample`` command prints them on Ctrl-C).
    """
    check_int("num_beams", num_beams, 1)
    check_int("max_new_tokens", max_new_tokens, 0)
    if (
        isinstance(length_penalty, bool)
        or not isinstance(length_penalty, numbers.Real)
        or not math.isfinite(length_penalty)
    ):
        raise bad_value("length_penalty", length_penalty, "it must be a finite number")
    check_callback(on_step, "on_step", "a list of BeamHypothesis")
    start = start_search(
        model, prompt_ids, "beam_search", eos_id=eos_id, bos_id=bos_id, repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size, context_keep=context_keep, tokenizer=tokenizer,
    )  # fmt: skip
    with eval_no_grad(model):
        return _beam_search(
            model, start.prompt, start.window, num_beams, max_new_tokens, float(length_penalty), eos_id,
            start.processors, start.keep, use_cache, on_step,
        )  # fmt: skip


def _beam_search(
    model: nn.Module,
    prompt: list[int],
    window: list[int],
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float,
    eos_id: int | None,
    processors: list[LogitsProcessor],
    keep: int,
    use_cache: bool,
    on_step: Callable[[list[BeamHypothesis]], Any] | None,
) -> list[BeamHypothesis]:
    def final(total: float, length: int) -> float:
        return total / (length**length_penalty) if length else total

    def ranking(
        finished: list[BeamHypothesis], running: list[tuple[list[int], float]]
    ) -> list[BeamHypothesis]:
        """The result if the search ended now: running beams are scored at their current length."""
        hypotheses = finished + [BeamHypothesis(ids, final(total, len(ids))) for ids, total in running]
        if not hypotheses:  # max_new_tokens == 0
            return [BeamHypothesis([], 0.0)]
        return sorted(hypotheses, key=lambda h: -h.score)[:num_beams]

    context = ContextWindow(model, [window], keep=keep, use_cache=use_cache)
    beams: list[tuple[list[int], float]] = [([], 0.0)]  # one beam to start: no duplicate candidates
    finished: list[BeamHypothesis] = []
    vocab_size = model.config.vocab_size
    for step in range(max_new_tokens):
        logits = apply_processors(context.next_logits(), [prompt + ids for ids, _ in beams], processors)
        logp = F.log_softmax(logits, dim=-1)  # float64 on the CPU: sums of many small terms
        totals = (torch.tensor([total for _, total in beams], dtype=torch.float64).unsqueeze(1) + logp).view(
            -1
        )
        # 2 * num_beams candidates: even if num_beams of them end in eos, num_beams can go on.
        order = descending_order(totals.unsqueeze(0))[0, : 2 * num_beams].tolist()
        survivors: list[tuple[int, list[int], float]] = []
        for rank, flat in enumerate(order):
            beam, token = divmod(flat, vocab_size)
            ids, total = beams[beam][0] + [token], float(totals[flat])
            if total == -math.inf:
                # A removed token (a padded id, an n-gram ban): it, and all after it, cannot be chosen.
                # Only reached when fewer than 2 * num_beams candidates are possible at all.
                break
            if eos_id is not None and token == eos_id:
                if rank < num_beams:  # an eos outside the top num_beams would not have survived anyway
                    finished.append(BeamHypothesis(ids, final(total, len(ids))))
            else:
                survivors.append((beam, ids, total))
            if len(survivors) == num_beams:
                break
        finished = sorted(finished, key=lambda h: -h.score)[:num_beams]
        beams = [(ids, total) for _, ids, total in survivors]
        done = not beams or step == max_new_tokens - 1
        if not done and len(finished) == num_beams:
            best_running = max(final(total, step + 1) for _, total in beams)
            if finished[-1].score >= best_running:
                beams, done = [], True  # no running beam is expected to do better
        if on_step is not None:
            on_step(ranking(finished, beams))
        if done:
            break
        context.select([beam for beam, _, _ in survivors])
        context.append([ids[-1] for _, ids, _ in survivors])

    return ranking(finished, beams)
