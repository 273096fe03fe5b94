"""SQLAlchemy engines for the ``SqlConnection`` of a job (sources and the SQL sink share them).

Each database is an optional extra that installs its SQLAlchemy dialect and driver; a URL naming
only the dialect (``mysql://``) gets the driver that extra installs. An Airflow connection
(``conn_id``) is resolved with ``airflow.sdk.Connection`` (connections, ``AIRFLOW_CONN_*`` env
vars, secrets backends) and turned into a URL from its fields: its ``conn_type`` is an Airflow
type, not a SQLAlchemy drivername, so it is mapped (``_AIRFLOW_SCHEMES``) unless the
connection's extra names one (``{"sqlalchemy_scheme": "..."}``).

Passwords never reach messages or logs: errors name ``SqlConnection.describe()`` and logs the
URL with its password and secret driver options (``sslpassword``...) masked.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from pipelines.config import SqlConnection, resolve_path
from pipelines.errors import ConfigError, MissingDependencyError, install_hint

log = logging.getLogger(__name__)

#: The extra that installs each dialect's driver, and what it installs.
EXTRAS: dict[str, tuple[str, str]] = {
    "postgresql": ("postgres", "psycopg2-binary"),
    "mysql": ("mysql", "pymysql"),
    "mariadb": ("mysql", "pymysql"),
    "mssql": ("mssql", "pymssql"),
    "redshift": ("redshift", "sqlalchemy-redshift"),
    "duckdb": ("duckdb", "duckdb-engine"),
}

#: A URL naming only the dialect gets the driver its extra installs, not SQLAlchemy's default
#: (psycopg 3, mysqlclient, pyodbc), which the extras do not install.
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mssql": "mssql+pymssql",
    "redshift": "redshift+psycopg2",
}

#: Airflow connection types (``conn_type``, the scheme of an ``AIRFLOW_CONN_*`` URI) → SQLAlchemy
#: dialect+driver. Airflow writes ``postgresql://`` URIs as type ``postgres``.
_AIRFLOW_SCHEMES = {
    "postgres": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mssql": "mssql+pymssql",
    "redshift": "redshift+psycopg2",
    "sqlite": "sqlite",
    "duckdb": "duckdb",
}

#: Keys of an Airflow connection's extra read here; every other key is a driver option.
_SCHEME_KEY, _QUERY_KEY = "sqlalchemy_scheme", "sqlalchemy_query"

#: Sessions that have a time zone of their own are set to UTC, so naive UTC window bounds and
#: naive UTC timestamps read back are exact whatever the server's zone (MySQL ``TIMESTAMP``
#: columns and DuckDB ``TIMESTAMPTZ`` columns are converted in the session's zone).
_SESSION_UTC = {
    "mysql": "SET time_zone = '+00:00'",
    "mariadb": "SET time_zone = '+00:00'",
    "duckdb": "SET TimeZone = 'UTC'",
}


def engine_for(connection: SqlConnection) -> sa.Engine:
    """The engine of ``connection``, one per URL and process, so its connection pool is reused."""
    # Errors name connection.describe(), never the URL: it may hold a password.
    described = connection.describe()
    url = _with_default_driver(_url(connection, described))
    if _is_file(url):
        # sqlite:///var/x.db in a job file means the project's var/, wherever Airflow runs from.
        url = url.set(database=resolve_path(url.database or ""))
        # Only looked at: the folder is made when a connection is opened (_make_folder), so that
        # a reader of a missing database, which checks for the file first, creates nothing.
        folder = Path(url.database or "").parent
        # os.path's exists: Path.exists raises PermissionError under a folder this user cannot search.
        existing = next(parent for parent in (folder, *folder.parents) if os.path.exists(parent))
        if not os.path.isdir(existing):
            raise ConfigError(_no_folder(described, folder, f"{existing} is a file, not a folder"))
    try:
        return _engine(url)
    except NoSuchModuleError:
        raise ConfigError(_no_dialect(connection, described, url)) from None
    except ImportError as exc:
        raise ConfigError(
            f"{described}: the database driver {exc.name!r} is not installed; {_install_hint(url)}"
        ) from exc


def _no_folder(described: str, folder: Path, reason: str) -> str:
    return f"{described}: cannot create the folder of its database file, {folder} ({reason}); create it, or point the URL at a writable path"


def _make_folder(folder: Path, described: str, *_event: Any) -> None:
    """Before a SQLite or DuckDB file database is opened (which creates the file), create its folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(_no_folder(described, folder, exc.strerror or str(exc))) from exc


