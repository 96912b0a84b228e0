"""Type checks shared by the validators: a bool is never a count or a number here, though Python's
``isinstance(True, int)`` says it is (``batch_size=True`` would otherwise train with batches of 1).

numpy scalars are numbers too (``np.int64(3)`` from an array, a grid or a sweep): the checks accept
them, and :func:`plain_fields` turns them into Python values before a config is stored as JSON.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np


def is_int(value: object) -> bool:
    """An integer (Python int or numpy integer, any ``numbers.Integral``) that is not a bool."""
    # np.bool_ is not registered as Integral, but say so explicitly: it is a bool, never a count.
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: object) -> bool:
    """A real number (int, float, numpy int or float) that is not a bool; NaN is one, so compare it
    with a range afterwards."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


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
