"""Causal window features of a multivariate series: each row sees only itself and earlier rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Names of the window features, in the order they appear for each series feature (then lags).
WINDOW_FEATURES = ("value", "diff", "deviation", "rolling_std")


def fill_missing(values: pd.DataFrame, fallback: pd.Series, *, limit: int) -> pd.DataFrame:
    """Forward fill at most ``limit`` rows, then ``fallback`` (a training statistic per column)
    where no value came in the ``limit`` rows before.

    The bound makes a filled row depend on its ``limit`` rows before only, so a detector whose
    features read ``reach`` rows back scores a row alike from any history of ``reach + limit``
    rows; an unbounded fill carried a value from before a long gap into one call and not into a
    call whose history started inside the gap.
    """
    return values.ffill(limit=limit).fillna(fallback)


def rolling_expected(values: pd.DataFrame, window: int) -> pd.DataFrame:
    """Median of the previous ``window`` rows (fewer at the start; the row's own value for the first)."""
    return values.shift(1).rolling(window, min_periods=1).median().fillna(values)


def window_features(
    values: pd.DataFrame,
    window: int,
    *,
    lags: int = 0,
    calendar: bool = False,
    expected: pd.DataFrame | None = None,
    time_zone: str = "UTC",
) -> pd.DataFrame:
    """For every column: the value, its first difference, its deviation from
    :func:`rolling_expected`, the standard deviation of the last ``window`` rows, and its values
    ``1..lags`` rows back; then, with ``calendar`` and timestamps, the hour of day and the day of
    week as points on circles (sine, cosine), so that a value normal at noon can be unusual at 3 am.

    Windows, differences and lags count rows, not time: the pipeline first puts every series on
    its job's ``frequency`` grid (:mod:`pipelines.resampling`), so a row is one period and a gap
    is rows of NaN; irregular timestamps given here directly are read as consecutive periods. The
    calendar parts are the wall-clock hour and day of ``time_zone`` (the detectors pass UTC
    timestamps, see :func:`pipelines.detectors.base._check_frame`): in UTC, a series that follows a
    local clock moves by an hour against them at each daylight-saving change.

    ``values`` must hold no NaN (see :func:`fill_missing`). The first row has no difference, and
    the spread is NaN until a full window exists (a spread of a few rows is mostly noise, and in
    the training data it made the first rows the most anomalous); lags are NaN before the start:
    the caller treats NaN as typical. Columns are named ``"<column>:<window feature>"`` and
    ``"calendar:<part>"``. ``expected`` is :func:`rolling_expected` of ``values`` when the caller
    already has it (a rolling median is the costliest feature: a detector scoring a call needs it
    for its output too, so it is computed once).
    """
    if expected is None:
        expected = rolling_expected(values, window)
    parts = {
        "value": values,
        "diff": values.diff(),
        "deviation": values - expected,
        "rolling_std": _rolling_std(values, window),
        **{f"lag{k}": values.shift(k) for k in range(1, lags + 1)},
    }
    columns = {f"{column}:{name}": part[column] for column in values.columns for name, part in parts.items()}
    if calendar and isinstance(values.index, pd.DatetimeIndex):
        local = time_zone != "UTC" and values.index.tz is not None
        clock = values.index.tz_convert(time_zone) if local else values.index
        hours = clock.hour.to_numpy() + clock.minute.to_numpy() / 60
        # day_of_week, not its alias dayofweek: pandas 3.1 deprecates the alias (Pandas4Warning).
        days = clock.day_of_week.to_numpy() + hours / 24
        for name, turn in (("hour", hours / 24), ("weekday", days / 7)):
            columns[f"calendar:{name}_sin"] = np.sin(2 * np.pi * turn)
            columns[f"calendar:{name}_cos"] = np.cos(2 * np.pi * turn)
    return pd.DataFrame(columns, index=values.index)


def _rolling_std(values: pd.DataFrame, window: int) -> pd.DataFrame:
    """Standard deviation of the last ``window`` rows, finite for any finite values."""
    spread = values.rolling(window).std()
    overflowed = np.isinf(spread.to_numpy()).any(axis=0)
    if not overflowed.any():
        return spread
    # Squares of values near 1e154 (still measurements: see base._TOO_LARGE) summed past the
    # largest float, and the infinite spread made scikit-learn refuse the whole fit. Scaled by
    # its largest magnitude, a column's squares stay at most 1 each.
    columns = values.columns[overflowed]
    magnitude = values[columns].abs().max()
    spread[columns] = (values[columns] / magnitude).rolling(window).std() * magnitude
    return spread
