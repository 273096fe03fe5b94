"""Values made fit for JSON: what the standard encoder refuses (NaN, infinities, NumPy and
pandas scalars, dates) turned into JSON's own types."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd


def json_safe(value: Any) -> Any:
    """``value`` with only JSON types: missing values become null, infinities the strings "inf"/"-inf"."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):  # item by item: .tolist() too gives nanosecond datetimes as integers
        return [json_safe(item) for item in value] if value.ndim else json_safe(value[()])
    if isinstance(value, np.datetime64):
        # .item() turns a nanosecond datetime64 (pandas' unit) into an integer count of nanoseconds.
        return json_safe(pd.Timestamp(value))
    if isinstance(value, np.timedelta64):
        return json_safe(pd.Timedelta(value))
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, Decimal):
        # SQL NUMERIC columns arrive as Decimal: str() gave the number as text ("1.50"), and NaN
        # and infinities as "NaN" and "Infinity" rather than null and "inf".
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return None if value.is_nan() else json_safe(float(value))
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
