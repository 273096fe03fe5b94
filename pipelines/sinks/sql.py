"""Labeled anomalies in a database table shared by all jobs (any SQLAlchemy database).

Timestamps are stored as naive UTC ``DateTime``: SQLite has no time zones, and one convention
for every database keeps the comparisons of the window identical everywhere.

Infinite numbers (an unbounded ``lower`` or ``upper``) are stored as NULL on MySQL/MariaDB and SQL
Server, whose floating-point columns have no infinity, so they read back as missing there; the other
databases keep them (see :data:`_NO_INFINITY`).

Two writes of the same job may overlap in time (a CLI ``predict`` during a scheduled publish, an
Airflow retry while the first attempt still runs). Each deletes the window then inserts, so
unless they take turns both inserts survive and every row is doubled: writers of one job on one
table are serialized inside the write transaction (see :meth:`SqlSink._serialize`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipelines import schema
from pipelines.db import BINARY_COLLATIONS, binary_collation, deadlocked, file_database, precise_datetime
from pipelines.errors import SinkError
from pipelines.series import key_dimensions
from pipelines.sinks.base import as_output, checked_batch, utc

log = logging.getLogger(__name__)

BATCH_ROWS = 5_000

_TYPES: dict[str, type[sa.types.TypeEngine[Any]]] = {"string": sa.Text, "double": sa.Double, "bool": sa.Boolean}
_KEYS = ("job", "series", "timestamp", "feature")
_JOB_NAME_LENGTH = 64  # pipelines.config.JOB_NAME allows 63 characters
#: Dialects whose column names ignore case even when quoted: "Region" and "region" are one column
#: there, so a job's dimension must not be added again in another case (ALTER TABLE would fail).
#: PostgreSQL is not one of them: SQLAlchemy quotes any name with capitals, which keeps its case.
_CASE_INSENSITIVE_COLUMNS = frozenset({"sqlite", "mysql", "mariadb", "mssql", "duckdb"})
#: Looks at the table before creating it or adding columns (see :meth:`SqlSink._prepare`).
_PREPARE_ATTEMPTS = 3
#: Runs of a write transaction that InnoDB chose as a deadlock victim (see :func:`pipelines.db.deadlocked`).
_WRITE_ATTEMPTS = 5
#: Dialects whose floating-point columns cannot hold ±inf (MySQL/MariaDB's DOUBLE, SQL Server's
#: FLOAT): the driver refused the whole write ("inf can not be used with MySQL"). An unbounded side
#: of the expected range (``lower``/``upper``) is legitimately infinite, so ±inf is stored as NULL
#: there and reads back as missing; PostgreSQL, SQLite and DuckDB store it as written.
_NO_INFINITY = frozenset({"mysql", "mariadb", "mssql"})
_DEADLOCK_BACKOFF_SECONDS = 0.2
#: Longest wait of a MySQL/MariaDB writer for another writer of its job (see :meth:`SqlSink._serialize`).
_NAMED_LOCK_SECONDS = 3600


def _lock_for_transaction(conn: sa.Connection, *parts: str) -> None:
    """On PostgreSQL, wait for the advisory lock named by ``parts``, held until the transaction
    ends; elsewhere nothing (see :meth:`SqlSink._serialize`). The key is a signed 64-bit digest,
    the same in every process (unlike ``hash``)."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest(), "big", signed=True)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _settle_session(conn: sa.Connection) -> dict[str, str] | None:
    """Make the session of ``conn`` store times as UTC and refuse values that do not fit, inside
    its transaction; returns the MySQL/MariaDB settings to put back with :func:`_unlock`, else None.

    The times are bound naive (UTC), and a ``TIMESTAMPTZ`` (PostgreSQL) or ``TIMESTAMP``
    (MySQL/MariaDB) column of a table created by hand reads them in the session's time zone, the
    server's by default: every time was stored hours off, two UTC hours in a daylight-saving gap
    of that zone were stored as one (a row lost, another twice), and a writer in another session
    zone deleted another window, so its rerun left duplicates. PostgreSQL's ``SET LOCAL`` ends
    with the transaction; MySQL/MariaDB's settings are the session's, given back by :func:`_unlock`.

    Without a strict ``sql_mode`` (no STRICT_ALL_TABLES or STRICT_TRANS_TABLES), MySQL/MariaDB
    cut a value longer than its column (a table created by hand with ``series VARCHAR(20)``) with
    only a warning: two series sharing their first 20 characters were stored as one, and a
    character the column's charset lacks became "?". Strict, the insert fails and the write is
    rolled back, naming the column.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        return None
    if conn.dialect.name not in ("mysql", "mariadb"):
        return None
    zone, mode = conn.execute(sa.text("SELECT @@SESSION.time_zone, @@SESSION.sql_mode")).one()
    saved = {}
    if zone not in ("+00:00", "UTC"):
        saved["time_zone"] = zone
    if not {"STRICT_ALL_TABLES", "STRICT_TRANS_TABLES"} & set((mode or "").upper().split(",")):
        saved["sql_mode"] = mode or ""
    if saved:
        conn.execute(
            sa.text("SET SESSION time_zone = '+00:00', sql_mode = :mode"),
            {"mode": ",".join(filter(None, [mode, "STRICT_ALL_TABLES" if "sql_mode" in saved else ""]))},
        )
    return saved or None


def _unlock(conn: sa.Connection, lock: str | None, settings: dict[str, str] | None = None) -> None:
    """End the transaction of ``conn`` (rolled back unless committed), then give back the named
    lock ``lock`` (see :meth:`SqlSink._serialize`) and the session's own ``settings`` (see
    :func:`_settle_session`): the session keeps both, and the pool would hand them on with the
    connection, so every later write of the job would wait for the lock in vain. A connection
    that cannot give them back is discarded, which ends the session and its lock."""
    if (lock is None and not settings) or conn.invalidated or conn.closed:
        return
    try:
        conn.rollback()
        if lock is not None:
            conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": lock})
        if settings:
            assignments = ", ".join(f"{name} = :{name}" for name in settings)  # names from _settle_session
            conn.execute(sa.text(f"SET SESSION {assignments}"), settings)
        conn.rollback()
    except Exception:
        with contextlib.suppress(Exception):
            conn.invalidate()


def _column(name: str, kind: str) -> sa.Column[Any]:
    type_ = precise_datetime() if kind.startswith("timestamp") else _TYPES[kind]()
    if name == "job":
        # The column is indexed, and MySQL/MariaDB (and SQL Server) cannot index a TEXT column
        # (MariaDB: "Specified key was too long"); a job name has at most 63 characters.
        type_ = type_.with_variant(sa.String(_JOB_NAME_LENGTH), "mysql", "mariadb", "mssql")
    return sa.Column(name, type_, nullable=name not in _KEYS)


def _naive(moment: pd.Timestamp) -> datetime:
    return moment.tz_convert("UTC").tz_localize(None).to_pydatetime()


def _records(frame: pd.DataFrame, *, finite: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Rows as plain Python values (naive UTC times, ``None`` for missing), in batches; with
    ``finite``, ``None`` for ±inf too (see :data:`_NO_INFINITY`)."""
    for first in range(0, len(frame), BATCH_ROWS):
        chunk = frame.iloc[first : first + BATCH_ROWS].copy()
        for name, kind in schema.OUTPUT_COLUMNS.items():
            if kind.startswith("timestamp"):
                chunk[name] = chunk[name].dt.tz_convert("UTC").dt.tz_localize(None)
            elif kind == "double" and finite:
                chunk[name] = chunk[name].where(np.isfinite(chunk[name]))
        chunk = chunk.astype(object)
        yield chunk.where(chunk.notna(), None).to_dict("records")


