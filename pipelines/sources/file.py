"""Files: one file, a glob (``data/*.csv``) or a folder; local or any fsspec URL (``s3://``, ``gs://``).

Formats are csv, jsonl (JSON lines), json (one array of records), parquet and pickle (only with
``allow_pickle``: unpickling runs code), inferred from the suffix unless the job sets ``format``.
Text and pickle files may be compressed (``m.csv.gz``, ``.bz2``, ``.xz``, ``.zip``: what fsspec
infers from the last suffix); they are decompressed as they are read, never whole in memory.
Parquet reads only the job's columns and, when the timestamp column has a timestamp type, lets
Arrow skip what lies outside the window; the other formats are read whole and filtered here.
Text timestamps are parsed by :func:`~pipelines.sources.base.parse_timestamps` (with the job's
``timestamp_format`` when it sets one): naive ones are taken as UTC, and unparseable ones are kept
for validation to report. Text files are cut to the window one at a time; the files of one
window read must agree on whether their timestamps carry a zone, and one instant of a series in
two of them is refused, naming both: neither row wins (Parquet files are read as one dataset,
and such repeats are left to validation).

Folders may be hive-partitioned (``date=2024-03-01/part-0.parquet``): files in ``key=value``
sub-folders are read too, a key the job uses as a column and the files lack becomes that column
(as text), and partitions whose time cannot overlap the window are never opened
(:func:`partition_span`).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import operator
import os
import pickle
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from io import StringIO
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from fsspec import AbstractFileSystem
from fsspec.compression import compr
from fsspec.core import url_to_fs
from fsspec.utils import compressions, glob_translate, infer_compression

from pipelines.config import FileSource, JobConfig, Partitioning, base_dir, resolve_path
from pipelines.errors import ConfigError, MissingDependencyError, SourceConfigError, SourceDataError, SourceError
from pipelines.series import series_key
from pipelines.sources.base import (
    DayFirstDates,
    TimestampZone,
    describe_window,
    first_zone,
    job_columns,
    parse_timestamps,
    source_error,
    utc_bound,
    window_mask,
)
from pipelines.storage import credentials_hint, missing_credentials, unreachable

log = logging.getLogger(__name__)

SUFFIXES = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".pkl": "pickle",
    ".pickle": "pickle",
}

#: Compression suffixes fsspec knows only once a package is installed -> that package.
COMPRESSION_PACKAGES = {".zst": "zstandard", ".lz4": "lz4"}

#: fsspec protocol -> (package, extra of anomaly-pipelines that installs it).
BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}

#: Hive's name for a missing partition value.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"

#: Formats tried for ``date``/``dt`` keys when the job sets no ``partitioning``. Values with
#: minutes are left out on purpose: ``dt=2024-03-01T05:00`` may hold an hour or a minute, and
#: guessing too short a span would drop rows, so such layouts need an explicit granularity.
INFERRED_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y-%m-%dT%H", "%Y-%m-%d-%H", "%Y-%m-%d %H", "%Y%m%d%H")

Fail = Callable[..., SourceError]  # (problem, todo, *, kind=SourceError): see source_error
Step = pd.Timedelta | pd.DateOffset


@dataclass(frozen=True)
class Advice:
    """Advice that names a source option, worded for where the reader's user sets it.

    ``options`` maps a :class:`~pipelines.config.FileSource` field to the command-line option
    that sets it (``{"delimiter": "--delimiter", "path": "--train"}``), or to None when the
    caller offers no way to set it; a field it leaves out is set in the job file, and the advice
    names the job file's field."""

    options: Mapping[str, str | None] = field(default_factory=dict)

    def __call__(self, option: str, job: str, given: Callable[[str], str], unset: str = "") -> str:
        """``job`` when ``option`` is set in the job file, ``given(flag)`` when the command's
        ``flag`` sets it, ``unset`` when nothing can."""
        if option not in self.options:
            return job
        flag = self.options[option]
        return unset if flag is None else given(flag)

    def settable(self, option: str) -> bool:
        """Whether the reader's user has a way to set ``option``."""
        return self.options.get(option, "") is not None


@dataclass(frozen=True)
class _File:
    """One data file and the hive partition values (``key=value`` folders) above it."""

    name: str
    keys: dict[str, str | None] = field(default_factory=dict)
    base: str = ""  # the folder the ``key=value`` folders are counted from


