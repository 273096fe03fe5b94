"""Writes of bad or unusual frames, hand-made tables and killed writers, against the real databases."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.errors import SinkError
from pipelines.sinks import ParquetSink, SqlSink

REPO = Path(__file__).resolve().parents[3]
WINDOW = {"start": pd.Timestamp("2024-01-05", tz="UTC"), "end": pd.Timestamp("2024-01-06", tz="UTC")}


def expected(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["series", "timestamp", "feature"], ignore_index=True)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'out.db'}" if request.param == "sqlite" else request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def sinks(url: str, tmp_path: Path) -> Iterator[list[SqlSink | ParquetSink]]:
    engine = sa.create_engine(url)
    yield [SqlSink(engine, f"anomalies_{uuid.uuid4().hex[:8]}"), ParquetSink(str(tmp_path / "outputs"))]
    engine.dispose()


@pytest.fixture
def local_sinks(tmp_path: Path) -> Iterator[list[SqlSink | ParquetSink]]:
    """Both sinks, for the checks of the frame that every sink runs before it writes anything."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'out.db'}")
    yield [SqlSink(engine, "anomalies"), ParquetSink(str(tmp_path / "outputs"))]
    engine.dispose()


@pytest.mark.mysql
def test_a_value_longer_than_a_hand_made_column_is_refused_without_strict_mode(mysql_url: str, make_frame) -> None:
    # Without STRICT_*_TABLES in sql_mode, MariaDB cut "region=europe-west-1a" and "...-1b" to the
    # 20 characters of a VARCHAR(20) with only a warning: two series were stored as one.
    engine = sa.create_engine(mysql_url)

    @sa.event.listens_for(engine, "connect")
    def lenient(dbapi_connection, record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION sql_mode = ''")

    sink = SqlSink(engine, f"anomalies_{uuid.uuid4().hex[:8]}")
    old = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    try:
        sink.write(old, job="sales", dimensions=["region"], **WINDOW)
        with engine.begin() as conn:  # as a DBA would narrow it
            conn.exec_driver_sql(f"ALTER TABLE {sink.table} MODIFY series VARCHAR(20) NOT NULL")
        new = make_frame("sales", "2024-01-05", "2024-01-06", run="r2", dimensions=("region",))
        new["region"] = new["region"].map({"a": "europe-west-1a", "b": "europe-west-1b"}).astype("string")
        new["series"] = ("region=" + new["region"]).astype("string")
        with pytest.raises(SinkError, match=r"job 'sales' for \[2024-01-05.*Data too long for column 'series'.*rolled back"):
            sink.write(new, job="sales", dimensions=["region"], **WINDOW)
        pd.testing.assert_frame_equal(sink.read(job="sales"), expected(old))
        # The session's own mode is given back with the pooled connection.
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT @@SESSION.sql_mode")).scalar_one() == ""
    finally:
        engine.dispose()


@pytest.mark.parametrize("column", ["timestamp", "interval_start", "scored_at"])
@pytest.mark.parametrize("as_objects", [False, True])
def test_times_without_a_zone_are_refused_naming_the_column(local_sinks, make_frame, column: str, as_objects: bool) -> None:
    # They were taken as UTC: 01:00 in Europe/Berlin was stored as 01:00 UTC, an hour off.
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    frame[column] = frame[column].dt.tz_convert("Europe/Berlin").dt.tz_localize(None)
    if as_objects:
        frame[column] = frame[column].astype(object)
    for sink in local_sinks:
        message = rf"job 'sales', window .*: 8 of 8 rows have a {column} without a time zone .*series 'all'.*nothing was written"
        with pytest.raises(SinkError, match=message):
            sink.write(frame, job="sales", dimensions=[], **WINDOW)


@pytest.mark.parametrize("flag", [float("nan"), None, "False"])
def test_an_is_anomaly_that_is_not_true_or_false_is_refused(local_sinks, make_frame, flag) -> None:
    # bool(NaN) and bool("False") are True: the row was stored as an anomaly nobody found.
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    frame["is_anomaly"] = frame["is_anomaly"].astype(object)
    frame.loc[1, "is_anomaly"] = flag
    for sink in local_sinks:
        with pytest.raises(SinkError, match=r"1 of 8 rows have an is_anomaly that is not True or False .*feature 'y'"):
            sink.write(frame, job="sales", dimensions=[], **WINDOW)
        frame.loc[1, "is_anomaly"] = 0  # 0 and 1 are flags
        sink.write(frame, job="sales", dimensions=[], **WINDOW)
        assert sink.read(job="sales")["is_anomaly"].tolist() == [i % 3 == 0 for i in range(8)]
        frame.loc[1, "is_anomaly"] = flag


def test_a_rerun_without_a_series_removes_its_rows_of_the_window(sinks, make_frame) -> None:
    # The series is gone from the source: the window is replaced whole, not merged.
    frame = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    for sink in sinks:
        sink.write(frame, job="sales", dimensions=["region"], **WINDOW)
        sink.write(frame[frame["region"] == "a"], job="sales", dimensions=["region"], **WINDOW)
        pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame[frame["region"] == "a"]))


