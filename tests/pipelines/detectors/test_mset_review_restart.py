"""MSET over calibrated tails. Where its sequential tests restart: the raw score at which one signal alone makes the row an
alarm. mset solves it from the calibrations' tails itself; should their form change (a heavier
tail was tried), the levels must follow, or the tests restart on rows that are no alarm (a level
shift of 7 noise sigmas was then flagged on 2 of 30 rows instead of one in two)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.mset import MSETDetector


def _heavy_tailed_signals(rows: int) -> pd.DataFrame:
    """Three signals of one load, with Student t(3) noise."""
    rng = np.random.default_rng(3)
    load = np.sin(np.arange(rows) / 25)
    return pd.DataFrame(
        {f"s{i}": (i + 1) * load + 0.2 * rng.standard_t(3, size=rows) for i in range(3)},
        index=pd.date_range("2026-01-01", periods=rows, freq="min", tz="UTC"),
    )


@pytest.mark.parametrize("threshold", [("contamination", 0.005), ("score", 0.999999)])
def test_the_restart_level_is_where_one_signal_alone_reaches_the_threshold(threshold) -> None:
    frame = _heavy_tailed_signals(3000)
    detector = MSETDetector(threshold_kind=threshold[0], threshold_value=threshold[1]).fit(frame)
    levels = detector._restart_levels(detector.threshold_)
    for calibrator, level in zip(detector.feature_calibrators_, levels, strict=True):
        at, below = detector.row_calibrator_.transform(calibrator.surprise(np.array([level, level - 1e-9 * abs(level)])))
        assert at >= detector.threshold_ * (1 - 1e-12) and below < detector.threshold_


def test_a_far_spike_on_heavy_tailed_signals_is_an_anomaly_at_a_strict_threshold() -> None:
    # The row's score calibrates the largest of the signals' surprises, exponential by construction.
    # Fitted a tail shape of its own (0.36 here), composed with a signal's (0.39), it put that
    # signal's alarm at a raw score of 3e24 for a threshold of 0.999999: no spike would ever reach it.
    frame = _heavy_tailed_signals(3300)
    train, test = frame.iloc[:3000], frame.iloc[3000:].copy()
    detector = MSETDetector(threshold_kind="score", threshold_value=0.999999).fit(train)
    assert detector.row_calibrator_.tail_shape_ == 0.0
    assert np.isfinite(detector._restart_levels(detector.threshold_)).all()
    test.iloc[150, 1] += 300 * 0.2 * detector.residual_scale_[1]
    detection = detector.detect(test, history=train)
    assert detection.is_anomaly[150, 0]
    assert detection.feature_score[150].argmax() == 1


def test_a_lone_value_just_outside_the_bounds_is_flagged_and_just_inside_is_not() -> None:
    # The bounds came from each signal's own calibration, 15 % inside where the row alarms: values
    # between were shown outside the bounds yet not flagged.
    frame = _heavy_tailed_signals(3300)
    train, test = frame.iloc[:3000], frame.iloc[3000:]
    detector = MSETDetector().fit(train)
    clean = detector.detect(test, history=train)
    row = int(np.argmin(clean.score[100:200])) + 100  # a quiet row, no evidence carried into it
    for factor, flagged in ((1.02, True), (0.98, False)):
        disturbed = test.copy()
        expected, upper = clean.expected[row, 1], clean.upper[row, 1]
        disturbed.iloc[row, 1] = expected + factor * (upper - expected)
        detection = detector.detect(disturbed, history=train)
        assert detection.is_anomaly[row, 0] == flagged, (factor, detection.score[row])