class FileReader:
    """Reads a job's :class:`~pipelines.config.FileSource`."""

    def __init__(
        self, job: JobConfig, *, path_hint: str | None = None, options: Mapping[str, str | None] | None = None
    ) -> None:
        """``options`` says how a caller without a job file lets its user set the source's fields
        (see :class:`Advice`): the errors' advice then names those (``Give --delimiter ';'.``),
        not a job file's. ``path_hint`` replaces the whole advice given when the path holds
        nothing (``Check the input path (predict's --input, or the run's `input`).``)."""
        if not isinstance(job.source, FileSource):
            raise TypeError(f"FileReader reads file sources, not {job.source.kind!r}")
        self.job = job
        self.config = job.source
        self.path_hint = path_hint
        self.advice = Advice(options or {})

    def _locate(self, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> tuple[str, Fail, AbstractFileSystem, list[_File], str]:
        """The resolved path, the error factory, the file system, the files that can hold rows
        of the window (all when it is unbounded) and their format."""
        path = resolve_path(self.config.path)
        fail: Fail = partial(source_error, self.job, f"file source {path!r}", lo, hi)
        fs, root = self._filesystem(path, fail)
        # fsspec shares one filesystem per URL and caches listings; a long-lived worker must
        # see the files that landed since its last read.
        fs.invalidate_cache()
        with _translated(self.advice, fail, path, self.config.format or "the expected format"):
            files = self._files(fs, root, path, fail, lo, hi)
        fmt = self._format([file.name for file in files], fail)
        self._check_compression(fs, files, fmt, fail)
        if (lo is None and hi is None) or not self.config.prune_partitions:
            return path, fail, fs, files, fmt
        kept = [file for file in files if _overlaps(partition_span(file.keys, self.config.partitioning), lo, hi)]
        if len(kept) < len(files):
            log.info(
                "job %s: partition pruning keeps %d of %d file(s) of %s for window %s",
                self.job.name,
                len(kept),
                len(files),
                path,
                describe_window(lo, hi),
            )
        return path, fail, fs, kept, fmt

    def _filesystem(self, path: str, fail: Fail) -> tuple[AbstractFileSystem, str]:
        try:
            return url_to_fs(path, **self.config.storage_options)
        except ImportError as exc:
            protocol = path.split("://", 1)[0]
            if protocol in BACKENDS:
                package, extra = BACKENDS[protocol]
                raise MissingDependencyError(package, extra, f"job {self.job.name!r}: reading {protocol}:// ({path})") from exc
            raise fail(
                f"no file system for {protocol}:// is installed ({exc})", "Install the fsspec backend it names.",
                kind=SourceConfigError,
            ) from exc
        except ValueError as exc:
            raise fail(
                f"{exc}", "Use a local path or an fsspec URL such as s3://bucket/key or gs://bucket/key.", kind=SourceConfigError
            ) from exc
        except Exception as exc:
            # gcsfs looks for credentials when it is made (token: google_default), before any read.
            if not missing_credentials(exc):
                raise
            raise fail(f"no credentials to read {path} ({exc})", credentials_hint("`storage_options`", exc)) from exc

    def read(self, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        lo, hi = utc_bound(start), utc_bound(end)
        path, fail, fs, files, fmt = self._locate(lo, hi)
        log.info("job %s: reading %d %s file(s) from %s", self.job.name, len(files), fmt, path)
        if fmt != "parquet":
            frames = self._read_texts(fs, files, fmt, fail, lo, hi)
        elif files:
            # One Arrow scan over every file: far faster than file by file for many small files.
            with _translated(self.advice, fail, path, fmt), self._naming_the_bad_parquet(fs, files, fail):
                dataset = _parquet_dataset(fs, files, self.job, fail, partial(self._shown, fs))
                frames = [job_columns(_read_parquet(dataset, self.job, lo, hi), self.job)]
        else:
            frames = []
        if not frames:  # every partition pruned: nothing of the window is stored
            return pd.DataFrame(columns=self.job.columns)
        # Empty frames would turn typed columns into objects in concat.
        frame = pd.concat([frame for frame in frames if len(frame)] or frames[:1], ignore_index=True)
        if fmt == "parquet" and (lo is not None or hi is not None):
            frame = frame[in_window(frame, self.job, lo, hi, fail)]
        return frame.reset_index(drop=True)

    def _read_texts(
        self, fs: AbstractFileSystem, files: list[_File], fmt: str, fail: Fail, lo: pd.Timestamp | None, hi: pd.Timestamp | None
    ) -> list[pd.DataFrame]:
        """Each file's rows in the window. Each file is cut to the window as soon as it is read:
        holding every file whole until the end took memory for all of them (1.1 GB for a day of
        350 MB of csv). A timestamp zone is therefore judged file by file, and the files must agree."""
        frames, held, instants = [], [], []
        zone: tuple[TimestampZone, str] | None = None  # the first timestamp's, and its file
        for file in files:
            frame = self._read_text(fs, file, fmt, fail)
            shown = self._shown(fs, file.name)
            if len(frame):  # a file without rows lacks nothing (an empty jsonl file has no columns at all)
                held.append((shown, frame.columns))
            if (lo is not None or hi is not None) and self.job.timestamp in frame.columns:
                # The error names the file when the source has several.
                parsed = _timestamps(frame, self.job, fail, f" of {shown}" if len(files) > 1 else "")
                here = first_zone(frame[self.job.timestamp], parsed, form=self.job.timestamp_format)
                if zone is None and here is not None:
                    zone = (here, shown)
                elif zone is not None and here is not None and here.aware != zone[0].aware:
                    first, where = zone
                    raise fail(
                        f"column {self.job.timestamp!r} has timestamps {_with(first.aware)} a time zone in {where} (row "
                        f"{first.row}: {first.value!r}) and {_with(here.aware)} one in {shown} (row {here.row}: {here.value!r}); "
                        "taking the ones without as UTC would be a guess",
                        "Write every timestamp with its offset (e.g. 2024-01-01T00:00:00Z) or every one without "
                        "(then taken as UTC), in every file.",
                        kind=SourceDataError,
                    )
                inside = window_mask(parsed, lo, hi)
                frame = frame[inside]
                if len(files) > 1:
                    instants.append((shown, frame, _instants(frame, parsed[inside], self.job)))
            frames.append(frame)
        _same_columns([name for name, _ in held], [columns for _, columns in held], fail, self.advice)
        _refuse_repeats_across_files(instants, self.job, fail)
        return frames

    def _read_text(self, fs: AbstractFileSystem, file: _File, fmt: str, fail: Fail) -> pd.DataFrame:
        with _translated(self.advice, fail, self._shown(fs, file.name), fmt):
            frame = _READERS[fmt](fs, file.name, self.job, self.config.encoding)
            _check_unique(frame.columns, self.job)
        extra = _partition_columns(file, self.job, frame.columns)
        return job_columns(frame.assign(**extra) if extra else frame, self.job)

    def iter_chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        """The whole source in file order, ``rows`` rows at a time (the last chunk may be
        shorter; with text formats, the last of each file), raw as :meth:`read` returns it.
        Memory stays bounded whatever the size of csv, jsonl and parquet files; a json array or a
        pickle is read whole first (neither format can be parsed in parts), then handed out in
        chunks."""
        path, fail, fs, files, fmt = self._locate(None, None)
        log.info("job %s: reading %d %s file(s) from %s in chunks of %d rows", self.job.name, len(files), fmt, path, rows)
        if fmt == "parquet":
            yield from self._parquet_chunks(fs, files, rows, fail)
            return
        for file in files:
            with _translated(self.advice, fail, self._shown(fs, file.name), fmt):
                for chunk in _CHUNKS[fmt](fs, file.name, self.job, self.config.encoding, rows):
                    _check_unique(chunk.columns, self.job)
                    extra = _partition_columns(file, self.job, chunk.columns)
                    yield job_columns(chunk.assign(**extra) if extra else chunk, self.job).reset_index(drop=True)

    def _parquet_chunks(self, fs: AbstractFileSystem, files: list[_File], rows: int, fail: Fail) -> Iterator[pd.DataFrame]:
        parquet = _translated(self.advice, fail, resolve_path(self.config.path), "parquet")
        with parquet, self._naming_the_bad_parquet(fs, files, fail):
            dataset = _parquet_dataset(fs, files, self.job, fail, partial(self._shown, fs))
        columns = [name for name in self.job.columns if name in dataset.schema.names]
        pending: list[pa.RecordBatch] = []
        size = 0
        # File by file, so that an error names its file; the dataset's schema fills in the
        # partition columns. Batches end at row-group boundaries (a dataset scan, unlike
        # ParquetFile.iter_batches, does not join row groups): gathering whole batches made
        # chunks of up to twice ``rows`` (400,000 rows for 250,000 from row groups of 200,000),
        # so the batch that crosses the limit is cut (a slice, no copy) and its rest begins the
        # next chunk. No read-ahead: memory must stay at about one chunk.
        for fragment in dataset.get_fragments():
            with _translated(self.advice, fail, self._shown(fs, fragment.path), "parquet"):
                batches = fragment.to_batches(
                    schema=dataset.schema, columns=columns, batch_size=rows, batch_readahead=0, fragment_readahead=0
                )
                for batch in batches:
                    while size + batch.num_rows >= rows:
                        taken = rows - size
                        pending.append(batch.slice(0, taken))
                        yield pa.Table.from_batches(pending).to_pandas()
                        pending, size = [], 0
                        batch = batch.slice(taken)
                    if batch.num_rows:
                        pending.append(batch)
                        size += batch.num_rows
        if pending:
            yield pa.Table.from_batches(pending).to_pandas()

    @contextmanager
    def _naming_the_bad_parquet(self, fs: AbstractFileSystem, files: list[_File], fail: Fail) -> Iterator[None]:
        """Arrow reads many files at once and does not always say which one failed: after a
        failure, read them one at a time so that the error names the file."""
        try:
            yield
        except (OSError, ValueError, pa.ArrowException):
            for file in files:
                with _translated(self.advice, fail, self._shown(fs, file.name), "parquet"):
                    ds.dataset([file.name], format="parquet", filesystem=fs).to_table()
            raise

    def _shown(self, fs: AbstractFileSystem, name: str) -> str:
        """``name`` as the job file writes it: a URL for object stores, a path for local files."""
        return fs.unstrip_protocol(name) if "://" in self.config.path else name

    def _files(
        self, fs: AbstractFileSystem, root: str, path: str, fail: Fail, lo: pd.Timestamp | None = None, hi: pd.Timestamp | None = None
    ) -> list[_File]:
        """The data files of ``root``; with a window, the ``key=value`` folders that cannot hold it
        are not listed at all (see :meth:`_walk`), so some files outside it may be left out."""
        pruning = (lo is not None or hi is not None) and self.config.prune_partitions
        if any(char in root for char in "*?["):
            literal = root[: min(root.index(char) for char in "*?[" if char in root)]
            base = literal.rsplit("/", 1)[0] if "/" in literal else ""
            # fsspec's "*" matches hidden names too, unlike a shell's: as in a folder, hidden and
            # Hadoop-style files and folders (.part-0.csv, _temporary/) are not data, and
            # "data/**/*.csv" read a writer's unfinished attempt beside its output. A pattern
            # naming such a part itself (data/_staging/*.csv below "data/*") is taken at its word.
            names_hidden = any(part.startswith((".", "_")) for part in PurePosixPath(root[len(base) :].lstrip("/")).parts)
            names = []
            if pruning and "**" not in root and base:
                names = [name for name in self._walk(fs, base, root[len(base) :].strip("/").split("/"), lo, hi)
                         if names_hidden or not _hidden(name, base)]
            if not names:  # an empty walk is listed in full, to tell "nothing there" from "nothing in the window"
                matches = fs.glob(root, detail=True)
                names = [name for name, info in matches.items() if info["type"] == "file" and (names_hidden or not _hidden(name, base))]
            names.sort()
            if names:
                return [_File(name, _hive_keys(name, base), base) for name in names]
            # A pattern does not match a name holding its own brackets ("report [final].csv"):
            # when the path exists as written, that is what is meant.
            if not fs.exists(root):
                self._check_bucket(fs, root, path, fail)
                raise fail("no file matches the pattern", self._path_hint("Check `path`, or whether the data has landed yet."))
        try:
            info = fs.info(root)
        except FileNotFoundError as exc:
            self._check_bucket(fs, root, path, fail)
            raise fail("no such file or folder", self._path_hint()) from exc
        if info["type"] != "directory":
            return [_File(root)]
        # An empty result of the walk is listed in full, to tell "nothing there" from "nothing in the window".
        files = (self._folder_files(self._walk(fs, root.rstrip("/"), None, lo, hi), root) if pruning else []) or self._folder_files(
            fs.find(root), root
        )
        if not files:
            raise fail("the folder holds no files", self._path_hint())
        return files

    @staticmethod
    def _folder_files(listed: Iterable[str], root: str) -> list[_File]:
        files = []
        # Keys ending in "/" are the empty folder markers that S3 consoles and some tools
        # create: s3fs lists them as files.
        for name in sorted(name for name in listed if not name.endswith("/")):
            relative = PurePosixPath(name[len(root.rstrip("/")) :].lstrip("/"))
            # Hidden and Hadoop-style marker files and folders (_SUCCESS, .crc, _temporary)
            # are not data; sub-folders that are not key=value are not partitions.
            if any(part.startswith((".", "_")) for part in relative.parts):
                continue
            if all("=" in part for part in relative.parts[:-1]):
                files.append(_File(name, _hive_keys(name, root.rstrip("/")), root.rstrip("/")))
        return files

    def _walk(
        self, fs: AbstractFileSystem, base: str, pattern: list[str] | None, lo: pd.Timestamp | None, hi: pd.Timestamp | None
    ) -> list[str]:
        """The files below ``base`` (matching the glob components ``pattern``, or all of them),
        leaving out the ``key=value`` folders whose time cannot overlap ``[lo, hi)``.

        An object store lists a whole tree (``find``) one page of 1000 keys per request, and
        s3fs's glob lists every folder it passes: a day's read of a bucket of years listed every
        key before pruning dropped nearly all (732 requests for a glob over two years of daily
        folders). Here a folder is listed on its own only while its sub-folders carry a time
        (a level of ``date=``/``year=``... folders); below the first level that does not, the
        rest is found in one ``find``/``glob``, so a layout that cannot be pruned costs one
        request more than before, not one per folder.

        A folder is judged by the keys above it and its own (``year=2023`` before its
        ``month=``): that takes the finer keys below a coarser one to lie within it, as every
        writer lays them out. Whatever is kept is still filtered by its full keys afterwards."""
        found: list[str] = []
        level = [base]
        for depth in range(len(pattern) if pattern else 1 << 16):
            last = pattern is not None and depth == len(pattern) - 1
            part = re.compile(glob_translate(pattern[depth])) if pattern else None
            deeper: list[str] = []
            for folder in level:
                try:
                    entries = fs.ls(folder, detail=True)
                except FileNotFoundError:
                    continue
                folders = []
                for entry in entries:
                    name = entry["name"].rstrip("/")
                    leaf = name.rsplit("/", 1)[-1]
                    if name == folder or entry["name"].endswith("/") and entry["type"] != "directory":
                        continue  # the folder itself, or an S3 folder marker
                    if part is not None and not part.match(leaf):
                        continue
                    if entry["type"] != "directory":
                        if part is None or last:
                            found.append(name)
                    elif part is not None and not last:
                        folders.append(name)
                    elif part is None and "=" in leaf and not leaf.startswith((".", "_")):
                        folders.append(name)  # other folders hold no data of a folder source
                spans = {name: partition_span(_hive_keys(f"{name}/_", base), self.config.partitioning) for name in folders}
                if folders and all(span is None for span in spans.values()):
                    # Nothing here says a time: one listing of the rest, as without a window.
                    rest = re.compile(glob_translate("/".join(pattern[depth:]))) if pattern else None
                    found.extend(
                        name for name in fs.find(folder)
                        if "/" in name[len(folder) :].strip("/")  # this folder's own files are in already
                        and (rest is None or rest.match(name[len(folder) :].lstrip("/")))
                    )
                    continue
                deeper.extend(name for name, span in spans.items() if _overlaps(span, lo, hi))
            level = deeper
            if not level:
                break
        return found

    def _check_bucket(self, fs: AbstractFileSystem, root: str, path: str, fail: Fail) -> None:
        """Say so when the bucket itself is missing: "no such file" would send one looking for a key."""
        if "://" not in path or path.startswith("file://"):
            return
        bucket = root.split("/", 1)[0]
        try:
            exists = fs.exists(bucket)
        except PermissionError:
            return  # listing buckets may be forbidden where reading keys is not
        if not exists:
            raise fail(
                f"bucket {bucket!r} does not exist (or these credentials cannot see it)",
                self.advice("path", "Check the bucket name in `path`", lambda flag: f"Check the bucket name in the {flag} path")
                + self.advice(
                    "storage_options",
                    ", and the endpoint and credentials in `storage_options`.",
                    lambda flag: f", and the endpoint and credentials given with {flag}.",
                    unset=", and the credentials of this process.",
                ),
            )

    def _check_compression(self, fs: AbstractFileSystem, files: list[_File], fmt: str, fail: Fail) -> None:
        for file in (file.name for file in files):
            suffix = PurePosixPath(file).suffix.lower()
            if suffix in COMPRESSION_PACKAGES and not _compression(file):
                package = COMPRESSION_PACKAGES[suffix]
                raise fail(
                    f"{self._shown(fs, file)} is compressed ({suffix}), and reading it needs the package {package!r}",
                    f"pip install {package} (or store the files with .gz compression).",
                    kind=SourceConfigError,
                )
            # Parquet compresses its own columns (snappy, zstd, gzip inside the file), and Arrow
            # seeks to the footer and to the job's columns: a compressed stream has to be
            # decompressed whole into memory first, which would undo both the column selection
            # and the bounded memory of chunked reads. So it is refused rather than supported.
            if fmt == "parquet" and _compression(file):
                raise fail(
                    f"{self._shown(fs, file)} is a {_compression(file)}-compressed Parquet file; Parquet compresses "
                    "its columns itself, and Arrow must seek inside the file to read only what the job needs",
                    "Decompress it, or write it uncompressed with Parquet's own compression "
                    "(pandas: to_parquet(..., compression='zstd')).",
                    kind=SourceConfigError,
                )

    def _path_hint(self, job: str | None = None) -> str:
        """What to do about a path that holds nothing; ``job`` is that advice for a job file's
        `path` (by default: check it, and where a relative one resolves)."""
        if self.path_hint:
            return self.path_hint
        if job is None:
            job = "Check `path` in the job file"
            if "://" not in self.config.path and not os.path.isabs(self.config.path):
                job += f" (relative paths resolve against {base_dir()}; ANOMALY_PIPELINES_BASE_DIR changes that)"
            job += "."
        return self.advice("path", job, lambda flag: f"Check the {flag} path.")

    def _format(self, files: list[str], fail: Fail) -> str:
        fmt = self.config.format
        if not fmt:
            # "m.csv.gz" is csv: the suffix before the compression's tells the format.
            suffixes = {_data_suffix(file) for file in files}
            formats = {SUFFIXES.get(suffix) for suffix in suffixes}
            if len(formats) != 1 or None in formats:
                # Where pickles cannot be allowed, neither the format nor its suffixes are a way out.
                offered = [
                    name for name in dict.fromkeys(SUFFIXES.values())
                    if name != "pickle" or self.advice.settable("allow_pickle")
                ]
                listed = f"{', '.join(offered[:-1])} or {offered[-1]}"
                named = sorted(suffix for suffix, name in SUFFIXES.items() if name in offered)
                raise fail(
                    f"cannot tell the format from the file suffixes {sorted(suffixes)}",
                    self.advice(
                        "format",
                        f"Set `format` to {listed}, or name the files",
                        lambda flag: f"Give {flag} {listed}, or name the files",
                        unset="Name the files",  # a caller that infers the format from the suffix alone
                    )
                    + f" with one of {named} "
                    f"(compressed files add a compression suffix: {', '.join(_compression_suffixes())}).",
                    kind=SourceConfigError,
                )
            fmt = formats.pop()
        # The model refuses an explicit `format: pickle` without allow_pickle; this catches
        # pickles recognised by their suffix.
        if fmt == "pickle" and not self.config.allow_pickle:
            allow = self.advice(
                "allow_pickle",
                ", or set `allow_pickle: true` only if you trust whoever writes these files",
                lambda flag: f", or give {flag} only if you trust whoever writes these files",
            )
            raise ConfigError(
                f"job {self.job.name!r}: {self.config.describe()} holds pickle files, and unpickling runs "
                f"arbitrary code: convert the data to Parquet{allow}"
            )
        return fmt


def in_window(frame: pd.DataFrame, job: JobConfig, lo: pd.Timestamp | None, hi: pd.Timestamp | None, fail: Fail) -> pd.Series:
    """Which rows of a raw frame lie in ``[lo, hi)`` (rows without a parseable timestamp count
    as inside, for validation to report); every row when the frame has no timestamp column."""
    if job.timestamp not in frame.columns:
        return pd.Series(True, index=frame.index)
    return window_mask(_timestamps(frame, job, fail), lo, hi)


def _timestamps(frame: pd.DataFrame, job: JobConfig, fail: Fail, where: str = "") -> pd.Series:
    """The timestamp column parsed; ``where`` names the file it came from (\" of m.csv\")."""
    try:
        return parse_timestamps(frame[job.timestamp], job.timestamp_format, refuse_day_first=True)
    except DayFirstDates as exc:
        raise fail(f"column {job.timestamp!r}{where}, row {exc.position + 1}: {exc}", exc.todo, kind=SourceDataError) from exc
    except ValueError as exc:
        raise fail(
            f"column {job.timestamp!r}{where} mixes timestamps with and without a time zone ({exc})",
            "Write every timestamp with its offset (e.g. 2024-01-01T00:00:00Z) or every one without (then taken as UTC).",
            kind=SourceDataError,
        ) from exc


_Instants = tuple[np.ndarray, np.ndarray, tuple[pd.Timestamp, pd.Timestamp] | None]


def _instants(frame: pd.DataFrame, parsed: pd.Series, job: JobConfig) -> _Instants | None:
    """A hash of the instant and series of each row of ``frame`` with a parsed timestamp, its index
    label, and the first and last instants (None without any); None when a dimension column is
    missing (validation reports it). Hashes keep the comparison at 16 bytes a row, whatever the
    text of the series."""
    if not set(job.dimensions) <= set(frame.columns):
        return None
    found = parsed.notna().to_numpy()
    keys = pd.DataFrame(
        {"instant": parsed[found].dt.tz_convert("UTC").dt.as_unit("ns").reset_index(drop=True),
         **{name: frame[name][found].astype("string").reset_index(drop=True) for name in job.dimensions}}
    )
    span = (keys["instant"].min(), keys["instant"].max()) if found.any() else None
    return pd.util.hash_pandas_object(keys, index=False).to_numpy(), frame.index.to_numpy()[found], span


def _refuse_repeats_across_files(
    instants: list[tuple[str, pd.DataFrame, _Instants | None]], job: JobConfig, fail: Fail
) -> None:
    """Raise the source error when one instant of one series is in two files (a file delivered
    twice under two names, a backfill overlapping the regular export): neither row wins, and
    validation, which sees the files as one batch, could name only row numbers of that batch.
    ``instants`` holds each file's name, rows and :func:`_instants`."""
    if len(instants) < 2 or any(hashed is None for _, _, hashed in instants):
        return
    spans = sorted(hashed[2] for _, _, hashed in instants if hashed is not None and hashed[2] is not None)
    if all(earlier[1] < later[0] for earlier, later in zip(spans, spans[1:])):
        return  # files of successive times (the usual export) cannot share an instant
    hashes = pd.DataFrame(
        {
            "hash": np.concatenate([hashed[0] for _, _, hashed in instants]),  # type: ignore[index]
            "file": np.repeat(np.arange(len(instants)), [len(hashed[0]) for _, _, hashed in instants]),  # type: ignore[index]
            "label": np.concatenate([hashed[1] for _, _, hashed in instants]),  # type: ignore[index]
        }
    )
    repeated = hashes[hashes["hash"].duplicated(keep=False)]
    across = repeated.groupby("hash", sort=False)["file"].transform("nunique") > 1
    if not across.any():
        return
    first = repeated[across]
    same = first[first["hash"] == first["hash"].iloc[0]]
    _, frame, _ = instants[int(same["file"].iloc[0])]
    row = frame.loc[same["label"].iloc[0]]
    instant = parse_timestamps(pd.Series([row[job.timestamp]]), job.timestamp_format).iloc[0]
    series = "" if not job.dimensions else f" of series {series_key(job.dimensions, [row[name] for name in job.dimensions])}"
    raise fail(
        f"{int(across.sum())} rows share their instant and series with a row of another file; the first: "
        f"{instant.isoformat()}{series} is in "
        + " and ".join(f"{instants[int(code)][0]} (row {int(label) + 1})" for code, label in zip(same["file"], same["label"], strict=True))
        + ", and which one to keep cannot be told",
        "Remove the file delivered twice, or the overlap between the files, so that each instant of a series is in one file.",
        kind=SourceDataError,
    )


def _with(aware: bool) -> str:
    return "with" if aware else "without"


def _same_columns(names: list[str], columns: list[pd.Index], fail: Fail, advice: Advice = Advice()) -> None:
    """Raise the source error when a job column is in some files and not in others: their rows
    would read as nulls, which validation could let through as a few missing values."""
    for name in dict.fromkeys(name for present in columns for name in present):
        lacking = [file for file, present in zip(names, columns, strict=True) if name not in present]
        if lacking:
            raise fail(
                f"column {name!r} is missing from {len(lacking)} of {len(names)} files while the others have it "
                f"(first without it: {lacking[0]}); their rows would have no {name!r}",
                f"Write {name!r} into every file, or move the files without it "
                + advice("path", "out of `path`.", lambda flag: f"out of the {flag} path."),
                kind=SourceDataError,
            )


def _hive_keys(name: str, base: str) -> dict[str, str | None]:
    """The ``key=value`` folders between ``base`` and the file ``name``, values URL-decoded."""
    relative = PurePosixPath(name[len(base) :].lstrip("/")) if base and name.startswith(base) else PurePosixPath(name)
    keys: dict[str, str | None] = {}
    for part in relative.parts[:-1]:
        if "=" in part:
            key, value = part.split("=", 1)
            keys[unquote(key)] = None if value == HIVE_NULL else unquote(value)
    return keys


def _hidden(name: str, base: str) -> bool:
    """Whether a file or folder between ``base`` and ``name`` is hidden or Hadoop's (``_SUCCESS``)."""
    relative = PurePosixPath(name[len(base) :].lstrip("/")) if base and name.startswith(base) else PurePosixPath(name)
    return any(part.startswith((".", "_")) for part in relative.parts)


def _partition_columns(file: _File, job: JobConfig, present: Iterable[str]) -> dict[str, str | None]:
    """Partition values the job reads as columns and the file does not hold itself."""
    have = set(present)
    return {key: value for key, value in file.keys.items() if key in job.columns and key not in have}


def partition_span(keys: dict[str, str | None], partitioning: Partitioning | None) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The UTC time ``[start, end)`` a partition can hold, or None when its keys do not say.

    With ``partitioning``, its key is parsed with its format; the span is ``granularity`` or
    the format's finest field. Without it, ``date``/``dt`` (see :data:`INFERRED_DATE_FORMATS`)
    or ``year`` [/``month`` [/``day``]] are read, then refined by an ``hour`` key. Values that
    do not parse give None: the partition is read, since dropping rows would be worse than
    reading a folder too many.
    """
    lower = {key.lower(): value for key, value in keys.items() if value is not None}
    if partitioning is not None:
        value = keys.get(partitioning.column)
        if value is None:
            return None
        start = _parse(value, partitioning.format)
        if start is None:
            log.warning("partition %s=%r does not match format %r; reading it", partitioning.column, value, partitioning.format)
            return None
        step = pd.Timedelta(partitioning.granularity) if partitioning.granularity else _finest_step(partitioning.format)
        return start, start + step
    span: tuple[pd.Timestamp, Step] | None = None
    for key in ("date", "dt"):
        if key in lower:
            parsed = ((_parse(lower[key], fmt), _finest_step(fmt)) for fmt in INFERRED_DATE_FORMATS)
            span = next(((start, step) for start, step in parsed if start is not None), None)
            break
    else:
        span = _calendar_span(lower)
    if span is None:
        return None
    start, step = span
    if (
        isinstance(step, pd.Timedelta)
        and step == pd.Timedelta(days=1)
        and lower.get("hour", "").isdigit()
        and int(lower["hour"]) < 24
    ):
        start, step = start + pd.Timedelta(hours=int(lower["hour"])), pd.Timedelta(hours=1)
    return start, start + step


def _calendar_span(keys: dict[str, str]) -> tuple[pd.Timestamp, Step] | None:
    """``year=2024/month=03/day=01``: each key counts only under the coarser ones."""
    fields: list[int] = []
    for key in ("year", "month", "day"):
        if not keys.get(key, "").isdigit():
            break
        fields.append(int(keys[key]))
    if not fields:
        return None
    year, month, day = (*fields, 1, 1)[:3]
    try:
        start = pd.Timestamp(year=year, month=month, day=day, tz="UTC")
    except ValueError:
        return None
    steps: list[Step] = [pd.DateOffset(years=1), pd.DateOffset(months=1), pd.Timedelta(days=1)]
    return start, steps[len(fields) - 1]


def _parse(value: str, fmt: str) -> pd.Timestamp | None:
    try:
        moment = pd.Timestamp(datetime.strptime(value, fmt))
    except ValueError:
        return None
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def _finest_step(fmt: str) -> Step:
    """How much time a value written with ``fmt`` stands for: its finest field."""
    directives = set(re.findall(r"%(.)", fmt))
    for letters, step in (
        ("fS", pd.Timedelta(seconds=1)),
        ("M", pd.Timedelta(minutes=1)),
        ("HI", pd.Timedelta(hours=1)),
        ("dj", pd.Timedelta(days=1)),
        ("mbB", pd.DateOffset(months=1)),
    ):
        if directives & set(letters):
            return step
    return pd.DateOffset(years=1)


def _overlaps(span: tuple[pd.Timestamp, pd.Timestamp] | None, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> bool:
    if span is None:
        return True
    start, end = span
    return (hi is None or start < hi) and (lo is None or end > lo)


class _UndecodableText(ValueError):
    """A text file that is not in the configured encoding; the message says where."""


class _RepeatedColumn(ValueError):
    """A file holding two columns of one name that the job reads: which one is meant cannot be
    told, and a frame with repeated names breaks every step after the read."""


def _check_unique(columns: Iterable[Hashable], job: JobConfig) -> None:
    counts = Counter(name for name in columns if name in job.columns)
    for name, count in counts.items():
        if count > 1:
            raise _RepeatedColumn(f"holds {count} columns named {name!r}")


class _CorruptArchive(ValueError):
    """A compressed file that cannot be decompressed (truncated, corrupt, or not compressed);
    the message says what, ``todo`` what to do."""

    def __init__(self, compression: str, suffix: str, cause: BaseException) -> None:
        super().__init__(f"is not valid {compression}: it may be truncated or corrupt ({type(cause).__name__}: {cause})")
        self.todo = f"Check that the file is complete; if it is not {compression}-compressed, name it without {suffix!r}."
        self.kind: type[SourceError] = SourceError  # a file still being written may complete

    def advise(self, advice: Advice) -> str:
        """What to do, naming the source's options as ``advice`` does."""
        return self.todo


class _ZipOfManyFiles(_CorruptArchive):
    def __init__(self, count: int) -> None:
        ValueError.__init__(self, f"is a zip archive of {count} files, and a file source reads zip archives of one file")
        self.kind = SourceDataError

    def advise(self, advice: Advice) -> str:
        return "Zip each file on its own, or unzip the archive into a folder and point " + advice(
            "path", "`path` at it.", lambda flag: f"{flag} at it."
        )


class _UnnamedArchive(_CorruptArchive):
    def __init__(self, compression: str, suffix: str, name: str) -> None:
        ValueError.__init__(self, f"is not text: it looks {compression}-compressed, and its name ends in no compression suffix")
        self.todo = f"Name it {name}{suffix}: files are decompressed by the suffix of their name."
        self.kind = SourceDataError


@contextmanager
def _translated(advice: Advice, fail: Fail, what: str, fmt: str) -> Iterator[None]:
    """Turn what reading ``what`` raised into a :class:`SourceError` that says what to do, naming
    the source's options as ``advice`` does."""
    try:
        yield
    except PermissionError as exc:
        raise fail(
            f"permission denied reading {what} ({exc})",
            "Grant this process read access"
            + advice(
                "storage_options",
                ", or check the credentials in `storage_options`.",
                lambda flag: f", or check the credentials given with {flag}.",
                unset=".",
            ),
        ) from exc
    except FileNotFoundError as exc:
        raise fail(f"{what} vanished while it was read ({exc})", "Run again once the data is in place.") from exc
    except OSError as exc:
        if _replaced(exc):
            raise fail(
                f"{what} changed while it was read ({exc})",
                "Run again once the writer has finished: the next read takes the new version whole.",
            ) from exc
        raise fail(
            f"cannot read {what} ({exc})",
            "Check that the storage is reachable"
            + advice("storage_options", " and that `storage_options` are right.", lambda flag: f" and that {flag} is right.", unset="."),
        ) from exc
    except _RepeatedColumn as exc:
        raise fail(
            f"{what} {exc}, and which one the job should read cannot be told",
            "Give each column of the file its own name.",
            kind=SourceDataError,
        ) from None
    except _CorruptArchive as exc:
        raise fail(f"{what} {exc}", exc.advise(advice), kind=exc.kind) from exc.__cause__
    except _WrongDelimiter as exc:
        shown = exc.shown  # a tab is shown, and typed on a command line, as \t
        raise fail(
            f"{what} {exc}",
            advice(
                "delimiter",
                f'Set source.delimiter: "{shown}" in the job file.',
                lambda flag: f"Give {flag} '{shown}'.",
                unset=f"Save it with ',' between fields and '.' as the decimal point, or as Parquet: {_NOT_SETTABLE}",
            ),
            kind=SourceConfigError,
        ) from None
    except _ForeignHeader as exc:
        raise fail(
            f"{what} {exc}",
            advice(
                "path",
                "Check that `path` points at this job's files, and that the job's column names are the header's.",
                lambda flag: f"Check {flag}: it should hold the job's columns.",
            ),
            kind=SourceConfigError,
        ) from None
    except _UndecodableText as exc:
        raise fail(
            f"{what} {exc}",
            advice(
                "encoding",
                f"Set `encoding` in the source to {_ENCODINGS}",
                lambda flag: f"Give {flag} with {_ENCODINGS}",
                unset=f"Save it as UTF-8, or as Parquet: {_NOT_SETTABLE}",
            ),
            kind=SourceDataError,
        ) from exc.__cause__
    # ValueError covers the parsers' errors, and Arrow's ArrowInvalid a truncated or
    # corrupt Parquet file.
    except (ValueError, pa.ArrowException) as exc:
        raise fail(
            f"{what} is not valid {fmt}: it may be truncated or corrupt ({exc})",
            "Check that the file is complete; if its suffix misleads, "
            + advice("format", "set `format`.", lambda flag: f"give {flag}.", unset="rename it."),
        ) from exc
    except Exception as exc:
        if unreachable(exc):
            raise fail(
                f"cannot reach the store holding {what} ({exc})",
                "Check that the store is up"
                + advice(
                    "storage_options",
                    " and that `endpoint_url` in `storage_options` names it",
                    lambda flag: f" and that the endpoint given with {flag} names it",
                )
                + "; a retry may succeed.",
            ) from exc
        if not missing_credentials(exc):
            raise
        raise fail(f"no credentials to read {what} ({exc})", credentials_hint("`storage_options`", exc)) from exc


def _replaced(exc: OSError) -> bool:
    """Whether s3fs refused to read on because the object changed since it was listed (its ETag):
    "check that the storage is reachable" would send one checking the endpoint and credentials."""
    try:
        from s3fs.utils import FileExpired
    except ImportError:  # without s3fs, nothing raises it
        return False
    return isinstance(exc, FileExpired)


def _compression(name: str) -> str | None:
    """The compression fsspec infers from the last suffix of ``name`` (gzip for ``m.csv.gz``), or None."""
    return infer_compression(name)


def _compression_suffixes() -> list[str]:
    """The suffixes of the compressions that can be read here."""
    return [f".{suffix}" for suffix, name in sorted(compressions.items()) if name in compr]


def _data_suffix(name: str) -> str:
    """The suffix that tells the format: the one before a compression suffix (``.csv`` of ``m.csv.gz``)."""
    path = PurePosixPath(name)
    if _compression(name) or path.suffix.lower() in COMPRESSION_PACKAGES:
        path = PurePosixPath(path.stem)
    return path.suffix.lower()


def suffix_format(name: str) -> str | None:
    """The format a file source infers from the name of one file (csv for ``m.csv.gz``), or None."""
    return SUFFIXES.get(_data_suffix(name))



class _Stored:
    """The bytes of a compressed file as stored; remembers a failure of the storage itself, so
    that a network or permission error is not taken for a corrupt archive."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.failed: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._handle.read(size)
        except BaseException as exc:
            self.failed = exc
            raise

    def __getattr__(self, name: str) -> Any:  # seek, tell, seekable... as the file has them
        return getattr(self._handle, name)


class _Decompressed(io.RawIOBase):
    """The decompressed stream, raising :class:`_CorruptArchive` for what the decompressor
    rejects (gzip's BadGzipFile, bz2's bare OSError, EOFError of a truncated file...)."""

    def __init__(self, stream: Any, stored: _Stored, compression: str, suffix: str) -> None:
        self._stream = stream
        self._stored = stored
        self._compression = compression
        self._suffix = suffix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._stream.read(len(buffer))
        except Exception as exc:
            if self._stored.failed is not None:
                raise
            raise _CorruptArchive(self._compression, self._suffix, exc) from exc
        buffer[: len(data)] = data
        return len(data)


@contextmanager
def open_data(fs: AbstractFileSystem, file: str) -> Iterator[BinaryIO]:
    """``file`` opened for reading, decompressed as it is read when its suffix names a compression."""
    compression = _compression(file)
    with fs.open(file, "rb") as handle:
        if compression is None:
            yield handle
            return
        stored = _Stored(handle)
        suffix = PurePosixPath(file).suffix
        try:
            if compression == "zip":
                stream = _zip_member(stored)
            else:
                stream = compr[compression](stored, mode="rb")
        except _ZipOfManyFiles:
            raise
        except Exception as exc:
            if stored.failed is not None:
                raise
            raise _CorruptArchive(compression, suffix, exc) from exc
        with stream, io.BufferedReader(_Decompressed(stream, stored, compression, suffix), 1 << 20) as decompressed:
            yield decompressed


def _zip_member(stored: _Stored) -> BinaryIO:
    """The one file of a zip archive. fsspec would read the first of several and silently
    drop the others' rows."""
    import zipfile

    archive = zipfile.ZipFile(stored)  # type: ignore[arg-type]
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) != 1:
        raise _ZipOfManyFiles(len(members))
    return archive.open(members[0])


@contextmanager
def _decoding(fs: AbstractFileSystem, file: str, encoding: str) -> Iterator[None]:
    """Re-raise a decoding error with the file offset of the first bad byte: the parsers
    report positions inside their read buffer, which point nowhere useful."""
    try:
        yield
    except UnicodeDecodeError as exc:
        foreign = _foreign_format(fs, file)
        if foreign:
            raise _ForeignFormat(*foreign, PurePosixPath(file).name) from exc
        compressed = _compressed_unnamed(fs, file)
        if compressed:
            raise _UnnamedArchive(*compressed, PurePosixPath(file).name) from exc
        raise _UndecodableText(_first_undecodable(fs, file, encoding) or f"is not valid {encoding} text ({exc})") from exc


#: How compressed files begin -> the compression and its suffix. Only looked for in a file that is
#: not valid text: a text file may begin with "BZh" too.
_MAGIC = (
    (b"\x1f\x8b", "gzip", ".gz"),
    (b"BZh", "bz2", ".bz2"),
    (b"\xfd7zXZ\x00", "xz", ".xz"),
    (b"\x28\xb5\x2f\xfd", "zstd", ".zst"),
    (b"PK\x03\x04", "zip", ".zip"),
)


_ENCODINGS = "the file's encoding (e.g. latin-1, cp1252, utf-16)."
#: Why a file of a caller without text options (one-off scoring by a job whose source is SQL or
#: BigQuery) must be converted rather than read differently.
_NOT_SETTABLE = "this job's source is not a file, so nothing sets how this file is read."


def _foreign_format(fs: AbstractFileSystem, file: str) -> tuple[str, str | None] | None:
    """The format and suffix (None when no file source reads it) of a file that is not text but
    a Parquet file or an Excel workbook: a Parquet file named ``.csv`` was reported as undecodable
    text ("set `encoding`"), and a workbook as a zip archive to be named ``.zip``."""
    try:
        with open_data(fs, file) as handle:
            head = handle.read(8)
            if head.startswith(b"PAR1"):
                return "Parquet file", ".parquet"
            if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):  # the container of Excel 97-2003's .xls
                return "Excel workbook", None
            if head.startswith(b"PK\x03\x04"):
                import zipfile

                handle.seek(0)
                if any(name.startswith("xl/") for name in zipfile.ZipFile(handle).namelist()):  # type: ignore[arg-type]
                    return "Excel workbook", None
    except Exception:  # the decoding error is reported as it is
        return None
    return None


