"""Labeled anomalies as a Parquet dataset, one file per job and UTC day (hive-style folders)::

    <root>/job=<job>/date=<YYYY-MM-DD>/part-0.parquet

As hive partitioning expects, the ``job`` column lives in the folder name and not in the files,
so that ``pd.read_parquet(root)``, DuckDB or Spark read the whole dataset without a type clash.
After a job's dimensions change, its day files differ in their dimension columns: ``read`` takes
the union, as do DuckDB's ``read_parquet(..., union_by_name=true)`` and
``pyarrow.dataset.dataset(..., schema=pa.unify_schemas(...))``; ``pd.read_parquet`` of the folder
takes the columns of the first file it meets.

A window may span several day files, and they change together: every new file is first written
under a hidden temporary name next to its target (hive readers skip names starting with ``.``),
then moved onto it; if anything fails before the last target is replaced, the targets already
replaced get their old content back (kept in memory, since it was read anyway), so each day file
holds all its old rows or all its new ones for the window.
"""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import schema, storage
from pipelines.errors import SinkError, StorageError
from pipelines.sinks.base import as_output, checked_batch, utc

log = logging.getLogger(__name__)

PART = "part-0.parquet"

_BAD_FILE = (
    "Fix or remove that file (removing it drops the rows of its day), then rerun: the write replaces the window, "
    "so a rerun adds no duplicates"
)


@dataclass(frozen=True)
class _Change:
    """What a write does to one day file: ``new`` is ``None`` to delete it, ``old`` when there was none."""

    url: str
    new: bytes | None
    old: bytes | None


