from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.features import fill_missing, rolling_expected, window_features

# Deprecations and future changes that our own code triggers (pandas attributes its warnings to
# the caller) are errors here: pyproject.toml ignores DeprecationWarning for third-party noise,
# which hid pandas 3.1's Pandas4Warning for DatetimeIndex.dayofweek in the calendar features.
# Warnings raised inside prophet or scikit-learn are attributed to them and stay ignored.
pytestmark = [
    pytest.mark.filterwarnings(r"error::DeprecationWarning:pipelines\."),
    pytest.mark.filterwarnings(r"error::PendingDeprecationWarning:pipelines\."),
    pytest.mark.filterwarnings(r"error::FutureWarning:pipelines\."),
]


@pytest.fixture
def values() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})


def test_features_are_causal(values: pd.DataFrame) -> None:
    changed = values.copy()
    changed.iloc[30:] += 100.0
    pd.testing.assert_frame_equal(window_features(values, 5).iloc[:30], window_features(changed, 5).iloc[:30])
    assert not window_features(values, 5).iloc[30].equals(window_features(changed, 5).iloc[30])


def test_feature_columns_per_series_feature(values: pd.DataFrame) -> None:
    assert list(window_features(values, 5).columns) == [
        "a:value", "a:diff", "a:deviation", "a:rolling_std",
        "b:value", "b:diff", "b:deviation", "b:rolling_std",
    ]  # fmt: skip


def test_window_statistics(values: pd.DataFrame) -> None:
    features = window_features(values, 5)
    a = values["a"]
    assert features["a:diff"].iloc[7] == pytest.approx(a.iloc[7] - a.iloc[6])
    assert features["a:deviation"].iloc[7] == pytest.approx(a.iloc[7] - a.iloc[2:7].median())
    assert features["a:rolling_std"].iloc[7] == pytest.approx(a.iloc[3:8].std())


def test_a_precomputed_expected_gives_the_same_features(values: pd.DataFrame) -> None:
    # Detectors pass the rolling median they already computed for their output.
    given = window_features(values, 5, lags=1, expected=rolling_expected(values, 5))
    pd.testing.assert_frame_equal(given, window_features(values, 5, lags=1))
    # And it is used: another expected moves the deviation, nothing else.
    shifted = window_features(values, 5, lags=1, expected=rolling_expected(values, 5) + 1.0)
    pd.testing.assert_series_equal(shifted["a:deviation"], given["a:deviation"] - 1.0)
    others = ["a:deviation", "b:deviation"]
    pd.testing.assert_frame_equal(shifted.drop(columns=others), given.drop(columns=others))


def test_warm_up_uses_what_exists(values: pd.DataFrame) -> None:
    expected = rolling_expected(values, 5)
    assert expected["a"].iloc[0] == values["a"].iloc[0]
    assert expected["a"].iloc[1] == values["a"].iloc[0]
    assert expected["a"].iloc[3] == pytest.approx(values["a"].iloc[:3].median())
    features = window_features(values, 5)
    # Statistics that need more rows are missing (the detector treats them as typical), nothing else.
    partial = features.columns[features.iloc[:4].isna().any()]
    assert set(partial) == {"a:diff", "a:rolling_std", "b:diff", "b:rolling_std"}
    assert not features.iloc[4:].isna().any().any()


def test_fill_missing_forward_fills_then_uses_the_fallback() -> None:
    frame = pd.DataFrame({"a": [np.nan, 1.0, np.nan, 3.0]})
    filled = fill_missing(frame, pd.Series({"a": 9.0}), limit=2)
    assert filled["a"].tolist() == [9.0, 1.0, 1.0, 3.0]


def test_fill_missing_carries_a_value_at_most_limit_rows() -> None:
    # Beyond the limit a value is stale: the fallback stands in, so a filled row depends on its
    # limit rows before only (what lets detectors score rows in pieces as in one call).
    frame = pd.DataFrame({"a": [1.0, np.nan, np.nan, np.nan, 5.0]})
    filled = fill_missing(frame, pd.Series({"a": 9.0}), limit=2)
    assert filled["a"].tolist() == [1.0, 1.0, 1.0, 9.0, 5.0]


def test_lags_and_calendar_parts() -> None:
    index = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")  # a Monday
    values = pd.DataFrame({"a": np.arange(48.0)}, index=index)
    features = window_features(values, 5, lags=2, calendar=True)
    assert features["a:lag2"].iloc[10] == 8.0 and np.isnan(features["a:lag2"].iloc[1])
    # 06:00 is a quarter turn of the day; Tuesday 00:00 a seventh of the week.
    assert features["calendar:hour_sin"].iloc[6] == pytest.approx(1.0)
    assert features["calendar:hour_cos"].iloc[6] == pytest.approx(0.0, abs=1e-12)
    assert features["calendar:weekday_sin"].iloc[24] == pytest.approx(np.sin(2 * np.pi / 7))
    # Row numbers have no calendar.
    assert not any(c.startswith("calendar:") for c in window_features(values.reset_index(drop=True), 5, calendar=True))


def test_calendar_lets_the_forest_see_a_cycle_at_the_wrong_hours() -> None:
    """Two days of the daily cycle running 12 hours out of phase: every value, step and spread is
    ordinary; only the hour says it is wrong."""
    from pipelines.detectors.iforest import IsolationForestDetector

    index = pd.date_range("2024-01-01", periods=24 * 42, freq="h", tz="UTC")
    rng = np.random.default_rng(0)
    hours = index.hour.to_numpy()
    frame = pd.DataFrame({"a": 10 * np.sin(2 * np.pi * hours / 24) + 0.3 * rng.normal(size=len(index))}, index=index)
    train, test = frame.iloc[: 24 * 35], frame.iloc[24 * 35 :].copy()
    test.iloc[48:96, 0] = 10 * np.sin(2 * np.pi * (hours[24 * 35 + 48 : 24 * 35 + 96] + 12) / 24) + 0.3 * rng.normal(size=48)
    flagged = {}
    for calendar in (False, True):
        detector = IsolationForestDetector(calendar=calendar, window=6, n_estimators=100).fit(train)
        detection = detector.detect(test, history=train)
        flagged[calendar] = detection.is_anomaly[48:96, 0].mean()
        assert detection.is_anomaly[100:, 0].mean() <= 0.02
    assert flagged[False] <= 0.05 and flagged[True] >= 0.3


def test_rolling_spread_of_values_near_the_largest_measurable_is_finite() -> None:
    # Values below 1.34e154 are measurements (base._TOO_LARGE), but their squares summed over a
    # window overflowed: an infinite spread made scikit-learn refuse the iforest fit.
    values = pd.DataFrame({"a": np.random.default_rng(0).normal(size=200) * 5e153, "b": np.arange(200.0)})
    spread = window_features(values, 6)
    assert np.isfinite(spread["a:rolling_std"].iloc[5:]).all()
    np.testing.assert_allclose(spread["a:rolling_std"].iloc[5:], (values["a"] / 5e153).rolling(6).std().iloc[5:] * 5e153, rtol=1e-12)
    np.testing.assert_array_equal(spread["b:rolling_std"], values["b"].rolling(6).std())
