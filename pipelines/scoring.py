"""Score series with their champion models and publish the labeled anomalies.

Scoring is done per series (mapped tasks in Airflow) into the run's workspace; publishing
then writes every series of the window at once, so the outputs never hold half a run.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipelines import storage
from pipelines.config import JobConfig, resolve_path
from pipelines.detectors import BaseDetector
from pipelines.errors import ModelError
from pipelines.schema import conform
from pipelines.series import parse_series_key
from pipelines.sinks import ParquetSink, SqlSink
from pipelines.db import engine_for
from pipelines.training import load_champion
from pipelines.workspace import Window, Workspace, utcnow

log = logging.getLogger(__name__)


def labeled_frame(
    detector: BaseDetector,
    data: pd.DataFrame,
    window: Window | None,
    *,
    job: str,
    series: str,
    dimensions: dict[str, str],
    model: str,
    model_version: str,
    run_id: str,
) -> pd.DataFrame:
    """Score the rows of ``data`` inside ``window`` (earlier rows serve as history) in output form."""
    if window is None:
        history, rows = None, data
    else:
        history = data[data.index < window.start]
        rows = data[(data.index >= window.start) & (data.index < window.end)]
    frame = detector.detect(rows, history=history if history is not None and len(history) else None).to_frame()
    if window is None and len(rows):
        index = rows.index
        window = Window(index.min(), index.max() + (index[-1] - index[-2] if len(index) > 1 else pd.Timedelta(1, "s")))
    frame = frame.assign(
        job=job,
        series=series,
        model=model,
        model_version=model_version,
        run_id=run_id,
        interval_start=window.start if window else pd.NaT,
        interval_end=window.end if window else pd.NaT,
        scored_at=utcnow(),
        **dimensions,
    )
    return conform(frame, list(dimensions))


@dataclass(frozen=True)
class ScoreResult:
    series: str
    path: str
    rows: int
    anomalies: int
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def score_series(job: JobConfig, series: str, data: pd.DataFrame, window: Window, *, run_id: str) -> ScoreResult:
    """Score one series' rows in ``window`` with its champion and stage them in the workspace."""
    current = load_champion(job, series)
    if current is None:
        raise ModelError(
            f"job {job.name}, series {series}: no champion model is serving. "
            f"Run the train DAG ({job.name}__train) or `anomaly-pipelines train {job.name}` first."
        )
    version, detector = current
    frame = labeled_frame(
        detector,
        data,
        window,
        job=job.name,
        series=series,
        dimensions=parse_series_key(series, job.dimensions),
        model=job.model.kind,
        model_version=version.version,
        run_id=run_id,
    )
    path = Workspace(job.name, run_id).scored(series)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    storage.atomic_write(path, buffer.getvalue())
    anomalies = int(frame.loc[frame["is_anomaly"], "timestamp"].nunique())
    log.info("job %s, series %s: scored %d rows with %s, %d anomalous timestamps", job.name, series, len(frame), version.version, anomalies)
    return ScoreResult(series, path, len(frame), anomalies, version.version)


@dataclass(frozen=True)
class PublishResult:
    rows: int
    anomalies: dict[str, int]
    rows_per_series: dict[str, int]
    parquet_paths: list[str]
    table: str | None
    window: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def publish(job: JobConfig, window: Window, scored_paths: list[str], *, output: str | None = None) -> PublishResult:
    """Write the staged scores of every series: Parquet dataset and SQL table, replacing the window.

    With ``output`` (one-off scoring), everything goes to that one Parquet file instead.
    """
    frames = [pd.read_parquet(io.BytesIO(storage.read_bytes(path))) for path in scored_paths]
    frame = conform(pd.concat(frames, ignore_index=True), job.dimensions) if frames else None
    if frame is None or frame.empty:
        raise ModelError(f"job {job.name}: nothing was scored in window {window}; no output written")
    table_name = None
    if output:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        storage.atomic_write(output, buffer.getvalue(), job.outputs.storage_options)
        paths = [output]
    else:
        paths = ParquetSink(resolve_path(job.outputs.parquet), job.outputs.storage_options).write(
            frame, job=job.name, dimensions=job.dimensions, start=window.start, end=window.end
        )
        if job.outputs.table:
            table = job.outputs.table
            SqlSink(engine_for(table.connection), table.name, table.db_schema).write(
                frame, job=job.name, dimensions=job.dimensions, start=window.start, end=window.end
            )
            table_name = f"{table.db_schema + '.' if table.db_schema else ''}{table.name} ({table.connection.describe()})"
    anomalous = frame[frame["is_anomaly"]].groupby("series")["timestamp"].nunique()
    per_series = frame.groupby("series")["timestamp"].nunique()
    result = PublishResult(
        rows=len(frame),
        anomalies={s: int(anomalous.get(s, 0)) for s in per_series.index},
        rows_per_series={s: int(n) for s, n in per_series.items()},
        parquet_paths=paths,
        table=table_name,
        window=str(window),
    )
    log.info("job %s: published %d rows for window %s to %s%s", job.name, len(frame), window, ", ".join(paths), f" and {table_name}" if table_name else "")
    return result
