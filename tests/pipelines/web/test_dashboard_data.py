"""The dashboard's data layer over real outputs: the demo jobs trained and scored by the library.

``scored_project`` trains both demo jobs (demo_web_metrics: seasonal MAD per region; demo_sensors:
a multivariate Isolation Forest per machine) on February 2024 and scores the demo week, as
``make demo`` does; one training batch too small for validation leaves a failed validation report.
Every figure the dashboard shows is checked against the outputs read back with ``ParquetSink``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.config import SqlConnection, get_job
from pipelines.errors import ConfigError
from pipelines.web import dashboard_data as data
from tests.project_copy import using_project

REPO = Path(__file__).resolve().parents[3]
PREDICT = ("2024-03-01T00:00:00+00:00", "2024-03-08T00:00:00+00:00")
TRAIN_END = "2024-03-01T00:00:00+00:00"
#: Two hours of three regions: 6 rows, fewer than the job's validation.min_rows (24).
TOO_SMALL = ("2024-02-10T00:00:00+00:00", "2024-02-10T02:00:00+00:00")
PREDICT_RUN = "test__predict__demo_week"


def build_scored_project(base: Path) -> Path:
    """``base`` made a project whose demo jobs are trained and have scored the demo week (idempotent:
    test modules of one session share it through a marker file)."""
    done = base / ".scored"
    if done.exists():
        return base
    from pipelines.demo import setup_demo_database
    from pipelines.errors import DataValidationError
    from pipelines.runner import run_predict, run_train
    from pipelines.workspace import Window, to_utc, training_window

    with using_project(base):
        setup_demo_database()
        for name in ("demo_web_metrics", "demo_sensors"):
            job = get_job(name)
            run_train(job, training_window(job, TRAIN_END), run_id=f"test__train__{name}")
            run_predict(job, Window(to_utc(PREDICT[0]), to_utc(PREDICT[1])), run_id=PREDICT_RUN)
        with pytest.raises(DataValidationError):
            run_train(get_job("demo_web_metrics"), Window(to_utc(TOO_SMALL[0]), to_utc(TOO_SMALL[1])), run_id="test__too_small")
    done.write_text("ok")
    return base


@pytest.fixture(scope="module")
def scored_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scored_project(tmp_path_factory.getbasetemp() / "dashboard-scored")


@pytest.fixture
def scored(scored_base: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(scored_base))
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(scored_base / "var"))
    data._CACHE.clear()
    yield scored_base
    data._CACHE.clear()


def outputs(name: str) -> pd.DataFrame:
    """The job's rows as the sink reads them back: the truth the dashboard must agree with."""
    from pipelines.config import resolve_path
    from pipelines.sinks import ParquetSink

    job = get_job(name)
    return ParquetSink(resolve_path(job.outputs.parquet)).read(job=name)


def anomalous_points(frame: pd.DataFrame, min_score: float = 0.0) -> pd.DataFrame:
    flagged = frame[frame["is_anomaly"] & (frame["score"] >= min_score)]
    return flagged.drop_duplicates(["series", "timestamp"])


# -- downsampling ----------------------------------------------------------------------------------


def test_downsample_keeps_every_point_when_few():
    times = np.arange(100, dtype="int64")
    assert data.downsample(times, np.zeros(100), np.zeros(100, bool), buckets=25).tolist() == list(range(100))


def test_downsample_keeps_extremes_of_each_bucket_and_every_anomaly():
    rng = np.random.default_rng(3)
    n, buckets = 100_000, 100
    times = np.arange(n, dtype="int64") * 3600
    values = rng.normal(size=n)
    values[rng.choice(n, 20, replace=False)] = np.nan  # gaps never win a minimum or maximum
    keep = np.zeros(n, bool)
    keep[rng.choice(n, 300, replace=False)] = True
    index = data.downsample(times, values, keep, buckets)
    assert len(index) <= 4 * buckets + keep.sum()
    assert np.all(np.diff(index) > 0)
    assert set(np.flatnonzero(keep)) <= set(index.tolist())
    # The drawn line reaches the same highs and lows in every bucket as the full data.
    bucket = times * buckets // (times[-1] + 1)
    full = pd.DataFrame({"b": bucket, "v": values}).groupby("b")["v"].agg(["min", "max"])
    drawn = pd.DataFrame({"b": bucket[index], "v": values[index]}).groupby("b")["v"].agg(["min", "max"])
    pd.testing.assert_frame_equal(drawn, full)


