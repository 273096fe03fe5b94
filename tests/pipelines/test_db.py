from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from pipelines.config import SqlConnection
from pipelines.db import engine_for
from pipelines.errors import ConfigError


def select_one(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT 1")).scalar_one()


def test_url_makes_the_sqlite_folder_and_reuses_the_engine(tmp_path) -> None:
    connection = SqlConnection(url=f"sqlite:///{tmp_path}/new/folder/out.db")
    engine = engine_for(connection)
    assert select_one(engine) == 1
    assert (tmp_path / "new" / "folder" / "out.db").exists()
    assert engine_for(SqlConnection(url=f"sqlite:///{tmp_path}/new/folder/out.db")) is engine


def test_url_from_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ANOMALY_TEST_DB", f"sqlite:///{tmp_path}/env.db")
    engine = engine_for(SqlConnection(url_env="ANOMALY_TEST_DB"))
    assert select_one(engine) == 1
    assert engine.url.database == f"{tmp_path}/env.db"


def test_missing_environment_variable(monkeypatch) -> None:
    monkeypatch.delenv("ANOMALY_TEST_DB", raising=False)
    with pytest.raises(ConfigError, match="ANOMALY_TEST_DB is not set: export it"):
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
    # A plain postgresql:// URL uses psycopg2, the driver the [postgres] extra installs.
    assert engine_for(SqlConnection(url="postgresql://user:s3cret@nowhere/db")).url.drivername == "postgresql+psycopg2"
    with pytest.raises(ConfigError, match=r"driver 'pymysql' is not installed") as info:
        engine_for(SqlConnection(url="mysql+pymysql://user:s3cret@nowhere/db"))
    assert "s3cret" not in str(info.value)
    monkeypatch.setenv("ANOMALY_TEST_DB", "not a url s3cret")
    with pytest.raises(ConfigError, match=r"URL from \$ANOMALY_TEST_DB is not a valid SQLAlchemy URL") as info:
        engine_for(SqlConnection(url_env="ANOMALY_TEST_DB"))
    assert "s3cret" not in str(info.value)
