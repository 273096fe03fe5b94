"""What differs between SQL dialects: how the window is bound, time zones, failures, credentials.

The behaviour every dialect shares (exact window, bound params, hostile values, failing queries)
runs over SQLite, PostgreSQL, MariaDB, DuckDB and Redshift in test_sql.py.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime

import duckdb
import pandas as pd
import pymssql._mssql
import pytest
import sqlalchemy as sa

from pipelines.db import engine_for
from pipelines.errors import SourceConfigError, SourceError
from pipelines.sources import SqlReader, read_window
from pipelines.sources.base import parse_timestamps
from tests.pipelines.sources.test_sql import END, HOSTILE, START, at, make_table, redshift_url, sql_job

HOURS = [f"2024-01-01 {hour:02d}:00:00" for hour in range(6)]
IN_WINDOW = [START, at("2024-01-01 02:00")]


def closed_port() -> int:
    with socket.socket() as sock:  # nothing listens on it once the socket is closed
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def window_hours(frame: pd.DataFrame) -> list[pd.Timestamp]:
    return list(parse_timestamps(frame["ts"]))


def query(table: str) -> str:
    return f"SELECT ts, host, value FROM {table} WHERE ts >= :start AND ts < :end ORDER BY ts"


def test_mariadb_timestamp_columns_are_compared_in_utc(make_job, mysql_url: str) -> None:
    # The server's zone is +09:00 (tests/conftest.py): TIMESTAMP columns convert in the session's
    # zone, so naive bounds in a session left at +09:00 would select rows nine hours off.
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(sa.text("SET time_zone = '+00:00'"))
        conn.execute(sa.text("CREATE TABLE stamped (ts TIMESTAMP(6) NULL, host VARCHAR(20), value DOUBLE)"))
        conn.execute(sa.text("INSERT INTO stamped VALUES (:ts, 'a', 1.0)"), [{"ts": hour} for hour in HOURS])
    engine.dispose()

    frame = read_window(sql_job(make_job, mysql_url, query("stamped")), START, END)

    assert window_hours(frame) == IN_WINDOW


def test_duckdb_timestamptz_columns_are_exact(make_job, tmp_path) -> None:
    path = tmp_path / "stamped.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        conn.execute("CREATE TABLE stamped (ts TIMESTAMPTZ, host VARCHAR, value DOUBLE)")
        conn.executemany("INSERT INTO stamped VALUES (CAST(? AS TIMESTAMPTZ), 'a', 1.0)", [[h + "+00"] for h in HOURS])

    frame = read_window(sql_job(make_job, f"duckdb:///{path}", query("stamped")), START, END)

    assert window_hours(frame) == IN_WINDOW


@pytest.mark.postgres
def test_redshift_sends_the_bounds_with_their_offset(make_job, hourly, postgres_url: str) -> None:
    """Through the Redshift dialect on the PostgreSQL server (no Redshift cluster can run here)."""
    table = make_table(postgres_url, hourly, aware=True)
    # Tokyo is UTC+9: a bound sent without its offset would be read as Tokyo time.
    url = redshift_url(postgres_url) + "&options=-c%20timezone%3DAsia/Tokyo"

    frame = read_window(sql_job(make_job, url, query(table.name)), START, END)

    assert engine_for(sql_job(make_job, url, query(table.name)).source.connection).dialect.name == "redshift"
    assert window_hours(frame) == [START, START, at("2024-01-01 02:00")]


def test_mssql_binds_the_window_and_params_as_parameters(make_job) -> None:
    """No SQL Server can run here: the statement is compiled by the mssql+pymssql dialect and its
    parameters substituted by pymssql's own client-side quoting, which is what the driver sends."""
    url = "mssql://reader:S3cr3t-pw@127.0.0.1:1433/metrics"
    job = sql_job(make_job, url, "SELECT ts, host, value FROM metrics WHERE ts >= :start AND ts < :end AND host = :host",
                  host=HOSTILE)
    dialect = engine_for(job.source.connection).dialect

    statement, params = SqlReader(job).statement(dialect.name, START, None)
    compiled = statement.compile(dialect=dialect)
    bound = compiled.construct_params(params)
    sent = pymssql._mssql.substitute_params(str(compiled), bound).decode()

    assert str(compiled).endswith("WHERE ts >= %(start)s AND ts < %(end)s AND host = %(host)s")
    assert bound == {"start": datetime(2024, 1, 1, 1), "end": datetime.max, "host": HOSTILE}
    assert sent.endswith(
        "WHERE ts >= '2024-01-01 01:00:00.000' AND ts < '9999-12-31 23:59:59.999' AND host = N'x''; DROP TABLE metrics; --'"
    )


