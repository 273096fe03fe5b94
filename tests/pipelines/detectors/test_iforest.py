from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.preprocessing import FunctionTransformer

from pipelines.detectors import load_detector
from pipelines.detectors.iforest import IsolationForestDetector
from pipelines.errors import ModelError

SPIKE_ROWS = [9, 40, 77, 118, 151]

# Deprecations and future changes that our own code triggers (pandas attributes its warnings to
# the caller) are errors here: pyproject.toml ignores DeprecationWarning for third-party noise,
# which hid pandas 3.1's Pandas4Warning for DatetimeIndex.dayofweek in the calendar features.
# Warnings raised inside prophet or scikit-learn are attributed to them and stay ignored.
pytestmark = [
    pytest.mark.filterwarnings(r"error::DeprecationWarning:pipelines\."),
    pytest.mark.filterwarnings(r"error::PendingDeprecationWarning:pipelines\."),
    pytest.mark.filterwarnings(r"error::FutureWarning:pipelines\."),
]


@pytest.fixture
def series(split_series: Callable) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_series(seed=2, amplitude=2.0)


@pytest.fixture
def detector(series) -> IsolationForestDetector:
    return IsolationForestDetector().fit(series[0])


def spiked(frame: pd.DataFrame, column: int, size: float = 8.0) -> pd.DataFrame:
    out = frame.copy()
    out.iloc[SPIKE_ROWS, column] += size
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("column", [0, 1])
def test_flags_injected_spikes(split_series: Callable, seed: int, column: int) -> None:
    train, test = split_series(seed=seed, amplitude=2.0)
    detector = IsolationForestDetector().fit(train)
    assert detector.detect(spiked(test, column), history=train).is_anomaly[SPIKE_ROWS, column].sum() >= 4  # of 5


def test_quiet_on_clean_data(detector: IsolationForestDetector, series) -> None:
    train, test = series
    assert detector.detect(test, history=train).is_anomaly.any(axis=1).mean() <= 0.02


@pytest.mark.parametrize("column", [0, 1])
def test_feature_score_points_at_the_disturbed_feature(detector: IsolationForestDetector, series, column: int) -> None:
    train, test = series
    detection = detector.detect(spiked(test, column), history=train)
    other = 1 - column
    assert np.all(detection.feature_score[SPIKE_ROWS, column] > detection.feature_score[SPIKE_ROWS, other])
    assert np.all(detection.feature_score[SPIKE_ROWS, column] >= detector.threshold_)


def test_the_row_decides_for_every_feature(detector: IsolationForestDetector, series) -> None:
    train, test = series
    detection = detector.detect(spiked(test, 0), history=train)
    np.testing.assert_array_equal(detection.score[:, 0], detection.score[:, 1])
    np.testing.assert_array_equal(detection.is_anomaly[:, 0], detection.is_anomaly[:, 1])
    np.testing.assert_array_equal(detection.is_anomaly[:, 0], detection.score[:, 0] >= detector.threshold_)


def test_band_is_where_the_feature_score_reaches_the_threshold(detector: IsolationForestDetector, series) -> None:
    train, test = series
    detection = detector.detect(spiked(test, 0, size=4.0), history=train)
    outside = (detection.values < detection.lower) | (detection.values > detection.upper)
    np.testing.assert_array_equal(outside, detection.feature_score >= detector.threshold_)


def test_expected_is_the_median_of_the_previous_window(detector: IsolationForestDetector, series) -> None:
    train, test = series
    detection = detector.detect(test, history=train)
    assert detection.expected[0, 0] == train["a"].iloc[-24:].median()
    assert detection.expected[30, 1] == test["b"].iloc[6:30].median()


def test_warm_up_without_history_scores_every_row(series) -> None:
    train, _ = series
    detection = IsolationForestDetector(n_estimators=50).fit(train).detect(train.iloc[:30])
    assert not np.isnan(detection.score).any() and not np.isnan(detection.feature_score).any()
    assert detection.expected[0, 0] == train["a"].iloc[0]


def test_summary_describes_the_forest(detector: IsolationForestDetector) -> None:
    summary = detector.summary()
    assert summary["n_estimators"] == 200 and summary["max_samples"] == 256
    assert summary["calibration_rows"] == detector.calibration_rows_ == int(detector.training_rows_ * 0.2)


