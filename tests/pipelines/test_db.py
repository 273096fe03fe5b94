from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipelines.config import SqlConnection
from pipelines.db import engine_for
from pipelines.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def select_one(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT 1")).scalar_one()


def test_url_makes_the_sqlite_folder_and_reuses_the_engine(tmp_path) -> None:
    connection = SqlConnection(url=f"sqlite:///{tmp_path}/new/folder/out.db")
    engine = engine_for(connection)
    assert select_one(engine) == 1
    assert (tmp_path / "new" / "folder" / "out.db").exists()
    assert engine_for(SqlConnection(url=f"sqlite:///{tmp_path}/new/folder/out.db")) is engine


def test_a_database_folder_that_cannot_be_made_is_a_config_error(tmp_path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    url = f"sqlite:///{tmp_path / 'taken' / 'labels.db'}"
    with pytest.raises(ConfigError, match=r"cannot create the folder of its database file, .*taken \(.*\); create it, or point"):
        engine_for(SqlConnection(url=url))


@pytest.mark.parametrize("scheme", ["sqlite", "duckdb"])
def test_reading_a_missing_database_names_it_and_creates_nothing(tmp_path, scheme: str) -> None:
    # engine_for made the folder of the file, and SqlSink.read's connection the file itself, empty:
    # a mistyped path failed with "anomalies" (the missing table's name) and left both behind.
    from pipelines.errors import SinkError
    from pipelines.sinks import SqlSink

    missing = tmp_path / "typo" / "deeper" / "outputs.db"
    engine = engine_for(SqlConnection(url=f"{scheme}:///{missing}"))
    with pytest.raises(SinkError, match=rf"table 'anomalies': its database file {re.escape(str(missing))} does not exist; check the path"):
        SqlSink(engine, "anomalies").read(job="sales")
    assert list(tmp_path.iterdir()) == []
    # A writer's first connection still makes the folder.
    assert select_one(engine) == 1
    assert missing.exists()


@pytest.mark.parametrize("url", ["sqlite:///var/relative.db", "duckdb:///var/relative.duckdb"])
def test_a_relative_database_file_is_in_the_project(url: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))
    engine = engine_for(SqlConnection(url=url))
    assert select_one(engine) == 1
    assert engine.url.database == f"{tmp_path}/var/{url.rsplit('/', 1)[1]}" and (tmp_path / "var").is_dir()


def test_url_from_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ANOMALY_TEST_DB", f"sqlite:///{tmp_path}/env.db")
    engine = engine_for(SqlConnection(url_env="ANOMALY_TEST_DB"))
    assert select_one(engine) == 1
    assert engine.url.database == f"{tmp_path}/env.db"


def test_missing_environment_variable(monkeypatch) -> None:
    monkeypatch.delenv("ANOMALY_TEST_DB", raising=False)
    with pytest.raises(ConfigError, match="ANOMALY_TEST_DB is not set: export it"):
        engine_for(SqlConnection(url_env="ANOMALY_TEST_DB"))


def test_an_empty_environment_variable_is_told_apart_from_a_missing_one(monkeypatch) -> None:
    monkeypatch.setenv("ANOMALY_TEST_DB", " ")
    with pytest.raises(ConfigError, match="ANOMALY_TEST_DB is set but empty: export it"):
        engine_for(SqlConnection(url_env="ANOMALY_TEST_DB"))


@pytest.mark.postgres
def test_airflow_connection_with_postgres_scheme(postgres_url: str, monkeypatch) -> None:
    # Airflow writes the connection type "postgres", which SQLAlchemy does not know.
    monkeypatch.setenv("AIRFLOW_CONN_ANOMALY_TEST_PG", postgres_url.replace("postgresql+psycopg2://", "postgres://"))
    engine = engine_for(SqlConnection(conn_id="anomaly_test_pg"))
    assert engine.url.drivername == "postgresql+psycopg2"
    assert select_one(engine) == 1


def test_unknown_airflow_connection() -> None:
    with pytest.raises(ConfigError, match="connection 'anomaly_nowhere' does not exist.*AIRFLOW_CONN_ANOMALY_NOWHERE"):
        engine_for(SqlConnection(conn_id="anomaly_nowhere"))


def test_password_is_neither_logged_nor_shown(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("ANOMALY_TEST_DB", "postgresql+psycopg2://user:s3cret@localhost:1/db")
    with caplog.at_level(logging.INFO, logger="pipelines.db"):
        engine_for(SqlConnection(url_env="ANOMALY_TEST_DB"))
    assert "created database engine for postgresql+psycopg2://user:***@localhost:1/db" in caplog.text
    assert "s3cret" not in caplog.text

    with pytest.raises(ConfigError, match=r"postgresqlx://user:\*\*\*@nowhere/db: SQLAlchemy has no dialect") as info:
        engine_for(SqlConnection(url="postgresqlx://user:s3cret@nowhere/db"))
    assert "s3cret" not in str(info.value)
    monkeypatch.setenv("ANOMALY_TEST_DB", "not a url s3cret")
    with pytest.raises(ConfigError, match=r"URL from \$ANOMALY_TEST_DB is not a valid SQLAlchemy URL") as info:
        engine_for(SqlConnection(url_env="ANOMALY_TEST_DB"))
    assert "s3cret" not in str(info.value)


def test_an_at_sign_in_the_password_stays_in_the_password(caplog) -> None:
    # SQLAlchemy ends the password at its first "@": host "cret@localhost" reached DNS and the
    # messages and logs, with the end of the password in it.
    with caplog.at_level(logging.INFO, logger="pipelines.db"):
        engine = engine_for(SqlConnection(url="postgresql://user:s3@cret@localhost:1/db"))
    assert (engine.url.password, engine.url.host, engine.url.port) == ("s3@cret", "localhost", 1)
    assert "postgresql+psycopg2://user:***@localhost:1/db" in caplog.text and "cret" not in caplog.text


def test_a_port_that_is_not_a_number_is_a_config_error() -> None:
    # Was int()'s ValueError, a traceback without the job's URL or what to fix.
    with pytest.raises(ConfigError, match=r"is not a valid SQLAlchemy URL; .*\(the port a number; ") as info:
        engine_for(SqlConnection(url="postgresql://user:s3cret@localhost:54x/db"))
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "drivername"),
    [
        ("postgresql://u:p@db/x", "postgresql+psycopg2"),
        ("mysql://u:p@db/x", "mysql+pymysql"),
        ("mariadb://u:p@db/x", "mariadb+pymysql"),
        ("mssql://u:p@db/x", "mssql+pymssql"),
        ("redshift://u:p@db:5439/x", "redshift+psycopg2"),
        ("mysql+pymysql://u:p@db/x", "mysql+pymysql"),
    ],
)
def test_a_url_naming_only_the_dialect_gets_the_driver_of_its_extra(url: str, drivername: str) -> None:
    # SQLAlchemy's own defaults (psycopg 3, mysqlclient, pyodbc) are not what the extras install.
    assert engine_for(SqlConnection(url=url)).url.drivername == drivername


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://u:s3cret@db/{db}", "psycopg2", "postgres"),
        ("mysql://u:s3cret@db/{db}", "pymysql", "mysql"),
        ("mssql://u:s3cret@db/{db}", "pymssql", "mssql"),
        ("redshift://u:s3cret@db/{db}", "sqlalchemy_redshift", "redshift"),
        ("duckdb:///{tmp}/{db}.duckdb", "duckdb_engine", "duckdb"),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(url, module, extra, tmp_path, monkeypatch) -> None:
    """Stand-in: every driver is installed here, so the test hides one from the import system."""
    monkeypatch.setitem(sys.modules, module, None)
    url = url.format(db=f"missing_{module}", tmp=tmp_path)  # a URL no earlier test made an engine for

    with pytest.raises(ConfigError, match=re.escape(f"pip install -c constraints.txt -e '.[{extra}]' in the anomaly-pipelines repository")) as info:
        engine_for(SqlConnection(url=url))
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        (
            {"conn_type": "postgres", "host": "db", "port": 5432, "login": "u", "password": "pw", "schema": "x"},
            "postgresql+psycopg2://u:pw@db:5432/x",
        ),
        ({"conn_type": "mysql", "host": "db", "login": "u", "schema": "x"}, "mysql+pymysql://u@db/x"),
        ({"conn_type": "mssql", "host": "db", "port": 1433, "schema": "x"}, "mssql+pymssql://db:1433/x"),
        ({"conn_type": "redshift", "host": "db", "port": 5439, "schema": "x"}, "redshift+psycopg2://db:5439/x"),
        ({"conn_type": "sqlite", "host": "/data/metrics.db"}, "sqlite:////data/metrics.db"),
        ({"conn_type": "duckdb", "host": "/data/metrics.duckdb"}, "duckdb:////data/metrics.duckdb"),
        (  # the extra overrides the mapping, and anything else in it is a driver option
            {
                "conn_type": "postgres",
                "host": "db",
                "schema": "x",
                "extra": {"sqlalchemy_scheme": "redshift+psycopg2", "sslmode": "require"},
            },
            "redshift+psycopg2://db/x?sslmode=require",
        ),
        (
            {"conn_type": "generic", "host": "db", "extra": {"sqlalchemy_scheme": "mysql+pymysql",
                                                             "sqlalchemy_query": {"charset": "utf8mb4"}}},
            "mysql+pymysql://db?charset=utf8mb4",
        ),
    ],
    ids=["postgres", "mysql", "mssql", "redshift", "sqlite", "duckdb", "scheme-override", "query"],
)
def test_airflow_connection_types_map_to_sqlalchemy_drivers(connection, expected, tmp_path, monkeypatch) -> None:
    if connection["conn_type"] in ("sqlite", "duckdb"):  # a file this test may create
        connection = {**connection, "host": str(tmp_path) + connection["host"]}
        expected = expected.replace(":////", f":///{tmp_path}/")
    monkeypatch.setenv("AIRFLOW_CONN_ANOMALY_TEST_MAP", json.dumps(connection))

    engine = engine_for(SqlConnection(conn_id="anomaly_test_map"))

    assert engine.url.render_as_string(hide_password=False) == expected


