"""Where MSET's sequential tests restart: the raw score at which one signal alone makes the row an
alarm. mset solves it from the calibrations' tails itself; should their form change (a heavier
tail was tried), the levels must follow, or the tests restart on rows that are no alarm (a level
shift of 7 noise sigmas was then flagged on 2 of 30 rows instead of one in two)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.mset import MSETDetector


@pytest.mark.parametrize("threshold", [("contamination", 0.005), ("score", 0.999999)])
def test_the_restart_level_is_where_one_signal_alone_reaches_the_threshold(threshold) -> None:
    rng = np.random.default_rng(3)
    rows = 3000
    load = np.sin(np.arange(rows) / 25)
    frame = pd.DataFrame(
        {f"s{i}": (i + 1) * load + 0.2 * rng.standard_t(3, size=rows) for i in range(3)},
        index=pd.date_range("2026-01-01", periods=rows, freq="min", tz="UTC"),
    )
    detector = MSETDetector(threshold_kind=threshold[0], threshold_value=threshold[1]).fit(frame)
    levels = detector._restart_levels(detector.threshold_)
    for calibrator, level in zip(detector.feature_calibrators_, levels, strict=True):
        at, below = detector.row_calibrator_.transform(calibrator.surprise(np.array([level, level - 1e-9 * abs(level)])))
        assert at >= detector.threshold_ * (1 - 1e-12) and below < detector.threshold_
