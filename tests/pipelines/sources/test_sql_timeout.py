"""A SQL source's query is bounded in time on real PostgreSQL and MariaDB servers."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from pipelines.config import SqlConnection
from pipelines.db import engine_for
from pipelines.errors import SourceError
from pipelines.sources import read_window
from pipelines.sources import sql as sql_source
from tests.pipelines.sources.test_sql import END, START, make_table, sql_job

#: The session's limit, read inside the query as its host column (the job keeps only its own columns).
SETTING = {"postgres": "current_setting('statement_timeout')", "mariadb": "CAST(@@max_statement_time AS CHAR)"}
SLEEP = {"postgres": "pg_sleep(30) IS NOT NULL", "mariadb": "SLEEP(30) = 0"}
#: Where the URL sets its own limit (the server's unit: milliseconds, seconds).
OWN_LIMIT = {"postgres": "?options=-c%20statement_timeout%3D{seconds}s", "mariadb": "?init_command=SET%20max_statement_time%3D{seconds}"}

servers = pytest.mark.parametrize("server", [pytest.param("postgres", marks=pytest.mark.postgres), "mariadb"])


def url_of(request: pytest.FixtureRequest, server: str) -> str:
    return request.getfixturevalue("postgres_url" if server == "postgres" else "mysql_url")


def setting_query(server: str, name: str) -> str:
    return f"SELECT ts, {SETTING[server]} AS host, value FROM {name} WHERE ts >= :start AND ts < :end ORDER BY ts"


@servers
def test_a_query_that_runs_for_ever_is_stopped_naming_the_job_and_the_source_and_how_to_raise_the_limit(
    server, request, make_job, hourly, monkeypatch
) -> None:
    # Unbounded, a query that never ended held the run, and the job's only active run, for ever.
    monkeypatch.setattr(sql_source, "STATEMENT_TIMEOUT_SECONDS", 0.5, raising=False)
    url = url_of(request, server)
    table = make_table(url, hourly, aware=server == "postgres")
    query = f"SELECT note, ts, host, value FROM {table.name} WHERE {SLEEP[server]} AND ts >= :start AND ts < :end"
    began = time.monotonic()
    with pytest.raises(SourceError) as caught:
        read_window(sql_job(make_job, url, query), START, END)
    assert time.monotonic() - began < 15
    message = str(caught.value)
    assert message.startswith("job 'cpu_load': cannot read sql source (")
    assert "the query ran longer than the source's statement timeout of 0.5 s" in message
    raise_it = OWN_LIMIT[server].split("{")[0]
    assert f"add {raise_it}" in message, message
    assert session_limit(url) in ("0", "0.000000")  # the pooled session got its own limit back


def session_limit(url: str) -> str:
    """The limit of a session of the engine the reader used, as the output table's writes get one from its pool."""
    server = "postgres" if url.startswith("postgresql") else "mariadb"
    with engine_for(SqlConnection(url=url)).connect() as conn:
        return str(conn.execute(sa.text(f"SELECT {SETTING[server]}")).scalar())


@servers
def test_the_default_limit_holds_only_during_the_read_and_a_limit_of_the_url_is_kept(server, request, make_job, hourly) -> None:
    url = url_of(request, server)
    table = make_table(url, hourly, aware=server == "postgres")
    frame = read_window(sql_job(make_job, url, setting_query(server, table.name)), START, END)
    assert set(frame["host"]) == {"1h" if server == "postgres" else "3600.000000"}
    assert session_limit(url) in ("0", "0.000000")

    own = url + OWN_LIMIT[server].format(seconds=0)  # no limit: the URL's word over the default
    frame = read_window(sql_job(make_job, own, setting_query(server, table.name)), START, END)
    assert set(frame["host"]) == {"0" if server == "postgres" else "0.000000"}


@pytest.mark.postgres
def test_a_query_of_several_statements_is_limited_too(request, make_job, hourly) -> None:
    # Not streamed through a cursor: read again after a rollback, which must not end the limit.
    url = request.getfixturevalue("postgres_url")
    table = make_table(url, hourly, aware=True)
    query = "SET LOCAL work_mem = '8MB'; " + setting_query("postgres", table.name)
    frame = read_window(sql_job(make_job, url, query), START, END)
    assert set(frame["host"]) == {"1h"}
    assert session_limit(url) == "0"
