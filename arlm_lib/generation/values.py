"""The checks every decoding parameter goes through, and the error they raise.

A module of its own so that the processors (which validate their own parameters) and
:class:`~.config.GenerationConfig` (which builds them) share one rule and one message per parameter.
"""

from __future__ import annotations

import math
from typing import Any

from ..checks import is_int, is_real
from ..errors import GenerationError

__all__ = ["bad_value", "check_int", "check_callback", "is_finite_number"]


def bad_value(field: str, value: Any, allowed: str) -> GenerationError:
    """A GenerationError naming the field, the bad value and what is allowed (``.field`` is set too)."""
    err = GenerationError(f"{field}={value!r} is not allowed: {allowed}")
    # Kept on the error so that a CLI can say the same thing in terms of its flag name.
    err.field, err.value, err.allowed = field, value, allowed
    return err


def is_finite_number(value: Any) -> bool:
    """A finite int or float (numpy's too), not a bool."""
    return is_real(value) and math.isfinite(value)


def check_int(field: str, value: Any, minimum: int) -> None:
    """Raise unless ``value`` is an int >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise bad_value(field, value, f"it must be an integer >= {minimum}")


def check_callback(callback: Any, name: str = "on_tokens", argument: str = "a list of ids") -> None:
    """Raise unless ``callback`` (a search's progress callback, ``on_tokens`` or ``on_step``) is None or
    callable: an error at the call, not at the first token."""
    if callback is not None and not callable(callback):
        raise GenerationError(f"{name} must be a function of {argument}, got {type(callback).__name__}")
