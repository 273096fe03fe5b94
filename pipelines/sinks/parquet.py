"""Labeled anomalies as a Parquet dataset, one file per job and UTC day (hive-style folders)::

    <root>/job=<job>/date=<YYYY-MM-DD>/part-0.parquet

As hive partitioning expects, the ``job`` column lives in the folder name and not in the files,
so that ``pd.read_parquet(root)``, DuckDB or Spark read the whole dataset without a type clash.
"""

from __future__ import annotations

import io
import logging
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import schema, storage
from pipelines.sinks.base import as_output, checked_batch, utc

log = logging.getLogger(__name__)

PART = "part-0.parquet"


class ParquetSink:
    """Writes a job's output window by rewriting the day files the window touches."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.root = root
        self.storage_options = storage_options or {}

    def _url(self, job: str, day: pd.Timestamp) -> str:
        return storage.join(self.root, f"job={job}", f"date={day:%Y-%m-%d}", PART)

    def _read(self, url: str, job: str) -> pd.DataFrame:
        frame = pq.read_table(io.BytesIO(storage.read_bytes(url, self.storage_options))).to_pandas()
        return frame.assign(job=job)

    def write(
        self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: datetime, end: datetime
    ) -> list[str]:
        """Replace the rows of ``job`` in ``[start, end)`` by ``frame``; returns the files written.

        A day file is rewritten whole (old rows outside the window kept), and deleted when
        nothing is left in it.
        """
        frame, start, end = checked_batch(frame, job=job, dimensions=dimensions, start=start, end=end)
        days = pd.date_range(start.normalize(), (end - pd.Timedelta(1, "us")).normalize(), freq="D")
        file_schema = schema.arrow_schema(dimensions)
        file_schema = file_schema.remove(file_schema.get_field_index("job"))
        # Grouped once: selecting each day's rows with a mask over the whole frame would cost
        # rows × days.
        by_day = {day: rows for day, rows in frame.groupby(frame["timestamp"].dt.normalize(), sort=False)}
        empty = frame.iloc[:0]
        written = []
        for day in days:
            url = self._url(job, day)
            parts = [by_day.get(day, empty)]
            if storage.exists(url, self.storage_options):
                old = self._read(url, job)
                # A job whose dimensions changed keeps its old rows, with the new columns empty.
                old = schema.conform(old.reindex(columns=schema.output_columns(dimensions)), dimensions)
                parts.append(old[(old["timestamp"] < start) | (old["timestamp"] >= end)])
            elif parts[0].empty:
                continue
            rows = pd.concat(parts, ignore_index=True).sort_values(["series", "timestamp", "feature"])
            if rows.empty:
                storage.remove(url, self.storage_options)
                log.info("removed %s: its only rows were in the replaced window", url)
                continue
            table = pa.Table.from_pandas(rows.drop(columns="job"), schema=file_schema, preserve_index=False)
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            storage.atomic_write(url, buffer.getvalue(), self.storage_options)
            written.append(url)
        log.info("wrote %d rows of job %s for [%s, %s) to %d files", len(frame), job, start, end, len(written))
        return written

    def read(self, *, job: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Rows of ``job`` in ``[start, end)``, reading only the day files of that range."""
        low = utc(start) if start is not None else None
        high = utc(end) if end is not None else None
        folder = storage.join(self.root, f"job={job}")
        frames = []
        for path in storage.find(folder, self.storage_options):
            partition, _, name = path.partition("/")
            if name != PART or not partition.startswith("date="):
                continue
            day = pd.Timestamp(partition.removeprefix("date="), tz="UTC")
            if (low is not None and day + pd.Timedelta(days=1) <= low) or (high is not None and day >= high):
                continue
            frames.append(self._read(storage.join(folder, path), job))
        if not frames:
            return as_output(schema.arrow_schema([]).empty_table().to_pandas())
        rows = pd.concat(frames, ignore_index=True)
        if low is not None:
            rows = rows[rows["timestamp"] >= low]
        if high is not None:
            rows = rows[rows["timestamp"] < high]
        return as_output(rows)