class _ForeignFormat(_CorruptArchive):
    def __init__(self, what: str, suffix: str | None, name: str) -> None:
        ValueError.__init__(self, f"is not text but a{'n' if what[0] in 'AEIOU' else ''} {what}, whatever its name says")
        self.suffix, self.name = suffix, name
        self.kind = SourceDataError

    def advise(self, advice: Advice) -> str:
        if self.suffix is None:
            return "Export it from the spreadsheet as CSV (File > Save As > CSV UTF-8)."
        stem = PurePosixPath(self.name).stem
        return f"Name it {stem}{self.suffix}" + advice(
            "format", ", or set `format: parquet`.", lambda flag: f", or give {flag} parquet.", unset="."
        )


def _compressed_unnamed(fs: AbstractFileSystem, file: str) -> tuple[str, str] | None:
    """The compression and suffix of a file whose name names none but whose first bytes are a
    compression's: "set `encoding`" would send one looking for a text encoding."""
    if _compression(file):
        return None
    try:
        with fs.open(file, "rb") as handle:
            head = handle.read(6)
    except Exception:  # the decoding error is reported as it is
        return None
    return next(((name, suffix) for magic, name, suffix in _MAGIC if head.startswith(magic)), None)


def _first_undecodable(fs: AbstractFileSystem, file: str, encoding: str) -> str | None:
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, lines = 0, 1
    # In a compressed file, the offset is the one in its decompressed text.
    with open_data(fs, file) as handle:
        while True:
            block = handle.read(1 << 20)
            pending = decoder.getstate()[0]
            data = pending + block
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                at = offset - len(pending) + exc.start
                lines += data[: exc.start].count(b"\n")
                return (
                    f"is not valid {encoding} text: byte(s) {data[exc.start : exc.end].hex(' ')} at byte offset {at} "
                    f"(line {lines}) cannot be decoded ({exc.reason})"
                )
            if not block:
                return None
            lines += block.count(b"\n")
            offset += len(block)


