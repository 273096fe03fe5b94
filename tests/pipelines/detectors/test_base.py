"""Input checks of pipelines.detectors.base that every detector shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.base import _check_frame, _column_dtypes
from pipelines.errors import ModelError

INDEX = pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC")


def test_column_dtypes_are_those_pandas_reports_in_column_order() -> None:
    frame = pd.DataFrame(
        {
            "f": [1.0, 2.0, 3.0],
            "i": [1, 2, 3],
            "nullable": pd.array([1.0, None, 2.0], dtype="Float64"),
            "arrow": pd.array([1.0, 2.0, 3.0], dtype="float64[pyarrow]"),
            "f32": np.array([1, 2, 3], dtype="float32"),
            "g": [4.0, 5.0, 6.0],  # a second float64 block after the others
        },
        index=INDEX,
    )
    assert _column_dtypes(frame) == frame.dtypes.tolist()


def test_only_frames_of_float64_columns_are_returned_as_they_are() -> None:
    floats = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}, index=INDEX)
    assert _check_frame(floats, "X") is floats
    for column in (pd.array([1.0, None, 2.0], dtype="Float64"), pd.array([1.0, 2.0, 3.0], dtype="float64[pyarrow]"), [1, 2, 3]):
        checked = _check_frame(floats.assign(c=column), "X")
        assert checked.dtypes.tolist() == ["float64"] * 3
    with pytest.raises(ModelError, match=r"non-numeric feature columns \['c'\]"):
        _check_frame(floats.assign(c=["x", "y", "z"]), "X")
