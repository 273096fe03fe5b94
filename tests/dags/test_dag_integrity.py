"""The DAG file parses cleanly, yields three DAGs per job, and stays light to parse."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.timetables.interval import CronDataIntervalTimetable

from pipelines.config import load_jobs
from pipelines.errors import (
    ConfigError,
    DataValidationError,
    MissingDependencyError,
    ModelError,
    SinkError,
    SourceConfigError,
    SourceDataError,
    SourceError,
    StorageError,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_job_yields_train_predict_and_tune(dagbag):
    jobs = load_jobs(REPO / "config" / "jobs")
    expected = {f"{name}__{purpose}" for name in jobs for purpose in ("train", "predict", "tune")}
    assert expected <= set(dagbag.dag_ids)
    for name, job in jobs.items():
        predict = dagbag.dags[f"{name}__predict"]
        assert isinstance(predict.timetable, CronDataIntervalTimetable)
        assert predict.timetable.summary == job.schedules.predict
        assert set(predict.params.keys()) == {"start", "end", "input", "output", "chunk_rows"}
        assert predict.max_active_runs == 1
        order = [t.task_id for t in predict.topological_sort()]
        assert order[:4] == ["extract", "validate", "score", "publish"]
        # monitor follows publish and is the only task that may update the job's retrain asset.
        monitor = predict.get_task("monitor")
        assert "publish" in monitor.upstream_task_ids
        assert [outlet.name for outlet in monitor.outlets] == [f"anomaly_pipelines__{name}__retrain"]
        score = predict.get_task("score")
        assert score.retries == 2
        train = dagbag.dags[f"{name}__train"]
        # Train runs on its cron or as soon as tuning or monitoring updates an asset.
        assert type(train.timetable).__name__ == "AssetOrTimeSchedule"
        assert train.timetable.timetable.summary == job.schedules.train
        assert [a.name for a in train.timetable.asset_condition.objects] == [
            f"anomaly_pipelines__{name}__tuned",
            f"anomaly_pipelines__{name}__retrain",
        ]
        summarize = train.get_task("summarize")
        assert [outlet.name for outlet in summarize.outlets] == [f"anomaly_pipelines__{name}__model"]
        tune = dagbag.dags[f"{name}__tune"]
        assert tune.get_task("summarize").outlets == []
        assert [outlet.name for outlet in tune.get_task("announce").outlets] == [f"anomaly_pipelines__{name}__tuned"]
        assert "announce" not in train.task_ids
        if job.schedules.tune:
            assert tune.timetable.summary == job.schedules.tune
        else:
            assert type(tune.timetable).__name__ == "NullTimetable"


def _jobs_with_a_variant(folder: Path, monkeypatch, name: str, *replacements: tuple[str, str]) -> None:
    """The shipped jobs, plus demo_web_metrics renamed to ``name`` with ``replacements`` made, as
    the job folder the DAG files read."""
    for path in (REPO / "config" / "jobs").glob("*.yaml"):
        shutil.copy(path, folder)
    text = (REPO / "config" / "jobs" / "demo_web_metrics.yaml").read_text()
    for old, new in [("name: demo_web_metrics", f"name: {name}"), *replacements]:
        assert old in text, old
        text = text.replace(old, new)
    (folder / f"{name}.yaml").write_text(text)
    monkeypatch.setenv("ANOMALY_PIPELINES_JOBS_DIR", str(folder))


def test_a_broken_job_file_keeps_the_other_jobs_dags_and_says_what_is_wrong(tmp_path, monkeypatch):
    _jobs_with_a_variant(tmp_path, monkeypatch, "broken_web", ("value: 0.005", "value: 7"))

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert {f"{name}__{purpose}" for name in ("demo_sensors", "demo_web_metrics") for purpose in ("train", "predict", "tune")} == set(
        bag.dag_ids
    )
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("anomaly_job_errors.py")
    assert f"{tmp_path / 'broken_web.yaml'}: invalid job configuration\n  threshold: contamination must be in (0, 0.5], got 7.0" in error


def test_a_job_folder_that_does_not_exist_is_an_import_error(tmp_path, monkeypatch):
    # It made no DAGs and no error: Airflow looked like a project without jobs.
    monkeypatch.setenv("ANOMALY_PIPELINES_JOBS_DIR", str(tmp_path / "jobz"))

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.dag_ids == []
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("anomaly_job_errors.py")
    assert f"the job folder {tmp_path / 'jobz'} does not exist, so no job has DAGs" in error


def test_every_start_date_validate_config_takes_makes_dags(tmp_path, monkeypatch):
    # A start_date Python's ISO parser takes (which validates it) but pendulum's did not: the DAG
    # file raised while building that job, and every job lost its DAGs.
    _jobs_with_a_variant(tmp_path, monkeypatch, "compact_time", ('start_date: "2024-02-01"', 'start_date: "2024-02-01T0630"'))

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert {"demo_sensors__predict", "demo_web_metrics__predict", "compact_time__predict"} <= set(bag.dag_ids)
    assert bag.dags["compact_time__train"].start_date.isoformat() == "2024-02-01T06:30:00+00:00"


def test_a_worker_running_a_task_builds_the_dags_of_that_tasks_job_only(monkeypatch):
    # Every task start built every job's three DAGs: 30 ms per configured job (15 s at 500 jobs).
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "demo_sensors__predict")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "score")

    bag = DagBag(dag_folder=str(REPO / "dags" / "anomaly_jobs.py"))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["demo_sensors__predict", "demo_sensors__train", "demo_sensors__tune"]


def test_mapped_over_series(dagbag):
    dag = dagbag.dags["demo_web_metrics__predict"]
    score = dag.get_task("score")
    assert score.is_mapped
    assert score.map_index_template == "{{ unit_label }}"


def test_parsing_imports_nothing_heavy():
    # Airflow parses DAG files every 30 s: pandas, scikit-learn and GX stay inside the tasks.
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "heavy = sorted({'pandas', 'sklearn', 'great_expectations', 'pyarrow'} & set(sys.modules)); "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / "anomaly_jobs.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""


def _scheduler_params(dagbag, dag_id: str):
    """The DAG's params as the API server and scheduler hold them: from its serialized form."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags[dag_id])).params