def test_downsample_bounds_a_flood_of_anomalies_and_keeps_where_they_reach():
    """A model that flagged a third of a million-point series sent every flagged point: 300,000
    markers, 23 MB of chart data. Beyond four a bucket they are thinned like the line, so each
    bucket still shows its highest and lowest marker. (Its time is not asserted, as a timed test
    fails on a busy machine: 2.8 s with two lexsorts, 0.2 s since, measured once on 2026-12-06.)"""
    rng = np.random.default_rng(5)
    n, buckets = 1_000_000, 600
    times = np.arange(n, dtype="int64") * 10
    values = rng.normal(size=n)
    keep = rng.random(n) < 0.3
    values[keep & (rng.random(n) < 0.01)] = np.nan  # a flagged point without a value wins nothing
    index = data.downsample(times, values, keep, buckets)
    assert len(index) <= 8 * buckets and np.all(np.diff(index) > 0)
    bucket = ((times - times[0]) * buckets // (times[-1] - times[0] + 1))[keep]
    full = pd.DataFrame({"b": bucket, "v": values[keep]}).groupby("b")["v"].agg(["min", "max", "size"])
    marked = np.intersect1d(index, np.flatnonzero(keep))
    drawn = pd.DataFrame({"b": bucket.take(np.searchsorted(np.flatnonzero(keep), marked)), "v": values[marked]})
    drawn = drawn.groupby("b")["v"].agg(["min", "max", "size"])
    pd.testing.assert_frame_equal(drawn[["min", "max"]], full[["min", "max"]])
    assert (drawn["size"] <= 4).all()


# -- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"start": "yesterday"}, r"time range filter: 'yesterday' is not an ISO 8601 date-time"),
        ({"start": "2024-03-02", "end": "2024-03-01"}, r"end 2024-03-01T00:00:00\+00:00 is not after start"),
        ({"min_score": 1.5}, r"min_score filter must be between 0 and 1 .*got 1.5"),
        ({"min_score": -0.1}, r"min_score filter must be between 0 and 1"),
        ({"min_score": "high"}, r"min_score filter must be a number between 0 and 1, got 'high'"),
        ({"only_anomalies": "maybe"}, r"only_anomalies filter must be true or false \(or 1/0, yes/no, on/off\), got 'maybe'"),
    ],
)
def test_bad_filters_say_which_parameter_and_what_is_allowed(args, message):
    with pytest.raises(ConfigError, match=message):
        data.Filters.parse(**args)


def test_filters_take_naive_times_as_utc_and_drop_repeated_series():
    filters = data.Filters.parse(["region=eu", "", "region=eu", "region=us"], "2024-03-01T00:00", None, 0.5)
    assert filters.series == ("region=eu", "region=us")
    assert filters.start == pd.Timestamp("2024-03-01", tz="UTC")
    # What a form with empty fields sends: no filter.
    assert data.Filters.parse([""], "", "", "", [""], "") == data.Filters()
    assert data.Filters.parse(min_score=" 0.5 ").min_score == 0.5
    assert filters.to_dict() == {
        "series": ["region=eu", "region=us"],
        "start": "2024-03-01T00:00:00+00:00",
        "end": None,
        "min_score": 0.5,
        "features": [],
        "only_anomalies": False,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, False), ("", False), ("false", False), ("0", False), ("true", True), ("TRUE", True), ("1", True), ("on", True)],
)
def test_only_anomalies_takes_what_links_and_forms_send(text, expected):
    assert data.Filters.parse(only_anomalies=text).only_anomalies is expected


def test_a_feature_filter_names_the_features_of_the_job():
    job = get_job("demo_sensors")
    filters = data.Filters.parse(features=["vibration", "", "vibration", "pressure"])
    assert filters.features == ("vibration", "pressure") and filters.for_job(job) is filters
    with pytest.raises(
        ConfigError,
        match=r"feature filter: 'cpu' is not a feature of job 'demo_sensors'; "
        r"choose among temperature, vibration, pressure \(or none for all\)",
    ):
        data.Filters.parse(features=["vibration", "cpu"]).for_job(job)
    with pytest.raises(ConfigError, match=r"'cpu', 'ram' are not features of job 'demo_sensors'"):
        data.series_summary(job, data.Filters(features=("cpu", "ram")))


# -- pages' data ----------------------------------------------------------------------------------