def test_airflow_uri_options_reach_the_driver(monkeypatch) -> None:
    # Airflow turns ?sslmode=... of an AIRFLOW_CONN_ URI into the connection's extra.
    monkeypatch.setenv("AIRFLOW_CONN_ANOMALY_TEST_URI", "postgres://u:p%40ss@db:5432/x?sslmode=require")

    url = engine_for(SqlConnection(conn_id="anomaly_test_uri")).url

    assert (url.drivername, url.password, dict(url.query)) == ("postgresql+psycopg2", "p@ss", {"sslmode": "require"})


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        ({"conn_type": "http", "host": "db"}, r"has type 'http', which is not a SQLAlchemy dialect nor an Airflow type"),
        ({"conn_type": "postgres", "extra": {"sqlalchemy_query": "sslmode=require"}}, "must be an object"),
    ],
    ids=["not-sql", "query-not-an-object"],
)
def test_airflow_connection_that_is_not_a_database_is_a_config_error(connection, message, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ANOMALY_TEST_BAD", json.dumps(connection))

    with pytest.raises(ConfigError, match=rf"^Airflow connection 'anomaly_test_bad'.*{message}.*sqlalchemy_"):
        engine_for(SqlConnection(conn_id="anomaly_test_bad"))


def test_airflow_connection_json_with_a_password_reaches_mariadb(mysql_url: str, monkeypatch) -> None:
    server = sa.make_url(mysql_url)
    monkeypatch.setenv("AIRFLOW_CONN_ANOMALY_TEST_MARIADB", json.dumps(airflow_fields(server, "mysql")))

    engine = engine_for(SqlConnection(conn_id="anomaly_test_mariadb"))

    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user()")).scalar_one() == "reader@127.0.0.1"


def test_airflow_connection_added_with_the_cli(airflow_db, mysql_url: str, postgres_url: str) -> None:
    """Connections added by ``airflow connections add`` live in the metadata database, which tasks
    read through the API server. Here a fresh process reads it with the server's chain of secrets
    backends (``_AIRFLOW_PROCESS_CONTEXT=server``): this test process may have read Airflow's
    configuration before the CLI wrote its Fernet key, and could not decrypt the password."""
    for conn_id, url, conn_type in [("anomaly_cli_mariadb", mysql_url, "mysql"), ("anomaly_cli_pg", postgres_url, "postgres")]:
        fields = {key: value for key, value in airflow_fields(sa.make_url(url), conn_type).items() if value}
        airflow_cli = [sys.executable, "-m", "airflow", "connections", "add", conn_id, "--conn-json", json.dumps(fields)]
        subprocess.run(airflow_cli, check=True, capture_output=True)
    script = """if True:
        import sqlalchemy as sa
        from pipelines.config import SqlConnection
        from pipelines.db import engine_for
        for conn_id in ("anomaly_cli_mariadb", "anomaly_cli_pg"):
            engine = engine_for(SqlConnection(conn_id=conn_id))
            with engine.connect() as conn:
                print("RESULT", engine.url.drivername, conn.execute(sa.text("SELECT current_user")).scalar_one())
    """
    env = {**os.environ, "_AIRFLOW_PROCESS_CONTEXT": "server", "PYTHONPATH": str(REPO)}

    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=REPO)

    assert done.returncode == 0, done.stderr[-3000:]
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert results == ["RESULT mysql+pymysql reader@127.0.0.1", "RESULT postgresql+psycopg2 postgres"]
    assert "Rd-pass-4-tests" not in done.stdout + done.stderr


