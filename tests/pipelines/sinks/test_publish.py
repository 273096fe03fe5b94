"""publish() over several sinks: the outputs take a window's new rows together, or an error says
which ones hold them (tests/pipelines/test_scoring.py does not exist; these test the sinks' use)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines import scoring, storage
from pipelines.config import JobConfig, parse_job
from pipelines.db import engine_for
from pipelines.errors import SinkError
from pipelines.sinks import ParquetSink, SqlSink
from pipelines.workspace import Window

START, END = pd.Timestamp("2024-01-05", tz="UTC"), pd.Timestamp("2024-01-06", tz="UTC")


def job_config(tmp_path: Path, *, bigquery: bool = False) -> JobConfig:
    outputs = {"parquet": str(tmp_path / "out"), "table": {"connection": {"url": f"sqlite:///{tmp_path}/out.db"}, "name": "anomalies"}}
    if bigquery:
        outputs["bigquery"] = {"table": "proj.dataset.anomalies"}
    return parse_job(
        {
            "name": "sales",
            "source": {"kind": "file", "path": str(tmp_path / "in.csv")},
            "timestamp": "ts",
            "frequency": "6h",
            "features": ["x", "y"],
            "model": {"kind": "seasonal_mad"},
            "outputs": outputs,
        }
    )


def publish_run(job: JobConfig, tmp_path: Path, make_frame, run: str) -> scoring.PublishResult:
    path = tmp_path / f"{run}.parquet"
    make_frame("sales", "2024-01-05", "2024-01-06", run=run).to_parquet(path)
    return scoring.publish(job, Window(START.to_pydatetime(), END.to_pydatetime()), [str(path)])


def run_ids(job: JobConfig) -> tuple[set[str], set[str]]:
    parquet = ParquetSink(job.outputs.parquet).read(job="sales")
    table = SqlSink(engine_for(job.outputs.table.connection), "anomalies").read(job="sales")
    assert len(parquet) == len(table) == 8
    return set(parquet["run_id"]), set(table["run_id"])


@pytest.fixture
def listen(tmp_path: Path):
    """Attach a listener to the job's (cached, shared) engine for the test only."""
    attached = []

    def attach(job: JobConfig, event: str, listener) -> None:
        engine = engine_for(job.outputs.table.connection)
        sa.event.listen(engine, event, listener)
        attached.append((engine, event, listener))

    yield attach
    for engine, event, listener in attached:
        sa.event.remove(engine, event, listener)


def test_failed_table_insert_leaves_both_outputs_as_they_were(tmp_path, make_frame, listen) -> None:
    job = job_config(tmp_path)
    publish_run(job, tmp_path, make_frame, "old")

    def lose_connection(conn, cursor, statement, *args) -> None:
        if statement.startswith("INSERT"):
            raise RuntimeError("db connection lost")

    listen(job, "before_cursor_execute", lose_connection)
    with pytest.raises(SinkError, match="db connection lost; the table keeps its previous rows") as caught:
        publish_run(job, tmp_path, make_frame, "new")
    assert "already hold" not in str(caught.value)
    assert run_ids(job) == ({"old"}, {"old"})


def test_failed_parquet_write_rolls_the_table_back(tmp_path, make_frame, monkeypatch) -> None:
    job = job_config(tmp_path)
    publish_run(job, tmp_path, make_frame, "old")

    def disk_full(url, data, storage_options=None) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(storage, "atomic_write", disk_full)
    with pytest.raises(SinkError, match=r"job 'sales'.*No space left on device") as caught:
        publish_run(job, tmp_path, make_frame, "new")
    assert "already hold" not in str(caught.value)
    assert run_ids(job) == ({"old"}, {"old"})


def test_failed_table_commit_leaves_both_outputs_as_they_were(tmp_path, make_frame, listen) -> None:
    """The table commits before the staged Parquet files replace the day files: a commit that
    fails leaves the day files old too (it used to leave them new, the outputs disagreeing)."""
    job = job_config(tmp_path)
    publish_run(job, tmp_path, make_frame, "old")

    inserted, refusing = [], [True]

    def note_insert(conn, cursor, statement, *args) -> None:
        inserted.append(statement.startswith("INSERT"))

    def refuse_commit(conn) -> None:
        if refusing and any(inserted):  # the write's commit, not that of creating the table
            raise RuntimeError("server went away at commit")

    listen(job, "before_cursor_execute", note_insert)
    listen(job, "commit", refuse_commit)
    with pytest.raises(Exception, match="server went away at commit"):
        publish_run(job, tmp_path, make_frame, "new")
    assert run_ids(job) == ({"old"}, {"old"})
    assert not list((tmp_path / "out" / "job=sales").rglob("*.tmp*")), "no staged file is left"

    refusing.clear()
    publish_run(job, tmp_path, make_frame, "retry")
    assert run_ids(job) == ({"retry"}, {"retry"})