def test_series_summary_agrees_with_the_outputs(scored):
    job = get_job("demo_web_metrics")
    frame = outputs("demo_web_metrics")
    rows = data.series_summary(job, data.Filters())
    assert {r["series"] for r in rows} == {"region=apac", "region=eu", "region=us"}
    flagged = anomalous_points(frame).groupby("series").size()
    for row in rows:
        assert row["points"] == 7 * 24  # one point per hour of the scored week
        assert row["anomalies"] == flagged.get(row["series"], 0)
        assert row["max_score"] == pytest.approx(frame.loc[frame["series"] == row["series"], "score"].max())
        assert row["first"] == "2024-03-01T00:00:00+00:00" and row["last"] == "2024-03-07T23:00:00+00:00"
    # Most anomalous first; the eu traffic spike of the demo data is among them.
    assert [r["anomalies"] for r in rows] == sorted((r["anomalies"] for r in rows), reverse=True)
    assert next(r for r in rows if r["series"] == "region=eu")["anomalies"] >= 3


def test_series_summary_filters_by_time_score_and_series(scored):
    job = get_job("demo_web_metrics")
    frame = outputs("demo_web_metrics")
    start, end = pd.Timestamp("2024-03-03T06:00", tz="UTC"), pd.Timestamp("2024-03-07T05:00", tz="UTC")
    inside = frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end) & (frame["series"] == "region=eu")]
    everything = data.series_summary(job, data.Filters(("region=eu",), start, end))
    strong = data.series_summary(job, data.Filters(("region=eu",), start, end, 0.9999))
    assert [r["series"] for r in everything] == [r["series"] for r in strong] == ["region=eu"]
    assert strong[0]["points"] == everything[0]["points"] == 18 + 3 * 24 + 5  # partial days cut to the range
    assert everything[0]["anomalies"] == len(anomalous_points(inside))
    assert strong[0]["anomalies"] == len(anomalous_points(inside, 0.9999))
    assert 0 < strong[0]["anomalies"] < everything[0]["anomalies"]


def test_series_summary_of_some_features_and_only_the_series_with_anomalies(scored):
    job = get_job("demo_web_metrics")
    frame = outputs("demo_web_metrics")
    latency = frame[frame["feature"] == "latency_ms"]
    flagged = anomalous_points(latency).groupby("series").size()
    rows = data.series_summary(job, data.Filters(features=("latency_ms",)))
    assert {r["series"]: r["anomalies"] for r in rows} == {s: int(flagged.get(s, 0)) for s in frame["series"].unique()}
    assert all(r["points"] == 7 * 24 for r in rows)
    top = latency.groupby("series")["score"].max()
    assert [r["max_score"] for r in rows] == pytest.approx([top[r["series"]] for r in rows])
    # Only anomalies: the series without a latency anomaly (the demo data has one) are left out.
    only = data.series_summary(job, data.Filters(features=("latency_ms",), only_anomalies=True))
    assert [r["series"] for r in only] == [r["series"] for r in rows if r["anomalies"]]
    assert 0 < len(only) < len(rows)
    # ... and it counts with min_score: a series whose anomalies are all weaker is left out too.
    strong = data.series_summary(job, data.Filters(min_score=0.9999, only_anomalies=True))
    expected = anomalous_points(frame, 0.9999)["series"].unique()
    assert sorted(r["series"] for r in strong) == sorted(expected) and all(r["anomalies"] for r in strong)
    assert data.shown_series(rows, data.Filters(only_anomalies=True)) == only


def test_chart_sends_every_point_of_a_week_and_marks_the_anomalies(scored):
    job = get_job("demo_web_metrics")
    frame = outputs("demo_web_metrics")
    chart = data.chart(job, "region=eu", data.Filters())
    assert [f["feature"] for f in chart["features"]] == ["requests", "latency_ms"]
    for feature in chart["features"]:
        rows = frame[(frame["series"] == "region=eu") & (frame["feature"] == feature["feature"])]
        assert feature["points"] == feature["returned"] == len(feature["t"]) == 168
        assert feature["value"] == pytest.approx(rows["value"].tolist())
        assert feature["upper"] == pytest.approx(rows["upper"].tolist())
        marked = [t for t, a in zip(feature["t"], feature["anomaly"], strict=True) if a is not None]
        assert marked == [ts.timestamp() for ts in rows.loc[rows["is_anomaly"], "timestamp"]]
        assert feature["anomalies"] == len(marked)
    assert sum(f["anomalies"] for f in chart["features"]) > 0


