"""GenerationConfig: every decoding knob in one validated, frozen dataclass."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

from ..checks import is_int, plain_fields
from ..errors import GenerationError
from .processors import (
    EpsilonCutoff,
    EtaCutoff,
    LogitsProcessor,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    TypicalP,
    check_cutoff,
    check_min_p,
    check_no_repeat_ngram_size,
    check_repetition_penalty,
    check_temperature,
    check_top_k,
    check_top_p,
    check_typical_p,
)
from .values import bad_value, check_int

__all__ = ["GenerationConfig", "bad_value", "check_int", "resolve_keep"]


def resolve_keep(context_keep: int | None, block_size: int) -> int:
    """Tokens kept when a window outgrows ``block_size`` (default ``block_size // 2``), validated."""
    if context_keep is None:
        return max(1, block_size // 2)
    if not is_int(context_keep) or not 1 <= context_keep <= block_size:
        raise bad_value(
            "context_keep",
            context_keep,
            f"it must be an integer between 1 and the model's block_size={block_size}",
        )
    return context_keep


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _callers_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the reader's code, not at the library: the
    config may be built directly, by ``with_overrides`` (``dataclasses.replace``) or by ``generate``."""
    frame, level = sys._getframe(1), 1  # level 1: the function that calls warnings.warn
    while frame is not None:
        name = frame.f_code.co_filename
        inside = name.startswith(_PACKAGE_DIR) or name == dataclasses.__file__ or name == "<string>"
        if not inside:  # "<string>": the __init__ that @dataclass generates
            return level
        frame, level = frame.f_back, level + 1
    return 1


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick each next token. Greedy decoding is ``temperature=0`` or ``do_sample=False``.

    ``None`` (or the neutral value) switches a filter off: top_k=None, top_p=None or 1.0,
    min_p=None or 0.0, typical_p=None or 1.0, epsilon_cutoff / eta_cutoff=None or 0.0,
    repetition_penalty=1.0, no_repeat_ngram_size=0. Greedy decoding ignores the truncation filters
    (top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff: they shape a random draw, and greedy
    draws nothing), so setting one with it warns (UserWarning), as Hugging Face ignores them.
    numpy scalars are accepted, and stored as Python values.

    ``context_keep``: what happens when the text outgrows the model's context window (``block_size``
    tokens). The model conditions on a window of the most recent tokens; the window grows to block_size,
    and when one more token would not fit it is cut back to its last ``context_keep`` tokens (default
    ``block_size // 2``), which are re-encoded at positions 0..context_keep-1 (absolute position
    embeddings leave no cheaper exact way). ``context_keep=block_size`` is a true sliding window (the
    last block_size tokens at every step, as nanoGPT's crop does; it re-encodes at every step past the
    context); smaller values re-encode once every block_size - context_keep tokens, so the KV cache
    stays fast, at the price of a context that varies between context_keep and block_size tokens.
    With and without the cache the model sees exactly the same windows, so the tokens are the same.
    """

    max_new_tokens: int = 100
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    epsilon_cutoff: float | None = None
    eta_cutoff: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    do_sample: bool = True
    context_keep: int | None = None

    def __post_init__(self) -> None:
        plain_fields(self)  # numpy scalars (from a sweep or an array) become plain Python values
        check_int("max_new_tokens", self.max_new_tokens, 0)
        check_temperature(self.temperature)
        checks = (
            ("top_k", check_top_k),
            ("top_p", check_top_p),
            ("min_p", check_min_p),
            ("typical_p", check_typical_p),
            ("epsilon_cutoff", lambda value: check_cutoff("epsilon_cutoff", value)),
            ("eta_cutoff", lambda value: check_cutoff("eta_cutoff", value)),
        )
        for name, check in checks:  # None switches the filter off
            if getattr(self, name) is not None:
                check(getattr(self, name))
        check_repetition_penalty(self.repetition_penalty)
        check_no_repeat_ngram_size(self.no_repeat_ngram_size)
        if not isinstance(self.do_sample, bool):
            raise bad_value("do_sample", self.do_sample, "it must be True or False")
        if self.context_keep is not None:
            check_int("context_keep", self.context_keep, 1)
        ignored = self._ignored_filters()
        if ignored:
            # A warning, not an error (the sample CLI refuses the same flags): the notebook widget and
            # the decoding explorer build configs from independent controls (a temperature slider at 0
            # with top-k set, a grid of temperatures x top-k values), which must keep working.
            name, value = ignored[0]
            warnings.warn(
                f"{name}={value!r} has no effect with {self._greedy_reason()} (greedy decoding): the "
                "filters shape a random draw, and greedy takes the model's most likely token; drop it, "
                "or sample (temperature > 0 and do_sample=True)",
                UserWarning,
                stacklevel=_callers_stacklevel(),
            )

    def _ignored_filters(self) -> list[tuple[str, Any]]:
        """The (field, value) of each active truncation filter that greedy decoding would ignore."""
        if not self.greedy:
            return []
        active = [
            ("top_k", self.top_k, self.top_k is not None),
            ("top_p", self.top_p, self.top_p is not None and self.top_p < 1.0),
            ("min_p", self.min_p, self.min_p is not None and self.min_p > 0.0),
            ("typical_p", self.typical_p, self.typical_p is not None and self.typical_p < 1.0),
            ("epsilon_cutoff", self.epsilon_cutoff, bool(self.epsilon_cutoff)),
            ("eta_cutoff", self.eta_cutoff, bool(self.eta_cutoff)),
        ]
        return [(name, value) for name, value, on in active if on]

    def _greedy_reason(self) -> str:
        return "do_sample=False" if not self.do_sample else f"temperature={self.temperature!r}"

    @property
    def greedy(self) -> bool:
        """True when the most likely token is always taken (temperature 0 or do_sample=False)."""
        return not self.do_sample or self.temperature == 0

    def processors(self) -> list[LogitsProcessor]:
        """The active processors, in the one documented order (see ``arlm_lib.generation.processors``).

        Greedy decoding uses only the two penalties: it takes the argmax of the penalised scores, and
        temperature and the truncation filters only shape a random draw (as in Hugging Face).
        """
        procs: list[LogitsProcessor] = []
        if self.repetition_penalty != 1.0:
            procs.append(RepetitionPenalty(self.repetition_penalty))
        if self.no_repeat_ngram_size > 0:
            procs.append(NoRepeatNGram(self.no_repeat_ngram_size))
        if self.greedy:
            return procs
        if self.temperature != 1.0:
            procs.append(Temperature(self.temperature))
        if self.top_k is not None:
            procs.append(TopK(self.top_k))
        if self.top_p is not None and self.top_p < 1.0:
            procs.append(TopP(self.top_p))
        if self.min_p is not None and self.min_p > 0.0:
            procs.append(MinP(self.min_p))
        if self.typical_p is not None and self.typical_p < 1.0:
            procs.append(TypicalP(self.typical_p))
        if self.epsilon_cutoff:
            procs.append(EpsilonCutoff(self.epsilon_cutoff))
        if self.eta_cutoff:
            procs.append(EtaCutoff(self.eta_cutoff))
        return procs

    def keep_for(self, block_size: int) -> int:
        """The number of tokens kept when the context is full, checked against ``block_size``."""
        return resolve_keep(self.context_keep, block_size)

    def with_overrides(self, **overrides: Any) -> GenerationConfig:
        """A copy with some fields changed (validated again); unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise GenerationError(f"unknown generation option(s) {unknown}: allowed are {sorted(known)}")
        return replace(self, **overrides) if overrides else self
