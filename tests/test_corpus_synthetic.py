"""The synthetic language: exact probabilities, unambiguity, the constructions, and the agreement probes."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest

from arlm_lib.corpus import synthetic as syn
from arlm_lib.corpus.synthetic import GrammarConfig, SyntheticLanguage
from arlm_lib.errors import ConfigError


@pytest.mark.parametrize("kind", ["full", "copy", "agreement"])
def test_sampled_logprob_equals_the_unique_parse(kind):
    # The sampler and the parser walk the grammar differently (draws vs a pruned search over all
    # derivations); each sampled string must have exactly one derivation, with the sampled log-prob.
    lang = SyntheticLanguage(kind)
    for text, logprob in lang.sample(300, seed=11):
        found = lang.derivations(text)
        assert len(found) == 1, (text, found)
        assert found[0] == pytest.approx(logprob, abs=1e-9)
        assert lang.logprob(text) == pytest.approx(logprob, abs=1e-9)


@pytest.mark.parametrize(
    "changes",
    [{}, {"remark_max_depth": 1, "remark_max_items": 2}],
    ids=["nested-brackets", "two-items"],
)
def test_finite_subgrammar_sums_to_one_without_ambiguity(changes):
    lang = SyntheticLanguage("small", config=replace(GrammarConfig.small(), **changes))
    derivations = list(lang.enumerate())
    texts = [t for t, _ in derivations]
    assert len(derivations) > 1000  # the sub-grammar exercises every construction
    assert len(set(texts)) == len(texts), "two derivations produce the same string"
    assert math.fsum(math.exp(lp) for _, lp in derivations) == pytest.approx(1.0, abs=1e-9)
    constructions = {"copy": ' repeats "', "relative": " that ", "pp": " in "}
    for name, marker in constructions.items():
        assert any(marker in t for t in texts), f"no {name} sentence in the enumeration"
    assert max(map(_bracket_depth, texts)) == lang.config.remark_max_depth
    # The parser finds the same probability for any enumerated string.
    for text, lp in random.Random(0).sample(derivations, 200):
        assert lang.logprob(text) == pytest.approx(lp, abs=1e-12)


def _bracket_depth(text: str) -> int:
    """Deepest bracket nesting in ``text``; AssertionError if the brackets do not match."""
    stack: list[str] = []
    deepest = 0
    for ch in text:
        if ch in "([":
            stack.append(ch)
            deepest = max(deepest, len(stack))
        elif ch in ")]":
            assert stack and "([".index(stack.pop()) == ")]".index(ch), text
    assert not stack, text
    return deepest


def _assert_frequencies_match(lang: SyntheticLanguage, n: int, top: int, seed: int) -> None:
    samples = lang.sample(n, seed=seed)
    counts = Counter(t for t, _ in samples)
    logprob = dict(samples)
    for text, count in counts.most_common(top):
        p = math.exp(logprob[text])
        sd = math.sqrt(n * p * (1 - p))
        # 5 standard deviations per sentence: a false alarm has probability < 1e-5 across the list.
        assert abs(count - n * p) <= 5 * sd + 1, (text, count, n * p)
    # Expected frequency of the most frequent sentences must also be large enough to test something.
    assert n * math.exp(logprob[counts.most_common(1)[0][0]]) > 30


def test_empirical_frequencies_match_exact_probabilities_small():
    _assert_frequencies_match(SyntheticLanguage("small"), n=20_000, top=25, seed=5)


def test_empirical_frequencies_match_exact_probabilities_full():
    _assert_frequencies_match(SyntheticLanguage("full"), n=40_000, top=15, seed=6)


def test_strings_outside_the_language_have_zero_probability():
    lang = SyntheticLanguage("full")
    assert lang.logprob("the dog runs.") > -math.inf
    outside = [
        "the dog run.",  # agreement violated
        "the dogs that the cat chases runs.",  # agreement violated across a relative clause
        "the dog runs",  # no full stop
        "the dog  runs.",  # double space
        "the dog runs (big].",  # mismatched brackets
        'alice says "big dog" and bob repeats "big cat".',  # copy broken
        "the unicorn runs.",  # not in the lexicon
        "",
    ]
    for text in outside:
        assert lang.logprob(text) == -math.inf, text


def test_lexicon_keeps_the_grammar_unambiguous_and_the_verb_decision_clean():
    lists = {
        "nouns": syn.NOUNS,
        "plural nouns": tuple(n + "s" for n in syn.NOUNS),
        "verbs": syn.INTRANSITIVE_VERBS + syn.TRANSITIVE_VERBS,
        "singular verbs": tuple(v + "s" for v in syn.INTRANSITIVE_VERBS + syn.TRANSITIVE_VERBS),
        "adjectives": syn.ADJECTIVES,
        "names": syn.NAMES,
        "places": syn.PLACES,
        "prepositions": syn.PREPOSITIONS,
    }
    words = [w for ws in lists.values() for w in ws]
    assert len(words) == len(set(words)), "a word appears in two lists"
    assert all(w.isascii() and w.isalpha() and w.islower() for w in words)
    assert not {"that", "says", "repeats", "and"} & set(words)
    stems = syn.INTRANSITIVE_VERBS + syn.TRANSITIVE_VERBS
    # At "...<stem>" the next character alone must tell the number: no stem extends another.
    for a in stems:
        for b in stems:
            assert a == b or not b.startswith(a), (a, b)
    assert 200 <= len(words) + len(syn.DETERMINERS_SINGULAR) <= 400


def test_constructions_have_the_specified_shape():
    lang = SyntheticLanguage("full")
    texts = [t for t, _ in lang.sample(5000, seed=2)]
    copies = [t for t in texts if ' says "' in t]
    assert 0.02 < len(copies) / len(texts) < 0.1
    for t in copies:
        first, second = t.split('"')[1], t.split('"')[3]
        assert first == second
    assert max(map(_bracket_depth, texts)) == 2  # nested brackets occur, always matched


def test_agreement_items_probe_the_subject_verb_dependency():
    lang = SyntheticLanguage("agreement")
    items = lang.agreement_items(400, seed=3, relative_only=True)
    spans = [it.span for it in items]
    assert min(spans) >= 5 and max(spans) <= 45 and max(spans) >= 25
    assert 0.3 < sum(it.is_singular for it in items) / len(items) < 0.7
    for it in items[:100]:
        assert it.sentence.startswith(it.prefix + it.correct)
        assert it.decision_prefix == it.prefix + it.plural_form
        assert it.singular_form == it.plural_form + "s"
        rest = it.sentence[len(it.prefix) + len(it.correct) :]
        assert lang.logprob(it.prefix + it.correct + rest) > -math.inf
        assert lang.logprob(it.prefix + it.wrong + rest) == -math.inf


def test_text_is_deterministic_and_smaller_sizes_are_prefixes():
    lang = SyntheticLanguage("full")
    small, large = lang.text(2_000, seed=4), lang.text(6_000, seed=4)
    assert large == lang.text(6_000, seed=4)
    assert large.startswith(small)
    assert len(large) <= 6_000 and small.endswith("\n")
    assert small != lang.text(2_000, seed=5)


def test_bad_configuration_is_rejected():
    with pytest.raises(ConfigError, match="unknown synthetic language kind"):
        SyntheticLanguage("tiny")
    with pytest.raises(ConfigError, match="n_nouns"):
        SyntheticLanguage("full", config=replace(GrammarConfig.full(), n_nouns=0))
    with pytest.raises(ConfigError, match="probability"):
        SyntheticLanguage("full", config=replace(GrammarConfig.full(), p_relative=1.5))
    with pytest.raises(ConfigError, match="too large"):
        list(SyntheticLanguage("full").enumerate(limit=1000))
    with pytest.raises(ConfigError, match="n_chars"):
        SyntheticLanguage("full").text(0)


def test_logprob_refuses_an_ambiguous_sentence(monkeypatch):
    lang = SyntheticLanguage("full")
    monkeypatch.setattr(lang, "derivations", lambda text, limit=100_000: [-1.0, -2.0])
    with pytest.raises(ConfigError, match="ambiguous sentence 'the dog runs.': 2 derivations"):
        lang.logprob("the dog runs.")


def test_text_always_holds_at_least_one_sentence():
    lang = SyntheticLanguage("full")
    assert lang.text(1, seed=4) == lang.sample(1, seed=4)[0][0] + "\n"


def test_sample_and_text_default_to_the_languages_seed():
    lang = SyntheticLanguage("full", seed=7)
    assert lang.sample(20) == lang.sample(20, seed=7)
    assert lang.sample(20) != SyntheticLanguage("full", seed=8).sample(20)
    assert lang.text(500) == lang.text(500, seed=7)


@pytest.mark.parametrize("field", ["kind_weights", "copy_length_weights"])
def test_all_zero_weights_are_refused(field):
    config = replace(GrammarConfig.full(), **{field: (0.0, 0.0)})
    with pytest.raises(ConfigError, match="not all zero"):
        SyntheticLanguage("full", config=config)


def test_text_keeps_a_sentence_that_ends_exactly_at_n_chars():
    lang = SyntheticLanguage("full")
    three = "".join(t + "\n" for t, _ in lang.sample(3, seed=6))
    assert lang.text(len(three), seed=6) == three
    assert lang.text(len(three) - 1, seed=6) == "".join(t + "\n" for t, _ in lang.sample(2, seed=6))


@pytest.mark.parametrize(("kind", "lengths"), [("full", {1, 2, 3}), ("copy", {2, 3, 4, 5, 6})])
def test_copied_sequences_have_the_configured_lengths(kind, lengths):
    """copy_length_weights gives P(length = 1, 2, ...): the copy preset's zero first weight means
    at least two words, and no sequence is ever empty."""
    texts = [t for t, _ in SyntheticLanguage(kind).sample(3000, seed=4)]
    quoted = [t.split('"')[1] for t in texts if ' says "' in t]
    assert {len(q.split(" ")) for q in quoted if q} == lengths
    assert all(quoted), "an empty quotation"


def test_an_object_relative_verb_agrees_with_its_own_subject():
    """In "the dogs that the cat chases run." the clause's verb agrees with "the cat", the main verb
    with "the dogs": the distractor noun is what makes agreement a long-range test."""
    lang = SyntheticLanguage("full")
    assert lang.logprob("the dogs that the cat chases run.") > -math.inf
    assert lang.logprob("the dog that the cats chase runs.") > -math.inf
    assert lang.logprob("the dogs that the cat chase run.") == -math.inf
    assert lang.logprob("the dog that the cats chases runs.") == -math.inf


def test_logprob_accepts_a_line_with_its_newline():
    lang = SyntheticLanguage("full")
    assert lang.logprob("the dog runs.\n") == lang.logprob("the dog runs.") > -math.inf


def test_agreement_probes_need_declarative_sentences():
    lang = SyntheticLanguage("copy")
    for n in (0, 5):
        with pytest.raises(ConfigError, match="no declarative sentences"):
            lang.agreement_items(n)
