"""The commands' option types: a number above 0, within the bounds given, or a whole number
of at least a minimum, said plainly."""

from __future__ import annotations

import argparse

import pytest

from metro.service_cli import at_least, positive, tcp_port


@pytest.mark.parametrize("bounds, text, says", [
    ({}, "0", "must be positive: 0"),
    ({}, "x", "not a number: 'x'"),
    ({}, "nan", "not a finite number: 'nan'"),
    ({}, "inf", "not a finite number: 'inf'"),
    ({"most": 5}, "-inf", "not a finite number: '-inf'"),
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


@pytest.mark.parametrize("text, says", [
    ("-0.5", "must not be negative: -0.5"),
    ("inf", "not a finite number: 'inf'"),
    ("nan", "not a finite number: 'nan'"),
])
def test_a_number_of_another_kind_below_its_minimum_is_refused_in_words(text, says):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        at_least(0, float)(text)
    assert str(error.value) == says
    assert at_least(0, float)("0.25") == 0.25


@pytest.mark.parametrize("most, text, says", [
    (65535, "0", "not a TCP port: '0'"),
    (65535, "65536", "not a TCP port: '65536'"),
    (65535, "-1", "not a TCP port: '-1'"),
    (65535, "http", "not a TCP port: 'http'"),
    (65534, "65535", "not a TCP port up to 65534: '65535'"),
])
def test_a_port_out_of_range_is_refused(most, text, says):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        tcp_port(most)(text)
    assert str(error.value) == says
    assert tcp_port(most)("1") == 1 and tcp_port(most)(str(most)) == most
