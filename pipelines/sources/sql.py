"""SQL databases through SQLAlchemy: the job's query, with the window as bound parameters.

The query owns the window (``WHERE ts >= :start AND ts < :end``); values, the window's and the
job's ``params`` alike, are bound, never formatted into the SQL. An unbounded side of the
window is bound as the earliest or latest datetime, so the query needs no special case.

How the bounds are bound, per dialect: both are UTC, typed ``DateTime``; rows at ``start`` are
in, rows at ``end`` are out. Store timestamps in UTC in the dialect's natural type:

- PostgreSQL (``timestamptz``) and Amazon Redshift (``TIMESTAMP`` or ``TIMESTAMPTZ``) get them
  aware, sent with their offset: exact against ``timestamptz`` columns whatever the session's
  ``TimeZone``. A column without time zone is compared in the session's ``TimeZone`` (UTC by
  default on Redshift; on PostgreSQL set it with ``?options=-c timezone=UTC`` if the server's
  is not UTC); a read that returns such timestamps from a session in another zone is refused.
- MySQL and MariaDB (``DATETIME``) get them naive: the driver drops any offset. Sessions are set
  to UTC (``pipelines.db``), so ``TIMESTAMP`` columns, which the server converts in the session's
  zone, are exact too.
- DuckDB (``TIMESTAMP``) gets them naive; sessions are set to UTC, so ``TIMESTAMPTZ`` columns are
  exact too.
- Microsoft SQL Server (``datetime2``) gets them naive: ``datetime2`` has no zone. pymssql sends
  them to the millisecond. The legacy ``datetime`` type starts in 1753, so an unbounded side
  (bound as year 1) cannot be compared with it: use ``datetime2``.
- SQLite has no date type: the comparison is a string comparison with UTC text. pandas and
  SQLAlchemy write ``YYYY-MM-DD HH:MM:SS.ffffff``, SQLite's own ``datetime()`` and
  ``CURRENT_TIMESTAMP`` write ``YYYY-MM-DD HH:MM:SS``; the bounds are bound as text without their
  trailing zero fields (:func:`_sqlite_text`), which compares exactly with both and is a time
  string SQLite's date functions read (``unixepoch(:start)`` for epoch seconds). A query comparing
  the column itself with the bounds while it holds ISO text with a ``T`` or a local offset is
  refused: such text does not sort with the bounds; compare ``datetime(ts)`` instead (the same
  for a MySQL or MariaDB ``VARCHAR``, compared as text with the bound: ``CAST(ts AS DATETIME(6))``).

A read is stopped by the database after :data:`STATEMENT_TIMEOUT_SECONDS` on PostgreSQL, Redshift
and MySQL/MariaDB, unless the URL sets the limit itself (:data:`_OWN_LIMIT`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from sqlalchemy import Connection, DateTime, String, TextClause, bindparam, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from pipelines.config import JobConfig, SqlSource
from pipelines.db import engine_for, file_database
from pipelines.errors import ConfigError, SourceConfigError, SourceDataError
from pipelines.sources.base import bounds, job_columns, source_error, utc_bound

log = logging.getLogger(__name__)

#: Dialects whose drivers send the offset and compare in UTC; the others get naive UTC.
AWARE_DIALECTS = frozenset({"postgresql", "redshift"})

#: Rows fetched and converted at a time. One ``pd.read_sql`` of a whole window first held every
#: row as Python objects (a row, a float, a string, a datetime per cell: about 10x the frame), so
#: one-off scoring or a long training window of millions of rows needed gigabytes. Chunks keep
#: those objects to one chunk's worth: reading 2M rows from PostgreSQL (benchmarks/sql_read.py)
#: took about 2x the frame with chunks of 5,000 to 20,000 rows and grew with larger chunks (3x at
#: 50,000, 3.8x at 200,000), at the same speed: a round trip and a conversion per 10,000 rows
#: cost nothing measurable.
CHUNK_ROWS = 10_000

#: Longest run of one statement of a source's read (its query; with a server-side cursor, one fetch
#: of its rows) on PostgreSQL, Redshift and MySQL/MariaDB. Unbounded, a query that never ended (a
#: lock it waited on, a plan gone wrong) held the run, and the job's only active run, for ever.
#: An hour: far above any window's read, which the server then stops with an error. Kept when the
#: URL sets the limit itself (:data:`_OWN_LIMIT`) or the session has one (a role's, a user's).
STATEMENT_TIMEOUT_SECONDS: float = 3600
#: Per dialect: the variable, where a URL sets it, and how the error says to raise it.
_OWN_LIMIT = {
    "postgresql": ("statement_timeout", "options", "?options=-c%20statement_timeout%3D7200s"),
    "mariadb": ("max_statement_time", "init_command", "?init_command=SET%20max_statement_time%3D7200"),
    "mysql": ("max_execution_time", "init_command", "?init_command=SET%20max_execution_time%3D7200000"),
}
_OWN_LIMIT["redshift"] = _OWN_LIMIT["postgresql"]


class SqlReader:
    """Reads a job's :class:`~pipelines.config.SqlSource`."""

    def __init__(self, job: JobConfig) -> None:
        if not isinstance(job.source, SqlSource):
            raise TypeError(f"SqlReader reads sql sources, not {job.source.kind!r}")
        self.job = job
        self.config = job.source

    def statement(
        self, dialect: str, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> tuple[TextClause, dict[str, Any]]:
        """The query and its parameters for ``dialect`` (a SQLAlchemy dialect name), the UTC window
        bound as the module's docstring says."""
        aware = dialect in AWARE_DIALECTS
        first, last = bounds(start, end)
        if dialect == "sqlite":
            query = text(self.config.query).bindparams(bindparam("start", type_=String()), bindparam("end", type_=String()))
            return query, {**self.config.params, "start": _sqlite_text(first), "end": _sqlite_text(last)}
        if not aware:
            first, last = first.replace(tzinfo=None), last.replace(tzinfo=None)
        query = text(self.config.query).bindparams(
            bindparam("start", type_=DateTime(timezone=aware)),
            bindparam("end", type_=DateTime(timezone=aware)),
        )
        return query, {**self.config.params, "start": first, "end": last}

    def read(self, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        lo, hi = utc_bound(start), utc_bound(end)
        fail = partial(source_error, self.job, self.config.describe(), lo, hi)
        try:
            engine = engine_for(self.config.connection)
        except ConfigError as exc:
            # "environment variable METRICS_DB_URL is not set" named neither the job nor the window
            # whose run it failed.
            problem = str(exc).removeprefix(f"{self.config.connection.describe()}: ").removesuffix(".")
            raise fail(problem, "Nothing was read: fix that, then re-run the window.", kind=SourceConfigError) from exc
        database = file_database(engine.url)
        if database is not None and not database.exists():
            # SQLite and DuckDB create a missing file on connect: a mistyped path, or a database
            # not loaded yet, read as an empty new one and failed with "no such table", leaving an
            # empty file behind.
            raise fail(
                f"the database file {database} does not exist",
                "Check the path in the URL (a relative one is resolved against the project root), or create and load "
                "the database first.",
            )
        query, params = self.statement(engine.dialect.name, lo, hi)
        secret = engine.url.password
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise fail(
                f"cannot connect to the database ({_reason(exc, secret)})",
                "Check that the database is running and reachable from this machine, and the credentials.",
            ) from _unless_leaking(exc, secret)
        with connection:
            try:
                limit = _limit_statements(connection)
            except SQLAlchemyError as exc:
                raise fail(
                    f"cannot set the query's statement timeout ({_reason(exc, secret)})",
                    "Check that the database is running and reachable, then re-run the window.",
                ) from _unless_leaking(exc, secret)
            try:
                frame = _read_frame(connection, query, params)
            except _Unconvertible as cause:
                # psycopg2 converts a timestamp of year 20000 (a typo of 2000) or BC, which PostgreSQL
                # holds, into a datetime as it fetches the row: a bare "ValueError: year 20000 is out of
                # range" named no job, window nor row, and failed every retry.
                raise fail(
                    f"rows {cause.first + 1:,} to {cause.first + CHUNK_ROWS:,} of the query's result hold a value that "
                    f"the driver cannot convert to Python ({cause.__cause__}; Python's dates and times hold years 1 to 9999)",
                    f"Find the row (for a timestamp: WHERE {self.job.timestamp} < '0001-01-01' OR {self.job.timestamp} >= "
                    "'10000-01-01') and correct it, or leave it out in the query; nothing was read.",
                    kind=SourceDataError,
                ) from cause.__cause__
            except SQLAlchemyError as cause:  # raised by the query or by any fetch of its chunks
                if limit is not None and _timed_out(cause):
                    variable, key, example = _OWN_LIMIT[_dialect(connection)]
                    raise fail(
                        f"the query ran longer than the source's statement timeout of {limit.seconds:g} s "
                        f"({_reason(cause, secret)}), so the database stopped it",
                        f"Make the query faster (an index on {self.job.timestamp}, a narrower window), or raise the limit "
                        f"({variable}; 0: none): add {example} to the URL (with & after other options; for an Airflow "
                        f"connection, as its extra {key!r}). Nothing was read.",
                    ) from _unless_leaking(cause, secret)
                unbound = re.search(r"A value is required for bind parameter '(\w+)'", str(cause))
                raise fail(
                    f"the query failed ({_reason(cause, secret)})",
                    f"Set :{unbound[1]} in `params`; if that colon does not start a parameter (it is inside "
                    f"a string or a comment), write it as \\:{unbound[1]}."
                    if unbound
                    else "Check the query against the database (tables, columns, syntax), that this user may "
                    "read them, and that every :name in it is set in `params`.",
                ) from _unless_leaking(cause, secret)
            finally:
                if limit is not None:
                    limit.restore(connection)
            zone = _local_session_zone(connection, frame, self.job.timestamp)
        if zone:
            raise fail(
                f"column {self.job.timestamp!r} is a timestamp without time zone, which the database compares with the "
                f"window's UTC bounds in the session's time zone, {zone}: the window read is shifted by that zone's offset",
                "Add ?options=-c%20timezone%3DUTC to the URL (the session then compares, and the rows are read, in UTC), "
                "or store the column as timestamptz.",
                kind=SourceConfigError,
            )
        twice = sorted({name for name in frame.columns[frame.columns.duplicated()] if name in self.job.columns})
        if twice:
            # A join's ``a.*, b.*`` returns the key twice; each would read as a frame where one
            # column is expected, and extract failed with "'DataFrame' object has no attribute 'dtype'".
            raise fail(
                f"the query returned more than one column named {', '.join(map(repr, twice))}",
                "Select each of the job's columns once: list the columns instead of `table.*`, or give the others "
                "another name with AS.",
                kind=SourceConfigError,
            )
        if engine.dialect.name in _TEXT_ADVICE:
            misread = _text_misread(self.job.timestamp, self.config.query, frame, params, (lo, hi))
            if misread:
                raise fail(misread, _TEXT_ADVICE[engine.dialect.name].format(ts=self.job.timestamp), kind=SourceConfigError)
        returned = {str(name).casefold(): str(name) for name in frame.columns}
        folded = [
            (name, returned[name.casefold()]) for name in self.job.columns
            if name not in frame.columns and name.casefold() in returned
        ]
        if folded:
            # PostgreSQL folds unquoted names to lower case (``AS Value`` returns ``value``): the
            # missing column then failed validation as misspelt, though the query reads as spelt right.
            raise fail(
                "the query returned "
                + ", ".join(f"column {got!r} where the job names {name!r}" for name, got in folded)
                + ", and column names are compared exactly",
                "Quote the name in the query to keep its case (AS \"Value\"; the database folds unquoted names), "
                "or write it in the job file as the query returns it.",
                kind=SourceConfigError,
            )
        log.info("job %s: read %d rows from %s", self.job.name, len(frame), self.config.describe())
        return job_columns(frame, self.job).reset_index(drop=True)


def _read_frame(connection: Connection, query: TextClause, params: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``query`` as ``pd.read_sql`` gives them, read in chunks of :data:`CHUNK_ROWS`
    through a server-side cursor (PostgreSQL, MySQL/MariaDB; SQLite and DuckDB fetch as asked)."""
    try:
        result = connection.execution_options(stream_results=True).execute(query, params)
    except (ValueError, OverflowError) as exc:  # a streaming result fetches its first row at once
        raise _Unconvertible(0) from exc
    except DBAPIError as exc:
        if connection.dialect.name not in AWARE_DIALECTS or _timed_out(exc):
            raise
        # psycopg2 streams through ``DECLARE ... CURSOR FOR <query>``, which takes one SELECT:
        # a query of several statements (``SET LOCAL ...; SELECT ...``) that a plain execute
        # runs is refused, and any other failure names the DECLARE. Run as pd.read_sql did: the
        # result is buffered by libpq, as text; Python objects are still made a chunk at a time.
        connection.rollback()
        _renew_limit(connection)  # PostgreSQL's lasted the transaction just rolled back
        result = connection.execution_options(stream_results=False).execute(query, params)
    columns = list(result.keys())
    chunks: list[list[pd.Series]] = []
    fetched = 0
    while True:
        try:
            rows = result.fetchmany(CHUNK_ROWS)
        except (ValueError, OverflowError) as exc:  # raised by the driver's conversion of a value
            raise _Unconvertible(fetched) from exc
        if not rows:
            break
        fetched += len(rows)
        chunk = _convert([tuple(row) for row in rows], columns)
        chunks.append([chunk.iloc[:, i] for i in range(len(columns))])
    return _assemble(chunks, columns)


def _dialect(connection: Connection) -> str:
    """The dialect's name, ``mariadb`` for a MariaDB server reached through a ``mysql://`` URL."""
    name = connection.dialect.name
    return "mariadb" if name == "mysql" and getattr(connection.dialect, "is_mariadb", False) else name


#: The execution option of a read's connection holding PostgreSQL's limit (see :func:`_limit_statements`).
_LIMIT_OPTION = "anomaly_pipelines_statement_timeout"


@dataclass(frozen=True)
class _Limit:
    """The statement timeout set for one read (see :func:`_limit_statements`); ``previous``: the
    MySQL/MariaDB session's own value, given back after it."""

    seconds: float
    variable: str
    previous: str | None

    def restore(self, connection: Connection) -> None:
        """Give the MySQL/MariaDB session its own limit back: the pool hands the connection on, to
        the output and labels tables' writes among others. A connection that cannot is discarded,
        with its session. (PostgreSQL's ends with the read's transaction.)"""
        if self.previous is None or connection.invalidated or connection.closed:
            return
        try:
            connection.rollback()  # a statement the server stopped may leave its transaction open
            connection.exec_driver_sql(f"SET SESSION {self.variable} = {self.previous}")
            connection.rollback()
        except Exception:  # noqa: BLE001 - then the session, and its limit, go with the connection
            connection.invalidate()


def _renew_limit(connection: Connection) -> None:
    """Set PostgreSQL's limit of this read (if any) for the transaction; a SELECT, as psycopg2's
    streaming connection runs statements through DECLARE ... CURSOR, which refuses SET."""
    value = connection.get_execution_options().get(_LIMIT_OPTION)
    if value:
        connection.execute(text("SELECT set_config('statement_timeout', :value, true)"), {"value": value})


def _limit_statements(connection: Connection) -> _Limit | None:
    """Set :data:`STATEMENT_TIMEOUT_SECONDS` for one read on ``connection``, unless its URL sets
    the limit (:data:`_OWN_LIMIT`) or the session has one already (a role's, a user's); None where
    nothing was set (SQLite has no such limit; DuckDB and SQL Server are not limited here).

    Only for the read: the engine and its pool are shared with the output and labels tables, whose
    writes a source's limit is not to stop. On PostgreSQL it is set for the read's transaction
    (rolled back when the connection closes; nothing is left on the session, even behind a pooler
    such as PgBouncer); MySQL/MariaDB's is the session's, given back by :meth:`_Limit.restore`.
    """
    dialect = _dialect(connection)
    if dialect not in _OWN_LIMIT or not STATEMENT_TIMEOUT_SECONDS:
        return None
    variable, key, _ = _OWN_LIMIT[dialect]
    if variable in str(connection.engine.url.query.get(key, "")):
        return None
    seconds = STATEMENT_TIMEOUT_SECONDS
    if dialect in AWARE_DIALECTS:
        current = str(connection.execute(text("SELECT current_setting('statement_timeout')")).scalar())
    else:
        current = str(connection.exec_driver_sql(f"SELECT @@SESSION.{variable}").scalar())
    try:
        if float(current) != 0:
            return None
    except ValueError:  # PostgreSQL shows a limit with its unit ("5min"): the session has one
        return None
    if dialect in AWARE_DIALECTS:
        connection.execution_options(**{_LIMIT_OPTION: f"{max(1, round(seconds * 1000))}ms"})
        _renew_limit(connection)
        return _Limit(seconds, variable, None)
    # MariaDB's max_statement_time is in seconds, MySQL's max_execution_time in milliseconds.
    value = f"{seconds:.6f}" if dialect == "mariadb" else str(max(1, round(seconds * 1000)))
    connection.exec_driver_sql(f"SET SESSION {variable} = {value}")
    return _Limit(seconds, variable, current)


def _timed_out(exc: BaseException) -> bool:
    """Whether the server stopped the statement at its statement timeout: PostgreSQL's
    query_canceled (57014) from statement_timeout, MariaDB's 1969, MySQL's 3024."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "pgcode", None) == "57014":
        return "statement timeout" in str(orig)
    return getattr(orig, "args", ())[:1] in ((1969,), (3024,))


class _Unconvertible(Exception):
    """The driver could not convert a value of the rows fetched after the first ``first`` rows
    (the error it raised is the cause)."""

    def __init__(self, first: int) -> None:
        super().__init__(first)
        self.first = first


def _local_session_zone(connection: Connection, frame: pd.DataFrame, timestamp: str) -> str | None:
    """The session's time zone when it is not UTC and ``timestamp`` came back without a zone, on
    PostgreSQL and Redshift; else None.

    Bounds are sent there with their offset, and a ``timestamp`` column is compared with them in the
    session's zone: stored UTC, a window [01:00Z, 03:00Z) read 02:00 and 03:00 in Paris, while the
    naive values were then taken as UTC. Nothing in the rows shows it.
    """
    if connection.dialect.name not in AWARE_DIALECTS or list(frame.columns).count(timestamp) != 1:
        return None  # twice is refused after this
    if not pd.api.types.is_datetime64_dtype(frame[timestamp].dtype):  # aware ones are exact
        return None
    try:
        # A SELECT: the connection streams through DECLARE ... CURSOR, which refuses SHOW.
        zone = str(connection.execute(text("SELECT current_setting('TimeZone')")).scalar())
    except SQLAlchemyError:
        return None
    return None if _always_utc(zone) else zone


def _always_utc(zone: str) -> bool:
    if zone.upper() in ("UTC", "GMT", "Z", "ZULU", "UCT", "UNIVERSAL", "GREENWICH"):
        return True
    try:
        info = ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError):
        return False  # a POSIX zone such as <+09>-09
    return all(info.utcoffset(datetime(2024, month, 1)) == timedelta(0) for month in (1, 7))


def _convert(rows: Sequence[tuple], columns: list[str]) -> pd.DataFrame:
    """``rows`` as ``pd.read_sql`` converts them, before it moves aware timestamps to UTC."""
    return pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)


def _assemble(chunks: list[list[pd.Series]], columns: list[str]) -> pd.DataFrame:
    """One frame of the converted chunks, each column of the dtype and values one conversion of
    all the rows gives.

    A chunk's dtype depends on the values in it: a column NULL throughout one chunk is object
    there, an integer column is int64 in a chunk without NULLs and float64 in one with; strings
    are str, or object where all NULL; aware timestamps of one offset are datetime64 of that
    offset, of several (summer time) object. Where the chunks disagree, the column's values go
    back to the Python objects the driver gave and are converted again all at once.
    """
    if not chunks:
        return pd.DataFrame(columns=columns)
    result: dict[int, pd.Series] = {}
    for i in range(len(columns)):
        # Taken out of the chunks column by column, so each is freed once assembled.
        parts = [chunk.pop(0) for chunk in chunks]
        dtypes = {part.dtype for part in parts}
        if len(dtypes) == 1 or dtypes == {np.dtype("int64"), np.dtype("float64")}:
            # The same dtype from every chunk is the dtype of all rows (object chunks hold the
            # driver's objects as they are); int64 and float64 (NULLs in some chunks) concatenate
            # to the float64 that ints with NULLs convert to.
            column = pd.concat(parts, ignore_index=True)
        else:
            values = [(value,) for part in parts for value in _driver_values(part)]
            column = _convert(values, ["value"])["value"]
        # As pd.read_sql does: aware timestamps in UTC, whatever offset the session gave. Through
        # tz_convert, which keeps the values: pd.to_datetime(utc=True) gave the same column in a
        # copy, made through another, three times the column's memory at once.
        result[i] = column.dt.tz_convert("UTC") if isinstance(column.dtype, pd.DatetimeTZDtype) else column
    frame = pd.DataFrame(result, copy=False)  # the columns are new already: no second copy of the window
    frame.columns = pd.Index(columns)
    return frame


def _driver_values(part: pd.Series) -> Iterable[Any]:
    """The Python objects that ``part`` was converted from: timestamps as datetimes, NULL as None.

    Exact but for float64 parts: their ints and Decimals come back as floats and their NULLs as
    NaN (a float NaN from the database converts as NULL does). It shows only where the column's
    other chunks hold text, which SQLite alone allows: there the numbers stay objects, equal but
    floats, and the NULLs NaN.
    """
    if part.dtype == object:
        return part.to_numpy()
    if part.dtype == np.dtype("float64"):
        return part.astype(object).to_numpy()
    if part.dtype.kind == "M":
        return [None if value is pd.NaT else value.to_pydatetime() for value in part.astype(object)]
    if part.dtype.kind == "m":
        return [None if value is pd.NaT else value.to_pytimedelta() for value in part.astype(object)]
    return part.astype(object).where(part.notna(), None).to_numpy()


def _sqlite_text(moment: datetime) -> str:
    """``moment`` (UTC) as SQLite text, its trailing zero fields dropped (02:00:00 gives
    ``2024-01-01 02:00``, midnight ``2024-01-01``).

    A bound written with more digits than the stored text would miss rows exactly at it:
    ``'2024-01-01 02:00:00' < '2024-01-01 02:00:00.000000'``. A stored text with extra zero
    digits sorts after the shorter bound, and one of an earlier time differs within the bound's
    digits, so the shortest form compares exactly with every precision of the same layout.
    Hours keep their minutes: ``2024-01-01 02`` is no SQLite time string, so ``unixepoch(:start)``
    or ``datetime(:start)`` (epoch integers, ISO text with ``T``) were NULL and the window empty.
    """
    stamp = moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds").rstrip("0").removesuffix(".")
    stamp = stamp.removesuffix(":00")  # seconds
    return stamp.removesuffix(" 00:00")  # the time of midnight: a date alone is a SQLite time string too


#: Dialects that compare a text column with the bounds as text (SQLite has no date type; MySQL
#: and MariaDB compare a VARCHAR with the bound's literal), and what to do when the text does not
#: sort with them.
_TEXT_ADVICE = {
    "sqlite": "Compare the column through SQLite's datetime(), which reads the T and converts offsets to UTC: "
    "WHERE datetime({ts}) >= datetime(:start) AND datetime({ts}) < datetime(:end); or store UTC text as "
    "YYYY-MM-DD HH:MM:SS.",
    "mysql": "Compare CAST({ts} AS DATETIME(6)) with :start and :end, which reads the T (not an offset: store "
    "such text in UTC), or store the column as DATETIME(6) in UTC.",
}
_TEXT_ADVICE["mariadb"] = _TEXT_ADVICE["mysql"]

#: Stored text that does not sort with the bounds' ``YYYY-MM-DD HH:MM``: a ``T`` sorts after the
#: space, and a local time with an offset sorts by its local digits.
_T_LAYOUT = re.compile(r"^\d{4}-\d{2}-\d{2}T")
_LOCAL_OFFSET = re.compile(r"[+-](?!00:?00$)\d{2}:?\d{2}$")


def _text_misread(
    timestamp: str, query: str, frame: pd.DataFrame, params: dict[str, Any], window: tuple[pd.Timestamp | None, pd.Timestamp | None]
) -> str | None:
    """What is wrong when ``query`` compares the stored text of ``timestamp`` itself with the bounds
    of ``window``, and the rows it returned show text that does not sort with them; else None.

    The rows were read, so nothing else tells: ``ts >= :start`` over ``2024-01-01T02:00:00Z`` missed
    every row of the end's day before the end, and an hourly window on one day came back empty,
    read as "the data may not have landed yet".
    """
    bounded = [bound for bound in window if bound is not None]  # unbounded sides read every row
    if not bounded or timestamp not in frame.columns or frame[timestamp].dtype.kind not in "OT":
        return None
    column = rf'(?:\w+\.)?(?:"{re.escape(timestamp)}"|`{re.escape(timestamp)}`|\[{re.escape(timestamp)}\]|{re.escape(timestamp)}\b)'
    compared = rf"(?<![\w.(]){column}\s*(?:>=|>|<=|<)\s*:(?:start|end)\b|:(?:start|end)\s*(?:<=|<|>=|>)\s*{column}(?!\s*\()"
    if not re.search(compared, query, re.IGNORECASE):
        return None
    stored = pd.Series([value for value in frame[timestamp].dropna().head(1000) if isinstance(value, str)], dtype=object)
    timed = any(bound != bound.normalize() for bound in bounded)  # a date alone sorts before both layouts alike
    odd = stored[stored.str.contains(_LOCAL_OFFSET) | (timed & stored.str.contains(_T_LAYOUT))]
    if odd.empty:
        return None
    return (
        f"column {timestamp!r} holds text such as {odd.iloc[0]!r}, which the query compares as text with the window's "
        f"bounds ('{params['start']}', '{params['end']}'), and such text does not sort with them, so rows inside "
        "the window may be missed and rows outside it read"
    )


def _reason(exc: BaseException, secret: str | None) -> str:
    # The driver's own message, without SQLAlchemy's statement echo and link to its docs.
    orig = getattr(exc, "orig", None) or exc
    match orig.args:
        case (int() as code, str() | bytes() as text) | ((int() as code, str() | bytes() as text),):
            # PyMySQL raises (code, message); pymssql ((code, message),), in bytes, lines twice.
            text = text.decode(errors="replace") if isinstance(text, bytes) else text
            lines = dict.fromkeys(line.strip() for line in text.splitlines() if line.strip())
            message = f"{' '.join(lines)} (error {code})"
        case _:
            message = str(orig)
    message = re.sub(r"\s*\(Background on this error at: \S+\)", "", message).strip()
    # Drivers do not echo passwords in the messages seen so far; a future one might.
    return message.replace(secret, "***") if secret else message


def _unless_leaking(exc: BaseException, secret: str | None) -> BaseException | None:
    """``exc`` as the cause to chain, or None when its text holds the password: Airflow logs the
    whole chain, and the password must not reach the task log."""
    return None if secret and secret in str(exc) else exc