def test_chart_downsamples_but_keeps_anomalies_and_honours_the_range(scored):
    job = get_job("demo_web_metrics")
    start, end = "2024-03-02T00:00:00Z", "2024-03-05T00:00:00Z"
    chart = data.chart(job, "region=eu", data.Filters.parse(start=start, end=end), buckets=3)
    for feature in chart["features"]:
        assert feature["points"] == 72
        assert feature["returned"] <= 4 * 3 + feature["anomalies"] < 72
        assert sum(a is not None for a in feature["anomaly"]) == feature["anomalies"]
        assert pd.Timestamp(start).timestamp() <= min(feature["t"]) and max(feature["t"]) < pd.Timestamp(end).timestamp()
    with pytest.raises(ConfigError, match="buckets must be between 1 and 2000, got 0"):
        data.chart(job, "region=eu", data.Filters(), buckets=0)


def test_chart_of_some_features(scored):
    job = get_job("demo_sensors")
    every = data.chart(job, "machine=press_2", data.Filters())
    some = data.chart(job, "machine=press_2", data.Filters(features=("pressure", "vibration")))
    # In the job's order, whatever the order asked.
    assert [f["feature"] for f in every["features"]] == ["temperature", "vibration", "pressure"]
    assert [f["feature"] for f in some["features"]] == ["vibration", "pressure"]
    assert some["features"] == every["features"][1:]
    assert some["filters"]["features"] == ["pressure", "vibration"]


def test_chart_of_an_unknown_series_is_empty(scored):
    assert data.chart(get_job("demo_web_metrics"), "region=mars", data.Filters())["features"] == []


def test_events_of_a_multivariate_job_rank_the_contributing_signals(scored):
    job = get_job("demo_sensors")
    frame = outputs("demo_sensors")
    result = data.anomaly_events(job, data.Filters())
    expected = anomalous_points(frame)
    assert result["total"] == len(expected) > 0
    assert len(result["events"]) == result["total"]
    scores = [e["score"] for e in result["events"]]
    assert scores == sorted(scores, reverse=True)
    for event in result["events"]:
        # Isolation Forest decides per timestamp over all features: every signal is listed, strongest first.
        assert {s["feature"] for s in event["signals"]} == {"temperature", "vibration", "pressure"}
        shares = [s["feature_score"] for s in event["signals"]]
        assert shares == sorted(shares, reverse=True)
        rows = frame[(frame["series"] == event["series"]) & (frame["timestamp"] == pd.Timestamp(event["timestamp"]))]
        top = rows.sort_values("feature_score", ascending=False).iloc[0]
        assert event["signals"][0]["feature"] == top["feature"]
        assert event["signals"][0]["feature_score"] == pytest.approx(top["feature_score"])


def test_events_of_some_features_list_only_their_signals(scored):
    job = get_job("demo_web_metrics")
    frame = outputs("demo_web_metrics")
    result = data.anomaly_events(job, data.Filters(features=("latency_ms",)))
    assert result["total"] == len(anomalous_points(frame[frame["feature"] == "latency_ms"])) > 0
    assert result["total"] < data.anomaly_events(job, data.Filters())["total"]
    assert {s["feature"] for e in result["events"] for s in e["signals"]} == {"latency_ms"}
    assert result["filters"]["features"] == ["latency_ms"]


