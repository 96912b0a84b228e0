"""Logits processors: small callables that reshape next-token scores before a token is chosen.

Every processor maps ``(logits (B, V), histories) -> logits (B, V)``, where ``histories[b]`` is row b's
whole token history (prompt + generated so far, including any part cropped out of the context window).
A removed token gets the score ``-inf`` (probability exactly 0).

:meth:`GenerationConfig.processors() <arlm_lib.generation.config.GenerationConfig.processors>` lists
the active ones, and :func:`apply_processors` runs them, in ONE order, the one Hugging Face
``generate()`` uses:

1. :class:`RepetitionPenalty`  (edits the model's scores: content-aware, must see raw logits)
2. :class:`NoRepeatNGram`      (bans tokens outright: also content-aware)
3. :class:`Temperature`        (reshapes the whole distribution)
4. :class:`TopK`               (truncation filters run on the *tempered* distribution, so that
5. :class:`TopP`                top-p's nucleus and min-p's threshold mean "of what will be sampled";
6. :class:`MinP`                top-k is unaffected by temperature either way)
7. :class:`TypicalP`
8. :class:`EpsilonCutoff`
9. :class:`EtaCutoff`

Generation with a tokenizer that has fewer ids than the model's vocabulary (padded to a multiple of
64, as GPT-2's 50257 ids in 50304 rows) puts :class:`VocabLimit` before all of them: the padding rows
decode to nothing, so they must never be drawn, nor count in top-p's or min-p's mass (nor in the
entropy that typical and eta sampling measure).

Every filter except :class:`TypicalP` keeps the most likely token (typical sampling may drop it: that is
its point), and every processor keeps at least one finite score, so the softmax of the result is always
a valid distribution (non-negative, sums to 1, >= 1 token), for any finite logits and any valid
parameters (this is fuzzed with hypothesis). Processing is in float64, on the CPU (see
:func:`apply_processors`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch.nn import functional as F

from .values import bad_value, check_int, is_finite_number

__all__ = [
    "EpsilonCutoff",
    "EtaCutoff",
    "LogitsProcessor",
    "MinP",
    "NoRepeatNGram",
    "RepetitionPenalty",
    "Temperature",
    "TopK",
    "TopP",
    "TypicalP",
    "VocabLimit",
    "apply_processors",
    "banned_ngram_tokens",
    "check_cutoff",
    "check_min_p",
    "check_no_repeat_ngram_size",
    "check_repetition_penalty",
    "check_temperature",
    "check_top_k",
    "check_top_p",
    "check_typical_p",
    "descending_order",
    "entropy_nats",
    "processed_probs",
]


# One check per parameter, called by the processor and by GenerationConfig (which also checks a field
# whose processor it will not build, such as top_k under greedy decoding): a processor built by hand
# with TopK(0) or Temperature(0) would otherwise turn every distribution into NaN, silently.


def check_repetition_penalty(value: object) -> None:
    if not is_finite_number(value) or value <= 0:  # type: ignore[operator]
        raise bad_value("repetition_penalty", value, "it must be a finite number > 0 (1 = no penalty)")


def check_no_repeat_ngram_size(value: object) -> None:
    check_int("no_repeat_ngram_size", value, 0)


def check_temperature(value: object, *, greedy_allowed: bool = True) -> None:
    """``greedy_allowed``: whether 0 is allowed (GenerationConfig's greedy decoding); the Temperature
    processor divides by it, so there it is not."""
    low_ok = greedy_allowed and value == 0
    if not is_finite_number(value) or not (value > 0 or low_ok):  # type: ignore[operator]
        allowed = (
            "it must be a finite number >= 0 (0 means greedy)"
            if greedy_allowed
            else "it must be a finite number > 0 (for greedy decoding use GenerationConfig(temperature=0))"
        )
        raise bad_value("temperature", value, allowed)


def check_top_k(value: object) -> None:
    check_int("top_k", value, 1)


def check_top_p(value: object) -> None:
    if not is_finite_number(value) or not 0 < value <= 1:  # type: ignore[operator]
        raise bad_value("top_p", value, "it must be in (0, 1] (1 keeps every token)")


def check_min_p(value: object) -> None:
    if not is_finite_number(value) or not 0 <= value < 1:  # type: ignore[operator]
        raise bad_value("min_p", value, "it must be in [0, 1) (0 keeps every token)")


def check_typical_p(value: object) -> None:
    if not is_finite_number(value) or not 0 < value <= 1:  # type: ignore[operator]
        raise bad_value("typical_p", value, "it must be in (0, 1] (1 keeps every token)")


def check_cutoff(name: str, value: object) -> None:
    """``epsilon_cutoff`` and ``eta_cutoff``."""
    if not is_finite_number(value) or not 0 <= value < 1:  # type: ignore[operator]
        raise bad_value(
            name, value, "it must be in [0, 1) (0 keeps every token; try 3e-4 for a GPT-2-sized vocabulary)"
        )


class LogitsProcessor(Protocol):
    """Anything that maps (logits (B, V), per-row token histories) to new logits (B, V)."""

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor: ...


class RepetitionPenalty:
    """Keskar et al. 2019 (CTRL): every token already in the history has a positive logit divided by
    ``penalty`` and a negative one multiplied by it, so penalty > 1 makes repeats less likely."""

    def __init__(self, penalty: float) -> None:
        check_repetition_penalty(penalty)
        self.penalty = float(penalty)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        seen = torch.zeros_like(logits, dtype=torch.bool)
        for row, history in enumerate(histories):
            if history:
                seen[row, torch.as_tensor(sorted(set(history)), device=logits.device)] = True
        penalized = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        # An extreme penalty can overflow a finite score to +-inf: clamp it, so that penalizing never
        # removes a token outright (-inf stays only where it already was).
        big = torch.finfo(logits.dtype).max
        penalized = torch.where(torch.isfinite(logits), penalized.clamp(-big, big), logits)
        return torch.where(seen, penalized, logits)

    def __repr__(self) -> str:
        return f"RepetitionPenalty({self.penalty})"


def banned_ngram_tokens(history: Sequence[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already present in ``history`` (the last n-1 tokens + t)."""
    if n < 1 or len(history) < n - 1:
        return set()
    prefix = tuple(history[len(history) - (n - 1) :]) if n > 1 else ()
    return {
        history[i + n - 1] for i in range(len(history) - n + 1) if tuple(history[i : i + n - 1]) == prefix
    }


class NoRepeatNGram:
    """Forbid any token that would repeat an n-gram of ``size`` tokens already in the history.

    If the ban would remove every token of the vocabulary (a tiny vocabulary, or size 1 after every
    token has been used), the ban is lifted for that row and step: a distribution must keep a token.
    """

    def __init__(self, size: int) -> None:
        check_no_repeat_ngram_size(size)
        self.size = int(size)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        out = logits.clone()
        for row, history in enumerate(histories):
            banned = banned_ngram_tokens(history, self.size)
            if banned:
                idx = torch.as_tensor(sorted(banned), device=logits.device)
                candidate = out[row].index_fill(0, idx, float("-inf"))
                if torch.isfinite(candidate).any():
                    out[row] = candidate
        return out

    def __repr__(self) -> str:
        return f"NoRepeatNGram({self.size})"


class Temperature:
    """Divide the logits by ``temperature`` > 0: below 1 sharpens the distribution, above 1 flattens it.

    The row maximum is subtracted first (softmax is shift-invariant), so even a tiny temperature cannot
    overflow: the best token scores 0 and the rest go to large negative numbers or -inf.
    """

    def __init__(self, temperature: float) -> None:
        check_temperature(temperature, greedy_allowed=False)
        self.temperature = float(temperature)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        shifted = logits - logits.amax(dim=-1, keepdim=True)
        return shifted / self.temperature

    def __repr__(self) -> str:
        return f"Temperature({self.temperature})"


def descending_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices that sort each row by descending score; ties keep ascending token id (a stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def _beyond_mass(probs: torch.Tensor, order: torch.Tensor, mass: float) -> torch.Tensor:
    """Which tokens fall outside the shortest prefix of ``order`` whose probability reaches ``mass``.

    ``order`` ranks each row's tokens (best first); the first token is always kept. A token is kept
    while the mass of the tokens strictly before it is still < ``mass``, so the set stops at the first
    token that brings the total to >= ``mass``. The sum is taken in float64, so that a mass close to 1
    is not cut short by rounding.
    """
    cumulative = probs.gather(-1, order).cumsum(dim=-1)
    before = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], dim=-1)
    remove_sorted = before >= mass
    remove_sorted[:, 0] = False
    return torch.zeros_like(remove_sorted).scatter_(-1, order, remove_sorted)


