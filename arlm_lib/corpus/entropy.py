"""The entropy rate of the synthetic languages: the floor under any model's cross-entropy on their text.

Sentences are i.i.d. and each ends with "\\n", so the entropy rate per character of the text stream is
E[bits per sentence] / E[characters per sentence, newline included]. We estimate that ratio from sampled
sentences with their exact log-probabilities, and give a normal (delta-method) confidence interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from arlm_lib.checks import is_int
from arlm_lib.corpus.synthetic import SyntheticLanguage, sentence_logprobs
from arlm_lib.errors import ConfigError, DataError

LN2 = math.log(2.0)

# Built-in corpus name -> synthetic language kind.
SYNTHETIC_CORPORA = {"synthetic": "full", "synthetic-copy": "copy", "synthetic-agreement": "agreement"}


class _Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class EntropyEstimate:
    """Entropy rate in bits per character with a confidence interval, from ``n_sentences`` samples."""

    bits_per_char: float
    ci_low: float
    ci_high: float
    std_error: float
    confidence: float
    n_sentences: int
    n_chars: int
    bits_per_sentence: float

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return f"{self.bits_per_char:.4f} bits/char ({pct}% CI {self.ci_low:.4f}-{self.ci_high:.4f})"


@dataclass(frozen=True)
class TokenEntropyEstimate:
    """Entropy rate in bits per token for one tokenizer (total bits / tokens of the same text), with a CI."""

    bits_per_token: float
    ci_low: float
    ci_high: float
    std_error: float
    confidence: float
    n_sentences: int
    n_tokens: int
    chars_per_token: float

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return f"{self.bits_per_token:.4f} bits/token ({pct}% CI {self.ci_low:.4f}-{self.ci_high:.4f})"


def ratio_estimate(
    numerators: Sequence[float], denominators: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """Sum(num)/sum(den) with its delta-method standard error and a normal CI: (ratio, se, low, high)."""
    n = len(numerators)
    if n < 2 or n != len(denominators):
        raise DataError(f"a ratio estimate needs >= 2 paired samples; got {n} and {len(denominators)}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1); got {confidence}")
    total_den = math.fsum(denominators)
    ratio = math.fsum(numerators) / total_den
    mean_den = total_den / n
    residuals = [a - ratio * b for a, b in zip(numerators, denominators)]
    se = math.sqrt(math.fsum(r * r for r in residuals) / (n * (n - 1))) / mean_den
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    return ratio, se, ratio - z * se, ratio + z * se


def language_for(name: str | SyntheticLanguage) -> SyntheticLanguage:
    """The synthetic language behind a built-in corpus name (or the language itself)."""
    if isinstance(name, SyntheticLanguage):
        return name
    if name not in SYNTHETIC_CORPORA:
        raise DataError(
            f"no known entropy rate for corpus {name!r}: only the synthetic corpora have one "
            f"({', '.join(SYNTHETIC_CORPORA)})"
        )
    return SyntheticLanguage(SYNTHETIC_CORPORA[name])


def _check_n(n_sentences: int) -> None:
    # is_int first: comparing a str or None with 2 would be a raw TypeError.
    if not is_int(n_sentences) or n_sentences < 2:
        raise ConfigError(f"n_sentences must be an integer >= 2; got {n_sentences!r}")


def entropy_rate(
    name: str | SyntheticLanguage = "synthetic",
    n_sentences: int = 100_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> EntropyEstimate:
    """Estimate the entropy rate (bits/char, newlines included) of a synthetic corpus's language."""
    _check_n(n_sentences)
    lang = language_for(name)
    bits, chars = [], []
    for text, logprob in sentence_logprobs(lang, n_sentences, seed):
        bits.append(-logprob / LN2)
        chars.append(len(text) + 1)
    rate, se, low, high = ratio_estimate(bits, chars, confidence)
    return EntropyEstimate(
        rate, low, high, se, confidence, n_sentences, sum(chars), math.fsum(bits) / n_sentences
    )


def token_entropy_rate(
    tokenizer: _Encoder,
    name: str | SyntheticLanguage = "synthetic",
    n_sentences: int = 100_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> TokenEntropyEstimate:
    """Estimate the entropy rate in bits per token of ``tokenizer`` (anything with ``encode(str)``)."""
    _check_n(n_sentences)
    lang = language_for(name)
    bits, tokens, chars = [], [], 0
    for text, logprob in sentence_logprobs(lang, n_sentences, seed):
        bits.append(-logprob / LN2)
        # Each sentence is encoded with its newline; tokenizers split at "\n" (the document-start token),
        # so these counts add up to the token count of the whole text.
        tokens.append(len(tokenizer.encode(text + "\n")))
        chars += len(text) + 1
    rate, se, low, high = ratio_estimate(bits, tokens, confidence)
    n_tokens = sum(tokens)
    return TokenEntropyEstimate(rate, low, high, se, confidence, n_sentences, n_tokens, chars / n_tokens)


def text_bits_per_char(text: str, lang: str | SyntheticLanguage = "synthetic") -> float:
    """Exact bits/char of ``text`` (whole "\\n"-terminated sentences) under the true language: the floor
    for a model evaluated on that very text. DataError if a line is not in the language."""
    lang = language_for(lang)
    lines = text.split("\n")
    if lines[-1] != "":
        raise DataError("text must consist of whole sentences, each followed by a newline")
    total = 0.0
    for line in lines[:-1]:
        lp = lang.logprob(line)
        if lp == -math.inf:
            raise DataError(f"sentence {line!r} is not in the {lang.kind!r} language")
        total -= lp
    return total / LN2 / len(text)
