"""Which rows a run reads, and the bad inputs that stop it at extraction: empty windows, time
zones mixed, schema drift between runs.

Every bad input gives a clear error naming the job, the source and the window, writes nothing to
the outputs and leaves the serving models as they were.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.config import FileSource, JobConfig, SqlSource, get_job
from pipelines.errors import ConfigError, DataValidationError, SourceConfigError, SourceDataError, SourceError
from pipelines.extraction import extract, extract_chunks, read_parquet
from pipelines.runner import history_rows, run_predict, run_score_file, run_train
from pipelines.sources.base import parse_timestamps
from pipelines.training import registry_for
from pipelines.workspace import Window, home, prediction_window, schema_record_path, to_utc, training_window

REPO = Path(__file__).resolve().parents[2]
TRAIN = Window(to_utc("2024-02-02T00:00:00Z"), to_utc("2024-03-01T00:00:00Z"))
DAY = Window(to_utc("2024-03-03T00:00:00Z"), to_utc("2024-03-04T00:00:00Z"))
NEXT_DAY = Window(to_utc("2024-03-04T00:00:00Z"), to_utc("2024-03-05T00:00:00Z"))


def raw_times(job: JobConfig, path: str) -> pd.Series:
    return parse_timestamps(read_parquet(path)[job.timestamp])


def with_csv(project: Path, frame: pd.DataFrame | None = None) -> JobConfig:
    """demo_web_metrics reading a private copy of its CSV, which a test may change between runs."""
    path = project / "source.csv"
    (frame if frame is not None else pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")).to_csv(path, index=False)
    return get_job("demo_web_metrics").model_copy(update={"source": FileSource(kind="file", path=str(path), format="csv")})


@pytest.fixture
def trained(project: Path) -> JobConfig:
    """demo_web_metrics on a private CSV copy, trained and one day scored."""
    job = with_csv(project)
    run_train(job, TRAIN, run_id="train-1")
    run_predict(job, DAY, run_id="predict-1")
    return job


def state(job: JobConfig, project: Path) -> dict:
    """What a failed run must leave as it was: output files, SQL rows, champions."""
    outputs = project / "var" / "outputs" / f"job={job.name}"
    files = {str(p.relative_to(outputs)): p.read_bytes() for p in sorted(outputs.rglob("*.parquet"))}
    with sqlite3.connect(project / "var" / "anomalies.db") as connection:
        rows = connection.execute("SELECT count(*), sum(score) FROM anomalies").fetchone()
    registry = registry_for(job)
    models = {s: registry.champion(job.name, s).version for s in registry.series(job.name)}
    return {"files": files, "rows": rows, "models": models}


# -- the rows each run reads ----------------------------------------------------------------


def test_predict_reads_its_interval_plus_the_models_lookback(trained: JobConfig) -> None:
    job = trained
    lookback = history_rows(job)
    assert lookback == 24  # the seasonal models' level_window
    window = prediction_window(DAY.start, DAY.end)
    extracted = extract(job, window, run_id="bounds", history_rows=lookback)
    times = raw_times(job, extracted.paths[0])
    # The data runs from 2024-02-01 to 2024-03-07: rows exist on both sides of what is read.
    assert times.min() == pd.Timestamp(DAY.start) - pd.Timedelta(hours=24)
    assert times.max() == pd.Timestamp(DAY.end) - pd.Timedelta(hours=1)
    assert len(times) == (24 + 24) * 3  # (lookback + interval) hours x regions
    assert extracted.window == DAY


def test_a_model_that_continues_from_its_training_reads_only_the_rows_after_it(project: Path) -> None:
    from pipelines.config import ModelConfig

    job = with_csv(project).model_copy(update={"model": ModelConfig(kind="context", params={"rest": 12})})
    run_train(job, TRAIN, run_id="train-1")
    registry = registry_for(job)
    champion = registry.champion(job.name, registry.series(job.name)[0])
    assert champion.metadata["history_after_training"] and champion.metadata["lookback"] == 10_000
    # The last training row is the hour before TRAIN ends; DAY starts two days after TRAIN ends.
    assert history_rows(job) == 10_000
    assert history_rows(job, DAY.start) == 49
    extracted = extract(job, DAY, run_id="bounds", history_rows=history_rows(job, DAY.start))
    times = raw_times(job, extracted.paths[0])
    assert times.min() == pd.Timestamp(TRAIN.end) - pd.Timedelta(hours=1)
    published = run_predict(job, DAY, run_id="predict-1")
    assert published.rows == 24 * 3 * len(job.features)  # long form: a row per hour, region and feature


def test_scheduled_intervals_from_airflow_read_the_same_bounds(trained: JobConfig) -> None:
    # Airflow's context holds pendulum DateTimes, whose arithmetic used to drop the time zone
    # of the history's start (every scheduled or backfilled predict run failed).
    import pendulum

    window = prediction_window(pendulum.instance(DAY.start), pendulum.instance(DAY.end))
    assert type(window.start) is datetime
    extracted = extract(trained, window, run_id="scheduled", history_rows=history_rows(trained))
    times = raw_times(trained, extracted.paths[0])
    assert times.min() == pd.Timestamp(DAY.start) - pd.Timedelta(hours=24)
    assert times.max() == pd.Timestamp(DAY.end) - pd.Timedelta(hours=1)


def test_train_reads_the_training_window_back_from_the_interval_end(project: Path) -> None:
    job = with_csv(project)
    window = training_window(job, DAY.end)
    extracted = extract(job, window, run_id="train-bounds")
    times = raw_times(job, extracted.paths[0])
    assert times.min() == pd.Timestamp(DAY.end) - pd.Timedelta(days=28)
    assert times.max() == pd.Timestamp(DAY.end) - pd.Timedelta(hours=1)
    assert len(times) == 28 * 24 * 3


def sensors_db(project: Path) -> JobConfig:
    """demo_sensors with its table stored as the SQL source documents for SQLite: timestamps as
    pandas writes datetimes (``YYYY-MM-DD HH:MM:SS.ffffff`` text), compared as text with the bounds."""
    frame = pd.read_csv(REPO / "data" / "demo" / "sensor_readings.csv", parse_dates=["reading_time"])
    path = project / "var" / "demo" / "sensors.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        frame.to_sql("sensor_readings", connection, if_exists="replace", index=False)
    engine.dispose()
    return get_job("demo_sensors")


def test_sql_source_reads_the_same_bounds(project: Path) -> None:
    job = sensors_db(project)
    extracted = extract(job, DAY, run_id="sql-bounds", history_rows=3)
    times = raw_times(job, extracted.paths[0])
    assert times.min() == pd.Timestamp(DAY.start) - pd.Timedelta(hours=3)
    assert times.max() == pd.Timestamp(DAY.end) - pd.Timedelta(hours=1)
    assert len(times) == (3 + 24) * 4  # hours x machines


def test_a_window_off_the_frequency_grid_is_floored_to_it(project: Path) -> None:
    # demo_sensors runs at :15 every hour; its hourly buckets start on the hour, so the run at
    # 11:15 scores 10:00-11:00, and consecutive runs still cover each bucket exactly once.
    job = sensors_db(project)
    window = Window(to_utc("2024-03-03T10:15:00Z"), to_utc("2024-03-03T11:15:00Z"))
    extracted = extract(job, window, run_id="grid")
    assert extracted.window == Window(to_utc("2024-03-03T10:00:00Z"), to_utc("2024-03-03T11:00:00Z"))
    times = raw_times(job, extracted.paths[0])
    assert set(times) == {pd.Timestamp("2024-03-03T10:00:00Z")}


def test_a_window_shorter_than_one_period_is_a_config_error(project: Path) -> None:
    job = with_csv(project)
    window = Window(to_utc("2024-03-03T10:15:00Z"), to_utc("2024-03-03T10:45:00Z"))
    with pytest.raises(ConfigError, match=r"job 'demo_web_metrics': window .* holds no whole period .*1:00:00"):
        extract(job, window, run_id="short")


# -- empty windows and time zones -----------------------------------------------------------


def test_an_empty_predict_window_fails_before_validation_and_writes_nothing(trained: JobConfig, project: Path) -> None:
    before = state(trained, project)
    late = Window(to_utc("2024-03-09T00:00:00Z"), to_utc("2024-03-09T01:00:00Z"))
    with pytest.raises(SourceError) as info:
        run_predict(trained, late, run_id="too-early")
    message = str(info.value)
    assert message.startswith("job 'demo_web_metrics': file source")
    assert "source.csv" in message and "no rows in window [2024-03-09T00:00:00+00:00, 2024-03-09T01:00:00+00:00)" in message
    assert "the data may not have landed yet; re-run when it has, or check the query/path" in message
    # Only the 24 hours of history before the window exist, and they are not scored.
    assert "(0 rows before it were read as history)" in message
    assert state(trained, project) == before
    assert not list((project / "var" / "outputs" / "_validation").rglob("*too-early*"))


def test_an_empty_sql_window_names_the_sql_source(project: Path) -> None:
    job = sensors_db(project)
    with pytest.raises(SourceError, match=r"job 'demo_sensors': sql source .* has no rows in window \[2030"):
        extract(job, Window(to_utc("2030-01-01T00:00:00Z"), to_utc("2030-01-02T00:00:00Z")), run_id="empty-sql")


def _mixed_zone_sql_job(project: Path) -> JobConfig:
    db = project / "var" / "mixed.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    rows = [(f"2024-03-03 {h:02d}:00:00{'+00:00' if h % 2 else ''}", "eu", 100.0 + h, 10.0) for h in range(24)]
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE metrics (timestamp TEXT, region TEXT, requests REAL, latency_ms REAL)")
        connection.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", rows)
    source = SqlSource(
        kind="sql",
        connection={"url": f"sqlite:///{db}"},
        query="SELECT * FROM metrics WHERE timestamp >= :start AND timestamp < :end",
    )
    return get_job("demo_web_metrics").model_copy(update={"source": source})


def _mixed_zone_file_job(project: Path) -> JobConfig:
    frame = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    frame.loc[frame["timestamp"].str.startswith("2024-03-03T05"), "timestamp"] = "2024-03-03 05:00:00"
    return with_csv(project, frame)


@pytest.mark.parametrize("make", [_mixed_zone_sql_job, _mixed_zone_file_job], ids=["sql", "file"])
def test_naive_and_aware_timestamps_mixed_give_the_same_error_for_every_source(project: Path, make) -> None:
    job = make(project)
    with pytest.raises(SourceError) as info:
        run_predict(job, DAY, run_id="mixed")
    message = str(info.value)
    assert message.startswith(f"job 'demo_web_metrics': cannot read {'sql source' if 'sql' in job.source.kind else 'file source'}")
    assert "for window [2024-03-03T00:00:00+00:00, 2024-03-04T00:00:00+00:00)" in message
    assert "column 'timestamp' mixes timestamps with and without a time zone" in message
    assert "have no time zone while the others have one" in message
    assert not (project / "var" / "outputs").exists()


@pytest.mark.parametrize("make", [_mixed_zone_sql_job, _mixed_zone_file_job], ids=["sql", "file"])
def test_naive_and_aware_timestamps_mixed_are_bad_data_that_no_retry_fixes(project: Path, make) -> None:
    # Airflow's tasks fail at once on DataValidationError; a plain SourceError keeps its retries,
    # and every retry read the same mixed timestamps again.
    with pytest.raises(SourceDataError) as info:
        extract(make(project), DAY, run_id="mixed")
    assert isinstance(info.value, SourceError) and isinstance(info.value, DataValidationError)


def test_epoch_numbers_as_timestamps_are_refused_saying_how_to_convert_them(project: Path) -> None:
    # Every row failed validation as "not dateutil parseable", told to "fix the source data".
    db = project / "var" / "epoch.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    first = int(pd.Timestamp(DAY.start).timestamp())
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE metrics (timestamp INTEGER, region TEXT, requests REAL, latency_ms REAL)")
        connection.executemany("INSERT INTO metrics VALUES (?, 'eu', 1.0, 2.0)", [(first + 3600 * h,) for h in range(24)])
    query = "SELECT * FROM metrics WHERE timestamp >= unixepoch(:start) AND timestamp < unixepoch(:end)"
    source = SqlSource(kind="sql", connection={"url": f"sqlite:///{db}"}, query=query)
    job = get_job("demo_web_metrics").model_copy(update={"source": source})

    with pytest.raises(SourceDataError) as info:
        extract(job, DAY, run_id="epoch")
    message = str(info.value)
    assert message.startswith("job 'demo_web_metrics': cannot read sql source")
    assert f"column 'timestamp' holds numbers (e.g. {first}), not timestamps" in message
    assert "datetime(ts, 'unixepoch') AS ts (SQLite)" in message
    assert not (project / "var" / "outputs").exists()


@pytest.mark.parametrize("unit", [1, 1000], ids=["seconds", "milliseconds"])
def test_epoch_numbers_stored_as_text_are_refused_saying_how_to_convert_them(project: Path, unit: int) -> None:
    # Numbers in a TEXT column were taken as text that does not parse: every row failed validation
    # as "not dateutil parseable", told to "fix the source data", with no word of epoch times.
    db = project / "var" / "epoch.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    first = int(pd.Timestamp(DAY.start).timestamp()) * unit
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE metrics (timestamp TEXT, region TEXT, requests REAL, latency_ms REAL)")
        connection.executemany("INSERT INTO metrics VALUES (?, 'eu', 1.0, 2.0)", [(str(first + 3600 * unit * h),) for h in range(24)])
    since = f"CAST(timestamp AS INTEGER) / {unit}"
    query = f"SELECT * FROM metrics WHERE {since} >= unixepoch(:start) AND {since} < unixepoch(:end)"
    source = SqlSource(kind="sql", connection={"url": f"sqlite:///{db}"}, query=query)
    job = get_job("demo_web_metrics").model_copy(update={"source": source})

    with pytest.raises(SourceDataError) as info:
        extract(job, DAY, run_id="epoch")
    message = str(info.value)
    assert message.startswith("job 'demo_web_metrics': cannot read sql source (sqlite:///")
    assert "for window [2024-03-03T00:00:00+00:00, 2024-03-04T00:00:00+00:00): " in message
    assert f"column 'timestamp' holds numbers stored as text (e.g. '{first}'), not timestamps" in message
    assert "datetime(CAST(ts AS INTEGER), 'unixepoch') AS ts (SQLite), divided by 1000 first for milliseconds" in message
    assert "compare the converted time with :start and :end" in message
    assert not (project / "var" / "outputs").exists()


@pytest.mark.parametrize("stored", ["2024-03-03 00:00:00", "20240303"])
def test_text_timestamps_of_digits_that_parse_are_read(project: Path, stored: str) -> None:
    # A compact date is digits too, and a timestamp: not taken for an epoch time.
    db = project / "var" / "digits.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE metrics (timestamp TEXT, region TEXT, requests REAL, latency_ms REAL)")
        connection.execute("INSERT INTO metrics VALUES (?, 'eu', 1.0, 2.0)", (stored,))
    source = SqlSource(kind="sql", connection={"url": f"sqlite:///{db}"}, query="SELECT * FROM metrics WHERE :start < :end")
    job = get_job("demo_web_metrics").model_copy(update={"source": source})
    assert extract(job, DAY, run_id="digits").rows == 1


@pytest.mark.parametrize("quoted", [False, True], ids=["numbers", "text"])
def test_epoch_numbers_in_a_one_off_input_are_refused_naming_the_rows(project: Path, quoted: bool) -> None:
    # Every row failed validation as "not dateutil parseable", in a window of 1970 made up for
    # want of a timestamp, with no word of how to write them.
    path = project / "input.jsonl"
    first = int(pd.Timestamp(DAY.start).timestamp())
    stamps = [f'"{first + 3600 * h}"' if quoted else str(first + 3600 * h) for h in range(30)]
    path.write_text("".join(f'{{"timestamp": {stamp}, "region": "eu", "requests": 1, "latency_ms": 1.5}}\n' for stamp in stamps))

    with pytest.raises(SourceDataError) as info:
        extract_chunks(get_job("demo_web_metrics"), run_id="one-off", input_path=str(path), chunk_rows=20)
    shown = f"numbers stored as text (e.g. '{first}')" if quoted else f"numbers (e.g. {first})"
    assert str(info.value) == (
        f"job 'demo_web_metrics': input file {str(path)!r}, rows 1 to 20: column 'timestamp' holds {shown}, not timestamps; "
        "whether they count seconds or milliseconds since 1970 would be a guess. Convert them to UTC timestamps in the "
        "file, as text such as 2024-01-01T00:00:00Z, then re-run. Nothing was scored or written."
    )


def test_naive_and_aware_timestamps_mixed_in_a_one_off_input_are_bad_data(project: Path) -> None:
    path = project / "input.csv"
    rows = [f"2024-03-03T0{hour}:00:00Z,eu,{hour},1.5\n" for hour in range(4)] + ["2024-03-03 04:00:00,eu,4,1.5\n"]
    path.write_text("timestamp,region,requests,latency_ms\n" + "".join(rows))
    for chunk_rows in (3, 1000):  # across chunks, and within one
        with pytest.raises(DataValidationError, match="mixes timestamps with and without a time zone"):
            extract_chunks(get_job("demo_web_metrics"), run_id=f"one-off-{chunk_rows}", input_path=str(path), chunk_rows=chunk_rows)


def test_naive_and_aware_timestamps_mixed_in_a_one_off_input_file_name_the_rows(project: Path) -> None:
    path = project / "input.csv"
    rows = [f"2024-03-03T0{hour}:00:00Z,eu,{hour},1.5\n" for hour in range(4)] + ["2024-03-03 04:00:00,eu,4,1.5\n"]
    path.write_text("timestamp,region,requests,latency_ms\n" + "".join(rows))

    with pytest.raises(SourceError) as info:
        extract_chunks(get_job("demo_web_metrics"), run_id="one-off", input_path=str(path), chunk_rows=3)

    message = str(info.value)
    assert message.startswith(f"job 'demo_web_metrics': input file {str(path)!r}, rows 4 to 5: column 'timestamp' mixes")
    assert "Store every timestamp with its offset" in message


@pytest.mark.parametrize(
    ("naive_chunk", "chunks"),
    [
        (
            1,
            (
                "chunk 1 has them without (first at row 1: '2024-03-05 00:00:00'), "
                "chunk 2 has them with (first at row 37: '2024-03-05T12:00:00Z')"
            ),
        ),
        (
            2,
            (
                "chunk 1 has them with (first at row 1: '2024-03-05T00:00:00Z'), "
                "chunk 2 has them without (first at row 37: '2024-03-05 12:00:00')"
            ),
        ),
    ],
    ids=["naive-then-aware", "aware-then-naive"],
)
def test_naive_and_aware_timestamps_in_different_chunks_of_a_one_off_input_stop_it_before_scoring(
    trained: JobConfig, project: Path, tmp_path: Path, naive_chunk: int, chunks: str
) -> None:
    # Each chunk alone is consistent; parsed alone, the naive one would be taken as UTC.
    data = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    data = data[data["timestamp"].str.startswith("2024-03-05")].reset_index(drop=True)  # 72 rows: 2 chunks of 36
    naive = data.index // 36 == naive_chunk - 1
    data.loc[naive, "timestamp"] = data.loc[naive, "timestamp"].str.replace("T", " ").str.removesuffix("Z")
    data.to_csv(tmp_path / "input.csv", index=False)
    before = state(trained, project)

    with pytest.raises(SourceError) as info:
        run_score_file(
            trained, str(tmp_path / "input.csv"), run_id="mixed-chunks", output=str(tmp_path / "out.parquet"), chunk_rows=36
        )

    assert str(info.value) == (
        f"job 'demo_web_metrics': input file {str(tmp_path / 'input.csv')!r}: column 'timestamp' mixes timestamps with "
        f"and without a time zone across chunks of 36 rows: {chunks}; taking the ones without as UTC would be a guess. "
        "Store every timestamp with its offset (e.g. 2024-01-01T00:00:00Z) or every one without (then taken as UTC), "
        "then re-run. Nothing was scored or written."
    )
    assert not (tmp_path / "out.parquet").exists()
    assert state(trained, project) == before


def _one_off_input(path: Path, rows: list[tuple[str, str]]) -> str:
    """A one-off input of (timestamp as written, region) rows, in this order."""
    lines = [f"{stamp},{region},{number},1.5\n" for number, (stamp, region) in enumerate(rows)]
    path.write_text("timestamp,region,requests,latency_ms\n" + "".join(lines))
    return str(path)


H0, H1, H2, H3 = (f"2024-03-03T0{hour}:00:00Z" for hour in range(4))


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        (
            [(H0, "eu"), (H1, "eu"), (H1, "eu"), (H2, "eu")],
            "series region=eu: row 3 (chunk 2: '2024-03-03T01:00:00Z') has timestamp 2024-03-03T01:00:00+00:00, "
            "which repeats the instant of row 2 (chunk 1: '2024-03-03T01:00:00Z'), a duplicate across chunks of 2 rows",
        ),
        (  # the same instant written with another offset
            [(H0, "eu"), (H1, "eu"), ("2024-03-03T02:00:00+01:00", "eu"), (H2, "eu")],
            "series region=eu: row 3 (chunk 2: '2024-03-03T02:00:00+01:00') has timestamp 2024-03-03T01:00:00+00:00, "
            "which repeats the instant of row 2 (chunk 1: '2024-03-03T01:00:00Z'), a duplicate across chunks of 2 rows",
        ),
        (  # the series is absent from the chunk between
            [(H0, "eu"), (H1, "eu"), (H0, "us"), (H1, "us"), (H3, "eu"), (H0, "eu")],
            "series region=eu: row 6 (chunk 3: '2024-03-03T00:00:00Z') has timestamp 2024-03-03T00:00:00+00:00, "
            "which comes before row 2 (chunk 1: '2024-03-03T01:00:00Z') in an earlier chunk of 2 rows",
        ),
        (
            [(H2, "eu"), (H3, "eu"), (H0, "eu"), (H1, "eu")],
            "series region=eu: row 3 (chunk 2: '2024-03-03T00:00:00Z') has timestamp 2024-03-03T00:00:00+00:00, "
            "which comes before row 2 (chunk 1: '2024-03-03T03:00:00Z') in an earlier chunk of 2 rows",
        ),
    ],
    ids=["duplicate", "duplicate-other-offset", "duplicate-chunks-apart", "out-of-order"],
)
def test_a_series_repeating_or_going_back_in_time_across_chunks_of_a_one_off_input_stops_it_at_extract(
    project: Path, rows: list[tuple[str, str]], problem: str
) -> None:
    # Validation sees one chunk at a time: each chunk here is clean on its own.
    path = _one_off_input(project / "input.csv", rows)

    with pytest.raises(SourceDataError) as info:
        extract_chunks(get_job("demo_web_metrics"), run_id="one-off", input_path=path, chunk_rows=2)

    assert str(info.value) == (
        f"job 'demo_web_metrics': input file {path!r}, {problem}. Each chunk is scored with the end of the series "
        "in earlier chunks as history, so rows of a series must come in time order through the file, one per "
        "timestamp: sort the file by time (or by series, then time) and keep one row per timestamp and series, "
        "then re-run. Nothing was scored or written."
    )


def test_one_off_input_whose_series_interleave_in_time_order_passes_across_chunks(project: Path) -> None:
    # Series may be in any order, and rows in any order within a chunk: only each series' order
    # from chunk to chunk counts.
    path = _one_off_input(project / "input.csv", [(H0, "us"), (H0, "eu"), (H2, "eu"), (H1, "eu"), (H1, "us"), (H3, "eu")])
    job = get_job("demo_web_metrics")
    job = job.model_copy(update={"validation": job.validation.model_copy(update={"min_rows": 6})})

    extracted = extract_chunks(job, run_id="one-off", input_path=path, chunk_rows=2)

    assert (len(extracted.paths), extracted.rows) == (3, 6)


def test_a_one_off_input_is_read_with_the_csv_options_of_the_jobs_file_source(project: Path) -> None:
    path = project / "input.csv"
    path.write_text("timestamp;region;requests;latency_ms\n" + "".join(f"{stamp};eu;{n};1.001,5\n" for n, stamp in enumerate((H0, H1, H2))))
    job = get_job("demo_web_metrics")
    job = job.model_copy(
        update={
            "source": FileSource(kind="file", path=str(project / "source.csv"), delimiter=";", decimal=",", thousands="."),
            "validation": job.validation.model_copy(update={"min_rows": 3}),
        }
    )

    extracted = extract_chunks(job, run_id="one-off", input_path=str(path), chunk_rows=2)

    chunks = pd.concat(read_parquet(p) for p in extracted.paths)
    assert chunks["latency_ms"].tolist() == [1001.5, 1001.5, 1001.5]
    assert chunks["requests"].tolist() == [0, 1, 2]


def test_a_one_off_input_of_other_columns_is_named_as_such_not_as_empty(project: Path) -> None:
    # It said "holds 0 rows; the job needs at least 24": pandas keeps no row of a csv when it keeps no column.
    path = project / "other.csv"
    path.write_text("a,b\n1,2\n3,4\n")

    with pytest.raises(SourceConfigError) as raised:
        extract_chunks(get_job("demo_web_metrics"), run_id="one-off", input_path=str(path), chunk_rows=10)

    assert str(raised.value).endswith(
        "has the header 'a,b', which holds none of the job's columns (timestamp, region, requests, latency_ms). "
        "Check input (predict's --input, or the run's `input`): it should hold the job's columns."
    )


def test_a_one_off_inputs_advice_names_no_job_file_setting_it_cannot_use(project: Path) -> None:
    # A one-off input is never unpickled, whatever the job file says: "set allow_pickle: true"
    # sent the user to a setting the run does not read.
    path = project / "input.pkl"
    pd.DataFrame({"timestamp": [H0], "region": ["eu"], "requests": [1], "latency_ms": [1.5]}).to_pickle(path)

    with pytest.raises(ConfigError) as raised:
        extract_chunks(get_job("demo_web_metrics"), run_id="one-off", input_path=str(path), chunk_rows=10)

    assert str(raised.value) == (
        f"job 'demo_web_metrics': file source {str(path)!r} holds pickle files, and unpickling runs arbitrary code: "
        "convert the data to Parquet"
    )


@pytest.mark.parametrize("written", ["delimiter", "encoding"])
def test_a_one_off_input_of_a_sql_job_is_told_to_be_converted_not_a_setting_its_source_refuses(project: Path, written: str) -> None:
    # demo_sensors reads SQL: "Set source.delimiter" (or `encoding`) named a field its source
    # refuses, and a one-off input of a non-file job is read with utf-8, ',' and '.' whatever it says.
    path = project / "sensors.csv"
    frame = pd.DataFrame({"reading_time": ["2024-03-01 00:00:00"], "machine": ["m1"], "temperature": [1.5],
                          "vibration": [0.1], "pressure": [2.0]})
    if written == "delimiter":
        frame.to_csv(path, sep=";", index=False)
    else:
        path.write_bytes(frame.assign(machine="Bär").to_csv(index=False).encode("cp1252"))

    with pytest.raises(SourceError) as raised:
        extract_chunks(get_job("demo_sensors"), run_id="one-off", input_path=str(path), chunk_rows=10)

    message = str(raised.value)
    assert "source." not in message and "`encoding`" not in message, message
    assert message.endswith(", or as Parquet: this job's source is not a file, so nothing sets how this file is read."), message


def test_a_one_off_input_whose_suffix_tells_no_format_is_told_to_be_renamed(project: Path) -> None:
    # Its format is its suffix's: "Set `format`" named a job-file setting the run does not read.
    path = project / "input.txt"
    path.write_text("timestamp,region,requests,latency_ms\n2024-03-03T00:00:00Z,eu,1,1.5\n")

    with pytest.raises(ConfigError) as raised:
        extract_chunks(get_job("demo_web_metrics"), run_id="one-off", input_path=str(path), chunk_rows=10)

    assert "cannot tell the format from the file suffixes ['.txt']. Name the files with one of ['.csv'," in str(raised.value)
    assert "format`" not in str(raised.value)


def test_one_off_input_without_dimensions_is_checked_across_chunks_too(project: Path) -> None:
    job = get_job("demo_web_metrics").model_copy(update={"dimensions": []})
    path = _one_off_input(project / "input.csv", [(H0, "eu"), (H1, "us"), (H1, "eu")])

    with pytest.raises(SourceDataError, match=r"series all: row 3 \(chunk 2: .*repeats the instant of row 2 \(chunk 1"):
        extract_chunks(job, run_id="one-off", input_path=path, chunk_rows=2)


def test_a_duplicate_across_chunks_of_a_one_off_input_is_refused_before_any_chunk_is_scored(
    trained: JobConfig, project: Path, tmp_path: Path
) -> None:
    # It used to fail only when its chunk was scored, after the chunks before it, as a model
    # version that "cannot score" with history "reaching" past the first row, naming no file or row.
    data = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    data = data[data["timestamp"].str.startswith("2024-03-05")].reset_index(drop=True)
    pd.concat([data, data.iloc[[0]]]).to_csv(tmp_path / "input.csv", index=False)  # 73 rows: the last repeats the first
    before = state(trained, project)

    with pytest.raises(SourceDataError, match=r"series region=apac: row 73 \(chunk 4: '2024-03-05T00:00:00Z'\) has "):
        run_score_file(trained, str(tmp_path / "input.csv"), run_id="dup", output=str(tmp_path / "out.parquet"), chunk_rows=20)

    assert not (tmp_path / "out.parquet").exists()
    assert not (project / "var" / "work" / trained.name / "dup").exists()
    assert state(trained, project) == before


# -- schema drift between runs --------------------------------------------------------------


def test_each_extract_records_the_sources_column_kinds(trained: JobConfig) -> None:
    record = json.loads(Path(schema_record_path(trained)).read_text())
    assert record["columns"] == {"timestamp": "datetime", "region": "text", "requests": "number", "latency_ms": "number"}
    assert record["run_id"] == "predict-1" and record["window"] == str(DAY)
    assert Path(schema_record_path(trained)).parent == home() / "work" / "demo_web_metrics"


DRIFT = {
    "column renamed": (
        lambda f: f.rename(columns={"latency_ms": "latency"}),
        "column 'latency_ms' was number and is missing now (renamed or dropped?)",
    ),
    "type changed": (
        lambda f: f.assign(requests=f["requests"].map(lambda v: f"{v} req")),
        "column 'requests' was number and is text now",
    ),
    "timestamps became numbers": (
        lambda f: f.assign(timestamp=pd.to_datetime(f["timestamp"]).astype("int64") // 10**9),
        "column 'timestamp' was datetime and is number now",
    ),
}


@pytest.mark.parametrize("case", list(DRIFT))
def test_schema_drift_fails_the_next_run_naming_the_previous_one(trained: JobConfig, project: Path, case: str) -> None:
    mutate, fragment = DRIFT[case]
    with_csv(project, mutate(pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")))
    before = state(trained, project)
    for run in (lambda: run_predict(trained, NEXT_DAY, run_id="drift"), lambda: run_train(trained, Window(TRAIN.start, NEXT_DAY.end), run_id="drift-train")):
        with pytest.raises(DataValidationError) as info:
            run()
        message = str(info.value)
        assert message.startswith("job 'demo_web_metrics': schema drift in file source")
        assert "source.csv" in message and "compared with the previous run of this source (run 'predict-1', window " + str(DAY) in message
        assert fragment in message
        assert "Nothing was written and the serving models are unchanged" in message
        assert f"delete {schema_record_path(trained)} to accept the new schema" in message
        assert state(trained, project) == before
    # The record still describes the last good run, so the error stays until the source is fixed.
    assert json.loads(Path(schema_record_path(trained)).read_text())["run_id"] == "predict-1"
    with_csv(project)
    run_predict(trained, NEXT_DAY, run_id="fixed")


def test_a_few_bad_values_are_left_to_validation_not_called_drift(trained: JobConfig, project: Path) -> None:
    frame = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv", dtype=object)
    frame.loc[frame["timestamp"].str.startswith("2024-03-04T05"), "requests"] = "twelve"
    with_csv(project, frame)
    with pytest.raises(DataValidationError) as info:
        run_predict(trained, NEXT_DAY, run_id="bad-values")
    assert str(info.value).startswith("job demo_web_metrics: validation of")
    assert '"twelve"' in str(info.value) and "schema drift" not in str(info.value)


def test_accepting_a_changed_schema_by_deleting_the_record(trained: JobConfig, project: Path) -> None:
    frame = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    with_csv(project, frame.assign(region=frame["region"].map({"eu": 1, "us": 2, "apac": 3})))
    with pytest.raises(DataValidationError, match="column 'region' was text and is number now"):
        run_predict(trained, NEXT_DAY, run_id="drift")
    Path(schema_record_path(trained)).unlink()
    # The demo's expectation suite lists the region names; numbered regions need it dropped too.
    job = trained.model_copy(update={"validation": trained.validation.model_copy(update={"suite": None})})
    run_train(job, Window(TRAIN.start + timedelta(days=2), NEXT_DAY.start), run_id="retrain")
    run_predict(job, NEXT_DAY, run_id="accepted")
    assert json.loads(Path(schema_record_path(trained)).read_text())["columns"]["region"] == "number"


def test_the_demo_sensor_table_gives_the_first_row_of_a_window(project: Path) -> None:
    """The demo loader stores times in the form the SQL source's bound window is compared with."""
    from pipelines.demo import setup_demo_database
    from pipelines.sources import read_window

    setup_demo_database()
    job = get_job("demo_sensors")
    start, end = to_utc("2024-02-01T00:00:00Z"), to_utc("2024-02-01T01:00:00Z")
    frame = read_window(job, start, end)
    stamps = pd.to_datetime(frame[job.timestamp], utc=True)
    assert stamps.min() == pd.Timestamp("2024-02-01T00:00:00Z") and stamps.max() < pd.Timestamp("2024-02-01T01:00:00Z")
    assert len(frame) == 4  # four machines, one hourly reading each


def test_the_raw_batch_is_stored_without_a_second_copy_of_its_timestamps_and_numbers() -> None:
    # A deep copy held every timestamp and number of a large window twice while it was written.
    import pandas._testing as tm

    from pipelines.extraction import _canonical_raw

    frame = pd.DataFrame({
        "timestamp": pd.date_range("2024-03-03", periods=3, freq="h", tz="UTC"),
        "requests": [1.0, 2.0, 3.0],
        "region": pd.Series(["eu", None, 7], dtype=object),
    })

    raw = _canonical_raw(frame)

    for name in ("timestamp", "requests"):
        assert tm.shares_memory(raw[name].array, frame[name].array), name
    assert raw["region"].tolist() == ["eu", pd.NA, "7"]
    assert frame["region"].tolist() == ["eu", None, 7]  # the window read is left as it was