def entropy_nats(logits: torch.Tensor) -> torch.Tensor:
    """The entropy (B, 1), in nats, of each row's softmax; removed tokens (-inf) contribute nothing."""
    logp = F.log_softmax(logits.double(), dim=-1)
    return -torch.where(torch.isfinite(logp), logp.exp() * logp, 0.0).sum(dim=-1, keepdim=True)


class TopK:
    """Keep exactly the ``k`` highest-scoring tokens (all of them if k >= vocabulary size).

    Ties: scores are sorted with a stable sort, so among tokens tied at the k-th score the ones with
    the lower token id are kept. Exactly k tokens survive, never more.
    """

    def __init__(self, k: int) -> None:
        check_top_k(k)
        self.k = int(k)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.k >= logits.size(-1):
            return logits
        keep = descending_order(logits)[:, : self.k]
        mask = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, keep, False)
        return logits.masked_fill(mask, float("-inf"))

    def __repr__(self) -> str:
        return f"TopK({self.k})"


class TopP:
    """Nucleus sampling (Holtzman et al. 2020): keep the smallest set of most likely tokens whose total
    probability is >= ``p``; the most likely token is always kept. Ties in the order: lower id first.
    """

    def __init__(self, p: float) -> None:
        check_top_p(p)
        self.p = float(p)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.p >= 1.0:
            return logits
        probs = F.softmax(logits.double(), dim=-1)
        return logits.masked_fill(_beyond_mass(probs, descending_order(probs), self.p), float("-inf"))

    def __repr__(self) -> str:
        return f"TopP({self.p})"