def test_mariadb_sessions_are_in_utc(mysql_url: str) -> None:
    engine = engine_for(SqlConnection(url=mysql_url))
    with engine.connect() as conn:
        zones = conn.execute(sa.text("SELECT @@global.time_zone, @@session.time_zone")).one()
    assert tuple(zones) == ("+09:00", "+00:00")


def test_duckdb_sessions_are_in_utc(tmp_path) -> None:
    engine = engine_for(SqlConnection(url=f"duckdb:///{tmp_path}/zone.duckdb"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_setting('TimeZone')")).scalar_one() == "UTC"


def airflow_fields(url: sa.URL, conn_type: str) -> dict:
    """``url`` as the fields of an Airflow connection."""
    return {
        "conn_type": conn_type,
        "host": url.host,
        "port": url.port,
        "login": url.username,
        "password": url.password,
        "schema": url.database,
    }


def test_secret_driver_options_are_not_logged(monkeypatch, caplog) -> None:
    # libpq's sslpassword (from the URL, or an Airflow connection's extra) was logged in clear.
    monkeypatch.setenv("ANOMALY_TEST_DB", "postgresql://user:s3cret@localhost:2/db?sslmode=require&sslpassword=k3y-phrase")
    extra = {"sslpassword": "k3y-phrase-2", "sslmode": "require"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_ANOMALY_TEST_SSL",
        json.dumps({"conn_type": "postgres", "host": "localhost", "port": 3, "login": "user", "password": "s3cret", "extra": extra}),
    )
    with caplog.at_level(logging.INFO, logger="pipelines.db"):
        engine_for(SqlConnection(url_env="ANOMALY_TEST_DB"))
        engine_for(SqlConnection(conn_id="anomaly_test_ssl"))
    assert "postgresql+psycopg2://user:***@localhost:2/db?sslmode=require&sslpassword=***" in caplog.text
    assert "postgresql+psycopg2://user:***@localhost:3?sslmode=require&sslpassword=***" in caplog.text
    assert "k3y" not in caplog.text and "s3cret" not in caplog.text


def test_a_postgres_server_that_never_answers_fails_the_connection_instead_of_hanging(monkeypatch) -> None:
    # libpq waits for ever by default: a server that took the TCP connection and never answered
    # held the read (and the worker slot) with no error.
    import socket
    import threading

    import sqlalchemy as sa

    from pipelines import db
    from pipelines.config import SqlConnection

    monkeypatch.setattr(db, "PG_CONNECT_TIMEOUT_SECONDS", 2)
    with socket.socket() as silent:  # listens, so the handshake completes; never accepts nor answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        engine = db.engine_for(SqlConnection(url=f"postgresql://nobody@127.0.0.1:{port}/silent"))
        outcome: list[BaseException] = []

        def connect() -> None:
            try:
                engine.connect().close()
            except BaseException as exc:  # the outcome the test asserts
                outcome.append(exc)

        attempt = threading.Thread(target=connect, daemon=True)
        attempt.start()
        attempt.join(60)
        assert not attempt.is_alive(), "the connection still waits for the server"
        [error] = outcome
        assert isinstance(error, sa.exc.OperationalError) and "timeout" in str(error).lower()