def _text_encoding(encoding: str) -> str:
    # utf-8-sig also drops the byte-order mark that spreadsheets write before the header.
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _delimiter(job: JobConfig) -> str:
    return job.source.delimiter if isinstance(job.source, FileSource) else ","


def _csv_options(job: JobConfig, encoding: str) -> dict[str, Any]:
    source = job.source if isinstance(job.source, FileSource) else None
    marks = {
        "sep": _delimiter(job),
        "decimal": source.decimal if source else ".",
        "thousands": source.thousands if source else None,
    }
    # CSV has no types: a dimension's text is its identity ("007" must not become 7). No usecols:
    # with it pandas drops the fields of a row beyond the header's without a word, so a value
    # holding an unquoted delimiter moved that row's fields into the wrong columns unseen. Read
    # whole, such a row fails the parse; the parts read are cut to the job's columns at once.
    # Nor has a timestamp written as the job's format (01022024 for %d%m%Y) a number's value.
    text = [*job.dimensions, job.timestamp] if job.timestamp_format else job.dimensions
    return {
        "dtype": dict.fromkeys(text, str),
        "encoding": _text_encoding(encoding),
        **marks,
        # pandas' C reader matches these marks as single bytes of UTF-8: it ignores a no-break
        # space between thousands (1 234,5 in French exports) and warns of a § delimiter. Its
        # Python reader, several times slower, reads them; ASCII marks keep the fast one.
        "engine": "c" if all(mark.isascii() for mark in marks.values() if mark) else "python",
    }


