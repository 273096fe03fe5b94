"""Input checks of pipelines.detectors.base that every detector shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.base import _check_frame, _column_dtypes, _column_names
from pipelines.detectors.seasonal_mad import SeasonalMADDetector
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


@pytest.mark.parametrize(
    "columns",
    [
        ["a", "b"],  # Arrow strings, pandas 3's default: the one-call path
        pd.Index(["a", None], dtype="str"),  # a name missing in Arrow: the public path spells it
        pd.Index(["x", "y"], dtype=object),
        [0, 1],
        pd.date_range("2024-01-01", periods=2, tz="UTC"),
    ],
)
def test_column_names_are_the_names_as_text_pandas_iterates(columns) -> None:
    frame = pd.DataFrame(np.ones((2, 2)), columns=columns)
    assert _column_names(frame) == [str(c) for c in frame.columns]


def test_only_frames_of_float64_columns_are_returned_as_they_are() -> None:
    floats = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}, index=INDEX)
    assert _check_frame(floats, "X") is floats
    for column in (pd.array([1.0, None, 2.0], dtype="Float64"), pd.array([1.0, 2.0, 3.0], dtype="float64[pyarrow]"), [1, 2, 3]):
        checked = _check_frame(floats.assign(c=column), "X")
        assert checked.dtypes.tolist() == ["float64"] * 3
    with pytest.raises(ModelError, match=r"non-numeric feature columns \['c'\]"):
        _check_frame(floats.assign(c=["x", "y", "z"]), "X")


def _noise(rows: int = 200) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC")
    return pd.DataFrame({"a": np.random.default_rng(0).normal(size=rows)}, index=index)


def test_training_anomaly_rate_of_no_rows_is_refused_not_nan() -> None:
    # The mean over no rows was NaN (with a RuntimeWarning), and monitoring's calibrated rate
    # took NaN for the rate every later run was compared with.
    detector = SeasonalMADDetector(season=None).fit(_noise())
    with pytest.raises(ModelError, match="X has no rows to measure the training anomaly rate on; pass the rows"):
        detector.training_anomaly_rate(_noise().iloc[:0])
    assert 0.0 <= detector.training_anomaly_rate(_noise()) <= 0.05


def test_a_feature_of_values_too_large_to_compute_with_is_named_as_such() -> None:
    # -1.7e308 is a common "no data" marker; it is treated as infinite, which the message said
    # without saying why a finite number counted as infinite.
    with pytest.raises(ModelError, match=r"features \['b'\] have no values .*too large to compute with: \|value\| >= 1.34e\+154"):
        SeasonalMADDetector(season=None).fit(_noise().assign(b=-1.7e308))


def test_an_unsorted_or_repeated_index_is_refused_naming_the_first_offending_times() -> None:
    # The message said only "must be sorted ... without duplicates": which of 10,000 rows, not said.
    index = pd.DatetimeIndex(["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-01 12:00"], tz="UTC")
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]}, index=index)
    with pytest.raises(ModelError) as caught:
        _check_frame(frame, "X")
    message = str(caught.value)
    assert "1 repeated, first 2024-01-02 00:00:00+00:00" in message
    assert "1 going back, first at position 3 (2024-01-01 12:00:00+00:00 after 2024-01-02 00:00:00+00:00)" in message


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("detector.json", lambda b: b[: len(b) // 2], r"detector.json is damaged \(JSONDecodeError"),
        ("detector.json", lambda b: b"\x80" + b, r"detector.json is damaged \(UnicodeDecodeError"),
        ("detector.json", lambda b: b"[1, 2]", "detector.json holds a list"),
        ("arrays.npz", lambda b: b[: len(b) // 2], r"arrays.npz is damaged \(BadZipFile"),
        ("arrays.npz", lambda b: b"not a zip", r"arrays.npz is damaged"),
    ],
)
def test_a_damaged_artifact_file_is_named_with_what_to_do(name, damage, message) -> None:
    # A truncated file raised json's or zipfile's own error, naming neither the file nor a remedy.
    index = pd.date_range("2024-01-01", periods=200, freq="h", tz="UTC")
    frame = pd.DataFrame({"a": np.sin(np.arange(200) / 4.0)}, index=index)
    files = SeasonalMADDetector(season=None).fit(frame).to_files()
    files[name] = damage(files[name])
    with pytest.raises(ModelError, match=message) as caught:
        SeasonalMADDetector.from_files(files)
    assert str(caught.value).endswith("retrain")
