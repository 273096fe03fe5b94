"""Drift and anomaly-rate monitoring (pipelines/monitoring.py) on real trained models and real
published outputs: a job trained and run through the library, then monitored window by window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import parse_job
from pipelines.monitoring import (
    SKETCH_POINTS,
    calibrated_rate,
    feature_reference,
    ks,
    monitor_window,
    psi,
    read_records,
    read_request,
    reference_profile,
    retrain_reason,
)
from pipelines.runner import run_predict, run_train
from pipelines.training import registry_for
from pipelines.workspace import Window, to_utc

START = pd.Timestamp("2024-01-01T00:00:00Z")
TRAIN = Window(to_utc("2024-01-01T00:00:00Z"), to_utc("2024-01-15T00:00:00Z"))
#: Two-day predict windows after the training window.
WINDOWS = [Window(to_utc(TRAIN.end + pd.Timedelta(days=2 * k)), to_utc(TRAIN.end + pd.Timedelta(days=2 * k + 2))) for k in range(6)]


# -- statistics on known distributions -------------------------------------------------------------


@pytest.fixture(scope="module")
def normal_reference() -> dict:
    return feature_reference(np.random.default_rng(0).normal(size=20_000))


def test_same_distribution_has_no_drift(normal_reference: dict) -> None:
    same = np.random.default_rng(1).normal(size=5_000)
    assert psi(normal_reference, same) < 0.01
    assert ks(normal_reference, same) < 0.03


def test_a_one_sigma_shift_gives_the_textbook_values(normal_reference: dict) -> None:
    shifted = np.random.default_rng(2).normal(loc=1.0, size=20_000)
    # Two-sample KS of N(0,1) vs N(1,1): 2 * Phi(0.5) - 1 = 0.383. PSI over deciles of a mean
    # shift of d sigma is close to the symmetric divergence d^2 = 1 (binning loses a little).
    assert ks(normal_reference, shifted) == pytest.approx(0.383, abs=0.02)
    assert 0.7 < psi(normal_reference, shifted) < 1.05


def test_a_spread_change_is_drift_even_with_the_same_mean(normal_reference: dict) -> None:
    wider = np.random.default_rng(3).normal(scale=2.0, size=5_000)
    assert psi(normal_reference, wider) > 0.25


def test_reference_of_repeated_values_is_small_json() -> None:
    counts = np.random.default_rng(4).poisson(1.5, size=5_000).astype(float)
    counts[::50] = np.nan
    reference = feature_reference(counts)
    assert reference["edges"] == sorted(set(reference["edges"]))  # equal deciles merged
    assert sum(reference["shares"]) == pytest.approx(1.0)
    assert len(reference["quantiles"]) == SKETCH_POINTS and reference["rows"] == 4_900
    assert psi(reference, counts) == pytest.approx(0.0, abs=1e-9)
    profile = reference_profile(pd.DataFrame({"n": counts}), train_anomaly_rate=0.0)
    assert len(json.dumps(profile)) < 4_000
    assert profile["calibrated_anomaly_rate"] == 1 / 5_000  # a rate of 0 is floored at one timestamp
    assert feature_reference(np.array([np.nan, 1.0])) is None



@pytest.mark.parametrize("after", [100.0, -5.0])
def test_a_feature_constant_in_training_drifts_when_it_moves_either_way(after: float) -> None:
    # An error count that was always 0 in training: its one decile edge is 0, and the top bin
    # [0, inf) held every training value, so a jump to 100 landed in it too and had a PSI of 0.
    reference = feature_reference(np.zeros(500))
    assert psi(reference, np.zeros(200)) == pytest.approx(0.0, abs=1e-9)
    assert psi(reference, np.full(200, after)) > 0.25
    assert ks(reference, np.full(200, after)) == 1.0


def test_a_near_constant_feature_drifts_when_it_jumps_above_its_training_maximum() -> None:
    # An error flag, 0 in 96 % of training rows and 1 in the others: every decile is 0, so the
    # one bin [0, inf) held all training values, and a jump to 10 landed in it too: a PSI of 0.
    flags = np.zeros(500)
    flags[::25] = 1.0
    reference = feature_reference(flags)
    assert reference["edges"] == [0.0] and reference["quantiles"][-1] == 1.0
    assert psi(reference, flags) == pytest.approx(0.0, abs=1e-9)
    assert psi(reference, np.full(200, 10.0)) > 0.25
    # A continuous feature keeps its ten bins: a few values past its training maximum are noise.
    normal = np.random.default_rng(5).normal(size=500)
    assert psi(feature_reference(normal), np.append(np.random.default_rng(6).normal(size=99), normal.max() + 0.1)) < 0.25

# -- whole runs ---------------------------------------------------------------------------------------


def hourly(days: int, seed: int) -> pd.DataFrame:
    index = pd.date_range(START, periods=24 * days, freq="h")
    rng = np.random.default_rng(seed)
    cycle = np.sin(2 * np.pi * index.hour.to_numpy() / 24)
    return pd.DataFrame(
        {"timestamp": index, "a": 50 + 5 * cycle + rng.normal(size=len(index)), "b": 20 + rng.normal(size=len(index))}
    )


def make_job(tmp_path: Path, data: pd.DataFrame, validation: dict | None = None, **monitoring) -> object:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    data.to_csv(source / "data.csv", index=False)
    return parse_job(
        {
            "name": "monitored",
            "source": {"kind": "file", "path": str(source / "*.csv"), "format": "csv"},
            "timestamp": "timestamp",
            "frequency": "1h",
            "features": ["a", "b"],
            "model": {"kind": "seasonal_mad", "params": {"season": "1d"}},
            "training_window": "14d",
            "outputs": {"parquet": str(tmp_path / "outputs")},
            "registry": str(tmp_path / "models"),
            "monitoring": {"min_rows": 96, **monitoring},
            "validation": validation or {},
        }
    )


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    return tmp_path


def predict_and_monitor(job, window: Window, run_id: str):
    run_predict(job, window, run_id=run_id)
    return monitor_window(job, window, run_id=run_id)


def shifted_from(data: pd.DataFrame, when: pd.Timestamp, feature: str, by: float) -> pd.DataFrame:
    data = data.copy()
    data.loc[data["timestamp"] >= when, feature] += by
    return data


def test_no_retrain_without_drift(isolated: Path) -> None:
    job = make_job(isolated, hourly(24, seed=0))
    run_train(job, TRAIN, run_id="train")
    results = [predict_and_monitor(job, w, f"predict-{k}") for k, w in enumerate(WINDOWS[:5])]
    assert [r.due for r in results] == [False] * 5
    records = read_records(job, "all")
    assert len(records) == 5
    # The first window alone has fewer timestamps than min_rows and nothing published before it.
    assert records[0]["monitored_timestamps"] == 48 and records[0]["features"]["a"]["psi"] is None
    assert "monitoring.min_rows=96" in records[0]["notes"][0]
    for record in records[1:]:
        assert record["drifted_features"] == [] and not record["rate_far"]
        assert all(stats["psi"] < 0.25 and stats["ks"] < 0.2 for stats in record["features"].values())
        assert record["monitored_timestamps"] == 96 and record["timestamps"] == 48
    assert read_request(job, "all") is None


def test_sustained_drift_requests_one_retrain_per_champion(isolated: Path) -> None:
    data = hourly(26, seed=1)
    # Window 0 is normal (it gives later windows their look-back); b shifts by 4 sigma from window 1.
    job = make_job(isolated, shifted_from(data, pd.Timestamp(WINDOWS[1].start), "b", 4.0))
    run_train(job, TRAIN, run_id="train")
    champion = registry_for(job).champion(job.name, "all").version

    before, first, second = (predict_and_monitor(job, w, f"predict-{k}") for k, w in enumerate(WINDOWS[:3]))
    assert not before.due and not first.due and not second.due  # drifted, but not yet for 3 runs
    assert [r["drifted_features"] for r in read_records(job, "all")] == [[], ["b"], ["b"]]
    # Re-running an interval replaces its record: it never counts twice toward "sustained".
    again = predict_and_monitor(job, WINDOWS[2], "predict-2-again")
    assert not again.due and len(read_records(job, "all")) == 3

    third = predict_and_monitor(job, WINDOWS[3], "predict-3")
    assert third.due
    [reason] = third.reasons
    assert "sustained drift" in reason and "psi above 0.25 in the last 3 runs" in reason and "for b (" in reason
    assert "a (" not in reason
    request = read_request(job, "all")
    assert request["model_version"] == champion and request["interval_start"] == WINDOWS[3].start.isoformat()
    by_feature = {row["feature"]: row for row in third.rows}
    assert by_feature["b"]["drifted"] and by_feature["b"]["psi"] > 1.0 and by_feature["b"]["decision"] == "retrain"
    assert not by_feature["a"]["drifted"]

    # The same champion is not reported again run after run, nor when the interval is re-run.
    assert not predict_and_monitor(job, WINDOWS[4], "predict-4").due
    assert not predict_and_monitor(job, WINDOWS[3], "predict-3-again").due
    assert [r["interval_start"] for r in read_records(job, "all")] == [w.start.isoformat() for w in WINDOWS[:5]]

    # A retrain on the drifted data. seasonal_mad's causal level follows the shift, so the old
    # champion forecasts the held-back tail as well and keeps serving (never a worse model); the
    # new version is promoted by hand here, as an operator (or a tie) would. Its own records
    # then start afresh, against its own reference.
    run_train(job, Window(WINDOWS[1].start, WINDOWS[4].end), run_id="retrain")
    registry = registry_for(job)
    new = registry.versions(job.name, "all")[-1].version
    registry.promote(job.name, "all", new)
    assert new != champion
    after = predict_and_monitor(job, WINDOWS[5], "predict-5")
    assert not after.due
    latest = read_records(job, "all")[-1]
    assert latest["model_version"] == new and latest["features"]["b"]["psi"] < 0.25


def test_a_retry_of_the_run_that_asked_for_a_retrain_asks_again(isolated: Path) -> None:
    # The asset event is emitted only when the monitor task succeeds: a failure after the request
    # was written (a later series, the XCom push, a lost worker) retries the task, and the retry
    # found "retrain already requested" and skipped: no retrain was ever triggered.
    data = hourly(26, seed=1)
    job = make_job(isolated, shifted_from(data, pd.Timestamp(WINDOWS[1].start), "b", 4.0))
    run_train(job, TRAIN, run_id="train")
    due = [predict_and_monitor(job, w, f"predict-{k}").due for k, w in enumerate(WINDOWS[:4])]
    assert due == [False, False, False, True]

    retry = monitor_window(job, WINDOWS[3], run_id="predict-3")
    assert retry.due and "sustained drift" in retry.reasons[0]
    assert read_request(job, "all")["run_id"] == "predict-3"
    # Any other run still does not ask again for this champion.
    assert not monitor_window(job, WINDOWS[3], run_id="predict-3-again").due
    assert not predict_and_monitor(job, WINDOWS[4], "predict-4").due


def test_a_drift_that_outlasts_the_retrain_is_reported_again(isolated: Path) -> None:
    data = hourly(26, seed=1)
    job = make_job(isolated, shifted_from(data, pd.Timestamp(WINDOWS[1].start), "b", 4.0), repeat_after_runs=2)
    run_train(job, TRAIN, run_id="train")
    due = [predict_and_monitor(job, w, f"predict-{k}").due for k, w in enumerate(WINDOWS)]
    # Due after three drifted runs; then quiet for repeat_after_runs (2) runs of the same champion.
    assert due == [False, False, False, True, False, True]
    assert read_request(job, "all")["interval_start"] == WINDOWS[5].start.isoformat()


def test_an_anomaly_rate_far_above_the_calibrated_one_requests_a_retrain(isolated: Path) -> None:
    data = hourly(24, seed=2)
    after = data["timestamp"] >= pd.Timestamp(WINDOWS[0].start)
    spikes = after & (np.arange(len(data)) % 6 == 0)  # one hour in six, far out of range
    data.loc[spikes, "a"] += 40
    # Drift alone cannot decide here: only the rate rule can ask for a retrain.
    job = make_job(isolated, data, drift_threshold=1000.0)
    run_train(job, TRAIN, run_id="train")
    results = [predict_and_monitor(job, w, f"predict-{k}") for k, w in enumerate(WINDOWS[:4])]
    # The first window has too few timestamps for a test (min_rows); the next three are far.
    assert [r.due for r in results] == [False, False, False, True]
    assert "anomaly rate far above the calibrated" in results[3].reasons[0]
    record = read_records(job, "all")[-1]
    assert record["rate_far"] and record["anomaly_rate"] > 0.15 > 3 * record["calibrated_anomaly_rate"]
    assert record["rate_p_value"] < 0.001


@pytest.mark.parametrize("recorded", [float("nan"), None, float("inf"), -0.1, 1.5, "0.1", True])
def test_a_recorded_rate_that_is_no_rate_is_not_monitored(recorded) -> None:
    # NaN passed max() into scipy's binomial test ("p (nan) must be in range [0, 1]") and failed
    # the monitor task; a null read back from metadata raised TypeError.
    assert calibrated_rate(recorded, 100) is None
    assert calibrated_rate(0.0, 100) == 0.01 and calibrated_rate(0.2, 100) == 0.2


def test_a_champion_without_a_usable_rate_is_monitored_for_drift_and_says_why_not_its_rate(isolated: Path) -> None:
    data = hourly(24, seed=2)
    job = make_job(isolated, data, drift_threshold=1000.0)
    run_train(job, TRAIN, run_id="train")
    registry = registry_for(job)
    version = registry.champion(job.name, "all")
    path = Path(registry._url(job.name, "all", "versions", version.version, "metadata.json"))
    metadata = json.loads(path.read_text())
    metadata["monitoring"]["calibrated_anomaly_rate"] = None
    metadata["metrics"]["train_anomaly_rate"] = None  # as NaN reads back from JSON
    path.write_text(json.dumps(metadata))

    results = [predict_and_monitor(job, w, f"predict-{k}") for k, w in enumerate(WINDOWS[:2])]

    assert not any(r.due for r in results)
    record = read_records(job, "all")[-1]
    assert record["rate_p_value"] is None and record["calibrated_anomaly_rate"] is None
    assert f"model version {version.version} recorded no usable training anomaly rate" in " ".join(record["notes"])
    assert "b" in record["features"] and record["features"]["b"]["psi"] is not None


def test_a_few_anomalies_are_not_a_far_rate(isolated: Path) -> None:
    data = hourly(24, seed=3)
    data.loc[data.index[24 * 15 + 5], "a"] += 40  # one spike in the first window
    job = make_job(isolated, data, drift_threshold=1000.0)
    run_train(job, TRAIN, run_id="train")
    results = [predict_and_monitor(job, w, f"predict-{k}") for k, w in enumerate(WINDOWS[:4])]
    assert [r.due for r in results] == [False] * 4
    assert read_records(job, "all")[1]["anomalous_timestamps"] >= 1
    assert not any(r["rate_far"] for r in read_records(job, "all"))


def test_a_feature_missing_at_most_timestamps_is_not_drift(isolated: Path) -> None:
    # A sensor mostly offline from window 1 on (one value a day, from the same distribution): its
    # PSI over those four values of 96 monitored timestamps was about 5.7, and three such runs
    # asked for a retrain. One value missing from a window must not cost a feature its figures.
    data = hourly(24, seed=5)
    after = data["timestamp"] >= pd.Timestamp(WINDOWS[1].start)
    data.loc[after & (np.arange(len(data)) % 24 != 0), "b"] = np.nan
    data.loc[data.index[24 * 19 + 7], "a"] = np.nan
    job = make_job(isolated, data, validation={"max_null_fraction": 1.0})
    run_train(job, TRAIN, run_id="train")
    results = [predict_and_monitor(job, w, f"predict-{k}") for k, w in enumerate(WINDOWS[:4])]
    assert [r.due for r in results] == [False] * 4
    for record in read_records(job, "all")[1:]:
        assert record["features"]["b"]["psi"] is None and not record["features"]["b"]["drifted"]
        assert any(note.startswith("feature b: only ") and "min_rows=96" in note for note in record["notes"])
        assert record["features"]["a"]["psi"] < 0.25


def test_changed_drift_settings_apply_to_the_records_already_made(tmp_path: Path) -> None:
    # Raising drift_threshold to quiet a false alarm: the next run still asked for a retrain, from
    # the "drifted" of records made under 0.25, saying "psi above 1 ... for b (at least 0.3)".
    records = [
        {"model_version": "v1", "interval_start": f"2024-01-0{k}", "interval_end": f"2024-01-0{k + 1}",
         "features": {"b": {"psi": 0.3, "ks": 0.1, "drifted": True}}, "drifted_features": ["b"],
         "anomaly_rate": 0.1, "calibrated_anomaly_rate": 0.02, "rate_p_value": 1e-5, "rate_far": True}
        for k in range(1, 4)
    ]
    data = hourly(1, seed=0)
    assert "for b (at least 0.3)" in retrain_reason(make_job(tmp_path, data), records, "v1")
    quiet = {"drift_threshold": 1.0, "rate_factor": 10.0}
    assert retrain_reason(make_job(tmp_path, data, **quiet), records, "v1") is None
    assert retrain_reason(make_job(tmp_path, data, statistic="ks", rate_p_value=1e-6), records, "v1") is None
    assert "anomaly rate far above" in retrain_reason(make_job(tmp_path, data, drift_threshold=1.0), records, "v1")
    assert "ks above 0.05" in retrain_reason(make_job(tmp_path, data, statistic="ks", drift_threshold=0.05), records, "v1")


def test_disabled_monitoring_records_nothing(isolated: Path) -> None:
    job = make_job(isolated, hourly(24, seed=0), enabled=False)
    run_train(job, TRAIN, run_id="train")
    result = predict_and_monitor(job, WINDOWS[0], "predict")
    assert not result.due and "disabled" in result.reasons[0]
    assert read_records(job, "all") == []


def test_bad_monitoring_settings_name_the_field(tmp_path: Path) -> None:
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match=r"monitoring\.sustained_runs: Input should be greater than or equal to 1"):
        make_job(tmp_path, hourly(1, seed=0), sustained_runs=0)
    with pytest.raises(ConfigError, match=r"monitoring\.statistic: .*'psi' or 'ks'"):
        make_job(tmp_path, hourly(1, seed=0), statistic="wasserstein")
    assert make_job(tmp_path, hourly(1, seed=0), statistic="ks").monitoring.threshold == 0.2


@pytest.mark.parametrize(
    ("content", "said"),
    [('{"job": "monitored", "ser', "is not valid JSON"), ("[]", "holds no JSON object"),
     ('{"job": "monitored"}', "lacks interval_start, interval_end, model_version, features")],
    ids=["cut-short", "array", "other-object"],
)
def test_a_monitoring_file_that_is_not_a_record_names_the_job_the_series_and_the_file(
    tmp_path: Path, content: str, said: str
) -> None:
    # A record or retrain request edited by hand (or cut short by a copy) failed every later
    # monitor run with a bare JSONDecodeError, KeyError or TypeError, naming no job or file.
    from pipelines.errors import ConfigError
    from pipelines.monitoring import record_path

    job = make_job(tmp_path, hourly(1, seed=0))
    record = Path(record_path(job, "region=eu", WINDOWS[0]))
    record.parent.mkdir(parents=True)
    record.write_text(content)
    with pytest.raises(ConfigError, match=rf"job monitored, series region=eu: the monitoring file {record} {said}.*; delete it \("):
        read_records(job, "region=eu")
    record.unlink()
    request = record.parents[1] / "retrain_request.json"
    request.write_text(content)
    with pytest.raises(ConfigError, match=rf"the monitoring file {request} .*; delete it \(a retrain still due is requested again"):
        read_request(job, "region=eu")
