"""Type checks shared by the validators: a bool is never a count or a number here, though Python's
``isinstance(True, int)`` says it is (``batch_size=True`` would otherwise train with batches of 1)."""

from __future__ import annotations


def is_int(value: object) -> bool:
    """A Python int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A Python int or float that is not a bool; NaN is one, so compare it with a range afterwards."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