class _WrongDelimiter(ValueError):
    """A csv header read as one field that another delimiter splits into the job's columns."""

    def __init__(self, header: str, delimiter: str) -> None:
        self.shown = "\\t" if delimiter == "\t" else delimiter
        super().__init__(f"has the header {header!r}, which looks {self.shown}-separated")


class _ForeignHeader(ValueError):
    """A csv header that holds none of the job's columns: another export than the job's."""

    def __init__(self, header: list[str], job: JobConfig) -> None:
        super().__init__(
            f"has the header {','.join(header)!r}, which holds none of the job's columns ({', '.join(job.columns)})"
        )


#: Delimiters looked for in a header that the configured one does not split.
_OTHER_DELIMITERS = (";", "\t", ",", "|")


def _check_csv_header(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str, seen: list[str]) -> None:
    """pandas renames a repeated header ("value", "value.1") and the job would silently read the
    first: read the header as written when pandas' names look renamed (a file may also name a
    column "value.1" itself).

    A file written with another delimiter reads as one column whose name is the whole header:
    the job's columns were then reported missing at validation, with no word of the delimiter."""
    wanted = set(job.columns)
    if not wanted & {str(name) for name in seen}:
        for name in seen:
            for other in _OTHER_DELIMITERS:
                if other != _delimiter(job) and other in str(name) and wanted & set(next(csv.reader([str(name)], delimiter=other))):
                    raise _WrongDelimiter(str(name), other)
        # pandas drops every row when no column is kept: the file read as 0 rows ("holds 0 rows;
        # the job needs at least 24"), with no word of its columns.
        foreign = _foreign_format(fs, file)  # e.g. a Parquet file read as latin-1 text
        if foreign:
            raise _ForeignFormat(*foreign, PurePosixPath(file).name)
        if seen:
            raise _ForeignHeader(list(dict.fromkeys(str(name) for name in seen)), job)  # pandas asks twice of each
    if not any(re.fullmatch(rf"{re.escape(name)}\.\d+", str(other)) for name in job.columns for other in seen):
        return
    with open_data(fs, file) as handle, io.TextIOWrapper(handle, encoding=_text_encoding(encoding), newline="") as text:
        _check_unique(next(csv.reader(text, delimiter=_delimiter(job)), []), job)


