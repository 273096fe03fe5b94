from __future__ import annotations

import re
import socket
import tracemalloc
import uuid
from dataclasses import dataclass

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.config import JobConfig, SqlConnection
from pipelines.errors import ConfigError, SourceConfigError, SourceError
from pipelines.sources import read_window
from pipelines.sources.base import parse_timestamps

HOSTILE = "x'; DROP TABLE metrics; --"


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


START, END = at("2024-01-01 01:00"), at("2024-01-01 03:00")


@dataclass(frozen=True)
class Table:
    url: str
    name: str

    def count(self) -> int:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as connection:
                return connection.execute(sa.text(f"SELECT count(*) FROM {self.name}")).scalar_one()
        finally:
            engine.dispose()


def make_table(url: str, hourly: pd.DataFrame, *, aware: bool) -> Table:
    """``hourly`` written by pandas, plus a row whose host is an injection attempt."""
    times = pd.to_datetime(hourly["ts"])
    rows = hourly.assign(ts=times.dt.tz_localize("UTC") if aware else times)
    rows.loc[len(rows)] = ["hostile", rows["ts"].iloc[1], HOSTILE, 9.0]
    name = f"metrics_{uuid.uuid4().hex[:8]}"  # the PostgreSQL database lives for the whole session
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        rows.to_sql(name, connection, index=False)
    engine.dispose()
    return Table(url, name)


def redshift_url(postgres_url: str) -> str:
    """The PostgreSQL server through the Redshift dialect (sqlalchemy-redshift speaks its protocol).

    No Redshift cluster can run here; the test server has no TLS, which Redshift's dialect
    requires by default.
    """
    return postgres_url.replace("postgresql+psycopg2://", "redshift+psycopg2://") + "?sslmode=disable"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        "mariadb",
        "duckdb",
        pytest.param("redshift", marks=pytest.mark.postgres),
    ]
)
def table(request: pytest.FixtureRequest, tmp_path, hourly: pd.DataFrame) -> Table:
    """The same rows in each dialect's natural type, all in UTC: text in SQLite, timestamptz in
    PostgreSQL, DATETIME in MariaDB, TIMESTAMP in DuckDB and in Redshift (written through
    PostgreSQL, read through the Redshift dialect)."""
    if request.param == "sqlite":
        return make_table(f"sqlite:///{tmp_path / 'metrics.db'}", hourly, aware=False)
    if request.param == "postgres":
        return make_table(request.getfixturevalue("postgres_url"), hourly, aware=True)
    if request.param == "mariadb":
        return make_table(request.getfixturevalue("mysql_url"), hourly, aware=False)
    if request.param == "duckdb":
        return make_table(f"duckdb:///{tmp_path / 'metrics.duckdb'}", hourly, aware=False)
    postgres_url = request.getfixturevalue("postgres_url")
    return Table(redshift_url(postgres_url), make_table(postgres_url, hourly, aware=False).name)


def sql_job(make_job, url: str, query: str, **params):
    job = make_job({"kind": "sql", "connection": {"url": "sqlite://" if holds_password(url) else url}, "query": query, "params": params})
    return with_url(job, url) if holds_password(url) else job


def holds_password(url: str) -> bool:
    return bool(sa.make_url(url).password)


def with_url(job: JobConfig, url: str) -> JobConfig:
    """``job`` reading ``url``, given in code: a job file may not hold a password (MariaDB's, SQL
    Server's), and the reader's messages are to show it masked."""
    return job.model_copy(update={"source": job.source.model_copy(update={"connection": SqlConnection(url=url)})})


def window_query(table: Table, extra: str = "") -> str:
    where = f"ts >= :start AND ts < :end {extra}"
    return f"SELECT note, ts, host, value FROM {table.name} WHERE {where} ORDER BY ts, host"


def frame_hours(frame: pd.DataFrame) -> list[str]:
    return [ts.strftime("%H:%M") for ts in parse_timestamps(frame["ts"])]


