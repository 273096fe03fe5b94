"""Durations of job files (pipelines/durations.py)."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from pipelines.durations import parse_duration, rows_spanned


@pytest.mark.parametrize(
    ("text", "expected"),
    [("15min", timedelta(minutes=15)), ("90m", timedelta(minutes=90)), (" 1 h ", timedelta(hours=1)), ("1w", timedelta(weeks=1))],
)
def test_a_duration_is_an_integer_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1h30m", "is not a duration: write an integer and a unit"),
        ("P1D", "is not a duration"),
        ("0min", "must be a positive duration"),
        # YAML gives `frequency: 3600` (and an unquoted 1:00) as a number: which unit was meant is unknown.
        (3600, r"3600 is a number without a unit: write the unit, as in '3600s' \(seconds\) or '3600min' \(minutes\)"),
        # Beyond timedelta's range (an OverflowError, which pydantic would not report as a field
        # error), or beyond pandas' (which overflowed later, in resampling or scoring).
        ("99999999999d", "too long a duration; the longest is 106751 days"),
        ("9999999999999999999999s", "too long a duration"),
        ("106752d", "too long a duration"),
    ],
)
def test_a_bad_duration_is_a_value_error_saying_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_the_longest_duration_fits_pandas() -> None:
    assert pd.Timedelta(parse_duration("106751d")).days == 106751
    assert rows_spanned("1d", timedelta(minutes=5)) == 288
