from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from pipelines.json_values import json_safe


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float64(math.inf), "inf"),
        (-math.inf, "-inf"),
        (math.nan, None),
        (pd.NA, None),
        (pd.NaT, None),
        (np.int64(3), 3),
        (np.bool_(True), True),
        (pd.Timestamp("2024-01-01T05:00", tz="UTC"), "2024-01-01T05:00:00+00:00"),
        (date(2024, 1, 2), "2024-01-02"),
        ({"ts": np.datetime64("NaT"), 1: (1.5, None)}, {"ts": None, "1": [1.5, None]}),
        (b"raw", "b'raw'"),
        # NumPy's .item() gives nanosecond datetimes (pandas' unit) as an integer count of nanoseconds.
        (np.datetime64("2024-01-01T05:00:00.000000000"), "2024-01-01T05:00:00"),
        (np.timedelta64(90, "m"), "0 days 01:30:00"),
        (np.array([1.5, np.nan, np.inf]), [1.5, None, "inf"]),
        (np.array(["2024-01-01T05:00"], dtype="datetime64[ns]"), ["2024-01-01T05:00:00"]),
        (np.array(2), 2),
        # SQL NUMERIC values: they were text ("1.50", "NaN", "Infinity").
        ([Decimal("1.50"), Decimal("12"), Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity")], [1.5, 12, None, None, "-inf"]),
    ],
)
def testjson_safe(value: object, expected: object) -> None:
    assert json_safe(value) == expected
