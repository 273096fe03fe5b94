"""The python source calls a real function by its dotted name; the example callables live here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from pipelines.config import parse_job
from pipelines.errors import ConfigError, SourceError
from pipelines.sources import PythonReader, make_source, read_window

HERE = "tests.pipelines.sources.test_python"
START, END = pd.Timestamp("2024-01-01 01:00", tz="UTC"), pd.Timestamp("2024-01-01 03:00", tz="UTC")
WINDOW_TEXT = r"\[2024-01-01T01:00:00\+00:00, 2024-01-01T03:00:00\+00:00\)"


# Example callables, imported by name as a job would import its own.


def six_hours(start: datetime | None, end: datetime | None, *, scale: float = 1.0) -> pd.DataFrame:
    """Six hourly rows whatever the window (so the reader's own filtering shows), and what it
    was called with in ``host``."""
    called = f"{start.isoformat() if start else None}|{end.isoformat() if end else None}|{scale}"
    return pd.DataFrame(
        {
            "ts": [f"2024-01-01 {hour:02d}:00:00" for hour in range(6)],
            "host": called,
            "value": [hour * scale for hour in range(6)],
            "unused": 0,
        }
    )


def indexed_by_time(start: datetime | None, end: datetime | None) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=4, freq="h", tz="Europe/Berlin", name="ts")
    return pd.DataFrame({"host": "a", "value": [0.0, 1.0, 2.0, 3.0]}, index=index)


def aggregated(start: datetime | None, end: datetime | None) -> pd.DataFrame:
    # What groupby().agg() returns: the timestamp and the dimension as the levels of the index.
    raw = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC").repeat(2), "host": "a", "value": range(8)})
    return raw.groupby(["ts", "host"]).agg(value=("value", "mean"))


def window_types(start: datetime | None, end: datetime | None) -> pd.DataFrame:
    kinds = [f"{type(bound).__name__}:{bound.tzinfo == UTC if bound else None}" for bound in (start, end)]
    return pd.DataFrame({"ts": [start], "host": " ".join(kinds), "value": [1.0]})


def returns_list(start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
    return [{"ts": "2024-01-01 01:00:00", "host": "a", "value": 1.0}]


def raises(start: datetime | None, end: datetime | None) -> pd.DataFrame:
    raise ConnectionError("upstream API answered 503")


def mixed_zones(start: datetime | None, end: datetime | None) -> pd.DataFrame:
    return pd.DataFrame({"ts": ["2024-01-01T01:00:00Z", "2024-01-01 02:00:00"], "host": "a", "value": [1.0, 2.0]})


def twice_value(start: datetime | None, end: datetime | None) -> pd.DataFrame:
    # A join that did not suffix its overlapping columns.
    return pd.DataFrame([["2024-01-01 01:00:00", "a", 1.0, 2.0]], columns=["ts", "host", "value", "value"])


NOT_A_FUNCTION = 42


def python_job(function: str, **params: Any):
    return parse_job(
        {
            "name": "cpu_load",
            "source": {"kind": "python", "callable": f"{HERE}:{function}" if ":" not in function else function, "params": params},
            "timestamp": "ts",
            "frequency": "1h",
            "dimensions": ["host"],
            "features": ["value"],
            "model": {"kind": "iforest"},
        }
    )


def test_calls_the_function_with_the_window_and_params_and_drops_rows_outside(caplog) -> None:
    frame = read_window(python_job("six_hours", scale=10.0), START, END)

    assert list(frame.columns) == ["ts", "host", "value"]
    assert frame["ts"].tolist() == ["2024-01-01 01:00:00", "2024-01-01 02:00:00"]
    assert frame["value"].tolist() == [10.0, 20.0]
    assert frame["host"].iloc[0] == "2024-01-01T01:00:00+00:00|2024-01-01T03:00:00+00:00|10.0"
    assert frame.index.equals(pd.RangeIndex(2))
    assert "returned 4 row(s) outside the window; they are dropped" in caplog.text


def test_bounds_are_utc_aware_datetimes_or_none() -> None:
    job = python_job("window_types")
    berlin = pd.Timestamp("2024-01-01 02:00", tz="Europe/Berlin").to_pydatetime()

    frame = read_window(job, berlin, None)

    assert frame["host"].tolist() == ["datetime:True NoneType:None"]
    assert frame["ts"].tolist() == [datetime(2024, 1, 1, 1, tzinfo=UTC)]


def test_unbounded_window_keeps_every_row() -> None:
    frame = read_window(python_job("six_hours"), None, None)

    assert len(frame) == 6 and frame["host"].iloc[0] == "None|None|1.0"


def test_a_timestamp_index_becomes_the_column_and_aware_times_compare_in_utc() -> None:
    # 00:00 Berlin is 23:00 UTC the day before: the window [01:00, 03:00) UTC holds 02:00 and 03:00 Berlin.
    frame = read_window(python_job("indexed_by_time"), START, END)

    assert frame["value"].tolist() == [2.0, 3.0]
    assert str(frame["ts"].dt.tz) == "Europe/Berlin"  # raw: the returned type comes back as it was


def test_a_timestamp_and_dimension_multiindex_becomes_the_columns() -> None:
    # The levels were dropped, and validation said the job's columns were missing.
    frame = read_window(python_job("aggregated"), START, END)

    assert list(frame.columns) == ["ts", "host", "value"]
    assert frame["host"].tolist() == ["a", "a"] and frame["value"].tolist() == [2.5, 4.5]


def test_make_source_builds_a_python_reader() -> None:
    assert type(make_source(python_job("six_hours"))) is PythonReader


@pytest.mark.parametrize(
    ("function", "error", "problem"),
    [
        (
            "no_such_package.metrics:read",
            ConfigError,
            r"cannot import module 'no_such_package\.metrics' \(ModuleNotFoundError.*PYTHONPATH",
        ),
        ("missing_function", ConfigError, r"module '[\w.]+test_python' has no attribute 'missing_function'\. Check the name"),
        (
            "NOT_A_FUNCTION",
            ConfigError,
            r"'NOT_A_FUNCTION' is not callable \(its type is 'int'\)\. Point `callable` at a function",
        ),
        (
            "returns_list",
            SourceError,
            r"the callable returned builtins\.list, not a pandas DataFrame\. Return a pandas\.DataFrame",
        ),
        ("raises", SourceError, r"the callable raised ConnectionError: upstream API answered 503\. Fix the function"),
        ("mixed_zones", SourceError, r"column 'ts' mixes timestamps with and without a time zone"),
        ("twice_value", SourceError, r"the callable returned more than one column named 'value'\. Return each"),
    ],
    ids=["no-module", "no-attribute", "not-callable", "wrong-type", "raises", "mixed-zones", "duplicate-column"],
)
def test_failures_name_the_job_the_callable_and_the_window(function: str, error: type, problem: str) -> None:
    job = python_job(function)

    with pytest.raises(
        error, match=rf"^job 'cpu_load': cannot read python source '[\w.:]+' for window {WINDOW_TEXT}: {problem}"
    ) as caught:
        read_window(job, START, END)
    if function == "raises":
        assert isinstance(caught.value.__cause__, ConnectionError)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"callable": "metrics.read"}, r"source\.python\.callable: String should match pattern"),
        ({"callable": f"{HERE}:six_hours", "params": {"start": 1}}, r"must not set \['start'\]: start and end are the window"),
        ({"callable": f"{HERE}:six_hours", "module": "x"}, r"source\.python\.module: unknown field"),
    ],
    ids=["no-colon", "window-param", "unknown-field"],
)
def test_bad_python_source_config_is_refused_at_parse(source: dict[str, Any], problem: str) -> None:
    data = {
        "name": "cpu_load",
        "source": {"kind": "python", **source},
        "timestamp": "ts",
        "frequency": "1h",
        "features": ["value"],
        "model": {"kind": "iforest"},
    }

    with pytest.raises(ConfigError, match=problem):
        parse_job(data, source="jobs/cpu_load.yaml")


def test_reader_refuses_another_kind_of_source(make_job) -> None:
    with pytest.raises(TypeError, match="PythonReader reads python sources, not 'file'"):
        PythonReader(make_job({"kind": "file", "path": "m.csv"}))
