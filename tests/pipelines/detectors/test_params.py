"""Detector parameters as a job file gives them: refused when the file is loaded, not at the fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.config import parse_job
from pipelines.detectors import make_detector
from pipelines.detectors.params import MODEL_PARAMS
from pipelines.errors import ConfigError


def _job(kind: str, params: dict) -> dict:
    return {
        "name": "web",
        "source": {"kind": "file", "path": "data/x.csv"},
        "timestamp": "ts",
        "frequency": "1h",
        "features": ["value"],
        "model": {"kind": kind, "params": params},
    }


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        # pydantic read 24.0 as 24, but detectors compute with the value as given: these failed
        # inside pandas or Python at the fit or the first scoring ("window must be an integer").
        ("seasonal_mad", {"level_window": 24.0}, "params.level_window: must be a whole number, not 24.0: write 24"),
        ("iforest", {"window": 24.0}, "params.window: must be a whole number, not 24.0: write 24"),
        ("iforest", {"lags": 2.0}, "params.lags: must be a whole number, not 2.0"),
        ("iforest", {"max_samples": 256.0}, "params.max_samples: must be 'auto' or a whole number, not 256.0"),
        ("context", {"value_bits": 3.0}, "params.value_bits: must be a whole number, not 3.0"),
        ("context", {"max_active": 15.0}, "params.max_active: must be a whole number, not 15.0"),
        ("seasonal_mad", {"season": 1.5}, "params.season: must be a duration such as '1d' or a whole number, not 1.5"),
        # pydantic read 1 as true: daily_seasonality: 1 (a Fourier order in Prophet's own API)
        # silently became the default seasonality.
        ("prophet", {"daily_seasonality": 1}, "params.daily_seasonality: must be 'auto' or true or false, not the number 1"),
        ("iforest", {"calendar": 0}, "params.calendar: must be true or false, not the number 0"),
        # Seeds scikit-learn and NumPy refuse passed the job file and failed every fit.
        ("iforest", {"random_state": -1}, r"params.random_state: Input should be greater than or equal to 0 \(got -1\)"),
        ("auto", {"random_state": -1}, r"params.random_state: Input should be greater than or equal to 0 \(got -1\)"),
        ("lstm", {"random_state": 2**64}, "params.random_state: Input should be less than or equal to 4294967295"),
        # Text and booleans in a range were read as numbers.
        ("context", {"value_range": ["0", "100"]}, r"params.value_range.0: Input should be a valid number \(got '0'\)"),
        ("context", {"value_range": [True, 2]}, r"params.value_range.0: Input should be a valid number \(got True\)"),
    ],
)
def test_a_bad_parameter_is_refused_when_the_job_is_loaded(kind: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"web.yaml: invalid job configuration\n  model: invalid parameters for model '{kind}': {message}"):
        parse_job(_job(kind, params), source="web.yaml")


def test_a_country_without_known_holidays_is_refused_when_the_job_is_loaded() -> None:
    # The pattern let "XX" through; Prophet refused it only at the fit, hours later.
    pytest.importorskip("holidays")
    with pytest.raises(ConfigError, match=r"params.holidays_country: no public holidays are known for it; choose one of .*\bUS\b.*\(got 'ZZZ'\)"):
        parse_job(_job("prophet", {"holidays_country": "ZZZ"}))
    # The holidays package's calendar constants passed as countries and failed the fit.
    for constant in ("MON", "JAN", "SUN"):
        with pytest.raises(ConfigError, match=rf"no public holidays are known for it; .*\(got '{constant}'\)"):
            parse_job(_job("prophet", {"holidays_country": constant}))
    for code in ("US", "USA", "TU"):  # what Prophet takes: alpha-3 codes, its alias of Turkey
        parse_job(_job("prophet", {"holidays_country": code}))


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("iforest", {"window": 24, "n_estimators": 50, "random_state": 2**32 - 1, "calendar": False}),
        ("seasonal_mad", {"season": 24, "level_window": 24, "min_scale": 1}),  # an int where a float is asked
        ("context", {"value_range": [0, 100], "rest": 0}),
        ("mset", {"lags": np.int64(2), "bandwidth": 1}),  # NumPy integers, as tuning may hand over
    ],
)
def test_good_parameters_still_pass(kind: str, params: dict) -> None:
    MODEL_PARAMS[kind](**params)


def test_the_detector_refuses_them_too() -> None:
    # What the user saw before: the fit passed, the first scoring failed inside pandas.
    index = pd.date_range("2024-01-01", periods=24 * 4, freq="h", tz="UTC")
    frame = pd.DataFrame({"value": np.random.default_rng(0).normal(size=len(index))}, index=index)
    with pytest.raises(ConfigError, match=r"parameter 'level_window': must be a whole number, not 24.0"):
        make_detector("seasonal_mad", {"level_window": 24.0}).fit(frame)
