from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import boto3
import pandas as pd
import pytest

from pipelines.errors import SourceError
from pipelines.sources import FileReader, read_window
from pipelines.sources.base import parse_timestamps


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


START, END = at("2024-01-01 01:00"), at("2024-01-01 03:00")
WINDOW_TEXT = r"\[2024-01-01T01:00:00\+00:00, 2024-01-01T03:00:00\+00:00\)"


def write(frame: pd.DataFrame, path: str, fmt: str, storage_options: dict | None = None) -> None:
    if fmt == "csv":
        frame.to_csv(path, index=False, storage_options=storage_options)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True, storage_options=storage_options)
    else:
        frame.to_parquet(path, index=False, storage_options=storage_options)


def hours(frame: pd.DataFrame) -> list[str]:
    return [ts.strftime("%H:%M") for ts in parse_timestamps(frame["ts"])]


def typed(tz: str | None, unit: str = "us") -> Callable[[pd.Series], pd.Series]:
    def convert(ts: pd.Series) -> pd.Series:
        parsed = pd.to_datetime(ts).astype(f"datetime64[{unit}]")
        return parsed if tz is None else parsed.dt.tz_localize("UTC").dt.tz_convert(tz)

    return convert


@pytest.mark.parametrize(
    ("fmt", "convert"),
    [
        ("csv", None),
        ("jsonl", None),
        ("parquet", None),
        ("parquet", typed(None)),
        ("parquet", typed("UTC")),
        ("parquet", typed("Europe/Berlin", "ms")),
    ],
    ids=["csv", "jsonl", "parquet-text", "parquet-naive", "parquet-utc", "parquet-berlin-ms"],
)
def test_window_is_exact_at_both_bounds(make_job, hourly, tmp_path: Path, fmt: str, convert) -> None:
    if convert:
        hourly = hourly.assign(ts=convert(hourly["ts"]))
    write(hourly, str(tmp_path / f"m.{fmt}"), fmt)

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / f"m.{fmt}")}), START, END)

    assert list(frame.columns) == ["ts", "host", "value"]
    assert hours(frame) == ["01:00", "02:00"]
    assert frame["value"].tolist() == [1.0, 2.0]
    assert frame.index.equals(pd.RangeIndex(2))
    if convert:  # raw: the stored type comes back as it was
        assert frame["ts"].dtype == hourly["ts"].dtype


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_unbounded_sides_read_everything_on_that_side(make_job, hourly, tmp_path: Path, fmt: str) -> None:
    write(hourly, str(tmp_path / f"m.{fmt}"), fmt)
    job = make_job({"kind": "file", "path": str(tmp_path / f"m.{fmt}")})

    assert hours(read_window(job, None, END)) == ["00:00", "01:00", "02:00"]
    assert hours(read_window(job, START, None)) == ["01:00", "02:00", "03:00", "04:00", "05:00"]
    assert len(read_window(job, None, None)) == 6


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_empty_window_gives_empty_frame_with_the_columns(make_job, hourly, tmp_path: Path, fmt: str) -> None:
    write(hourly, str(tmp_path / f"m.{fmt}"), fmt)

    job = make_job({"kind": "file", "path": str(tmp_path / f"m.{fmt}")})

    frame = read_window(job, at("2025-01-01"), None)

    assert frame.empty and list(frame.columns) == ["ts", "host", "value"]


def test_glob_reads_matching_files_in_name_order(make_job, hourly, tmp_path: Path) -> None:
    write(hourly.iloc[3:], str(tmp_path / "part-2.csv"), "csv")
    write(hourly.iloc[:3], str(tmp_path / "part-1.csv"), "csv")
    write(hourly, str(tmp_path / "other.csv"), "csv")

    job = make_job({"kind": "file", "path": str(tmp_path / "part-*.csv")})

    frame = read_window(job, at("2024-01-01 02:00"), at("2024-01-01 04:00"))

    assert hours(frame) == ["02:00", "03:00"]
    assert frame.index.equals(pd.RangeIndex(2))