class MinP:
    """Min-p sampling (Nguyen et al. 2024): drop tokens whose probability is below ``min_p`` times the
    top token's probability, so the cut-off rises when the model is confident and falls when it is not."""

    def __init__(self, min_p: float) -> None:
        check_min_p(min_p)
        self.min_p = float(min_p)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.min_p <= 0.0:
            return logits
        probs = F.softmax(logits.double(), dim=-1)
        threshold = self.min_p * probs.amax(dim=-1, keepdim=True)
        return logits.masked_fill(probs < threshold, float("-inf"))

    def __repr__(self) -> str:
        return f"MinP({self.min_p})"


class TypicalP:
    """Locally typical sampling (Meister et al. 2023): rank tokens by how close their surprisal
    ``-log p`` is to the entropy ``H`` (the surprisal the model expects), and keep the shortest such
    prefix whose probability reaches ``mass``.

    Unlike the other filters it can drop the most likely token: where the model is unsure (H high), a
    token far likelier than the rest is atypically unsurprising. Ties in the ranking: lower id first,
    as top-p's. This is Hugging Face's ``typical_p``, except at a tie on the cut, where Hugging Face
    keeps all the tied tokens.
    """

    def __init__(self, mass: float) -> None:
        check_typical_p(mass)
        self.mass = float(mass)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.mass >= 1.0:
            return logits
        logp = F.log_softmax(logits.double(), dim=-1)
        distance = (-logp - entropy_nats(logits)).abs()  # +inf for removed tokens: ranked last
        order = torch.sort(distance, dim=-1, stable=True).indices
        return logits.masked_fill(_beyond_mass(logp.exp(), order, self.mass), float("-inf"))

    def __repr__(self) -> str:
        return f"TypicalP({self.mass})"


