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

A process killed between two moves (SIGKILL, a lost worker) undoes nothing. Files on an object
store cannot be swapped together, so the write is made recoverable instead of atomic: once every
new file is staged, a journal ``<root>/job=<job>/_pending/<token>.json`` names the day files the
write replaces or removes, and it is removed when the last one is done. The next write of the job
(of any window) first finishes every journal it finds, moving the staged files that are left onto
their targets: after a kill, the day files hold all the old rows (killed while staging: no journal
yet) or, from the next write on, all the new ones. Readers in between may see some days replaced
and others not. This assumes, like the read-modify-write of the day files itself, that two writes
of one job never overlap: in a local folder a lock makes them take turns; on object stores the
DAG runs one publish of a job at a time.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from pipelines import schema, storage
from pipelines.errors import SinkError, StorageError
from pipelines.sinks.base import as_output, checked_batch, utc

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

PART = "part-0.parquet"
#: Longest wait for another write of the same job to a local folder (see ParquetSink._exclusive).
WRITE_LOCK_TIMEOUT_SECONDS = 900.0
#: Folder (beside the job's date= folders) of the journals of writes not finished yet.
PENDING = "_pending"

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
        with self._exclusive(job, where):
            return self._replace(frame, job=job, dimensions=dimensions, start=start, end=end, where=where)

    @contextlib.contextmanager
    def _exclusive(self, job: str, where: str) -> Iterator[None]:
        """In a local folder, wait until no other write of ``job`` runs (see the module docstring).

        Each write reads the day files, then replaces them: two at once (a CLI predict during a
        scheduled publish, two backfill runs) both read the same day file, and the later one
        dropped the rows the other wrote. The lock is ``flock`` on the job's folder, released
        when its descriptor is closed, so also when the process is killed. Object stores have no
        lock: there the DAG runs one publish of a job at a time.
        """
        fs, folder = storage.filesystem(storage.join(self.root, f"job={job}"), self.storage_options)
        if not isinstance(fs, LocalFileSystem) or fcntl is None:
            yield
            return
        try:
            os.makedirs(folder, exist_ok=True)
            descriptor = os.open(folder, os.O_RDONLY)
        except OSError as exc:
            raise SinkError(f"{where}: cannot create or open {folder} ({exc.strerror or exc}); no file was changed") from exc
        try:
            deadline = time.monotonic() + WRITE_LOCK_TIMEOUT_SECONDS
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise SinkError(
                            f"{where}: another write of job {job!r} to {folder} has not ended after "
                            f"{WRITE_LOCK_TIMEOUT_SECONDS:.0f} s; no file was changed. Wait for it or stop it, then rerun"
                        ) from None
                    time.sleep(0.05)
                except OSError as exc:  # a file system without flock on folders (some NFS setups)
                    log.warning("job %s: cannot lock %s (%s); writing without waiting for other writers", job, folder, exc)
                    break
            yield
        finally:
            os.close(descriptor)

    def _replace(
        self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: pd.Timestamp, end: pd.Timestamp, where: str
    ) -> list[str]:
        # Before reading the day files: a write killed half-way left some of them replaced.
        self._recover(job, where)
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
        written = self._apply(job, changes, where)
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

    def _journal(self, job: str, token: str) -> str:
        return storage.join(self.root, f"job={job}", PENDING, f"{token}.json")

    @staticmethod
    def _staged(url: str, token: str) -> str:
        folder, _, name = url.rpartition("/")
        return f"{folder}/{storage.temporary_name(name, token)}"

    def _recover(self, job: str, where: str) -> None:
        """Finish the writes of ``job`` that a killed process left half-done (see the module docstring)."""
        folder = storage.join(self.root, f"job={job}")
        try:
            found = storage.find(storage.join(folder, PENDING), self.storage_options)
        except FileNotFoundError:  # a missing bucket: the reads that follow name it
            return
        except StorageError as exc:  # says itself what to check (credentials, endpoint)
            raise StorageError(f"{where}: {exc} No file was changed.") from exc
        except Exception as exc:
            raise SinkError(
                f"{where}: could not list {storage.join(folder, PENDING)}: {exc}; no file was changed. Check that the "
                "storage is reachable and that this process may read and write there, then rerun"
            ) from exc
        for name in found:
            if "/" in name or not name.endswith(".json"):
                continue
            journal = storage.join(folder, PENDING, name)
            token = name.removesuffix(".json")
            try:
                entries = json.loads(storage.read_bytes(journal, self.storage_options))["files"]
                for entry in entries:
                    target = storage.join(folder, entry["path"])
                    staged = self._staged(target, token)
                    if not entry["replace"]:
                        storage.remove(target, self.storage_options)
                    elif storage.exists(staged, self.storage_options):
                        storage.move(staged, target, self.storage_options)
                    # else: moved before the kill.
                storage.remove(journal, self.storage_options)
            except Exception as exc:
                raise SinkError(
                    f"{where}: could not finish the earlier write of this job recorded in {journal} (it was interrupted "
                    f"after some of its day files were replaced): {exc}; no file of this window was changed. Fix the cause "
                    "and rerun; if that file is not valid JSON with a \"files\" list, this sink did not write it: remove it"
                ) from exc
            log.warning(
                "job %s: finished a write that was interrupted after %s was recorded: %s",
                job, journal, ", ".join(entry["path"] for entry in entries),
            )

    def _apply(self, job: str, changes: list[_Change], where: str) -> list[str]:
        """Make every change or none: stage the new files, then replace the targets, undoing on failure."""
        token = uuid.uuid4().hex[:12]
        staged: dict[str, str] = {}
        touched: list[_Change] = []
        journal = self._journal(job, token)
        recorded = False
        doing = ""
        try:
            for change in changes:
                if change.new is not None:
                    staged[change.url] = self._staged(change.url, token)
                    doing = f"writing {change.url} (as {staged[change.url]})"
                    storage.atomic_write(staged[change.url], change.new, self.storage_options)
            if changes:
                prefix = storage.join(self.root, f"job={job}") + "/"
                files = [{"path": change.url.removeprefix(prefix), "replace": change.new is not None} for change in changes]
                doing = f"recording the write in {journal}"
                recorded = True  # counted before it is done, as the moves below
                storage.atomic_write(journal, json.dumps({"files": files}).encode(), self.storage_options)
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
            if recorded and not self._forget(journal):
                # Undoing now would leave a journal that the next write completes over the undone files.
                state = (
                    f"the next write of job {job!r} finishes this one from {journal}, so that all day files of the window "
                    "agree"
                )
            else:
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
        if recorded and not self._forget(journal):
            log.warning("job %s: the next write of the job removes %s (all its files were replaced)", job, journal)
        for change in changes:
            if change.new is None:
                log.info("removed %s: its only rows were in the replaced window", change.url)
        return [change.url for change in changes if change.new is not None]

    def _forget(self, journal: str) -> bool:
        """Remove the journal of a write; False when that failed."""
        try:
            storage.remove(journal, self.storage_options)
        except Exception as exc:
            log.error("could not remove %s: %s", journal, exc)
            return False
        return True

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
            try:
                frames.append(self._read(storage.join(folder, path), job))
            except FileNotFoundError:
                # Removed since the listing by a write that left no rows in that day: there are none to read.
                log.debug("job %s: %s/%s was removed while reading", job, folder, path)
        if not frames:
            return as_output(schema.arrow_schema([]).empty_table().to_pandas())
        rows = pd.concat(frames, ignore_index=True)
        if low is not None:
            rows = rows[rows["timestamp"] >= low]
        if high is not None:
            rows = rows[rows["timestamp"] < high]
        return as_output(rows)