def test_folder_reads_its_files_but_not_marker_files(make_job, hourly, tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    write(hourly.iloc[:2], str(folder / "a.parquet"), "parquet")
    write(hourly.iloc[2:], str(folder / "b.parquet"), "parquet")
    (folder / "_SUCCESS").write_text("")

    frame = read_window(make_job({"kind": "file", "path": str(folder)}), START, END)

    assert hours(frame) == ["01:00", "02:00"]


def test_relative_path_resolves_against_the_base_dir(make_job, hourly, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))
    (tmp_path / "data").mkdir()
    write(hourly, str(tmp_path / "data" / "m.jsonl"), "jsonl")

    job = make_job({"kind": "file", "path": "data/m.jsonl"})

    assert hours(read_window(job, START, END)) == ["01:00", "02:00"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_reads_s3(make_job, hourly, s3_bucket, tmp_path: Path, fmt: str) -> None:
    bucket, options = s3_bucket
    write(hourly.iloc[:3], f"s3://{bucket}/m/1.{fmt}", fmt, options)
    job = make_job({"kind": "file", "path": f"s3://{bucket}/m/*.{fmt}", "storage_options": options})
    assert hours(read_window(job, START, END)) == ["01:00", "02:00"]

    # A file that another writer lands between two reads of this process is seen by the second.
    local = tmp_path / f"2.{fmt}"
    write(hourly.iloc[3:], str(local), fmt)
    boto3.client("s3", endpoint_url=options["endpoint_url"]).upload_file(str(local), bucket, f"m/2.{fmt}")
    assert hours(read_window(job, START, None)) == ["01:00", "02:00", "03:00", "04:00", "05:00"]


def test_s3_path_that_does_not_exist_is_a_source_error(make_job, s3_bucket) -> None:
    bucket, options = s3_bucket
    job = make_job({"kind": "file", "path": f"s3://{bucket}/nope.csv", "storage_options": options})

    with pytest.raises(SourceError, match=rf"'cpu_load'.*s3://{bucket}/nope.csv.*no such file or folder"):
        read_window(job, START, END)


def test_aware_timestamps_are_compared_in_utc(make_job, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "ts,host,value\n"
        "2024-01-01T01:00:00+01:00,a,1\n"  # 00:00 UTC: before the window
        "2024-01-01T03:30:00+02:00,a,2\n"  # 01:30 UTC
        "2024-01-01T02:59:59Z,a,3\n"
        "2024-01-01T03:00:00Z,a,4\n"  # the end is exclusive
    )

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / "m.csv")}), START, END)

    assert frame["value"].tolist() == [2, 3]
    assert frame["ts"].tolist() == ["2024-01-01T03:30:00+02:00", "2024-01-01T02:59:59Z"]


def test_naive_and_aware_timestamps_mixed_are_a_source_error(make_job, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("ts,host,value\n2024-01-01T01:00:00Z,a,1\n2024-01-01 02:00:00,a,2\n")

    problem = r"mixes timestamps with and without a time zone.*'2024-01-01 02:00:00'"
    with pytest.raises(SourceError, match=rf"'cpu_load'.*m\.csv.*{WINDOW_TEXT}: column 'ts' {problem}"):
        read_window(make_job({"kind": "file", "path": str(tmp_path / "m.csv")}), START, END)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_unparseable_and_missing_timestamps_are_kept_in_place(make_job, tmp_path: Path, fmt: str) -> None:
    rows = pd.DataFrame(
        {
            "ts": ["2024-01-01 00:00:00", "yesterday", "2024-01-01 01:00:00", None, "2024-01-01 05:00:00"],
            "host": "a",
            "value": [0.0, 1.0, 2.0, 3.0, 4.0],
        }
    )
    write(rows, str(tmp_path / f"m.{fmt}"), fmt)

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / f"m.{fmt}")}), START, END)

    assert frame["value"].tolist() == [1.0, 2.0, 3.0]
    assert frame["ts"].iloc[0] == "yesterday" and pd.isna(frame["ts"].iloc[2])


def test_typed_parquet_keeps_rows_without_timestamp(make_job, hourly, tmp_path: Path) -> None:
    hourly = hourly.assign(ts=typed("UTC")(hourly["ts"]))
    hourly.loc[4, "ts"] = pd.NaT
    write(hourly, str(tmp_path / "m.parquet"), "parquet")

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / "m.parquet")}), START, END)

    assert frame["value"].tolist() == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_missing_columns_are_left_to_validation(make_job, hourly, tmp_path: Path, fmt: str) -> None:
    write(hourly.drop(columns=["value"]), str(tmp_path / f"m.{fmt}"), fmt)

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / f"m.{fmt}")}), START, END)

    assert list(frame.columns) == ["ts", "host"] and len(frame) == 2


def test_csv_dimensions_keep_their_text_and_a_byte_order_mark_is_ignored(make_job, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("ts,host,value\n2024-01-01 01:00:00,007,1.5\n", encoding="utf-8-sig")

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / "m.csv")}), START, END)

    assert list(frame.columns) == ["ts", "host", "value"]
    assert frame["host"].tolist() == ["007"] and frame["value"].tolist() == [1.5]


