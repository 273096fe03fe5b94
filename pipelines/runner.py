"""Whole train, tune and predict runs in one process: what the CLI does without Airflow.

Each function chains the same step functions that the Airflow tasks call one by one.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from pipelines.config import JobConfig
from pipelines.extraction import extract, read_series, validate
from pipelines.scoring import PublishResult, publish, score_series
from pipelines.training import registry_for, train_series
from pipelines.tuning import tune_series
from pipelines.workspace import Window, Workspace

log = logging.getLogger(__name__)


def history_rows(job: JobConfig) -> int:
    """Rows before a prediction window that the serving models need (their largest lookback)."""
    registry = registry_for(job)
    lookbacks = [
        int(champion.metadata.get("lookback", 0))
        for series in registry.series(job.name)
        if (champion := registry.champion(job.name, series)) is not None
    ]
    return max(lookbacks, default=0)


def _prepared_series(
    job: JobConfig, window: Window | None, run_id: str, purpose: str, **extract_args: Any
) -> tuple[Window, list[str]]:
    extracted = extract(job, window, run_id=run_id, **extract_args)
    series = validate(job, extracted.window, run_id=run_id, purpose=purpose, raw_path=extracted.path)
    return extracted.window, series


def run_train(job: JobConfig, window: Window, *, run_id: str) -> list[dict[str, Any]]:
    try:
        window, series = _prepared_series(job, window, run_id, "train")
        return [train_series(job, s, read_series(job, run_id, s), window, run_id=run_id).to_dict() for s in series]
    finally:
        cleanup(job, run_id)


def run_tune(job: JobConfig, window: Window, *, run_id: str) -> list[dict[str, Any]]:
    try:
        window, series = _prepared_series(job, window, run_id, "tune")
        return [tune_series(job, s, read_series(job, run_id, s)) for s in series]
    finally:
        cleanup(job, run_id)


def run_predict(
    job: JobConfig,
    window: Window | None,
    *,
    run_id: str,
    input_path: str | None = None,
    output: str | None = None,
) -> PublishResult:
    """Score ``window`` (``None`` with ``input_path``: the whole file) and publish it."""
    try:
        window, series = _prepared_series(
            job, window, run_id, "predict", history_rows=history_rows(job), input_path=input_path
        )
        scored = [score_series(job, s, read_series(job, run_id, s), window, run_id=run_id) for s in series]
        return publish(job, window, [result.path for result in scored], output=output)
    finally:
        cleanup(job, run_id)


def cleanup(job: JobConfig, run_id: str) -> None:
    """Remove a run's intermediate files (never its outputs, models or quarantine)."""
    shutil.rmtree(Workspace(job.name, run_id).root, ignore_errors=True)
