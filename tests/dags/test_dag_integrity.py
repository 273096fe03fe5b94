"""The DAG file parses cleanly, yields four DAGs per job, and stays light to parse."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from datetime import timedelta
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


def test_every_job_yields_train_predict_tune_and_score(dagbag):
    jobs = load_jobs(REPO / "config" / "jobs")
    expected = {f"{name}__{purpose}" for name in jobs for purpose in ("train", "predict", "tune", "score")}
    assert expected <= set(dagbag.dag_ids)
    for name, job in jobs.items():
        predict = dagbag.dags[f"{name}__predict"]
        assert isinstance(predict.timetable, CronDataIntervalTimetable)
        assert predict.timetable.summary == job.schedules.predict
        assert set(predict.params.keys()) == {"start", "end"}
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
        # One series' failed fit must not keep the others' promotions from being announced; finish
        # (a leaf, after summarize) still fails the run.
        assert summarize.trigger_rule == "all_done_min_one_success" and summarize.upstream_task_ids == {"fit"}
        assert train.get_task("finish").upstream_task_ids == {"summarize"} and not train.get_task("finish").downstream_task_ids
        tune = dagbag.dags[f"{name}__tune"]
        assert tune.get_task("summarize").outlets == []
        assert [outlet.name for outlet in tune.get_task("announce").outlets] == [f"anomaly_pipelines__{name}__tuned"]
        assert "announce" not in train.task_ids
        if job.schedules.tune:
            assert tune.timetable.summary == job.schedules.tune
        else:
            assert type(tune.timetable).__name__ == "NullTimetable"


def test_one_off_scoring_has_its_own_dag_beside_predict(dagbag):
    # It ran in the predict DAG, whose max_active_runs=1 made a file of millions of points block the
    # job's scheduled windows for its whole run (and a scheduled run block a one-off one).
    for name in load_jobs(REPO / "config" / "jobs"):
        score = dagbag.dags[f"{name}__score"]
        assert type(score.timetable).__name__ == "NullTimetable"
        assert {"one-off", name, "anomaly-pipelines"} <= set(score.tags)
        assert set(score.params.keys()) == {"input", "output", "chunk_rows"}
        assert 1 < score.max_active_runs <= 4
        assert [t.task_id for t in score.topological_sort()] == ["extract", "list_chunks", "score", "publish"]
        assert score.get_task("score").is_mapped
        # It touches neither the job's outputs nor its assets.
        assert all(not task.outlets for task in score.tasks)


def test_a_one_off_run_without_input_is_refused_when_it_is_created(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    params = _scheduler_params(dagbag, "demo_web_metrics__score")
    with pytest.raises(ParamValidationError, match="input"):
        params.deep_merge({"output": "scored.parquet"}).validate()
    assert params.deep_merge({"input": "data/file.csv"}).validate()["chunk_rows"] == 250_000
    with pytest.raises(ParamValidationError, match="chunk_rows"):
        params.deep_merge({"input": "data/file.csv", "chunk_rows": 10_000_001}).validate()


@pytest.mark.parametrize(
    ("cron", "timeout"),
    [
        ("0 * * * *", timedelta(hours=3)),  # three intervals
        ("*/5 * * * *", timedelta(hours=1)),  # at least an hour: a run in its retry delay is not hung
        ("0 2 * * *", timedelta(hours=12)),  # at most twelve hours
        ("0 9-17 * * 1-5", timedelta(hours=3)),  # its busy hours, not the weekend's gap
        (None, timedelta(hours=12)),
    ],
)
def test_a_predict_run_times_out_after_a_few_of_its_schedule_intervals(dagbag, cron, timeout):
    task = dagbag.dags["demo_web_metrics__predict"].get_task("extract")
    assert inspect.getmodule(task.python_callable).dagrun_timeout("predict", cron) == timeout


def test_every_dag_fails_a_hung_run_so_later_runs_can_start(dagbag):
    # No DAG had a dagrun_timeout: a run hung on a source that never answered held max_active_runs=1
    # for ever, and no later run of the job started.
    for name, job in load_jobs(REPO / "config" / "jobs").items():
        purposes = ("train", "tune", "predict", "score")
        timeouts = {purpose: dagbag.dags[f"{name}__{purpose}"].dagrun_timeout for purpose in purposes}
        assert timeouts["train"] == timedelta(hours=6) and timeouts["tune"] == timedelta(hours=12), timeouts
        assert timeouts["score"] == timedelta(hours=24), timeouts
        assert timedelta(hours=1) <= timeouts["predict"] <= timedelta(hours=12), timeouts
        for purpose, timeout in timeouts.items():
            # Kept by the serialized DAG, which is what the scheduler enforces.
            serialized = _serialized(dagbag, f"{name}__{purpose}")
            assert serialized.dagrun_timeout == timeout, (name, purpose)


def test_a_job_s_timeouts_replace_the_defaults_and_are_checked(dagbag):
    from pipelines.config import parse_job

    module = inspect.getmodule(dagbag.dags["demo_web_metrics__predict"].get_task("extract").python_callable)
    job = load_jobs(REPO / "config" / "jobs")["demo_web_metrics"]
    # A job training 20,000 series needs longer than the default; one scoring every 5 minutes less.
    slow = job.model_copy(update={"timeouts": job.timeouts.model_copy(update={"train": timedelta(hours=10)})})
    assert module.dagrun_timeout("train", None, slow) == timedelta(hours=10)
    assert module.dagrun_timeout("tune", None, slow) == timedelta(hours=12)  # unset: the default
    assert "after 10h (the job's `timeouts`)" in module.build_train_dag(slow, "train").doc_md
    import yaml

    raw = yaml.safe_load((REPO / "config" / "jobs" / "demo_web_metrics.yaml").read_text())
    with pytest.raises(Exception, match=r"timeouts\.predict"):
        parse_job({**raw, "timeouts": {"predict": "0h"}}, source="x.yaml")
    assert parse_job({**raw, "timeouts": {"predict": "30m"}}, source="x.yaml").timeouts.predict == timedelta(minutes=30)


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
    purposes = ("train", "predict", "tune", "score")
    assert {f"{name}__{purpose}" for name in ("demo_sensors", "demo_web_metrics") for purpose in purposes} == set(bag.dag_ids)
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


@pytest.mark.parametrize("purpose", ["predict", "score"])
def test_a_worker_running_a_task_builds_the_dags_of_that_tasks_job_only(monkeypatch, purpose):
    # Every task start built every job's DAGs: 30 ms per configured job (15 s at 500 jobs).
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", f"demo_sensors__{purpose}")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "score")

    bag = DagBag(dag_folder=str(REPO / "dags" / "anomaly_jobs.py"))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["demo_sensors__predict", "demo_sensors__score", "demo_sensors__train", "demo_sensors__tune"]


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


def _serialized(dagbag, dag_id: str):
    """The DAG as the API server and scheduler hold it: from its serialized form."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags[dag_id]))


def _scheduler_params(dagbag, dag_id: str):
    """The DAG's params as the API server and scheduler hold them: from its serialized form."""
    return _serialized(dagbag, dag_id).params


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
