"""Labeled anomalies in a database table shared by all jobs (any SQLAlchemy database).

Timestamps are stored as naive UTC ``DateTime``: SQLite has no time zones, and one convention
for every database keeps the comparisons of the window identical everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from pipelines import schema
from pipelines.errors import SinkError
from pipelines.sinks.base import as_output, checked_batch, utc

log = logging.getLogger(__name__)

BATCH_ROWS = 5_000

_TYPES: dict[str, type[sa.types.TypeEngine[Any]]] = {"string": sa.Text, "double": sa.Double, "bool": sa.Boolean}
_KEYS = ("job", "series", "timestamp", "feature")


def _column(name: str, kind: str) -> sa.Column[Any]:
    type_ = sa.DateTime(timezone=False) if kind.startswith("timestamp") else _TYPES[kind]()
    return sa.Column(name, type_, nullable=name not in _KEYS)


def _naive(moment: pd.Timestamp) -> datetime:
    return moment.tz_convert("UTC").tz_localize(None).to_pydatetime()


def _records(frame: pd.DataFrame) -> Iterator[list[dict[str, Any]]]:
    """Rows as plain Python values (naive UTC times, ``None`` for missing), in batches."""
    for first in range(0, len(frame), BATCH_ROWS):
        chunk = frame.iloc[first : first + BATCH_ROWS].copy()
        for name, kind in schema.OUTPUT_COLUMNS.items():
            if kind.startswith("timestamp"):
                chunk[name] = chunk[name].dt.tz_convert("UTC").dt.tz_localize(None)
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

    def _definition(self, dimensions: list[str]) -> sa.Table:
        columns = [_column(name, kind) for name, kind in schema.OUTPUT_COLUMNS.items()]
        columns += [sa.Column(dim, sa.Text, nullable=True) for dim in dimensions]
        # The naming convention shortens the index name where the database limits its length.
        metadata = sa.MetaData(naming_convention={"ix": "ix_%(table_name)s_%(column_0_N_name)s"})
        table = sa.Table(self.table, metadata, *columns, schema=self.db_schema)
        sa.Index(None, table.c.job, table.c.timestamp)
        return table

    def _prepare(self, table: sa.Table, dimensions: list[str]) -> None:
        """Create the table, or add the dimension columns it lacks (other jobs have other dimensions)."""
        with self.engine.begin() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(self.table, schema=self.db_schema):
                table.create(conn)
                log.info("created table %s", self.name)
                return
            present = {column["name"] for column in inspector.get_columns(self.table, schema=self.db_schema)}
            quote = conn.dialect.identifier_preparer
            text_type = sa.Text().compile(dialect=conn.dialect)
            for dim in (d for d in dimensions if d not in present):
                conn.execute(
                    sa.text(f"ALTER TABLE {quote.format_table(table)} ADD COLUMN {quote.quote(dim)} {text_type}")
                )
                log.info("added dimension column %s to table %s", dim, self.name)

    def write(self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: datetime, end: datetime) -> int:
        """Replace the rows of ``job`` in ``[start, end)`` by ``frame``; returns the rows written."""
        frame, start, end = checked_batch(frame, job=job, dimensions=dimensions, start=start, end=end)
        table = self._definition(dimensions)
        try:
            self._prepare(table, dimensions)
            with self.engine.begin() as conn:
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
                    for records in _records(frame):
                        conn.execute(sa.insert(table), records)
        except Exception as exc:
            raise SinkError(
                f"could not write {len(frame)} rows of job {job!r} for [{start}, {end}) to table {self.name!r}: "
                f"{getattr(exc, 'orig', None) or exc}; the window keeps its previous rows (rolled back). "
                "Fix the cause and rerun: the write replaces the window, so a rerun adds no duplicates"
            ) from exc
        log.info(
            "replaced %d rows by %d of job %s for [%s, %s) in table %s", deleted, len(frame), job, start, end, self.name
        )
        return len(frame)

    def read(self, *, job: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Rows of ``job`` in ``[start, end)`` with UTC-aware times, in the output schema."""
        try:
            with self.engine.connect() as conn:
                table = sa.Table(self.table, sa.MetaData(), schema=self.db_schema, autoload_with=conn)
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
        # The table holds the dimension columns of every job; those of other jobs are empty here.
        other = [c for c in rows.columns if c not in schema.OUTPUT_COLUMNS and rows[c].isna().all()]
        return as_output(rows.drop(columns=other))
