"""SQLAlchemy engines for the ``SqlConnection`` of a job (sources and the SQL sink share them)."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from pipelines.config import SqlConnection, resolve_path
from pipelines.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)


def engine_for(connection: SqlConnection) -> sa.Engine:
    """The engine of ``connection``, one per URL and process, so its connection pool is reused."""
    # Errors name connection.describe(), never the URL: it may hold a password.
    described = connection.describe()
    url = _url(connection)
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"{described} is not a valid SQLAlchemy URL; write it as dialect+driver://user:password@host/db"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        # SQLAlchemy's default PostgreSQL driver is psycopg 3; the [postgres] extra installs psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        # sqlite:///var/x.db in a job file means the project's var/, wherever Airflow runs from.
        parsed = parsed.set(database=resolve_path(parsed.database))
    try:
        return _engine(parsed)
    except NoSuchModuleError:
        raise ConfigError(
            f"{described}: SQLAlchemy has no dialect {parsed.drivername!r}; check the start of the URL "
            "(e.g. postgresql://, sqlite:///)"
        ) from None
    except ImportError as exc:
        raise ConfigError(
            f"{described}: the database driver {exc.name!r} is not installed; install it (PostgreSQL: "
            "pip install 'anomaly-pipelines[postgres]') or name an installed driver in the URL"
        ) from exc


def _url(connection: SqlConnection) -> str:
    if connection.url:
        return connection.url
    if connection.url_env:
        url = os.environ.get(connection.url_env)
        if not url:
            raise ConfigError(
                f"environment variable {connection.url_env} is not set: export it with the database URL "
                f"(e.g. export {connection.url_env}=postgresql://user:password@host:5432/db)"
            )
        return url
    return _airflow_url(connection.conn_id or "")


def _airflow_url(conn_id: str) -> str:
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError as exc:
        raise MissingDependencyError("apache-airflow", "airflow", f"Airflow connection {conn_id!r}") from exc
    try:
        uri = Connection.get(conn_id).get_uri()
    except AirflowNotFoundException as exc:
        raise ConfigError(
            f"Airflow connection {conn_id!r} does not exist: create it (airflow connections add {conn_id} "
            f"--conn-uri ...) or set AIRFLOW_CONN_{conn_id.upper()}"
        ) from exc
    return uri


@functools.cache
def _engine(url: sa.URL) -> sa.Engine:
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    log.info("created database engine for %s", url.render_as_string(hide_password=True))
    return engine