def _drop_below(logits: torch.Tensor, probs: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """Remove tokens with probability < ``threshold``, but never the most likely one(s)."""
    remove = (probs < threshold) & (probs < probs.amax(dim=-1, keepdim=True))
    return logits.masked_fill(remove, float("-inf"))


class EpsilonCutoff:
    """Epsilon sampling (Hewitt et al. 2022): drop tokens with probability below a fixed ``epsilon``
    (the tail a smoothed model spreads thinly over everything), keeping the most likely token."""

    def __init__(self, epsilon: float) -> None:
        check_cutoff("epsilon_cutoff", epsilon)
        self.epsilon = float(epsilon)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.epsilon <= 0.0:
            return logits
        return _drop_below(logits, F.softmax(logits.double(), dim=-1), self.epsilon)

    def __repr__(self) -> str:
        return f"EpsilonCutoff({self.epsilon})"


class EtaCutoff:
    """Eta sampling (Hewitt et al. 2022): epsilon sampling whose threshold
    ``min(epsilon, sqrt(epsilon) * exp(-H))`` falls as the entropy H (nats) rises, so a flat
    distribution keeps more of its tokens than a peaked one; the most likely token is always kept."""

    def __init__(self, epsilon: float) -> None:
        check_cutoff("eta_cutoff", epsilon)
        self.epsilon = float(epsilon)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.epsilon <= 0.0:
            return logits
        threshold = torch.clamp(math.sqrt(self.epsilon) * torch.exp(-entropy_nats(logits)), max=self.epsilon)
        return _drop_below(logits, F.softmax(logits.double(), dim=-1), threshold)

    def __repr__(self) -> str:
        return f"EtaCutoff({self.epsilon})"


class VocabLimit:
    """Remove every id >= ``size``: the padding rows of a vocabulary larger than the tokenizer's.

    Those rows were never a training target, so their scores mean nothing, and the tokenizer cannot
    decode them. ``size`` >= 1, so a token always remains.
    """

    def __init__(self, size: int) -> None:
        check_int("size", size, 1)  # a token must remain
        self.size = int(size)

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.size >= logits.size(-1):
            return logits
        out = logits.clone()
        out[:, self.size :] = float("-inf")
        return out

    def __repr__(self) -> str:
        return f"VocabLimit({self.size})"


def apply_processors(
    logits: torch.Tensor, histories: Sequence[Sequence[int]], processors: Sequence[LogitsProcessor]
) -> torch.Tensor:
    """Run ``processors`` in order on a float64 copy of ``logits`` (B, V), on the CPU.

    float64 because parameters are Python floats: a penalty of 1e39 or a temperature of 1e-40 does not
    even exist in float32 (it becomes inf or 0, and 0 * inf is nan). On the CPU because Apple's MPS has
    no float64 at all, and because the token is drawn on the CPU anyway (so that a seed gives the same
    text on every device): one (B, V) row per step crosses over either way.
    """
    logits = logits.detach().to(device="cpu", dtype=torch.float64)
    for processor in processors:
        logits = processor(logits, histories)
    return logits


def processed_probs(
    logits: torch.Tensor, histories: Sequence[Sequence[int]], processors: Sequence[LogitsProcessor]
) -> torch.Tensor:
    """The distribution (B, V, float64) that a token is drawn from: softmax of the processed logits."""
    return F.softmax(apply_processors(logits, histories, processors), dim=-1)
