"""Type checks shared by the validators: a bool is never a count or a number here, though Python's
``isinstance(True, int)`` says it is (``batch_size=True`` would otherwise train with batches of 1).

numpy scalars are numbers too (``np.int64(3)`` from an array, a grid or a sweep): the checks accept
them, and :func:`plain_fields` turns them into Python values before a config is stored as JSON.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
import torch

from .errors import ConfigError


def is_int(value: object) -> bool:
    """A Python or numpy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_count(name: str, value: object, minimum: int = 1, why: str = "") -> int:
    """``value`` as a plain int, or a ConfigError naming it unless it is an integer >= ``minimum``
    (how many bars, steps, tokens, columns...); ``why`` says what the count is, after the rule."""
    if not is_int(value) or value < minimum:  # type: ignore[operator]
        raise ConfigError(f"{name}={value!r} is not allowed: it must be an integer >= {minimum}{why}")
    return int(value)  # type: ignore[arg-type]


def is_real(value: object) -> bool:
    """A Python or numpy int or float that is not a bool; NaN is one, so compare it with a range
    afterwards. Not any ``numbers.Real``: a ``Fraction`` or ``Decimal`` would pass every range check
    and then fail where a config is written as JSON, after the training it was saved for."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


#: The seeds torch.manual_seed and torch.Generator.manual_seed accept: signed or unsigned 64-bit.
SEED_RANGE = (-(2**63), 2**64)


def is_seed(value: object) -> bool:
    """An integer (not a bool) that torch accepts as a seed."""
    return is_int(value) and SEED_RANGE[0] <= value < SEED_RANGE[1]  # type: ignore[operator]


def is_token_id(value: object, vocab_size: int) -> bool:
    """An integer (not a bool) in ``0..vocab_size-1``: a token id a model of that vocabulary can embed."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and 0 <= value < vocab_size


def is_integer_dtype(dtype: torch.dtype | np.dtype) -> bool:
    """True for the dtype of token ids, torch's or numpy's: an integer, not bool, float or complex."""
    if isinstance(dtype, torch.dtype):
        return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool
    return np.dtype(dtype).kind in "iu"


def plain_fields(instance: object) -> None:
    """Replace every numpy scalar field of the dataclass ``instance`` by its Python value (``.item()``).

    Call it first in ``__post_init__``: the validators then see plain values, and ``to_dict`` gives
    JSON-able ones (``json.dumps`` refuses ``np.int64``, and a checkpoint stores its configs as JSON).
    Works on frozen dataclasses too.
    """
    for field in dataclasses.fields(instance):  # type: ignore[arg-type]
        value = getattr(instance, field.name)
        if isinstance(value, np.generic):
            # object.__setattr__: a frozen dataclass refuses the ordinary assignment.
            object.__setattr__(instance, field.name, value.item())
