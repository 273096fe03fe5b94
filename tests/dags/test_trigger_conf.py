"""Triggering the generated DAGs by hand (``airflow dags trigger <dag> --conf '{...}'`` or the form):
what a run does with its conf, or with none, through ``dag.test()`` on a migrated metadata DB."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pendulum
import pytest
from airflow.dag_processing.dagbag import DagBag

from pipelines.demo import TRAIN_END

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def trigger(dag_id: str, conf: dict, *, run_after: str | None = None) -> dict[str, tuple[str, int]]:
    """A manual run as ``airflow dags trigger`` makes it (no logical date, so no data interval):
    state and try number of each task."""
    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    dagrun = dag.test(logical_date=None, run_after=pendulum.parse(run_after) if run_after else None, run_conf=conf)
    return {
        ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): (str(ti.state).split(".")[-1].lower(), ti.try_number)
        for ti in dagrun.get_task_instances()
    }


@pytest.mark.parametrize(
    "dag_id, conf, message",
    [
        ("demo_web_metrics__predict", {"start": "2200-01-01", "end": "2200-01-02"},
         "job demo_web_metrics: start '2200-01-01' puts the window [2200-01-01T00:00:00+00:00, 2200-01-02T00:00:00+00:00) "
         "after now"),
        # Without a start, train reads training_window (28 days) back from the end.
        ("demo_web_metrics__train", {"end": "2200-01-01"},
         "job demo_web_metrics: end '2200-01-01' puts the window [2199-12-04T00:00:00+00:00, 2200-01-01T00:00:00+00:00) "
         "after now"),
        ("demo_web_metrics__tune", {"start": "2200-01-01T00:00:00+02:00", "end": "2200-02-01"},
         "job demo_web_metrics: start '2200-01-01T00:00:00+02:00' puts the window [2199-12-31T22:00:00+00:00, "),
        # A run without a data interval takes a missing start from nowhere it could have meant.
        ("demo_web_metrics__predict", {"end": "2024-03-02"},
         "job demo_web_metrics: end '2024-03-02' needs a start too: the run has no data interval to take one from. "
         "Give start as well, e.g. start 2024-03-01"),
    ],
)
def test_a_window_that_cannot_be_meant_fails_the_first_task_at_once_naming_the_bound(project: Path, airflow_db, capfd, dag_id, conf, message):
    # It read the source, found no rows and failed as "the data may not have landed yet": a source
    # error, retried twice a minute apart, which named neither the bound nor what to give instead.
    states = trigger(dag_id, conf)
    assert states["extract"] == ("failed", 1), states
    out = capfd.readouterr().out
    assert message in out
    assert "needs a start too" in message or ("no data can be in it yet. Give " in out and "before now, e.g. " in out)


@pytest.mark.parametrize("dag_id", ["demo_web_metrics__train", "demo_web_metrics__predict"])
def test_a_past_window_given_in_the_conf_that_holds_no_rows_fails_at_once(project: Path, airflow_db, capfd, dag_id):
    # An empty window is a source error that scheduled runs retry (the data may land later); one a
    # person typed was read again twice, a minute apart, and failed as if the data had not landed.
    if dag_id.endswith("__predict"):
        assert trigger("demo_web_metrics__train", {}, run_after=TRAIN_END)["summarize"][0] == "success"
    states = trigger(dag_id, {"start": "2010-01-01", "end": "2010-01-08"})
    assert states["extract"] == ("failed", 1), states
    out = capfd.readouterr().out
    assert "has no rows in window [2010-01-01T00:00:00+00:00, 2010-01-08T00:00:00+00:00)" in out
    assert "The window came from the run's conf (start '2010-01-01', end '2010-01-08'): check it and trigger again." in out


def test_a_manual_run_without_conf_or_logical_date_scores_the_last_complete_interval(project: Path, airflow_db, caplog):
    # `airflow dags trigger demo_web_metrics__predict` (no --logical-date, no --conf) gave the run
    # no data interval, and predict failed: "predict needs a window".
    caplog.set_level("INFO", logger="pipelines")
    states = trigger("demo_web_metrics__train", {}, run_after=TRAIN_END)
    assert states["summarize"] == ("success", 1), states
    # The summary says which window the run chose (train's window comes from when it was due).
    assert "job demo_web_metrics: train results, window [2024-02-02T00:00:00+00:00, 2024-03-01T00:00:00+00:00)" in caplog.text

    states = trigger("demo_web_metrics__predict", {}, run_after="2024-03-05T10:30:12Z")
    assert states["publish"] == ("success", 1), states
    out = caplog.text
    assert (
        "job demo_web_metrics: no data interval, start or end given: scoring [2024-03-05T09:00:00+00:00, "
        "2024-03-05T10:00:00+00:00), the last complete interval of the predict schedule `0 * * * *`" in out
    )
    assert "job demo_web_metrics: scored [2024-03-05T09:00:00+00:00, 2024-03-05T10:00:00+00:00)" in out
    scored = pd.read_parquet(project / "var" / "outputs" / "job=demo_web_metrics")
    assert set(scored["timestamp"]) == {pd.Timestamp("2024-03-05T09:00:00Z")}

    # One bound given: the other comes from the same default.
    states = trigger("demo_web_metrics__predict", {"start": "2024-03-05T07:00:00Z"}, run_after="2024-03-05T10:30:12Z")
    assert states["publish"] == ("success", 1), states
    scored = pd.read_parquet(project / "var" / "outputs" / "job=demo_web_metrics")
    assert sorted(set(scored["timestamp"])) == list(pd.date_range("2024-03-05T07:00Z", periods=3, freq="h"))


def test_a_backfill_given_a_window_fails_each_run_instead_of_redoing_that_window(airflow_server):
    # `airflow backfill create ... --dag-run-conf '{"start": ..., "end": ...}'` gave every run the
    # same window: each of them scored that one window, and none its own interval.
    from benchmarks.backfill import DAG_ID, create_backfill, wait_for_backfill

    server = airflow_server
    hours = list(pd.date_range("2024-03-20T00:00:00Z", periods=2, freq="h"))  # days test_backfill does not use
    conf = '{"start": "2024-03-09T00:00:00Z", "end": "2024-03-10T00:00:00Z"}'
    backfill = create_backfill(server, hours[0], hours[-1], "--dag-run-conf", conf)
    assert wait_for_backfill(server, backfill, hours, timeout=600) == {h.isoformat(): "failed" for h in hours}
    logs = "".join(path.read_text() for path in (server.home / "logs").rglob(f"dag_id={DAG_ID}/*backfill*/task_id=extract/*"))
    assert logs.count(
        f"{DAG_ID}: a backfill run works on its own data interval, but the backfill gave every run the same "
        "start '2024-03-09T00:00:00Z', end '2024-03-10T00:00:00Z'"
    ) >= len(hours), logs[-3000:]
