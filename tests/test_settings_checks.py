"""The config-field checks: each message names the field, the value, the range and the gin fix."""

from __future__ import annotations

import math

import pytest

from il_tf.settings_checks import check_bool, check_choice, check_int, check_number


@pytest.mark.parametrize(
    "value, kwargs, allowed",
    [
        (-1.0, dict(minimum=0), "a number >= 0"),
        (0.0, dict(minimum=0, above_minimum=True), "a number > 0"),
        (5.0, dict(maximum=1), "a number <= 1"),
        (1.0, dict(minimum=0, maximum=1, below_maximum=True), "a number in [0, 1)"),
        (math.nan, {}, "a finite number"),
        (math.inf, dict(minimum=0), "a number >= 0"),
        (True, dict(minimum=0), "a number >= 0"),
        ("0.1", dict(minimum=0), "a number >= 0"),
    ],
)
def test_check_number_names_field_value_range_and_gin(value, kwargs, allowed):
    with pytest.raises(ValueError) as err:
        check_number("SearchConfig", "proximity", value, **kwargs)
    assert str(err.value) == (
        f"SearchConfig.proximity must be {allowed}, got {value!r} "
        "(gin: SearchConfig.proximity = ...)"
    )


def test_check_number_accepts_the_bounds_it_allows():
    check_number("X", "f", 0.0, minimum=0)
    check_number("X", "f", 1, minimum=0, maximum=1)
    with pytest.raises(ValueError, match=r"must be a number in \(0, 1\]"):
        check_number("X", "f", 0, minimum=0, maximum=1, above_minimum=True)


def test_other_checks():
    with pytest.raises(ValueError, match=r"X.n must be an int >= 1, got 0 \(gin: X.n = ...\)"):
        check_int("X", "n", 0, minimum=1)
    with pytest.raises(ValueError, match=r"X.b must be True or False, got 'no'"):
        check_bool("X", "b", "no")
    check_bool("X", "b", None, optional=True)
    with pytest.raises(ValueError, match=r"X.b must be True, False or None \(auto\), got 1"):
        check_bool("X", "b", 1, optional=True, note=" (auto)")
    with pytest.raises(ValueError, match=r"X.c must be one of \['a', 'b'\], got 'z'"):
        check_choice("X", "c", "z", ("a", "b"))
