from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.features import fill_missing, rolling_expected, window_features


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
    filled = fill_missing(frame, pd.Series({"a": 9.0}))
    assert filled["a"].tolist() == [9.0, 1.0, 1.0, 3.0]
