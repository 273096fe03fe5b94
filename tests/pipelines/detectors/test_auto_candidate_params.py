"""``model: auto``'s ``candidate_params``: a candidate's own parameters, such as Prophet's time zone and holidays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import load_detector, make_detector
from pipelines.detectors.auto import AutoDetector
from pipelines.errors import ConfigError

pytest.importorskip("prophet")

NEW_YORK = "America/New_York"
LOCAL_HOLIDAYS = {"prophet": {"holidays_country": "US", "time_zone": NEW_YORK}}


@pytest.fixture(scope="module")
def thanksgiving() -> tuple[pd.DataFrame, np.ndarray]:
    """Eight weeks of hourly UTC rows following New York's daily cycle, 8 sigma lower over
    Thanksgiving 2023 (local day); and the mask of that day."""
    rng = np.random.default_rng(0)
    index = pd.date_range("2023-10-16", "2023-12-11", freq="h", tz="UTC", inclusive="left")
    local = index.tz_convert(NEW_YORK)
    hours = local.hour.to_numpy()
    frame = pd.DataFrame({"visits": 10 + 3 * np.sin(2 * np.pi * hours / 24) + rng.normal(size=len(index))}, index=index)
    on_day = np.array(local.date) == pd.Timestamp("2023-11-23").date()
    frame.loc[on_day, "visits"] -= 8.0
    return frame, on_day


def _auto(**params) -> AutoDetector:
    return AutoDetector(candidates=["prophet"], prefer=None, plantings=1, stretches=1, **params)


def test_the_prophet_candidate_models_the_holidays_and_time_zone_it_is_given(thanksgiving) -> None:
    # auto made every candidate with its defaults: a job with model auto could not give Prophet
    # its holidays or local time zone, so the holiday dip was forecast as an ordinary day.
    frame, on_day = thanksgiving
    plain = _auto().fit(frame)
    local = _auto(candidate_params=LOCAL_HOLIDAYS).fit(frame)
    assert local.chosen_ == "prophet" and local.model_.get_params()["time_zone"] == NEW_YORK
    assert local.model_.models_[0].country_holidays == "US"
    week_before = np.roll(on_day, -24 * 7)

    def dip(detector: AutoDetector) -> float:
        expected = detector.detect(frame).expected[:, 0]
        return float((expected[on_day] - expected[week_before]).mean())

    assert dip(local) == pytest.approx(-8.0, abs=1.0)
    assert dip(plain) > -2.0
    assert not local.detect(frame).is_anomaly[on_day].any()

    loaded = load_detector("auto", local.to_files())
    assert loaded.get_params()["candidate_params"] == LOCAL_HOLIDAYS
    np.testing.assert_array_equal(loaded.detect(frame).expected, local.detect(frame).expected)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"candidate_params": {"prophet": {"holiday_country": "US"}}},
            r"candidate_params\.prophet\.holiday_country: unknown parameter \(check its spelling; prophet's parameters are "
            r"changepoint_prior_scale, .*holidays_country, .*time_zone",
        ),
        (
            {"candidate_params": {"prophet": {"time_zone": "America/NewYork"}}},
            r"candidate_params\.prophet\.time_zone: not an IANA time zone name .*did you mean 'America/New_York'.*"
            r"\(got 'America/NewYork'\)",
        ),
        (
            {"candidates": ["context", "mset"], "candidate_params": {"prophet": {"time_zone": NEW_YORK}}},
            r"candidate_params\.prophet: prophet is not among the candidates \['context', 'mset'\]: add it to them, "
            "or remove its parameters",
        ),
        ({"candidate_params": {"auto": {}}}, r"candidate_params.*Input should be 'seasonal_mad', .*'prophet' or 'lstm'"),
    ],
)
def test_a_candidate_parameter_it_does_not_take_is_refused_naming_it(params, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_detector("auto", params)


def test_a_job_file_gives_auto_s_prophet_candidate_its_time_zone_and_holidays() -> None:
    from pipelines.config import parse_job

    job = {
        "name": "visits", "source": {"kind": "file", "path": "data.csv"}, "timestamp": "ts", "frequency": "1h",
        "training_window": "60d", "features": ["visits"],
    }
    parsed = parse_job({**job, "model": {"kind": "auto", "params": {"candidate_params": LOCAL_HOLIDAYS}}})
    assert make_detector("auto", parsed.model.params)._make("prophet").get_params()["holidays_country"] == "US"
    with pytest.raises(ConfigError, match=r"params: candidate_params\.prophet\.holiday_country: unknown parameter"):
        parse_job({**job, "model": {"kind": "auto", "params": {"candidate_params": {"prophet": {"holiday_country": "US"}}}}})
