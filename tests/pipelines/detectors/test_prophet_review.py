"""ProphetDetector as a job file and a model registry give it: parameters, artifacts."""

from __future__ import annotations

import pytest

from pipelines.config import parse_job
from pipelines.detectors.prophet import ProphetDetector
from pipelines.errors import ConfigError, ModelError
from tests.pipelines.detectors.test_params import _job as _any_job


def _job(params: dict) -> dict:
    return _any_job("prophet", params)


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        # A country's name is what Prophet's own docs call the parameter (country_name); the job file
        # was refused with only "String should match pattern '^[A-Z]{2,3}$'".
        ("Germany", r"write 'DE' for Germany"),
        ("United States", r"write 'US' for United States"),
        ("united_kingdom", r"write 'GB' for united_kingdom"),
        ("de", r"write 'DE' for de"),
        ("usa", r"write 'USA' for usa"),
    ],
)
def test_a_country_name_or_lower_case_code_is_refused_with_its_code(given: str, hint: str) -> None:
    pytest.importorskip("holidays")
    with pytest.raises(
        ConfigError,
        match=rf"sales.yaml: invalid job configuration\n  model: invalid parameters for model 'prophet': "
        rf"params.holidays_country: should match pattern .*a country code.*: {hint}",
    ):
        parse_job(_job({"holidays_country": given}), source="sales.yaml")


def test_a_malformed_country_lists_the_known_codes() -> None:
    pytest.importorskip("holidays")
    with pytest.raises(ConfigError, match=r"params.holidays_country: should match pattern .*choose one of .*\bDE\b.*\bUS\b"):
        parse_job(_job({"holidays_country": "Atlantis"}), source="sales.yaml")


@pytest.fixture(scope="module")
def fitted() -> tuple[ProphetDetector, dict[str, bytes]]:
    from tests.pipelines.detectors.conftest import seasonal_frame

    detector = ProphetDetector().fit(seasonal_frame(3, seed=0))
    return detector, detector.to_files()


@pytest.mark.parametrize(
    "damaged",
    [b'{"growth": "linear", "changepoints": nul', b"\x00\xff", b"", b'{"growth": "linear"}', b"[1, 2]"],
    ids=["truncated", "binary", "empty", "not-a-model", "a-list"],
)
def test_a_damaged_model_file_is_named(fitted, damaged: bytes) -> None:
    # It raised JSONDecodeError, UnicodeDecodeError, KeyError or TypeError, naming no file.
    from pipelines.detectors import load_detector

    _, files = fitted
    with pytest.raises(ModelError, match=r"cannot load the prophet model from prophet_1\.json: .*damaged: retrain"):
        load_detector("prophet", {**files, "prophet_1.json": damaged})


def test_the_artifact_is_json_and_loads_to_identical_scores(fitted) -> None:
    import json

    import numpy as np

    from pipelines.detectors import load_detector
    from tests.pipelines.detectors.conftest import seasonal_frame

    detector, files = fitted
    for name in ("prophet_0.json", "prophet_1.json"):  # Prophet's model_to_json, no pickle
        assert json.loads(files[name])["__prophet_version"]
    later = seasonal_frame(4, seed=1).iloc[-24:]
    before, after = detector.detect(later), load_detector("prophet", files).detect(later)
    for field in ("expected", "lower", "upper", "score", "is_anomaly"):
        np.testing.assert_array_equal(getattr(before, field), getattr(after, field), err_msg=field)


def test_checking_a_country_warns_about_no_year_of_its_own() -> None:
    # The check built the holidays of 2000, outside India's years (2001-2035): every fit of an
    # "IN" job warned "Requested Holidays are available only from 2001 to 2035" from this module.
    import warnings

    pytest.importorskip("prophet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ProphetDetector(holidays_country="IN")._check_params()
    assert [str(w.message) for w in caught if "pipelines" in w.filename] == []


def test_changepoint_settings_reach_prophet_and_let_a_late_trend_change_bend_the_forecast() -> None:
    # Only changepoint_prior_scale was exposed: with Prophet's changepoint_range of 0.8, a trend
    # that turned in the latest fifth of the training rows was forecast on its old slope.
    import numpy as np
    import pandas as pd

    index = pd.date_range("2024-01-01", periods=200, freq="D", tz="UTC")
    t = np.arange(200.0)
    values = np.where(t < 180, t, 180 - 3 * (t - 180)) + np.random.default_rng(0).normal(0, 0.5, 200)
    train = pd.DataFrame({"orders": values}, index=index)
    ahead = pd.DataFrame({"orders": 180 - 3 * (np.arange(200.0, 210.0) - 180)}, index=pd.date_range(index[-1], periods=11, freq="D")[1:])
    settings = {"weekly_seasonality": False, "yearly_seasonality": False, "daily_seasonality": False}
    default = ProphetDetector(**settings).fit(train)
    late = ProphetDetector(**settings, changepoint_range=1.0, n_changepoints=40).fit(train)
    assert (late.models_[0].changepoint_range, late.models_[0].n_changepoints) == (1.0, 40)
    error = {name: np.abs(model.detect(ahead).to_frame()["expected"].to_numpy() - ahead["orders"].to_numpy()).mean()
             for name, model in (("default", default), ("late", late))}
    assert error["late"] < 10 < error["default"], error


def test_changepoint_settings_out_of_range_are_refused_naming_them() -> None:
    with pytest.raises(ConfigError, match="changepoint_range"):
        parse_job(_job({"changepoint_range": 1.5}), source="sales.yaml")
    with pytest.raises(ConfigError, match="n_changepoints"):
        parse_job(_job({"n_changepoints": -1}), source="sales.yaml")
