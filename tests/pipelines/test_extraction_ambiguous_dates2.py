"""Reads in parts (the chunks of a one-off input, the files and window cut of a source) judge
whether numeric dates could be day first over the whole read: one warning per read, none when a
later part tells the order, and a later part proving them day first fails the read alone."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import FileSource, JobConfig, get_job
from pipelines.errors import SourceDataError
from pipelines.extraction import extract, extract_chunks
from pipelines.sources.base import DayFirstDoubt, parse_timestamps
from pipelines.workspace import Window, Workspace, to_utc

REPO = Path(__file__).resolve().parents[2]
ADVICE = "read month first; set timestamp_format (e.g. '%d/%m/%Y %H:%M') if it is day first"


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipelines.sources.base" and r.levelno == logging.WARNING]


def metrics(start: str, end: str, form: str) -> pd.DataFrame:
    """The demo's web metrics (3 regions, hourly) in ``[start, end)``, their timestamps written as ``form``."""
    frame = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    stamps = pd.to_datetime(frame["timestamp"])
    frame = frame[(stamps >= start) & (stamps < end)].copy()
    frame["timestamp"] = stamps[frame.index].dt.strftime(form)
    return frame.reset_index(drop=True)


def written(project: Path, frame: pd.DataFrame, name: str = "input.csv") -> Path:
    path = project / name
    frame.to_csv(path, index=False)
    return path


# 1 to 7 March written day first: 504 rows, every first two numbers at most 12.
AMBIGUOUS = ("2024-03-01", "2024-03-08", "%d/%m/%Y %H:%M")