class ParquetSink:
    """Writes a job's output window by rewriting the day files the window touches."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.root = root
        self.storage_options = storage_options or {}

    def _url(self, job: str, day: pd.Timestamp) -> str:
        return storage.join(self.root, f"job={job}", f"date={day:%Y-%m-%d}", PART)

    def _frame(self, data: bytes, job: str) -> pd.DataFrame:
        return pq.read_table(io.BytesIO(data)).to_pandas().assign(job=job)

    def _read(self, url: str, job: str) -> pd.DataFrame:
        data = storage.read_bytes(url, self.storage_options)
        try:
            return self._frame(data, job)
        except (ValueError, pa.ArrowException) as exc:  # a truncated or foreign file, not this sink's
            raise SinkError(f"job {job!r}: {url} is not a readable Parquet file ({exc}). {_BAD_FILE}") from exc

    def write(
        self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: datetime, end: datetime
    ) -> list[str]:
        """Replace the rows of ``job`` in ``[start, end)`` by ``frame``; returns the files written.

        A day file is rewritten whole (old rows outside the window kept), and deleted when
        nothing is left in it. The day files change together (see the module docstring).
        """
        frame, start, end = checked_batch(frame, job=job, dimensions=dimensions, start=start, end=end)
        where = f"job {job!r}, window [{start}, {end})"
        days = pd.date_range(start.normalize(), (end - pd.Timedelta(1, "us")).normalize(), freq="D")
        # Grouped once: selecting each day's rows with a mask over the whole frame would cost
        # rows × days.
        by_day = {day: rows for day, rows in frame.groupby(frame["timestamp"].dt.normalize(), sort=False)}
        empty = frame.iloc[:0]
        changes = []
        for day in days:
            url = self._url(job, day)
            parts = [by_day.get(day, empty)]
            old_data = self._read_old(url, where)
            if old_data is None and parts[0].empty:
                continue
            try:
                file_dimensions = list(dimensions)
                if old_data is not None:
                    old = self._frame(old_data, job)
                    # A job whose dimensions changed keeps its old rows whole: a dimension the job
                    # dropped stays a column of the day file (empty on new rows), one it added is
                    # empty on old rows. The SQL sink keeps both columns the same way.
                    file_dimensions += [c for c in old.columns if c not in schema.OUTPUT_COLUMNS and c not in dimensions]
                    old = old.reindex(columns=schema.output_columns(file_dimensions))
                    parts.append(old[(old["timestamp"] < start) | (old["timestamp"] >= end)])
                rows = pd.concat([part.reindex(columns=schema.output_columns(file_dimensions)) for part in parts])
                rows = schema.conform(rows, file_dimensions).sort_values(["series", "timestamp", "feature"])
                new_data = None
                if not rows.empty:
                    file_schema = schema.arrow_schema(file_dimensions)
                    file_schema = file_schema.remove(file_schema.get_field_index("job"))
                    table = pa.Table.from_pandas(rows.drop(columns="job"), schema=file_schema, preserve_index=False)
                    buffer = io.BytesIO()
                    pq.write_table(table, buffer)
                    new_data = buffer.getvalue()
            except Exception as exc:
                raise SinkError(f"{where}: could not read or rebuild {url}: {exc}; no file was changed. {_BAD_FILE}") from exc
            changes.append(_Change(url, new_data, old_data))
        written = self._apply(changes, where)
        log.info("wrote %d rows of job %s for [%s, %s) to %d files", len(frame), job, start, end, len(written))
        return written

    def _read_old(self, url: str, where: str) -> bytes | None:
        """The day file's current content, None when there is none. A store out of reach is no
        fault of the file: "fix or remove that file" would be the wrong advice for it."""
        try:
            return storage.read_bytes(url, self.storage_options)
        except FileNotFoundError:
            return None
        except StorageError as exc:  # says itself what to check (credentials, endpoint)
            raise StorageError(f"{where}: {exc} No file was changed.") from exc
        except Exception as exc:  # permissions, a network error s3fs passes on as it is...
            raise SinkError(
                f"{where}: could not read {url}: {exc}; no file was changed. Check that the storage is reachable, "
                "that this process may read and write there and that `outputs.storage_options` are right, then "
                "rerun: the write replaces the window, so a rerun adds no duplicates"
            ) from exc

    def _apply(self, changes: list[_Change], where: str) -> list[str]:
        """Make every change or none: stage the new files, then replace the targets, undoing on failure."""
        token = uuid.uuid4().hex[:12]
        staged: dict[str, str] = {}
        touched: list[_Change] = []
        doing = ""
        try:
            for change in changes:
                if change.new is not None:
                    folder, _, name = change.url.rpartition("/")
                    staged[change.url] = f"{folder}/{storage.temporary_name(name, token)}"
                    doing = f"writing {change.url} (as {staged[change.url]})"
                    storage.atomic_write(staged[change.url], change.new, self.storage_options)
            for change in changes:
                # Counted before it is done: a move that fails half-way may have replaced the target.
                touched.append(change)
                if change.new is None:
                    doing = f"removing {change.url}"
                    storage.remove(change.url, self.storage_options)
                else:
                    doing = f"replacing {change.url}"
                    storage.move(staged[change.url], change.url, self.storage_options)
                    del staged[change.url]
        except Exception as exc:
            unrestored = self._undo(touched, staged)
            if unrestored:
                state = (
                    f"could not restore {', '.join(unrestored)}, which may hold the new rows while other day files "
                    "hold the old ones"
                )
            else:
                state = "every day file of the window keeps its previous rows"
            raise SinkError(
                f"{where}: {doing} failed: {exc}; {state}. Fix the cause and rerun: the write replaces the "
                "window, so a rerun adds no duplicates and makes all day files agree"
            ) from exc
        for change in changes:
            if change.new is None:
                log.info("removed %s: its only rows were in the replaced window", change.url)
        return [change.url for change in changes if change.new is not None]

    def _undo(self, touched: list[_Change], staged: dict[str, str]) -> list[str]:
        """Put back the old content of the ``touched`` files and drop the ``staged`` ones; the files not restored."""
        unrestored = []
        for change in touched:
            try:
                if change.old is None:
                    storage.remove(change.url, self.storage_options)
                else:
                    storage.atomic_write(change.url, change.old, self.storage_options)
            except Exception as exc:
                log.error("could not restore %s after a failed write: %s", change.url, exc)
                unrestored.append(change.url)
        for temporary in staged.values():
            with contextlib.suppress(Exception):
                storage.remove(temporary, self.storage_options)
        return unrestored

    def read(self, *, job: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Rows of ``job`` in ``[start, end)``, reading only the day files of that range."""
        low = utc(start) if start is not None else None
        high = utc(end) if end is not None else None
        folder = storage.join(self.root, f"job={job}")
        try:
            found = storage.find(folder, self.storage_options)
        except FileNotFoundError as exc:
            raise SinkError(
                f"job {job!r}: {exc}. Check `outputs.parquet` ({self.root}) and `outputs.storage_options` in the job file"
            ) from exc
        frames = []
        for path in found:
            partition, _, name = path.partition("/")
            if name != PART or not partition.startswith("date="):
                continue
            try:
                day = pd.Timestamp(partition.removeprefix("date="), tz="UTC")
            except ValueError:
                # Not a folder this sink wrote (a copy such as "date=2024-01-05 (copy)"); the
                # dashboard skips it the same way.
                log.warning("job %s: ignoring %s/%s: not a date=YYYY-MM-DD folder", job, folder, path)
                continue
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
