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
  is not UTC).
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
  trailing zero fields (:func:`_sqlite_text`), which compares exactly with both.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, DateTime, String, TextClause, bindparam, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from pipelines.config import JobConfig, SqlSource
from pipelines.db import engine_for, file_database
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
        engine = engine_for(self.config.connection)
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
                frame = _read_frame(connection, query, params)
            except SQLAlchemyError as cause:  # raised by the query or by any fetch of its chunks
                unbound = re.search(r"A value is required for bind parameter '(\w+)'", str(cause))
                raise fail(
                    f"the query failed ({_reason(cause, secret)})",
                    f"Set :{unbound[1]} in `params`; if that colon does not start a parameter (it is inside "
                    f"a string or a comment), write it as \\:{unbound[1]}."
                    if unbound
                    else "Check the query against the database (tables, columns, syntax), that this user may "
                    "read them, and that every :name in it is set in `params`.",
                ) from _unless_leaking(cause, secret)
        log.info("job %s: read %d rows from %s", self.job.name, len(frame), self.config.describe())
        return job_columns(frame, self.job).reset_index(drop=True)


def _read_frame(connection: Connection, query: TextClause, params: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``query`` as ``pd.read_sql`` gives them, read in chunks of :data:`CHUNK_ROWS`
    through a server-side cursor (PostgreSQL, MySQL/MariaDB; SQLite and DuckDB fetch as asked)."""
    try:
        result = connection.execution_options(stream_results=True).execute(query, params)
    except DBAPIError:
        if connection.dialect.name not in AWARE_DIALECTS:
            raise
        # psycopg2 streams through ``DECLARE ... CURSOR FOR <query>``, which takes one SELECT:
        # a query of several statements (``SET LOCAL ...; SELECT ...``) that a plain execute
        # runs is refused, and any other failure names the DECLARE. Run as pd.read_sql did: the
        # result is buffered by libpq, as text; Python objects are still made a chunk at a time.
        connection.rollback()
        result = connection.execution_options(stream_results=False).execute(query, params)
    columns = list(result.keys())
    chunks: list[list[pd.Series]] = []
    while rows := result.fetchmany(CHUNK_ROWS):
        chunk = _convert([tuple(row) for row in rows], columns)
        chunks.append([chunk.iloc[:, i] for i in range(len(columns))])
    return _assemble(chunks, columns)


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
        # As pd.read_sql does: aware timestamps in UTC, whatever offset the session gave.
        result[i] = pd.to_datetime(column, utc=True) if isinstance(column.dtype, pd.DatetimeTZDtype) else column
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
    """``moment`` (UTC) as SQLite text, its trailing zero fields dropped (02:00:00 gives ``2024-01-01 02``).

    A bound written with more digits than the stored text would miss rows exactly at it:
    ``'2024-01-01 02:00:00' < '2024-01-01 02:00:00.000000'``. A stored text with extra zero
    digits sorts after the shorter bound, and one of an earlier time differs within the bound's
    digits, so the shortest form compares exactly with every precision of the same layout.
    """
    stamp = moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds").rstrip("0").removesuffix(".")
    for zeros in (":00", ":00", " 00"):  # seconds, minutes, then the hour of midnight
        if not stamp.endswith(zeros):
            break
        stamp = stamp.removesuffix(zeros)
    return stamp


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
