"""A lone spike is one row far off, not the start of a level shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.level_shift import LevelShiftDetector


@pytest.fixture(scope="module")
def series() -> tuple[pd.DataFrame, pd.DataFrame]:
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(28, seed=6)
    return frame.iloc[: 24 * 21], frame.iloc[24 * 21 :]


@pytest.mark.parametrize("column", [0, 1])
@pytest.mark.parametrize("sigmas", [6.0, -30.0])
def test_the_rows_after_a_spike_alarm_as_if_it_were_missing(series, column: int, sigmas: float) -> None:
    # Clipped at 3, a spike still brought the evidence of a residual of 3 to the 24 rows after it:
    # mildly high rows among them alarmed for it, up to 3 rows after one spike here.
    train, test = series
    detector = LevelShiftDetector().fit(train)
    extra = {}
    for row in range(10, 140, 5):
        spiked, missing = test.copy(), test.copy()
        spiked.iloc[row, column] += sigmas * train.iloc[:, column].std()
        missing.iloc[row, column] = np.nan
        flagged = detector.detect(spiked, history=train).is_anomaly[:, column]
        baseline = detector.detect(missing, history=train).is_anomaly[:, column]
        assert flagged[row]
        after = flagged[row + 1 : row + 25] & ~baseline[row + 1 : row + 25]
        if after.any():
            extra[row] = int(after.sum())
    assert extra == {}


def test_a_run_of_far_off_rows_still_builds_evidence(series) -> None:
    # Only a lone spike is dropped from the shift test: two far-off rows in a row may be a shift.
    train, test = series
    detector = LevelShiftDetector().fit(train)
    raw = detector._raw(np.array([[0.0], [8.0], [8.0], [1.0], [0.0]]))
    lone = detector._raw(np.array([[0.0], [0.0], [8.0], [1.0], [0.0]]))
    assert raw[3, 0] > lone[3, 0] > 0
