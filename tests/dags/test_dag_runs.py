"""Train then predict through Airflow's real code path (``dag.test()`` on a migrated metadata DB).

The demo jobs run in a private copy of the project: SQLite outputs for both jobs, and the web
job's table redirected to the PostgreSQL server started by the tests.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pendulum
import pytest
import sqlalchemy as sa
import yaml
from airflow.dag_processing.dagbag import DagBag

from pipelines.config import load_jobs
from pipelines.demo import PREDICT_WINDOW, TRAIN_END, picture, setup_demo_database
from pipelines.plots import MAX_PANELS

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def run(dag_id: str, conf: dict, logical_date: str) -> str:
    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    dagrun = dag.test(logical_date=pendulum.parse(logical_date), run_conf=conf)
    return str(dagrun.state)


def sql_rows(url: str, job: str) -> pd.DataFrame:
    with sa.create_engine(url).connect() as connection:
        return pd.read_sql(sa.text("SELECT * FROM anomalies WHERE job = :job"), connection, params={"job": job})


@pytest.fixture
def demo_project(project: Path, airflow_db, postgres_url: str, monkeypatch) -> Path:
    setup_demo_database(project / "var" / "demo" / "sensors.db")
    path = project / "config" / "jobs" / "demo_web_metrics.yaml"
    job = yaml.safe_load(path.read_text())
    job["outputs"]["table"]["connection"] = {"url_env": "TEST_ANOMALIES_URL"}
    path.write_text(yaml.safe_dump(job))
    monkeypatch.setenv("TEST_ANOMALIES_URL", postgres_url)
    with sa.create_engine(postgres_url).begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS anomalies"))
    return project


def test_train_then_predict_both_demo_jobs(demo_project: Path, postgres_url: str):
    for job in ("demo_web_metrics", "demo_sensors"):
        assert run(f"{job}__train", {"end": TRAIN_END}, TRAIN_END).endswith("success")
        assert run(f"{job}__predict", PREDICT_WINDOW, PREDICT_WINDOW["end"]).endswith("success")

    parquet = pd.read_parquet(demo_project / "var" / "outputs")
    web = parquet[parquet["job"] == "demo_web_metrics"]
    sensors = parquet[parquet["job"] == "demo_sensors"]
    hours = 7 * 24
    assert len(web) == hours * 3 * 2 and len(sensors) == hours * 4 * 3

    # Both SQL tables hold exactly the Parquet rows.
    web_sql = sql_rows(postgres_url, "demo_web_metrics")
    sensors_sql = sql_rows(f"sqlite:///{demo_project / 'var' / 'anomalies.db'}", "demo_sensors")
    assert len(web_sql) == len(web) and len(sensors_sql) == len(sensors)
    assert web_sql["is_anomaly"].sum() == web["is_anomaly"].sum()

    # The anomalies placed in the demo week are found where they were placed.
    def flagged(frame, series, feature, start, end):
        rows = frame[(frame["series"] == series) & (frame["feature"] == feature) & frame["is_anomaly"]]
        return rows[(rows["timestamp"] >= start) & (rows["timestamp"] < end)]

    assert len(flagged(web, "region=eu", "requests", "2024-03-03 14:00Z", "2024-03-03 17:00Z")) >= 2
    assert len(flagged(web, "region=us", "latency_ms", "2024-03-05 09:00Z", "2024-03-06 09:00Z")) >= 12
    assert len(flagged(web, "region=apac", "requests", "2024-03-06 03:00Z", "2024-03-06 05:00Z")) >= 1
    wear = flagged(sensors, "machine=press_2", "vibration", "2024-03-04 10:00Z", "2024-03-04 16:00Z")
    assert len(wear) >= 3
    # Which signal drove it: vibration outweighs the undisturbed temperature at those times.
    at_wear = sensors[(sensors["series"] == "machine=press_2") & sensors["timestamp"].isin(wear["timestamp"])]
    by_feature = at_wear.groupby("feature")["feature_score"].mean()
    assert by_feature["vibration"] > by_feature["temperature"]
    assert len(flagged(sensors, "machine=pump_1", "pressure", "2024-03-06 20:00Z", "2024-03-07 02:00Z")) >= 3

    # Re-running the same interval replaces its rows in both stores: never duplicates.
    assert run("demo_web_metrics__predict", PREDICT_WINDOW, PREDICT_WINDOW["end"]).endswith("success")
    again = pd.read_parquet(demo_project / "var" / "outputs" / "job=demo_web_metrics")
    assert len(again) == len(web)
    assert len(sql_rows(postgres_url, "demo_web_metrics")) == len(web)

    # The demo's pictures: a panel per series and feature of each job's week.
    jobs = load_jobs()
    for job, panels in (("demo_web_metrics", 3 * 2), ("demo_sensors", 4 * 3)):
        line = picture(jobs[job])
        assert line.endswith(f"{job}.png ({min(panels, MAX_PANELS)} panels: values, expected band, anomalies)"), line
        assert (demo_project / "var" / f"{job}.png").read_bytes()[:4] == b"\x89PNG"


def test_failed_validation_fails_the_run_and_writes_nothing(demo_project: Path):
    assert run("demo_web_metrics__train", {"end": TRAIN_END}, TRAIN_END).endswith("success")
    bad = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    bad.loc[bad["timestamp"].str.startswith("2024-03-02"), "latency_ms"] = None
    bad.to_csv(demo_project / "bad.csv", index=False)
    path = demo_project / "config" / "jobs" / "demo_web_metrics.yaml"
    job = yaml.safe_load(path.read_text())
    job["source"]["path"] = str(demo_project / "bad.csv")
    path.write_text(yaml.safe_dump(job))

    state = run("demo_web_metrics__predict", {"start": "2024-03-02T00:00:00Z", "end": "2024-03-03T00:00:00Z"}, "2024-03-03T00:00:00Z")
    assert state.endswith("failed")
    assert not (demo_project / "var" / "outputs" / "job=demo_web_metrics").exists()
    reports = list((demo_project / "var" / "outputs" / "_validation").rglob("predict_*.json"))
    assert reports and '"success": false' in reports[0].read_text()
    assert list((demo_project / "var" / "quarantine" / "demo_web_metrics").rglob("batch.parquet"))


def test_a_misspelt_run_conf_key_fails_the_run_instead_of_scoring_the_interval(project: Path, airflow_db, capfd):
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["demo_web_metrics__predict"]
    dagrun = dag.test(logical_date=pendulum.parse(PREDICT_WINDOW["end"]), run_conf={"inptu": str(project / "big.parquet")})
    states = {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}
    assert states["extract"].endswith("failed"), states
    # Airflow's task log goes to stdout under dag.test().
    assert "unknown run conf key(s) inptu; demo_web_metrics__predict takes start, end" in capfd.readouterr().out


def task_states(dag_id: str, conf: dict, logical_date: str | None) -> dict[str, tuple[str, int]]:
    """State and try number of each task (mapped ones by ``task_id[i]``) of one ``dag.test()`` run."""
    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    dagrun = dag.test(logical_date=pendulum.parse(logical_date) if logical_date else None, run_conf=conf)
    return {
        ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): (str(ti.state).split(".")[-1].lower(), ti.try_number)
        for ti in dagrun.get_task_instances()
    }


def test_predict_before_any_training_says_to_train_first(project: Path, airflow_db, capfd):
    # An hourly interval holds 3 rows, below the job's validation.min_rows (24): without models
    # no history rows are read, and validation failed first, blaming the data.
    states = task_states("demo_web_metrics__predict", {}, "2024-03-01T05:00:00Z")
    assert states["extract"] == ("failed", 1), states
    out = capfd.readouterr().out
    assert "job demo_web_metrics: no champion model is serving for any series" in out
    assert "Run the train DAG (demo_web_metrics__train)" in out
    assert not (project / "var" / "quarantine").exists()


def test_a_predict_run_asked_for_one_off_scoring_is_refused_at_once_naming_the_score_dag(project: Path, airflow_db, capfd):
    # One-off scoring ran in the predict DAG (max_active_runs=1): a file of millions of points held
    # the job's scheduled windows back for its whole run. It has its own DAG; a predict run still
    # given an input must say where it went, not score the interval or read the file.
    assert run("demo_web_metrics__train", {"end": TRAIN_END}, TRAIN_END).endswith("success")
    conf = {"input": "data/demo/web_metrics.csv", "output": str(project / "scored.parquet")}
    states = task_states("demo_web_metrics__predict", conf, PREDICT_WINDOW["end"])
    assert states["extract"] == ("failed", 1), states
    assert not any(state == "success" for state, _ in states.values()), states
    out = capfd.readouterr().out
    assert (
        "job demo_web_metrics: demo_web_metrics__predict scores windows of the job's source (start, end) and no longer takes "
        "input, output: one-off scoring of a file has its own DAG. Trigger demo_web_metrics__score instead" in out
    )
    assert not (project / "scored.parquet").exists() and not (project / "var" / "outputs" / "job=demo_web_metrics").exists()


def test_bad_one_off_requests_fail_extract_at_once(project: Path, airflow_db, capfd, caplog, tmp_path_factory, monkeypatch):
    assert run("demo_web_metrics__train", {"end": TRAIN_END}, TRAIN_END).endswith("success")
    data = REPO / "data" / "demo" / "web_metrics.csv"
    folder = project / "out"
    folder.mkdir()
    # Naive timestamps after aware ones: bad data, which a retry reads again (it was a
    # SourceError and took both retries, a minute apart, before failing).
    lines = data.read_text().splitlines()[:301]
    mixed = project / "mixed.csv"
    mixed.write_text("\n".join(lines[:200] + [line.replace("Z,", ",", 1) for line in lines[200:]]) + "\n")
    cases = [
        ({"input": str(mixed), "chunk_rows": 1000}, "mixes timestamps with and without a time zone"),
        # Found in publish, after every chunk was scored.
        ({"input": str(data), "output": str(folder)}, f"output {str(folder)!r} is a folder"),
        # A window beside input would be ignored: the file is scored whole.
        ({"input": str(data), "start": "2024-03-01", "end": "2024-03-02"},
         "unknown run conf key(s) end, start; demo_web_metrics__score takes input, output, chunk_rows"),
    ]
    for conf, message in cases:
        states = task_states("demo_web_metrics__score", conf, None)
        assert states["extract"] == ("failed", 1), (conf, states)
        assert not any(task.startswith("score") and state == "success" for task, (state, _) in states.items()), states
        assert message in capfd.readouterr().out, conf
    assert not (project / "scored.parquet").exists() and not (project / "var" / "outputs" / "_one_off").exists()

    # A relative output resolves against the project root, as the input does: it went to the folder
    # the worker happened to run in.
    elsewhere = tmp_path_factory.mktemp("worker_cwd")
    monkeypatch.chdir(elsewhere)
    with caplog.at_level("INFO", logger="pipelines.runner"):
        states = task_states("demo_web_metrics__score", {"input": "data/demo/web_metrics.csv", "output": "scored/web.parquet"}, None)
    assert states["publish"] == ("success", 1), states
    assert len(pd.read_parquet(project / "scored" / "web.parquet")) > 0
    # The chunk's task says how far the whole run is (here one chunk: all of it).
    assert "job demo_web_metrics: the run has scored 1 of 1 chunks, 2,592 of 2,592 input rows (100%)" in caplog.text
    assert not (elsewhere / "scored").exists()


@pytest.mark.parametrize("purpose", ["predict", "train"])
def test_a_window_ending_before_it_starts_fails_extract_at_once_naming_the_job(project: Path, airflow_db, capfd, purpose):
    # predict handed the job's name where its config was expected: an AttributeError, which is no
    # permanent error, so the run took both retries (a minute apart) before failing with a traceback.
    states = task_states(f"demo_web_metrics__{purpose}", {"start": "2024-03-08T00:00:00Z", "end": "2024-03-01T00:00:00Z"}, None)
    assert states["extract"] == ("failed", 1), states
    assert (
        "job demo_web_metrics: window end 2024-03-01T00:00:00+00:00 is not after its start 2024-03-08T00:00:00+00:00; "
        "give a start before the end" in capfd.readouterr().out
    )
