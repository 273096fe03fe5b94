from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.prophet import ProphetDetector

SPIKE_ROWS = [9, 40, 77, 118, 151]

# Deprecations and future changes that our own code triggers (pandas attributes its warnings to
# the caller) are errors here: pyproject.toml ignores DeprecationWarning for third-party noise,
# which hid pandas 3.1's Pandas4Warning for DatetimeIndex.dayofweek in the calendar features.
# Warnings raised inside prophet or scikit-learn are attributed to them and stay ignored.
pytestmark = [
    pytest.mark.filterwarnings(r"error::DeprecationWarning:pipelines\."),
    pytest.mark.filterwarnings(r"error::PendingDeprecationWarning:pipelines\."),
    pytest.mark.filterwarnings(r"error::FutureWarning:pipelines\."),
]


@pytest.fixture(scope="module")
def series() -> tuple[pd.DataFrame, pd.DataFrame]:
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(28, seed=7)
    return frame.iloc[: 24 * 21], frame.iloc[24 * 21 :]


@pytest.fixture(scope="module")
def detector(series) -> ProphetDetector:
    return ProphetDetector().fit(series[0])


def test_forecast_follows_the_daily_cycle(detector: ProphetDetector, series) -> None:
    train, test = series
    detection = detector.detect(test)
    # Unit noise: a good forecast misses by about 0.8 on average (the mean |N(0, 1)|).
    assert np.abs(detection.values - detection.expected).mean() < 1.0
    inside = (detection.values >= detection.expected - 1.96 * 1.1) & (detection.values <= detection.expected + 1.96 * 1.1)
    assert inside.mean() > 0.9


def test_quiet_on_clean_data(detector: ProphetDetector, series) -> None:
    assert detector.detect(series[1]).is_anomaly.mean() <= 0.02


def test_flags_spikes_on_their_feature_only(detector: ProphetDetector, series) -> None:
    test = series[1].copy()
    test.iloc[SPIKE_ROWS, 0] += 8.0
    detection = detector.detect(test)
    assert detection.is_anomaly[SPIKE_ROWS, 0].all()
    assert detection.is_anomaly[:, 1].mean() <= 0.02


def test_flags_a_level_shift(detector: ProphetDetector, series) -> None:
    test = series[1].copy()
    test.iloc[60:, 1] += 6.0
    assert detector.detect(test).is_anomaly[60:, 1].mean() >= 0.9


def test_flags_a_variance_change(detector: ProphetDetector, series) -> None:
    test = series[1].copy()
    test.iloc[60:120, 0] += np.random.default_rng(1).normal(scale=5.0, size=60)
    flagged = detector.detect(test).is_anomaly[:, 0]
    assert flagged[60:120].mean() >= 0.4 and flagged[120:].mean() <= 0.03


def test_score_grows_with_the_distance_outside_the_interval(detector: ProphetDetector, series) -> None:
    test = series[1].iloc[:3].copy()
    base = detector.detect(test)
    distances = []
    for size in (4.0, 6.0, 9.0):
        bumped = test.copy()
        bumped.iloc[1, 0] = base.expected[1, 0] + size
        distances.append(detector.detect(bumped).score[1, 0])
    assert distances[0] < distances[1] < distances[2] <= 1.0


def test_interval_widens_with_the_forecast_horizon(detector: ProphetDetector, series) -> None:
    late = pd.date_range(series[1].index[-1] + pd.Timedelta("30D"), periods=24, freq="h", tz="UTC")
    near = detector.detect(series[1].iloc[:24])
    far = detector.detect(pd.DataFrame({"a": 10.0, "b": 20.0}, index=late))
    assert (far.upper - far.lower).mean() > (near.upper - near.lower).mean()


def test_holidays_are_modelled(series) -> None:
    detector = ProphetDetector(holidays_country="US").fit(series[0])
    assert detector.models_[0].country_holidays == "US"


def test_a_country_without_known_holidays_is_a_parameter_error(series) -> None:
    # The parameter's pattern lets "XX" through; Prophet refused it only inside the fit, with an
    # AttributeError naming neither the parameter nor the codes it knows.
    from pipelines.detectors import make_detector
    from pipelines.errors import ConfigError

    message = r"parameter 'holidays_country': no public holidays are known for it; choose one of .*\bUS\b.*\(got 'XX'\)"
    with pytest.raises(ConfigError, match=message):
        make_detector("prophet", {"holidays_country": "XX"})
    with pytest.raises(ConfigError, match=message):  # set_params cannot skip the check
        ProphetDetector().set_params(holidays_country="XX").fit(series[0])