def test_events_filter_by_min_score_and_limit(scored):
    job = get_job("demo_sensors")
    everything = data.anomaly_events(job, data.Filters())
    cut = sorted(e["score"] for e in everything["events"])[len(everything["events"]) // 2]
    strong = data.anomaly_events(job, data.Filters(min_score=cut))
    assert 0 < strong["total"] < everything["total"]
    assert all(e["score"] >= cut for e in strong["events"])
    assert len(data.anomaly_events(job, data.Filters(), limit=2)["events"]) == 2
    assert data.anomaly_events(job, data.Filters(), limit=2)["total"] == everything["total"]


def test_models_mark_the_champion_with_its_metrics(scored):
    from pipelines.training import registry_for

    job = get_job("demo_web_metrics")
    registry = registry_for(job)
    entries = data.models(job)
    assert [e["series"] for e in entries] == ["region=apac", "region=eu", "region=us"]
    for entry in entries:
        assert entry["champion"] == registry.champion(job.name, entry["series"]).version
        (version,) = entry["versions"]
        assert version["champion"] is True and version["promoted"] is True and version["reason"] == "no champion yet"
        assert version["metrics"]["holdout_error"] > 0 and version["rows"] == 28 * 24


def test_validation_results_explain_the_failure(scored):
    results = data.validation_results(get_job("demo_web_metrics"))
    failed = [r for r in results if not r["success"]]
    assert len(failed) == 1 and failed[0]["rows"] == 6
    assert failed[0]["purpose"] == "train" and failed[0]["window"]["start"].startswith("2024-02-10T00:00")
    (check,) = failed[0]["failed"]
    assert check["expectation"] == "expect_table_row_count_to_be_between"
    assert "observed 6" in check["explanation"]
    assert results[0] is failed[0]  # the newest report first
    assert {r["purpose"] for r in results if r["success"]} == {"train", "predict"}


def test_last_run_and_overview_describe_the_predict_run(scored):
    jobs = [get_job("demo_sensors"), get_job("demo_web_metrics")]
    rows = {row["job"]: row for row in data.overview(jobs)}
    web = rows["demo_web_metrics"]
    assert web["last_run"]["run_id"] == PREDICT_RUN
    assert web["last_run"]["window"] == {"start": PREDICT[0], "end": PREDICT[1]}
    assert web["last_run"]["points"] == 3 * 168 and web["last_run"]["rows"] == 3 * 168 * 2
    assert web["last_run"]["anomalies"] == len(anomalous_points(outputs("demo_web_metrics")))
    assert web["series_with_models"] == web["champions"] == 3
    assert web["last_validation"]["success"] is False
    # These runs came from the library; the Airflow column shows whatever Airflow's own database
    # holds for the predict DAG (other tests of the session may have run it through dag.test).
    assert web["airflow"] == data.airflow_last_runs(["demo_web_metrics__predict"]).get("demo_web_metrics__predict")
    sensors = rows["demo_sensors"]
    assert sensors["last_run"]["anomaly_rate"] == pytest.approx(
        sensors["last_run"]["anomalies"] / sensors["last_run"]["points"]
    )
    assert sensors["last_validation"]["success"] is True


def test_run_summary_and_dag_kinds(scored):
    jobs = {"demo_web_metrics": get_job("demo_web_metrics")}
    job, kind = data.job_dag_kind("demo_web_metrics__predict", jobs)
    assert (job.name, kind) == ("demo_web_metrics", "predict")
    assert data.job_dag_kind("demo_web_metrics__train", jobs)[1] == "train"
    assert data.job_dag_kind("other_dag", jobs) is None
    assert data.job_dag_kind("unknown__predict", jobs) is None
    run = data.run_summary(job, PREDICT_RUN)
    assert run["window"] == {"start": PREDICT[0], "end": PREDICT[1]} and run["points"] == 3 * 168
    assert data.run_summary(job, "never_ran") is None


def test_the_sql_table_serves_when_the_dataset_is_gone(scored, tmp_path):
    """The demo jobs also publish to a SQLite table: without the Parquet dataset the same figures come from it."""
    job = get_job("demo_web_metrics")
    from_parquet = data.series_summary(job, data.Filters())
    events = data.anomaly_events(job, data.Filters())
    folder = scored / "var" / "outputs" / "job=demo_web_metrics"
    shutil.move(folder, tmp_path / "moved")
    try:
        assert data.series_summary(job, data.Filters()) == from_parquet
        assert data.anomaly_events(job, data.Filters()) == events
        assert data.last_run(job)["run_id"] == PREDICT_RUN
    finally:
        shutil.move(tmp_path / "moved", folder)


def test_a_job_with_no_output_yet_shows_nothing_and_creates_no_database(tmp_path):
    # Looking for the table connected to its SQLite file, which created it (and its folder) empty
    # where the job's first publish was to write.
    database = tmp_path / "not-yet" / "anomalies.db"
    job = get_job("demo_web_metrics")
    job = job.model_copy(update={"outputs": job.outputs.model_copy(update={
        "parquet": str(tmp_path / "outputs"),
        "table": job.outputs.table.model_copy(update={"connection": SqlConnection(url=f"sqlite:///{database}")}),
    })})

    assert data.series_summary(job, data.Filters()) == []
    assert not database.parent.exists()


def test_a_rewritten_day_file_is_read_again(scored):
    """The cache is keyed by file time and size: a predict run that rewrites a day is seen at once."""
    from pipelines.config import resolve_path
    from pipelines.sinks import ParquetSink

    job = get_job("demo_web_metrics")
    before = data.series_summary(job, data.Filters())
    day = pd.Timestamp("2024-03-02", tz="UTC")
    sink = ParquetSink(resolve_path(job.outputs.parquet))
    rows = sink.read(job=job.name, start=day, end=day + pd.Timedelta(days=1))
    try:
        sink.write(rows.iloc[:0], job=job.name, dimensions=job.dimensions, start=day, end=day + pd.Timedelta(hours=12))
        after = {r["series"]: r["points"] for r in data.series_summary(job, data.Filters())}
        assert after == {r["series"]: r["points"] - 12 for r in before}
    finally:
        sink.write(rows, job=job.name, dimensions=job.dimensions, start=day, end=day + pd.Timedelta(days=1))


def test_a_damaged_day_file_names_the_job_file_and_fix(scored):
    from pipelines.errors import SinkError

    job = get_job("demo_web_metrics")
    path = scored / "var" / "outputs" / "job=demo_web_metrics" / "date=2024-03-05" / "part-0.parquet"
    saved = path.read_bytes()
    try:
        path.write_bytes(b"not parquet")
        with pytest.raises(SinkError, match=r"job 'demo_web_metrics': cannot read the output file .*date=2024-03-05.*re-run the predict DAG"):
            data.series_summary(job, data.Filters())
    finally:
        path.write_bytes(saved)


def test_a_job_that_never_ran_has_nothing_to_show(project):
    """No day files and no table yet (the SQL table is made by the first publish): empty, not an error."""
    job = get_job("demo_web_metrics")
    data._CACHE.clear()
    (row,) = data.overview([job])
    assert row["error"] is None and row["last_run"] is None and row["last_validation"] is None
    assert row["series_with_models"] == 0
    assert data.series_summary(job, data.Filters()) == []
    assert data.chart(job, "region=eu", data.Filters())["features"] == []
    assert data.anomaly_events(job, data.Filters())["total"] == 0
    assert data.models(job) == [] and data.validation_results(job) == []


def test_one_damaged_model_file_does_not_hide_the_other_series(project):
    from pipelines import storage
    from pipelines.training import registry_for

    job = get_job("demo_web_metrics")
    registry = registry_for(job)
    for key in ("region=eu", "region=us"):
        registry.promote(job.name, key, registry.register(job.name, key, {"model.skops": b"m"}, {"model": "mad"}).version)
    kept = registry.register(job.name, "region=us", {"model.skops": b"m"}, {"model": "mad"})
    registry.promote(job.name, "region=us", kept.version)
    pointer = storage.join(registry.root, job.name, "region=eu", "champion.json")
    storage.atomic_write(pointer, b'{"version": "2024', registry.storage_options)  # cut short

    eu, us = data.models(job)
    assert eu["series"] == "region=eu" and eu["champion"] is None and len(eu["versions"]) == 1
    assert eu["error"].startswith(f"{pointer} is not valid JSON") and "delete it" in eu["error"]
    assert us["champion"] == kept.version and us["error"] is None and [v["champion"] for v in us["versions"]] == [True, False]
    assert data.champions(job) == {"region=eu": None, "region=us": kept.version}
    (row,) = data.overview([job])
    assert row["error"] is None and row["series_with_models"] == 2 and row["champions"] == 1

    # A readable pointer to a version whose metadata.json is damaged: the version is left out, and said so.
    metadata = storage.join(registry.root, job.name, "region=us", "versions", kept.version, "metadata.json")
    storage.atomic_write(metadata, b"", registry.storage_options)
    us = data.models(job, ["region=us"])[0]
    assert us["champion"] == kept.version and not any(v["champion"] for v in us["versions"])
    assert us["error"].startswith(f"the champion {kept.version} is not among the readable versions")


def test_model_metrics_keep_their_kind_and_an_odd_one_breaks_nothing(project):
    """compared_out_of_sample (a flag) read 1.0 and compared_rows (a count) 72.0: every metric was
    made a float; and a metric that is no number (metadata of another library version) raised
    ValueError, a 500 for the whole models page."""
    from pipelines.training import registry_for

    job = get_job("demo_web_metrics")
    registry = registry_for(job)
    metrics = {
        "holdout_error": 0.25, "champion_holdout_error": float("inf"), "compared_rows": 72, "compared_out_of_sample": True,
        "note": "n/a", "per_feature": {"requests": 0.1}, "missing": None,
    }  # fmt: skip
    version = registry.register(job.name, "region=eu", {"model.skops": b"m"}, {"model": "mad", "metrics": metrics})
    registry.promote(job.name, "region=eu", version.version)
    [entry] = data.models(job)
    assert entry["versions"][0]["metrics"] == {
        "holdout_error": 0.25, "champion_holdout_error": None, "compared_rows": 72, "compared_out_of_sample": True,
        "note": "n/a", "per_feature": '{"requests": 0.1}', "missing": None,
    }  # fmt: skip


def test_one_unreadable_job_does_not_hide_the_others(scored):
    path = scored / "var" / "outputs" / "job=demo_sensors" / "date=2024-03-05" / "part-0.parquet"
    saved = path.read_bytes()
    try:
        path.write_bytes(b"not parquet")
        rows = {row["job"]: row for row in data.overview([get_job("demo_sensors"), get_job("demo_web_metrics")])}
    finally:
        path.write_bytes(saved)
    assert "cannot read the output file" in rows["demo_sensors"]["error"]
    assert rows["demo_web_metrics"]["error"] is None and rows["demo_web_metrics"]["last_run"]["run_id"] == PREDICT_RUN


@pytest.mark.parametrize(
    "read",
    [
        lambda job: data.series_summary(job, data.Filters()),
        lambda job: data.anomaly_events(job, data.Filters()),
        lambda job: data.chart(job, "region=eu", data.Filters()),
        lambda job: data.run_summary(job, PREDICT_RUN),
    ],
    ids=["series_summary", "anomaly_events", "chart", "run_summary"],
)
def test_a_request_over_more_days_than_the_cache_holds_keeps_one_day_at_a_time(scored, monkeypatch, read):
    """A year of a big job does not fit in memory: the days beyond the cache's budget are read,
    aggregated and let go one by one, and nothing kept from them holds the day's buffers."""
    import gc
    import weakref

    monkeypatch.setenv("ANOMALY_PIPELINES_DASHBOARD_CACHE_MB", "0")  # the cache keeps only the last day
    loaded: list[weakref.ref] = []
    alive_at_load: list[int] = []
    build = data._Part.build.__func__

    def counting_build(cls, table, start, end):
        gc.collect()
        alive_at_load.append(sum(ref() is not None for ref in loaded))
        part = build(cls, table, start, end)
        loaded.append(weakref.ref(part))
        return part

    monkeypatch.setattr(data._Part, "build", classmethod(counting_build))
    read(get_job("demo_web_metrics"))
    assert len(alive_at_load) == 7  # the demo week's day files
    assert max(alive_at_load) <= 1, alive_at_load  # the cached previous day, nothing else


def test_a_part_of_rows_out_of_order_is_sorted_and_one_in_order_kept():
    """Day files come sorted by series and time from the sink (the check spares sorting them
    again); rows in another order (an SQL table's) are sorted, so each series is one slice."""
    from pipelines.schema import arrow_schema

    times = pd.date_range("2024-03-01", periods=3, freq="h", tz="UTC")
    rows = [{"series": s, "timestamp": t, "feature": "f", "value": 1.0, "is_anomaly": False} for t in times for s in ("b", "a")]
    shuffled = pa.Table.from_pylist(rows, schema=arrow_schema([]))
    in_order = pa.Table.from_pylist(sorted(rows, key=lambda r: (r["series"], r["timestamp"])), schema=arrow_schema([]))
    assert not data._in_series_time_order(shuffled) and data._in_series_time_order(in_order)
    day = pd.Timestamp("2024-03-01", tz="UTC")
    for table in (shuffled, in_order):
        part = data._Part.build(table, day, day + pd.Timedelta(days=1))
        assert part.slices == {"a": (0, 3), "b": (3, 3)}
        assert part.lines["timestamp"].to_pylist() == [*times, *times]
    # A missing series or time is not known to be in order: sorted (nulls last).
    assert not data._in_series_time_order(pa.table({"series": ["a", None], "timestamp": pa.array(times[:2])}))


def test_chart_lines_do_not_share_the_days_buffers(scored):
    """A chart keeps a series' rows of each day: in buffers of their own, or a year's chart would
    keep every day of every series alive after the cache dropped them."""
    [part] = data.JobOutputs(get_job("demo_web_metrics")).parts(data.Filters.parse([], "2024-03-02", "2024-03-03"))
    rows = part.series_lines("region=eu", data.Filters())
    assert rows.num_rows == 24 * 2
    day = {buffer.address for column in part.lines.columns for chunk in column.chunks for buffer in chunk.buffers() if buffer}
    mine = {buffer.address for column in rows.columns for chunk in column.chunks for buffer in chunk.buffers() if buffer}
    assert not day & mine


def test_a_series_flagged_everywhere_is_charted_and_listed_within_bounds(project):
    """A model that flags nearly every point (a broken threshold) made every chart carry each
    flagged point (a third of a million points: 23 MB, 8 s) and the job page list its 100 strongest
    events after turning every flagged time into a Python object (7 s)."""
    from pipelines.config import resolve_path
    from pipelines.sinks import ParquetSink

    demo = (project / "config" / "jobs" / "demo_web_metrics.yaml").read_text()
    (project / "config" / "jobs" / "flood.yaml").write_text(
        demo.replace("name: demo_web_metrics", "name: flood").replace("frequency: 1h", "frequency: 1s")
    )
    job = get_job("flood")
    start = pd.Timestamp("2024-03-01", tz="UTC")
    times = pd.date_range(start, periods=86_400, freq="s")
    end = times[-1] + pd.Timedelta(seconds=1)
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({
        "job": "flood", "series": "region=eu", "region": "eu", "timestamp": times, "feature": "requests",
        "value": rng.normal(size=len(times)), "expected": 0.0, "lower": -1.0, "upper": 1.0, "score": rng.random(len(times)),
        "feature_score": 1.0, "is_anomaly": True, "model": "seasonal_mad", "model_version": "v1", "run_id": "flood",
        "interval_start": start, "interval_end": end, "scored_at": end,
    })  # fmt: skip
    ParquetSink(resolve_path(job.outputs.parquet)).write(frame, job="flood", dimensions=["region"], start=start, end=end)
    data._CACHE.clear()

    events = data.anomaly_events(job, data.Filters(), 100)
    assert events["total"] == len(times) and len(events["events"]) == 100
    strongest = frame.nlargest(100, "score")
    assert [e["timestamp"] for e in events["events"]] == [t.isoformat() for t in strongest["timestamp"]]
    assert all(e["signals"][0]["feature"] == "requests" for e in events["events"])

    chart = data.chart(job, "region=eu", data.Filters(), buckets=500)
    [feature] = chart["features"]
    assert feature["points"] == feature["anomalies"] == len(times)
    assert feature["returned"] <= 8 * 500
    marked = [v for v in feature["anomaly"] if v is not None]
    assert max(marked) == frame["value"].max() and min(marked) == frame["value"].min()
    data._CACHE.clear()


def test_a_write_killed_between_its_day_files_is_read_whole(project):
    """The dashboard lists the day files itself: after a write recorded its journal and was killed
    before moving every staged file, it showed some days new and others old, where ParquetSink.read
    reads the staged files in place of the days they replace."""
    from pipelines.config import resolve_path
    from pipelines.sinks import ParquetSink

    demo = (project / "config" / "jobs" / "demo_web_metrics.yaml").read_text()
    (project / "config" / "jobs" / "killed.yaml").write_text(demo.replace("name: demo_web_metrics", "name: killed"))
    job = get_job("killed")
    start, end = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-03", tz="UTC")
    times = pd.date_range(start, end, freq="h", inclusive="left")

    def frame(value: float, times=times) -> pd.DataFrame:
        return pd.DataFrame({
            "job": "killed", "series": "region=eu", "region": "eu", "timestamp": times, "feature": "requests",
            "value": value, "expected": 0.0, "lower": -1.0, "upper": 1.0, "score": 0.1, "feature_score": 0.1,
            "is_anomaly": False, "model": "seasonal_mad", "model_version": "v1", "run_id": "r", "interval_start": start,
            "interval_end": end, "scored_at": end,
        })  # fmt: skip

    sink = ParquetSink(resolve_path(job.outputs.parquet))
    sink.write(frame(1.0), job="killed", dimensions=["region"], start=start, end=end)
    # The state a SIGKILL leaves after the journal was committed and before the staged files moved
    # (tests/pipelines/sinks/test_parquet.py kills a real writer there): staged, recorded, not moved.
    # The new write keeps the first day only, so the second day file is to be removed.
    changes = sink._replace(frame(2.0, times[:24]), job="killed", dimensions=["region"], start=start, end=end, where="test")
    sink._stage("killed", changes, "test", prepared=False)
    data._CACHE.clear()

    shown = data.chart(job, "region=eu", data.Filters(), buckets=500)
    [feature] = shown["features"]
    assert feature["points"] == 24, "the day the write removes is not shown"
    assert set(v for v in feature["value"] if v is not None) == {2.0}, "every day shown is the write's"
    assert set(sink.read(job="killed")["value"]) == {2.0}
    data._CACHE.clear()


def test_the_web_modules_use_only_public_names_of_storage():
    # The dashboard wrapped its file listing in storage._storage_said: a private name, which the
    # storage module may rename or drop at will, breaking the dashboard's 503 for a store down.
    import ast

    private = []
    for module in sorted((REPO / "pipelines" / "web").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "storage":
                names = [node.attr]
            elif isinstance(node, ast.ImportFrom) and node.module == "pipelines.storage":
                names = [alias.name for alias in node.names]
            else:
                continue
            private += [f"{module.name}:{node.lineno}: {name}" for name in names if name.startswith("_")]
    assert private == []
