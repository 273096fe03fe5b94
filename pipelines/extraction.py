"""Extract a window from a job's source, validate it, and split it into one batch per series.

These are the first two steps of every train, tune and predict run; the Airflow tasks and the
CLI call these functions with the same arguments.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines import storage
from pipelines.config import FileSource, JobConfig, resolve_path
from pipelines.errors import SourceError
from pipelines.series import series_key
from pipelines.sources import FileReader, make_source
from pipelines.sources.base import parse_timestamps
from pipelines.validation import check_and_raise
from pipelines.workspace import Window, Workspace, validation_report_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extracted:
    """What was extracted: the raw batch files (one, or one per chunk), rows, and the window."""

    paths: list[str]
    rows: int
    window: Window
    read_from: str

    def to_dict(self) -> dict:
        return {"paths": self.paths, "rows": self.rows, "window": self.window.to_dict(), "read_from": self.read_from}

    @classmethod
    def from_dict(cls, data: dict) -> Extracted:
        return cls(list(data["paths"]), int(data["rows"]), Window.from_dict(data["window"]), data["read_from"])


def extract(job: JobConfig, window: Window, *, run_id: str, history_rows: int = 0) -> Extracted:
    """Read ``window`` (plus ``history_rows`` periods before it) and keep it in the run's workspace.

    Raises :class:`SourceError` when the window holds no rows: scoring or training nothing is
    almost always a mistake in the window or the source.
    """
    read_start = window.start - job.frequency * history_rows
    frame = make_source(job).read(read_start, window.end)
    parsed = (
        parse_timestamps(frame[job.timestamp])
        if job.timestamp in frame.columns
        else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    )
    # Unparseable timestamps count as in the window: validation must see and report them.
    in_window = parsed.isna() | (parsed >= window.start)
    if not in_window.any():
        raise SourceError(
            f"job {job.name}: {job.source.describe()} has no rows in window {window}. "
            "Check that the source holds data for this window, or run another window "
            "(manual runs take 'start' and 'end')."
        )
    path = Workspace(job.name, run_id).raw_batch
    storage.atomic_write(path, _to_parquet_bytes(_canonical_raw(frame)))
    log.info("job %s: extracted %d rows (%d in window %s) from %s", job.name, len(frame), int(in_window.sum()), window, job.source.describe())
    return Extracted(paths=[path], rows=len(frame), window=window, read_from=job.source.describe())


def extract_chunks(job: JobConfig, *, run_id: str, input_path: str, chunk_rows: int) -> Extracted:
    """Split a file of any size into raw chunks of ``chunk_rows`` rows (one-off scoring).

    Memory stays bounded by one chunk; the returned window spans the file's timestamps.
    Rows of a series must come in time order across the file: each chunk is scored with the
    end of the previous chunk as history.
    """
    workspace = Workspace(job.name, run_id)
    one_off = job.model_copy(update={"source": FileSource(kind="file", path=input_path)})
    first, last, rows, paths, manifest = None, None, 0, [], []
    for index, chunk in enumerate(FileReader(one_off).iter_chunks(chunk_rows)):
        manifest.append(_series_counts(chunk, job))
        if job.timestamp in chunk.columns:
            parsed = parse_timestamps(chunk[job.timestamp]).dropna()
            if len(parsed):
                first = parsed.min() if first is None else min(first, parsed.min())
                last = parsed.max() if last is None else max(last, parsed.max())
        path = workspace.raw_chunk(index)
        storage.atomic_write(path, _to_parquet_bytes(_canonical_raw(chunk)))
        paths.append(path)
        rows += len(chunk)
        log.info("job %s: chunk %d: %d rows (%d so far) from %s", job.name, index, len(chunk), rows, input_path)
    storage.atomic_write(workspace.chunk_manifest, json.dumps(manifest).encode())
    if rows < max(job.validation.min_rows, 1):
        raise SourceError(
            f"job {job.name}: input file {input_path!r} holds {rows} rows; the job needs at least "
            f"{max(job.validation.min_rows, 1)} (validation.min_rows)"
        )
    first = first if first is not None else pd.Timestamp("1970-01-01", tz="UTC")
    last = last if last is not None else first
    window = Window(first.to_pydatetime(), (last + job.frequency).to_pydatetime())
    return Extracted(paths=paths, rows=rows, window=window, read_from=f"input file {input_path!r}")


def _series_counts(chunk: pd.DataFrame, job: JobConfig) -> dict[str, int]:
    """Rows per series in a raw chunk, so scoring a later chunk reads only the chunks its
    series' history is in (a missing dimension column is left to validation to report)."""
    if not job.dimensions:
        return {series_key([], []): len(chunk)}
    if not set(job.dimensions) <= set(chunk.columns):
        return {}
    counts = chunk.groupby([chunk[d].astype("string") for d in job.dimensions], dropna=False).size()
    return {
        series_key(job.dimensions, key if isinstance(key, tuple) else (key,)): int(n) for key, n in counts.items()
    }


