from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.errors import SinkError
from pipelines.sinks import SqlSink, sql


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def expected(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames).sort_values(["series", "timestamp", "feature"], ignore_index=True)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]
)
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path / 'out.db'}" if request.param == "sqlite" else request.getfixturevalue(f"{request.param}_url")
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def sink(engine: sa.Engine) -> SqlSink:
    # The PostgreSQL and MariaDB databases live for the whole session: each test gets its own table.
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


def test_times_keep_their_microseconds(sink: SqlSink, make_frame) -> None:
    frame = make_frame("sales", "2024-01-05", "2024-01-06", freq="1h")
    frame["timestamp"] += pd.Timedelta(microseconds=123_456)
    frame["scored_at"] = at("2024-06-01 10:11:12.654321")
    sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))


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


@pytest.mark.parametrize(
    ("server", "isolation"),
    [
        ("sqlite", None),
        pytest.param("postgres", None, marks=pytest.mark.postgres),
        pytest.param("mysql", None, marks=pytest.mark.mysql),
        # The first write of a window under another isolation level. READ COMMITTED: InnoDB's
        # DELETE locked nothing. REPEATABLE READ: PostgreSQL's snapshot, taken before the advisory
        # lock was granted, did not show the other writer's rows. Both writers' rows stayed.
        pytest.param("postgres", "READ COMMITTED", marks=pytest.mark.postgres),
        pytest.param("mysql", "READ COMMITTED", marks=pytest.mark.mysql),
        pytest.param("postgres", "REPEATABLE READ", marks=pytest.mark.postgres),
        pytest.param("mysql", "REPEATABLE READ", marks=pytest.mark.mysql),
    ],
)
def test_overlapping_writes_of_one_window_leave_one_copy(
    server: str, isolation: str | None, request, tmp_path, monkeypatch, make_frame
) -> None:
    # A CLI predict during a scheduled publish, or a retry while the first attempt still runs:
    # writer B starts while writer A has deleted the window but not yet inserted.
    url = f"sqlite:///{tmp_path / 'out.db'}" if server == "sqlite" else request.getfixturevalue(f"{server}_url")
    table = f"anomalies_{uuid.uuid4().hex[:8]}"
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05"), "end": at("2024-01-06")}
    engines = {name: sa.create_engine(url, **({"isolation_level": isolation} if isolation else {})) for name in ("setup", "A", "B")}
    if isolation:  # the table exists, with rows of another window
        other = {**window, "start": at("2024-01-07"), "end": at("2024-01-08")}
        SqlSink(engines["setup"], table).write(make_frame("sales", "2024-01-07", "2024-01-08", run="old"), **other)
    else:
        SqlSink(engines["setup"], table).write(make_frame("sales", "2024-01-05", "2024-01-06", run="old"), **window)
    # A MySQL/MariaDB lock left held by A's or B's pooled connection would fail the write below.
    monkeypatch.setattr(sql, "_NAMED_LOCK_SECONDS", 5)
    a_between, b_in_transaction = threading.Event(), threading.Event()

    def hold_a_before_its_insert(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("INSERT") and not a_between.is_set():
            a_between.set()
            # Long enough for B's next statement to reach the server (and, unfixed, its DELETE to run).
            assert b_in_transaction.wait(timeout=30)
            time.sleep(0.5)

    def note_b(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith(("DELETE", "SELECT pg_advisory_xact_lock", "SELECT GET_LOCK")):
            b_in_transaction.set()

    sa.event.listen(engines["A"], "before_cursor_execute", hold_a_before_its_insert)
    sa.event.listen(engines["B"], "before_cursor_execute", note_b)

    def write(name: str) -> int:
        return SqlSink(engines[name], table).write(make_frame("sales", "2024-01-05", "2024-01-06", run=name), **window)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(write, "A")
            assert a_between.wait(timeout=30)
            second = pool.submit(write, "B")
            assert first.result(timeout=60) == second.result(timeout=60) == 8
        rows = SqlSink(engines["setup"], table).read(job="sales", start=window["start"], end=window["end"])
        SqlSink(engines["setup"], table).write(make_frame("sales", "2024-01-05", "2024-01-06", run="after"), **window)
    finally:
        for engine in engines.values():
            engine.dispose()

    assert len(rows) == 8 and not rows.duplicated(["job", "series", "timestamp", "feature"]).any()
    assert set(rows["run_id"]) == {"B"}  # B waited for A's commit, then replaced A's rows


@pytest.mark.postgres
def test_writes_of_other_jobs_do_not_wait(postgres_url: str, make_frame) -> None:
    engine = sa.create_engine(postgres_url)
    sink = SqlSink(engine, f"anomalies_{uuid.uuid4().hex[:8]}")
    window = {"dimensions": [], "start": at("2024-01-05"), "end": at("2024-01-06")}
    try:
        with sink.replacing(make_frame("sales", "2024-01-05", "2024-01-06"), job="sales", **window):
            # Inside sales' open transaction: a write of costs (another connection) goes through.
            with ThreadPoolExecutor(max_workers=1) as pool:
                costs = make_frame("costs", "2024-01-05", "2024-01-06")
                assert pool.submit(sink.write, costs, job="costs", **window).result(timeout=10) == 8
        assert len(sink.read(job="sales")) == len(sink.read(job="costs")) == 8
    finally:
        engine.dispose()


def test_error_inside_replacing_rolls_the_table_back(sink: SqlSink, make_frame, monkeypatch) -> None:
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05"), "end": at("2024-01-06")}
    old = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    sink.write(old, **window)
    with pytest.raises(OSError, match="parquet failed"):
        with sink.replacing(make_frame("sales", "2024-01-05", "2024-01-06", run="r2"), **window) as rows:
            assert rows == 8
            raise OSError("parquet failed")
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(old))
    # Another process's write does not wait for a lock (MySQL/MariaDB's named lock is the session's).
    monkeypatch.setattr(sql, "_NAMED_LOCK_SECONDS", 5)
    other = sa.create_engine(sink.engine.url)
    try:
        SqlSink(other, sink.table).write(old, **window)
    finally:
        other.dispose()


@pytest.mark.parametrize("first, second", [("Region", "region"), ("region", "REGION")])
def test_sqlite_dimension_differing_only_in_case_reuses_the_column(tmp_path, make_frame, first, second) -> None:
    # SQLite column names ignore case: adding "region" next to "Region" failed every write.
    sink = SqlSink(sa.create_engine(f"sqlite:///{tmp_path / 'out.db'}"), "anomalies")
    window = {"start": at("2024-01-05"), "end": at("2024-01-06")}
    costs = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=(first,))
    sales = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=(second,))
    sink.write(costs, job="costs", dimensions=[first], **window)
    assert sink.write(sales, job="sales", dimensions=[second], **window) == 16

    assert [c["name"] for c in sa.inspect(sink.engine).get_columns("anomalies")][-1:] == [first]
    pd.testing.assert_frame_equal(sink.read(job="costs"), expected(costs))
    # The rows come back under the table's spelling of the column.
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(sales).rename(columns={second: first}))


