"""What the UI shows of each DAG: its docs, its tasks' docs and its trigger form."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from pipelines.config import load_jobs

REPO = Path(__file__).resolve().parents[2]
PURPOSES = ("train", "predict", "tune", "score")


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_dag_says_what_it_does_and_every_task_has_docs(dagbag, purpose):
    # The DAGs' docs said only "**train** for job x" and no task had docs: the UI's Docs panels were empty.
    says = {
        "train": ["promotes", "_tuned", "_retrain", "_model", "`finish` then fails the run", "after 6h"],
        # One-off scoring moved to its own DAG: the docs send there.
        "predict": ["publishes", "_retrain", "`{name}__score`, not this DAG", "`dagrun_timeout`"],
        "tune": ["grid", "_tuned", "only when", "after 12h"],
        "score": ["airflow dags trigger {name}__score", '"input"', "Up to 3 runs at once", "not touched", "after 1d"],
    }[purpose]
    for name in load_jobs(REPO / "config" / "jobs"):
        dag = dagbag.dags[f"{name}__{purpose}"]
        assert dag.description, dag.dag_id
        for text in says:
            text = text.format(name=name)
            assert text in dag.doc_md, (dag.dag_id, text, dag.doc_md)
        undocumented = [task.task_id for task in dag.tasks if not (task.doc_md or "").strip()]
        assert undocumented == [], dag.dag_id


@pytest.mark.parametrize("name", ["demo_sensors", "demo_web_metrics"])  # without and with a tune cron
def test_the_dag_docs_name_the_schedule(dagbag, name):
    job = load_jobs(REPO / "config" / "jobs")[name]
    assert f"`{job.schedules.train}`" in dagbag.dags[f"{name}__train"].doc_md
    tune = dagbag.dags[f"{name}__tune"].doc_md
    assert (f"`{job.schedules.tune}`" in tune) if job.schedules.tune else ("only when triggered" in tune)


@pytest.mark.parametrize("purpose", ["train", "tune"])
def test_the_training_window_form_says_what_an_empty_bound_means_for_training(dagbag, purpose):
    # The train and tune forms said an empty start meant "the scheduled data interval", as in
    # predict; it means the job's training_window (28 days for the demo job) back from the end.
    params = dagbag.dags[f"demo_web_metrics__{purpose}"].params
    start, end = params.get_param("start"), params.get_param("end")
    assert "scheduled data interval" not in start.description
    assert "28d (the job's training_window) before the end" in start.description
    assert "asset event" in end.description
    assert start.schema["title"] == "Training window start" and end.schema["title"] == "Training window end"


def test_the_predict_form_keeps_the_scored_window(dagbag):
    params = dagbag.dags["demo_web_metrics__predict"].params
    assert params.get_param("start").schema["title"] == "Window start"
    assert "scheduled data interval" in params.get_param("start").description
    assert set(params.keys()) == {"start", "end"}


def test_the_score_form_asks_for_the_file(dagbag):
    params = dagbag.dags["demo_web_metrics__score"].params
    # No default: the form (and the REST API) require it.
    assert params.get_param("input").schema["title"] == "Input file" and not params.get_param("input").has_value
    assert params.get_param("chunk_rows").value == 250_000
