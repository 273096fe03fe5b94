"""SQL databases through SQLAlchemy: the job's query, with the window as bound parameters.

The query owns the window (``WHERE ts >= :start AND ts < :end``); values, the window's and the
job's ``params`` alike, are bound, never formatted into the SQL. An unbounded side of the
window is bound as the earliest or latest datetime, so the query needs no special case.

How the bounds are bound, per dialect: both are UTC, typed ``DateTime``.

- PostgreSQL gets them aware, as ``timestamptz``: exact against ``timestamptz`` columns. A
  ``timestamp without time zone`` column is compared in the session's ``TimeZone``, so store
  UTC in ``timestamptz`` (or set the session to UTC, e.g. ``?options=-c timezone=UTC``).
- Every other dialect gets them naive. SQLite has no date type: pandas and SQLAlchemy write
  ``YYYY-MM-DD HH:MM:SS.ffffff`` text, which SQLAlchemy's ``DateTime`` renders the bounds as,
  so the comparison is a string comparison in the same format, in UTC.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from functools import partial

import pandas as pd
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.exc import SQLAlchemyError

from pipelines.config import JobConfig, SqlSource
from pipelines.db import engine_for
from pipelines.errors import ConfigError
from pipelines.sources.base import bounds, job_columns, source_error, utc_bound

log = logging.getLogger(__name__)

#: Dialects whose drivers send the offset and compare in UTC; the others get naive UTC.
AWARE_DIALECTS = frozenset({"postgresql"})


class SqlReader:
    """Reads a job's :class:`~pipelines.config.SqlSource`."""

    def __init__(self, job: JobConfig) -> None:
        if not isinstance(job.source, SqlSource):
            raise TypeError(f"SqlReader reads sql sources, not {job.source.kind!r}")
        clash = sorted({"start", "end"} & set(job.source.params))
        if clash:
            raise ConfigError(
                f"job {job.name!r}: source.params must not set {clash}: :start and :end are the window. "
                "Rename those parameters in the query and in params."
            )
        self.job = job
        self.config = job.source

    def read(self, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        lo, hi = utc_bound(start), utc_bound(end)
        fail = partial(source_error, self.job, self.config.describe(), lo, hi)
        engine = engine_for(self.config.connection)
        aware = engine.dialect.name in AWARE_DIALECTS
        first, last = bounds(lo, hi)
        if not aware:
            first, last = first.replace(tzinfo=None), last.replace(tzinfo=None)
        query = text(self.config.query).bindparams(
            bindparam("start", type_=DateTime(timezone=aware)),
            bindparam("end", type_=DateTime(timezone=aware)),
        )
        params = {**self.config.params, "start": first, "end": last}
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise fail(
                f"cannot connect to the database ({_reason(exc)})",
                "Check that the database is running and reachable from this machine, and the credentials.",
            ) from exc
        with connection:
            try:
                frame = pd.read_sql(query, connection, params=params)
            except (pd.errors.DatabaseError, SQLAlchemyError) as exc:
                # pandas wraps SQLAlchemy's error in its own; the driver's message is what helps.
                cause = exc.__cause__ if isinstance(exc.__cause__, SQLAlchemyError) else exc
                raise fail(
                    f"the query failed ({_reason(cause)})",
                    "Check the query against the database (tables, columns, syntax), that this user may "
                    "read them, and that every :name in it is set in `params`.",
                ) from cause
        log.info("job %s: read %d rows from %s", self.job.name, len(frame), self.config.describe())
        return job_columns(frame, self.job).reset_index(drop=True)


def _reason(exc: Exception) -> str:
    # The driver's own message, without SQLAlchemy's statement echo and link to its docs.
    message = str(getattr(exc, "orig", None) or exc)
    return re.sub(r"\s*\(Background on this error at: \S+\)", "", message).strip()
