"""A count-based n-gram language model over token ids: the baseline of the factorization chapter.

``NGramModel(order=3, vocab_size=V).fit(tokens)`` counts every n-gram of length 1..order. The probability
of the next token given the last ``order - 1`` tokens is smoothed in one of three ways:

* ``"add_k"``: (c(h, w) + k) / (c(h) + k V), using the longest context only;
* ``"interpolated"``: absolute discounting interpolated with the next-shorter context,
  (max(c(h, w) - d, 0) + d N1+(h) P(w | h')) / c(h);
* ``"backoff"``: absolute-discount backoff, (c(h, w) - d) / c(h) for seen w, else alpha(h) P(w | h'),
  with alpha(h) chosen so the distribution sums to 1.

The unigram level is add-k in every case, so no token ever gets probability 0. Every distribution is
normalised exactly, so ``logprob`` (the chain rule over the whole sequence) is an exact log-probability.

Counts live in sorted numpy arrays. An n-gram is keyed by (id of its first n-1 tokens) * V + last token,
where the id of an (n-1)-gram is its index in the sorted table of (n-1)-grams: keys stay below
(number of distinct n-grams) * V, far from int64 overflow, for any vocabulary size and order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from arlm_lib.checks import is_int, is_integer_dtype, is_real
from arlm_lib.errors import ConfigError, DataError

SMOOTHINGS = ("add_k", "interpolated", "backoff")


def _as_array(tokens: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
    """One sequence of integer ids as a 1-D int64 array; DataError for text, floats or a batch.

    Not ``np.asarray(tokens, dtype=np.int64)``: it would truncate 1.9 to 1 (counting ids nobody meant),
    and flatten a batch of sequences into one, counting n-grams across the rows' boundaries.
    """
    if isinstance(tokens, str):
        raise DataError(
            f"tokens must be token ids, not a str: encode the text first, e.g. tokenizer.encode({tokens[:20]!r})"
        )
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    try:
        arr = np.asarray(tokens)
    except ValueError as err:  # ragged nested lists
        raise DataError(f"tokens must be one sequence of token ids; got {tokens!r:.80}") from err
    if arr.ndim > 1:
        raise DataError(
            f"tokens must be one sequence of token ids (1-D), got shape {arr.shape}: fit or score each "
            "sequence on its own, or concatenate them"
        )
    if arr.size and not is_integer_dtype(arr.dtype):
        first = arr.reshape(-1)[0]
        first = first.item() if isinstance(first, np.generic) else first  # 0.5, not np.float64(0.5)
        raise DataError(
            f"tokens must be integer ids, got {first!r:.40} ({arr.dtype}): ids are integers in "
            "0..vocab_size-1"
        )
    return arr.astype(np.int64).reshape(-1)


def _lookup(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index of each key in the sorted ``table``, or -1 where it is absent (or where the key is < 0)."""
    if len(table) == 0:  # fitted on fewer tokens than this level's n: nothing to find
        return np.full(np.shape(keys), -1, dtype=np.int64)
    idx = np.searchsorted(table, keys)
    idx = np.minimum(idx, len(table) - 1)
    found = (keys >= 0) & (table[idx] == keys)
    return np.where(found, idx, -1)


def _gather(values: np.ndarray, ids: np.ndarray, fill: float) -> np.ndarray:
    """``values[ids]`` where an id is >= 0, ``fill`` elsewhere (``values`` may be empty: a level with no n-grams)."""
    out = np.full(ids.shape, fill, dtype=np.float64)
    known = ids >= 0
    out[known] = values[ids[known]]
    return out


MAX_K = 1e6
MIN_BACKOFF_K = 1e-6