@pytest.mark.postgres
def test_postgres_dimensions_differing_in_case_are_two_columns(postgres_url: str, make_frame) -> None:
    # SQLAlchemy quotes a name with capitals, so PostgreSQL keeps "Region" apart from region.
    engine = sa.create_engine(postgres_url)
    sink = SqlSink(engine, f"anomalies_{uuid.uuid4().hex[:8]}")
    window = {"start": at("2024-01-05"), "end": at("2024-01-06")}
    costs = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=("Region",))
    sales = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    try:
        sink.write(costs, job="costs", dimensions=["Region"], **window)
        sink.write(sales, job="sales", dimensions=["region"], **window)
        assert [c["name"] for c in sa.inspect(engine).get_columns(sink.table)][-2:] == ["Region", "region"]
        pd.testing.assert_frame_equal(sink.read(job="sales"), expected(sales))
        pd.testing.assert_frame_equal(sink.read(job="costs"), expected(costs))
    finally:
        engine.dispose()


@pytest.mark.parametrize("server", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
@pytest.mark.parametrize("change", ["CREATE TABLE", "ALTER TABLE"])
def test_two_jobs_preparing_the_table_at_once_both_write(server: str, change: str, request, tmp_path, make_frame) -> None:
    # Jobs publishing at the same hour: both saw no table (or no column host) and both created
    # it; the second failed ("table already exists", "duplicate column name"). PostgreSQL's
    # preparers take turns (an advisory lock), so they never both look first.
    url = f"sqlite:///{tmp_path / 'out.db'}" if server == "sqlite" else request.getfixturevalue("mysql_url")
    table = f"anomalies_{uuid.uuid4().hex[:8]}"
    window = {"start": at("2024-01-05"), "end": at("2024-01-06")}
    engines = [sa.create_engine(url) for _ in range(3)]
    if change == "ALTER TABLE":
        SqlSink(engines[2], table).write(make_frame("setup", "2024-01-05", "2024-01-06"), job="setup", dimensions=[], **window)
    both_looked, waited = threading.Barrier(2, timeout=10), set()

    def change_after_both_looked(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().startswith(change) and threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            both_looked.wait()

    def write(index: int, job: str) -> int:
        frame = make_frame(job, "2024-01-05", "2024-01-06", dimensions=("host",))
        return SqlSink(engines[index], table).write(frame, job=job, dimensions=["host"], **window)

    for engine in engines[:2]:
        sa.event.listen(engine, "before_cursor_execute", change_after_both_looked)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            written = [pool.submit(write, index, job) for index, job in enumerate(["costs", "sales"])]
            assert [future.result(timeout=60) for future in written] == [16, 16]
        assert len(waited) == 2  # both had looked before either changed the table
        assert len(SqlSink(engines[2], table).read(job="sales")) == 16
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.mysql
def test_writers_of_two_jobs_that_deadlock_both_write(mysql_url: str, make_frame, caplog) -> None:
    # First writes of two jobs: both window DELETEs lock the gap before the same next row (a
    # third job's), then A's INSERT waits for B's queued lock while B waits for A: InnoDB
    # rolled B back, and its publish failed with "Deadlock found when trying to get lock".
    table = f"anomalies_{uuid.uuid4().hex[:8]}"
    window = {"dimensions": [], "start": at("2024-01-05"), "end": at("2024-01-06")}
    engines = {name: sa.create_engine(mysql_url) for name in ("setup", "A", "B")}
    SqlSink(engines["setup"], table).write(make_frame("setup", "2024-01-05", "2024-01-06"), job="setup", **window)
    a_between, b_deleting = threading.Event(), threading.Event()

    def hold_a_before_its_insert(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("INSERT") and not a_between.is_set():
            a_between.set()
            assert b_deleting.wait(timeout=30)
            time.sleep(0.5)  # B's DELETE is queued behind A's lock

    def note_b(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("DELETE"):
            b_deleting.set()

    sa.event.listen(engines["A"], "before_cursor_execute", hold_a_before_its_insert)
    sa.event.listen(engines["B"], "before_cursor_execute", note_b)

    def write(name: str, job: str) -> int:
        return SqlSink(engines[name], table).write(make_frame(job, "2024-01-05", "2024-01-06", run=name), job=job, **window)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(write, "A", "costs")
            assert a_between.wait(timeout=30)
            second = pool.submit(write, "B", "sales")
            assert first.result(timeout=60) == second.result(timeout=60) == 8
        setup = SqlSink(engines["setup"], table)
        assert [set(setup.read(job=job)["run_id"]) for job in ("costs", "sales")] == [{"A"}, {"B"}]
    finally:
        for engine in engines.values():
            engine.dispose()
    assert "deadlock with another writer (attempt 1 of 5), writing again" in caplog.text


@pytest.mark.parametrize("values", [("東京", "Zürich 🚀"), ("a'b;--", 'c"d\\')])
def test_dimension_values_in_any_script(sink: SqlSink, make_frame, values) -> None:
    # MariaDB's databases default to latin1 (before 11.6; the test server's does): 東京 failed
    # every write with "Incorrect string value" until the table was created as utf8mb4.
    frame = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    frame["region"] = frame["region"].map(dict(zip(["a", "b"], values, strict=True))).astype("string")
    sink.write(frame, job="sales", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06"))
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))


def test_duckdb_table_takes_every_write(tmp_path, make_frame) -> None:
    # duckdb-engine cannot reflect columns under SQLAlchemy 2.1 (it queries pg_collation): every
    # write after the one that created the table failed, and so did every read.
    sink = SqlSink(sa.create_engine(f"duckdb:///{tmp_path / 'out.duckdb'}"), "anomalies")
    window = {"start": at("2024-01-05"), "end": at("2024-01-06")}
    sales = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    costs = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=("region",))
    try:
        sink.write(sales, job="sales", dimensions=[], **window)
        sink.write(costs, job="costs", dimensions=["region"], **window)
        sales = make_frame("sales", "2024-01-05", "2024-01-06", run="r2")
        sink.write(sales, job="sales", dimensions=[], **window)
        pd.testing.assert_frame_equal(sink.read(job="sales"), expected(sales))
        pd.testing.assert_frame_equal(sink.read(job="costs"), expected(costs))
    finally:
        sink.engine.dispose()


def test_infinite_bounds_are_stored_where_the_database_can(sink: SqlSink, make_frame) -> None:
    # An unbounded side of the expected range is ±inf. MySQL/MariaDB have no infinity ("inf can
    # not be used with MySQL" failed the whole write): the value is stored as NULL there.
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    frame["lower"], frame["upper"] = float("-inf"), float("inf")
    frame.loc[0, "score"] = float("inf")

    sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    rows = sink.read(job="sales")
    if sink.engine.dialect.name in ("mysql", "mariadb"):
        frame[["lower", "upper"]] = float("nan")
        frame.loc[0, "score"] = float("nan")
    pd.testing.assert_frame_equal(rows, expected(frame))


def test_series_differing_in_case_or_accents_stay_apart_in_the_table(sink: SqlSink, make_frame) -> None:
    # MySQL/MariaDB's default collations ignore case and accents: a query on the table made
    # "region=EU" one series with "region=eu" (and "Koln" with "Köln"), and a write of job "Sales"
    # replaced the window of job "sales". New tables are created utf8mb4_bin.
    window = {"start": at("2024-01-05"), "end": at("2024-01-06")}
    one = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    one = one[one["series"] == "region=a"]  # one series per region: a key may appear once in a write
    frame = pd.concat([one.assign(region=value) for value in ("EU", "eu", "Koln", "Köln")], ignore_index=True)
    frame["region"] = frame["region"].astype("string")
    frame["series"] = ("region=" + frame["region"]).astype("string")
    sink.write(frame, job="sales", dimensions=["region"], **window)
    upper = make_frame("Sales", "2024-01-05", "2024-01-06")
    sink.write(upper, job="Sales", dimensions=[], **window)

    with sink.engine.connect() as conn:
        groups = conn.execute(sa.text(f"SELECT region, count(*) FROM {sink.table} WHERE job = 'sales' GROUP BY region")).all()
        eu = conn.execute(sa.text(f"SELECT count(*) FROM {sink.table} WHERE series = 'region=eu'")).scalar_one()
    assert sorted(groups) == [("EU", 8), ("Koln", 8), ("Köln", 8), ("eu", 8)]
    assert eu == 8
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))
    pd.testing.assert_frame_equal(sink.read(job="Sales"), expected(upper))


