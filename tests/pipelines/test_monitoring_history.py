"""Monitoring (pipelines/monitoring.py) of a series with a long history of records: a run reads the
few records its decision needs, not every record the series ever had."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines import storage
from pipelines.monitoring import read_records, record_path
from pipelines.runner import run_train
from pipelines.workspace import Window
from tests.pipelines.test_monitoring import TRAIN, WINDOWS, hourly, make_job, predict_and_monitor, shifted_from


def test_a_run_reads_only_the_records_its_decision_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every run read every record of the series: after a year of hourly runs, 8,760 files per series
    # and run (minutes of GETs per series on object storage), growing for good.
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    job = make_job(tmp_path, shifted_from(hourly(26, seed=1), pd.Timestamp(WINDOWS[1].start), "b", 4.0))
    run_train(job, TRAIN, run_id="train")
    assert not predict_and_monitor(job, WINDOWS[0], "predict-0").due
    # A long history before it: hourly records of an earlier champion, undrifted.
    [first] = read_records(job, "all")
    for hour in range(1, 2001):
        start = pd.Timestamp(WINDOWS[0].start) - pd.Timedelta(hours=hour)
        window = Window(start.to_pydatetime(), (start + pd.Timedelta(hours=1)).to_pydatetime())
        old = {**first, "model_version": "earlier", "interval_start": window.start.isoformat(),
               "interval_end": window.end.isoformat(), "rate_p_value": None}
        Path(record_path(job, "all", window)).write_text(json.dumps(old))
    # And records of later intervals, for a backfill running behind: never read by an earlier one.
    later = Window(WINDOWS[5].end, (pd.Timestamp(WINDOWS[5].end) + pd.Timedelta(hours=1)).to_pydatetime())
    Path(record_path(job, "all", later)).write_text("damaged: never read")

    read: list[str] = []
    real = storage.read_bytes

    def counted(url: str, *args, **kwargs) -> bytes:
        read.append(url)
        return real(url, *args, **kwargs)

    monkeypatch.setattr(storage, "read_bytes", counted)
    due = [predict_and_monitor(job, w, f"predict-{k}").due for k, w in enumerate(WINDOWS[1:5], start=1)]
    assert due == [False, False, True, False]  # the same decisions: sustained drift, then asked once
    records = [url for url in read if "/records/" in url]
    # Back to the champion's first record (it has fewer than sustained_runs before WINDOWS[3]), and
    # one record of the earlier champion in each of those runs, not 2,000.
    assert len(records) < 40, len(records)
