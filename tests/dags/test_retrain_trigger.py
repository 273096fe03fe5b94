"""Drift in a feature makes the real scheduler retrain: predict runs on a running Airflow see
shifted data, and after ``monitoring.sustained_runs`` of them the ``monitor`` task updates the
job's retrain asset, which creates an asset-triggered train run on the drifted data.

The job ``retrain_trigger`` is written into the server's project by the test (the DAG processor
picks it up within seconds); its source is a CSV file the test writes, its predict and train
runs are manual or asset-triggered only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.registry import ModelRegistry

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

JOB = "retrain_trigger"
TRAIN_END = pd.Timestamp("2024-03-08T00:00:00Z")
#: Three predict windows of three days after training; "load" shifts by 8 sigma from the first one.
WINDOWS = [(TRAIN_END + pd.Timedelta(days=3 * k), TRAIN_END + pd.Timedelta(days=3 * k + 3)) for k in range(3)]

JOB_FILE = {
    "name": JOB,
    "description": "Hourly load whose level moves: monitoring must ask for a retrain.",
    "source": {"kind": "file", "path": "var/retrain_source/*.csv", "format": "csv"},
    "timestamp": "timestamp",
    "frequency": "1h",
    "features": ["load", "temperature"],
    "model": {"kind": "seasonal_mad", "params": {"season": "1d"}},
    "training_window": "7d",
    "schedules": {"train": None, "predict": None, "tune": None},
    "start_date": "2024-03-01",
    "outputs": {"parquet": "var/retrain_outputs"},
    "registry": "var/retrain_models",
    # 72 values per statistic: the PSI of an undrifted feature stays well below 0.25 (about 9 / 72).
    "monitoring": {"min_rows": 72, "sustained_runs": 3},
}


def write_source(project) -> None:
    hours = pd.date_range(TRAIN_END - pd.Timedelta(days=7), WINDOWS[-1][1], freq="h", inclusive="left")
    rng = np.random.default_rng(11)
    cycle = np.sin(2 * np.pi * hours.hour.to_numpy() / 24)
    load = 100 + 10 * cycle + rng.normal(0, 2, len(hours))
    load[hours >= TRAIN_END] += 16  # 8 sigma: a new level from the first predict window on
    folder = project / "var" / "retrain_source"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"timestamp": hours.strftime("%Y-%m-%dT%H:%M:%SZ"), "load": load.round(2),
         "temperature": (20 + 3 * cycle + rng.normal(0, 0.5, len(hours))).round(2)}
    ).to_csv(folder / "load.csv", index=False)


def monitor_task(server, run_id: str) -> tuple[str, dict]:
    """The monitor task's state in a predict run, and the monitoring summary it kept."""
    base = f"/api/v2/dags/{JOB}__predict/dagRuns/{run_id}/taskInstances/monitor"
    state = server.api("GET", base).json()["state"]
    summary = server.api("GET", f"{base}/xcomEntries/monitoring", params={"deserialize": True}).json()["value"]
    return state, summary


def test_sustained_drift_triggers_an_asset_triggered_train_run(airflow_server) -> None:
    server = airflow_server
    write_source(server.project)
    (server.project / "config" / "jobs" / f"{JOB}.yaml").write_text(yaml.safe_dump(JOB_FILE))
    server.pipelines_cli("train", JOB, "--end", TRAIN_END.isoformat())
    registry = ModelRegistry(str(server.project / "var" / "retrain_models"))
    champion = registry.champion(JOB, "all").version

    predict, train = f"{JOB}__predict", f"{JOB}__train"
    server.unpause(predict)
    server.unpause(train)
    assert server.runs(train, "asset_triggered") == []

    states = []
    for start, end in WINDOWS:
        answer = server.api(
            "POST", f"/api/v2/dags/{predict}/dagRuns",
            json={"logical_date": None, "conf": {"start": start.isoformat(), "end": end.isoformat()}},
        )
        assert answer.status_code == 200, answer.text
        run_id = answer.json()["dag_run_id"]
        assert server.wait_for_run(predict, run_id, timeout=600) == "success", server.log_tail(100)
        states.append((run_id, *monitor_task(server, run_id)))

    # Drifted from the first window on, but a retrain is due only once it lasted 3 runs.
    assert [state for _, state, _ in states] == ["skipped", "skipped", "success"]
    for _, _, summary in states:
        load = next(row for row in summary["rows"] if row["feature"] == "load")
        temperature = next(row for row in summary["rows"] if row["feature"] == "temperature")
        assert load["drifted"] and load["psi"] > 1.0 and temperature["psi"] < load["psi"] / 5
    last_run, _, last = states[-1]
    [reason] = last["reasons"]
    assert last["due"] and "sustained drift" in reason and "for load (" in reason and "temperature" not in reason

    # The asset event carries the reason and the window, and the scheduler starts train on it.
    events = server.api("GET", "/api/v2/assets/events", params={"source_dag_id": predict, "source_run_id": last_run}).json()
    [event] = events["asset_events"]
    assert event["extra"]["end"] == WINDOWS[-1][1].isoformat() and "sustained drift" in event["extra"]["reasons"][0]
    triggered = server.wait_for_runs_of_type(train, "asset_triggered")
    assert len(triggered) == 1, f"no asset-triggered train run after {last_run}:\n{server.log_tail()}"
    train_run = triggered[0]["dag_run_id"]
    assert server.wait_for_run(train, train_run, timeout=600) == "success", server.log_tail(100)

    # It trained on the drifted data, up to the end of the window that asked for it.
    latest = registry.versions(JOB, "all")[-1]
    assert latest.metadata["run_id"] == train_run and latest.version != champion
    assert latest.metadata["training_window"]["end"] == WINDOWS[-1][1].isoformat()
    assert latest.metadata["monitoring"]["features"]["load"]["quantiles"][-1] > 120