def test_sqlite_compares_the_bounds_with_the_text_pandas_stores(make_job, hourly, tmp_path) -> None:
    table = make_table(f"sqlite:///{tmp_path / 'metrics.db'}", hourly, aware=False)
    engine = sa.create_engine(table.url)
    with engine.connect() as connection:
        stored = connection.execute(sa.text(f"SELECT ts FROM {table.name} ORDER BY ts LIMIT 1")).scalar_one()
    engine.dispose()
    assert stored == "2024-01-01 00:00:00.000000"

    frame = read_window(sql_job(make_job, table.url, window_query(table)), at("2024-01-01 00:00"), START)

    assert frame["ts"].tolist() == ["2024-01-01 00:00:00.000000"]  # raw, as stored


@pytest.mark.parametrize(
    ("stored", "offset"),
    [
        ("%Y-%m-%d %H:%M:%S", "0s"),  # SQLite's own datetime() and CURRENT_TIMESTAMP
        ("%Y-%m-%d %H:%M", "0s"),
        ("%Y-%m-%d %H:%M:%S.%f", "0s"),  # pandas and SQLAlchemy
        ("%Y-%m-%d %H:%M:%S", "30min 15s"),  # bounds with minutes and seconds
    ],
)
def test_sqlite_window_is_exact_whatever_the_precision_of_the_stored_text(make_job, tmp_path, stored, offset) -> None:
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    engine = sa.create_engine(url)
    times = pd.date_range("2024-01-01 00:00", periods=6, freq="h") + pd.Timedelta(offset)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE m (ts TEXT, host TEXT, value REAL)"))
        connection.execute(
            sa.text("INSERT INTO m VALUES (:ts, 'a', :value)"),
            [{"ts": t.strftime(stored), "value": float(i)} for i, t in enumerate(times)],
        )
    engine.dispose()

    job = sql_job(make_job, url, "SELECT ts, host, value FROM m WHERE ts >= :start AND ts < :end")
    frame = read_window(job, at(times[2]), at(times[4]))

    # The row exactly at the start is in, the one exactly at the end out.
    assert frame["value"].tolist() == [2.0, 3.0]


