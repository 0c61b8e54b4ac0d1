"""Checks of config fields, with errors that name the field, the value and the gin fix.

Every frozen config dataclass checks its fields with these in ``__post_init__``, so a
bad gin binding fails before anything is computed or written, with a message such as
``SearchConfig.rounds must be an integer >= 1, got 0 (gin: SearchConfig.rounds = ...)``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def invalid(owner: str, field: str, requirement: str, value: Any) -> ValueError:
    """The error of a bad field: what it must be, what it is, where to set it."""
    return ValueError(
        f"{owner}.{field} must be {requirement}, got {value!r} (gin: {owner}.{field} = ...)"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(
    owner: str, field: str, value: Any, minimum: int | None = None, optional: bool = False
) -> None:
    """An integer (>= ``minimum`` when given); None too when ``optional``."""
    if optional and value is None:
        return
    if not _is_int(value) or (minimum is not None and value < minimum):
        what = "an integer" + ("" if minimum is None else f" >= {minimum}")
        raise invalid(owner, field, what + (" or None" if optional else ""), value)


def check_number(
    owner: str,
    field: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above_minimum: bool = False,
    below_maximum: bool = False,
) -> None:
    """A real number within the bounds (inclusive unless ``above_minimum``/``below_maximum``)."""
    ok = _is_number(value)
    if ok and minimum is not None:
        ok = value > minimum if above_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if below_maximum else value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if above_minimum else '>='} {minimum}")
        if maximum is not None:
            bounds.append(f"{'<' if below_maximum else '<='} {maximum}")
        raise invalid(owner, field, " ".join(["a number", " and ".join(bounds)]).strip(), value)


def check_bool(owner: str, field: str, value: Any) -> None:
    """True or False (not a string such as 'no')."""
    if not isinstance(value, bool):
        raise invalid(owner, field, "True or False", value)


def check_choice(owner: str, field: str, value: Any, allowed: Collection[Any]) -> None:
    """One of ``allowed``."""
    if value not in allowed:
        raise invalid(owner, field, f"one of {list(allowed)}", value)