class _ExtraFields(_CorruptArchive):
    """A csv row with more fields than the header: pandas takes the first fields of such a first
    row as an index and shifts every column by them, so the timestamps read as host names and
    validation blamed the timestamps; a later one fails pandas' parse (see _csv_options)."""

    def __init__(self, fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str) -> None:
        found = _first_long_row(fs, file, job, encoding)
        where = "" if found is None else f" (line {found[0]} has {found[1]} fields, the header {found[2]})"
        ValueError.__init__(
            self, f"has rows with more fields than its header{where}, which would read their values into the wrong columns"
        )
        self.todo = (
            "Quote the fields that hold the delimiter (\"a,b\"), or give the extra fields a name in the header "
            "(a delimiter at the end of every row needs one at the end of the header too)."
        )
        self.kind = SourceDataError


def _first_long_row(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str) -> tuple[int, int, int] | None:
    """The line, field count and header's field count of the first row longer than the header."""
    with open_data(fs, file) as handle, io.TextIOWrapper(handle, encoding=_text_encoding(encoding), newline="") as text:
        rows = csv.reader(text, delimiter=_delimiter(job))
        header = len(next(rows, []))
        for row in rows:
            if len(row) > header:
                return rows.line_num, len(row), header
    return None


def _check_index(frame: pd.DataFrame, first: int, fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str) -> None:
    """pandas numbers the rows read (from ``first``) unless rows had more fields than the header."""
    if not frame.index.equals(pd.RangeIndex(first, first + len(frame))):
        raise _ExtraFields(fs, file, job, encoding)


