"""A seeded, English-like synthetic language whose every sentence has an exact probability.

The language is a probabilistic grammar written as one Python generator (:meth:`SyntheticLanguage._sentence`)
that asks a *chooser* for every random decision. The same generator serves three jobs:

* sampling: the chooser draws from a ``random.Random`` and adds up the log-probabilities;
* enumeration of a small finite sub-grammar: the chooser walks every branch of the choice tree;
* parsing: the chooser walks only the branches whose emitted text is a prefix of the target string.

Because parsing counts *all* derivations of a string, :meth:`SyntheticLanguage.derivations` proves
unambiguity on any string we care to test: one derivation means string probability == derivation probability.

The sentences show (a) subject-verb number agreement across an optional relative clause, (b) nested
matched brackets, (c) a copy construction (a random word sequence in quotes, later repeated exactly) and
(d) ordinary local structure (determiner, adjective, noun, verb, prepositional phrase).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from arlm_lib.errors import ConfigError

# Bump when the grammar or the lexicon changes: cached corpora are keyed by it.
GRAMMAR_VERSION = 4

# ---------------------------------------------------------------------------------------------------
# Lexicon. Lists are in Zipf rank order (first = most frequent). Every word is lowercase a-z, and no
# word appears in two lists that can fill the same slot, so the grammar stays unambiguous.
# Nouns and verbs are regular: plural noun = noun + "s"; singular verb = stem + "s".
NOUNS = (
    "dog", "cat", "bird", "horse", "frog", "goat", "duck", "lion", "bear", "seal",
    "crow", "hawk", "owl", "snake", "tiger", "whale", "shark", "camel", "rabbit", "monkey",
    "parrot", "spider", "beetle", "pig", "cow", "hen", "ant", "bee", "eagle", "otter",
    "zebra", "donkey", "kitten", "robot", "farmer", "teacher", "doctor", "singer", "baker", "pilot",
)  # fmt: skip
INTRANSITIVE_VERBS = (
    "run", "sleep", "sing", "jump", "laugh", "dance", "smile", "walk", "swim", "rest",
    "wait", "shout", "yell", "fall", "sit", "stand", "work", "play", "dream", "wander",
)  # fmt: skip
TRANSITIVE_VERBS = (
    "see", "like", "chase", "help", "find", "follow", "love", "know", "meet", "visit",
    "call", "hear", "want", "need", "greet", "feed", "trust", "fear", "push", "paint",
)  # fmt: skip
ADJECTIVES = (
    "big", "small", "old", "young", "red", "green", "blue", "happy", "quiet", "brave",
    "clever", "lazy", "tall", "calm", "wild", "tiny", "proud", "gentle", "busy", "angry",
    "shy", "bright", "dark", "warm", "cold", "fast", "slow", "kind", "strong", "sleepy",
)  # fmt: skip
NAMES = (
    "alice", "bob", "carol", "dave", "emma", "frank", "grace", "henry", "iris", "jack",
    "kate", "leo", "mia", "noah", "olga", "paul", "rosa", "sam", "tina", "victor",
)  # fmt: skip
PLACES = (
    "paris", "rome", "london", "berlin", "madrid", "oslo", "vienna", "prague", "dublin", "lisbon",
    "athens", "cairo", "tokyo", "lima", "delhi",
)  # fmt: skip
PREPOSITIONS = ("in", "near", "from", "behind", "beyond", "around")
DETERMINERS_SINGULAR = ("the", "a", "this", "every", "one")
DETERMINERS_PLURAL = ("the", "some", "these", "many", "two")

SINGULAR, PLURAL = 0, 1
KINDS = ("full", "copy", "agreement", "small")


# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Categorical:
    """A fixed categorical distribution with precomputed cumulative sums and natural-log probabilities."""

    probs: tuple[float, ...]
    cum: tuple[float, ...] = field(repr=False, default=())
    logp: tuple[float, ...] = field(repr=False, default=())
    support: tuple[int, ...] = field(repr=False, default=())

    @classmethod
    def from_weights(cls, weights: Sequence[float]) -> Categorical:
        """Normalise non-negative weights into a distribution (raise ConfigError if they are all zero)."""
        if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"weights must be finite, non-negative and not all zero; got {list(weights)}")
        total = float(sum(weights))
        probs = tuple(w / total for w in weights)
        cum, acc = [], 0.0
        for p in probs:
            acc += p
            cum.append(acc)
        logp = tuple(math.log(p) if p > 0 else -math.inf for p in probs)
        support = tuple(i for i, p in enumerate(probs) if p > 0)
        return cls(probs, tuple(cum), logp, support)

    def sample(self, rng: random.Random) -> int:
        """Draw one index; never returns an index of probability zero."""
        if len(self.support) == 1:
            return self.support[0]
        k = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        k = min(k, len(self.probs) - 1)
        while self.probs[k] == 0.0:  # guard against landing on a zero-width bin through rounding
            k -= 1
        return k


def zipf(n: int, exponent: float) -> Categorical:
    """Zipf weights 1/(rank+1)^exponent over n items (exponent 0 = uniform)."""
    if n < 1:
        raise ConfigError(f"a word list needs at least 1 word; got n={n}")
    return Categorical.from_weights([1.0 / (r + 1) ** exponent for r in range(n)])


def bernoulli(p: float) -> Categorical:
    """Index 1 with probability p, index 0 otherwise."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"a probability must be in [0, 1]; got {p}")
    return Categorical.from_weights([1.0 - p, p])