@pytest.mark.parametrize("purpose", ["train", "predict", "tune"])
@pytest.mark.parametrize(("key", "value"), [("start", "yesterday"), ("end", "8 March 2024"), ("start", "03/01/2024")])
def test_a_window_that_is_not_a_date_time_is_refused_when_the_run_is_created(dagbag, purpose, key, value):
    from airflow.sdk.exceptions import ParamValidationError

    job = next(iter(load_jobs(REPO / "config" / "jobs")))
    params = _scheduler_params(dagbag, f"{job}__{purpose}")
    # What Airflow does with a run's conf when the run is created (trigger form, REST API, CLI).
    with pytest.raises(ParamValidationError, match=f"param {key}:.*{value}"):
        params.deep_merge({key: value}).validate()


def test_a_date_time_of_the_right_shape_but_no_such_day_is_refused_when_the_window_is_parsed(dagbag):
    from pipelines.errors import ConfigError
    from pipelines.workspace import to_utc

    job = next(iter(load_jobs(REPO / "config" / "jobs")))
    # The pattern checks the shape only; the window's parse names the value.
    _scheduler_params(dagbag, f"{job}__predict").deep_merge({"start": "2024-13-01"}).validate()
    with pytest.raises(ConfigError, match="'2024-13-01' is not an ISO 8601 date-time"):
        to_utc("2024-13-01")


@pytest.mark.parametrize(
    "value",
    ["2024-03-01", "2024-03-01T00:00", "2024-03-01 00:00:00", "2024-03-01T00:00:00Z",
     "2024-03-01T00:00:00.123456+02:00", "2024-03-01T00:00:00-0530"],
)
def test_every_date_time_the_form_takes_is_one_the_window_parses(dagbag, value):
    from pipelines.workspace import to_utc

    job = next(iter(load_jobs(REPO / "config" / "jobs")))
    params = _scheduler_params(dagbag, f"{job}__predict")
    validated = params.deep_merge({"start": value, "end": value}).validate()
    assert validated["start"] == value and to_utc(value).date().isoformat() in ("2024-03-01", "2024-02-29")


@pytest.mark.parametrize(
    ("error", "fails_at_once"),
    [
        (ConfigError("bad job"), True),
        (DataValidationError("bad batch"), True),
        (ModelError("no champion"), True),
        # A package that is not installed is not installed on the retry either.
        (MissingDependencyError("adlfs", "azure", "Reading abfs://"), True),
        # Timestamps with and without a time zone: a source error, but one each retry reads again.
        (SourceDataError("mixes timestamps with and without a time zone"), True),
        (SourceConfigError("Protocol not known: nosuchstore"), True),
        (SourceError("no rows in window: the data may not have landed yet"), False),
        (SinkError("the table's commit failed"), False),
        # Credentials that appear later (a refreshed role, a mounted secret) make the retry succeed.
        (StorageError("no credentials to reach s3://bucket/models"), False),
        (OSError("connection reset"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_permanent_errors_fail_the_task_at_once_and_transient_ones_keep_their_retries(dagbag, error, fails_at_once):
    from airflow.sdk.exceptions import AirflowFailException

    task = dagbag.dags["demo_web_metrics__predict"].get_task("extract")
    fail_fast = inspect.getmodule(task.python_callable).fail_fast

    def step():
        raise error

    with pytest.raises(AirflowFailException if fails_at_once else type(error)) as raised:
        fail_fast(step)()
    assert raised.value is not error if fails_at_once else raised.value is error
