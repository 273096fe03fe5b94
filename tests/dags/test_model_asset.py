"""The train DAG's model asset event says what a train run changed (``dag.test()`` on a migrated metadata DB)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pendulum
import pytest
import sqlalchemy as sa
from airflow.dag_processing.dagbag import DagBag

from pipelines.config import get_job
from pipelines.demo import TRAIN_END
from pipelines.training import registry_for

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
JOB = "demo_web_metrics"


def test_the_model_asset_event_names_the_promoted_versions_and_the_window(project: Path, airflow_db):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[f"{JOB}__train"]
    dagrun = dag.test(logical_date=pendulum.parse(TRAIN_END), run_conf={"end": TRAIN_END})
    assert str(dagrun.state).endswith("success")

    with create_session() as session:
        [event] = session.scalars(
            sa.select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(
                AssetModel.name == f"anomaly_pipelines__{JOB}__model", AssetEvent.source_run_id == dagrun.run_id
            )
        ).all()
    registry = registry_for(get_job(JOB))
    serving = {series: registry.champion(JOB, series).version for series in ("region=eu", "region=us", "region=apac")}
    assert event.extra == {"end": TRAIN_END, "promoted": serving, "kept": [], "failed": [], "run_id": dagrun.run_id}


def _model_events(run_id: str) -> list:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalars(
            sa.select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(
                AssetModel.name == f"anomaly_pipelines__{JOB}__model", AssetEvent.source_run_id == run_id
            )
        ).all()


def test_a_series_that_fails_to_train_does_not_hide_the_promotions_of_the_others(project: Path, airflow_db, capfd, monkeypatch):
    # A region that appeared two days before the end of the training window ("af") has too few
    # rows for its model: its fit task fails. summarize then never ran, so the three regions
    # promoted in the same run got no model asset event and their consumers never heard of them.
    data = pd.read_csv(project / "data" / "demo" / "web_metrics.csv", dtype=object)
    new = data[(data["region"] == "eu") & data["timestamp"].str.startswith("2024-02-28T0")].assign(region="af")
    pd.concat([data, new]).to_csv(project / "new_region.csv", index=False)
    suite = project / "config" / "expectations" / f"{JOB}.json"
    suite.write_text(suite.read_text().replace('["eu", "us", "apac"]', '["eu", "us", "apac", "af"]'))
    job_file = project / "config" / "jobs" / f"{JOB}.yaml"
    job_file.write_text(
        job_file.read_text().replace("path: data/demo/web_metrics.csv", f"path: {project / 'new_region.csv'}") + "registry_keep: 1\n"
    )
    # Versions of an earlier day, never promoted: old enough to go even when a fit of the run fails.
    from datetime import UTC, datetime, timedelta

    from pipelines import registry as registry_module

    names = iter(f"{datetime.now(UTC) - timedelta(hours=3, seconds=i):%Y%m%dT%H%M%S%fZ}-{i:06x}" for i in range(3, 0, -1))
    with monkeypatch.context() as patched:
        patched.setattr(registry_module, "_new_version", lambda: next(names))
        planted = [registry_for(get_job(JOB)).register(JOB, "region=eu", {"m": b"m"}, {}).version for _ in range(3)]

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[f"{JOB}__train"]
    dagrun = dag.test(logical_date=pendulum.parse(TRAIN_END), run_conf={"end": TRAIN_END})

    # The run still fails, naming the series that failed...
    assert str(dagrun.state).endswith("failed")
    states = {(ti.task_id, ti.map_index): str(ti.state).split(".")[-1].lower() for ti in dagrun.get_task_instances()}
    assert states[("summarize", -1)] == "success", states
    assert "job demo_web_metrics: train failed for 1 of 4 series (region=af)" in capfd.readouterr().out
    # ...and the promotions that did happen are announced.
    registry = registry_for(get_job(JOB))
    serving = {series: registry.champion(JOB, series).version for series in ("region=apac", "region=eu", "region=us")}
    [event] = _model_events(dagrun.run_id)
    assert event.extra == {"end": TRAIN_END, "promoted": serving, "kept": [], "failed": ["region=af"], "run_id": dagrun.run_id}
    assert registry.champion(JOB, "region=af") is None
    # ...and the job's old model versions are removed all the same.
    assert not set(planted) & set(registry.version_names(JOB, "region=eu"))
