"""The predict DAG's ``alert`` task, run through Airflow (``dag.test()``), mails the anomaly events of
the published window to a real SMTP server (aiosmtpd) through the SMTP provider's notifier."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag

from pipelines.demo import PREDICT_WINDOW, TRAIN_END

# The fixtures ``inbox`` (a real SMTP server, aiosmtpd) and ``smtp_port`` (smtp_default pointing
# at it) of the library tests.
from tests.pipelines.test_alerts import Inbox, body, inbox_fixture, smtp_port_fixture  # noqa: F401

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
JOB = "demo_web_metrics"


@pytest.fixture
def alerting_project(project: Path, airflow_db) -> Path:
    """The demo web job with alerts on region=eu mailed to on-call."""
    path = project / "config" / "jobs" / f"{JOB}.yaml"
    job = yaml.safe_load(path.read_text())
    job["outputs"].pop("table")  # the Parquet dataset is what alerts read
    job["alerts"] = {
        "email": {"to": ["oncall@example.com"], "from_email": "airflow@example.com"},
        "series": ["region=eu"],
        "min_score": 0.99,
        "dashboard_url": "http://airflow.test:8080",
    }
    path.write_text(yaml.safe_dump(job))
    return project


def run(dag_id: str, conf: dict, logical_date: str):
    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    return dag, dag.test(logical_date=pendulum.parse(logical_date), run_conf=conf)


def test_predict_dag_mails_the_events_once(alerting_project: Path, inbox: Inbox):
    _, trained = run(f"{JOB}__train", {"end": TRAIN_END}, TRAIN_END)
    assert str(trained.state).endswith("success")
    dag, predicted = run(f"{JOB}__predict", PREDICT_WINDOW, PREDICT_WINDOW["end"])
    assert "alert" in dag.task_ids and dag.get_task("alert").upstream_task_ids == {"publish", "extract"}
    states = {ti.task_id: str(ti.state) for ti in predicted.get_task_instances()}
    assert states["alert"].endswith("success"), states

    assert inbox.mails, "the alert task sent nothing"
    subjects = inbox.subjects
    assert all(s.startswith(f"[anomaly] {JOB} region=eu: ") for s in subjects)  # only the chosen series
    # The spike placed in eu's requests on 2024-03-03 afternoon is among them, with its details.
    [(recipients, message)] = [(r, m) for r, m in inbox.mails if "2024-03-03 1" in str(m["Subject"])]
    assert recipients == ["oncall@example.com"]
    _, text = body(message)
    assert "Series: region=eu" in text and "requests: actual" in text
    assert f"http://airflow.test:8080/anomaly-pipelines/dashboard/jobs/{JOB}?series=region%3Deu" in text

    # Re-running the interval publishes the same rows again and alerts no one twice.
    sent = len(inbox.mails)
    _, again = run(f"{JOB}__predict", PREDICT_WINDOW, PREDICT_WINDOW["end"])
    assert {ti.task_id: str(ti.state) for ti in again.get_task_instances()}["alert"].endswith("success")
    assert len(inbox.mails) == sent


def test_jobs_without_alerts_have_no_alert_task():
    dags = DagBag(dag_folder=str(REPO / "dags")).dags
    assert "alert" not in dags[f"{JOB}__predict"].task_ids
