"""Review of the score calibration: missing raw scores and the tail's inverse in surprises."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.detectors.calibration import ScoreCalibrator


@pytest.mark.parametrize("training", [np.full(100, 3.0), np.array([1.0, 2.0]), np.zeros(50)])
def test_a_missing_raw_score_stays_missing_when_training_scores_tie(training: np.ndarray) -> None:
    # With one knot (every training score tied) np.interp gave NaN the knot's value: a missing
    # raw score was calibrated to 0, a normal point, instead of staying missing.
    calibrator = ScoreCalibrator().fit(training)
    scores = calibrator.transform(np.array([np.nan, training[0]]))
    assert np.isnan(scores[0]) and scores[1] == 0.0
    assert np.isnan(calibrator.surprise(np.array([np.nan]))[0])


@pytest.mark.parametrize("surprise", [0.05, 1.0, 2.0, 5.0, 40.0, 300.0])
def test_raw_at_surprise_is_where_the_surprise_is_reached(surprise: float) -> None:
    calibrator = ScoreCalibrator().fit(np.abs(np.random.default_rng(0).normal(size=2000)))
    raw = calibrator.raw_at_surprise(surprise)
    assert np.isfinite(raw)
    assert float(calibrator.surprise(np.array(raw))) == pytest.approx(surprise, rel=1e-9)
    assert float(calibrator.surprise(np.array(raw - 1e-6 * max(abs(raw), 1.0)))) < surprise
    assert calibrator.raw_at_surprise(np.inf) == np.inf
