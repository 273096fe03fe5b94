"""Dates written day first (13/01/2024 10:00): read as the job's ``timestamp_format`` says, and
without one refused naming the column and the row, never read month first where they can be."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import FileSource, JobConfig, SqlSource, get_job
from pipelines.errors import SourceDataError
from pipelines.extraction import extract, extract_chunks, prepare, read_parquet, validate
from pipelines.sources.base import DayFirstDates, parse_timestamps
from pipelines.workspace import Window, to_utc

REPO = Path(__file__).resolve().parents[2]
DAY = Window(to_utc("2024-03-03T00:00:00Z"), to_utc("2024-03-04T00:00:00Z"))
DAY_FIRST = "%d/%m/%Y %H:%M"


def day_first_frame() -> pd.DataFrame:
    """The demo's web metrics (2024-02-01 to 2024-03-07), their timestamps written 13/02/2024 10:00."""
    frame = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.strftime(DAY_FIRST)
    return frame


def csv_job(project: Path, frame: pd.DataFrame, form: str | None) -> JobConfig:
    path = project / "metrics.csv"
    frame.to_csv(path, index=False)
    source = FileSource(kind="file", path=str(path), format="csv")
    return get_job("demo_web_metrics").model_copy(update={"source": source, "timestamp_format": form})


def sql_job(project: Path, frame: pd.DataFrame, form: str | None) -> JobConfig:
    db = project / "var" / "day_first.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as connection:
        frame.to_sql("metrics", connection, index=False)
    # Text written day first does not sort as time: the query reads every row, extraction keeps the window's.
    source = SqlSource(
        kind="sql", connection={"url": f"sqlite:///{db}"}, query="SELECT * FROM metrics WHERE :start IS NOT NULL AND :end IS NOT NULL"
    )
    return get_job("demo_web_metrics").model_copy(update={"source": source, "timestamp_format": form})


@pytest.mark.parametrize("make", [csv_job, sql_job], ids=["file", "sql"])
def test_day_first_dates_are_read_as_the_timestamp_format_says(project: Path, make) -> None:
    job = make(project, day_first_frame(), DAY_FIRST)

    window = Window(to_utc("2024-03-05T00:00:00Z"), to_utc("2024-03-06T00:00:00Z"))  # 05/03/2024: 3 May month first

    extracted = extract(job, window, run_id="day-first")

    times = parse_timestamps(read_parquet(extracted.paths[0])["timestamp"], job.timestamp_format)
    assert times.min() == pd.Timestamp("2024-03-05T00:00:00Z")
    assert times.max() == pd.Timestamp("2024-03-05T23:00:00Z")
    assert len(times) == 24 * 3
    keys = validate(job, window, run_id="day-first", purpose="predict", raw_path=extracted.paths[0])
    assert keys == ["region=apac", "region=eu", "region=us"]


@pytest.mark.parametrize(("make", "form"), [(csv_job, "%d%m%Y%H%M"), (sql_job, "%Y%m%d%H%M")], ids=["file", "sql"])
def test_a_format_of_digits_only_reads_what_is_stored_as_a_number(project: Path, make, form: str) -> None:
    # A csv reader took 050320240000 for the number 50320240000, and SQLite stores an INTEGER.
    frame = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    written = pd.to_datetime(frame["timestamp"]).dt.strftime(form)
    frame["timestamp"] = written if make is csv_job else written.astype("int64")
    job = make(project, frame, form)
    window = Window(to_utc("2024-03-05T00:00:00Z"), to_utc("2024-03-06T00:00:00Z"))

    extracted = extract(job, window, run_id="digits")

    prepared = prepare(read_parquet(extracted.paths[0]), job)
    assert prepared["timestamp"].min() == pd.Timestamp("2024-03-05T00:00:00Z")
    assert len(prepared) == 24 * 3


def test_a_window_of_days_below_13_is_read_day_first(project: Path) -> None:
    # 01/03/2024 is 1 March; read month first it was 3 January, and the window of 1 March read
    # other days' rows (3 to 12 March hold the same ambiguous dates) or none.
    job = csv_job(project, day_first_frame(), DAY_FIRST)
    window = Window(to_utc("2024-03-01T00:00:00Z"), to_utc("2024-03-02T00:00:00Z"))

    extracted = extract(job, window, run_id="first-of-march")

    raw = read_parquet(extracted.paths[0])
    assert raw["timestamp"].iloc[0] == "01/03/2024 00:00"
    prepared = prepare(raw, job)
    assert prepared["timestamp"].min() == pd.Timestamp("2024-03-01T00:00:00Z")
    assert prepared["timestamp"].max() == pd.Timestamp("2024-03-01T23:00:00Z")


