"""Numeric dates whose day and month cannot be told apart (03/04/2024: every first two numbers at
most 12) are read month first, with one warning saying how to read them day first."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import FileSource, get_job
from pipelines.extraction import extract
from pipelines.sources.base import parse_timestamps
from pipelines.workspace import Window, to_utc

REPO = Path(__file__).resolve().parents[2]
ADVICE = "read month first; set timestamp_format (e.g. '%d/%m/%Y %H:%M') if it is day first"


def written(form: str, start: str = "2024-03-01", periods: int = 240, freq: str = "1h") -> pd.Series:
    return pd.Series(pd.date_range(start, periods=periods, freq=freq).strftime(form), name="when")


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipelines.sources.base" and r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("values", "example", "advice"),
    [
        # Hours of 1-10 March written day first: month first reads 3 January, 3 February, ...
        (written("%d/%m/%Y %H:%M"), "'01/03/2024 00:00'", ADVICE),
        # 1,000 values and more take the one-format path: the same warning, still one.
        (written("%d/%m/%Y %H:%M:%S", periods=5000, freq="3min"), "'01/03/2024 00:00:00'", ADVICE),
        (written("%d.%m.%y %H:%M"), "'01.03.24 00:00'", "read month first; set timestamp_format (e.g. '%d.%m.%Y %H:%M')"),
        (written("%d-%m-%Y"), "'01-03-2024'", "read month first; set timestamp_format (e.g. '%d-%m-%Y %H:%M')"),
        # Monthly, day first or month first: the text cannot say.
        (written("%m/%d/%Y", start="2024-01-05", periods=6, freq="MS"), "'02/01/2024'", ADVICE),
    ],
    ids=["hourly", "one-format", "dots", "dashes", "monthly"],
)
def test_dates_that_could_be_day_first_warn_once_naming_the_column_and_a_value(caplog, values, example, advice):
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        parsed = parse_timestamps(values, refuse_day_first=True)
    assert parsed.notna().all()
    [message] = warnings_of(caplog)
    assert message.startswith(f"timestamp column 'when': numeric dates such as {example} are ")
    assert advice in message


@pytest.mark.parametrize(
    "values",
    [
        written("%m/%d/%Y %H:%M"),  # the first number the same: days of one month, month first (as read)
        written("%m/%d/%Y %H:%M", start="2024-03-08"),  # 03/13/2024 tells the order: month first
        written("%m/%d/%Y %H:%M", start="2024-03-08", periods=5000, freq="3min"),  # the same, on the one-format path
        written("%d/%m/%Y %H:%M", start="2024-03-01", periods=24),  # one date: no two values to tell apart
        written("%Y-%m-%dT%H:%M:%SZ"),  # ISO 8601: year, month, day
        written("%Y/%m/%d %H:%M"),
        written("%d %b %Y %H:%M"),  # a month by name
        pd.Series(["2024-01-03 10:00", "02/03/2024 10:00"], name="when"),  # written two ways: no guess at which
    ],
    ids=["one-month", "day-past-12", "day-past-12-one-format", "one-date", "iso", "year-first", "month-name", "two-ways"],
)
def test_dates_whose_order_shows_or_that_are_not_numeric_do_not_warn(caplog, values):
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        assert parse_timestamps(values, refuse_day_first=True).notna().all()
    assert warnings_of(caplog) == []


def test_missing_and_unparseable_values_do_not_hide_the_warning(caplog):
    values = pd.Series(["01/03/2024 10:00", None, "bad", "02/03/2024 10:00"], name="when")
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        parse_timestamps(values, refuse_day_first=True)
    [message] = warnings_of(caplog)
    assert "'01/03/2024 10:00' are read month first" in message


def test_a_timestamp_format_or_a_second_reading_does_not_warn(caplog):
    values = written("%d/%m/%Y %H:%M")
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        parsed = parse_timestamps(values, "%d/%m/%Y %H:%M", refuse_day_first=True)
        # Validation reads the column again, without refuse_day_first: the source's warning is enough.
        parse_timestamps(values)
    assert warnings_of(caplog) == []
    assert parsed.iloc[-1] == pd.Timestamp("2024-03-10T23:00:00Z")


def test_a_file_source_warns_when_its_dates_could_be_day_first(project, caplog):
    frame = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    stamps = pd.to_datetime(frame["timestamp"])
    frame = frame[(stamps >= "2024-03-01") & (stamps < "2024-03-08")].copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.strftime("%d/%m/%Y %H:%M")
    path = project / "metrics.csv"
    frame.to_csv(path, index=False)
    job = get_job("demo_web_metrics").model_copy(update={"source": FileSource(kind="file", path=str(path), format="csv")})
    # 02/01/2024 is 2 January month first: nothing in this window, which the warning explains.
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        extract(job, Window(to_utc("2024-02-03T00:00:00Z"), to_utc("2024-02-04T00:00:00Z")), run_id="ambiguous")
    messages = warnings_of(caplog)
    assert messages and all("timestamp column 'timestamp': numeric dates such as '" in m for m in messages)
    assert ADVICE in messages[0]
