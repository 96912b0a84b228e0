"""The entropy-rate estimate: consistent across seeds, honest confidence intervals, per-token variants."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import pytest

from arlm_lib.corpus import SyntheticLanguage, entropy_rate, text_bits_per_char, token_entropy_rate
from arlm_lib.errors import ConfigError, DataError


def test_estimates_agree_across_seeds_within_their_confidence_intervals():
    estimates = [entropy_rate("synthetic", n_sentences=10_000, seed=s) for s in range(4)]
    for e in estimates:
        assert e.ci_low < e.bits_per_char < e.ci_high
        assert e.ci_high - e.ci_low < 0.03  # 10k sentences pin the rate down to about 2%
    for a in estimates:
        for b in estimates:
            # Six pairwise comparisons: 3.5 combined standard errors keeps false alarms below 0.3%.
            assert abs(a.bits_per_char - b.bits_per_char) <= 3.5 * math.hypot(a.std_error, b.std_error)


def test_confidence_intervals_cover_the_rate_about_95_percent_of_the_time():
    reference = entropy_rate("synthetic", n_sentences=60_000, seed=12345).bits_per_char
    small = [entropy_rate("synthetic", n_sentences=600, seed=100 + s) for s in range(40)]
    misses = sum(not (e.ci_low <= reference <= e.ci_high) for e in small)
    assert misses <= 8  # Binomial(40, 0.05): P(misses > 8) < 1e-3
    # ...and the intervals are not merely wide: their half-width matches the spread of the estimates.
    spread = statistics.stdev(e.bits_per_char for e in small)
    half_width = statistics.mean((e.ci_high - e.ci_low) / 2 for e in small)
    assert 0.6 < half_width / (1.96 * spread) < 1.6


def test_entropy_is_the_mean_of_the_exact_sentence_log_probabilities():
    lang = SyntheticLanguage("full")
    sample = lang.sample(500, seed=7)
    bits = -math.fsum(lp for _, lp in sample) / math.log(2)
    chars = sum(len(t) + 1 for t, _ in sample)
    est = entropy_rate(lang, n_sentences=500, seed=7)
    assert est.bits_per_char == pytest.approx(bits / chars, rel=1e-12)
    assert est.n_chars == chars
    # The same floor, computed by parsing the generated text back.
    text = "".join(t + "\n" for t, _ in sample)
    assert text_bits_per_char(text, lang) == pytest.approx(bits / chars, rel=1e-12)


def test_variants_have_different_rates():
    rates = {n: entropy_rate(n, n_sentences=3_000).bits_per_char for n in ("synthetic", "synthetic-copy")}
    # Half of every copy sentence is a deterministic repeat: its rate per character is much lower.
    assert rates["synthetic-copy"] < 0.8 * rates["synthetic"]


def test_bits_per_token_counts_the_same_bits_over_tokens():
    from arlm_lib.tokenizers import train_tokenizer

    lang = SyntheticLanguage("full")
    text = lang.text(200_000, seed=1)
    per_char = entropy_rate(lang, n_sentences=2_000, seed=3)
    char = token_entropy_rate(train_tokenizer("char", text), lang, n_sentences=2_000, seed=3)
    assert char.bits_per_token == pytest.approx(per_char.bits_per_char, rel=1e-12)
    bpe_tok = train_tokenizer("bpe", text, vocab_size=400)
    bpe = token_entropy_rate(bpe_tok, lang, n_sentences=2_000, seed=3)
    assert bpe.chars_per_token > 1.5  # merges make tokens longer than characters...
    # ...but the total number of bits is the same text's.
    total_bits = per_char.bits_per_char * per_char.n_chars
    assert bpe.bits_per_token * bpe.n_tokens == pytest.approx(total_bits, rel=1e-9)
    sample_text = "".join(t + "\n" for t, _ in lang.sample(2_000, seed=3))
    assert bpe.n_tokens == len(bpe_tok.encode(sample_text))  # per-sentence counts add up to the whole
    assert bpe.ci_low < bpe.bits_per_token < bpe.ci_high


def test_bad_requests_are_rejected():
    with pytest.raises(DataError, match="synthetic"):
        entropy_rate("prose")
    with pytest.raises(ConfigError, match="n_sentences"):
        entropy_rate("synthetic", n_sentences=1)
    for bad in ("x", None, 2.5, True):  # a raw TypeError for the first two, accepted for the last two
        with pytest.raises(ConfigError, match=f"n_sentences must be an integer >= 2; got {bad!r}"):
            entropy_rate("synthetic", n_sentences=bad)
        with pytest.raises(ConfigError, match="n_sentences"):
            token_entropy_rate(SimpleNamespace(encode=list), "synthetic", n_sentences=bad)
    with pytest.raises(DataError, match="not in the"):
        text_bits_per_char("the dog run.\n")


def test_ratio_estimate_is_the_delta_method_formula():
    """Closed form: the standard error of a ratio of means uses the sample variance (n - 1) of the
    residuals, and the interval the two-sided normal quantile (1.96 at 95 %, not one-sided 1.645)."""
    from arlm_lib.corpus.entropy import ratio_estimate

    num, den = [3.0, 5.0, 4.0, 9.0], [1.0, 2.0, 1.0, 3.0]
    ratio, se, low, high = ratio_estimate(num, den, confidence=0.95)
    r = 21 / 7
    residuals = [a - r * b for a, b in zip(num, den)]  # 0, -1, 1, 0
    expected_se = math.sqrt(sum(x * x for x in residuals) / (4 * 3)) / (7 / 4)
    assert ratio == pytest.approx(r)
    assert se == pytest.approx(expected_se, rel=1e-12)
    z = 1.959963984540054
    assert (low, high) == pytest.approx((r - z * expected_se, r + z * expected_se), rel=1e-12)


def test_ratio_estimate_refuses_unpaired_samples():
    """zip() would silently drop the unpaired sample and estimate a different ratio."""
    from arlm_lib.corpus.entropy import ratio_estimate

    with pytest.raises(DataError, match="paired samples; got 3 and 2"):
        ratio_estimate([3.0, 5.0, 4.0], [1.0, 2.0])


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_a_confidence_outside_the_open_unit_interval_is_refused(confidence):
    with pytest.raises(ConfigError, match=f"confidence must be in \\(0, 1\\); got {confidence}"):
        entropy_rate("synthetic", n_sentences=10, confidence=confidence)


def test_text_must_end_with_a_whole_sentence():
    # Without its final newline the last sentence would be dropped, and the rate reported as 0 bits.
    with pytest.raises(DataError, match="whole sentences"):
        text_bits_per_char("the dog runs.")
    with pytest.raises(DataError, match="whole sentences"):
        text_bits_per_char("the dog runs.\nthe cat")


def test_bits_per_sentence_is_the_mean_over_sentences():
    lang = SyntheticLanguage("full")
    sample = lang.sample(300, seed=9)
    est = entropy_rate(lang, n_sentences=300, seed=9)
    bits = -math.fsum(lp for _, lp in sample) / math.log(2)
    assert est.bits_per_sentence == pytest.approx(bits / 300, rel=1e-12)
    assert est.bits_per_sentence * est.n_sentences == pytest.approx(est.bits_per_char * est.n_chars)