def test_series_differing_in_trailing_spaces_stay_apart_in_the_table(sink: SqlSink, make_frame) -> None:
    # MySQL/MariaDB's utf8mb4_bin pads the shorter text with spaces before comparing (PAD SPACE):
    # a query on the table grouped "region=EU" with "region=EU " and a WHERE on one returned
    # both, while the pipeline keeps them as two series. New tables are created NO PAD.
    window = {"start": at("2024-01-05"), "end": at("2024-01-06")}
    one = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    one = one[one["series"] == "region=a"]
    frame = pd.concat([one.assign(region=value) for value in ("EU", "EU ", "EU  ")], ignore_index=True)
    frame["region"] = frame["region"].astype("string")
    frame["series"] = ("region=" + frame["region"]).astype("string")
    sink.write(frame, job="sales", dimensions=["region"], **window)

    with sink.engine.connect() as conn:
        groups = conn.execute(sa.text(f"SELECT region, count(*) FROM {sink.table} GROUP BY region")).all()
        eu = conn.execute(sa.text(f"SELECT count(*) FROM {sink.table} WHERE series = 'region=EU'")).scalar_one()
    assert sorted(groups) == [("EU", 8), ("EU ", 8), ("EU  ", 8)]
    assert eu == 8
    sink.write(frame[frame["region"] != "EU "], job="sales", dimensions=["region"], **window)
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame[frame["region"] != "EU "]))


