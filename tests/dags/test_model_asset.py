"""The train DAG's model asset event says what a train run changed (``dag.test()`` on a migrated metadata DB)."""

from __future__ import annotations

from pathlib import Path

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
    assert event.extra == {"end": TRAIN_END, "promoted": serving, "kept": [], "run_id": dagrun.run_id}