#: A write of ``sys.argv[3]`` that stops for good inside its third INSERT, after touching ``marker``.
_KILLED_WRITE = """
import pathlib, sys, time
import pandas as pd, sqlalchemy as sa
from pipelines.sinks import SqlSink, sql

url, table, frame, marker = sys.argv[1:5]
sql.BATCH_ROWS = 10
engine = sa.create_engine(url)
inserts = []

def stall(conn, cursor, statement, parameters, context, executemany):
    if statement.startswith("INSERT"):
        inserts.append(statement)
        if len(inserts) == 3:
            pathlib.Path(marker).write_text("inserting")
            time.sleep(600)

sa.event.listen(engine, "before_cursor_execute", stall)
window = {"start": pd.Timestamp("2024-01-05", tz="UTC"), "end": pd.Timestamp("2024-01-06", tz="UTC")}
SqlSink(engine, table).write(pd.read_parquet(frame), job="sales", dimensions=[], **window)
"""


def test_a_writer_killed_between_inserts_leaves_one_copy(url: str, tmp_path: Path, make_frame) -> None:
    engine = sa.create_engine(url)
    sink = SqlSink(engine, f"anomalies_{uuid.uuid4().hex[:8]}")
    old = make_frame("sales", "2024-01-05", "2024-01-06", run="old", freq="1h")
    sink.write(old, job="sales", dimensions=[], **WINDOW)
    make_frame("sales", "2024-01-05", "2024-01-06", run="killed", freq="1h").to_parquet(tmp_path / "new.parquet")
    marker = tmp_path / "stalled"
    arguments = [url, sink.table, str(tmp_path / "new.parquet"), str(marker)]
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITE, *arguments], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, f"the writer ended (exit code {child.returncode}) before its third insert"
            assert time.monotonic() < deadline, "the writer did not reach its third insert in 120 s"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    try:
        pd.testing.assert_frame_equal(sink.read(job="sales"), expected(old))
        # Its lock (advisory, named or SQLite's) went with it: the rerun neither waits nor duplicates.
        rerun = make_frame("sales", "2024-01-05", "2024-01-06", run="rerun", freq="1h")
        sink.write(rerun, job="sales", dimensions=[], **WINDOW)
        pd.testing.assert_frame_equal(sink.read(job="sales"), expected(rerun))
    finally:
        engine.dispose()


def _in_zone(engine: sa.Engine, zone: str) -> sa.Engine:
    """``engine`` whose sessions start in ``zone``, as a server's default zone would have them."""

    @sa.event.listens_for(engine, "connect")
    def set_zone(dbapi_connection, record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET TIME ZONE '{zone}'" if engine.dialect.name == "postgresql" else f"SET time_zone = '{zone}'")
        cursor.close()

    return engine


@pytest.mark.parametrize(
    ("server", "column", "zones"),
    [
        # A DBA's TIMESTAMPTZ, sessions in the server's zone: the UTC hours 01:00 and 02:00 of the
        # day Berlin skips 02:00-03:00 local were both stored as 03:00 local (a row lost, one twice).
        pytest.param("postgres", "TIMESTAMPTZ", ("Europe/Berlin", "Europe/Berlin"), marks=pytest.mark.postgres),
        # The rerun in another session zone than the first write (an Airflow worker and a CLI
        # with another default): its DELETE missed the rows of the first, which stayed twice.
        pytest.param("postgres", "TIMESTAMPTZ", ("Asia/Tokyo", "UTC"), marks=pytest.mark.postgres),
        pytest.param("mysql", "TIMESTAMP(6)", ("+09:00", "+00:00"), marks=pytest.mark.mysql),
    ],
)
def test_a_zoned_time_column_made_by_hand_keeps_utc_times(request, make_frame, server: str, column: str, zones) -> None:
    url = request.getfixturevalue(f"{server}_url")
    first, rerun = (_in_zone(sa.create_engine(url), zone) for zone in zones)
    table = f"anomalies_{uuid.uuid4().hex[:8]}"
    window = {"job": "sales", "dimensions": [], "start": pd.Timestamp("2024-03-31", tz="UTC"), "end": pd.Timestamp("2024-04-01", tz="UTC")}
    frame = make_frame("sales", "2024-03-31", "2024-04-01", freq="1h")
    try:
        SqlSink(first, table).write(frame, **window)
        with first.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM {table}")
            alter = "ALTER COLUMN timestamp TYPE" if server == "postgres" else "MODIFY timestamp"
            conn.exec_driver_sql(f"ALTER TABLE {table} {alter} {column}")
        SqlSink(first, table).write(frame, **window)
        pd.testing.assert_frame_equal(SqlSink(first, table).read(job="sales"), expected(frame))
        SqlSink(rerun, table).write(frame, **window)
        pd.testing.assert_frame_equal(SqlSink(rerun, table).read(job="sales"), expected(frame))
        with rerun.connect() as conn:  # the session's own zone is given back with the pooled connection
            shown = "SHOW TIME ZONE" if server == "postgres" else "SELECT @@SESSION.time_zone"
            assert conn.execute(sa.text(shown)).scalar_one() == zones[1]
    finally:
        first.dispose()
        rerun.dispose()