@pytest.mark.parametrize(
    ("column", "stored", "where"),
    [
        ("INTEGER", lambda t: int(t.timestamp()), "ts >= unixepoch(:start) AND ts < unixepoch(:end)"),
        ("INTEGER", lambda t: int(t.timestamp()), "ts >= CAST(strftime('%s', :start) AS INTEGER) AND ts < CAST(strftime('%s', :end) AS INTEGER)"),
        ("TEXT", lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"), "datetime(ts) >= datetime(:start) AND datetime(ts) < datetime(:end)"),
    ],
    ids=["epoch-unixepoch", "epoch-strftime", "iso-text-through-datetime"],
)
def test_sqlite_bounds_are_time_strings_that_sqlites_date_functions_read(make_job, tmp_path, column, stored, where) -> None:
    # A bound on the hour was bound as '2024-01-01 01', which SQLite's date functions read as NULL:
    # every hourly window of epoch integers or ISO text with a T was empty.
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    engine = sa.create_engine(url)
    times = pd.date_range("2024-01-01 00:00", periods=6, freq="h", tz="UTC")
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE TABLE m (ts {column}, host TEXT, value REAL)"))
        connection.execute(
            sa.text("INSERT INTO m VALUES (:ts, 'a', :value)"), [{"ts": stored(t), "value": float(i)} for i, t in enumerate(times)]
        )
    engine.dispose()
    read_as = "datetime(ts, 'unixepoch')" if column == "INTEGER" else "datetime(ts)"
    job = sql_job(make_job, url, f"SELECT {read_as} AS ts, host, value FROM m WHERE {where}")

    for start, end, expected in [(START, END, [1.0, 2.0]), (at("2024-01-01 00:00"), at("2024-01-01 00:30"), [0.0])]:
        assert read_window(job, start, end)["value"].tolist() == expected


def test_window_is_exact_at_both_bounds(make_job, table: Table) -> None:
    frame = read_window(sql_job(make_job, table.url, window_query(table)), START, END)

    assert list(frame.columns) == ["ts", "host", "value"]
    assert list(parse_timestamps(frame["ts"])) == [START, START, at("2024-01-01 02:00")]
    assert frame["host"].tolist() == ["b", HOSTILE, "a"]


@pytest.mark.postgres
def test_postgres_window_is_exact_whatever_the_session_time_zone(make_job, hourly, postgres_url: str) -> None:
    # Tokyo is UTC+9: a bound sent without its offset would be read as Tokyo time.
    table = make_table(f"{postgres_url}?options=-c%20timezone%3DAsia/Tokyo", hourly, aware=True)

    frame = read_window(sql_job(make_job, table.url, window_query(table)), START, END)

    assert list(parse_timestamps(frame["ts"])) == [START, START, at("2024-01-01 02:00")]


def test_unbounded_window_reads_everything(make_job, table: Table) -> None:
    job = sql_job(make_job, table.url, window_query(table))

    assert len(read_window(job, None, None)) == 7
    assert frame_hours(read_window(job, None, START)) == ["00:00"]
    assert frame_hours(read_window(job, at("2024-01-01 04:00"), None)) == ["04:00", "05:00"]


def test_params_are_bound(make_job, table: Table) -> None:
    query = window_query(table, "AND host = :host AND value >= :least")
    job = sql_job(make_job, table.url, query, host="a", least=2)

    frame = read_window(job, None, None)

    assert frame["host"].tolist() == ["a", "a"] and frame["value"].tolist() == [2.0, 4.0]


def test_hostile_param_is_compared_literally(make_job, table: Table) -> None:
    job = sql_job(make_job, table.url, window_query(table, "AND host = :host"), host=HOSTILE)

    frame = read_window(job, None, None)

    assert frame["host"].tolist() == [HOSTILE] and frame["value"].tolist() == [9.0]
    assert table.count() == 7


def test_empty_window_gives_empty_frame_with_the_columns(make_job, table: Table) -> None:
    frame = read_window(sql_job(make_job, table.url, window_query(table)), at("2025-01-01"), None)

    assert frame.empty and list(frame.columns) == ["ts", "host", "value"]


CHECK_THE_QUERY = "Check the query against the database"


@pytest.mark.parametrize(
    ("query", "reason", "todo"),
    [
        ("SELECT * FROM missing_table WHERE ts >= :start AND ts < :end", "missing_table", CHECK_THE_QUERY),
        ("SELEC ts FROM {table} WHERE ts >= :start AND ts < :end", "syntax", CHECK_THE_QUERY),
        ("SELECT * FROM {table} WHERE ts >= :start AND ts < :end AND host = :host", "host", "Set :host in `params`"),
        # A colon inside a string is a parameter for SQLAlchemy: "set :1 in params" made no sense.
        (
            "SELECT * FROM {table} WHERE ts >= :start AND ts < :end AND note <> '{{\"a\":1}}'",
            "'1'",
            r"if that colon does not start a parameter (it is inside a string or a comment), write it as \:1.",
        ),
    ],
    ids=["table-missing", "syntax", "unset-param", "colon-in-a-string"],
)
def test_failing_query_is_a_source_error_naming_job_source_and_window(
    make_job, table: Table, query: str, reason: str, todo: str
) -> None:
    job = sql_job(make_job, table.url, query.format(table=table.name))

    with pytest.raises(SourceError, match=r"^job 'cpu_load': cannot read sql source \(") as caught:
        read_window(job, START, END)
    message = str(caught.value)
    assert "window [2024-01-01T01:00:00+00:00, 2024-01-01T03:00:00+00:00): the query failed (" in message
    assert reason in message and todo in message
    assert isinstance(caught.value.__cause__, sa.exc.StatementError)


def test_unreachable_database_is_a_source_error_without_the_password(make_job) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg2://reader:s3cr3t@127.0.0.1:{port}/metrics"
    job = sql_job(make_job, url, "SELECT 1 WHERE :start < :end")
    redacted = re.escape(f"postgresql+psycopg2://reader:***@127.0.0.1:{port}/metrics")

    expected = rf"(?s)^job 'cpu_load': cannot read sql source \({redacted}\) for window .*: cannot connect to"
    with pytest.raises(SourceError, match=expected + r".*Check that the database is running") as caught:
        read_window(job, START, END)
    assert "s3cr3t" not in str(caught.value) and "s3cr3t" not in str(caught.value.__cause__)


def test_url_from_the_environment(make_job, table: Table, monkeypatch) -> None:
    monkeypatch.setenv("METRICS_DB_URL", table.url)
    job = make_job({"kind": "sql", "connection": {"url_env": "METRICS_DB_URL"}, "query": window_query(table)})

    assert len(read_window(job, START, END)) == 3


def test_url_env_not_set_is_a_config_error(make_job, monkeypatch) -> None:
    monkeypatch.delenv("METRICS_DB_URL", raising=False)
    source = {"kind": "sql", "connection": {"url_env": "METRICS_DB_URL"}, "query": "SELECT :start < :end"}
    job = make_job(source)

    with pytest.raises(ConfigError, match="environment variable METRICS_DB_URL is not set"):
        read_window(job, START, END)


@pytest.mark.parametrize(
    ("connection", "problem"),
    [
        ({"url_env": "METRICS_DB_URL"}, "environment variable METRICS_DB_URL is not set: export it with the database URL"),
        ({"url": "postgresqlx://db/x"}, "SQLAlchemy has no dialect 'postgresqlx'; check the start of the URL"),
        ({"conn_id": "anomaly_missing"}, "Airflow connection 'anomaly_missing' does not exist: create it"),
    ],
    ids=["url-env-not-set", "unknown-dialect", "unknown-conn-id"],
)
def test_a_connection_that_makes_no_engine_names_the_job_and_window(make_job, monkeypatch, connection, problem) -> None:
    # The message named neither the job nor the window whose run failed.
    monkeypatch.delenv("METRICS_DB_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_ANOMALY_MISSING", raising=False)
    job = make_job({"kind": "sql", "connection": connection, "query": "SELECT :start < :end"})

    with pytest.raises(SourceConfigError) as caught:
        read_window(job, START, END)
    message = str(caught.value)
    assert message.startswith(
        f"job 'cpu_load': cannot read {job.source.describe()} for window [2024-01-01T01:00:00+00:00, 2024-01-01T03:00:00+00:00): {problem}"
    )
    assert message.endswith(". Nothing was read: fix that, then re-run the window.")


def test_params_may_not_replace_the_window(make_job) -> None:
    # Refused by the configuration, as for BigQuery and Python sources: validate-config passed and
    # every run failed at read time.
    with pytest.raises(ConfigError, match=r"source.sql.params: must not set \['end', 'start'\]: :start and :end"):
        sql_job(make_job, "sqlite://", "SELECT 1 WHERE :start < :end", start="2020-01-01", end="2021-01-01")


# Columns whose dtype, read three rows at a time, differs from chunk to chunk: all NULL in one
# chunk (object) and numbers, text or timestamps in the others; ints in one chunk and ints with
# NULLs (float64) in another; booleans with and without NULLs; NUMERIC (Decimal); timestamps.
TRICKY_TYPES = {
    # dialect: (timestamp, boolean, numeric) column types
    "sqlite": ("TEXT", "BOOLEAN", "NUMERIC(10, 2)"),
    "postgres": ("TIMESTAMPTZ", "BOOLEAN", "NUMERIC(10, 2)"),
    "mariadb": ("DATETIME(6)", "BOOLEAN", "DECIMAL(10, 2)"),
    "duckdb": ("TIMESTAMPTZ", "BOOLEAN", "DECIMAL(10, 2)"),
}
TRICKY_ROWS = [
    # ts, host, value (int), sparse (float), flag, amount, note
    (None, None, 1, None, True, "1.50", None),
    (None, None, 2, None, False, "2.25", None),
    (None, None, 3, None, True, None, None),
    ("2024-03-30 12:00:00", "a", None, 1.5, None, None, "x"),
    ("2024-03-30 13:00:00", "b", 5, None, None, None, None),
    ("2024-03-30 14:00:00", None, 6, 2.0, None, None, "y"),
    # Summer time from here in Europe/Paris (the PostgreSQL session's zone below): +02:00, not +01:00.
    ("2024-04-02 12:00:00", "a", 7, 3.25, True, "7.00", "z"),
    ("2024-04-02 13:00:00", "b", 8, 4.0, False, "8.10", "w"),
    ("2024-04-02 14:00:00", "a", 9, 5.0, True, "9.99", "v"),
    (None, None, None, None, None, None, None),
    (None, None, None, None, None, None, None),
    (None, None, None, None, None, None, None),
]


def tricky_table(request: pytest.FixtureRequest, tmp_path, dialect: str) -> Table:
    url = {
        "sqlite": lambda: f"sqlite:///{tmp_path / 'tricky.db'}",
        # A zone with summer time: each chunk has one offset, the whole window two (object in pandas).
        "postgres": lambda: f"{request.getfixturevalue('postgres_url')}?options=-c%20timezone%3DEurope/Paris",
        "mariadb": lambda: request.getfixturevalue("mysql_url"),
        "duckdb": lambda: f"duckdb:///{tmp_path / 'tricky.duckdb'}",
    }[dialect]()
    stamp, boolean, numeric = TRICKY_TYPES[dialect]
    name = f"tricky_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            f"CREATE TABLE {name} (id INTEGER, ts {stamp}, host VARCHAR(10), value INTEGER, sparse DOUBLE PRECISION, "
            f"flag {boolean}, amount {numeric}, note VARCHAR(10))"
        ))
        # TIMESTAMPTZ from UTC text; DATETIME and SQLite's TEXT take the text as it is.
        stamped, utc = ("CAST(:ts AS TIMESTAMPTZ)", "+00") if stamp == "TIMESTAMPTZ" else (":ts", "")
        fields = ["ts", "host", "value", "sparse", "flag", "amount", "note"]
        rows = [dict(zip(fields, row), id=i) for i, row in enumerate(TRICKY_ROWS)]
        connection.execute(
            sa.text(f"INSERT INTO {name} VALUES (:id, {stamped}, :host, :value, :sparse, :flag, :amount, :note)"),
            [row | {"ts": row["ts"] and row["ts"] + utc} for row in rows],
        )
    engine.dispose()
    return Table(url, name)


