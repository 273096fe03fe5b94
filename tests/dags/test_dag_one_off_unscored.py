"""A one-off run of the score DAG on a file holding a group with no model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.demo import TRAIN_END
from tests.dags.test_dag_runs import REPO, run, task_states

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def test_a_one_off_run_scores_the_groups_with_a_model_and_names_the_others(project: Path, airflow_db, caplog):
    job_file = project / "config" / "jobs" / "demo_web_metrics.yaml"
    job_file.write_text(job_file.read_text().replace("  suite: config/expectations/demo_web_metrics.json\n", ""))
    assert run("demo_web_metrics__train", {"end": TRAIN_END}, TRAIN_END).endswith("success")
    data = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    with_new = pd.concat([data, data[data["region"] == "eu"].assign(region="latam")]).sort_values("timestamp", kind="stable")
    with_new.to_csv(project / "in.csv", index=False)

    states = task_states("demo_web_metrics__score", {"input": str(project / "in.csv"), "output": "scored.parquet", "chunk_rows": 1000}, None)

    assert states["publish"] == ("success", 1), states
    assert set(pd.read_parquet(project / "scored.parquet")["series"]) == {"region=eu", "region=us", "region=apac"}
    assert "1 series of the input not scored, no model yet: region=latam" in caplog.text