@dataclass(frozen=True)
class Vocab:
    """A word list together with the distribution its words are drawn from."""

    words: tuple[str, ...]
    dist: Categorical


# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GrammarConfig:
    """Every knob of the grammar: sentence-kind weights, optional-element probabilities, lexicon sizes.

    Use the presets (:meth:`full`, :meth:`copy`, :meth:`agreement`, :meth:`small`) or ``dataclasses.replace``.
    """

    kind_weights: tuple[float, float] = (0.95, 0.05)  # (declarative, copy)
    p_plural: float = 0.5  # subject / object number
    p_name: float = 0.3  # a singular noun phrase is a proper name
    p_adjective: float = 0.25
    p_relative: float = 0.3  # the subject carries a relative clause ("that ...")
    p_object_relative: float = 0.5  # "that the cats chase" (a distractor noun) vs "that chases the cat"
    p_transitive: float = 0.5
    p_pp: float = 0.25  # sentence-final "in paris"
    p_remark: float = 0.1  # a bracketed remark before the full stop
    p_nest: float = 0.3  # an item inside a bracket is itself a bracket
    p_more: float = 0.35  # another item follows inside a bracket
    remark_max_depth: int = 2
    remark_max_items: int = 3
    copy_length_weights: tuple[float, ...] = (0.5, 0.3, 0.2)  # P(length = 1, 2, ...)
    zipf_exponent: float = 1.1
    n_nouns: int = len(NOUNS)
    n_adjectives: int = len(ADJECTIVES)
    n_intransitive: int = len(INTRANSITIVE_VERBS)
    n_transitive: int = len(TRANSITIVE_VERBS)
    n_names: int = len(NAMES)
    n_places: int = len(PLACES)
    n_prepositions: int = len(PREPOSITIONS)
    n_determiners: int = min(len(DETERMINERS_SINGULAR), len(DETERMINERS_PLURAL))
    n_pool: int = 30  # the copy / bracket word pool: first adjectives and nouns, interleaved

    @classmethod
    def full(cls) -> GrammarConfig:
        """The default language: every construction, tuned so a tiny model can approach its floor."""
        return cls()

    @classmethod
    def copy(cls) -> GrammarConfig:
        """Copy sentences only, with longer sequences, to make induction heads visible."""
        return cls(
            kind_weights=(0.0, 1.0), copy_length_weights=(0.0, 1.0, 1.0, 1.0, 1.0, 1.0), zipf_exponent=0.5
        )

    @classmethod
    def agreement(cls) -> GrammarConfig:
        """Declarative sentences only, relative clauses often, a small lexicon: agreement is the signal,
        and a small model learns the words fast enough to get to it."""
        return cls(
            kind_weights=(1.0, 0.0),
            p_relative=0.7,
            p_pp=0.0,
            p_remark=0.0,
            n_nouns=12,
            n_adjectives=6,
            n_intransitive=6,
            n_transitive=6,
            n_names=6,
        )

    @classmethod
    def small(cls) -> GrammarConfig:
        """A finite sub-grammar small enough to enumerate exhaustively (the sum-to-1 test): ~10k strings."""
        return cls(
            kind_weights=(0.8, 0.2),
            remark_max_depth=2,
            remark_max_items=1,
            copy_length_weights=(0.5, 0.5),
            n_nouns=1,
            n_adjectives=1,
            n_intransitive=1,
            n_transitive=1,
            n_names=1,
            n_places=1,
            n_prepositions=1,
            n_determiners=1,
            n_pool=2,
        )

    @classmethod
    def preset(cls, kind: str) -> GrammarConfig:
        """The config for one of ``KINDS``; ConfigError otherwise."""
        if kind not in KINDS:
            raise ConfigError(f"unknown synthetic language kind {kind!r}; choose one of {', '.join(KINDS)}")
        return getattr(cls, kind)()


