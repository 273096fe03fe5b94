"""parse_timestamps reads a large column of one non-ISO format with that format, and the result
is the value-by-value parser's, whatever the values."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.sources.base import LONGEST_TIMESTAMP, _mixed_timestamps, _one_format_timestamps, parse_timestamps

ROWS = 1200  # above the size where one format is tried
NAIVE = pd.date_range("2024-01-01 00:00:00.25", periods=ROWS, freq="37min")  # every day of the month, day <= 12 too
AWARE = pd.date_range("2024-03-20", periods=ROWS, freq="53min", tz="Europe/Paris")  # across summer time


def written(times: pd.DatetimeIndex, form: str) -> list[str]:
    return list(times.strftime(form))


def as_parsed(values: list[str | None]) -> pd.Series:
    """``values`` as parse_timestamps hands them to its parsers: text, too long for a time made NA."""
    text = pd.Series(values, dtype="string")
    return text.where(~(text.str.len() > LONGEST_TIMESTAMP).fillna(False))


ONE_FORMAT = {
    "us-minutes": written(NAIVE, "%m/%d/%Y %H:%M"),
    "us-unpadded": [f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d}" for t in NAIVE],
    "us-fraction": written(NAIVE, "%m/%d/%Y %H:%M:%S.%f"),
    "dotted-month-first": written(NAIVE, "%m.%d.%Y %H:%M"),
    "year-slashes": written(NAIVE, "%Y/%m/%d %H:%M:%S"),
    "day-month-name": written(NAIVE, "%d %b %Y %H:%M:%S"),
    "rfc-2822": written(AWARE, "%a, %d %b %Y %H:%M:%S %z"),
    "too-long": [*written(NAIVE, "%m/%d/%Y %H:%M")[:-1], "01/02/2024 03:04" + " " * 60],  # NA before any parser
    "with-missing": [None if i % 7 == 0 else v for i, v in enumerate(written(NAIVE, "%m/%d/%Y %H:%M"))],
}
VALUE_BY_VALUE = {
    "day-first": written(NAIVE, "%d/%m/%Y %H:%M"),  # read month first where the day allows: no format
    # The first value (13/01) tells the day first, yet value by value 02/01/2024 is read as January the 2nd.
    "day-first-from-the-13th": written(NAIVE + pd.Timedelta(days=12), "%d/%m/%Y %H:%M"),
    "two-digit-year": written(NAIVE, "%m/%d/%y %H:%M"),
    "one-bad-value": [*written(NAIVE, "%m/%d/%Y %H:%M")[:-1], "not a time"],
    "two-formats": [*written(NAIVE, "%m/%d/%Y %H:%M")[:600], *written(NAIVE, "%d %b %Y %H:%M")[600:]],
    "twelve-hour": written(NAIVE, "%m/%d/%Y %I:%M %p"),  # pandas guesses no format
    "zone-name": [f"{v} UTC" for v in written(NAIVE, "%Y/%m/%d %H:%M:%S")],
}


@pytest.mark.parametrize("values", ONE_FORMAT.values(), ids=ONE_FORMAT.keys())
def test_a_column_of_one_format_is_read_with_it_as_value_by_value(values: list[str | None]) -> None:
    text = as_parsed(values)

    fast = _one_format_timestamps(text)

    assert fast is not None
    assert fast.dtype == _mixed_timestamps(text).dtype
    pd.testing.assert_series_equal(fast, _mixed_timestamps(text))
    pd.testing.assert_series_equal(parse_timestamps(pd.Series(values, dtype=object)), fast)


@pytest.mark.parametrize("values", VALUE_BY_VALUE.values(), ids=VALUE_BY_VALUE.keys())
def test_a_column_no_one_format_reads_alike_is_read_value_by_value(values: list[str]) -> None:
    text = as_parsed(values)

    assert _one_format_timestamps(text) is None
    pd.testing.assert_series_equal(parse_timestamps(pd.Series(values, dtype=object)), _mixed_timestamps(text))


def test_naive_among_aware_values_of_one_format_still_raise() -> None:
    values = written(AWARE, "%a, %d %b %Y %H:%M:%S %z")
    values[700] = values[700].rsplit(" ", 1)[0]

    with pytest.raises(ValueError, match=r"1 of 1200 timestamps have no time zone"):
        parse_timestamps(pd.Series(values))


@pytest.mark.parametrize(
    "values",
    [["now", "2024-01-01T00:00:00Z"], ["today", "2024-01-01 00:00:00"], ["10:30", "01/01/2024 00:00"], ["23:59:59", "1 Jan 2024"]],
    ids=["now-among-iso", "today-among-naive-iso", "time-only", "time-only-seconds"],
)
def test_text_dated_by_the_clock_is_unparseable(values: list[str]) -> None:
    assert parse_timestamps(pd.Series(values)).tolist() == [pd.NaT, pd.Timestamp("2024-01-01", tz="UTC")]


def test_dates_of_this_year_written_in_full_are_read() -> None:
    year = pd.Timestamp.now(tz="UTC").year
    values = [f"Jan 5 {year} 10:30", f"01/05/{str(year)[2:]} 10:30", f"{year}-01-05 10:30"]

    assert parse_timestamps(pd.Series(values)).tolist() == [pd.Timestamp(f"{year}-01-05 10:30", tz="UTC")] * 3

