"""Checks of config fields, with errors that name the field, the value and the gin fix.

Every frozen config dataclass (``SearchConfig``, ``OptimizerSettings``, ``TrainConfig``,
``Learner``, ``TuneConfig``) checks its fields with these in ``__post_init__``, so a bad
gin binding fails before anything is computed or written, with a message such as
``SearchConfig.rounds must be an int >= 1, got 0 (gin: SearchConfig.rounds = ...)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any


def invalid(
    owner: str, field: str, requirement: str, value: Any, subject: str | None = None
) -> ValueError:
    """The error of a bad field: what it must be, what it is, where to set it.

    ``subject`` names which one of several configs of a kind is meant (e.g. a learner).
    """
    of = f" for {subject}" if subject else ""
    return ValueError(
        f"{owner}.{field} must be {requirement}, got {value!r}{of} (gin: {owner}.{field} = ...)"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(
    owner: str,
    field: str,
    value: Any,
    minimum: int | None = None,
    optional: bool = False,
    note: str = "",
    subject: str | None = None,
) -> None:
    """An int (>= ``minimum`` when given); None too when ``optional``.

    ``note`` is appended to the requirement, e.g. ``" (0 = off)"``.
    """
    if optional and value is None:
        return
    if not _is_int(value) or (minimum is not None and value < minimum):
        what = "an int" + ("" if minimum is None else f" >= {minimum}")
        what += (" or None" if optional else "") + note
        raise invalid(owner, field, what, value, subject)


def check_number(
    owner: str,
    field: str,
    value: Any,
    minimum: float = -math.inf,
    maximum: float = math.inf,
    *,
    above_minimum: bool = False,
    below_maximum: bool = False,
    note: str = "",
    subject: str | None = None,
) -> None:
    """A finite real number in the interval (closed unless ``above_minimum``/``below_maximum``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > minimum if above_minimum else value >= minimum) and (
            value < maximum if below_maximum else value <= maximum
        )
    if not ok:
        raise invalid(
            owner,
            field,
            f"{_range(minimum, maximum, above_minimum, below_maximum)}{note}",
            value,
            subject,
        )


def _range(minimum: float, maximum: float, above_minimum: bool, below_maximum: bool) -> str:
    """'a number >= 0', 'a number in [0, 1)': how an allowed range reads in a message."""
    low, high = (">" if above_minimum else ">="), ("<" if below_maximum else "<=")
    if maximum == math.inf:
        return "a finite number" if minimum == -math.inf else f"a number {low} {minimum:g}"
    if minimum == -math.inf:
        return f"a number {high} {maximum:g}"
    left, right = ("(" if above_minimum else "["), (")" if below_maximum else "]")
    return f"a number in {left}{minimum:g}, {maximum:g}{right}"


def check_bool(owner: str, field: str, value: Any, optional: bool = False, note: str = "") -> None:
    """True or False (not a string such as 'no'); None too when ``optional``.

    ``note`` is appended to the requirement, e.g. ``" (None: chosen by the search)"``.
    """
    if optional and value is None:
        return
    if not isinstance(value, bool):
        raise invalid(
            owner, field, ("True, False or None" if optional else "True or False") + note, value
        )


def check_choice(owner: str, field: str, value: Any, allowed: Collection[Any]) -> None:
    """One of ``allowed``."""
    if value not in allowed:
        raise invalid(owner, field, f"one of {list(allowed)}", value)