# ---------------------------------------------------------------------------------------------------
# Choosers: the generator calls choice / word / emit / mark; what they do decides the job.
class _Sampler:
    """Draws every decision from ``rng`` and accumulates the exact log-probability."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.parts: list[str] = []
        self.length = 0
        self.logprob = 0.0
        self.marks: dict[str, tuple[int, object]] = {}

    def choice(self, dist: Categorical) -> int:
        k = dist.sample(self.rng)
        self.logprob += dist.logp[k]
        return k

    def word(self, vocab: Vocab) -> int:
        k = self.choice(vocab.dist)
        self.emit(vocab.words[k])
        return k

    def emit(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def mark(self, label: str, value: object = None) -> None:
        self.marks[label] = (self.length, value)

    def text(self) -> str:
        return "".join(self.parts)


class _Branch(Exception):
    """Raised by the replay chooser when it reaches a decision it has no forced value for."""

    def __init__(self, options: list[int]) -> None:
        self.options = options


class _Prune(Exception):
    """Raised when the emitted text can no longer become the target string."""


class _Replay:
    """Follows a forced list of decisions, then stops at the next open decision (depth-first search).

    With a ``target`` string it prunes every branch whose output leaves the target (parsing); without
    one it expands every branch (enumeration).
    """

    def __init__(self, forced: list[int], target: str | None) -> None:
        self.forced = forced
        self.i = 0
        self.target = target
        self.parts: list[str] = []
        self.length = 0
        self.logprob = 0.0

    def choice(self, dist: Categorical, words: tuple[str, ...] | None = None) -> int:
        if len(dist.support) == 1:
            return dist.support[0]
        if self.i < len(self.forced):
            k = self.forced[self.i]
            self.i += 1
            self.logprob += dist.logp[k]
            return k
        options = list(dist.support)
        if words is not None and self.target is not None:
            # Only a word that matches the target here, up to a word boundary, can lead anywhere.
            t, pos = self.target, self.length
            options = [
                k
                for k in options
                if t.startswith(words[k], pos) and not _is_word_char(t, pos + len(words[k]))
            ]
        raise _Branch(options)

    def word(self, vocab: Vocab) -> int:
        k = self.choice(vocab.dist, vocab.words)
        self.emit(vocab.words[k])
        return k

    def emit(self, text: str) -> None:
        if self.target is not None and not self.target.startswith(text, self.length):
            raise _Prune
        self.parts.append(text)
        self.length += len(text)

    def mark(self, label: str, value: object = None) -> None:
        pass


def _is_word_char(text: str, pos: int) -> bool:
    return pos < len(text) and "a" <= text[pos] <= "z"


# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgreementItem:
    """One subject-verb agreement probe: the text up to the main verb, and its two number forms.

    ``prefix + singular_form`` vs ``prefix + plural_form``: the forms share the stem (``plural_form``),
    so a character model decides the number at ``decision_prefix``: next char "s" = singular.
    """

    prefix: str
    singular_form: str
    plural_form: str
    is_singular: bool
    head_end: int  # character offset just after the subject's head word
    has_relative_clause: bool
    sentence: str

    @property
    def correct(self) -> str:
        """The verb form the grammar requires."""
        return self.singular_form if self.is_singular else self.plural_form

    @property
    def wrong(self) -> str:
        """The verb form with the other number."""
        return self.plural_form if self.is_singular else self.singular_form

    @property
    def decision_prefix(self) -> str:
        """Text up to and including the verb stem; the next character carries the number."""
        return self.prefix + self.plural_form

    @property
    def span(self) -> int:
        """Characters from the end of the subject's head word to the start of the verb."""
        return len(self.prefix) - self.head_end