#: Rows parsed at once by :func:`_read_csv`: each part holds every column of the file (see
#: _csv_options) until it is cut to the job's.
CSV_ROWS = 100_000


def _read_csv(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str) -> pd.DataFrame:
    parts = [job_columns(chunk, job) for chunk in _csv_chunks(fs, file, job, encoding, CSV_ROWS)]
    if not parts:
        return pd.DataFrame()  # see _csv_chunks
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _csv_chunks(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str, rows: int) -> Iterator[pd.DataFrame]:
    with _decoding(fs, file, encoding), open_data(fs, file) as handle:
        try:
            chunks = pd.read_csv(handle, chunksize=rows, **_csv_options(job, encoding))
        except pd.errors.EmptyDataError:
            # A file without even a header holds no rows, as an empty jsonl file does: Spark and
            # other writers leave one per empty partition, and it failed the whole read as
            # "truncated or corrupt".
            return
        names: list[str] | None = None
        first = 0
        try:
            for chunk in chunks:  # a file with only a header gives one chunk without rows
                if names is None:
                    names = [str(name) for name in chunk.columns]
                    _check_csv_header(fs, file, job, encoding, names)
                _check_index(chunk, first, fs, file, job, encoding)
                first += len(chunk)
                yield chunk
        except pd.errors.ParserError as exc:
            # A header written with another delimiter is the cause to name first: its rows are
            # then longer than the one-field header wherever a value holds the configured one.
            _check_csv_header(fs, file, job, encoding, names if names is not None else _csv_header(fs, file, job, encoding))
            if _first_long_row(fs, file, job, encoding) is None:
                raise
            raise _ExtraFields(fs, file, job, encoding) from exc


def _csv_header(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str) -> list[str]:
    with open_data(fs, file) as handle, io.TextIOWrapper(handle, encoding=_text_encoding(encoding), newline="") as text:
        return next(csv.reader(text, delimiter=_delimiter(job)), [])


# dtype=False keeps JSON's own types, as stored: no guessing of dates or numbers in strings (pandas
# would take numbers in a column named "timestamp" as epoch times). It also turns off the date
# conversion that convert_dates/keep_default_dates turned off before pandas 3.1 deprecated them
# (a Pandas4Warning on every read, an error once pandas 4 removes them).
_JSON_OPTIONS = {"dtype": False}


class _BadJsonLine(_CorruptArchive):
    """A jsonl line that is not JSON: pandas' error gives a character position in its buffer,
    with no word of the line."""

    def __init__(self, line: int, error: ValueError, last: bool) -> None:
        # json's own message counts lines and characters within the one line it was given.
        where = f"line {line}, column {error.colno}: {error.msg}" if isinstance(error, json.JSONDecodeError) else f"line {line}: {error}"
        ValueError.__init__(self, f"is not valid jsonl: {where}")
        if last:  # a writer may still be appending it
            self.todo = f"Check that the file is complete: its last line ({line}) ends without a newline."
            self.kind = SourceError
        else:
            self.todo = f"Fix or remove line {line}: every line must hold one JSON object ({{\"ts\": ..., ...}})."
            self.kind = SourceDataError


@contextmanager
def _jsonl_lines(fs: AbstractFileSystem, file: str, encoding: str) -> Iterator[None]:
    """Re-raise a parse error of pandas with the file's first line that is not JSON."""
    try:
        yield
    except UnicodeDecodeError:
        raise
    except ValueError as exc:
        bad = _first_bad_json_line(fs, file, encoding)
        if bad is None:
            raise
        raise _BadJsonLine(*bad) from exc


def _first_bad_json_line(fs: AbstractFileSystem, file: str, encoding: str) -> tuple[int, ValueError, bool] | None:
    with open_data(fs, file) as handle, io.TextIOWrapper(handle, encoding=_text_encoding(encoding)) as text:
        for number, line in enumerate(text, 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError as exc:
                return number, exc, not line.endswith("\n")
    return None


#: Lines parsed at once by :func:`_read_jsonl`.
JSONL_ROWS = 50_000


def _read_jsonl(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str) -> pd.DataFrame:
    # pandas parses every line into a dict of Python objects, the columns the job does not read
    # included: a whole file of 17 MB took 260 MB at peak. Parsed in parts and cut to the job's
    # columns at once, it takes a few times the part's size.
    parts = [job_columns(chunk, job) for chunk in _jsonl_chunks(fs, file, job, encoding, JSONL_ROWS)]
    if not parts:
        return pd.DataFrame()
    frame = pd.concat(parts, ignore_index=True)
    # A part whose values of a column are all null holds it as objects, and numbers beside them
    # stay objects: give the column the type the whole file gives it.
    return frame.infer_objects() if len({tuple(part.dtypes.items()) for part in parts}) > 1 else frame


def _jsonl_chunks(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str, rows: int) -> Iterator[pd.DataFrame]:
    with _decoding(fs, file, encoding), _jsonl_lines(fs, file, encoding), open_data(fs, file) as handle:
        yield from pd.read_json(handle, lines=True, encoding=_text_encoding(encoding), chunksize=rows, **_JSON_OPTIONS)


def _read_json(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str) -> pd.DataFrame:
    with _decoding(fs, file, encoding), open_data(fs, file) as handle:
        text = handle.read().decode(_text_encoding(encoding))
    if not text.lstrip().startswith("["):
        raise ValueError("a json file must hold one array of records ([{...}, {...}]); for one record per line use jsonl")
    return pd.read_json(StringIO(text), orient="records", **_JSON_OPTIONS)


def _read_pickle(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str) -> pd.DataFrame:
    with open_data(fs, file) as handle:
        try:
            frame = pd.read_pickle(handle)
        # Unpickling fails in many ways (a truncated stream, a class that no longer exists).
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError) as exc:
            raise ValueError(f"cannot unpickle it: {type(exc).__name__}: {exc}") from exc
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"it holds a {type(frame).__module__}.{type(frame).__qualname__}, not a pandas DataFrame")
    return frame


