"""Sample-quality metrics for the generation chapter: diversity (distinct-n) and degenerate repetition.

Each metric takes generations as token-id lists or as strings. A string is split on whitespace into
words (the unit these metrics are usually reported in); pass token ids to measure in tokens.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ..errors import GenerationError
from .config import check_int

__all__ = ["distinct_n", "has_repetition", "repetition_rate"]


def _as_unit(unit: Any) -> Any:
    """A 0-d tensor (what iterating over a 1-D tensor gives) is one token id: compare and hash it by
    value (tensors hash by identity, so n-grams of them would all look distinct)."""
    return unit.item() if isinstance(unit, torch.Tensor) and unit.dim() == 0 else unit


def _check_iterable(generations: Any) -> None:
    if not isinstance(generations, Iterable):  # a lone id or a number: not a generation
        raise GenerationError(
            f"generations must be a str, a tensor or a sequence of token ids (or a list of these), "
            f"got {type(generations).__name__} ({generations!r:.60})"
        )


def _units(generation: Any) -> list:
    _check_iterable(generation)
    if isinstance(generation, str):
        return generation.split()
    if isinstance(generation, torch.Tensor):
        return generation.reshape(-1).tolist()
    return [_as_unit(u) for u in generation]


def _as_generations(generations: Any) -> list[list]:
    """One generation (a str, or a flat sequence of ids) or many, as lists of units."""
    _check_iterable(generations)
    if isinstance(generations, str):
        return [_units(generations)]
    if isinstance(generations, torch.Tensor):
        return [generations.tolist()] if generations.dim() == 1 else generations.tolist()
    items = list(generations)
    # A flat sequence of ids is ONE generation, whether the ids are ints or 0-d tensors (list(tensor)),
    # as for generate()'s prompts; otherwise each id would count as a one-token generation.
    if items and isinstance(_as_unit(items[0]), numbers.Integral):
        return [[int(_as_unit(t)) for t in items]]
    return [_units(g) for g in items]


def distinct_n(generations: Sequence[str] | Sequence[Sequence[int]] | Sequence[int], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams / all n-grams, pooled over every generation.

    1.0 means no n-gram occurs twice; values near 0 mean the samples keep saying the same thing.
    n-grams never span two generations. Returns 0.0 when there is no n-gram at all.
    """
    check_int("n", n, 1)
    seen, total = set(), 0
    for units in _as_generations(generations):
        grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def has_repetition(
    tokens: Sequence[Any] | str, min_phrase_len: int = 2, min_repeats: int = 3, at_end: bool = True
) -> bool:
    """True if some phrase of >= ``min_phrase_len`` units occurs >= ``min_repeats`` times in a row.

    ``at_end=True`` (Holtzman et al. 2020): the repeats must run to the very end of the generation,
    i.e. the model is stuck in a loop ("a b a b a b" at the end). ``at_end=False``: anywhere.
    A run of one repeated unit counts too once it is long enough ("x x x x x x" is "x x" three times).
    """
    check_int("min_phrase_len", min_phrase_len, 1)
    check_int("min_repeats", min_repeats, 2)
    units = _units(tokens)
    n = len(units)
    for length in range(min_phrase_len, n // min_repeats + 1):
        # units[i] == units[i + length] for a run of (min_repeats - 1) * length consecutive i means
        # the phrase of `length` units starting at the run's start repeats min_repeats times.
        needed = (min_repeats - 1) * length
        if at_end:
            if all(units[i] == units[i + length] for i in range(n - length - needed, n - length)):
                return True
            continue
        run = 0
        for i in range(n - length):
            run = run + 1 if units[i] == units[i + length] else 0
            if run >= needed:
                return True
    return False


def repetition_rate(
    generations: Sequence[str] | Sequence[Sequence[int]] | Sequence[int],
    min_phrase_len: int = 2,
    min_repeats: int = 3,
    at_end: bool = True,
) -> float:
    """Fraction of generations that repeat a phrase (Holtzman et al. 2020's "repetition %", as a fraction).

    A generation counts when :func:`has_repetition` is true for it: by default, it ENDS with a phrase
    of at least 2 units repeated at least 3 times in a row, the degenerate loop the paper measures.
    ``at_end=False`` counts such a repeat anywhere in the generation. Returns 0.0 for no generations.
    """
    check_int("min_phrase_len", min_phrase_len, 1)  # checked here too: no generation would check them
    check_int("min_repeats", min_repeats, 2)
    gens = _as_generations(generations)
    if not gens:
        return 0.0
    return sum(has_repetition(g, min_phrase_len, min_repeats, at_end) for g in gens) / len(gens)
