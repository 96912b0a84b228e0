"""Sequence scoring by the chain rule: log P(x) = sum over t of log P(x_t | x_<t).

A sequence longer than the context window is scored with the same window policy generation uses
(:class:`~.config.GenerationConfig`, ``context_keep``): each token is conditioned on the tokens of its
window, which grows to ``block_size`` and is then cut back to its last ``context_keep`` tokens. So the
score of a generated text equals the sum of the log-probs that generation reported for it, even past
the context. Each window is one forward pass that scores all the tokens it predicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import is_int
from ..errors import GenerationError
from .config import bad_value, check_int, resolve_keep
from .context import check_model, eval_no_grad, model_device, normalize_prompts
from .sampling import check_tokenizer

__all__ = ["SequenceScore", "generated_perplexity", "score_sequence", "score_text"]

LN2 = math.log(2.0)


@dataclass(frozen=True)
class SequenceScore:
    """Per-token and total log-probability of a sequence under a model (natural logs)."""

    token_ids: list[int]  # the scored tokens (the sequence after its first context_len tokens)
    token_logprobs: list[float]  # ln P(token | the tokens before it in its window)
    total_logprob: float  # their sum: ln P(scored tokens | the first context_len tokens)
    surprisal_bits: list[float]  # -log2 P(token | ...): how surprising each token is, in bits

    @property
    def total_bits(self) -> float:
        """The bits an ideal coder using the model would need, -log2 of the sequence probability."""
        return -self.total_logprob / LN2

    @property
    def perplexity(self) -> float:
        """exp of the mean negative log-probability per scored token (nan if nothing was scored)."""
        n = len(self.token_logprobs)
        return math.exp(-self.total_logprob / n) if n else math.nan


def score_sequence(
    model: nn.Module,
    ids: Sequence[int] | torch.Tensor,
    *,
    context_len: int = 1,
    context_keep: int | None = None,
) -> SequenceScore:
    """Score ``ids[context_len:]``, each token given everything before it (within the context window).

    The first ``context_len`` tokens (at least 1: a GPT needs a token to predict from) are given, not
    scored; put the document-start token first to score a whole text (as :func:`score_text` does).
    """
    check_model(model, "score_sequence(model, ids)")
    vocab_size, block_size = model.config.vocab_size, model.config.block_size
    if not len(ids):
        # Not a context_len problem: nothing at all was given to score.
        raise GenerationError(
            "score_sequence got an empty sequence: it needs at least context_len + 1 tokens "
            "(put the document-start token first, as score_text does)"
        )
    seqs, single = normalize_prompts(ids, vocab_size, bos_id=None)
    if not single:
        raise GenerationError("score_sequence takes one sequence; call it once per sequence")
    seq = seqs[0]
    check_int("context_len", context_len, 1)
    if context_len > len(seq):
        raise GenerationError(
            f"context_len={context_len} is not allowed: the sequence has only {len(seq)} tokens"
        )
    keep = resolve_keep(context_keep, block_size)
    device = model_device(model)
    logprobs: list[float] = []
    with eval_no_grad(model):
        nxt = context_len  # index of the next token to score
        start = max(0, context_len - block_size)  # its window start (a long context is cropped)
        while nxt < len(seq):
            # With this window start, tokens nxt..last are predicted, with up to block_size tokens of
            # context each; one forward over seq[start:last] gives all of them.
            last = min(len(seq) - 1, start + block_size)
            x = torch.as_tensor(seq[start:last], dtype=torch.long, device=device).unsqueeze(0)
            logp = F.log_softmax(model(x).logits[0].float(), dim=-1)
            rows = torch.arange(nxt - 1 - start, last - start, device=device)
            targets = torch.as_tensor(seq[nxt : last + 1], dtype=torch.long, device=device)
            logprobs.extend(logp[rows, targets].tolist())
            nxt = last + 1
            start = nxt - keep  # the window was full: keep its last `keep` tokens
    return SequenceScore(
        token_ids=seq[context_len:],
        token_logprobs=logprobs,
        total_logprob=math.fsum(logprobs),
        surprisal_bits=[-lp / LN2 for lp in logprobs],
    )


def score_text(
    model: nn.Module, tokenizer: Any, text: str, *, context_keep: int | None = None
) -> SequenceScore:
    """log P(text | document start): every token of ``text`` scored after ``tokenizer.bos_id``."""
    check_model(model, "score_text(model, tokenizer, text)")
    check_tokenizer(tokenizer, "score_text(model, tokenizer, text)")
    ids = [tokenizer.bos_id] + tokenizer.encode(text)
    return score_sequence(model, ids, context_len=1, context_keep=context_keep)


def generated_perplexity(
    model: nn.Module,
    sequences: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    *,
    context_len: int | Sequence[int] = 1,
    context_keep: int | None = None,
) -> float:
    """Perplexity of generated text under ``model``: exp(mean negative log-prob per generated token).

    ``sequences``: one sequence or several (prompt + generation); ``context_len``: the prompt length of
    each (one int for all), whose tokens are conditioned on but not scored. Tokens are pooled over all
    sequences, so longer generations weigh more.
    """
    check_model(model, "generated_perplexity(model, sequences)")
    seqs, _ = normalize_prompts(sequences, model.config.vocab_size, bos_id=None)
    if is_int(context_len):
        lens = [context_len] * len(seqs)
    elif isinstance(context_len, Iterable) and not isinstance(context_len, (str, bytes)):
        lens = list(context_len)
    else:
        raise bad_value(
            "context_len", context_len, "it must be an integer >= 1, or a list of them (one per sequence)"
        )
    if len(lens) != len(seqs):
        raise GenerationError(f"context_len has {len(lens)} entries for {len(seqs)} sequences")
    for n in lens:  # all of them before the first forward pass
        check_int("context_len", n, 1)
    total, count = 0.0, 0
    for seq, n in zip(seqs, lens):
        score = score_sequence(model, seq, context_len=n, context_keep=context_keep)
        total += score.total_logprob
        count += len(score.token_logprobs)
    if count == 0:
        raise GenerationError("nothing to score: every sequence is no longer than its context_len")
    return math.exp(-total / count)