def _whole(
    read: Callable[[AbstractFileSystem, str, JobConfig, str], pd.DataFrame],
) -> Callable[[AbstractFileSystem, str, JobConfig, str, int], Iterator[pd.DataFrame]]:
    """Chunks of a format that can only be read whole."""

    def chunks(fs: AbstractFileSystem, file: str, job: JobConfig, encoding: str, rows: int) -> Iterator[pd.DataFrame]:
        frame = job_columns(read(fs, file, job, encoding), job)
        for first in range(0, len(frame), rows):
            yield frame.iloc[first : first + rows]

    return chunks


_READERS: dict[str, Callable[[AbstractFileSystem, str, JobConfig, str], pd.DataFrame]] = {
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "json": _read_json,
    "pickle": _read_pickle,
}

_CHUNKS: dict[str, Callable[[AbstractFileSystem, str, JobConfig, str, int], Iterator[pd.DataFrame]]] = {
    "csv": _csv_chunks,
    "jsonl": _jsonl_chunks,
    "json": _whole(_read_json),
    "pickle": _whole(_read_pickle),
}


def _parquet_dataset(
    fs: AbstractFileSystem, files: list[_File], job: JobConfig, fail: Fail, shown: Callable[[str], str]
) -> ds.Dataset:
    """``files`` as one Arrow dataset; partition keys that the job reads as columns and the
    files lack come from the ``key=value`` folders, as text (Arrow decodes them as Hive does).

    Arrow takes the schema of the first file only: a job column missing from it would be
    dropped from every file, one missing from a later file would read as nulls, and a type
    another file disagrees with fails as if the file were corrupt. The job's columns are
    therefore compared across the files first (:func:`_job_schema`)."""
    names = [file.name for file in files]
    dataset = ds.dataset(names, format="parquet", filesystem=fs)
    schema = _job_schema(dataset, job, fail, shown) if len(files) > 1 else dataset.schema
    keys = sorted({key for file in files for key in file.keys if key in job.columns and key not in schema.names})
    if not keys:
        if schema is dataset.schema:
            return dataset
        # The fragments that _job_schema inspected keep their footers: a new dataset of the same
        # paths read every footer again, a second request per file to an object store.
        return ds.FileSystemDataset(list(dataset.get_fragments()), schema=schema, format=dataset.format, filesystem=dataset.filesystem)
    partitioning = ds.partitioning(pa.schema([(key, pa.string()) for key in keys]), flavor="hive")
    schema = pa.schema([*schema, *partitioning.schema])
    return ds.dataset(
        names, schema=schema, format="parquet", filesystem=fs, partitioning=partitioning, partition_base_dir=files[0].base
    )


def _job_schema(dataset: ds.Dataset, job: JobConfig, fail: Fail, shown: Callable[[str], str]) -> pa.Schema:
    """The job's columns that the files hold, each with a type every file's values fit in
    (an integer column in one file and a float one in another read as floats).

    Raises the source error when a column is in some files and not in others, or when files
    disagree on its type (text in one, numbers in another; timestamps with and without a zone).
    """
    fragments = list(dataset.get_fragments())
    schemas = [fragment.physical_schema for fragment in fragments]
    # A file without rows lacks nothing.
    held = [(fragment, schema) for fragment, schema in zip(fragments, schemas, strict=True) if fragment.metadata.num_rows]
    _same_columns(
        [shown(fragment.path) for fragment, _ in held],
        [[name for name in schema.names if name in job.columns] for _, schema in held],
        fail,
    )
    fields = []
    for name in job.columns:
        types = [schema.field(name).type if name in schema.names else None for schema in schemas]
        if not all(kind is None or pa.types.is_dictionary(kind) for kind in types):
            # pandas writes a categorical column as a dictionary of its values: beside a plain
            # column of another file it holds values of the same type, which Arrow decodes.
            types = [kind.value_type if kind is not None and pa.types.is_dictionary(kind) else kind for kind in types]
        if all(kind is None for kind in types):
            continue  # in no file: validation names it (or a partition folder provides it)
        distinct = list(dict.fromkeys(kind for kind in types if kind is not None))  # a file without rows may lack it
        try:
            unified = pa.unify_schemas([pa.schema([(name, kind)]) for kind in distinct], promote_options="permissive")
            kind = unified.field(name).type
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            if not all(isinstance(kind, pa.TimestampType) and kind.tz for kind in distinct):
                first = {kind: shown(fragment.path) for fragment, kind in reversed(list(zip(fragments, types, strict=True)))}
                raise fail(
                    f"column {name!r} has different types in different files: "
                    + ", ".join(f"{kind} in {first[kind]}" for kind in distinct),
                    f"Write {name!r} with one type in every file (for timestamps: all with a time zone, or all without).",
                ) from None
            # Timestamps in different zones are instants all the same: compare them in UTC.
            utc = pa.timestamp("ns" if any(kind.unit == "ns" for kind in distinct) else "us", "UTC")
            # Arrow compares a file's row-group statistics with the window only when one cast
            # makes their types alike: a file differing from ``utc`` in both zone and unit
            # failed the read ("no kernel matching input types"). Its window is then applied
            # to the values read instead (see _window_filter).
            if any(kind.unit != utc.unit and kind.tz != utc.tz for kind in distinct):
                fields.append(pa.field(name, utc, metadata={_NO_STATISTICS: b"1"}))
                continue
            kind = utc
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _read_parquet(dataset: ds.Dataset, job: JobConfig, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """The job's columns; Arrow skips what lies outside the window when the timestamp column
    has a timestamp type."""
    columns = [name for name in job.columns if name in dataset.schema.names]
    field = dataset.schema.field(job.timestamp) if job.timestamp in dataset.schema.names else None
    window = None
    if field is not None and isinstance(field.type, pa.TimestampType):
        statistics = not (field.metadata and _NO_STATISTICS in field.metadata)
        window = _window_filter(job.timestamp, field.type, start, end, statistics=statistics)
    return dataset.to_table(columns=columns, filter=window).to_pandas()


#: Field metadata of a timestamp column whose row-group statistics Arrow cannot compare with
#: the window in every file (see _job_schema).
_NO_STATISTICS = b"anomaly_pipelines.no_statistics"

#: What nanosecond timestamps can hold: every value of such a column lies in between.
_NANOSECONDS = (pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC"))


def _window_filter(
    name: str, kind: pa.TimestampType, start: pd.Timestamp | None, end: pd.Timestamp | None, *, statistics: bool = True
) -> ds.Expression | None:
    # A cast hides the column from Arrow's statistics: every row group is read, then filtered.
    column = ds.field(name) if statistics else ds.field(name).cast(kind)
    inside: ds.Expression | None = None
    for bound, compare in ((start, operator.ge), (end, operator.lt)):
        if bound is None:
            continue
        if kind.unit == "ns" and not _NANOSECONDS[0] <= bound <= _NANOSECONDS[1]:
            # A bound such as --start 1000-01-01 has no nanosecond value (OverflowError): it
            # keeps every row of the column on its side, or none.
            condition = ds.scalar((bound < _NANOSECONDS[0]) == (compare is operator.ge))
        else:
            # Arrow compares only identical types. Rounding the bound up to the column's unit
            # keeps both ">= start" and "< end" exact; a naive column holds UTC wall times.
            value = bound.ceil(kind.unit)
            condition = compare(column, pa.scalar(value if kind.tz else value.tz_convert(None), type=kind))
        inside = condition if inside is None else inside & condition
    # Rows without a timestamp stay, as for csv: validation reports them.
    return None if inside is None else inside | column.is_null()
