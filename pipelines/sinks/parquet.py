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
yet) or, from the next write on, all the new ones. Readers in between read the staged files of a
journal in place of the day files they replace, so they see all the new rows too (see :meth:`ParquetSink.read`).

:meth:`ParquetSink.replacing` lets another output (publish's SQL table) commit between staging and
replacing: its journal is first written as ``<token>.prepared``, which a later write discards
(the other output rolled back too) and readers ignore; only once the block ended without an error
is it committed as ``<token>.json``, and from then on finished as above.

Two writes of one job must not overlap (each reads the day files, then replaces them): in a local
folder they take turns on a ``flock``; on S3 and GCS on a lease, the object ``_lock.json`` beside
the journals, created and renewed by conditional writes (see :class:`_Lease`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
#: Suffixes of a write's journal in PENDING: committed (finished by the next write, read by readers)
#: or only prepared (discarded by the next write, ignored by readers); see ParquetSink.replacing.
COMMITTED = ".json"
PREPARED = ".prepared"
#: The lease of a job's writes on an object store (see _Lease), beside its PENDING folder.
LOCK = "_lock.json"
#: How long a lease holds unless renewed: a killed writer blocks the job's next write this long.
LEASE_SECONDS = 120.0
#: Reads of the day files started again when a write changed them meanwhile (see ParquetSink.read).
_READ_ATTEMPTS = 3

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
        with self._exclusive(job, where) as lease:
            changes = self._replace(frame, job=job, dimensions=dimensions, start=start, end=end, where=where)
            pending = self._stage(job, changes, where, prepared=False)
            written = self._finish(pending, where, lease)
        log.info("wrote %d rows of job %s for [%s, %s) to %d files", len(frame), job, start, end, len(written))
        return written

    @contextlib.contextmanager
    def replacing(
        self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: datetime, end: datetime
    ) -> Iterator[list[str]]:
        """:meth:`write`, whose day files are replaced only when the ``with`` block ends without an error.

        For another output written in between: the block runs once every new day file is staged,
        and an error in it leaves the day files as they were. A process killed inside the block
        leaves a prepared journal, which the next write discards: commit the other output as the
        block's last step, so that both keep their old rows. Yields the files that will be written.

        The other output commits first, rather than this journal recording its write as pending
        too: a journal cannot redo a SQL write (nor can readers, who take no lock), while a
        rolled-back table and a discarded prepared journal agree without anything being redone.
        What stays open is a kill between the other output's commit and the end of the block (one
        small PUT): the table then holds the new rows and the day files the old ones until the
        interval is rerun.
        """
        frame, start, end = checked_batch(frame, job=job, dimensions=dimensions, start=start, end=end)
        where = f"job {job!r}, window [{start}, {end})"
        with self._exclusive(job, where) as lease:
            changes = self._replace(frame, job=job, dimensions=dimensions, start=start, end=end, where=where)
            pending = self._stage(job, changes, where, prepared=True)
            try:
                yield [change.url for change in changes if change.new is not None]
            except BaseException:
                self._abandon(pending)
                raise
            written = self._finish(pending, where, lease)
        log.info("wrote %d rows of job %s for [%s, %s) to %d files", len(frame), job, start, end, len(written))

    @contextlib.contextmanager
    def _exclusive(self, job: str, where: str) -> Iterator[_Lease | None]:
        """Wait until no other write of ``job`` runs (see the module docstring); yields the lease
        held on an object store, None in a local folder.

        Each write reads the day files, then replaces them: two at once (a CLI predict during a
        scheduled publish, two backfill runs) both read the same day file, and the later one
        dropped the rows the other wrote. In a local folder the lock is ``flock`` on the job's
        folder, released when its descriptor is closed, so also when the process is killed.
        """
        fs, folder = storage.filesystem(storage.join(self.root, f"job={job}"), self.storage_options)
        if not isinstance(fs, LocalFileSystem):
            if storage._is_s3(fs) or storage._is_gcs(fs):
                with _Lease(storage.join(self.root, f"job={job}", LOCK), self.storage_options, job, where) as lease:
                    yield lease
            else:  # memory://: one process, whose writes of a job the caller serializes
                yield None
            return
        if fcntl is None:
            yield None
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
            yield None
        finally:
            os.close(descriptor)

    def _replace(
        self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: pd.Timestamp, end: pd.Timestamp, where: str
    ) -> list[_Change]:
        """What the write does to each day file of the window, once the earlier writes are finished."""
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
        return changes

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

    def _journal(self, job: str, token: str, *, prepared: bool = False) -> str:
        return storage.join(self.root, f"job={job}", PENDING, f"{token}{PREPARED if prepared else COMMITTED}")

    @staticmethod
    def _staged(url: str, token: str) -> str:
        folder, _, name = url.rpartition("/")
        return f"{folder}/{storage.temporary_name(name, token)}"

    def _recover(self, job: str, where: str) -> None:
        """Finish the committed writes of ``job`` that a killed process left half-done, and discard
        its prepared ones (see the module docstring)."""
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
        names = [name for name in found if "/" not in name]
        committed = sorted(name.removesuffix(COMMITTED) for name in names if name.endswith(COMMITTED))
        prepared = sorted(name.removesuffix(PREPARED) for name in names if name.endswith(PREPARED))
        for token in committed:
            journal = self._journal(job, token)
            try:
                entries = self._entries(journal)
                for entry in entries:
                    target = storage.join(folder, entry["path"])
                    staged = self._staged(target, token)
                    if not entry["replace"]:
                        storage.remove(target, self.storage_options)
                    elif storage.exists(staged, self.storage_options):
                        storage.move(staged, target, self.storage_options)
                    # else: moved before the kill.
                if token in prepared:  # killed between committing and removing the prepared journal
                    storage.remove(self._journal(job, token, prepared=True), self.storage_options)
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
        for token in sorted(set(prepared) - set(committed)):
            # Killed before the block of replacing() ended: the other output it wrote rolled back
            # (or its commit was the step cut short), so these day files keep their old rows too.
            journal = self._journal(job, token, prepared=True)
            try:
                entries = self._entries(journal)
                for entry in entries:
                    if entry["replace"]:
                        storage.remove(self._staged(storage.join(folder, entry["path"]), token), self.storage_options)
                storage.remove(journal, self.storage_options)
            except Exception as exc:
                raise SinkError(
                    f"{where}: could not discard the earlier write of this job prepared in {journal} (it was interrupted "
                    f"before it was committed, so no day file took its rows): {exc}; no file of this window was changed. "
                    "Fix the cause and rerun; if that file is not valid JSON with a \"files\" list, this sink did not "
                    "write it: remove it"
                ) from exc
            log.warning(
                "job %s: discarded a write that was interrupted before it was committed (%s): %s kept their rows",
                job, journal, ", ".join(entry["path"] for entry in entries),
            )

    def _entries(self, journal: str) -> list[dict[str, Any]]:
        return json.loads(storage.read_bytes(journal, self.storage_options))["files"]

    def _stage(self, job: str, changes: list[_Change], where: str, *, prepared: bool) -> _Pending:
        """Write the new day files under their staging names and the journal of the write (committed
        unless ``prepared``); on failure nothing is left, and the error says so."""
        pending = _Pending(job, uuid.uuid4().hex[:12], changes, prepared)
        journal = self._journal(job, pending.token, prepared=prepared)
        doing = ""
        try:
            for change in changes:
                if change.new is not None:
                    pending.staged[change.url] = self._staged(change.url, pending.token)
                    doing = f"writing {change.url} (as {pending.staged[change.url]})"
                    storage.atomic_write(pending.staged[change.url], change.new, self.storage_options)
            if changes:
                doing = f"recording the write in {journal}"
                pending.recorded = not prepared  # counted before it is done, as the moves
                storage.atomic_write(journal, self._record(pending), self.storage_options)
        except Exception as exc:
            raise self._failed(pending, where, doing, exc) from exc
        return pending

    def _record(self, pending: _Pending) -> bytes:
        prefix = storage.join(self.root, f"job={pending.job}") + "/"
        files = [{"path": change.url.removeprefix(prefix), "replace": change.new is not None} for change in pending.changes]
        return json.dumps({"files": files}).encode()

    def _finish(self, pending: _Pending, where: str, lease: _Lease | None) -> list[str]:
        """Commit a prepared journal, then replace the targets by the staged files; undoing on failure
        as far as nothing was committed."""
        job, changes = pending.job, pending.changes
        journal = self._journal(job, pending.token)
        doing = ""
        try:
            if pending.prepared and changes:
                if lease is not None:
                    doing = f"renewing the lock of job {job!r}"
                    lease.check()
                doing = f"recording the write in {journal}"
                pending.recorded = True
                storage.atomic_write(journal, self._record(pending), self.storage_options)
                # Left behind, it is removed with the committed journal by the next write.
                with contextlib.suppress(Exception):
                    storage.remove(self._journal(job, pending.token, prepared=True), self.storage_options)
            for change in changes:
                # Counted before it is done: a move that fails half-way may have replaced the target.
                pending.touched.append(change)
                if change.new is None:
                    doing = f"removing {change.url}"
                    storage.remove(change.url, self.storage_options)
                else:
                    doing = f"replacing {change.url}"
                    storage.move(pending.staged[change.url], change.url, self.storage_options)
                    del pending.staged[change.url]
        except Exception as exc:
            raise self._failed(pending, where, doing, exc) from exc
        if pending.recorded and not self._forget(journal):
            log.warning("job %s: the next write of the job removes %s (all its files were replaced)", job, journal)
        for change in changes:
            if change.new is None:
                log.info("removed %s: its only rows were in the replaced window", change.url)
        return [change.url for change in changes if change.new is not None]

    def _failed(self, pending: _Pending, where: str, doing: str, exc: Exception) -> SinkError:
        """Undo what ``pending`` did, unless its committed journal stays (then the next write finishes
        it); the error says which day files hold which rows."""
        job = pending.job
        journal = self._journal(job, pending.token)
        if pending.recorded and not self._forget(journal):
            # Undoing now would leave a journal that the next write completes over the undone files.
            state = (
                f"the next write of job {job!r} finishes this one from {journal}, so that all day files of the window "
                "agree"
            )
        else:
            unrestored = self._undo(pending.touched, pending.staged)
            if pending.prepared:
                self._forget(self._journal(job, pending.token, prepared=True))
            if unrestored:
                state = (
                    f"could not restore {', '.join(unrestored)}, which may hold the new rows while other day files "
                    "hold the old ones"
                )
            else:
                state = "every day file of the window keeps its previous rows"
        return SinkError(
            f"{where}: {doing} failed: {exc}; {state}. Fix the cause and rerun: the write replaces the "
            "window, so a rerun adds no duplicates and makes all day files agree"
        )

    def _abandon(self, pending: _Pending) -> None:
        """Drop the staged files and the prepared journal of a write whose ``with`` block failed; what
        is left is discarded by the next write."""
        self._undo([], pending.staged)
        if pending.changes and not self._forget(self._journal(pending.job, pending.token, prepared=True)):
            log.warning("job %s: the next write of the job discards the prepared write %s", pending.job, pending.token)

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
        """Rows of ``job`` in ``[start, end)``, reading only the day files of that range.

        A committed journal (a write killed between its moves, or one moving right now) is read,
        not finished: the staged files it names are read in place of the day files they replace,
        so the read sees every day of that write new. Finishing it here would move files under a
        writer that may still be running (readers take no lock), whose undo could then put old
        content back over the moved files. Prepared journals are ignored: their rows are not
        committed. A journal that appears or goes while the day files are read means a write
        replaced some of them meanwhile: the read starts again.
        """
        low = utc(start) if start is not None else None
        high = utc(end) if end is not None else None
        folder = storage.join(self.root, f"job={job}")
        for attempt in range(1, _READ_ATTEMPTS + 1):
            found = self._listing(job, folder)
            journals = [path for path in found if path.startswith(f"{PENDING}/") and path.endswith(COMMITTED)]
            frames = self._read_days(job, folder, found, self._overrides(job, folder, journals), low, high)
            now = self._listing(job, storage.join(folder, PENDING))
            if journals == [f"{PENDING}/{name}" for name in now if name.endswith(COMMITTED)]:
                break
            log.debug("job %s: a write changed the day files while they were read (attempt %d), reading again", job, attempt)
        else:
            log.warning("job %s: writes kept changing the day files while they were read; some days may be older than others", job)
        if not frames:
            return as_output(schema.arrow_schema([]).empty_table().to_pandas())
        rows = pd.concat(frames, ignore_index=True)
        if low is not None:
            rows = rows[rows["timestamp"] >= low]
        if high is not None:
            rows = rows[rows["timestamp"] < high]
        return as_output(rows)

    def _listing(self, job: str, url: str) -> list[str]:
        try:
            return storage.find(url, self.storage_options)
        except FileNotFoundError as exc:
            raise SinkError(
                f"job {job!r}: {exc}. Check `outputs.parquet` ({self.root}) and `outputs.storage_options` in the job file"
            ) from exc

    def replacements(self, job: str) -> dict[str, str | None]:
        """The day files (``date=<day>/part-0.parquet``) that committed writes of ``job`` not finished
        yet replace, each with the staged file to read in its place (None: the write removes it), for
        readers that list the day files themselves (the dashboard) to read as :meth:`read` does."""
        folder = storage.join(self.root, f"job={job}")
        try:
            names = storage.find(storage.join(folder, PENDING), self.storage_options)
        except FileNotFoundError:  # a missing bucket: the reads that follow name it
            return {}
        journals = [f"{PENDING}/{name}" for name in names if "/" not in name and name.endswith(COMMITTED)]
        return self._overrides(job, folder, journals)

    def _overrides(self, job: str, folder: str, journals: list[str]) -> dict[str, str | None]:
        """Day files (relative to ``folder``) that committed ``journals`` replace, each with its staged
        file, or None when it is removed."""
        overrides: dict[str, str | None] = {}
        for path in journals:
            journal = storage.join(folder, path)
            token = path.removeprefix(f"{PENDING}/").removesuffix(COMMITTED)
            try:
                entries = self._entries(journal)
                found = {
                    entry["path"]: self._staged(storage.join(folder, entry["path"]), token) if entry["replace"] else None
                    for entry in entries
                }
            except FileNotFoundError:
                # Finished since the listing, which may lack the day files it created: read() looks again.
                continue
            except (ValueError, KeyError, TypeError) as exc:
                # Journals are written whole, so this one is not this sink's: reads go on (alerts,
                # the dashboard), the next write refuses to run until it is removed.
                log.warning(
                    "job %s: ignoring %s, which is not a journal of this sink (%s); remove it (the next write of the job "
                    "fails until then)", job, journal, exc,
                )
            else:
                overrides.update(found)
        return overrides

    def _read_days(
        self,
        job: str,
        folder: str,
        found: list[str],
        overrides: dict[str, str | None],
        low: pd.Timestamp | None,
        high: pd.Timestamp | None,
    ) -> list[pd.DataFrame]:
        frames = []
        for path in sorted(set(found) | set(overrides)):
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
            urls = [storage.join(folder, path)]
            if path in overrides:
                staged = overrides[path]
                if staged is None:  # the write removes it: no rows left in that day
                    continue
                urls.insert(0, staged)  # if moved already, the day file holds the same rows
            for url in urls:
                try:
                    frames.append(self._read(url, job))
                    break
                except FileNotFoundError:
                    # Removed since the listing by a write that left no rows in that day: there are none to read.
                    log.debug("job %s: %s was removed while reading", job, url)
        return frames


@dataclass
class _Pending:
    """A write whose new day files are being staged or moved: what is left to undo on failure."""

    job: str
    token: str
    changes: list[_Change]
    prepared: bool
    #: Target URL -> its staged file, while not moved yet.
    staged: dict[str, str] = field(default_factory=dict)
    #: The changes made (or maybe made) to their targets.
    touched: list[_Change] = field(default_factory=list)
    #: Whether its committed journal may exist.
    recorded: bool = False


class _Lease:
    """An exclusive lock of one job's writes on S3 or GCS, which have no lock: the object ``url``
    holds its owner and when it expires.

    It is taken by creating the object only if there is none (S3 ``If-None-Match: *``, GCS
    ``ifGenerationMatch=0``), or by replacing an expired one only if nobody replaced it since
    (``If-Match`` its ETag, ``ifGenerationMatch`` its generation): the store decides, so two
    writers never both hold it (:func:`pipelines.storage.replace_if_unchanged`). A thread renews
    it every third of :data:`LEASE_SECONDS`, and the write checks that it still holds it before
    committing. A killed writer leaves it until it expires: the next write waits up to
    :data:`LEASE_SECONDS`. Expiry is the writer's wall-clock time, so hosts whose clocks differ by
    more than a fraction of :data:`LEASE_SECONDS` could take it early.
    """

    def __init__(self, url: str, storage_options: dict[str, Any], job: str, where: str):
        self.url, self.storage_options, self.job, self.where = url, storage_options, job, where
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _content(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + LEASE_SECONDS}).encode()

    @staticmethod
    def _holder(data: bytes | None) -> dict[str, Any] | None:
        """Who holds the lock in ``data``; None when nobody does (no object, or one expired or unreadable)."""
        if data is None:
            return None
        try:
            holder = json.loads(data)
            expired = float(holder["expires"]) < time.time()
        except (ValueError, KeyError, TypeError):
            log.warning("%s is not a lock this sink wrote; taking it over", data[:80])
            return None
        return None if expired else holder

    def __enter__(self) -> _Lease:
        deadline = time.monotonic() + WRITE_LOCK_TIMEOUT_SECONDS
        try:
            while True:
                seen = storage.read_snapshot(self.url, self.storage_options)
                holder = self._holder(seen.data)
                if holder is None:
                    if storage.replace_if_unchanged(self.url, self._content(), seen, self.storage_options):
                        break
                    continue  # another writer took it first: look again
                if time.monotonic() > deadline:
                    until = datetime.fromtimestamp(float(holder["expires"]), tz=timezone.utc)
                    raise SinkError(
                        f"{self.where}: another write of job {self.job!r} ({holder.get('owner')}) has held {self.url} for "
                        f"more than {WRITE_LOCK_TIMEOUT_SECONDS:.0f} s and keeps it until {until:%Y-%m-%d %H:%M:%S} UTC "
                        "unless renewed; no file was changed. Wait for it or stop it, then rerun"
                    )
                log.info("job %s: waiting for another write of the job (%s) to release %s", self.job, holder.get("owner"), self.url)
                time.sleep(min(1.0, LEASE_SECONDS / 10))
        except SinkError:
            raise
        except StorageError as exc:  # says itself what to check (credentials, endpoint)
            raise StorageError(f"{self.where}: {exc} No file was changed.") from exc
        except Exception as exc:
            raise SinkError(
                f"{self.where}: could not take the lock {self.url} of the job's writes: {exc}; no file was changed. Check "
                "that the storage is reachable, that this process may write there and, for an S3-compatible store, "
                "that it supports conditional writes (If-None-Match, If-Match), then rerun"
            ) from exc
        self._renewer = threading.Thread(target=self._renew, name=f"lease {self.url}", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                seen = storage.read_snapshot(self.url, self.storage_options)
                holder = json.loads(seen.data) if seen.data is not None else {}
                if holder.get("owner") != self.owner:
                    self.lost = f"taken over by {holder.get('owner')}" if holder else "removed"
                elif not storage.replace_if_unchanged(self.url, self._content(), seen, self.storage_options):
                    self.lost = "changed by another writer"
            except Exception as exc:  # a store briefly out of reach: try again; check() tells if it expired
                log.warning("job %s: could not renew the lock %s: %s", self.job, self.url, exc)
            if self.lost:
                log.error("job %s: lost the lock %s (%s)", self.job, self.url, self.lost)
                return

    def check(self) -> None:
        """Raise if another writer may have taken the lock: committing now could overlap its write."""
        if self.lost is None:
            seen = storage.read_snapshot(self.url, self.storage_options)
            holder = self._holder(seen.data)
            if holder is None or holder.get("owner") != self.owner:
                self.lost = "expired before it was renewed" if holder is None else f"taken over by {holder.get('owner')}"
        if self.lost:
            raise SinkError(f"lost the lock {self.url} of the job's writes ({self.lost}); another write of the job may run")

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            seen = storage.read_snapshot(self.url, self.storage_options)
            if seen.data is not None and json.loads(seen.data).get("owner") == self.owner:
                storage.remove(self.url, self.storage_options)
        except Exception as exc:  # expires by itself
            log.warning("job %s: could not release the lock %s (%s); it expires within %.0f s", self.job, self.url, exc, LEASE_SECONDS)