@pytest.mark.parametrize("make", [csv_job, sql_job], ids=["file", "sql"])
def test_day_first_dates_without_a_timestamp_format_are_refused_naming_the_row(project: Path, make) -> None:
    job = make(project, day_first_frame(), None)

    with pytest.raises(SourceDataError) as caught:
        extract(job, DAY, run_id="day-first")

    message = str(caught.value)
    assert message.startswith("job 'demo_web_metrics': cannot read")
    # The first day above 12 is 13 February, 12 days of 24 hours of 3 regions after the first row.
    assert "column 'timestamp', row 865" in message
    assert "'13/02/2024 00:00' is a date written day first (13 is no month" in message
    assert "Set timestamp_format in the job file" in message
    assert "time zone" not in message


def test_day_first_dates_in_a_one_off_input_are_refused_naming_the_row_of_the_file(project: Path) -> None:
    path = project / "input.csv"
    day_first_frame().to_csv(path, index=False)
    job = get_job("demo_web_metrics")

    with pytest.raises(SourceDataError, match=r"input file .*, row 865: column 'timestamp': '13/02/2024 00:00' is a date written day"):
        extract_chunks(job, run_id="one-off", input_path=str(path), chunk_rows=500)


def test_values_that_do_not_follow_the_timestamp_format_are_refused_naming_them(project: Path) -> None:
    frame = day_first_frame()
    frame.loc[5, "timestamp"] = "2024-02-01T01:00:00Z"  # ISO 8601 beside the format: a mixed export
    frame.loc[7, "timestamp"] = None
    job = csv_job(project, frame, DAY_FIRST)
    window = Window(to_utc("2024-02-01T00:00:00Z"), to_utc("2024-02-02T00:00:00Z"))

    with pytest.raises(SourceDataError) as caught:
        extract(job, window, run_id="unformatted")

    message = str(caught.value)
    assert "column 'timestamp' has 1 value(s) that do not follow timestamp_format '%d/%m/%Y %H:%M'" in message
    assert "(row 6: '2024-02-01T01:00:00Z')" in message
    assert "set timestamp_format to how they are written" in message


@pytest.mark.parametrize("values", [
    ["01/02/2024 10:00", "13/02/2024 10:00"],
    # Enough values for the fast path of one format, which guessed month first from the first.
    [f"{d.day:02d}/{d.month:02d}/{d.year} {d.hour:02d}:00" for d in pd.date_range("2024-01-01", periods=2000, freq="h")],
    ["13.01.24", "01.02.24"],
], ids=["slashes", "many", "dots-two-digit-year"])
def test_parse_timestamps_refuses_a_date_that_can_only_be_day_first(values: list[str]) -> None:
    with pytest.raises(DayFirstDates) as caught:
        parse_timestamps(pd.Series(values), refuse_day_first=True)
    assert caught.value.value.startswith("13")


def test_parse_timestamps_reads_month_first_dates_and_iso_as_before() -> None:
    parsed = parse_timestamps(pd.Series(["01/13/2024 10:00", "02/01/2024 10:00"]), refuse_day_first=True)
    assert parsed.tolist() == [pd.Timestamp("2024-01-13T10:00Z"), pd.Timestamp("2024-02-01T10:00Z")]
    assert parse_timestamps(pd.Series(["2024-13-01"])).isna().all()  # no month 13; not a day-first date either


def test_parse_timestamps_with_a_format() -> None:
    parsed = parse_timestamps(pd.Series(["01/02/2024 10:00", "13/02/2024 10:00", "2024-02-13 10:00", None]), DAY_FIRST)
    assert parsed.tolist()[:2] == [pd.Timestamp("2024-02-01T10:00Z"), pd.Timestamp("2024-02-13T10:00Z")]
    assert parsed.iloc[2:].isna().all()  # not written as the format says
    aware = parse_timestamps(pd.Series(["01/02/2024 10:00 +0100"]), "%d/%m/%Y %H:%M %z")
    assert aware.tolist() == [pd.Timestamp("2024-02-01T09:00Z")]