@pytest.mark.parametrize(
    "chunk_rows",
    [51, 72],  # 10 chunks, most of them across two dates; 7 chunks of one date each (3 regions x 24 hours)
    ids=["ten-chunks", "one-date-a-chunk"],
)
def test_a_one_off_input_read_in_chunks_warns_once(project: Path, caplog, chunk_rows: int) -> None:
    path = written(project, metrics(*AMBIGUOUS))

    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        extracted = extract_chunks(get_job("demo_web_metrics"), run_id="chunks", input_path=str(path), chunk_rows=chunk_rows)

    assert len(extracted.paths) == -(-504 // chunk_rows)
    # Chunk by chunk, ten chunks warned six times, and chunks of one date each never: each alone
    # has one first number, though the file goes from 01/03 to 07/03 (read as January to July).
    [message] = warnings_of(caplog)
    assert message.startswith("timestamp column 'timestamp': numeric dates such as '01/03/2024 00:00' are ")
    assert ADVICE in message


def test_a_later_chunk_proving_day_first_fails_the_read_alone(project: Path, caplog) -> None:
    # 1 to 15 February day first: 12 days of ambiguous chunks, then 13/02 can only be day first.
    path = written(project, metrics("2024-02-01", "2024-02-16", "%d/%m/%Y %H:%M"))
    job = get_job("demo_web_metrics")

    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"), pytest.raises(SourceDataError) as caught:
        extract_chunks(job, run_id="proven-day-first", input_path=str(path), chunk_rows=200)

    message = str(caught.value)
    assert message.startswith(f"job 'demo_web_metrics': input file {str(path)!r}, row 865: column 'timestamp': ")
    assert "'13/02/2024 00:00' is a date written day first" in message
    assert "Set timestamp_format in the job file" in message
    # The first four chunks, read month first, said "read month first" before the fifth refused them.
    assert warnings_of(caplog) == []
    # Nothing of the read can be scored: the manifest that scoring reads is written at its end.
    assert not Path(Workspace(job.name, "proven-day-first", "score").chunk_manifest).exists()


def test_a_later_chunk_proving_month_first_takes_back_the_doubt(project: Path, caplog) -> None:
    # Month first, the first 12 days of January and February, then all of March: chunks of the
    # first two months alone could be day first, the 13th of March (03/13) says they are not.
    days = pd.DatetimeIndex(
        [*pd.date_range("2024-01-01", "2024-01-12 23:00", freq="h"), *pd.date_range("2024-02-01", "2024-02-12 23:00", freq="h"),
         *pd.date_range("2024-03-01", "2024-03-31 23:00", freq="h")]
    )
    frame = pd.DataFrame({"timestamp": days.strftime("%m/%d/%Y %H:%M"), "region": "eu", "requests": np.arange(len(days)),
                          "latency_ms": 100.0})
    path = written(project, frame)

    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        extracted = extract_chunks(get_job("demo_web_metrics"), run_id="proven-month-first", input_path=str(path), chunk_rows=300)

    assert extracted.window.start == to_utc("2024-01-01T00:00:00Z")
    assert warnings_of(caplog) == []


def csv_source(project: Path, path: Path) -> JobConfig:
    return get_job("demo_web_metrics").model_copy(update={"source": FileSource(kind="file", path=str(path), format="csv")})


WIDE = Window(to_utc("2024-01-01T00:00:00Z"), to_utc("2024-08-01T00:00:00Z"))


def test_a_window_of_one_file_warns_once(project: Path, caplog) -> None:
    job = csv_source(project, written(project, metrics(*AMBIGUOUS)))

    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        extract(job, WIDE, run_id="one-file")

    # The reader's window cut warned too: two warnings for one read.
    [message] = warnings_of(caplog)
    assert ADVICE in message


def test_a_window_of_several_files_warns_once(project: Path, caplog) -> None:
    frame = metrics(*AMBIGUOUS)
    folder = project / "daily"
    folder.mkdir()
    # Over two dates a file: each file alone could be day first, and warned, once per file and once more.
    for number in range(3):
        frame.iloc[number * 168 : (number + 1) * 168].to_csv(folder / f"part-{number}.csv", index=False)
    job = csv_source(project, folder)

    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        extract(job, WIDE, run_id="files")

    [message] = warnings_of(caplog)
    assert ADVICE in message


def hourly(start: str, periods: int, form: str) -> pd.Series:
    return pd.Series(pd.date_range(start, periods=periods, freq="h").strftime(form), name="when")


@pytest.mark.parametrize(
    ("values", "warns"),
    [
        (hourly("2024-03-01", 240, "%d/%m/%Y %H:%M"), True),
        (hourly("2024-03-01", 240, "%m/%d/%Y %H:%M"), False),  # one first number: days of one month
        (hourly("2024-03-08", 240, "%m/%d/%Y %H:%M"), False),  # 03/13 tells month first
        (pd.Series(["2024-01-03 10:00", "01/02/2024 10:00", "02/03/2024 10:00"], name="when"), False),  # two ways
        (pd.Series(["01/03/2024", None, "bad", "02/03/2024", "03/03/2024", "04/03/2024"], name="when"), True),
    ],
    ids=["day-first", "one-month", "day-past-12", "two-ways", "missing-and-bad"],
)
@pytest.mark.parametrize("parts", [2, 3, 24])
def test_a_read_in_parts_warns_as_the_whole_column_does(caplog, values: pd.Series, warns: bool, parts: int) -> None:
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        parse_timestamps(values, refuse_day_first=True)
    whole = warnings_of(caplog)
    caplog.clear()

    doubt = DayFirstDoubt()
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        for part in np.array_split(np.arange(len(values)), min(parts, len(values))):
            parse_timestamps(values.iloc[part], refuse_day_first=True, doubt=doubt)
        assert warnings_of(caplog) == []  # nothing before the read ends
        doubt.warn()

    assert len(whole) == int(warns)
    assert warnings_of(caplog) == whole


def test_a_window_of_one_date_warns_when_its_file_could_be_day_first(project: Path, caplog) -> None:
    job = csv_source(project, written(project, metrics(*AMBIGUOUS)))
    # 02/03/2024 is 2 February month first: the window's rows have one date, the file seven.
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        extract(job, Window(to_utc("2024-02-03T00:00:00Z"), to_utc("2024-02-04T00:00:00Z")), run_id="one-date")

    [message] = warnings_of(caplog)
    assert ADVICE in message


def month_first_in_parts() -> list[pd.DataFrame]:
    """Month first: the first 12 days of January and February (which alone could be day first),
    then March, whose 13th (03/13) tells month first."""
    parts = [("2024-01-01", "2024-01-12 23:00"), ("2024-02-01", "2024-02-12 23:00"), ("2024-03-01", "2024-03-31 23:00")]
    frames = []
    for first, last in parts:
        days = pd.date_range(first, last, freq="h")
        frames.append(pd.DataFrame({"timestamp": days.strftime("%m/%d/%Y %H:%M"), "region": "eu", "requests": 1, "latency_ms": 100.0}))
    return [pd.concat(frames[:2], ignore_index=True), frames[2]]


def test_a_window_of_files_whose_last_tells_month_first_does_not_warn(project: Path, caplog) -> None:
    folder = project / "parts"
    folder.mkdir()
    for number, part in enumerate(month_first_in_parts()):
        part.to_csv(folder / f"part-{number}.csv", index=False)

    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"):
        extract(csv_source(project, folder), WIDE, run_id="month-first")

    # The first file alone warned, though the second says month first.
    assert warnings_of(caplog) == []


def test_a_window_of_files_whose_last_proves_day_first_fails_alone(project: Path, caplog) -> None:
    folder = project / "parts"
    folder.mkdir()
    metrics("2024-02-01", "2024-02-08", "%d/%m/%Y %H:%M").to_csv(folder / "part-0.csv", index=False)
    metrics("2024-02-08", "2024-02-15", "%d/%m/%Y %H:%M").to_csv(folder / "part-1.csv", index=False)

    with caplog.at_level(logging.WARNING, logger="pipelines.sources.base"), pytest.raises(SourceDataError) as caught:
        extract(csv_source(project, folder), WIDE, run_id="day-first")

    message = str(caught.value)
    assert message.startswith("job 'demo_web_metrics': cannot read file source")
    # 13 February is 5 days of 24 hours of 3 regions into the second file.
    assert f"column 'timestamp' of {folder / 'part-1.csv'}, row 361: '13/02/2024 00:00' is a date written day first" in message
    assert "Set timestamp_format in the job file" in message
    # The first file, read month first, warned before the second refused the dates.
    assert warnings_of(caplog) == []
    assert not Path(Workspace("demo_web_metrics", "day-first", "train").raw_batch).exists()
