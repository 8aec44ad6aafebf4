"""The commands' option types: a number above 0, within the bounds given, or a whole number
of at least a minimum, said plainly."""

from __future__ import annotations

import argparse

import pytest

from metro.service_cli import at_least, positive


@pytest.mark.parametrize("bounds, text, says", [
    ({}, "0", "must be positive: 0"),
    ({}, "x", "not a number: 'x'"),
    ({"least": 1, "most": 3600}, "0.1", "must be from 1 to 3600: 0.1"),
    ({"least": 1, "most": 3600}, "3601", "must be from 1 to 3600: 3601"),
    ({"least": 1}, "0.5", "must be at least 1: 0.5"),
    ({"most": 5}, "9", "must be at most 5: 9"),
])
def test_out_of_bounds_is_refused_in_words(bounds, text, says):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        positive(float, **bounds)(text)
    assert str(error.value) == says


def test_within_bounds_is_the_number():
    assert positive(float, least=1, most=3600)("15") == 15.0
    assert positive(int, most=5)("5") == 5


@pytest.mark.parametrize("minimum, text, says", [
    (0, "-1", "must not be negative: -1"),
    (1, "0", "must be 1 or more: 0"),
    (-1, "-2", "must be -1 or more: -2"),
    (1, "2.5", "not a number: '2.5'"),
    (0, "x", "not a number: 'x'"),
])
def test_a_whole_number_below_its_minimum_is_refused_in_words(minimum, text, says):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        at_least(minimum)(text)
    assert str(error.value) == says


def test_a_whole_number_at_its_minimum_is_the_number():
    assert at_least(0)("0") == 0 and at_least(-1)("-1") == -1 and at_least(1)("7") == 7