@pytest.mark.parametrize(
    ("url", "driver_says"),
    [
        ("mysql+pymysql://reader:S3cr3t-pw@127.0.0.1:{port}/anomalies", "Can't connect to MySQL server"),
        ("mssql://reader:S3cr3t-pw@127.0.0.1:{port}/anomalies", "Connection refused"),
        ("redshift://reader:S3cr3t-pw@127.0.0.1:{port}/anomalies?sslmode=disable", "Connection refused"),
        ("postgresql://reader:S3cr3t-pw@127.0.0.1:{port}/anomalies", "Connection refused"),
    ],
    ids=["mariadb", "mssql", "redshift", "postgres"],
)
def test_unreachable_database_names_job_source_and_window(make_job, caplog, url: str, driver_says: str) -> None:
    port = closed_port()
    job = sql_job(make_job, url.format(port=port), "SELECT 1 WHERE :start < :end")

    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as caught:
        read_window(job, START, END)

    message = str(caught.value)
    assert message.startswith(f"job 'cpu_load': cannot read sql source ({url.split(':')[0]}://reader:***@127.0.0.1:{port}/")
    assert "for window [2024-01-01T01:00:00+00:00, 2024-01-01T03:00:00+00:00): cannot connect to the database (" in message
    assert driver_says in message and "Check that the database is running" in message
    assert_never_shown("S3cr3t-pw", caught.value, caplog)


def test_wrong_password_names_the_user_never_the_password(make_job, caplog, mysql_url: str) -> None:
    url = sa.make_url(mysql_url).set(password="Wrong-pw-123").render_as_string(hide_password=False)
    job = sql_job(make_job, url, query("anything"))

    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError, match="cannot connect to the database") as caught:
        read_window(job, START, END)

    assert "Access denied for user 'reader'@'localhost'" in str(caught.value)
    assert_never_shown("Wrong-pw-123", caught.value, caplog)


@pytest.fixture(scope="module")
def postgres_password_url(postgres_url: str) -> str:
    """A PostgreSQL user that must give its password; everyone else keeps the cluster's trust.

    The cluster of tests/conftest.py trusts every local connection, so its pg_hba.conf gets one
    rule in front, for this user only, written by the server itself (it owns the file).
    """
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = 'pw_reader'")).first():
            conn.execute(sa.text("CREATE ROLE pw_reader LOGIN PASSWORD 'Pg-pass-4-tests'"))
        # Relative to the server's data directory, its working directory: other pytest sessions may
        # make the absolute path unreachable for the postgres user (they reset pytest-of-<user> to 0700).
        hba = os.path.relpath(*conn.execute(sa.text("SELECT current_setting('hba_file'), current_setting('data_directory')")).one())
        rules = conn.execute(sa.text("SELECT pg_read_file(:path)"), {"path": hba}).scalar_one()
        if "pw_reader" not in rules:
            rules = f"host all pw_reader 127.0.0.1/32 scram-sha-256\n{rules}"
            large_object = conn.execute(
                sa.text("SELECT lo_from_bytea(0, convert_to(:rules, 'UTF8'))"), {"rules": rules}
            ).scalar_one()
            conn.execute(sa.text("SELECT lo_export(:oid, :path), lo_unlink(:oid)"), {"oid": large_object, "path": hba})
            conn.execute(sa.text("SELECT pg_reload_conf()"))
    engine.dispose()
    url = sa.make_url(postgres_url).set(username="pw_reader", password="Pg-pass-4-tests")
    wrong = sa.create_engine(url.set(password="not-it"), poolclass=sa.NullPool)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server reloads its rules on a signal, not at once
        try:
            wrong.connect().close()
        except sa.exc.OperationalError:
            return url.render_as_string(hide_password=False)
        time.sleep(0.1)
    pytest.fail("PostgreSQL did not start asking pw_reader for its password")


@pytest.mark.postgres
def test_postgres_wrong_password_names_the_user_never_the_password(make_job, caplog, postgres_password_url) -> None:
    right = sql_job(make_job, postgres_password_url, "SELECT 1 AS value WHERE :start < :end")
    assert read_window(right, START, END)["value"].tolist() == [1]  # the password is really checked
    url = sa.make_url(postgres_password_url).set(password="Wrong-pw-321").render_as_string(hide_password=False)

    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError, match="cannot connect to the database") as caught:
        read_window(sql_job(make_job, url, "SELECT 1 AS value WHERE :start < :end"), START, END)

    assert 'password authentication failed for user "pw_reader"' in str(caught.value)
    assert_never_shown("Wrong-pw-321", caught.value, caplog)
    assert_never_shown("Pg-pass-4-tests", caught.value, caplog)


def airflow_job(make_job, monkeypatch, mysql_url: str, *, password: str, port: int | None = None):
    """A job reading MariaDB through the Airflow connection ``anomaly_secret`` (JSON env var form)."""
    server = sa.make_url(mysql_url)
    fields = {"conn_type": "mysql", "host": server.host, "port": port or server.port, "login": server.username,
              "password": password, "schema": server.database}
    monkeypatch.setenv("AIRFLOW_CONN_ANOMALY_SECRET", json.dumps(fields))
    query = "SELECT 1 AS value FROM DUAL WHERE :start < :end"
    return make_job({"kind": "sql", "connection": {"conn_id": "anomaly_secret"}, "query": query})


