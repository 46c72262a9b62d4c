"""Argument checks shared by every env, agent, trainer and command.

One rule and one message per kind of argument, so a bad value is refused the same way wherever
it enters: ``ValueError("<name> must be <what is allowed>, got <repr> (<type>)")``. A value of
the wrong type is refused with the same ``ValueError`` (not a ``TypeError``), so a caller catches
one exception for every bad argument. Nothing is coerced: ``2.5``, ``"25"`` and ``True`` are not
integers, because truncating them would build something other than what the caller asked for
(and what an env's spec records).

>>> check_int("clusters", 25, low=1)
25
>>> check_int("clusters", 2.5, low=1)
Traceback (most recent call last):
...
ValueError: clusters must be a positive integer, got 2.5 (float)
>>> check_action(np.int64(3), n_items=50)
3
>>> check_action("3", n_items=50)
Traceback (most recent call last):
...
ValueError: action must be an integer item index in [0, 50), got '3' (str)
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def _got(value: Any) -> str:
    return f"got {value!r} ({type(value).__name__})"


def _as_int(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (a Python or numpy integer, or a 0-d
    integer array); None for anything else, bools included."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def _as_real(value: Any) -> float | None:
    """``value`` as a finite Python float when it is a real number (not a bool); else None."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _allowed(
    kind: str,
    low: float | None,
    high: float | None,
    low_open: bool = False,
    high_open: bool = False,
) -> str:
    """``"an integer in [1, 10]"``, ``"a number > 0"``, ...: what a check accepts, in words."""
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    return kind


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """``value`` as a Python int in ``[low, high]`` (either bound optional), else a ValueError.

    Accepts Python ints, numpy integer scalars and 0-d integer arrays; refuses bools, floats
    (even ``2.0``), strings and, unless ``allow_none``, None.
    """
    if value is None and allow_none:
        return None
    number = _as_int(value)
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        what = (
            "a positive integer" if (low, high) == (1, None) else _allowed("an integer", low, high)
        )
        raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, {_got(value)}")
    return number


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite Python float within the bounds (closed unless ``*_open``), else a
    ValueError. Accepts ints and floats of Python or numpy; refuses bools, strings, NaN and inf.

    >>> check_float("p_match", 0.7, low=0, high=1)
    0.7
    """
    if value is None and allow_none:
        return None
    number = _as_real(value)
    if (
        number is None
        or (low is not None and (number <= low if low_open else number < low))
        or (high is not None and (number >= high if high_open else number > high))
    ):
        if (low, high, low_open) == (0, None, True):
            what = "a positive number"
        else:
            what = _allowed("a number", low, high, low_open, high_open)
        raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, {_got(value)}")
    return number


def check_choice(name: str, value: Any, choices: Sequence[T]) -> T:
    """``value`` when it is one of ``choices`` (same type and equal), else a ValueError listing
    them.

    >>> check_choice("split", "test", ("test", "validation"))
    'test'
    """
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, {_got(value)}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` when it is ``True`` or ``False`` (numpy's ``np.bool_`` too), else a ValueError:
    ``1``, ``"yes"`` and ``None`` are not flags.

    >>> check_bool("cache", np.bool_(False))
    False
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, {_got(value)}")
    return bool(value)


def check_str(name: str, value: Any) -> str:
    """``value`` when it is a non-empty string (e.g. a column name), else a ValueError."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, {_got(value)}")
    return value


def check_path(name: str, value: Any, allow_none: bool = False) -> str | os.PathLike | None:
    """``value`` as given when it is a non-empty ``str`` or ``os.PathLike`` (or None when
    ``allow_none``), else a ValueError; whether the path exists is the caller's business."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        what = "a path (str or os.PathLike)" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {what}, {_got(value)}")
    return value


def check_action(action: Any, n_items: int, name: str = "action") -> int:
    """One recommendation: an integer item index in ``[0, n_items)``, returned as a Python int."""
    index = _as_int(action)
    if index is None or not 0 <= index < n_items:
        raise ValueError(f"{name} must be an integer item index in [0, {n_items}), {_got(action)}")
    return index


def check_actions(actions: Any, n_items: int, n: int, name: str = "actions") -> np.ndarray:
    """One recommendation per user: ``n`` integer item indices in ``[0, n_items)``, as an int64
    array of shape ``(n,)``."""
    array = np.asarray(actions)
    if array.shape != (n,) or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"{name} must be {n} integers, one item per user, got a {array.dtype} array "
            f"of shape {array.shape}"
        )
    outside = (array < 0) | (array >= n_items)
    if outside.any():
        first = int(np.argmax(outside))
        raise ValueError(
            f"{name} must be item indices in [0, {n_items}), got {array[first]} at position "
            f"{first} ({int(outside.sum())} of {n} outside)"
        )
    return array.astype(np.int64)


def check_slates(
    slates: Any, n_items: int, shape: tuple[int, ...], name: str = "slates", distinct: bool = False
) -> np.ndarray:
    """Slates of item indices: an integer array of ``shape`` (``(k,)`` for one slate, ``(n, k)``
    for one per user) with every entry in ``[0, n_items)``, returned as int64. ``distinct``
    also refuses a slate that repeats an item (logged slates must not; an env action may, see
    ``RecEnv``).

    >>> check_slates([3, 1, 4], n_items=50, shape=(3,)).tolist()
    [3, 1, 4]
    >>> check_slates([[3, 3]], n_items=50, shape=(1, 2), distinct=True)
    Traceback (most recent call last):
    ...
    ValueError: slates must hold distinct items, but row 0 repeats item 3
    """
    array = np.asarray(slates)
    if array.shape != tuple(shape) or (array.size and not np.issubdtype(array.dtype, np.integer)):
        what = "one slate of" if len(shape) == 1 else f"{shape[0]} slates (one per user) of"
        got = _got(slates) if array.ndim == 0 else f"a {array.dtype} array of shape {array.shape}"
        raise ValueError(
            f"{name} must be {what} {shape[-1]} integer item indices, shape {tuple(shape)}, {got}"
        )
    outside = (array < 0) | (array >= n_items)
    if outside.any():
        first = tuple(int(i) for i in np.argwhere(outside)[0])
        raise ValueError(
            f"{name} must be item indices in [0, {n_items}), got {array[first]} at position "
            f"{first if len(first) > 1 else first[0]} ({int(outside.sum())} outside)"
        )
    array = array.astype(np.int64)
    if distinct:
        rows = array.reshape(-1, array.shape[-1])
        ordered = np.sort(rows, axis=1)
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if repeats.any():
            row = int(np.argmax(repeats))
            item = int(ordered[row, 1:][ordered[row, 1:] == ordered[row, :-1]][0])
            raise ValueError(f"{name} must hold distinct items, but row {row} repeats item {item}")
    return array