def test_calibration_adds_scores_of_rows_the_forest_did_not_see(series, monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = series
    held_back = IsolationForestDetector().fit(train)
    monkeypatch.setattr("pipelines.detectors.calibration.HELD_BACK_FRACTION", 0.0)
    in_sample = IsolationForestDetector().fit(train)
    assert in_sample.calibration_rows_ == 0 and held_back.calibration_rows_ > 0
    # The same forest serves; only its calibration differs.
    forest_scores = [d.model_.score_samples(d.features(test)) for d in (held_back, in_sample)]
    np.testing.assert_array_equal(*forest_scores)
    assert not np.array_equal(held_back.detect(test, history=train).score, in_sample.detect(test, history=train).score)
    assert load_detector("iforest", held_back.to_files()).calibration_rows_ == held_back.calibration_rows_
    # A window too short to spare 50 rows calibrates on the rows it fitted.
    assert IsolationForestDetector().fit(train.iloc[:200]).calibration_rows_ == 0


def test_artifact_holds_the_model_as_skops(detector: IsolationForestDetector) -> None:
    files = detector.to_files()
    assert set(files) == {"detector.json", "arrays.npz", "model.skops"}
    assert skops.io.get_untrusted_types(data=files["model.skops"]) == ["numpy.dtype", "sklearn.tree._tree.Tree"]


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (lambda files: {k: v for k, v in files.items() if k != "model.skops"}, "lacks model.skops"),
        (lambda files: {**files, "model.skops": b"not a zip"}, "cannot load the iforest model"),
        (
            lambda files: {**files, "model.skops": skops.io.dumps(FunctionTransformer(func=print))},
            "cannot load the iforest model from model.skops: .*builtins.print",
        ),
    ],
    ids=["missing", "damaged", "untrusted"],
)
def test_bad_model_file_is_refused(detector: IsolationForestDetector, replace: Callable, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_detector("iforest", replace(detector.to_files()))


# -- warm start ---------------------------------------------------------------------------------------


def holdout_error(detector, history: pd.DataFrame, test: pd.DataFrame) -> float:
    detection = detector.detect(test, history=history)
    return float(np.nanmean(np.abs(detection.values - detection.expected)))


def test_warm_start_adds_trees_to_the_champions_forest(split_series: Callable) -> None:
    old, _ = split_series(seed=0)
    new, test = split_series(seed=1)
    champion = IsolationForestDetector(n_estimators=40).fit(old)
    before = [tree.tree_.threshold.copy() for tree in champion.model_[-1].estimators_]
    warm = IsolationForestDetector(n_estimators=40).fit(new, warm_start=champion)

    assert warm.warm_started_ and not champion.warm_started_
    trees = warm.model_[-1].estimators_
    assert len(trees) == 60  # the champion's 40 and half a forest more, grown on the new rows
    for kept, original in zip(trees[:40], before, strict=True):
        np.testing.assert_array_equal(kept.tree_.threshold, original)
    # The champion's scaler is kept (its trees split in that space); the champion is untouched.
    np.testing.assert_array_equal(warm.model_[0].center_, champion.model_[0].center_)
    assert len(champion.model_[-1].estimators_) == 40
    # As good as a cold fit on the same rows: quiet on clean data, same forecast of the tail.
    cold = IsolationForestDetector(n_estimators=40).fit(new)
    assert warm.detect(test, history=new).is_anomaly.mean() <= 0.02
    assert holdout_error(warm, new, test) == pytest.approx(holdout_error(cold, new, test), rel=0.05)
    for column in (0, 1):
        found = [d.detect(spiked(test, column), history=new).is_anomaly[SPIKE_ROWS, column].sum() for d in (warm, cold)]
        assert found[0] >= max(found[1], 4)  # of 5, as in test_flags_injected_spikes
    assert load_detector("iforest", warm.to_files()).warm_started_


def test_warm_start_needs_the_same_parameters_and_stays_bounded(split_series: Callable) -> None:
    old, _ = split_series(seed=0)
    new, _ = split_series(seed=1)
    champion = IsolationForestDetector(n_estimators=40).fit(old)
    other = IsolationForestDetector(n_estimators=40, window=12).fit(new, warm_start=champion)
    assert not other.warm_started_ and len(other.model_[-1].estimators_) == 40
    grown = IsolationForestDetector(n_estimators=40).fit(new, warm_start=champion)
    grown = IsolationForestDetector(n_estimators=40).fit(old, warm_start=grown)
    assert len(grown.model_[-1].estimators_) == 80
    # Twice n_estimators is the most a warm start keeps: the next fit is cold.
    fresh = IsolationForestDetector(n_estimators=40).fit(new, warm_start=grown)
    assert not fresh.warm_started_ and len(fresh.model_[-1].estimators_) == 40


def test_a_model_saved_asking_for_window_rows_of_history_asks_for_what_its_fill_reads(detector, series) -> None:
    import json

    train, test = series
    files = detector.to_files()
    meta = json.loads(files["detector.json"])
    meta["learned"]["lookback_"] = detector.window + detector.lags  # as saved before 2026-12-06
    old = load_detector("iforest", {**files, "detector.json": json.dumps(meta).encode()})
    # The window features read window + lags rows back, and a missing value among them is carried
    # from as far again: scoring in pieces needs both as history.
    assert old.lookback_ == detector.lookback_ == 2 * (detector.window + detector.lags)
    np.testing.assert_array_equal(old.detect(test, history=train).score, detector.detect(test, history=train).score)


def test_values_just_below_the_infinite_cut_are_scored() -> None:
    # Such values are measurements, but the rolling spread of a window of them overflowed and
    # scikit-learn refused the fit ("Input X contains infinity").
    X = pd.DataFrame({"a": np.random.default_rng(0).normal(size=200) * 5e153}, index=pd.RangeIndex(200))
    detector = IsolationForestDetector(n_estimators=10, window=6).fit(X)
    scores = detector.detect(X).score
    assert np.isfinite(scores).all() and scores.min() >= 0.0 and scores.max() <= 1.0