class SyntheticLanguage:
    """The synthetic language: sample sentences with exact log-probabilities, parse, enumerate.

    ``SyntheticLanguage("full")`` is the default corpus; ``"copy"`` and ``"agreement"`` are the attention
    chapter's variants; ``"small"`` is a finite sub-grammar for exhaustive checks. ``seed`` is the default
    seed of :meth:`sample`.
    """

    def __init__(self, kind: str = "full", seed: int = 0, config: GrammarConfig | None = None) -> None:
        self.kind = kind
        self.config = config if config is not None else GrammarConfig.preset(kind)
        self.seed = seed
        c = self.config
        if not 1 <= c.remark_max_depth or not 1 <= c.remark_max_items:
            raise ConfigError(
                f"remark_max_depth and remark_max_items must be >= 1; got {c.remark_max_depth}, {c.remark_max_items}"
            )
        if not c.copy_length_weights:
            raise ConfigError("copy_length_weights must list at least one length")
        sizes = {
            "n_nouns": (c.n_nouns, NOUNS),
            "n_adjectives": (c.n_adjectives, ADJECTIVES),
            "n_intransitive": (c.n_intransitive, INTRANSITIVE_VERBS),
            "n_transitive": (c.n_transitive, TRANSITIVE_VERBS),
            "n_names": (c.n_names, NAMES),
            "n_places": (c.n_places, PLACES),
            "n_prepositions": (c.n_prepositions, PREPOSITIONS),
            "n_determiners": (c.n_determiners, DETERMINERS_PLURAL[: len(DETERMINERS_SINGULAR)]),
        }
        for key, (n, words) in sizes.items():
            if not 1 <= n <= len(words):
                raise ConfigError(f"{key} must be in 1..{len(words)}; got {n}")

        def vocab(words: Sequence[str]) -> Vocab:
            return Vocab(tuple(words), zipf(len(words), c.zipf_exponent))

        nouns = NOUNS[: c.n_nouns]
        self.nouns = (vocab(nouns), vocab([n + "s" for n in nouns]))
        vi = INTRANSITIVE_VERBS[: c.n_intransitive]
        vt = TRANSITIVE_VERBS[: c.n_transitive]
        self.intransitive = (vocab([v + "s" for v in vi]), vocab(vi))
        self.transitive = (vocab([v + "s" for v in vt]), vocab(vt))
        self.adjectives = vocab(ADJECTIVES[: c.n_adjectives])
        self.names = vocab(NAMES[: c.n_names])
        self.places = vocab(PLACES[: c.n_places])
        self.prepositions = vocab(PREPOSITIONS[: c.n_prepositions])
        self.determiners = (
            vocab(DETERMINERS_SINGULAR[: c.n_determiners]),
            vocab(DETERMINERS_PLURAL[: c.n_determiners]),
        )
        if not 1 <= c.n_pool <= 2 * min(len(ADJECTIVES), len(NOUNS)):
            raise ConfigError(f"n_pool must be in 1..{2 * min(len(ADJECTIVES), len(NOUNS))}; got {c.n_pool}")
        self.pool = vocab([w for pair in zip(ADJECTIVES, NOUNS) for w in pair][: c.n_pool])
        self._kind = Categorical.from_weights(c.kind_weights)
        self._plural = bernoulli(c.p_plural)
        self._name = bernoulli(c.p_name)
        self._adjective = bernoulli(c.p_adjective)
        self._relative = bernoulli(c.p_relative)
        self._object_relative = bernoulli(c.p_object_relative)
        self._transitive = bernoulli(c.p_transitive)
        self._pp = bernoulli(c.p_pp)
        self._remark = bernoulli(c.p_remark)
        self._nest = bernoulli(c.p_nest)
        self._more = bernoulli(c.p_more)
        self._bracket = Categorical.from_weights([1.0, 1.0])
        self._copy_length = Categorical.from_weights(c.copy_length_weights)

    def __repr__(self) -> str:
        return f"SyntheticLanguage(kind={self.kind!r}, seed={self.seed})"

    # -- the grammar ---------------------------------------------------------------------------------
    def _sentence(self, ch) -> None:
        if ch.choice(self._kind) == 0:
            self._declarative(ch)
        else:
            self._copy(ch)
        ch.emit(".")

    def _declarative(self, ch) -> None:
        num = ch.choice(self._plural)
        self._noun_phrase(ch, num, head_mark=True)
        if ch.choice(self._relative):
            ch.emit(" that ")
            if ch.choice(self._object_relative):
                # Object relative: a second noun phrase of its own number sits between subject and verb.
                inner = ch.choice(self._plural)
                self._noun_phrase(ch, inner)
                ch.emit(" ")
                ch.word(self.transitive[inner])
            else:
                self._verb_phrase(ch, num)
        ch.emit(" ")
        ch.mark("verb", num)
        self._verb_phrase(ch, num)
        if ch.choice(self._pp):
            ch.emit(" ")
            ch.word(self.prepositions)
            ch.emit(" ")
            ch.word(self.places)
        if ch.choice(self._remark):
            ch.emit(" ")
            self._bracket_group(ch, 1)

    def _noun_phrase(self, ch, num: int, head_mark: bool = False) -> None:
        if num == SINGULAR and ch.choice(self._name):
            ch.word(self.names)
        else:
            ch.word(self.determiners[num])
            ch.emit(" ")
            if ch.choice(self._adjective):
                ch.word(self.adjectives)
                ch.emit(" ")
            ch.word(self.nouns[num])
        if head_mark:
            ch.mark("head_end")

    def _verb_phrase(self, ch, num: int) -> None:
        if ch.choice(self._transitive):
            ch.word(self.transitive[num])
            ch.emit(" ")
            self._noun_phrase(ch, ch.choice(self._plural))
        else:
            ch.word(self.intransitive[num])

    def _bracket_group(self, ch, depth: int) -> None:
        kind = ch.choice(self._bracket)
        ch.emit("(["[kind])
        for i in range(self.config.remark_max_items):
            if i:
                ch.emit(" ")
            if depth < self.config.remark_max_depth and ch.choice(self._nest):
                self._bracket_group(ch, depth + 1)
            else:
                ch.word(self.pool)
            if i + 1 == self.config.remark_max_items or not ch.choice(self._more):
                break
        ch.emit(")]"[kind])

    def _copy(self, ch) -> None:
        ch.word(self.names)
        ch.emit(' says "')
        start = len(ch.parts)
        for i in range(ch.choice(self._copy_length) + 1):
            if i:
                ch.emit(" ")
            ch.word(self.pool)
        sequence = "".join(ch.parts[start:])
        ch.emit('" and ')
        ch.word(self.names)
        ch.emit(' repeats "')
        ch.mark("copy", sequence)
        ch.emit(sequence)  # the repeat is deterministic: probability 1 given the first half
        ch.emit('"')

    # -- public API ----------------------------------------------------------------------------------
    def sample_sentence(self, rng: random.Random) -> tuple[str, float]:
        """Draw one sentence (no trailing newline) and its exact natural-log probability."""
        ch = _Sampler(rng)
        self._sentence(ch)
        return ch.text(), ch.logprob

    def sample(self, n: int, seed: int | None = None) -> list[tuple[str, float]]:
        """Draw ``n`` sentences with their log-probabilities from a ``random.Random(seed)`` stream."""
        if n < 0:
            raise ConfigError(f"n must be >= 0; got {n}")
        rng = random.Random(self.seed if seed is None else seed)
        return [self.sample_sentence(rng) for _ in range(n)]

    def text(self, n_chars: int, seed: int | None = None) -> str:
        """Whole sentences, each followed by "\\n", up to about ``n_chars`` characters (at least one)."""
        if n_chars <= 0:
            raise ConfigError(f"n_chars must be > 0; got {n_chars}")
        rng = random.Random(self.seed if seed is None else seed)
        lines, total = [], 0
        while True:
            sentence, _ = self.sample_sentence(rng)
            if lines and total + len(sentence) + 1 > n_chars:
                break
            lines.append(sentence + "\n")
            total += len(sentence) + 1
        return "".join(lines)

    def _search(self, target: str | None, limit: int) -> Iterator[tuple[str, float]]:
        stack: list[list[int]] = [[]]
        visited = 0
        while stack:
            forced = stack.pop()
            visited += 1
            if visited > limit:
                raise ConfigError(
                    f"search visited more than limit={limit} partial derivations; the grammar is too large"
                )
            ch = _Replay(forced, target)
            try:
                self._sentence(ch)
            except _Branch as branch:
                stack.extend(forced + [k] for k in reversed(branch.options))
                continue
            except _Prune:
                continue
            text = "".join(ch.parts)
            if target is None or text == target:
                yield text, ch.logprob

    def derivations(self, text: str, limit: int = 100_000) -> list[float]:
        """Log-probabilities of every derivation of ``text`` (a single sentence, no newline)."""
        return [lp for _, lp in self._search(text, limit)]

    def logprob(self, text: str) -> float:
        """Exact natural-log probability of one sentence; -inf if it is not in the language.

        Raises ConfigError if the string has more than one derivation (the grammar would be ambiguous).
        """
        found = self.derivations(text.removesuffix("\n"))
        if not found:
            return -math.inf
        if len(found) > 1:
            raise ConfigError(f"ambiguous sentence {text!r}: {len(found)} derivations")
        return found[0]

    def enumerate(self, limit: int = 1_000_000) -> Iterator[tuple[str, float]]:
        """Every derivation of a finite grammar as (text, logprob); ConfigError once ``limit`` is passed."""
        return self._search(None, limit)

    def agreement_items(
        self, n: int, seed: int | None = None, relative_only: bool = False
    ) -> list[AgreementItem]:
        """``n`` agreement probes from declarative sentences of this language (``relative_only``: with a clause)."""
        if self.config.kind_weights[0] <= 0:
            raise ConfigError(f"the {self.kind!r} language has no declarative sentences to probe")
        rng = random.Random(self.seed if seed is None else seed)
        items: list[AgreementItem] = []
        while len(items) < n:
            ch = _Sampler(rng)
            self._sentence(ch)
            if "verb" not in ch.marks:
                continue
            text = ch.text()
            pos, num = ch.marks["verb"]
            head_end = ch.marks["head_end"][0]
            has_rc = text.startswith(" that ", head_end)
            if relative_only and not has_rc:
                continue
            verb = text[pos:].split(" ", 1)[0].rstrip(".")
            stem = verb[:-1] if num == SINGULAR else verb
            items.append(AgreementItem(text[:pos], stem + "s", stem, num == SINGULAR, head_end, has_rc, text))
        return items

    def with_config(self, **changes) -> SyntheticLanguage:
        """A copy of this language with some config fields changed (for experiments on difficulty)."""
        return SyntheticLanguage(self.kind, self.seed, replace(self.config, **changes))


def sentence_logprobs(lang: SyntheticLanguage, n: int, seed: int) -> Iterator[tuple[str, float]]:
    """Stream ``n`` sampled sentences with log-probabilities without holding them all in memory."""
    rng = random.Random(seed)
    for _ in range(n):
        yield lang.sample_sentence(rng)
