from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.level_shift import LevelShiftDetector
from pipelines.detectors.seasonal_mad import SeasonalMADDetector


@pytest.fixture(scope="module")
def series() -> tuple[pd.DataFrame, pd.DataFrame]:
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(28, seed=5)
    return frame.iloc[: 24 * 21], frame.iloc[24 * 21 :]


def test_finds_a_shift_too_small_for_any_single_point(series) -> None:
    train, test = series
    shifted = test.copy()
    shifted.iloc[60:, 0] += 1.5  # 1.5 noise sigmas: every point stays inside its normal spread
    change = LevelShiftDetector().fit(train).detect(shifted, history=train).is_anomaly[:, 0]
    pointwise = SeasonalMADDetector().fit(train).detect(shifted, history=train).is_anomaly[:, 0]
    assert change[60:72].sum() >= 4  # found, and kept flagged, within half a day
    assert pointwise[60:72].sum() <= 1
    # Once the level has absorbed the new normal, the flags stop.
    assert change[110:].mean() <= 0.03


def test_still_flags_spikes_and_stays_quiet_on_clean_data(series) -> None:
    train, test = series
    detector = LevelShiftDetector().fit(train)
    assert detector.detect(test, history=train).is_anomaly.mean() <= 0.02
    spiked = test.copy()
    spiked.iloc[[20, 90], 1] += 8.0
    assert detector.detect(spiked, history=train).is_anomaly[[20, 90], 1].all()


def test_bounds_are_where_a_lone_point_would_be_flagged(series) -> None:
    train, test = series
    detector = LevelShiftDetector().fit(train)
    calm = test.iloc[:48]
    detection = detector.detect(calm, history=train)
    row = 30
    expected, upper = detection.expected[row, 0], detection.upper[row, 0]
    flagged = {}
    for where in (0.5, 1.02):
        probe = calm.copy()
        probe.iloc[row, 0] = expected + where * (upper - expected)
        flagged[where] = detector.detect(probe, history=train).is_anomaly[row, 0]
    assert flagged == {0.5: False, 1.02: True}


def test_a_spike_does_not_make_the_rows_after_it_alarm(series) -> None:
    train, test = series
    detector = LevelShiftDetector().fit(train)
    spiked = test.copy()
    spiked.iloc[40, 0] += 10.0
    flagged = detector.detect(spiked, history=train).is_anomaly[:, 0]
    clean = detector.detect(test, history=train).is_anomaly[:, 0]
    assert flagged[40] and not clean[40]
    # The rows after the spike alarm exactly as they would without it.
    np.testing.assert_array_equal(flagged[41:], clean[41:])
