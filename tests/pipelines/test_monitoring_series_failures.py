"""Monitoring (pipelines/monitoring.py) of a job whose one series cannot be monitored: the others
still are, and the run fails naming the bad one. A real job trained and run through the library."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import parse_job
from pipelines.errors import ModelError
from pipelines.monitoring import monitor_window, read_records, read_request, record_path
from pipelines.runner import run_predict, run_train
from tests.pipelines.test_monitoring import TRAIN, WINDOWS, hourly


@pytest.fixture(name="logged")
def logged_fixture() -> Iterator[list[str]]:
    """What ``pipelines.monitoring`` logged (Airflow's logging setup, once imported, drops pytest's caplog handler)."""
    lines: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, logger = Handler(logging.INFO), logging.getLogger("pipelines.monitoring")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def test_a_series_that_cannot_be_monitored_is_named_and_the_others_are_monitored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    # One series whose model version was gone, or one of whose files was damaged, stopped the
    # run there: the series after it (in name order) were never monitored, run after run.
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    data = pd.concat([hourly(18, seed=s).assign(region=r) for s, r in ((0, "ap"), (1, "eu"))], ignore_index=True)
    (tmp_path / "source").mkdir()
    data.to_csv(tmp_path / "source" / "data.csv", index=False)
    job = parse_job({
        "name": "monitored", "source": {"kind": "file", "path": str(tmp_path / "source" / "*.csv"), "format": "csv"},
        "timestamp": "timestamp", "frequency": "1h", "dimensions": ["region"], "features": ["a", "b"],
        "model": {"kind": "seasonal_mad", "params": {"season": "1d"}}, "training_window": "14d",
        "outputs": {"parquet": str(tmp_path / "outputs")}, "registry": str(tmp_path / "models"), "monitoring": {"min_rows": 96},
    })
    run_train(job, TRAIN, run_id="train")
    run_predict(job, WINDOWS[0], run_id="p0")
    run_predict(job, WINDOWS[1], run_id="p1")

    # A record of series region=ap damaged (cut short by a copy).
    damaged = Path(record_path(job, "region=ap", WINDOWS[0]).replace(WINDOWS[0].key(), "earlier"))
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"interval_start": ')
    with pytest.raises(ModelError, match=rf"job monitored: monitoring of window .* failed for 1 series, the others were monitored "
                       rf"and recorded: series region=ap, .*the monitoring file {damaged} is not valid JSON.*; delete it"
                       r"(?s:.*)A retrain is due for series region=new: no model yet"):
        monitor_window(job, WINDOWS[0], run_id="p0", unscored={"region=new": "no model"})
    assert [r["interval_start"] for r in read_records(job, "region=eu")] == [WINDOWS[0].start.isoformat()]
    assert any("series region=ap: monitoring failed, the other series go on" in line for line in logged)
    # Not triggered (the task failed): not written as asked either, or later runs would take it as asked.
    assert read_request(job, "region=new") is None
    damaged.unlink()
    fixed = monitor_window(job, WINDOWS[0], run_id="p0", unscored={"region=new": "no model"})
    assert fixed.due and read_request(job, "region=new")["reason"] == "no model yet"

    # Its model version gone from the registry.
    [metadata] = (tmp_path / "models" / "monitored" / "region=ap" / "versions").glob("*/metadata.json")
    metadata.unlink()
    with pytest.raises(ModelError, match=r"failed for 1 series(?s:.*)series region=ap, monitoring its rows scored by model version "
                       r"\S+: .*no complete model version(?s:.*)\(restore that version in the registry, or train the series again\)"
                       r"(?s:.*)Then clear this task"):
        monitor_window(job, WINDOWS[1], run_id="p1")
    assert len(read_records(job, "region=eu")) == 2