def test_airflow_connection_reads_without_showing_its_password(make_job, caplog, capfd, monkeypatch, mysql_url) -> None:
    password = sa.make_url(mysql_url).password or ""
    job = airflow_job(make_job, monkeypatch, mysql_url, password=password)

    with caplog.at_level(logging.DEBUG):
        frame = read_window(job, START, END)

    assert frame["value"].tolist() == [1]
    assert job.source.describe() == "sql source (Airflow connection 'anomaly_secret')"
    assert_never_shown(password, None, caplog, capfd)


@pytest.mark.parametrize("failure", ["wrong-password", "unreachable-host"])
def test_airflow_connection_that_fails_never_shows_its_password(make_job, caplog, capfd, monkeypatch, mysql_url, failure):
    password = "Wrong-pw-456" if failure == "wrong-password" else sa.make_url(mysql_url).password or ""
    port = closed_port() if failure == "unreachable-host" else None
    job = airflow_job(make_job, monkeypatch, mysql_url, password=password, port=port)

    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as caught:
        read_window(job, START, END)

    assert str(caught.value).startswith(
        "job 'cpu_load': cannot read sql source (Airflow connection 'anomaly_secret') for window "
        "[2024-01-01T01:00:00+00:00, 2024-01-01T03:00:00+00:00): cannot connect to the database ("
    )
    assert_never_shown(password, caught.value, caplog, capfd)


def assert_never_shown(
    secret: str,
    error: BaseException | None,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str] | None = None,
) -> None:
    """``secret`` is in no message of ``error``'s chain, in no log record, and (with ``capfd``) in
    nothing written to stdout or stderr, where Airflow's own structlog loggers write."""
    seen = error
    while seen is not None:
        assert secret not in str(seen)
        seen = seen.__cause__ or seen.__context__
    assert caplog.records  # the logs were captured: the check below looked at something
    for record in caplog.records:
        assert secret not in record.getMessage() and secret not in (record.exc_text or "")
    if capfd is not None:
        assert secret not in "".join(capfd.readouterr())


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql", "redshift"])
def test_postgres_timestamp_without_zone_in_a_local_session_is_refused(make_job, postgres_url: str, dialect: str) -> None:
    # A timestamp column is compared with the aware bounds in the session's zone: stored in UTC, the
    # window [01:00Z, 03:00Z) read 02:00 and 03:00 in Paris, silently.
    engine = sa.create_engine(postgres_url)
    name = f"naive_{dialect}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (ts timestamp, host text, value float)"))
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (:ts, 'a', 1.0)"), [{"ts": hour} for hour in HOURS])
    engine.dispose()
    url = redshift_url(postgres_url) + "&" if dialect == "redshift" else postgres_url + "?"

    paris = sql_job(make_job, url + "options=-c%20timezone%3DEurope/Paris", query(name))
    with pytest.raises(SourceConfigError, match=r"^job 'cpu_load': cannot read sql source \(.*\) for window \[2024-01-01T01:00") as caught:
        read_window(paris, START, END)
    message = str(caught.value)
    assert "column 'ts' is a timestamp without time zone, which the database compares with the window's UTC bounds in " \
        "the session's time zone, Europe/Paris" in message
    assert "Add ?options=-c%20timezone%3DUTC to the URL" in message

    for zone in ("UTC", "Etc/UTC"):
        utc = sql_job(make_job, url + f"options=-c%20timezone%3D{zone}", query(name))
        assert window_hours(read_window(utc, START, END)) == IN_WINDOW


def test_mariadb_varchar_timestamps_that_do_not_sort_with_the_bounds_are_refused(make_job, mysql_url: str) -> None:
    # A VARCHAR is compared as text with the bound's literal: '2024-01-01T00:00:00Z' >= '2024-01-01 01:00:00',
    # so the start's day was read whole and the rows of the end's day before the end were missed.
    days = [f"2024-01-0{day}T{hour:02d}:00:00Z" for day in (1, 2) for hour in range(24)]
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE iso_text (ts VARCHAR(40), host VARCHAR(20), value DOUBLE)"))
        conn.execute(sa.text("INSERT INTO iso_text VALUES (:ts, 'a', 1.0)"), [{"ts": ts} for ts in days])
    engine.dispose()

    with pytest.raises(SourceConfigError, match=r"^job 'cpu_load': cannot read sql source \(.*\) for window \[2024-01-01T01:00") as caught:
        read_window(sql_job(make_job, mysql_url, query("iso_text")), START, at("2024-01-02 03:00"))
    message = str(caught.value)
    assert "column 'ts' holds text such as '2024-01-01T00:00:00Z', which the query compares as text with the window's " \
        "bounds ('2024-01-01 01:00:00', '2024-01-02 03:00:00')" in message
    assert "Compare CAST(ts AS DATETIME(6)) with :start and :end" in message

    cast = "SELECT ts, host, value FROM iso_text WHERE CAST(ts AS DATETIME(6)) >= :start AND CAST(ts AS DATETIME(6)) < :end ORDER BY ts"
    hours = window_hours(read_window(sql_job(make_job, mysql_url, cast), START, at("2024-01-02 03:00")))
    assert (len(hours), hours[0], hours[-1]) == (26, START, at("2024-01-02 02:00"))