#: How SQLAlchemy's SQLite dialect stores a DateTime: the same text keeps window comparisons exact.
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def _sqlite_rows(frame: pd.DataFrame, columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
    """Rows as DB-API tuples already in SQLite's storage form, in batches.

    Hand-converted rather than through SQLAlchemy's per-value type processing, which was most
    of the time of a write (benchmarks/predict_scaling.py); the values are those SQLAlchemy
    would store, so reads and window deletes through SQLAlchemy see no difference.
    """
    kinds = schema.OUTPUT_COLUMNS
    for first in range(0, len(frame), BATCH_ROWS):
        chunk = frame.iloc[first : first + BATCH_ROWS]
        values = []
        for name in columns:
            column = chunk[name]
            kind = kinds.get(name, "string")
            if kind.startswith("timestamp"):
                text = column.dt.tz_convert("UTC").dt.strftime(_SQLITE_DATETIME)
                values.append(text.astype(object).where(column.notna(), None).tolist())
            elif kind == "double":
                values.append([None if v != v else v for v in column.astype("float64").tolist()])
            else:
                values.append(column.astype(object).where(column.notna(), None).tolist())
        yield list(zip(*values, strict=True))


class SqlSink:
    """Writes a job's output window into ``table`` in one transaction: delete the window, insert."""

    def __init__(self, engine: sa.Engine, table: str, db_schema: str | None = None):
        self.engine = engine
        self.table = table
        self.db_schema = db_schema
        self.name = f"{db_schema}.{table}" if db_schema else table

    def _definition(self, dimensions: list[str], collation: str = BINARY_COLLATIONS[-1]) -> sa.Table:
        columns = [_column(name, kind) for name, kind in schema.OUTPUT_COLUMNS.items()]
        columns += [sa.Column(dim, sa.Text, nullable=True) for dim in dimensions]
        # The naming convention shortens the index name where the database limits its length.
        metadata = sa.MetaData(naming_convention={"ix": "ix_%(table_name)s_%(column_0_N_name)s"})
        table = sa.Table(
            self.table,
            metadata,
            *columns,
            schema=self.db_schema,
            # utf8mb4 on MySQL/MariaDB: their databases often default to latin1 (MariaDB's own default
            # before 11.6), where a dimension value such as 東京 failed every write of the job.
            mysql_charset="utf8mb4",
            # A binary collation: their default ones ignore case and accents, so in any query on the
            # table "region=EU" was the series "region=eu" and "city=Koln" was "city=Köln" (one
            # group, a WHERE on one returned both), and a job "Sales" replaced the window of "sales".
            mysql_collate=collation,
        )
        sa.Index(None, table.c.job, table.c.timestamp)
        return table

    def _prepare(self, table: sa.Table, dimensions: list[str]) -> None:
        """Create the table, or add the dimension columns it lacks (other jobs have other dimensions).

        Only PostgreSQL's look-then-change is serialized (an advisory lock): elsewhere another
        writer, say a job publishing at the same hour, may create the table or add the same
        column between this one's look and its change, which then fails ("already exists",
        "duplicate column", a deadlock on MariaDB). That change is committed by then, so a new
        look finds it; an error of another cause fails every attempt.
        """
        if self.engine.dialect.name == "postgresql":
            # PostgreSQL cuts a longer name to its first bytes (with only a NOTICE): the first write
            # created the cut column, then every later one found the full name missing and failed
            # to add it again ("already exists"). MySQL/MariaDB refuse such a name themselves.
            limit = self.engine.dialect.max_identifier_length
            long = [dim for dim in dimensions if len(dim.encode()) > limit]
            if long:
                raise SinkError(
                    f"dimension {long[0]!r} has a name of {len(long[0].encode())} bytes in UTF-8, and PostgreSQL "
                    f"keeps at most {limit} bytes of a column name; give the dimension a shorter name "
                    "(e.g. rename the column in the source's query)"
                )
        for attempt in range(1, _PREPARE_ATTEMPTS + 1):
            try:
                self._create_or_extend(table, dimensions)
                return
            except sa.exc.DBAPIError as exc:
                if attempt == _PREPARE_ATTEMPTS:
                    raise
                log.info("preparing table %s failed (%s), looking at it again", self.name, getattr(exc, "orig", None) or exc)

    def _create_or_extend(self, table: sa.Table, dimensions: list[str]) -> None:
        with self.engine.begin() as conn:
            # Two first writes (of any jobs) would both see no table and both create it.
            _lock_for_transaction(conn, "prepare", self.name)
            inspector = sa.inspect(conn)
            if not inspector.has_table(self.table, schema=self.db_schema):
                if conn.dialect.name in ("mysql", "mariadb"):
                    table = self._definition(dimensions, binary_collation(conn))
                table.create(conn)
                log.info("created table %s", self.name)
                return
            if conn.dialect.name in ("mysql", "mariadb"):
                self._warn_if_case_insensitive(conn, table)
            present = set(self._stored_columns(conn))
            if conn.dialect.name in _CASE_INSENSITIVE_COLUMNS:
                # The rows of a job with dimension "region" go into an existing column "Region".
                present = {name.lower() for name in present}
                missing = [d for d in dimensions if d.lower() not in present]
            else:
                missing = [d for d in dimensions if d not in present]
            quote = conn.dialect.identifier_preparer
            text_type = sa.Text().compile(dialect=conn.dialect)
            for dim in missing:
                # Run as the driver's own SQL, not as sa.text: that doubles a "%" for the drivers that
                # format parameters (psycopg2, PyMySQL), so a dimension "share%" became a column
                # "share%%" and every insert of the job failed; it would also read ":name" as a parameter.
                conn.exec_driver_sql(f"ALTER TABLE {quote.format_table(table)} ADD COLUMN {quote.quote(dim)} {text_type}")
                log.info("added dimension column %s to table %s", dim, self.name)

    def _warn_if_case_insensitive(self, conn: sa.Connection, table: sa.Table) -> None:
        """Say how to convert a MySQL/MariaDB table created before it was made binary (:data:`~pipelines.db.BINARY_COLLATIONS`).

        A warning, not an error: the writes and reads of a job are right either way (job names
        are lowercase ASCII), what it confuses is the queries people run on the table. Converting
        rewrites the whole table, which is theirs to schedule, so it is never done here.
        """
        rows = conn.execute(
            sa.text(
                "SELECT column_name, collation_name FROM information_schema.columns "
                "WHERE table_schema = COALESCE(:schema, DATABASE()) AND table_name = :table"
            ),
            {"schema": self.db_schema, "table": self.table},
        ).all()
        # "_ci": case-insensitive (and, but for MySQL 8's "_as_ci", accent-insensitive too).
        loose = {name: collation for name, collation in rows if collation and collation.lower().endswith("_ci")}
        if loose:
            log.warning(
                "table %s: columns %s compare text ignoring case (collation %s), so series differing only in case "
                "or accents, such as 'region=EU' and 'region=eu', are one in queries on the table; convert it "
                "once (this rewrites the table) with: ALTER TABLE %s CONVERT TO CHARACTER SET utf8mb4 COLLATE %s",
                self.name, ", ".join(sorted(loose)), ", ".join(sorted(set(loose.values()))),
                conn.dialect.identifier_preparer.format_table(table), binary_collation(conn),
            )

    def _stored_columns(self, conn: sa.Connection) -> list[str]:
        """The names of the table's columns, as stored.

        Read from the keys of a query that selects no row, not through SQLAlchemy's inspector:
        DuckDB's dialect (duckdb-engine) cannot reflect columns under SQLAlchemy 2.1 (its query
        names pg_catalog.pg_collation, which DuckDB lacks), so every write after the first failed.
        """
        everything = sa.select(sa.text("*")).select_from(sa.table(self.table, schema=self.db_schema)).where(sa.false())
        return list(conn.execute(everything).keys())

    def _serialize(self, conn: sa.Connection, job: str) -> str | None:
        """Wait, inside the write transaction, until no other write of ``job`` to this table is open;
        returns the name of the MySQL/MariaDB lock to give back with :func:`_unlock`, else None.

        Needed on PostgreSQL: under READ COMMITTED a DELETE does not see the rows another open
        transaction is inserting, so two overlapping writes would both keep their inserts. The
        advisory lock is released with the transaction; writers of other jobs do not wait.
        SQLite needs nothing: it allows one writer per database file, and the DELETE takes the
        write lock that the transaction keeps until it ends (a second writer waits for it, up to
        the driver's busy timeout). On MySQL/MariaDB, InnoDB's DELETE locks the index range of the
        window only under REPEATABLE READ, the default: under READ COMMITTED (a common server
        setting) it locks the rows it deletes and nothing else, so two first writes of a window
        both deleted nothing, neither waited, and both inserts stayed. A named lock (GET_LOCK) of
        the job and table serializes them whatever the isolation; it is the session's, not the
        transaction's, so it is given back once the transaction ends. A writer may still deadlock
        with a writer of another job, which :meth:`replacing` runs again. Other databases get no lock here.
        """
        _lock_for_transaction(conn, "write", self.name, job)
        if conn.dialect.name not in ("mysql", "mariadb"):
            return None
        # At most 64 characters: a digest of the table and job.
        name = "anomaly-pipelines:" + hashlib.blake2b(f"{self.name}\0{job}".encode(), digest_size=16).hexdigest()
        got = conn.execute(sa.text("SELECT GET_LOCK(:name, :seconds)"), {"name": name, "seconds": _NAMED_LOCK_SECONDS}).scalar()
        if got != 1:  # 0 when the wait timed out
            raise TimeoutError(f"another write of job {job!r} to this table held its lock for {_NAMED_LOCK_SECONDS} s")
        return name

    def write(self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: datetime, end: datetime) -> int:
        """Replace the rows of ``job`` in ``[start, end)`` by ``frame``; returns the rows written."""
        with self.replacing(frame, job=job, dimensions=dimensions, start=start, end=end) as rows:
            return rows

    @contextlib.contextmanager
    def replacing(
        self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: datetime, end: datetime
    ) -> Iterator[int]:
        """:meth:`write`, committed only when the ``with`` block ends without an error.

        For writing another output in between: an error in the block rolls the table back, so
        the table takes the new rows only if that output took them too. The table stays locked
        for other writers of the job (on SQLite: of the database) while the block runs.
        """
        frame, start, end = checked_batch(frame, job=job, dimensions=dimensions, start=start, end=end)
        table = self._definition(dimensions)
        try:
            self._prepare(table, dimensions)
        except Exception as exc:
            raise self._failure(exc, frame, job, start, end) from exc
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                conn = self.engine.connect()
            except Exception as exc:
                raise self._failure(exc, frame, job, start, end) from exc
            lock = settings = None
            try:
                if conn.dialect.name == "postgresql":
                    # Under REPEATABLE READ or SERIALIZABLE (a server's, role's or URL's
                    # default_transaction_isolation), the advisory lock's SELECT took the snapshot
                    # before the lock was granted: the DELETE did not see the rows the writer it
                    # waited for had inserted, and two first writes of a window both stayed.
                    conn.execution_options(isolation_level="READ COMMITTED")
                transaction = conn.begin()
                lock = self._serialize(conn, job)
                settings = _settle_session(conn)
                deleted = conn.execute(
                    sa.delete(table).where(
                        table.c.job == job, table.c.timestamp >= _naive(start), table.c.timestamp < _naive(end)
                    )
                ).rowcount
                if conn.dialect.name == "sqlite":
                    insert = str(sa.insert(table).compile(dialect=conn.dialect))
                    for rows in _sqlite_rows(frame, [column.name for column in table.columns]):
                        conn.exec_driver_sql(insert, rows)
                else:
                    for records in _records(frame, finite=conn.dialect.name in _NO_INFINITY):
                        conn.execute(sa.insert(table), records)
                break
            except Exception as exc:
                _unlock(conn, lock, settings)
                conn.close()  # rolls back whatever was not committed
                if attempt < _WRITE_ATTEMPTS and deadlocked(exc):
                    log.warning(
                        "writing job %s to table %s: deadlock with another writer (attempt %d of %d), writing again",
                        job, self.name, attempt, _WRITE_ATTEMPTS,
                    )
                    # Random, so that the writers that deadlocked do not meet again.
                    time.sleep(random.uniform(0, _DEADLOCK_BACKOFF_SECONDS * attempt))
                    continue
                raise self._failure(exc, frame, job, start, end) from exc
        # Closing the connection rolls back whatever was not committed.
        with conn:
            try:
                yield len(frame)
                try:
                    transaction.commit()
                except Exception as exc:
                    # SQLAlchemy counts the transaction as ended and would pool the connection as it
                    # is: still inside the transaction on SQLite, keeping the write lock and showing
                    # its rows to the next user. Discarding the connection rolls it back.
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                    raise self._failure(exc, frame, job, start, end) from exc
            finally:
                _unlock(conn, lock, settings)
        log.info(
            "replaced %d rows by %d of job %s for [%s, %s) in table %s", deleted, len(frame), job, start, end, self.name
        )

    def _failure(self, exc: Exception, frame: pd.DataFrame, job: str, start: pd.Timestamp, end: pd.Timestamp) -> SinkError:
        return SinkError(
            f"could not write {len(frame)} rows of job {job!r} for [{start}, {end}) to table {self.name!r}: "
            f"{getattr(exc, 'orig', None) or exc}; the table keeps its previous rows of the window (rolled back). "
            "Fix the cause and rerun: the write replaces the window, so a rerun adds no duplicates"
        )

    def read(self, *, job: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Rows of ``job`` in ``[start, end)`` with UTC-aware times, in the output schema."""
        database = file_database(self.engine.url)
        if database is not None and not database.exists():
            # Connecting would create it, empty (and its folder), and then fail on the table.
            raise SinkError(
                f"could not read job {job!r} from table {self.name!r}: its database file {database} does not exist; "
                "check the path in the URL (a relative one is resolved against the project root) and that the table exists (the job's "
                "first publish creates both)"
            )
        try:
            with self.engine.connect() as conn, contextlib.ExitStack() as settled:
                if not sa.inspect(conn).has_table(self.table, schema=self.db_schema):
                    raise sa.exc.NoSuchTableError(f"no table {self.name!r} in the database")
                # The times of a TIMESTAMPTZ (TIMESTAMP) column as written (see _settle_session).
                settled.callback(_unlock, conn, None, _settle_session(conn))
                # The output columns typed as written (see _stored_columns for why not reflected).
                stored = self._stored_columns(conn)
                table = self._definition([name for name in stored if name not in schema.OUTPUT_COLUMNS])
                query = sa.select(table).where(table.c.job == job)
                if start is not None:
                    query = query.where(table.c.timestamp >= _naive(utc(start)))
                if end is not None:
                    query = query.where(table.c.timestamp < _naive(utc(end)))
                result = conn.execute(query)
                rows = pd.DataFrame(result.all(), columns=list(result.keys()))
        except sa.exc.SQLAlchemyError as exc:
            raise SinkError(
                f"could not read job {job!r} from table {self.name!r}: {getattr(exc, 'orig', None) or exc}; "
                "check that the table exists and the database is reachable"
            ) from exc
        return as_output(rows[[*schema.OUTPUT_COLUMNS, *self._job_dimensions(rows, self.engine.dialect.name)]])

    @staticmethod
    def _job_dimensions(rows: pd.DataFrame, dialect: str) -> list[str]:
        """The dimension columns of the job of ``rows``, in the job's order.

        The table holds the dimension columns of every job; those of other jobs are empty here.
        Emptiness alone dropped a dimension of the job whose values are all missing, which the
        Parquet sink keeps: the series keys (``region=eu,host=None``) name the job's dimensions.
        """
        stored = [c for c in rows.columns if c not in schema.OUTPUT_COLUMNS]
        # A job's "region" is stored in a column "Region" where column names ignore case.
        fold = str.lower if dialect in _CASE_INSENSITIVE_COLUMNS else str
        columns = {fold(c): c for c in reversed(stored)}
        named = (fold(name) for key in pd.unique(rows["series"].dropna()) for name in key_dimensions(key))
        kept = [columns[name] for name in dict.fromkeys(named) if name in columns]
        # Whatever has values is the job's too, even if its keys were not made by series_key.
        return kept + [c for c in stored if c not in kept and rows[c].notna().any()]