def _url(connection: SqlConnection, described: str) -> sa.URL:
    if connection.conn_id:
        return _airflow_url(connection.conn_id)
    if connection.url:
        text = connection.url
    else:
        name = connection.url_env or ""
        text = os.environ.get(name, "")
        if not text.strip():
            # Set to "" (an empty line of an env file) said "is not set", sending one to check a
            # variable that is there.
            state = "is not set" if name not in os.environ else "is set but empty"
            raise ConfigError(
                f"environment variable {name} {state}: export it with the database URL "
                f"(e.g. export {name}=postgresql://user:password@host:5432/db)"
            )
    try:
        return _parse(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"{described} is not a valid SQLAlchemy URL; write it as dialect+driver://user:password@host:port/db "
            "(the port a number; in the user and password, write @ : / ? as %40 %3A %2F %3F)"
        ) from None


def _parse(text: str) -> sa.URL:
    """``text`` as a URL whose password runs to the last ``@`` before the host, as :mod:`urllib` reads it.

    SQLAlchemy ends the password at its first ``@``: ``user:p@ss@host`` gave password ``p`` and
    host ``ss@host``, so the rest of the password was shown as a host in messages and logs and
    sent to DNS. A host never holds ``@``, so what precedes its last one is the password's.
    """
    url = sa.make_url(text)
    if url.host and "@" in url.host and url.password is not None:
        rest, _, host = url.host.rpartition("@")
        url = url.set(password=f"{url.password}@{rest}", host=host)
    return url


def describe_url(text: str) -> str:
    """The URL ``text`` for messages: its password and secret driver options masked (what
    ``SqlConnection.describe()`` shows)."""
    try:
        return _loggable(_parse(text))
    except (ArgumentError, ValueError):
        # Unparsed, nothing tells where a password would be in it.
        return "the URL (hidden: it does not parse, so a password in it could not be masked)"


def _with_default_driver(url: sa.URL) -> sa.URL:
    return url.set(drivername=_DEFAULT_DRIVERS.get(url.drivername, url.drivername))


def _airflow_url(conn_id: str) -> sa.URL:
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError as exc:
        raise MissingDependencyError("apache-airflow", "airflow", f"Airflow connection {conn_id!r}") from exc
    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException as exc:
        raise ConfigError(
            f"Airflow connection {conn_id!r} does not exist: create it (airflow connections add {conn_id} "
            f"--conn-uri ...) or set AIRFLOW_CONN_{conn_id.upper()}"
        ) from exc
    extra = conn.extra_dejson
    scheme = extra.get(_SCHEME_KEY) or _AIRFLOW_SCHEMES.get(conn.conn_type or "") or conn.conn_type or ""
    if not scheme:
        raise ConfigError(
            f"Airflow connection {conn_id!r} has no type: set its conn_type (e.g. postgres, mysql, mssql, "
            f'redshift, sqlite, duckdb) or its extra {{"{_SCHEME_KEY}": "dialect+driver"}}'
        )
    query = _driver_options(conn_id, extra)
    if scheme.split("+")[0] in ("sqlite", "duckdb"):
        # Airflow's sqlite (and the DuckDB providers') connections keep the file path in host.
        return sa.URL.create(scheme, database=conn.host or conn.schema or None, query=query)
    return sa.URL.create(
        scheme,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
        query=query,
    )


def _driver_options(conn_id: str, extra: Mapping[str, Any]) -> dict[str, str]:
    """The extra's driver options: every scalar key but ours, then ``sqlalchemy_query`` over them.

    Options of an ``AIRFLOW_CONN_*`` URI (``?sslmode=require``) arrive as extra keys, so they
    are passed on as they would be in a SQLAlchemy URL.
    """
    nested = extra.get(_QUERY_KEY) or {}
    if not isinstance(nested, Mapping):
        raise ConfigError(
            f"Airflow connection {conn_id!r}: extra {_QUERY_KEY!r} must be an object of driver options "
            f'(e.g. {{"{_QUERY_KEY}": {{"sslmode": "require"}}}}), got {type(nested).__name__}'
        )
    options = {
        key: value
        for key, value in extra.items()
        if key not in (_SCHEME_KEY, _QUERY_KEY) and isinstance(value, str | int | float | bool)
    }
    return {key: str(value) for key, value in {**options, **nested}.items()}


def _no_dialect(connection: SqlConnection, described: str, url: sa.URL) -> str:
    backend = url.get_backend_name()
    if backend in EXTRAS:  # dialects that come as plugins (DuckDB, Redshift) are not installed
        return f"{described}: the SQLAlchemy dialect {url.drivername!r} is not installed; {_install_hint(url)}"
    if connection.conn_id:
        return (
            f"{described} has type {url.drivername!r}, which is not a SQLAlchemy dialect nor an Airflow type "
            f"mapped to one ({', '.join(sorted(_AIRFLOW_SCHEMES))}); set its extra to "
            f'{{"{_SCHEME_KEY}": "dialect+driver"}} (e.g. "postgresql+psycopg2")'
        )
    return (
        f"{described}: SQLAlchemy has no dialect {url.drivername!r}; check the start of the URL "
        "(e.g. postgresql://, mysql://, mssql://, redshift://, duckdb:///, sqlite:///)"
    )


