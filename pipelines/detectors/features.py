"""Causal window features of a multivariate series: each row sees only itself and earlier rows."""

from __future__ import annotations

import pandas as pd

#: Names of the window features, in the order they appear for each series feature.
WINDOW_FEATURES = ("value", "diff", "deviation", "rolling_std")


def fill_missing(values: pd.DataFrame, fallback: pd.Series) -> pd.DataFrame:
    """Forward fill, then ``fallback`` (a training statistic per column) where nothing came before."""
    return values.ffill().fillna(fallback)


def rolling_expected(values: pd.DataFrame, window: int) -> pd.DataFrame:
    """Median of the previous ``window`` rows (fewer at the start; the row's own value for the first)."""
    return values.shift(1).rolling(window, min_periods=1).median().fillna(values)


def window_features(values: pd.DataFrame, window: int) -> pd.DataFrame:
    """For every column: the value, its first difference, its deviation from
    :func:`rolling_expected`, and the standard deviation of the last ``window`` rows.

    ``values`` must hold no NaN (see :func:`fill_missing`). The first row has no difference, and
    the spread is NaN until a full window exists (a spread of a few rows is mostly noise, and in
    the training data it made the first rows the most anomalous): the caller treats NaN as
    typical. Columns are named ``"<column>:<window feature>"``.
    """
    parts = {
        "value": values,
        "diff": values.diff(),
        "deviation": values - rolling_expected(values, window),
        "rolling_std": values.rolling(window).std(),
    }
    columns = {f"{column}:{name}": parts[name][column] for column in values.columns for name in WINDOW_FEATURES}
    return pd.DataFrame(columns, index=values.index)