def _canonical_raw(frame: pd.DataFrame) -> pd.DataFrame:
    """Make raw columns storable in Parquet without changing what validation will see.

    Object columns whose values are all numbers (e.g. SQL DECIMAL) become float64; any other
    object column becomes strings, so an unparseable timestamp or a text feature stays visible.
    """
    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if column.dtype != object:
            continue
        values = column.dropna()
        if len(values) and all(isinstance(v, (int, float, np.number)) or _is_decimal(v) for v in values):
            out[name] = column.astype("float64")
        else:
            out[name] = column.map(lambda v: v if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)).astype("string")
    return out


def _is_decimal(value: object) -> bool:
    from decimal import Decimal

    return isinstance(value, Decimal)


def _to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_parquet(path: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(storage.read_bytes(path)))


def prepare(frame: pd.DataFrame, job: JobConfig) -> pd.DataFrame:
    """Typed rows of a validated batch: UTC timestamps, float features, string dimensions."""
    out = pd.DataFrame(
        {
            job.timestamp: parse_timestamps(frame[job.timestamp]),
            **{dim: frame[dim].astype("string") for dim in job.dimensions},
            **{feature: pd.to_numeric(frame[feature]).astype("float64") for feature in job.features},
        }
    )
    return out.sort_values([*job.dimensions, job.timestamp], kind="stable").reset_index(drop=True)


def series_groups(prepared: pd.DataFrame, job: JobConfig) -> Iterator[tuple[str, dict[str, str], pd.DataFrame]]:
    """Each series of a prepared batch: its key, its dimension values, and its rows indexed by time."""
    groups = prepared.groupby(job.dimensions, sort=True) if job.dimensions else [((), prepared)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        dims = dict(zip(job.dimensions, map(str, values), strict=True))
        yield series_key(job.dimensions, values), dims, group.set_index(job.timestamp)[job.features]


def checked_batch(job: JobConfig, window: Window, *, run_id: str, purpose: str, raw_path: str, part: str = "") -> pd.DataFrame:
    """The raw batch at ``raw_path``, validated, then typed by :func:`prepare`.

    On failure the batch is quarantined and :class:`~pipelines.errors.DataValidationError`
    stops the run before anything is trained or written.
    """
    frame = read_parquet(raw_path)
    workspace = Workspace(job.name, run_id)
    check_and_raise(
        frame,
        job,
        window=(window.start, window.end),
        suite_path=resolve_path(job.validation.suite) if job.validation.suite else None,
        report_path=validation_report_path(job, purpose, window, run_id + part),
        quarantine_dir=workspace.quarantine + part,
        storage_options=job.outputs.storage_options,
    )
    return prepare(frame, job)


def validate(job: JobConfig, window: Window, *, run_id: str, purpose: str, raw_path: str) -> list[str]:
    """Validate the raw batch, then write one typed batch per series; returns the series keys."""
    prepared = checked_batch(job, window, run_id=run_id, purpose=purpose, raw_path=raw_path)
    keys: list[str] = []
    for key, _, batch in series_groups(prepared, job):
        storage.atomic_write(Workspace(job.name, run_id).series_batch(key), _to_parquet_bytes(batch.reset_index()))
        keys.append(key)
    log.info("job %s: %d rows valid, %d series: %s", job.name, len(prepared), len(keys), ", ".join(keys))
    return keys


def read_series(job: JobConfig, run_id: str, series: str) -> pd.DataFrame:
    """The typed batch of one series: a UTC DatetimeIndex and one float column per feature."""
    frame = read_parquet(Workspace(job.name, run_id).series_batch(series))
    return frame.set_index(job.timestamp)[job.features]


__all__ = [
    "Extracted",
    "checked_batch",
    "extract",
    "extract_chunks",
    "prepare",
    "read_series",
    "series_groups",
    "validate",
]