@pytest.mark.parametrize(
    "dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "mariadb", "duckdb"]
)
def test_read_in_chunks_gives_the_frame_of_one_read(request, tmp_path, monkeypatch, dialect: str) -> None:
    """Chunks whose dtypes disagree give, together, the dtypes and values of one ``pd.read_sql``."""
    from pipelines.config import parse_job
    from pipelines.sources import SqlReader, sql

    table = tricky_table(request, tmp_path, dialect)
    query = f"SELECT ts, host, value, sparse, flag, amount, note FROM {table.name} WHERE :start < :end ORDER BY id"
    job = with_url(parse_job({
        "name": "tricky", "source": {"kind": "sql", "connection": {"url": "sqlite://"}, "query": query},
        "timestamp": "ts", "frequency": "1h", "dimensions": ["host", "note", "flag"],
        "features": ["value", "sparse", "amount"], "model": {"kind": "iforest"},
    }), table.url)
    engine = sa.create_engine(table.url)
    with engine.connect() as connection:
        statement, params = SqlReader(job).statement(engine.dialect.name, None, None)
        one_read = pd.read_sql(statement, connection, params=params)
    engine.dispose()
    converted = []
    convert = sql._convert
    monkeypatch.setattr(sql, "CHUNK_ROWS", 3)
    monkeypatch.setattr(sql, "_convert", lambda rows, columns: converted.append(len(rows)) or convert(rows, columns))

    frame = read_window(job, None, None)

    assert converted[:4] == [3, 3, 3, 3]  # really read in chunks (then columns whose chunks disagree)
    pd.testing.assert_frame_equal(frame, one_read[frame.columns], check_exact=True)
    assert list(frame.columns) == ["ts", "host", "note", "flag", "value", "sparse", "amount"]
    for column in frame.columns:  # the same Python objects where the column holds objects
        assert list(map(type, frame[column])) == list(map(type, one_read[column])), column


