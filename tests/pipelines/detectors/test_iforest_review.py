"""Review of the Isolation Forest detector as a user running ``model: iforest`` on sensor data sees it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.iforest import IsolationForestDetector
from pipelines.errors import ModelError

pytestmark = [
    pytest.mark.filterwarnings(r"error::DeprecationWarning:pipelines\."),
    pytest.mark.filterwarnings(r"error::FutureWarning:pipelines\."),
]


def test_days_a_sensor_was_offline_do_not_make_its_real_values_outliers(split_series: Callable) -> None:
    """Whole days without a value (longer than the forward fill) are filled with the training
    median to compute the features around them; fitted and calibrated on as if measured, that one
    made-up point was most of the forest's sample and of the calibration, and clean rows scored
    later were flagged six times as often as the threshold was set for."""
    train, test = split_series(seed=0, train_days=35)
    offline = train.copy()
    for day in np.random.default_rng(1).choice(35, 24, replace=False):
        offline.iloc[24 * day : 24 * (day + 1)] = np.nan
    detector = IsolationForestDetector().fit(offline)
    assert detector.detect(test, history=train).is_anomaly.any(axis=1).mean() <= 0.01
    # The rows without a value count for no threshold: the training rate is of rows with one.
    assert np.isfinite(list(detector.training_score_quantiles_.values())).all()


def test_too_few_rows_with_a_value_are_refused_naming_the_counts(split_series: Callable) -> None:
    # 48 rows passed the rows check with 10 of them measured: the forest and its calibration
    # learned from the median filled into the other 38, and the threshold described made-up rows.
    train, _ = split_series(seed=0, train_days=2)
    train.iloc[10:] = np.nan
    with pytest.raises(ModelError, match=r"at least 20 training rows with a value .*got 10 of 48 rows.*Widen the training window"):
        IsolationForestDetector().fit(train)


def test_calendar_parts_are_utc_in_training_and_scoring_whatever_zone_the_rows_carry(split_series: Callable) -> None:
    # Reviewed, not a fix: rows given in a local zone across a daylight-saving change are scored
    # as their UTC instants are (the detector has no time zone of its own; see features.py).
    train, test = split_series(seed=0, train_days=80)  # training to 2024-03-21 spans New York's change on 03-10
    local = IsolationForestDetector(n_estimators=50).fit(train.tz_convert("America/New_York"))
    utc = IsolationForestDetector(n_estimators=50).fit(train)
    scored = local.detect(test.tz_convert("America/New_York"), history=train.tz_convert("Europe/Paris"))
    np.testing.assert_array_equal(scored.score, utc.detect(test, history=train).score)
    assert str(scored.index.tz) == "UTC"


def test_calendar_parts_follow_the_time_zone_given() -> None:
    from pipelines.detectors.features import window_features

    index = pd.DatetimeIndex(["2024-03-30 08:00", "2024-04-01 07:00"], tz="UTC")  # 09:00 in Berlin, before and after the change
    frame = pd.DataFrame({"a": [1.0, 2.0]}, index=index)
    utc = window_features(frame, 2, calendar=True)
    local = window_features(frame, 2, calendar=True, time_zone="Europe/Berlin")
    assert utc["calendar:hour_sin"].iloc[0] != utc["calendar:hour_sin"].iloc[1]
    assert local["calendar:hour_sin"].iloc[0] == pytest.approx(local["calendar:hour_sin"].iloc[1])
    assert local["calendar:hour_sin"].iloc[0] == pytest.approx(np.sin(2 * np.pi * 9 / 24))
    detector = IsolationForestDetector(time_zone="Europe/Berlin", n_estimators=20)
    train = pd.DataFrame({"a": np.sin(np.arange(200) / 5)}, index=pd.date_range("2024-03-25", periods=200, freq="h", tz="UTC"))
    assert IsolationForestDetector.from_files(detector.fit(train).to_files()).time_zone == "Europe/Berlin"