def test_fitting_does_not_flood_the_log(series, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        ProphetDetector().fit(series[0].iloc[:200])
    chatter = [r for r in caplog.records if r.name.startswith(("cmdstanpy", "prophet"))]
    assert chatter == []


def test_a_fit_that_falls_back_to_newton_names_its_feature_and_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    # A counter near 1e9 that varies by units stops L-BFGS ("Line search failed"): Prophet then fits
    # with Newton, and the training succeeds, but cmdstanpy logged an ERROR and Prophet a warning,
    # neither naming the feature, into the task's log.
    index = pd.date_range("2024-01-01", periods=24 * 14, freq="h", tz="UTC")
    frame = pd.DataFrame({"bytes_total": 1e9 + np.random.default_rng(0).normal(size=len(index))}, index=index)
    with caplog.at_level(logging.INFO):
        detector = ProphetDetector().fit(frame)
    assert [r for r in caplog.records if r.name.startswith(("cmdstanpy", "prophet"))] == []
    fallbacks = [r.getMessage() for r in caplog.records if "fitting it with Newton" in r.getMessage()]
    assert fallbacks and all("feature bytes_total (Line search failed" in m and len(m) < 300 for m in fallbacks)
    assert detector.detect(frame).is_anomaly.mean() <= 0.02


def test_a_plain_script_is_not_flooded_either() -> None:
    """Without logging configured, cmdstanpy installs its own handler on first use."""
    code = (
        "from tests.pipelines.detectors.conftest import seasonal_frame\n"
        "from pipelines.detectors.prophet import ProphetDetector\n"
        "ProphetDetector().fit(seasonal_frame(10, seed=0))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "cmdstanpy" not in result.stderr and "plotly" not in result.stderr


# -- warm start ---------------------------------------------------------------------------------------


def test_warm_start_from_the_champions_parameters(detector: ProphetDetector, caplog: pytest.LogCaptureFixture) -> None:
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(28, seed=8)
    new, test = frame.iloc[: 24 * 21], frame.iloc[24 * 21 :]
    with caplog.at_level(logging.WARNING, logger="pipelines.detectors.prophet"):
        warm = ProphetDetector().fit(new, warm_start=detector)
    assert warm.warm_started_
    assert not [r for r in caplog.records if "cannot warm-start" in r.getMessage()]  # no feature fell back to cold
    cold = ProphetDetector().fit(new)
    # Prophet's optimum does not depend on where LBFGS starts: the same forecast, within noise.
    errors = [np.abs(d.detect(test).values - d.detect(test).expected).mean() for d in (warm, cold)]
    assert errors[0] < 1.0 and errors[0] == pytest.approx(errors[1], rel=0.05)
    assert warm.detect(test).is_anomaly.mean() <= 0.02


def _wandering(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A daily cycle on a random walk: Prophet's smooth trend fits the walk's past far better
    than it forecasts its future."""
    rng = np.random.default_rng(seed)
    rows = 24 * 35
    index = pd.date_range("2024-01-01", periods=rows, freq="1h", tz="UTC")
    values = 10 * np.sin(2 * np.pi * np.arange(rows) / 24) + np.cumsum(rng.normal(0, 1, rows)) + rng.normal(0, 1, rows)
    frame = pd.DataFrame({"value": values}, index=index)
    return frame.iloc[: 24 * 28], frame.iloc[24 * 28 :]


@pytest.mark.parametrize("seed", [1, 2])
def test_held_back_rows_keep_the_threshold_honest_on_new_data(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    train, future = _wandering(seed)
    held_back = ProphetDetector(threshold_value=0.01).fit(train)
    assert held_back.calibration_rows_ == int(len(train) * 0.2) and held_back.summary()["calibration_rows"] == 134
    monkeypatch.setattr("pipelines.detectors.calibration.HELD_BACK_FRACTION", 0.0)
    in_sample = ProphetDetector(threshold_value=0.01).fit(train)
    assert in_sample.calibration_rows_ == 0
    # Asked for 1 % of the rows: in-sample calibration flags 15-92 % of the next week, held-back a few %.
    flagged_in_sample, flagged_held_back = in_sample.detect(future).is_anomaly.mean(), held_back.detect(future).is_anomaly.mean()
    assert flagged_in_sample > 0.1 and flagged_held_back < flagged_in_sample / 3


def test_a_short_window_calibrates_on_its_fitted_rows(series) -> None:
    short = ProphetDetector().fit(series[0].iloc[:200])  # 40 held-back rows would be too few
    assert short.calibration_rows_ == 0
    from pipelines.detectors import load_detector

    assert load_detector("prophet", short.to_files()).calibration_rows_ == 0


def test_a_feature_with_fewer_than_two_values_is_named(series) -> None:
    # Prophet refused it inside the fit with a bare ValueError ("Dataframe has less than 2 non-NaN rows.").
    from pipelines.errors import ModelError

    train = series[0].iloc[:200].copy()
    train.iloc[:-1, 1] = np.nan
    with pytest.raises(ModelError, match=r"fewer than 2 values in the 200 training rows from .* \(feature: values\): \{'b': 1\}"):
        ProphetDetector().fit(train)


def test_a_feature_added_within_the_held_back_rows_calibrates_on_its_fitted_rows(series) -> None:
    # Its values all fall in the held-back rows: the head had none to fit a model on, and the fit
    # failed with Prophet's ValueError after a warning about a warm start.
    train = series[0].copy()
    train.iloc[:-30, 1] = np.nan
    detector = ProphetDetector().fit(train)
    assert detector.calibration_rows_ == 100
    # The other feature keeps its held-back calibration, as if fitted alone.
    alone = ProphetDetector().fit(train[["a"]])
    assert detector.calibrators_[0].to_dict() == alone.calibrators_[0].to_dict()
    assert np.isfinite(detector.detect(series[1]).score).all()


@pytest.mark.parametrize("code", ["MON", "JAN", "SUN"])
def test_a_calendar_constant_of_the_holidays_package_is_no_country(series, code: str) -> None:
    # holidays exports MON = 0, JAN = 1...: they passed the check, then the fit failed with
    # "TypeError: 'int' object is not callable".
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"parameter 'holidays_country': no public holidays are known for it.*\(got '{code}'\)"):
        ProphetDetector(holidays_country=code).fit(series[0].iloc[:200])
