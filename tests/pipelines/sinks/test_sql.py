from __future__ import annotations

import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.errors import SinkError
from pipelines.sinks import SqlSink, sql


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def expected(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames).sort_values(["series", "timestamp", "feature"], ignore_index=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path / 'out.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def sink(engine: sa.Engine) -> SqlSink:
    # The PostgreSQL database lives for the whole session: each test gets its own table.
    return SqlSink(engine, f"anomalies_{uuid.uuid4().hex[:8]}")


def count(sink: SqlSink) -> int:
    with sink.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {sink.table}")).scalar_one()


def test_creates_the_table_with_its_index(sink: SqlSink, make_frame) -> None:
    frame = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    assert sink.write(frame, job="sales", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06")) == 16

    inspector = sa.inspect(sink.engine)
    columns = {c["name"]: c for c in inspector.get_columns(sink.table)}
    assert list(columns)[-1] == "region"
    assert not columns["timestamp"]["nullable"] and columns["region"]["nullable"]
    assert [i["column_names"] for i in inspector.get_indexes(sink.table)] == [["job", "timestamp"]]
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))


def test_same_window_twice_gives_no_duplicates(sink: SqlSink, make_frame) -> None:
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    for _ in range(2):
        sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    assert count(sink) == len(frame) == 8
    rows = sink.read(job="sales")
    assert str(rows["timestamp"].dtype) == "datetime64[us, UTC]"
    pd.testing.assert_frame_equal(rows, expected(frame))


def test_replacing_a_window_keeps_other_windows_and_jobs(sink: SqlSink, make_frame) -> None:
    first = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    other_job = make_frame("costs", "2024-01-05", "2024-01-06", run="r1")
    later = make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="r2")
    sink.write(first, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(other_job, job="costs", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(later, job="sales", dimensions=[], start=at("2024-01-05 12:00"), end=at("2024-01-06 12:00"))

    kept = first[first["timestamp"] < at("2024-01-05 12:00")]
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(kept, later))
    pd.testing.assert_frame_equal(sink.read(job="costs"), expected(other_job))
    window = sink.read(job="sales", start=at("2024-01-05 06:00"), end=at("2024-01-05 18:00"))
    assert list(window["timestamp"].drop_duplicates()) == [at("2024-01-05 06:00"), at("2024-01-05 12:00")]
    assert list(window["run_id"].drop_duplicates()) == ["r1", "r2"]


def test_failure_during_insert_rolls_back(sink: SqlSink, make_frame, monkeypatch) -> None:
    old = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    sink.write(old, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    monkeypatch.setattr(sql, "BATCH_ROWS", 3)
    inserts = []

    def fail_on_second_insert(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("INSERT"):
            inserts.append(statement)
            if len(inserts) == 2:
                raise RuntimeError("connection lost")

    sa.event.listen(sink.engine, "before_cursor_execute", fail_on_second_insert)
    try:
        new = make_frame("sales", "2024-01-05", "2024-01-06", run="r2")
        message = rf"job 'sales' for \[2024-01-05 00:00:00\+00:00, .*{sink.table}.*connection lost.*rolled back"
        with pytest.raises(SinkError, match=message):
            sink.write(new, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    finally:
        sa.event.remove(sink.engine, "before_cursor_execute", fail_on_second_insert)

    assert len(inserts) == 2  # the delete and the first batch had run
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(old))


def test_second_job_adds_its_dimension_columns(sink: SqlSink, make_frame) -> None:
    plain = make_frame("sales", "2024-01-05", "2024-01-06")
    split = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=("region", "host"))
    sink.write(plain, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(split, job="costs", dimensions=["region", "host"], start=at("2024-01-05"), end=at("2024-01-06"))

    columns = [c["name"] for c in sa.inspect(sink.engine).get_columns(sink.table)]
    assert columns[-2:] == ["region", "host"]
    pd.testing.assert_frame_equal(sink.read(job="costs"), expected(split))
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(plain))


def test_read_of_a_missing_table_says_what_to_check(sink: SqlSink) -> None:
    with pytest.raises(SinkError, match=rf"could not read job 'sales' from table '{sink.table}'.*table exists"):
        sink.read(job="sales")


def test_empty_read(sink: SqlSink, make_frame) -> None:
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    rows = sink.read(job="sales", start=at("2024-02-01"))
    assert rows.empty
    assert str(rows["timestamp"].dtype) == "datetime64[us, UTC]"


def test_sqlite_fast_path_stores_what_sqlalchemy_would(tmp_path, make_frame) -> None:
    # SQLite rows are bound as prepared tuples (not through SQLAlchemy's per-value processing):
    # the stored text, NULLs and booleans must be exactly those of a plain Core insert.
    frame = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",), freq="17min")
    frame.loc[frame.index[::5], "is_anomaly"] = True
    frame["scored_at"] = frame["scored_at"] + pd.Timedelta(123456, "us")
    fast = SqlSink(sa.create_engine(f"sqlite:///{tmp_path / 'fast.db'}"), "t")
    fast.write(frame, job="sales", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06"))
    plain = SqlSink(sa.create_engine(f"sqlite:///{tmp_path / 'plain.db'}"), "t")
    table = plain._definition(["region"])
    plain._prepare(table, ["region"])
    with plain.engine.begin() as conn:
        for records in sql._records(frame):
            conn.execute(sa.insert(table), records)
    stored = [pd.read_sql("SELECT * FROM t ORDER BY series, timestamp, feature", s.engine) for s in (fast, plain)]
    assert stored[0]["lower"].isna().all() and stored[0]["is_anomaly"].sum() > 0
    pd.testing.assert_frame_equal(stored[0], stored[1])
