"""``<job>__tune`` through Airflow: trials and decisions land in the registry, the tuned asset is
updated, and on a running Airflow that update starts an asset-triggered train run."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest
import sqlalchemy as sa
import yaml
from airflow.dag_processing.dagbag import DagBag

from pipelines.config import get_job
from pipelines.demo import TRAIN_END
from pipelines.registry import ModelRegistry
from pipelines.training import registry_for

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
JOB = "demo_web_metrics"
SERIES = {"region=eu", "region=us", "region=apac"}


@pytest.fixture
def quick_tune(project: Path, airflow_db) -> Path:
    path = project / "config" / "jobs" / f"{JOB}.yaml"
    settings = yaml.safe_load(path.read_text())
    settings["tune"] = {"trials": 4, "detectors": ["seasonal_mad", "level_shift"]}
    path.write_text(yaml.safe_dump(settings))
    return project


def test_tune_records_trials_and_decisions_and_updates_the_tuned_asset(quick_tune: Path):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[f"{JOB}__tune"]
    dagrun = dag.test(logical_date=pendulum.parse(TRAIN_END), run_conf={"end": TRAIN_END})
    assert str(dagrun.state).endswith("success")

    job = get_job(JOB)
    registry = registry_for(job)
    for series in SERIES:
        [record] = registry.tuning_history(JOB, series)
        assert len(record["trials"]) == 4 and {t["kind"] for t in record["trials"]} <= {"seasonal_mad", "level_shift"}
        assert record["decision"]["promoted"] and record["decision"]["reason"] == "no champion yet"
        assert record["run_id"] == dagrun.run_id
        tuned = registry.tuned(JOB, series)
        assert (tuned["kind"], tuned["params"]) == (record["decision"]["challenger"]["kind"], record["decision"]["challenger"]["params"])
        champion = registry.champion(JOB, series)
        assert champion.metadata["model"] == tuned["kind"]
        assert champion.metadata["training_window"]["end"] == TRAIN_END

    with create_session() as session:
        events = session.scalars(
            sa.select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(
                AssetModel.name == f"anomaly_pipelines__{JOB}__tuned", AssetEvent.source_run_id == dagrun.run_id
            )
        ).all()
    assert len(events) == 1
    assert events[0].extra["end"] == TRAIN_END and set(events[0].extra["promoted"]) == SERIES

    # Tuning the same data again cannot beat the champions by the margin: nothing is promoted,
    # the announce task is skipped and no event starts a needless train run.
    again = dag.test(logical_date=pendulum.parse(TRAIN_END).add(hours=1), run_conf={"end": TRAIN_END})
    assert str(again.state).endswith("success")
    assert str(again.get_task_instance("announce").state).endswith("skipped")
    for series in SERIES:
        assert not registry.tuning_history(JOB, series)[-1]["decision"]["promoted"]
    with create_session() as session:
        assert not session.scalars(sa.select(AssetEvent).where(AssetEvent.source_run_id == again.run_id)).all()


#: demo_web_metrics as a manual-only job of its own on the shared server: unpausing its DAGs
#: starts no scheduled run, and its models stay apart from other tests'.
SERVER_JOB = "tune_trigger"


def _server_job(project: Path) -> None:
    settings = yaml.safe_load((project / "config" / "jobs" / f"{JOB}.yaml").read_text())
    settings.update(
        name=SERVER_JOB,
        schedules={"train": None, "predict": None, "tune": None},
        tune={"trials": 4, "detectors": ["seasonal_mad", "level_shift"]},
        registry="var/tune_trigger_models",
        outputs={"parquet": "var/tune_trigger_outputs"},
    )
    (project / "config" / "jobs" / f"{SERVER_JOB}.yaml").write_text(yaml.safe_dump(settings))


def test_a_finished_tune_run_triggers_train_on_the_tuned_asset(airflow_server):
    server = airflow_server
    _server_job(server.project)
    train, tune = f"{SERVER_JOB}__train", f"{SERVER_JOB}__tune"
    server.unpause(train)
    server.unpause(tune)
    answer = server.api("POST", f"/api/v2/dags/{tune}/dagRuns", json={"logical_date": None, "conf": {"end": TRAIN_END}})
    assert answer.status_code == 200, answer.text
    tune_run = answer.json()["dag_run_id"]
    assert server.wait_for_run(tune, tune_run, timeout=600) == "success", server.log_tail(100)

    triggered = server.wait_for_runs_of_type(train, "asset_triggered")
    assert len(triggered) == 1, f"no asset-triggered train run after tune run {tune_run}:\n{server.log_tail()}"
    train_run = triggered[0]["dag_run_id"]
    assert server.wait_for_run(train, train_run, timeout=600) == "success", server.log_tail(100)
    assert server.runs(train, "scheduled") == []

    # The triggered run trained on the window the tune run chose its params on, with those params.
    registry = ModelRegistry(str(server.project / "var" / "tune_trigger_models"))
    for series in SERIES:
        [record] = registry.tuning_history(SERVER_JOB, series)
        assert record["run_id"] == tune_run
        latest = registry.versions(SERVER_JOB, series)[-1]
        assert latest.metadata["run_id"] == train_run
        assert latest.metadata["training_window"]["end"] == TRAIN_END
        assert (latest.metadata["model"], latest.metadata["tuned_params"]) == (
            record["decision"]["challenger"]["kind"],
            record["decision"]["challenger"]["params"],
        )