def _install_hint(url: sa.URL) -> str:
    extra, package = EXTRAS.get(url.get_backend_name(), (None, None))
    if extra is None:
        return "install the driver named in the URL, or name an installed one"
    return install_hint(package, extra)


#: Driver options whose values are secrets: libpq's ``sslpassword`` (the client key's passphrase),
#: a token or an access key, given in the URL's query or an Airflow connection's extra.
_SECRET_OPTION = re.compile(r"pass|secret|token|credential", re.IGNORECASE)


def _loggable(url: sa.URL) -> str:
    """``url`` with its password and the values of its secret driver options masked."""
    hidden = {key: "***" for key in url.query if _SECRET_OPTION.search(key)}
    # Rendering escapes the mask as it would a value; shown as the password's mask is.
    return url.update_query_dict(hidden).render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")


SQLITE_BUSY_TIMEOUT_SECONDS = 60.0
#: Seconds psycopg2 (PostgreSQL, Redshift) waits for a server to answer a new connection. libpq's
#: default is to wait for ever: a server that takes the TCP connection and never answers (a hung
#: host, a firewall that drops after the handshake) held the read, and the task's worker slot,
#: with no error. PyMySQL waits 10 s by default. ``?connect_timeout=`` in the URL overrides.
PG_CONNECT_TIMEOUT_SECONDS = 10


def precise_datetime() -> sa.types.TypeEngine[Any]:
    """A naive (UTC) date-time column type that keeps microseconds on every database.

    MySQL/MariaDB's ``DATETIME`` and SQL Server's ``DATETIME`` round them away, so rows of a
    sub-second series would share a key and a time read back would differ from the one written.
    """
    from sqlalchemy.dialects import mssql, mysql

    return (
        sa.DateTime(timezone=False)
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
        .with_variant(mssql.DATETIME2(precision=6), "mssql")
    )


@functools.cache
def _engine(url: sa.URL) -> sa.Engine:
    connect_args = {}
    if url.get_backend_name() == "sqlite" and "timeout" not in url.query:
        # A writer of the file waits for another's transaction (publish replacing a large window:
        # deleting and inserting its rows), and the driver's 5 s default is shorter than that
        # takes. ?timeout= overrides.
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_SECONDS
    if url.get_driver_name() == "psycopg2" and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_SECONDS
    engine = sa.create_engine(url, connect_args=connect_args)
    database = file_database(url)
    if database is not None:
        sa.event.listen(engine, "do_connect", functools.partial(_make_folder, database.parent, _loggable(url)))
    statement = _SESSION_UTC.get(engine.dialect.name)
    if statement:
        sa.event.listen(engine, "connect", functools.partial(_set_session, statement))
    log.info("created database engine for %s", _loggable(url))
    return engine


def _is_file(url: sa.URL) -> bool:
    """A SQLite or DuckDB database in a file (not ``:memory:`` nor DuckDB's ``md:`` service)."""
    return url.get_backend_name() in ("sqlite", "duckdb") and bool(url.database) and ":" not in (url.database or "")


def file_database(url: sa.URL) -> Path | None:
    """The file of a SQLite or DuckDB database at ``url`` (as :func:`engine_for` resolved it), else None."""
    return Path(url.database or "") if _is_file(url) else None


def _set_session(statement: str, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def deadlocked(exc: Exception) -> bool:
    """MySQL/MariaDB's deadlock error (1213): InnoDB rolled the whole transaction back, so
    running it again is safe, and what MySQL's manual advises (the output table's writes and the
    label store's retry on it).

    Writers of different jobs to one table deadlock there (the tests make two do it): under REPEATABLE
    READ each window DELETE also locks the gap up to the next job's rows, and each INSERT then
    waits for the other's gap lock.
    """
    orig = getattr(exc, "orig", None)
    return isinstance(exc, sa.exc.OperationalError) and getattr(orig, "args", ())[:1] == (1213,)


#: The collation of text columns on MySQL/MariaDB (the results and labels tables): the first of
#: these the server has. utf8mb4_bin, the only one before MariaDB 10.2 and MySQL 8.0, pads the
#: shorter text with spaces before comparing (PAD SPACE), so "region=EU" and "region=EU " were one
#: in the tables' queries; the two others compare every character (NO PAD).
BINARY_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")


def binary_collation(conn: sa.Connection) -> str:
    """The first of :data:`BINARY_COLLATIONS` that the MySQL/MariaDB server of ``conn`` has."""
    names = ", ".join(f"'{name}'" for name in BINARY_COLLATIONS)
    found = set(conn.execute(sa.text(f"SELECT collation_name FROM information_schema.collations WHERE collation_name IN ({names})")).scalars())
    return next((name for name in BINARY_COLLATIONS if name in found), BINARY_COLLATIONS[-1])
