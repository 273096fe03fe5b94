"""Extract a window from a job's source, validate it, and split it into one batch per series.

These are the first two steps of every train, tune and predict run; the Airflow tasks and the
CLI call these functions with the same arguments.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines import storage
from pipelines.config import FileSource, JobConfig, resolve_path
from pipelines.errors import SourceError
from pipelines.series import series_key
from pipelines.sources import make_source
from pipelines.sources.base import parse_timestamps
from pipelines.validation import check_and_raise
from pipelines.workspace import Window, Workspace, validation_report_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extracted:
    """What :func:`extract` kept: where the raw batch is, its size, and the window it covers."""

    path: str
    rows: int
    window: Window
    read_from: str


def _source_for(job: JobConfig, input_path: str | None):
    if not input_path:
        return make_source(job), job.source.describe()
    # One-off scoring: same columns and parsing rules as the job, another file.
    one_off = job.model_copy(update={"source": FileSource(kind="file", path=input_path)})
    return make_source(one_off), f"input file {input_path!r}"


def extract(
    job: JobConfig,
    window: Window | None,
    *,
    run_id: str,
    history_rows: int = 0,
    input_path: str | None = None,
) -> Extracted:
    """Read ``window`` (plus ``history_rows`` periods before it) and keep it in the run's workspace.

    ``window=None`` reads everything (one-off scoring of a whole file); the returned window is
    then the span of the data. Raises :class:`SourceError` when the window holds no rows:
    scoring or training nothing is almost always a mistake in the window or the source.
    """
    read_start = window.start - job.frequency * history_rows if window else None
    source, described = _source_for(job, input_path)
    frame = source.read(read_start, window.end if window else None)
    parsed = (
        parse_timestamps(frame[job.timestamp])
        if job.timestamp in frame.columns
        else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    )
    # Unparseable timestamps count as in the window: validation must see and report them.
    in_window = parsed.isna() | (parsed >= window.start) if window else pd.Series(True, index=parsed.index)
    if not in_window.any():
        raise SourceError(
            f"job {job.name}: {described} has no rows in window {window or '(whole source)'}. "
            "Check that the source holds data for this window, or run another window "
            "(manual runs take 'start' and 'end')."
        )
    if window is None:
        valid = parsed.dropna()
        first = valid.min() if len(valid) else pd.Timestamp("1970-01-01", tz="UTC")
        last = valid.max() if len(valid) else first
        window = Window(first.to_pydatetime(), (last + job.frequency).to_pydatetime())
    path = Workspace(job.name, run_id).raw_batch
    storage.atomic_write(path, _to_parquet_bytes(_canonical_raw(frame)))
    log.info("job %s: extracted %d rows (%d in window %s) from %s", job.name, len(frame), int(in_window.sum()), window, described)
    return Extracted(path=path, rows=len(frame), window=window, read_from=described)


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


def validate(
    job: JobConfig,
    window: Window,
    *,
    run_id: str,
    purpose: str,
    raw_path: str,
) -> list[str]:
    """Validate the raw batch, then write one typed batch per series; returns the series keys.

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
        report_path=validation_report_path(job, purpose, window, run_id),
        quarantine_dir=workspace.quarantine,
        storage_options=job.outputs.storage_options,
    )
    prepared = prepare(frame, job)
    keys: list[str] = []
    groups = prepared.groupby(job.dimensions, sort=True) if job.dimensions else [((), prepared)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        key = series_key(job.dimensions, values)
        batch = group.set_index(job.timestamp)[job.features]
        storage.atomic_write(workspace.series_batch(key), _to_parquet_bytes(batch.reset_index()))
        keys.append(key)
    log.info("job %s: %d rows valid, %d series: %s", job.name, len(prepared), len(keys), ", ".join(keys))
    return keys


def read_series(job: JobConfig, run_id: str, series: str) -> pd.DataFrame:
    """The typed batch of one series: a UTC DatetimeIndex and one float column per feature."""
    frame = read_parquet(Workspace(job.name, run_id).series_batch(series))
    return frame.set_index(job.timestamp)[job.features]


__all__ = ["Extracted", "extract", "prepare", "read_series", "validate"]