@pytest.mark.mysql
def test_case_insensitive_table_of_an_older_version_says_how_to_convert_it(mysql_url: str, make_frame, caplog) -> None:
    engine = sa.create_engine(mysql_url)
    sink = SqlSink(engine, f"anomalies_{uuid.uuid4().hex[:8]}")
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05"), "end": at("2024-01-06")}
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    try:
        sink.write(frame, **window)
        assert "compare text ignoring case" not in caplog.text
        with engine.begin() as conn:  # as tables were created before
            conn.execute(sa.text(f"ALTER TABLE {sink.table} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"))
        sink.write(frame, **window)
        assert f"table {sink.table}: columns feature, job, model, model_version, run_id, series compare text" in caplog.text
        command = caplog.text.split("with: ")[1].splitlines()[0]
        assert command == f"ALTER TABLE {sink.table} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"  # MariaDB

        caplog.clear()
        with engine.begin() as conn:
            conn.execute(sa.text(command))
        sink.write(frame, **window)
        assert "compare text ignoring case" not in caplog.text
        pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))
    finally:
        engine.dispose()


@pytest.mark.parametrize("dimension", ["share%", "a :b"])
def test_dimension_added_to_a_table_keeps_its_name(sink: SqlSink, make_frame, dimension: str) -> None:
    # The column was added through sa.text, which doubles "%" for psycopg2 and PyMySQL (the table
    # got a column "share%%" and every write of the job failed: "Unknown column 'share%'") and
    # reads ":b" as a bound parameter (on every database: "A value is required for bind parameter").
    window = {"start": at("2024-01-05"), "end": at("2024-01-06")}
    sink.write(make_frame("costs", "2024-01-05", "2024-01-06"), job="costs", dimensions=[], **window)
    frame = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=(dimension,))
    for _ in range(2):
        assert sink.write(frame, job="sales", dimensions=[dimension], **window) == 16

    assert [c["name"] for c in sa.inspect(sink.engine).get_columns(sink.table)][-1] == dimension
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))


@pytest.mark.postgres
def test_postgres_refuses_a_dimension_name_it_would_cut(postgres_url: str, make_frame) -> None:
    # PostgreSQL cuts a column name to 63 bytes: the first write created the cut column, and
    # every later one failed adding the full name ("already exists").
    engine = sa.create_engine(postgres_url)
    sink = SqlSink(engine, f"anomalies_{uuid.uuid4().hex[:8]}")
    window = {"start": at("2024-01-05"), "end": at("2024-01-06")}
    fits, too_long = "é" * 31 + "x", "é" * 32  # 63 and 64 bytes in UTF-8
    try:
        frame = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=(fits,))
        for _ in range(2):
            sink.write(frame, job="costs", dimensions=[fits], **window)
        frame = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=(too_long,))
        message = rf"job 'sales'.*dimension '{too_long}' has a name of 64 bytes .* at most 63 .* shorter name"
        with pytest.raises(SinkError, match=message):
            sink.write(frame, job="sales", dimensions=[too_long], **window)
        assert [c["name"] for c in sa.inspect(engine).get_columns(sink.table)][-1] == fits
    finally:
        engine.dispose()