class NGramModel:
    """Count-based n-gram model of a fixed ``order`` over token ids 0..vocab_size-1 (see module docs)."""

    def __init__(
        self,
        order: int,
        vocab_size: int,
        smoothing: str = "interpolated",
        k: float = 1.0,
        discount: float = 0.75,
    ) -> None:
        if not is_int(order) or order < 1:
            raise ConfigError(f"n-gram order must be an integer >= 1; got {order!r}")
        if not is_int(vocab_size) or vocab_size < 1:
            raise ConfigError(f"vocab_size must be an integer >= 1; got {vocab_size!r}")
        if smoothing not in SMOOTHINGS:
            raise ConfigError(f"unknown smoothing {smoothing!r}; choose one of {', '.join(SMOOTHINGS)}")
        # k > 0 keeps every probability above 0; a huge k would overflow the denominators.
        if not (is_real(k) and 0 < k <= MAX_K):
            raise ConfigError(f"k (add-k pseudo-count) must be a number in (0, {MAX_K:g}]; got {k!r}")
        if smoothing == "backoff" and k < MIN_BACKOFF_K:
            # Backoff divides by the unigram mass left for unseen tokens, which a tiny k drowns in
            # float64 rounding: the distributions would no longer sum to 1.
            raise ConfigError(f"with backoff smoothing k must be >= {MIN_BACKOFF_K:g}; got {k!r}")
        if not (is_real(discount) and 0 < discount < 1):
            raise ConfigError(f"discount must be a number in (0, 1); got {discount!r}")
        self.order = order
        self.vocab_size = vocab_size
        self.smoothing = smoothing
        self.k = float(k)
        self.discount = float(discount)
        self.fitted = False

    def __repr__(self) -> str:
        return f"NGramModel(order={self.order}, vocab_size={self.vocab_size}, smoothing={self.smoothing!r})"

    # ------------------------------------------------------------------ counting
    def fit(self, tokens: Sequence[int] | torch.Tensor | np.ndarray) -> NGramModel:
        """Count all n-grams of length 1..order in one token sequence (replaces earlier counts)."""
        x = self._check_tokens(tokens)
        if len(x) == 0:
            raise DataError("cannot fit an n-gram model on an empty token sequence")
        V, N = self.vocab_size, len(x)
        self.n_tokens = N
        self.unigram_counts = np.bincount(x, minlength=V).astype(np.float64)
        # Level n (1-based) tables: keys[n] sorted unique keys, counts[n]; ids[n][t] = index of the
        # n-gram ending at position t (or -1 for t < n - 1).
        self.keys: dict[int, np.ndarray] = {}
        self.counts: dict[int, np.ndarray] = {}
        self.suffix: dict[int, np.ndarray] = {}  # n-gram index -> index of its last n-1 tokens
        self.ctx_total: dict[int, np.ndarray] = {}  # (n-1)-gram index -> c(h) as a context of level n
        self.ctx_types: dict[int, np.ndarray] = {}  # (n-1)-gram index -> number of distinct followers
        prev_ids = None
        for n in range(1, self.order + 1):
            if n == 1:
                keys = x.copy()
            else:
                keys = np.full(N, -1, dtype=np.int64)
                ctx = prev_ids[:-1]
                valid = ctx >= 0
                keys[1:][valid] = ctx[valid] * V + x[1:][valid]
            valid = keys >= 0
            table, inverse, counts = np.unique(keys[valid], return_inverse=True, return_counts=True)
            ids = np.full(N, -1, dtype=np.int64)
            ids[valid] = inverse
            self.keys[n], self.counts[n] = table, counts.astype(np.float64)
            if n > 1:
                # The suffix of the n-gram ending at t is the (n-1)-gram ending at t.
                suffix = np.empty(len(table), dtype=np.int64)
                suffix[ids[valid]] = prev_ids[valid]
                self.suffix[n] = suffix
                n_ctx = len(self.keys[n - 1])
                ctx_of = table // V
                self.ctx_total[n] = np.bincount(ctx_of, weights=self.counts[n], minlength=n_ctx)
                self.ctx_types[n] = np.bincount(ctx_of, minlength=n_ctx).astype(np.float64)
            prev_ids = ids
        self._precompute()
        self.fitted = True
        return self

    def _precompute(self) -> None:
        """Probability of every seen n-gram under its level, and the weight of the lower level per context."""
        V, k, d = self.vocab_size, self.k, self.discount
        self.unigram = (self.unigram_counts + k) / (self.n_tokens + k * V)
        self.prob: dict[int, np.ndarray] = {1: self.unigram[self.keys[1]]}
        self.alpha: dict[int, np.ndarray] = {}
        for n in range(2, self.order + 1):
            ctx_of = self.keys[n] // V
            c, total, types = self.counts[n], self.ctx_total[n], self.ctx_types[n]
            lower = self.prob[n - 1][self.suffix[n]]  # P_{n-1}(w | h') for every seen (h, w)
            with np.errstate(divide="ignore", invalid="ignore"):
                if self.smoothing == "add_k":
                    self.prob[n] = (c + k) / (total[ctx_of] + k * V)
                    self.alpha[n] = np.zeros_like(total)  # unused: add-k does not mix levels
                elif self.smoothing == "interpolated":
                    lam = d * types / total
                    self.prob[n] = (c - d) / total[ctx_of] + lam[ctx_of] * lower
                    self.alpha[n] = lam
                else:  # backoff
                    # A context followed by every token of the vocabulary has nothing to back off to:
                    # it keeps its maximum-likelihood estimate (no discount).
                    d_ctx = np.where(types >= V, 0.0, d)
                    seen_lower = np.bincount(ctx_of, weights=lower, minlength=len(total))
                    self.alpha[n] = np.where(types >= V, 0.0, (d_ctx * types / total) / (1.0 - seen_lower))
                    self.prob[n] = (c - d_ctx[ctx_of]) / total[ctx_of]

    # ------------------------------------------------------------------ probabilities
    def _check_tokens(self, tokens) -> np.ndarray:
        x = _as_array(tokens)
        if len(x) and (x.min() < 0 or x.max() >= self.vocab_size):
            bad = x[(x < 0) | (x >= self.vocab_size)][0]
            raise DataError(f"token id {int(bad)} is outside the vocabulary 0..{self.vocab_size - 1}")
        return x

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ConfigError("the n-gram model has not been fitted; call fit(tokens) first")

    def _context_id(self, context: np.ndarray, n: int) -> int:
        """Index of the last n-1 tokens of ``context`` in the level n-1 table, or -1 if never seen."""
        h = context[len(context) - (n - 1) :]
        ident = 0
        for level, tok in enumerate(h, start=1):
            key = np.array([tok if level == 1 else ident * self.vocab_size + tok])
            ident = int(_lookup(self.keys[level], key)[0])
            if ident < 0:
                return -1
        return ident

    def next_token_probs(self, context: Sequence[int] | torch.Tensor | np.ndarray = ()) -> torch.Tensor:
        """P(next token | the last order-1 tokens of ``context``) as a float64 tensor of shape (V,)."""
        self._require_fitted()
        ctx = self._check_tokens(context)
        V = self.vocab_size
        top = min(self.order, len(ctx) + 1)
        if self.smoothing == "add_k":
            p = self.unigram.copy()
            if top > 1:
                h = self._context_id(ctx, top)
                p = np.full(V, 1.0 / V)
                if h >= 0 and self.ctx_total[top][h] > 0:
                    lo, hi = np.searchsorted(self.keys[top], [h * V, (h + 1) * V])
                    p = np.full(V, self.k / (self.ctx_total[top][h] + self.k * V))
                    p[self.keys[top][lo:hi] % V] = self.prob[top][lo:hi]
            return torch.from_numpy(p)
        p = self.unigram.copy()
        for n in range(2, top + 1):
            h = self._context_id(ctx, n)
            if h < 0 or self.ctx_total[n][h] == 0:
                continue  # an unseen context: the lower level's distribution as it is
            lo, hi = np.searchsorted(self.keys[n], [h * V, (h + 1) * V])
            new = self.alpha[n][h] * p
            new[self.keys[n][lo:hi] % V] = self.prob[n][lo:hi]
            p = new
        return torch.from_numpy(p)

    def token_logprobs(self, tokens: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
        """log P(x_t | x_{t-order+1..t-1}) for every position t (natural log; shorter contexts at the start)."""
        self._require_fitted()
        x = self._check_tokens(tokens)
        V, T = self.vocab_size, len(x)
        p = self.unigram[x]
        ids_prev = _lookup(self.keys[1], x)  # level-1 ids of each position's token
        for n in range(2, self.order + 1):
            ctx = np.full(T, -1, dtype=np.int64)
            ctx[1:] = ids_prev[:-1]  # id of the (n-1)-gram ending just before t
            keys = np.where(ctx >= 0, ctx * V + x, -1)
            ids = _lookup(self.keys[n], keys)
            has_ctx = ctx >= 0
            total = _gather(self.ctx_total[n], ctx, 0.0)
            if self.smoothing == "add_k":
                # Only the longest available context counts: overwrite the lower level's answer.
                seen = ids >= 0
                level_p = np.where(total > 0, self.k / np.where(total > 0, total + self.k * V, 1.0), 1.0 / V)
                level_p[seen] = self.prob[n][ids[seen]]
                applicable = np.arange(T) >= n - 1
                p = np.where(applicable, level_p, p)
            else:
                seen = ids >= 0
                alpha = np.where(total > 0, _gather(self.alpha[n], ctx, 1.0), 1.0)
                new = alpha * p
                new[seen] = self.prob[n][ids[seen]]
                p = np.where(has_ctx, new, p)
            ids_prev = ids
        return np.log(p)

    def logprob(self, tokens: Sequence[int] | torch.Tensor | np.ndarray) -> float:
        """Exact natural-log probability of the whole sequence by the chain rule."""
        return float(np.sum(self.token_logprobs(tokens)))

    def cross_entropy(self, tokens: Sequence[int] | torch.Tensor | np.ndarray) -> float:
        """Mean negative log-probability per token, in nats."""
        lp = self.token_logprobs(tokens)
        if len(lp) == 0:
            raise DataError("cross_entropy needs at least one token")
        return float(-lp.mean())
