"""MSET and signals that change value once in training (a setting or a mode switched)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.mset import MSETDetector

TRAIN_ROWS = 1500


def plant_with_a_switch(switch_at: int, rows: int = 2000) -> pd.DataFrame:
    """Three signals driven by one load, and a setting switched from 0 to 1 at ``switch_at``
    that moves none of them."""
    rng = np.random.default_rng(0)
    index = pd.date_range("2026-01-01", periods=rows, freq="min", tz="UTC")
    load = np.sin(np.arange(rows) / 20) + 0.3 * rng.normal(size=rows)
    return pd.DataFrame(
        {
            "a": 3 * load + 0.2 * rng.normal(size=rows),
            "b": -2 * load + 0.2 * rng.normal(size=rows),
            "c": load + 0.2 * rng.normal(size=rows),
            "setting": np.where(np.arange(rows) < switch_at, 0.0, 1.0),
        },
        index=index,
    )


@pytest.mark.parametrize("switch_at", [750, 1455])
def test_a_setting_switched_in_training_is_dropped_and_does_not_skew_the_others(switch_at: int) -> None:
    frame = plant_with_a_switch(switch_at)
    train, test = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:]
    detector = MSETDetector().fit(train)
    assert list(detector.signals_) == ["a", "b", "c"]
    assert detector.dropped_signals_["setting"].startswith(
        f"changes once in training, from 0.0 to 1.0 at {frame.index[switch_at]}: a step"
    )
    assert detector.summary()["dropped_signals"] == detector.dropped_signals_
    detection = detector.detect(test, history=train)
    # Kept, the few memory states after a late switch weighed a's and c's estimates on every
    # scored row (all after it): 40% of the clean rows were flagged, blamed on them.
    assert detection.is_anomaly[:, 0].mean() <= 0.01
    assert np.isnan(detection.expected[:, 3]).all() and (detection.feature_score[:, 3] == 0).all()
    again = MSETDetector.from_files(detector.to_files())
    assert again.dropped_signals_ == detector.dropped_signals_
    assert np.array_equal(again.detect(test, history=train).score, detection.score)


def test_a_signal_that_switches_more_than_once_is_kept() -> None:
    frame = plant_with_a_switch(1455)
    frame.iloc[1470:, 3] = 0.0  # switched back
    assert "setting" in MSETDetector().fit(frame.iloc[:TRAIN_ROWS]).signals_


def test_a_lone_step_is_kept_and_estimated_from_its_own_past() -> None:
    frame = plant_with_a_switch(750)[["setting"]]
    frame["gone"] = 3.0
    detector = MSETDetector().fit(frame.iloc[:TRAIN_ROWS])
    assert list(detector.signals_) == ["setting"] and list(detector.dropped_signals_) == ["gone"]


def test_a_step_left_alone_by_a_signal_that_cannot_be_measured_is_kept() -> None:
    # "b" reports in the last fifth of training only, so it is dropped in a second fit: the step is
    # then the only signal left, and is modelled from its own past as if it had been alone.
    frame = plant_with_a_switch(750).iloc[:TRAIN_ROWS][["setting", "b"]].copy()
    frame.iloc[:1200, 1] = np.nan
    detector = MSETDetector(max_missing=0.9).fit(frame)
    assert list(detector.signals_) == ["setting"] and list(detector.dropped_signals_) == ["b"]


def test_a_step_signal_at_a_value_never_seen_in_training_is_an_anomaly() -> None:
    # An error counter that left 0 once in training: leaving 1 is a change, going back to 0 is not.
    frame = plant_with_a_switch(1455)
    train, test = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:].copy()
    test.iloc[100:110, 3] = 0.0
    test.iloc[200, 3] = 2.0
    test.iloc[300, 3] = np.nan
    detector = MSETDetector().fit(train)
    assert detector.step_values_ == {"setting": [0.0, 1.0]}
    detection = detector.detect(test, history=train)
    assert list(np.flatnonzero(detection.is_anomaly[:, 0])) == [200]
    assert detection.feature_score[200, 3] == 1.0 and (detection.score[200] == 1.0).all()
    assert np.isnan(detection.expected[200, 3])
    again = MSETDetector.from_files(detector.to_files())
    assert again.step_values_ == detector.step_values_
    assert np.array_equal(again.detect(test, history=train).score, detection.score)
