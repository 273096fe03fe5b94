"""Seasons on a local clock: ``time_zone`` of seasonal_mad and level_shift."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pipelines.config import parse_job
from pipelines.detectors.level_shift import LevelShiftDetector
from pipelines.detectors.seasonal_mad import SeasonalMADDetector
from pipelines.errors import ConfigError
from tests.pipelines.detectors.test_params import _job


def _business_hours(start: str, end: str) -> pd.DataFrame:
    # Traffic from 08:00 to 18:00 on the Berlin clock, 15-minute rows.
    index = pd.date_range(start, end, freq="15min", tz="UTC")
    local = index.tz_convert("Europe/Berlin")
    hour = (local.hour + local.minute / 60).to_numpy()
    values = np.where((hour >= 8) & (hour < 18), 100.0, 10.0) + np.random.default_rng(0).normal(scale=2, size=len(index))
    return pd.DataFrame({"a": values}, index=index)


@pytest.mark.parametrize("cls", [SeasonalMADDetector, LevelShiftDetector])
@pytest.mark.parametrize(("start", "change", "end"), [("2024-02-15", "2024-03-24", "2024-04-10"), ("2024-09-15", "2024-10-20", "2024-11-10")])
def test_a_series_on_a_local_clock_keeps_its_daily_shape_across_a_clock_change(cls, start: str, change: str, end: str) -> None:
    # Slots in UTC moved the business day an hour against its profile at each change: 8 to 17
    # false alarms a day for weeks after it.
    logging.disable(logging.WARNING)
    try:
        frame = _business_hours(start, end)
        cut = frame.index.searchsorted(pd.Timestamp(change, tz="UTC"))
        daily = {}
        for zone in ("UTC", "Europe/Berlin"):
            detector = cls(season="1d", time_zone=zone).fit(frame.iloc[:cut])
            flags = detector.detect(frame.iloc[cut:], history=frame.iloc[:cut]).is_anomaly[:, 0]
            daily[zone] = flags.sum() / ((len(frame) - cut) / 96)
    finally:
        logging.disable(logging.NOTSET)
    assert daily["UTC"] > 4 and daily["Europe/Berlin"] < 1, daily


def test_the_time_zone_survives_saving() -> None:
    frame = _business_hours("2024-02-15", "2024-03-24")
    detector = SeasonalMADDetector(season="1d", time_zone="Europe/Berlin").fit(frame)
    loaded = SeasonalMADDetector.from_files(detector.to_files())
    later = _business_hours("2024-03-24", "2024-04-05").iloc[1:]
    assert loaded.time_zone == "Europe/Berlin"
    np.testing.assert_array_equal(loaded.detect(later, history=frame).score, detector.detect(later, history=frame).score)


@pytest.mark.parametrize("kind", ["seasonal_mad", "level_shift"])
def test_an_unknown_time_zone_is_refused_with_the_closest_names(kind: str) -> None:
    with pytest.raises(ConfigError, match=r"time_zone.*not an IANA time zone name.*did you mean 'Europe/Berlin'"):
        parse_job(_job(kind, {"time_zone": "europe/berlin "}), source="web.yaml")
