"""Files: one file, a glob (``data/*.csv``) or a folder; local or any fsspec URL (``s3://``).

Formats are csv, jsonl (JSON lines) and parquet, inferred from the suffix unless the job sets
``format``. Parquet reads only the job's columns and, when the timestamp column has a
timestamp type, lets Arrow skip what lies outside the window; csv and jsonl are read whole and
filtered here. Text timestamps are parsed by :func:`~pipelines.sources.base.parse_timestamps`:
naive ones are taken as UTC, and unparseable ones are kept for validation to report.
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import PurePosixPath

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from pipelines.config import FileSource, JobConfig, base_dir, resolve_path
from pipelines.errors import SourceError
from pipelines.sources.base import job_columns, parse_timestamps, source_error, utc_bound, window_mask

log = logging.getLogger(__name__)

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}

Fail = Callable[[str, str], SourceError]


class FileReader:
    """Reads a job's :class:`~pipelines.config.FileSource`."""

    def __init__(self, job: JobConfig) -> None:
        if not isinstance(job.source, FileSource):
            raise TypeError(f"FileReader reads file sources, not {job.source.kind!r}")
        self.job = job
        self.config = job.source

    def _locate(self, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> tuple[str, Fail, AbstractFileSystem, list[str], str]:
        """The resolved path, the error factory, the file system, the files and their format."""
        path = resolve_path(self.config.path)
        fail: Fail = partial(source_error, self.job, f"file source {path!r}", lo, hi)
        fs, root = url_to_fs(path, **self.config.storage_options)
        # fsspec shares one filesystem per URL and caches listings; a long-lived worker must
        # see the files that landed since its last read.
        fs.invalidate_cache()
        with _translated(fail, path, self.config.format or "the expected format"):
            files = self._files(fs, root, fail)
        return path, fail, fs, files, self._format(files, fail)

    def read(self, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        lo, hi = utc_bound(start), utc_bound(end)
        path, fail, fs, files, fmt = self._locate(lo, hi)
        log.info("job %s: reading %d %s file(s) from %s", self.job.name, len(files), fmt, path)
        if fmt == "parquet":
            with _translated(fail, path, fmt):
                frame, filtered = _read_parquet(fs, files, self.job, lo, hi)
        else:
            frames = []
            for file in files:
                with _translated(fail, fs.unstrip_protocol(file) if "://" in path else file, fmt):
                    frames.append(job_columns(_TEXT_READERS[fmt](fs, file, self.job), self.job))
            frame, filtered = pd.concat(frames, ignore_index=True), False
        if not filtered and self.job.timestamp in frame.columns:
            try:
                parsed = parse_timestamps(frame[self.job.timestamp])
            except ValueError as exc:
                raise fail(
                    f"column {self.job.timestamp!r} mixes timestamps with and without a time zone ({exc})",
                    "Write every timestamp with its offset (e.g. 2024-01-01T00:00:00Z) or every one "
                    "without (then taken as UTC).",
                ) from exc
            frame = frame[window_mask(parsed, lo, hi)]
        return frame.reset_index(drop=True)

    def iter_chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        """The whole source in file order, ``rows`` rows at a time (the last chunk may be
        shorter), raw as :meth:`read` returns it: memory stays bounded whatever the file size."""
        path, fail, fs, files, fmt = self._locate(None, None)
        log.info("job %s: reading %d %s file(s) from %s in chunks of %d rows", self.job.name, len(files), fmt, path, rows)
        with _translated(fail, path, fmt):
            if fmt == "parquet":
                yield from _parquet_chunks(fs, files, self.job, rows)
                return
            for file in files:
                for chunk in _TEXT_CHUNKS[fmt](fs, file, self.job, rows):
                    yield job_columns(chunk, self.job).reset_index(drop=True)

    def _files(self, fs: AbstractFileSystem, root: str, fail: Fail) -> list[str]:
        if any(char in root for char in "*?["):
            matches = fs.glob(root, detail=True)
            files = sorted(name for name, info in matches.items() if info["type"] == "file")
            if not files:
                raise fail("no file matches the pattern", "Check `path`, or whether the data has landed yet.")
            return files
        try:
            info = fs.info(root)
        except FileNotFoundError as exc:
            raise fail("no such file or folder", self._path_hint()) from exc
        if info["type"] != "directory":
            return [root]
        # Hidden and Hadoop-style marker files (_SUCCESS, .crc) are not data.
        files = sorted(
            item["name"]
            for item in fs.ls(root, detail=True)
            if item["type"] == "file" and not PurePosixPath(item["name"]).name.startswith((".", "_"))
        )
        if not files:
            raise fail("the folder holds no files", self._path_hint())
        return files

    def _path_hint(self) -> str:
        hint = "Check `path` in the job file"
        if "://" not in self.config.path and not os.path.isabs(self.config.path):
            hint += f" (relative paths resolve against {base_dir()}; ANOMALY_PIPELINES_BASE_DIR changes that)"
        return hint + "."

    def _format(self, files: list[str], fail: Fail) -> str:
        if self.config.format:
            return self.config.format
        suffixes = {PurePosixPath(file).suffix.lower() for file in files}
        formats = {SUFFIXES.get(suffix) for suffix in suffixes}
        if len(formats) != 1 or None in formats:
            raise fail(
                f"cannot tell the format from the file suffixes {sorted(suffixes)}",
                f"Set `format` to csv, jsonl or parquet, or name the files with one of {sorted(SUFFIXES)}.",
            )
        return formats.pop()


@contextmanager
def _translated(fail: Fail, what: str, fmt: str) -> Iterator[None]:
    """Turn what reading ``what`` raised into a :class:`SourceError` that says what to do."""
    try:
        yield
    except PermissionError as exc:
        raise fail(
            f"permission denied reading {what} ({exc})",
            "Grant this process read access, or check the credentials in `storage_options`.",
        ) from exc
    except FileNotFoundError as exc:
        raise fail(f"{what} vanished while it was read ({exc})", "Run again once the data is in place.") from exc
    except OSError as exc:
        raise fail(
            f"cannot read {what} ({exc})",
            "Check that the storage is reachable and that `storage_options` are right.",
        ) from exc
    # ValueError covers bad encodings and the parsers' errors, and Arrow's ArrowInvalid.
    except (ValueError, pa.ArrowException) as exc:
        raise fail(
            f"{what} is not valid {fmt} ({exc})",
            f"Check that the file is complete {'' if fmt == 'parquet' else 'UTF-8 '}{fmt}; "
            "if its suffix misleads, set `format`.",
        ) from exc


def _read_csv(fs: AbstractFileSystem, file: str, job: JobConfig) -> pd.DataFrame:
    wanted = set(job.columns)
    with fs.open(file, "rb") as handle:
        # CSV has no types: a dimension's text is its identity ("007" must not become 7).
        # utf-8-sig also drops the byte-order mark that spreadsheets write before the header.
        return pd.read_csv(
            handle,
            usecols=lambda name: name in wanted,
            dtype=dict.fromkeys(job.dimensions, str),
            encoding="utf-8-sig",
        )


def _csv_chunks(fs: AbstractFileSystem, file: str, job: JobConfig, rows: int) -> Iterator[pd.DataFrame]:
    wanted = set(job.columns)
    with fs.open(file, "rb") as handle:
        yield from pd.read_csv(
            handle,
            usecols=lambda name: name in wanted,
            dtype=dict.fromkeys(job.dimensions, str),
            encoding="utf-8-sig",
            chunksize=rows,
        )


def _jsonl_chunks(fs: AbstractFileSystem, file: str, job: JobConfig, rows: int) -> Iterator[pd.DataFrame]:
    with fs.open(file, "rb") as handle:
        yield from pd.read_json(handle, lines=True, dtype=False, encoding="utf-8", chunksize=rows)


_TEXT_CHUNKS = {"csv": _csv_chunks, "jsonl": _jsonl_chunks}


def _parquet_chunks(fs: AbstractFileSystem, files: list[str], job: JobConfig, rows: int) -> Iterator[pd.DataFrame]:
    dataset = ds.dataset(files, format="parquet", filesystem=fs)
    columns = [name for name in job.columns if name in dataset.schema.names]
    pending: list[pa.RecordBatch] = []
    size = 0
    # Batches end at row-group boundaries; gather them so each chunk holds about ``rows`` rows.
    # No read-ahead: memory must stay at about one chunk however large the file is.
    for batch in dataset.to_batches(columns=columns, batch_size=rows, batch_readahead=0, fragment_readahead=0):
        pending.append(batch)
        size += batch.num_rows
        if size >= rows:
            yield pa.Table.from_batches(pending).to_pandas()
            pending, size = [], 0
    if pending:
        yield pa.Table.from_batches(pending).to_pandas()


def _read_jsonl(fs: AbstractFileSystem, file: str, job: JobConfig) -> pd.DataFrame:
    with fs.open(file, "rb") as handle:
        # dtype=False keeps JSON's own types: no guessing of dates or numbers in strings.
        return pd.read_json(handle, lines=True, dtype=False, encoding="utf-8")


_TEXT_READERS: dict[str, Callable[[AbstractFileSystem, str, JobConfig], pd.DataFrame]] = {
    "csv": _read_csv,
    "jsonl": _read_jsonl,
}


def _read_parquet(
    fs: AbstractFileSystem,
    files: list[str],
    job: JobConfig,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
) -> tuple[pd.DataFrame, bool]:
    """The job's columns of ``files``, and whether the window was already applied."""
    dataset = ds.dataset(files, format="parquet", filesystem=fs)
    columns = [name for name in job.columns if name in dataset.schema.names]
    kind = dataset.schema.field(job.timestamp).type if job.timestamp in dataset.schema.names else None
    if not isinstance(kind, pa.TimestampType):
        return dataset.to_table(columns=columns).to_pandas(), False
    window = _window_filter(job.timestamp, kind, start, end)
    return dataset.to_table(columns=columns, filter=window).to_pandas(), True


def _window_filter(
    name: str, kind: pa.TimestampType, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> ds.Expression | None:
    column = ds.field(name)
    inside: ds.Expression | None = None
    for bound, compare in ((start, operator.ge), (end, operator.lt)):
        if bound is None:
            continue
        # Arrow compares only identical types. Rounding the bound up to the column's unit keeps
        # both ">= start" and "< end" exact; a naive column holds UTC wall times.
        value = bound.ceil(kind.unit)
        condition = compare(column, pa.scalar(value if kind.tz else value.tz_convert(None), type=kind))
        inside = condition if inside is None else inside & condition
    # Rows without a timestamp stay, as for csv: validation reports them.
    return None if inside is None else inside | column.is_null()