def _truncated_parquet(tmp_path: Path, hourly: pd.DataFrame) -> str:
    write(hourly, str(tmp_path / "m.parquet"), "parquet")
    data = (tmp_path / "m.parquet").read_bytes()
    (tmp_path / "m.parquet").write_bytes(data[: len(data) // 2])
    return "m.parquet"


def _latin1_csv(tmp_path: Path, hourly: pd.DataFrame) -> str:
    (tmp_path / "m.csv").write_bytes("ts,host,value\n2024-01-01 01:00:00,Zürich,1\n".encode("latin-1"))
    return "m.csv"


def _csv_named_parquet(tmp_path: Path, hourly: pd.DataFrame) -> str:
    write(hourly, str(tmp_path / "m.parquet"), "csv")
    return "m.parquet"


def _csv_given_format_parquet(tmp_path: Path, hourly: pd.DataFrame) -> str:
    write(hourly, str(tmp_path / "m.csv"), "csv")
    return "m.csv"


def _unknown_suffix(tmp_path: Path, hourly: pd.DataFrame) -> str:
    write(hourly, str(tmp_path / "m.txt"), "csv")
    return "m.txt"


def _empty_folder(tmp_path: Path, hourly: pd.DataFrame) -> str:
    (tmp_path / "empty").mkdir()
    return "empty"


@pytest.mark.parametrize(
    ("make_file", "fmt", "problem", "wrapped"),
    [
        (lambda tmp_path, hourly: "missing.csv", None, r"no such file or folder\. Check `path`", True),
        (lambda tmp_path, hourly: "*.csv", None, r"no file matches the pattern\. Check `path`", False),
        (_empty_folder, None, r"the folder holds no files", False),
        (_truncated_parquet, None, r"is not valid parquet .*Check that the file is complete", True),
        (_latin1_csv, None, r"is not valid csv .*'utf-8' codec can't decode.*complete UTF-8 csv", True),
        (_csv_named_parquet, None, r"is not valid parquet", True),
        (_csv_given_format_parquet, "parquet", r"is not valid parquet .*set `format`", True),
        (_unknown_suffix, None, r"cannot tell the format from the file suffixes \['\.txt'\]\. Set `format`", False),
    ],
    ids=[
        "missing",
        "glob-nothing",
        "empty-folder",
        "truncated-parquet",
        "latin1-csv",
        "csv-named-parquet",
        "csv-as-parquet",
        "unknown-suffix",
    ],
)
def test_unreadable_files_are_source_errors_naming_job_path_and_window(
    make_job, hourly, tmp_path: Path, make_file, fmt: str | None, problem: str, wrapped: bool
) -> None:
    path = str(tmp_path / make_file(tmp_path, hourly))
    job = make_job({"kind": "file", "path": path, "format": fmt})

    expected = rf"^job 'cpu_load': cannot read file source '{re.escape(path)}' for window {WINDOW_TEXT}: .*{problem}"
    with pytest.raises(SourceError, match=expected) as caught:
        read_window(job, START, END)
    assert (caught.value.__cause__ is not None) == wrapped


def test_relative_missing_path_says_where_it_was_looked_for(make_job, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))

    job = make_job({"kind": "file", "path": "data/m.csv"})

    with pytest.raises(SourceError, match=rf"relative paths resolve against {tmp_path}; ANOMALY_PIPELINES_BASE_DIR"):
        read_window(job, START, END)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_permission_source_error(make_job, hourly, tmp_path: Path) -> None:
    write(hourly, str(tmp_path / "m.csv"), "csv")
    (tmp_path / "m.csv").chmod(0)

    job = make_job({"kind": "file", "path": str(tmp_path / "m.csv")})

    with pytest.raises(SourceError, match=r"permission denied reading .*m\.csv.*Grant this process read access"):
        read_window(job, START, END)


def test_naive_window_bound_is_refused(make_job, hourly, tmp_path: Path) -> None:
    write(hourly, str(tmp_path / "m.csv"), "csv")

    reader = FileReader(make_job({"kind": "file", "path": str(tmp_path / "m.csv")}))

    with pytest.raises(ValueError, match="window bounds must be timezone-aware"):
        reader.read(datetime(2024, 1, 1), None)


def test_reader_refuses_another_kind_of_source(make_job) -> None:
    job = make_job({"kind": "sql", "connection": {"url": "sqlite://"}, "query": "SELECT :start < :end"})

    with pytest.raises(TypeError, match="FileReader reads file sources, not 'sql'"):
        FileReader(job)

