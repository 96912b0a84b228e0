"""The n-gram baseline: normalised distributions, the exact chain rule, smoothing formulas, bad input."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch

from arlm_lib.errors import ConfigError, DataError
from arlm_lib.ngram import SMOOTHINGS, NGramModel

V = 5


def _training_tokens(n: int = 4000, seed: int = 0) -> np.ndarray:
    """Structured data: a noisy cycle, so that longer contexts matter and some n-grams are unseen."""
    rng = np.random.default_rng(seed)
    x = np.arange(n) % V
    noise = rng.random(n) < 0.2
    x[noise] = rng.integers(0, V, noise.sum())
    x[x == 4] = np.where(rng.random((x == 4).sum()) < 0.5, 4, 3)  # token 4 is rare
    return x


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_chain_rule_product_equals_exp_of_summed_logprobs(smoothing, order):
    model = NGramModel(order, V, smoothing=smoothing, k=0.3).fit(_training_tokens())
    rng = np.random.default_rng(1)
    seq = np.concatenate([_training_tokens(30, seed=2), rng.integers(0, V, 30)])  # seen and unseen contexts
    step_probs = [model.next_token_probs(seq[:t])[seq[t]].item() for t in range(len(seq))]
    assert model.logprob(seq) == pytest.approx(math.fsum(map(math.log, step_probs)), abs=1e-9)
    assert math.exp(model.logprob(seq[:20])) == pytest.approx(math.prod(step_probs[:20]), rel=1e-9)
    assert model.cross_entropy(seq) == pytest.approx(-model.logprob(seq) / len(seq), rel=1e-12)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 4])
def test_every_context_gives_a_distribution(smoothing, order):
    model = NGramModel(order, V, smoothing=smoothing, k=0.5).fit(_training_tokens())
    contexts = [()] + [c for n in (1, 2, 3) for c in itertools.product(range(V), repeat=n)]
    for context in contexts:
        p = model.next_token_probs(list(context))
        assert isinstance(p, torch.Tensor) and p.shape == (V,)
        assert (p > 0).all(), context
        assert p.sum().item() == pytest.approx(1.0, abs=1e-12), context


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_probabilities_of_all_sequences_of_a_length_sum_to_one(smoothing):
    model = NGramModel(3, V, smoothing=smoothing, k=0.5).fit(_training_tokens())
    total = math.fsum(math.exp(model.logprob(s)) for s in itertools.product(range(V), repeat=4))
    assert total == pytest.approx(1.0, abs=1e-12)


def test_add_k_matches_the_formula():
    tokens = [0, 1, 0, 1, 0, 2]
    model = NGramModel(2, 3, smoothing="add_k", k=1.0).fit(tokens)
    # after 0: followed by 1 twice and 2 once; c(0) = 3
    assert model.next_token_probs([0]).tolist() == pytest.approx([1 / 6, 3 / 6, 2 / 6])
    # token 2 never has a successor: an unseen context is uniform
    assert model.next_token_probs([2]).tolist() == pytest.approx([1 / 3] * 3)
    # the first token has no context: the add-k unigram (c = 3, 2, 1 of N = 6)
    assert math.exp(model.token_logprobs([0])[0]) == pytest.approx(4 / 9)


def test_interpolated_and_backoff_match_the_formulas():
    tokens = [0, 1, 0, 1, 0, 2]
    d, k = 0.5, 1.0
    unigram = np.array([4, 3, 2]) / 9  # (c + k) / (N + k V)
    # context 0: followers 1 (twice) and 2 (once), c(h) = 3, two distinct followers
    inter = NGramModel(2, 3, smoothing="interpolated", k=k, discount=d).fit(tokens)
    lam = d * 2 / 3
    expected = lam * unigram + np.array([0, (2 - d) / 3, (1 - d) / 3])
    assert inter.next_token_probs([0]).numpy() == pytest.approx(expected)
    back = NGramModel(2, 3, smoothing="backoff", k=k, discount=d).fit(tokens)
    alpha = (d * 2 / 3) / (1 - unigram[1] - unigram[2])
    expected = np.array([alpha * unigram[0], (2 - d) / 3, (1 - d) / 3])
    assert back.next_token_probs([0]).numpy() == pytest.approx(expected)


def test_longer_context_helps_on_structured_text():
    train, test = _training_tokens(20_000, seed=3), _training_tokens(2_000, seed=4)
    ce = [NGramModel(n, V).fit(train).cross_entropy(test) for n in (1, 2, 3)]
    assert ce[0] > ce[1] + 0.3  # the cycle is visible from one token of context
    assert ce[1] >= ce[2] - 0.01  # and a longer context does not hurt


def test_works_on_tensors_and_large_vocabularies():
    rng = np.random.default_rng(5)
    big_v = 50_000  # keys stay dense: no int64 overflow even at order 6 with a large vocabulary
    x = torch.from_numpy(rng.integers(0, big_v, 5_000))
    model = NGramModel(6, big_v).fit(x)
    assert model.next_token_probs(x[:10]).sum().item() == pytest.approx(1.0, abs=1e-9)
    assert math.isfinite(model.logprob(x[:100]))


@pytest.mark.parametrize("order", [0, -1, 1.5, True])
def test_order_below_one_is_rejected(order):
    with pytest.raises(ConfigError, match="order"):
        NGramModel(order, V)


def test_other_bad_input_is_rejected():
    with pytest.raises(ConfigError, match="smoothing"):
        NGramModel(2, V, smoothing="kneser")
    with pytest.raises(ConfigError, match="k"):
        NGramModel(2, V, smoothing="add_k", k=0)
    with pytest.raises(ConfigError, match="discount"):
        NGramModel(2, V, discount=1.0)
    for k in (float("inf"), float("nan"), 1e308, "1", True):
        with pytest.raises(ConfigError, match=r"k \(add-k pseudo-count\) must be a number in \(0, 1e\+06\]"):
            NGramModel(2, V, k=k)
    with pytest.raises(ConfigError, match="discount must be a number"):
        NGramModel(2, V, discount="0.5")
    with pytest.raises(ConfigError, match="discount"):
        NGramModel(2, V, discount=0.0)  # no mass left for unseen followers: probabilities of 0
    with pytest.raises(ConfigError, match="fitted"):
        NGramModel(2, V).logprob([0, 1])
    model = NGramModel(2, V)
    with pytest.raises(DataError, match="outside the vocabulary"):
        model.fit([0, 1, V])
    with pytest.raises(DataError, match="empty"):
        model.fit([])


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("train", [[1], [1, 2]])
def test_fitted_on_fewer_tokens_than_the_order_falls_back_to_shorter_contexts(smoothing, train):
    """The order-3 levels hold no n-grams at all: the model answers from the levels it has."""
    model = NGramModel(3, 5, smoothing=smoothing).fit(train)
    sequence = [1, 2, 3, 1]
    logprobs = model.token_logprobs(sequence)
    for t in range(len(sequence)):
        dist = model.next_token_probs(sequence[:t]).numpy()
        assert dist.sum() == pytest.approx(1.0) and (dist > 0).all()
        assert logprobs[t] == pytest.approx(math.log(dist[sequence[t]]))


def test_backoff_refuses_a_k_too_small_for_its_sums_and_add_k_allows_it():
    """Backoff divides by the unigram mass left for unseen tokens: with k = 1e-12 that mass is lost in
    float64 rounding and a distribution summed to 0.9993. Add-k has no such division, and a tiny k is the
    maximum-likelihood estimate the book computes with it."""
    tokens = [2, 0, 1, 1, 1, 0, 1, 2, 1]  # token 3 never occurs
    with pytest.raises(ConfigError, match=r"backoff smoothing k must be >= 1e-06; got 1e-12"):
        NGramModel(2, 4, smoothing="backoff", k=1e-12)
    smallest = NGramModel(2, 4, smoothing="backoff", k=1e-6).fit(tokens)
    assert float(smallest.next_token_probs([1]).sum()) == pytest.approx(1.0, abs=1e-6)
    ml = NGramModel(2, 4, smoothing="add_k", k=1e-9).fit(tokens).next_token_probs([1])
    assert ml[1].item() == pytest.approx(2 / 4, abs=1e-6)  # after 1 come 1, 1, 0 and 2


def reference_ngram_probs(tokens, V, order, smoothing, k, d, context):
    """The module docstring's formulas, written out recursively with Counters (orders >= 3: the book
    uses 6 and 7, where each level mixes in the next-shorter context, not the unigram)."""
    counts = {
        n: Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)) for n in range(1, order + 1)
    }
    N = len(tokens)
    unigram = [(counts[1][(w,)] + k) / (N + k * V) for w in range(V)]

    def dist(h):
        if not h:
            return unigram
        c = [counts[len(h) + 1][h + (w,)] for w in range(V)]
        total, types = sum(c), sum(x > 0 for x in c)
        if total == 0:
            return [1 / V] * V if smoothing == "add_k" else dist(h[1:])
        if smoothing == "add_k":
            return [(x + k) / (total + k * V) for x in c]
        lower = dist(h[1:])
        if smoothing == "interpolated":
            return [max(x - d, 0) / total + d * types / total * lo for x, lo in zip(c, lower)]
        if types >= V:
            return [x / total for x in c]
        alpha = (d * types / total) / (1 - sum(lo for x, lo in zip(c, lower) if x > 0))
        return [(x - d) / total if x > 0 else alpha * lo for x, lo in zip(c, lower)]

    h = tuple(context[max(0, len(context) - (order - 1)) :]) if order > 1 else ()
    return dist(h)


@pytest.mark.parametrize("smoothing", ["add_k", "interpolated", "backoff"])
@pytest.mark.parametrize("order", [3, 4])
def test_higher_order_ngrams_follow_the_written_out_formulas(smoothing, order):
    V = 4
    rng = np.random.default_rng(0)
    x = np.arange(300) % V
    noise = rng.random(300) < 0.3
    x[noise] = rng.integers(0, V, noise.sum())
    tokens = x.tolist()
    model = NGramModel(order, V, smoothing=smoothing, k=0.5, discount=0.6).fit(tokens)
    for n in range(0, 4):
        for context in itertools.product(range(V), repeat=n):
            expected = reference_ngram_probs(tokens, V, order, smoothing, 0.5, 0.6, list(context))
            assert model.next_token_probs(list(context)).tolist() == pytest.approx(expected, abs=1e-12), (
                context
            )


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([0.5, 1.9, 3.7], "integer ids, got 0.5"),  # used to be truncated to [0, 1, 3] and counted
        (torch.tensor([0.5, 1.2]), "integer ids, got 0.5"),
        ([True, False, True], "integer ids, got True"),
        ([[0, 1], [2, 3]], r"1-D\), got shape \(2, 2\)"),  # used to be flattened: a bigram 1 -> 2 counted
        ([[0, 1], [2]], "one sequence of token ids"),
        ("the cat", "not a str: encode the text first"),  # used to be numpy's "invalid literal for int()"
    ],
)
def test_token_ids_that_are_not_one_integer_sequence_are_refused_not_converted(tokens, message):
    model = NGramModel(2, 5)
    with pytest.raises(DataError, match=message):
        model.fit(tokens)
    model.fit([0, 1, 2, 3])
    for score in (model.next_token_probs, model.token_logprobs):
        with pytest.raises(DataError, match=message):
            score(tokens)
    # Integer ids of any integer dtype still work, and an empty context is still the unigram one.
    assert model.fit(np.array([0, 1, 2], dtype=np.int32)).n_tokens == 3
    assert float(model.next_token_probs([]).sum()) == pytest.approx(1.0)