def test_failed_parquet_move_after_the_commit_names_the_table(tmp_path, make_frame, monkeypatch) -> None:
    job = job_config(tmp_path)
    publish_run(job, tmp_path, make_frame, "old")

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ParquetSink, "_finish", refuse)
    with pytest.raises(SinkError) as caught:
        publish_run(job, tmp_path, make_frame, "new")
    message = str(caught.value)
    assert "disk full" in message and "table anomalies (" in message and "already holds its new rows" in message
    assert "rerun the interval (an Airflow retry of publish does)" in message and "no duplicates" in message
    monkeypatch.undo()
    publish_run(job, tmp_path, make_frame, "retry")  # the retry the message asks for
    assert run_ids(job) == ({"retry"}, {"retry"})


def test_failed_bigquery_write_names_the_outputs_already_replaced(tmp_path, make_frame, monkeypatch) -> None:
    job = job_config(tmp_path, bigquery=True)

    class UnreachableBigQuery:
        def __init__(self, output) -> None:
            pass

        def write(self, frame, **window) -> int:
            raise SinkError("could not write 8 rows to bigquery table 'proj.dataset.anomalies': 503 unavailable")

    monkeypatch.setattr(scoring, "BigQuerySink", UnreachableBigQuery)
    with pytest.raises(SinkError) as caught:
        publish_run(job, tmp_path, make_frame, "new")
    message = str(caught.value)
    assert message.startswith("job sales, window ")
    assert "503 unavailable" in message
    assert "table anomalies (" in message and f") and the Parquet dataset {tmp_path / 'out'} already hold" in message
    assert "already hold its new rows" in message and "rerun the interval" in message
    assert run_ids(job) == ({"new"}, {"new"})


def test_another_sqlite_writer_is_not_held_while_publish_moves_its_parquet_files(tmp_path, make_frame, monkeypatch) -> None:
    """The table commits before the day files are replaced: a writer of another job to the same
    SQLite file writes while publish is still moving them (publish held the database's write lock
    through its whole Parquet write, so others waited for it)."""
    import threading

    job = job_config(tmp_path)
    publish_run(job, tmp_path, make_frame, "old")
    finish, moving, other_written = ParquetSink._finish, threading.Event(), threading.Event()

    def slow_finish(self, *args, **kwargs):
        moving.set()
        assert other_written.wait(30), "the other writer waited for publish"
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(ParquetSink, "_finish", slow_finish)
    errors: list[BaseException] = []

    def publishing_run() -> None:
        try:
            publish_run(job, tmp_path, make_frame, "new")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    publishing = threading.Thread(target=publishing_run)
    publishing.start()
    assert moving.wait(30)
    other = make_frame("costs", "2024-01-05", "2024-01-06")
    written = SqlSink(engine_for(job.outputs.table.connection), "anomalies").write(
        other, job="costs", dimensions=[], start=START, end=END
    )
    other_written.set()
    publishing.join()
    assert not errors, errors
    assert written == len(other)
    assert run_ids(job) == ({"new"}, {"new"})


def test_a_series_scored_twice_is_refused_and_neither_output_changes(tmp_path, make_frame) -> None:
    # Two staged parts holding the same rows (a part staged again under another name): every
    # output stored each row twice, and readers counted each anomaly twice.
    job = job_config(tmp_path)
    publish_run(job, tmp_path, make_frame, "r1")
    path = tmp_path / "r2.parquet"
    make_frame("sales", "2024-01-05", "2024-01-06", run="r2").to_parquet(path)
    window = Window(START.to_pydatetime(), END.to_pydatetime())
    with pytest.raises(SinkError, match=r"^job 'sales', window .*: 16 of 16 rows share their series, timestamp and feature with another \(first: series 'all', feature 'x' at 2024-01-05 00:00:00\+00:00\).*nothing was written"):
        scoring.publish(job, window, [str(path), str(path)])
    assert run_ids(job) == ({"r1"}, {"r1"})
