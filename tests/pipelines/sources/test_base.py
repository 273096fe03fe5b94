from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from pipelines.config import get_job
from pipelines.sources.base import (
    EARLIEST,
    LATEST,
    bounds,
    describe_window,
    parse_timestamps,
    source_error,
    utc_bound,
    window_mask,
)


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["2024-01-01 01:00:00", "2024-01-01T02:00"], [at("2024-01-01 01:00"), at("2024-01-01 02:00")]),
        (["2024-01-01T01:00+01:00", "2024-07-01T02:00+02:00"], [at("2024-01-01 00:00"), at("2024-07-01 00:00")]),
        (["2024-01-01T01:00:00Z", "not a time", None], [at("2024-01-01 01:00"), pd.NaT, pd.NaT]),
        (pd.Series([1704067200, 5]), [pd.NaT, pd.NaT]),
        (pd.Series(pd.to_datetime(["2024-01-01 01:00"])), [at("2024-01-01 01:00")]),
        (pd.Series(pd.to_datetime(["2024-01-01 01:00"]).tz_localize("Asia/Tokyo")), [at("2023-12-31 16:00")]),
    ],
    ids=["naive-text", "offsets", "unparseable", "numbers", "naive-datetime", "aware-datetime"],
)
def test_parse_timestamps_gives_utc(values, expected) -> None:
    parsed = parse_timestamps(pd.Series(values))

    assert str(parsed.dt.tz) == "UTC"
    assert [None if pd.isna(v) else v for v in parsed] == [None if pd.isna(v) else v for v in expected]


def test_parse_timestamps_refuses_naive_among_aware() -> None:
    values = pd.Series(["2024-01-01T01:00+01:00", "2024-01-01 02:00", "2024-07-01T01:00+02:00", "junk"])

    with pytest.raises(ValueError, match=r"1 of 3 timestamps have no time zone .*first naive: '2024-01-01 02:00'"):
        parse_timestamps(values)


def test_window_mask_is_start_inclusive_end_exclusive_and_keeps_missing() -> None:
    start, end = at("2024-01-01 01:00"), at("2024-01-01 03:00")
    tick = pd.Timedelta(microseconds=1)
    times = pd.Series([start - tick, start, end - tick, end, pd.NaT])

    assert window_mask(times, start, end).tolist() == [False, True, True, False, True]
    assert window_mask(times, None, None).all()


def test_bounds_are_utc_and_unbounded_sides_are_extremes() -> None:
    tokyo = datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))

    assert utc_bound(tokyo) == at("2024-01-01 00:00") and str(utc_bound(tokyo).tz) == "UTC"
    assert bounds(None, None) == (EARLIEST, LATEST)
    assert describe_window(utc_bound(tokyo), None) == "[2024-01-01T00:00:00+00:00, unbounded)"
    with pytest.raises(ValueError, match="window bounds must be timezone-aware"):
        utc_bound(datetime(2024, 1, 1))


def test_a_source_error_names_the_window_only_when_there_is_one() -> None:
    job = get_job("demo_web_metrics")
    start = datetime(2024, 3, 3, tzinfo=timezone.utc)

    windowed = source_error(job, "file source 'm.csv'", start, None, "no such file", "Check `path`.")
    whole = source_error(job, "file source 'm.csv'", None, None, "no such file", "Check `path`.")

    assert str(windowed) == (
        "job 'demo_web_metrics': cannot read file source 'm.csv' for window [2024-03-03T00:00:00+00:00, unbounded): "
        "no such file. Check `path`."
    )
    assert str(whole) == "job 'demo_web_metrics': cannot read file source 'm.csv': no such file. Check `path`."


def test_text_longer_than_any_time_is_unparseable_without_being_read() -> None:
    # dateutil's time grows with the square of the length: a 1 MB cell of a csv held the read for
    # 75 s, 16 MiB for hours. Text that long is no time, so it is not handed to the parser at all,
    # even where the parser would make a time of it (a fraction of 50 zeros, trailing blanks).
    from pipelines.sources.base import LONGEST_TIMESTAMP, parse_timestamps

    zeros = "2024-03-03T14:00:00." + "0" * 50 + "Z"
    assert len(zeros) > LONGEST_TIMESTAMP
    values = pd.Series(["2024-03-03T14:00:00.123456789+05:30", zeros, "2024-03-03T14:00:00" + " " * 50, None])
    parsed = parse_timestamps(values)
    assert parsed.iloc[0] == pd.Timestamp("2024-03-03T08:30:00.123456789Z")
    assert parsed.iloc[1:].isna().all()


_WRITTEN = [
    ["2024-03-01 00:00:00", "2024-03-01 01:00:00"],
    ["2024-03-01T00:00:00Z", "2024-03-01T01:00:00+00:00"],
    ["2024-03-01T00:00:00+01:00", "2024-07-01T00:00:00+02:00"],  # summer time: several offsets
    ["2024-03-01T00:00:00+0100", None, "2024-07-01T00:00:00 +02"],
    ["2024-03-01", "20240302", "2024-03-01T00:00", "2024-3-1 0:00", " 2024-03-01 00:00:00 "],
    ["2024-03-01T00:00:00.123456789", "2024-03-01T00:00:00.5"],
    ["03/01/2024 10:00", "2024-03-01 10:00"],  # not ISO 8601: value by value
    ["2024-03-01 00:00:00", "garbage", None, "", "NaT", "2024-02-30 00:00:00"],
    ["0001-01-01", "9999-12-31 00:00:00", "1700-01-01T00:00:00"],
    ["1700-01-01T00:00:00Z", "2300-01-01T00:00:00-05:00"],
]


@pytest.mark.parametrize("written", _WRITTEN)
def test_iso_timestamps_parse_as_value_by_value_does(written: list[str | None], monkeypatch: pytest.MonkeyPatch) -> None:
    # ISO 8601 is parsed in one pass (5 to 6 times faster): it must give what the value-by-value
    # parser gives, which it falls back to for anything else.
    values = pd.Series(written, dtype=object)
    fast = parse_timestamps(values)
    monkeypatch.setattr("pipelines.sources.base._iso_timestamps", lambda text: None)
    pd.testing.assert_series_equal(fast, parse_timestamps(values))


@pytest.mark.parametrize("written", [["2024-03-01T00:00:00Z", "2024-03-01 00:00:00"], ["2024-03-01T00:00:00+01:00", "2024-03-01"]])
def test_iso_timestamps_with_and_without_a_zone_are_refused(written: list[str]) -> None:
    with pytest.raises(ValueError, match="1 of 2 timestamps have no time zone while the others have one"):
        parse_timestamps(pd.Series(written, dtype=object))