@pytest.mark.parametrize("zone", ["UTC", "+02:00"])
def test_assembled_aware_timestamps_take_one_copy_of_the_column(zone: str) -> None:
    # pd.to_datetime(utc=True) copied the assembled column, through another copy: a window's
    # timestamps took three times their memory at once (2M rows from PostgreSQL: 130 MiB of RSS
    # added for a 58 MiB frame).
    from pipelines.sources import sql

    part = pd.Series(pd.date_range("2024-01-01", periods=50_000, freq="s", tz=zone, unit="us"))
    chunks = [[part.copy()] for _ in range(20)]
    tracemalloc.start()
    try:
        frame = sql._assemble(chunks, ["ts"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    assert frame["ts"].iloc[-1] == part.iloc[-1]
    assert peak < 1.5 * 20 * part.nbytes


@pytest.mark.postgres
def test_postgres_query_of_several_statements_is_read(make_job, postgres_url: str) -> None:
    # psycopg2 streams through DECLARE ... CURSOR FOR <query>, which refuses these; pd.read_sql ran them.
    job = sql_job(make_job, postgres_url, "SET LOCAL statement_timeout = 60000; SELECT 1 AS value WHERE :start < :end")

    assert read_window(job, START, END)["value"].tolist() == [1]


@pytest.mark.postgres
def test_postgres_failing_query_is_named_as_written_not_as_a_cursor(make_job, postgres_url: str) -> None:
    job = sql_job(make_job, postgres_url, "SELEC 1 AS value WHERE :start < :end")

    with pytest.raises(SourceError, match=r'the query failed \(syntax error at or near "SELEC"') as caught:
        read_window(job, START, END)
    assert "CURSOR WITHOUT HOLD" not in str(caught.value)  # psycopg2 wraps it in "DECLARE ... CURSOR WITHOUT HOLD FOR"


@pytest.mark.postgres
@pytest.mark.parametrize(("stored", "rows"), [("20240-01-01", 1), ("0044-03-15 BC", 1), ("20240-01-01", 3)])
def test_postgres_timestamp_python_cannot_hold_is_named_with_its_rows(make_job, postgres_url: str, monkeypatch, stored, rows) -> None:
    # PostgreSQL holds years past 9999 and BC; psycopg2 failed converting one with a bare
    # "ValueError: year 20240 is out of range", naming no job, window nor row.
    from pipelines.errors import SourceDataError
    from pipelines.sources import sql

    monkeypatch.setattr(sql, "CHUNK_ROWS", 3)
    query = (
        f"SELECT CASE WHEN x = {rows + 1} THEN TIMESTAMPTZ '{stored}' ELSE TIMESTAMPTZ '2024-01-01' + x * INTERVAL '1 hour' END AS ts, "
        "'a' AS host, 1.0 AS value FROM generate_series(1, 9) AS x WHERE :start < :end ORDER BY x"
    )
    first = rows + 1 if rows % 3 == 0 else 1  # the bad row is the first of the second chunk, or in the first

    with pytest.raises(SourceDataError, match=(
        rf"^job 'cpu_load': cannot read sql source .* for window .*: rows {first} to {first + 2} of the query's result hold a value "
        r"that the driver cannot convert to Python \(year -?\d+ is out of range; .*\)\. Find the row \(for a timestamp: WHERE ts < "
    )):
        read_window(sql_job(make_job, postgres_url, query), START, END)


@pytest.mark.postgres
def test_failure_in_a_later_chunk_is_a_source_error(make_job, postgres_url: str, monkeypatch) -> None:
    from pipelines.sources import sql

    monkeypatch.setattr(sql, "CHUNK_ROWS", 3)  # the fourth row fails, in the second fetch
    query = "SELECT 1 / (x - 4) AS value FROM generate_series(1, 9) AS x WHERE :start < :end"

    with pytest.raises(SourceError, match=r"^job 'cpu_load': cannot read sql source .*the query failed \(division by zero\)"):
        read_window(sql_job(make_job, postgres_url, query), START, END)


def test_a_missing_database_file_is_named_and_not_created(make_job, tmp_path) -> None:
    # SQLite creates a missing file on connect: a mistyped path read as an empty new database,
    # failed with "no such table" and left the empty file behind.
    missing = tmp_path / "typo" / "metrics.db"
    job = sql_job(make_job, f"sqlite:///{missing}", "SELECT ts, host, value FROM metrics WHERE ts >= :start AND ts < :end")
    with pytest.raises(SourceError, match=rf"the database file {re.escape(str(missing))} does not exist\. Check the path"):
        read_window(job, START, END)
    assert not missing.exists()


def test_a_job_column_returned_twice_is_named_with_what_to_do(make_job, table: Table) -> None:
    # A join's a.*, b.* gives its key twice: extract then failed with "'DataFrame' object has no
    # attribute 'dtype'", naming neither the job nor the column.
    query = f"SELECT m.*, m.ts, m.host, m.note FROM {table.name} m WHERE ts >= :start AND ts < :end"

    with pytest.raises(SourceConfigError, match=r"^job 'cpu_load': cannot read sql source \(.*\) for window \[2024-01-01T01:00:00") as caught:
        read_window(sql_job(make_job, table.url, query), START, END)
    message = str(caught.value)
    assert "the query returned more than one column named 'host', 'ts'. Select each of the job's columns once" in message
    assert "'note'" not in message  # not a job column: read and dropped as before


@pytest.mark.postgres
def test_a_column_whose_case_the_database_folded_is_named_with_what_to_do(make_job, postgres_url: str) -> None:
    # PostgreSQL returns ``AS Value`` as "value": validation then said the job's 'Value' was
    # misspelt, though the query spells it so.
    source = {"kind": "sql", "connection": {"url": postgres_url}, "query": "SELECT now() AS ts, 'a' AS host, 1.5 AS Value WHERE :start < :end"}
    job = make_job(source).model_copy(update={"features": ["Value"]})

    with pytest.raises(SourceConfigError, match=r"^job 'cpu_load': cannot read sql source \(.*\) for window \[2024-01-01T01:00") as caught:
        read_window(job, START, END)
    message = str(caught.value)
    assert "the query returned column 'value' where the job names 'Value', and column names are compared exactly" in message
    assert 'Quote the name in the query to keep its case (AS "Value"' in message
    quoted = make_job({**source, "query": source["query"].replace("AS Value", 'AS "Value"')}).model_copy(update={"features": ["Value"]})
    assert read_window(quoted, START, END)["Value"].tolist() == [1.5]


@pytest.mark.parametrize(
    ("stored", "where", "start", "end", "refused"),
    [
        ("%Y-%m-%dT%H:%M:%SZ", "ts >= :start AND ts < :end", START, at("2024-01-02 03:00"), "'2024-01-01T00:00:00Z'"),
        ("%Y-%m-%dT%H:%M:%SZ", "m.ts >= :start AND :end > m.ts", START, at("2024-01-02 03:00"), "'2024-01-01T00:00:00Z'"),
        ("%Y-%m-%d %H:%M:%S+01:00", "ts >= :start AND ts < :end", START, at("2024-01-02 03:00"), "'2024-01-01 01:00:00+01:00'"),
        # A date alone sorts before a T as before a space: a daily window compares right.
        ("%Y-%m-%dT%H:%M:%SZ", "ts >= :start AND ts < :end", at("2024-01-01"), at("2024-01-02"), None),
        ("%Y-%m-%dT%H:%M:%SZ", "datetime(ts) >= datetime(:start) AND datetime(ts) < datetime(:end)", START, at("2024-01-02 03:00"), None),
        ("%Y-%m-%d %H:%M:%S+00:00", "ts >= :start AND ts < :end", START, at("2024-01-02 03:00"), None),
        ("%Y-%m-%dT%H:%M:%S+01:00", "ts >= :start AND ts < :end", None, None, None),  # a whole read compares right
    ],
    ids=["t", "t-qualified-reversed", "offset", "t-daily-window", "t-through-datetime", "utc-offset", "t-offset-unbounded"],
)
def test_sqlite_text_that_does_not_sort_with_the_bounds_is_refused(make_job, tmp_path, stored, where, start, end, refused) -> None:
    # Compared as text, '2024-01-02T02:00:00Z' < '2024-01-02 03:00' is false: the rows of the end's
    # day before the end were missed silently, and those of the start's day before it read.
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    engine = sa.create_engine(url)
    times = pd.date_range("2024-01-01", periods=48, freq="h")
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE m (ts TEXT, host TEXT, value REAL)"))
        connection.execute(sa.text("INSERT INTO m VALUES (:ts, 'a', 1.0)"), [{"ts": t.strftime(stored)} for t in times])
    engine.dispose()
    job = sql_job(make_job, url, f"SELECT ts, host, value FROM m WHERE {where}")

    if refused is None:
        hours = parse_timestamps(read_window(job, start, end)["ts"])
        first, last = parse_timestamps(pd.Series([times[0].strftime(stored), times[-1].strftime(stored)]))
        assert (hours.min(), hours.max() + pd.Timedelta(hours=1)) == (start or first, end or last + pd.Timedelta(hours=1))
        return
    with pytest.raises(SourceConfigError, match=r"^job 'cpu_load': cannot read sql source \(.*\) for window \[2024-01-01T01:00") as caught:
        read_window(job, start, end)
    message = str(caught.value)
    assert f"column 'ts' holds text such as {refused}, which the query compares as text with the window's bounds" in message
    assert "WHERE datetime(ts) >= datetime(:start) AND datetime(ts) < datetime(:end)" in message
