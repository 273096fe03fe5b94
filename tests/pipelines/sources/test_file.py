from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import pickle
import re
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import boto3
import pandas as pd
import pytest
from fsspec.compression import compr
from fsspec.core import url_to_fs

from pipelines.errors import ConfigError, DataValidationError, SourceConfigError, SourceDataError, SourceError
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
    elif fmt == "json":
        frame.to_json(path, orient="records", storage_options=storage_options)
    elif fmt == "pickle":
        frame.to_pickle(path, storage_options=storage_options)
    else:
        frame.to_parquet(path, index=False, storage_options=storage_options)


def file_source(path: str, fmt: str | None = None, **extra: object) -> dict:
    """A file source config; pickles are allowed because these tests wrote them."""
    return {"kind": "file", "path": path, **({"allow_pickle": True} if fmt == "pickle" else {}), **extra}


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
        ("json", None),
        ("pickle", None),
        ("pickle", typed("Europe/Berlin")),
        ("parquet", None),
        ("parquet", typed(None)),
        ("parquet", typed("UTC")),
        ("parquet", typed("Europe/Berlin", "ms")),
    ],
    ids=[
        "csv",
        "jsonl",
        "json",
        "pickle-text",
        "pickle-berlin",
        "parquet-text",
        "parquet-naive",
        "parquet-utc",
        "parquet-berlin-ms",
    ],
)
def test_window_is_exact_at_both_bounds(make_job, hourly, tmp_path: Path, fmt: str, convert) -> None:
    if convert:
        hourly = hourly.assign(ts=convert(hourly["ts"]))
    suffix = {"pickle": "pkl"}.get(fmt, fmt)
    write(hourly, str(tmp_path / f"m.{suffix}"), fmt)

    frame = read_window(make_job(file_source(str(tmp_path / f"m.{suffix}"), fmt)), START, END)

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


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet", "pickle"])
def test_empty_window_gives_empty_frame_with_the_columns(make_job, hourly, tmp_path: Path, fmt: str) -> None:
    write(hourly, str(tmp_path / f"m.{fmt}"), fmt)

    job = make_job(file_source(str(tmp_path / f"m.{fmt}"), fmt, format=fmt))

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


def test_glob_skips_hidden_and_hadoop_files_unless_the_pattern_names_them(make_job, hourly, tmp_path: Path) -> None:
    # fsspec's "*" matches ".part-0.csv" and "**" descends into a writer's "_temporary/": their
    # rows were read a second time.
    for name in ("date=2024-01-01/part-0.csv", "date=2024-01-01/.part-0.csv", "_temporary/0/date=2024-01-01/part-0.csv"):
        (tmp_path / "m" / name).parent.mkdir(parents=True, exist_ok=True)
        write(hourly, str(tmp_path / "m" / name), "csv")

    for pattern in ("m/**/*.csv", "m/*/*.csv", "m/date=*/*"):
        assert hours(read_window(make_job(file_source(str(tmp_path / pattern))), START, END)) == ["01:00", "02:00"]
    named = make_job(file_source(str(tmp_path / "m" / "_temporary" / "*" / "*" / "*.csv")))
    assert hours(read_window(named, START, END)) == ["01:00", "02:00"]


def test_a_path_whose_name_holds_brackets_is_read_as_written(make_job, hourly, tmp_path: Path) -> None:
    # "[final]" as a pattern matches one letter, never the file's own name.
    for name in ("report [final].csv", "export [2024]/part.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        hourly.to_csv(tmp_path / name, index=False)
    for path in (tmp_path / "report [final].csv", tmp_path / "export [2024]"):
        assert hours(read_window(make_job(file_source(str(path))), START, END)) == ["01:00", "02:00"]
    # A pattern that matches nothing is still said to be one.
    with pytest.raises(SourceError, match="no file matches the pattern"):
        read_window(make_job(file_source(str(tmp_path / "report [x].csv"))), START, END)


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
def test_files_disagreeing_on_a_time_zone_are_named(make_job, tmp_path: Path, fmt: str) -> None:
    (tmp_path / "data").mkdir()
    for name, stamp in (("a", "2024-01-01 01:00:00"), ("b", "2024-01-01T02:00:00+01:00")):
        write(pd.DataFrame({"ts": [stamp], "host": ["a"], "value": [1.0]}), str(tmp_path / "data" / f"{name}.{fmt}"), fmt)
    job = make_job({"kind": "file", "path": str(tmp_path / "data")})

    problem = (
        rf"column 'ts' has timestamps without a time zone in .*a\.{fmt} \(row 1: '2024-01-01 01:00:00'\) "
        rf"and with one in .*b\.{fmt} \(row 1: '2024-01-01T02:00:00\+01:00'\).*in every file\."
    )
    with pytest.raises(SourceDataError, match=rf"'cpu_load'.*{WINDOW_TEXT}: {problem}"):
        read_window(job, START, END)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_instant_of_a_series_in_two_files_names_both(make_job, hourly, tmp_path: Path, fmt: str) -> None:
    # A file delivered twice under two names: validation saw one batch and could name only its
    # row numbers, which say nothing of the files.
    (tmp_path / "data").mkdir()
    write(hourly, str(tmp_path / "data" / f"m.{fmt}"), fmt)
    again = hourly.iloc[1:3].assign(ts=["2024-01-01T01:00", "2024-01-01 02:00:00.000"])  # the same instants, written otherwise
    write(again, str(tmp_path / "data" / f"m (1).{fmt}"), fmt)
    job = make_job({"kind": "file", "path": str(tmp_path / "data")})

    problem = (
        rf"4 rows share their instant and series with a row of another file; the first: 2024-01-01T01:00:00\+00:00 of series "
        rf"host=b is in \S+m \(1\)\.{fmt} \(row 1\) and \S+m\.{fmt} \(row 2\), and which one to keep cannot be told\. "
        r"Remove the file delivered twice"
    )
    with pytest.raises(SourceDataError, match=rf"'cpu_load'.*{WINDOW_TEXT}: {problem}"):
        read_window(job, START, END)
    # Other series, or other instants, in another file are no repeat.
    write(again.assign(host=["c", "c"]), str(tmp_path / "data" / f"m (1).{fmt}"), fmt)
    assert len(read_window(job, START, END)) == 4


def test_a_file_mixing_time_zones_among_several_is_named(make_job, hourly, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write(hourly, str(tmp_path / "data" / "a.csv"), "csv")
    (tmp_path / "data" / "b.csv").write_text("ts,host,value\n2024-01-01 02:00:00,a,1\n2024-01-01T02:00:00Z,b,2\n")

    with pytest.raises(SourceDataError, match=r"column 'ts' of \S+b\.csv mixes timestamps with and without a time zone"):
        read_window(make_job({"kind": "file", "path": str(tmp_path / "data")}), START, END)


def test_each_text_file_is_cut_to_the_window_before_the_files_are_gathered(
    make_job, hourly, tmp_path: Path, monkeypatch
) -> None:
    # Gathering every file whole before cutting held them all in memory at once (1.1 GB to read
    # one day of 350 MB of csv): only the window's rows may reach the concatenation.
    (tmp_path / "data").mkdir()
    for day in range(5):
        write(hourly.assign(ts=hourly["ts"].str.replace("01-01", f"01-0{day + 1}")), str(tmp_path / "data" / f"{day}.csv"), "csv")
    gathered: list[int] = []
    concat = pd.concat
    monkeypatch.setattr(pd, "concat", lambda frames, **kw: gathered.append(sum(map(len, frames))) or concat(frames, **kw))

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / "data")}), START, END)

    assert hours(frame) == ["01:00", "02:00"] and gathered == [2]


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


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("lacking", [0, 1], ids=["first-file", "later-file"])
def test_a_column_missing_from_one_of_several_files_names_the_column_and_the_file(
    make_job, hourly, tmp_path: Path, fmt: str, lacking: int
) -> None:
    # Arrow takes the first file's schema: the column was dropped from every file (first) or
    # read as nulls (later), as csv and jsonl read it as nulls.
    if fmt == "parquet":
        hourly = hourly.assign(ts=pd.to_datetime(hourly["ts"]).dt.tz_localize("UTC"))
    parts = [hourly.iloc[:3], hourly.iloc[3:]]
    parts[lacking] = parts[lacking].drop(columns=["value"])
    for index, part in enumerate(parts):
        write(part, str(tmp_path / f"part-{index}.{fmt}"), fmt)

    with pytest.raises(SourceError) as raised:
        read_window(make_job({"kind": "file", "path": str(tmp_path)}), None, None)

    message = str(raised.value)
    assert "job 'cpu_load'" in message and "column 'value' is missing from 1 of 2 files" in message
    assert f"part-{lacking}.{fmt}" in message and "Write 'value' into every file" in message
    assert isinstance(raised.value, DataValidationError)  # a retry reads the same files: fail at once


def test_an_empty_file_among_others_lacks_no_column(make_job, hourly, tmp_path: Path) -> None:
    write(hourly, str(tmp_path / "part-0.jsonl"), "jsonl")
    (tmp_path / "part-1.jsonl").write_text("")

    assert len(read_window(make_job({"kind": "file", "path": str(tmp_path)}), START, END)) == 2


@pytest.mark.parametrize("empty", [b"", b"\n", gzip.compress(b"")], ids=["nothing", "a-blank-line", "gzip-of-nothing"])
def test_an_empty_csv_file_among_others_holds_no_rows(make_job, hourly, tmp_path: Path, empty: bytes) -> None:
    # Spark leaves an empty part file per empty partition; it failed every read as "truncated or corrupt".
    write(hourly, str(tmp_path / "part-0.csv"), "csv")
    (tmp_path / ("part-1.csv.gz" if empty.startswith(b"\x1f\x8b") else "part-1.csv")).write_bytes(empty)
    job = make_job({"kind": "file", "path": str(tmp_path)})

    assert hours(read_window(job, START, END)) == ["01:00", "02:00"]
    assert [len(chunk) for chunk in FileReader(job).iter_chunks(4)] == [4, 2]


@pytest.mark.parametrize(
    ("other", "says"),
    [
        (
            {"value": ["x", "y", "z"]},
            r"column 'value' has different types in different files: "
            r"double in \S*part-0\.parquet, \w*string in \S*part-1\.parquet",
        ),
        (
            {"ts": pd.date_range("2024-01-01 03:00", periods=3, freq="h")},
            r"column 'ts' has different types .*timestamp\[\w+\] in \S*part-1\.parquet",
        ),
    ],
    ids=["text-and-numbers", "naive-and-aware"],
)
def test_parquet_files_disagreeing_on_a_type_name_the_column_and_files(make_job, hourly, tmp_path: Path, other, says) -> None:
    hourly = hourly.assign(ts=pd.to_datetime(hourly["ts"]).dt.tz_localize("UTC"))
    write(hourly.iloc[:3], str(tmp_path / "part-0.parquet"), "parquet")
    write(hourly.iloc[3:].reset_index(drop=True).assign(**other), str(tmp_path / "part-1.parquet"), "parquet")

    with pytest.raises(SourceError, match=says) as raised:
        read_window(make_job({"kind": "file", "path": str(tmp_path)}), START, END)
    assert "truncated or corrupt" not in str(raised.value)


def test_parquet_files_with_compatible_types_are_read_together(make_job, hourly, tmp_path: Path) -> None:
    # Integers in the first file and floats in the next; the same instants in two zones.
    hourly = hourly.assign(ts=pd.to_datetime(hourly["ts"]).dt.tz_localize("UTC"))
    write(hourly.iloc[:3].astype({"value": "int64"}), str(tmp_path / "part-0.parquet"), "parquet")
    later = hourly.iloc[3:].assign(ts=hourly["ts"].iloc[3:].dt.tz_convert("Asia/Tokyo"), value=[3.5, 4.5, 5.5])
    write(later, str(tmp_path / "part-1.parquet"), "parquet")

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path)}), at("2024-01-01 02:00"), at("2024-01-01 05:00"))

    assert frame["value"].tolist() == [2.0, 3.5, 4.5]
    assert list(parse_timestamps(frame["ts"])) == [at("2024-01-01 02:00"), at("2024-01-01 03:00"), at("2024-01-01 04:00")]


def test_each_parquet_file_of_several_is_opened_once(make_job, hourly, s3_bucket, monkeypatch) -> None:
    # Comparing the files' schemas read every footer, then a new dataset of the same paths read
    # them all again: two requests per file to the object store, for files outside the window too.
    from s3fs import S3FileSystem

    bucket, options = s3_bucket
    hourly = hourly.assign(ts=pd.to_datetime(hourly["ts"]).dt.tz_localize("UTC"))
    for part in range(4):
        write(hourly.assign(ts=hourly["ts"] + pd.Timedelta(days=part)), f"s3://{bucket}/m/part-{part}.parquet", "parquet", options)
    opened: list[str] = []
    open_file = S3FileSystem._open
    monkeypatch.setattr(S3FileSystem, "_open", lambda fs, path, *a, **kw: opened.append(path.rsplit("/", 1)[-1]) or open_file(fs, path, *a, **kw))

    frame = read_window(make_job({"kind": "file", "path": f"s3://{bucket}/m", "storage_options": options}), START, END)

    assert hours(frame) == ["01:00", "02:00"]
    # The files outside the window are opened once, for their footers; part-0 also for its schema and its rows.
    assert [name for name in opened if name != "part-0.parquet"] == [f"part-{part}.parquet" for part in (1, 2, 3)]


@pytest.mark.parametrize(("first", "later"), [("us", "ms"), ("ms", "ms"), ("ns", "us")])
def test_parquet_files_in_other_zones_and_units_are_read_together(make_job, hourly, tmp_path: Path, first, later) -> None:
    # Arrow could not compare the statistics of a file differing from the common type (UTC,
    # the finest unit) in both zone and unit with the window: "truncated or corrupt".
    ts = pd.to_datetime(hourly["ts"]).dt.tz_localize("UTC")
    write(hourly.iloc[:3].assign(ts=ts.iloc[:3].astype(f"datetime64[{first}, UTC]")), str(tmp_path / "p0.parquet"), "parquet")
    tokyo = ts.iloc[3:].dt.tz_convert("Asia/Tokyo").astype(f"datetime64[{later}, Asia/Tokyo]")
    write(hourly.iloc[3:].assign(ts=tokyo), str(tmp_path / "p1.parquet"), "parquet")

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path)}), at("2024-01-01 02:00"), at("2024-01-01 05:00"))

    assert hours(frame) == ["02:00", "03:00", "04:00"]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [("1000-01-01", "2024-01-01 02:00", ["00:00", "01:00"]), ("2024-01-01 04:00", "9999-01-01", ["04:00", "05:00"]),
     ("2300-01-01", None, []), (None, "1600-01-01", [])],
)
def test_window_bounds_beyond_nanosecond_timestamps_read_parquet(make_job, hourly, tmp_path: Path, start, end, expected) -> None:
    # Every nanosecond timestamp lies in 1677-2262; --start 1000-01-01 was a raw OverflowError.
    write(hourly.assign(ts=pd.to_datetime(hourly["ts"]).astype("datetime64[ns]")), str(tmp_path / "m.parquet"), "parquet")

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / "m.parquet")}), start and at(start), end and at(end))

    assert hours(frame) == expected


def test_a_categorical_column_in_one_parquet_file_reads_with_the_plain_one_of_another(make_job, hourly, tmp_path: Path) -> None:
    # pandas writes a categorical column as an Arrow dictionary of its values.
    hourly = hourly.assign(ts=pd.to_datetime(hourly["ts"]).dt.tz_localize("UTC"))
    write(hourly.iloc[:3].astype({"host": "category", "value": "category"}), str(tmp_path / "part-0.parquet"), "parquet")
    write(hourly.iloc[3:], str(tmp_path / "part-1.parquet"), "parquet")

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path)}), at("2024-01-01 02:00"), at("2024-01-01 05:00"))

    assert frame["host"].tolist() == ["a", "b", "a"] and frame["value"].tolist() == [2.0, 3.0, 4.0]


def test_an_empty_parquet_file_without_columns_among_others_lacks_no_column(make_job, hourly, tmp_path: Path) -> None:
    write(hourly.assign(ts=pd.to_datetime(hourly["ts"])), str(tmp_path / "part-0.parquet"), "parquet")
    write(pd.DataFrame(), str(tmp_path / "part-1.parquet"), "parquet")

    assert hours(read_window(make_job({"kind": "file", "path": str(tmp_path)}), START, END)) == ["01:00", "02:00"]


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


def _object_json(tmp_path: Path, hourly: pd.DataFrame) -> str:
    (tmp_path / "m.json").write_text('{"ts": "2024-01-01 01:00:00", "host": "a", "value": 1}')
    return "m.json"


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
        (
            _truncated_parquet,
            None,
            r"m\.parquet is not valid parquet: it may be truncated or corrupt .*Check that the file is complete",
            True,
        ),
        (
            _latin1_csv,
            None,
            r"m\.csv is not valid utf-8 text: byte\(s\) fc at byte offset 35 \(line 2\) cannot be decoded \(invalid start byte\)\. "
            r"Set `encoding` in the source",
            True,
        ),
        (_csv_named_parquet, None, r"is not valid parquet", True),
        (_csv_given_format_parquet, "parquet", r"is not valid parquet: .*set `format`", True),
        (_object_json, None, r"m\.json is not valid json: .*must hold one array of records", True),
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
        "object-json",
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


@pytest.mark.parametrize(
    ("make_file", "permanent"),
    [
        (lambda tmp_path, hourly: "missing.csv", None),  # the data may land later
        (_truncated_parquet, None),  # a file still being written may complete
        (_latin1_csv, DataValidationError),
        (_unknown_suffix, ConfigError),
    ],
    ids=["missing", "truncated-parquet", "latin1-csv", "unknown-suffix"],
)
def test_source_errors_no_retry_can_fix_are_also_data_or_config_errors(
    make_job, hourly, tmp_path: Path, make_file, permanent: type[Exception] | None
) -> None:
    # Airflow's tasks fail data and configuration errors at once and retry the others.
    job = make_job({"kind": "file", "path": str(tmp_path / make_file(tmp_path, hourly))})
    with pytest.raises(SourceError) as caught:
        read_window(job, START, END)
    assert isinstance(caught.value, (ConfigError, DataValidationError)) == (permanent is not None)
    if permanent is not None:
        assert isinstance(caught.value, permanent)


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


# Pickle runs code when it is read, so it is refused unless the job allows it.


class _TouchWhenUnpickled:
    """Unpickling this creates ``marker``: proof that reading a pickle runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_pickle_found_by_its_suffix_is_refused_without_being_opened(make_job, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(_TouchWhenUnpickled(marker)))

    with pytest.raises(
        ConfigError,
        match=r"^job 'cpu_load': file source '.*m\.pkl' holds pickle files, and unpickling runs arbitrary code: convert the data to Parquet, or set `allow_pickle: true`",
    ):
        read_window(make_job({"kind": "file", "path": str(tmp_path / "m.pkl")}), START, END)
    assert not marker.exists()

    # Allowed, the pickle runs; what it gives back is not a frame, and that is said.
    with pytest.raises(SourceError, match=r"m\.pkl is not valid pickle: .*it holds a builtins\.NoneType, not a pandas DataFrame"):
        read_window(make_job({"kind": "file", "path": str(tmp_path / "m.pkl"), "allow_pickle": True}), START, END)
    assert marker.exists()


def test_format_pickle_without_allow_pickle_is_refused_at_parse(make_job, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"source\.file: format pickle needs allow_pickle: true, because unpickling runs arbitrary code"
    ):
        make_job({"kind": "file", "path": str(tmp_path / "m.bin"), "format": "pickle"})


def test_truncated_pickle_is_a_source_error(make_job, hourly, tmp_path: Path) -> None:
    data = pickle.dumps(hourly)
    (tmp_path / "m.pkl").write_bytes(data[: len(data) // 2])

    with pytest.raises(SourceError, match=r"m\.pkl is not valid pickle: .*cannot unpickle it"):
        read_window(make_job(file_source(str(tmp_path / "m.pkl"), "pickle")), START, END)


# Two columns of one name.


def _pickle_with_value_twice(path: Path) -> None:
    pd.DataFrame([["2024-01-01 01:00:00", "a", 1.0, 2.0]], columns=["ts", "host", "value", "value"]).to_pickle(path)


def _csv_with_value_twice(path: Path) -> None:
    path.write_text("ts,host,value,value\n2024-01-01 01:00:00,a,1,2\n")


@pytest.mark.parametrize(
    ("name", "make"), [("m.pkl", _pickle_with_value_twice), ("m.csv", _csv_with_value_twice)], ids=["pickle", "csv"]
)
def test_a_file_with_two_columns_of_one_name_the_job_reads_is_refused(make_job, tmp_path: Path, name: str, make) -> None:
    make(tmp_path / name)
    path = str(tmp_path / name)
    reader = FileReader(make_job(file_source(path, "pickle" if name.endswith("pkl") else None)))
    says = rf"^job 'cpu_load': cannot read file source '{re.escape(path)}'.*: {re.escape(path)} holds 2 columns named 'value'"

    for read in (lambda: reader.read(START, END), lambda: list(reader.iter_chunks(10))):
        with pytest.raises(DataValidationError, match=says):
            read()


def test_a_csv_column_named_like_a_renamed_repeat_is_read(make_job, tmp_path: Path) -> None:
    # pandas would rename a second "value" to "value.1": here the file names it so itself.
    (tmp_path / "m.csv").write_text("ts,host,value,value.1\n2024-01-01 01:00:00,a,1,2\n")

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / "m.csv")}), START, END)

    assert frame["value"].tolist() == [1]


# Delimiters and decimal commas.

EUROPEAN = "ts;host;value\n2024-01-01 01:00:00;007;1,5\n2024-01-01 02:00:00;b;-2,25\n"


@pytest.mark.parametrize(
    ("name", "text", "options"),
    [
        ("m.csv", EUROPEAN, {"delimiter": ";", "decimal": ","}),
        ("m.csv.gz", EUROPEAN, {"delimiter": ";", "decimal": ","}),
        ("m.csv", EUROPEAN.replace(";", "\t").replace(",", "."), {"delimiter": "\t"}),
    ],
    ids=["semicolon-decimal-comma", "gzip", "tab"],
)
def test_delimiter_and_decimal_options_read_csv_whole_and_in_chunks(
    make_job, tmp_path: Path, name: str, text: str, options: dict
) -> None:
    data = text.encode("cp1252")
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    reader = FileReader(make_job(file_source(str(tmp_path / name), **options)))

    for frame in (reader.read(START, END), pd.concat(list(reader.iter_chunks(1)), ignore_index=True)):
        assert list(frame.columns) == ["ts", "host", "value"]
        assert frame["host"].tolist() == ["007", "b"] and frame["value"].tolist() == [1.5, -2.25]


def test_a_csv_holding_none_of_the_jobs_columns_says_so_whole_and_in_chunks(make_job, tmp_path: Path) -> None:
    # pandas keeps no row when it keeps no column: the file read as empty, and the run said
    # "no rows" (or, for a one-off input, "holds 0 rows; the job needs at least 24").
    (tmp_path / "m.csv").write_text("when,site,reading\n2024-01-01 01:00:00,a,1\n")
    reader = FileReader(make_job(file_source(str(tmp_path / "m.csv"))))

    for read in (lambda: reader.read(START, END), lambda: list(reader.iter_chunks(1))):
        with pytest.raises(SourceConfigError) as info:
            read()
        assert "m.csv has the header 'when,site,reading', which holds none of the job's columns (ts, host, value)" in str(info.value)
        assert str(info.value).endswith("Check that `path` points at this job's files, and that the job's column names are the header's.")


@pytest.mark.parametrize(
    ("text", "options"),
    [
        # A comma-separated export quotes the numbers its thousands commas would split.
        ('ts,host,value\n2024-01-01 01:00:00,007,"1,234.5"\n2024-01-01 02:00:00,b,"-12,345,678"\n', {"thousands": ","}),
        ("ts;host;value\n2024-01-01 01:00:00;007;1.234,5\n2024-01-01 02:00:00;b;-12.345.678\n",
         {"delimiter": ";", "decimal": ",", "thousands": "."}),
        ("ts;host;value\n2024-01-01 01:00:00;007;1\u00a0234,5\n2024-01-01 02:00:00;b;-12\u00a0345\u00a0678\n",
         {"delimiter": ";", "decimal": ",", "thousands": "\u00a0"}),
    ],
    ids=["comma-quoted", "dot-thousands-decimal-comma", "no-break-space"],
)
def test_thousands_separators_are_read_as_numbers_whole_and_in_chunks(make_job, tmp_path: Path, text: str, options: dict) -> None:
    # Without the option every value holding a separator was text, and validation refused the
    # window; with it they are the numbers written.
    (tmp_path / "m.csv").write_text(text, encoding="utf-8")
    reader = FileReader(make_job(file_source(str(tmp_path / "m.csv"), **options)))

    for frame in (reader.read(START, END), pd.concat(list(reader.iter_chunks(1)), ignore_index=True)):
        assert frame["value"].tolist() == [1234.5, -12345678.0]
        assert frame["host"].tolist() == ["007", "b"]


@pytest.mark.parametrize(
    ("text", "options", "says"),
    [
        (EUROPEAN, {}, r"has the header 'ts;host;value', which looks ;-separated\. Set source\.delimiter: \";\" in the job file\."),
        ('"ts";"host";"value"\n', {}, r"which looks ;-separated\. Set source\.delimiter: \";\""),
        ("ts\thost\tvalue\n2024-01-01 01:00:00\ta\t1\n", {}, r"which looks \\t-separated\. Set source\.delimiter: \"\\t\""),
        ("ts,host,value\n2024-01-01 01:00:00,a,1\n", {"delimiter": ";"}, r"which looks ,-separated\. Set source\.delimiter: \",\""),
    ],
    ids=["semicolon", "quoted-semicolon", "tab", "comma-read-as-semicolon"],
)
def test_a_csv_read_with_the_wrong_delimiter_says_which_one_to_set(
    make_job, tmp_path: Path, text: str, options: dict, says: str
) -> None:
    # It read as one column named after the whole header: validation then reported every column
    # of the job missing, without a word of the delimiter.
    (tmp_path / "m.csv").write_text(text)
    reader = FileReader(make_job(file_source(str(tmp_path / "m.csv"), **options)))

    for read in (lambda: reader.read(START, END), lambda: list(reader.iter_chunks(10))):
        with pytest.raises(ConfigError, match=rf"^job 'cpu_load': cannot read file source .*m\.csv .*{says}"):
            read()


def test_a_header_without_the_jobs_columns_is_no_sign_of_a_wrong_delimiter(make_job, tmp_path: Path) -> None:
    # A semicolon in a header that holds none of the job's columns is no sign of a wrong delimiter:
    # the file is named as another export, not told to be read with ";".
    (tmp_path / "m.csv").write_text("a;b,c\n1,2\n")

    with pytest.raises(SourceConfigError) as info:
        FileReader(make_job(file_source(str(tmp_path / "m.csv")))).read(None, None)
    assert "has the header 'a;b,c', which holds none of the job's columns" in str(info.value)
    assert "delimiter" not in str(info.value)


def test_a_repeated_column_is_refused_in_a_semicolon_separated_csv(make_job, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("ts;host;value;value\n2024-01-01 01:00:00;a;1;2\n")

    with pytest.raises(DataValidationError, match=r"m\.csv holds 2 columns named 'value'"):
        read_window(make_job(file_source(str(tmp_path / "m.csv"), delimiter=";")), START, END)


# Encodings.


def test_encoding_option_reads_a_latin1_csv(make_job, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_bytes("ts,host,value\n2024-01-01 01:00:00,Zürich,1\n".encode("latin-1"))

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / "m.csv"), "encoding": "latin-1"}), START, END)

    assert frame["host"].tolist() == ["Zürich"]


def test_bad_byte_far_into_a_large_file_is_located_exactly(make_job, tmp_path: Path) -> None:
    # Far past the parsers' read buffers and the first 1 MiB blocks of the scan.
    lines = ["ts,host,value"] + [f"2024-01-01 01:00:00,host{i:06d},{i}" for i in range(60_000)]
    good = ("\n".join(lines) + "\n").encode()
    bad = "2024-01-01 02:00:00,€,1\n".encode("utf-8")[:-5] + b"\n"  # the euro sign cut after its second byte
    (tmp_path / "m.csv").write_bytes(good + bad)

    with pytest.raises(SourceError, match=rf"byte\(s\) e2 at byte offset {len(good) + 20} \(line 60002\)"):
        read_window(make_job({"kind": "file", "path": str(tmp_path / "m.csv")}), START, END)


@pytest.mark.parametrize(
    ("name", "source", "compress", "compression", "suffix"),
    [
        ("m.csv", {}, gzip.compress, "gzip", ".gz"),
        ("m.txt", {"format": "csv"}, gzip.compress, "gzip", ".gz"),
        ("m.jsonl", {}, bz2.compress, "bz2", ".bz2"),
        ("m.csv", {}, lzma.compress, "xz", ".xz"),
    ],
    ids=["gzip", "gzip-format-csv", "bz2", "xz"],
)
def test_a_compressed_file_without_its_suffix_is_told_to_get_one_not_an_encoding(
    make_job, tmp_path: Path, hourly, name: str, source: dict, compress, compression: str, suffix: str
) -> None:
    text = hourly.to_csv(index=False) if name.endswith((".csv", ".txt")) else hourly.to_json(orient="records", lines=True)
    (tmp_path / name).write_bytes(compress(text.encode()))

    with pytest.raises(SourceError, match=rf"{name} is not text: it looks {compression}-compressed.*Name it {re.escape(name + suffix)}:") as caught:
        read_window(make_job({"kind": "file", "path": str(tmp_path / name), **source}), START, END)
    assert "encoding" not in str(caught.value)
    (tmp_path / name).rename(tmp_path / f"{name}{suffix}")
    assert len(read_window(make_job({"kind": "file", "path": str(tmp_path / f"{name}{suffix}"), **source}), START, END)) == 2


def _xlsx(path: Path, hourly: pd.DataFrame) -> None:
    with zipfile.ZipFile(path, "w") as book:  # the parts of a workbook that tell it from other zips
        book.writestr("[Content_Types].xml", "<Types/>")
        book.writestr("xl/workbook.xml", "<workbook/>")


@pytest.mark.parametrize(
    ("name", "source", "make", "says"),
    [
        ("m.csv", {}, lambda path, hourly: hourly.to_parquet(path), r"a Parquet file.*Name it m\.parquet, or set `format: parquet`\."),
        ("m.csv", {"encoding": "latin-1"}, lambda path, hourly: hourly.to_parquet(path), r"a Parquet file.*Name it m\.parquet"),
        ("m.jsonl", {}, lambda path, hourly: hourly.to_parquet(path), r"a Parquet file.*Name it m\.parquet"),
        ("m.csv", {}, _xlsx, r"an Excel workbook.*Export it from the spreadsheet as CSV"),
    ],
    ids=["parquet-as-csv", "parquet-as-latin1-csv", "parquet-as-jsonl", "xlsx-as-csv"],
)
def test_a_file_of_another_format_than_its_suffix_says_is_named_as_such(
    make_job, tmp_path: Path, hourly, name: str, source: dict, make, says: str
) -> None:
    # A Parquet file named .csv was reported as undecodable text ("set `encoding`"), or under
    # latin-1 as a header holding none of the job's columns; a workbook as a zip to rename .zip.
    make(tmp_path / name, hourly)
    job = make_job({"kind": "file", "path": str(tmp_path / name), **source})

    for read in (lambda: read_window(job, START, END), lambda: list(FileReader(job).iter_chunks(2))):
        with pytest.raises(SourceError, match=rf"{re.escape(name)} is not text but {says}") as caught:
            read()
        assert "encoding" not in str(caught.value) and ".zip" not in str(caught.value)


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_json_text_in_another_encoding(make_job, tmp_path: Path, fmt: str) -> None:
    rows = [{"ts": "2024-01-01 01:00:00", "host": "Zürich", "value": 1.0}]
    text = (
        "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) if fmt == "jsonl" else json.dumps(rows, ensure_ascii=False)
    )
    (tmp_path / f"m.{fmt}").write_bytes(text.encode("cp1252"))
    job = make_job({"kind": "file", "path": str(tmp_path / f"m.{fmt}")})

    with pytest.raises(
        SourceError, match=rf"m\.{fmt} is not valid utf-8 text: byte\(s\) fc at byte offset \d+ \(line 1\).*Set `encoding`"
    ):
        read_window(job, START, END)
    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / f"m.{fmt}"), "encoding": "cp1252"}), START, END)
    assert frame["host"].tolist() == ["Zürich"]


def test_unknown_encoding_is_refused_at_parse(make_job) -> None:
    with pytest.raises(
        ConfigError, match=r"source\.file\.encoding: Value error, unknown text encoding 'utf-9'|unknown text encoding 'utf-9'"
    ):
        make_job({"kind": "file", "path": "m.csv", "encoding": "utf-9"})


# Compressed files.


@pytest.mark.parametrize(
    ("name", "fmt", "extra"),
    [
        ("m.csv.gz", "csv", {}),
        ("m.csv.gz", "csv", {"format": "csv"}),
        ("m.csv.bz2", "csv", {}),
        ("M.CSV.GZ", "csv", {}),
        ("m.jsonl.xz", "jsonl", {}),
        ("m.ndjson.gz", "jsonl", {}),
        ("m.json.gz", "json", {}),
        ("m.pkl.gz", "pickle", {"allow_pickle": True}),
        ("m.csv.zip", "csv", {}),
    ],
)
def test_compressed_files_are_read_by_the_suffix_before_the_compression(
    make_job, hourly, tmp_path: Path, name: str, fmt: str, extra: dict
) -> None:
    write(hourly, str(tmp_path / name), fmt)  # pandas compresses by the suffix too
    assert (tmp_path / name).read_bytes()[:2] != b"ts"
    job = make_job({"kind": "file", "path": str(tmp_path / name), **extra})

    assert hours(read_window(job, START, END)) == ["01:00", "02:00"]
    chunks = list(FileReader(job).iter_chunks(4))
    assert [len(chunk) for chunk in chunks] == [4, 2]
    assert pd.concat(chunks)["value"].tolist() == hourly["value"].tolist()


def test_a_folder_of_compressed_and_plain_files_is_read_together(make_job, hourly, tmp_path: Path) -> None:
    write(hourly.iloc[:3], str(tmp_path / "1.csv.gz"), "csv")
    write(hourly.iloc[3:], str(tmp_path / "2.csv"), "csv")

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path)}), None, None)

    assert frame["value"].tolist() == hourly["value"].tolist()


def test_a_large_compressed_file_is_read_in_chunks_not_whole(make_job, tmp_path: Path, monkeypatch) -> None:
    import pipelines.sources.file as file_module

    lines = "".join(f"2024-01-01 01:00:00,h{i},{i}\n" for i in range(100_000))
    with gzip.open(tmp_path / "m.csv.gz", "wt") as handle:
        handle.write("ts,host,value\n" + lines)
    decompressed = []
    readinto = file_module._Decompressed.readinto
    monkeypatch.setattr(
        file_module._Decompressed, "readinto", lambda self, buffer: decompressed.append(len(buffer)) or readinto(self, buffer)
    )

    reader = FileReader(make_job({"kind": "file", "path": str(tmp_path / "m.csv.gz")}))
    first = next(reader.iter_chunks(1000))

    assert len(first) == 1000
    assert sum(decompressed) < len(lines) / 2  # only what the first chunk needs was decompressed


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_compressed_files_on_s3(make_job, hourly, s3_bucket, fmt: str) -> None:
    bucket, options = s3_bucket
    write(hourly.iloc[:3], f"s3://{bucket}/m/1.{fmt}.gz", fmt, options)
    write(hourly.iloc[3:], f"s3://{bucket}/m/2.{fmt}.gz", fmt, options)
    job = make_job({"kind": "file", "path": f"s3://{bucket}/m", "storage_options": options})

    assert hours(read_window(job, START, None)) == ["01:00", "02:00", "03:00", "04:00", "05:00"]
    assert [len(chunk) for chunk in FileReader(job).iter_chunks(2)] == [2, 1, 2, 1]

    # Corruption is said as such on S3 too.
    client = boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1")
    client.put_object(Bucket=bucket, Key=f"m/2.{fmt}.gz", Body=gzip.compress(b"x" * 100)[:-4])
    with pytest.raises(SourceError, match=rf"s3://{bucket}/m/2\.{fmt}\.gz is not valid gzip: it may be truncated"):
        read_window(job, START, None)


def _truncated_gzip(tmp_path: Path, hourly: pd.DataFrame) -> str:
    data = gzip.compress(hourly.to_csv(index=False).encode())
    (tmp_path / "m.csv.gz").write_bytes(data[: len(data) // 2])
    return "m.csv.gz"


def _plain_csv_named_gz(tmp_path: Path, hourly: pd.DataFrame) -> str:
    hourly.to_csv(tmp_path / "m.csv.gz", index=False, compression=None)
    return "m.csv.gz"


def _plain_csv_named_bz2(tmp_path: Path, hourly: pd.DataFrame) -> str:
    hourly.to_csv(tmp_path / "m.csv.bz2", index=False, compression=None)
    return "m.csv.bz2"


def _zip_of_two(tmp_path: Path, hourly: pd.DataFrame) -> str:
    with zipfile.ZipFile(tmp_path / "m.csv.zip", "w") as archive:
        archive.writestr("1.csv", hourly.to_csv(index=False))
        archive.writestr("2.csv", hourly.to_csv(index=False))
    return "m.csv.zip"


def _gzipped_parquet(tmp_path: Path, hourly: pd.DataFrame) -> str:
    hourly.to_parquet(tmp_path / "m.parquet")
    (tmp_path / "m.parquet.gz").write_bytes(gzip.compress((tmp_path / "m.parquet").read_bytes()))
    (tmp_path / "m.parquet").unlink()
    return "m.parquet.gz"


def _zstd_without_its_package(tmp_path: Path, hourly: pd.DataFrame) -> str:
    (tmp_path / "m.csv.zst").write_bytes(b"(\xb5/\xfd")  # zstd's magic number
    return "m.csv.zst"


@pytest.mark.parametrize(
    ("make_file", "fmt", "problem", "permanent"),
    [
        (
            _truncated_gzip,
            None,
            r"m\.csv\.gz is not valid gzip: it may be truncated or corrupt \(EOFError: .*\)\. Check that the file is complete",
            None,
        ),
        (_truncated_gzip, "csv", r"m\.csv\.gz is not valid gzip: it may be truncated or corrupt", None),
        (
            _plain_csv_named_gz,
            "csv",
            r"m\.csv\.gz is not valid gzip: .*Not a gzipped file.*if it is not gzip-compressed, name it without '\.gz'",
            None,
        ),
        (_plain_csv_named_bz2, None, r"m\.csv\.bz2 is not valid bz2: it may be truncated or corrupt", None),
        (_zip_of_two, None, r"m\.csv\.zip is a zip archive of 2 files, and a file source reads zip archives of one", DataValidationError),
        (_gzipped_parquet, None, r"m\.parquet\.gz is a gzip-compressed Parquet file.*Decompress it", ConfigError),
        (_zstd_without_its_package, None, r"m\.csv\.zst is compressed \(\.zst\), and reading it needs the package", ConfigError),
    ],
    ids=["truncated-gzip", "truncated-gzip-format-csv", "plain-named-gz", "plain-named-bz2", "zip-of-two", "parquet-gz", "zst"],
)
def test_unreadable_compressed_files_say_what_is_wrong_with_the_archive(
    make_job, hourly, tmp_path: Path, make_file, fmt: str | None, problem: str, permanent: type[Exception] | None
) -> None:
    if make_file is _zstd_without_its_package and "zstd" in compr:
        pytest.skip("a zstd package is installed here")
    path = str(tmp_path / make_file(tmp_path, hourly))
    job = make_job({"kind": "file", "path": path, "format": fmt})

    expected = rf"^job 'cpu_load': cannot read file source '{re.escape(path)}' for window {WINDOW_TEXT}: .*{problem}"
    with pytest.raises(SourceError, match=expected) as caught:
        read_window(job, START, END)
    assert "encoding" not in str(caught.value)
    assert isinstance(caught.value, (ConfigError, DataValidationError)) == (permanent is not None)
    if permanent is not None:
        assert isinstance(caught.value, permanent)


# One-off scoring reads every format in chunks.


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet", "pickle"])
def test_iter_chunks_reads_every_format_in_order(make_job, hourly, tmp_path: Path, fmt: str) -> None:
    write(hourly.iloc[:5], str(tmp_path / f"1.{fmt}"), fmt)
    write(hourly.iloc[5:], str(tmp_path / f"2.{fmt}"), fmt)

    chunks = list(FileReader(make_job(file_source(str(tmp_path / f"*.{fmt}"), fmt, format=fmt))).iter_chunks(2))

    assert [len(chunk) for chunk in chunks] == [2, 2, 2] if fmt == "parquet" else [2, 2, 1, 1]
    whole = pd.concat(chunks, ignore_index=True)
    assert list(whole.columns) == ["ts", "host", "value"]
    assert whole["value"].tolist() == hourly["value"].tolist()
    assert all(chunk.index.equals(pd.RangeIndex(len(chunk))) for chunk in chunks)


# Hive-partitioned folders: partition pruning by the window, proved with corrupt partitions.

THREE_DAYS = pd.DataFrame(
    {
        "ts": pd.date_range("2024-01-01", periods=72, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
        "host": ["a", "b"] * 36,
        "value": [float(i) for i in range(72)],
    }
)
GARBAGE = b"\xff\xfe\x00 not data \x00\xff" * 8

LAYOUTS = {
    "date": (lambda t: f"date={t:%Y-%m-%d}", None),
    "year-month-day": (lambda t: f"year={t:%Y}/month={t:%m}/day={t:%d}", None),
    "dt-hour": (lambda t: f"dt={t:%Y-%m-%dT%H}", None),
    "date-hour": (lambda t: f"date={t:%Y-%m-%d}/hour={t:%H}", None),
    "explicit": (lambda t: f"day_id={t:%Y%m%d}", {"column": "day_id", "format": "%Y%m%d"}),
    # The finest field of the format is a minute; granularity says one partition holds a day.
    "explicit-granularity": (
        lambda t: f"batch={t:%Y-%m-%dT00-00}",
        {"column": "batch", "format": "%Y-%m-%dT%H-%M", "granularity": "1d"},
    ),
}


def write_hive(
    root: str,
    frame: pd.DataFrame,
    layout: Callable[[pd.Timestamp], str],
    fmt: str,
    corrupt_outside: tuple[pd.Timestamp, pd.Timestamp] | None,
    storage_options: dict | None = None,
) -> list[str]:
    """One ``part-0`` file per partition; with ``corrupt_outside``, the partitions that hold no
    row of that window are unreadable bytes. Returns the corrupt files in name order."""
    fs, _ = url_to_fs(root, **(storage_options or {}))
    times = pd.to_datetime(frame["ts"]).dt.tz_localize("UTC")
    corrupt = []
    for folder, rows in frame.groupby(times.map(layout), sort=True):
        path = f"{root}/{folder}/part-0.{fmt}"
        inside = times[rows.index]
        if "://" not in root:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        if corrupt_outside and not ((inside >= corrupt_outside[0]) & (inside < corrupt_outside[1])).any():
            fs.pipe_file(path, GARBAGE)
            corrupt.append(path)
        else:
            write(rows, path, fmt, storage_options)
    return sorted(corrupt)


HIVE_START, HIVE_END = at("2024-01-02 05:00"), at("2024-01-02 07:00")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet", "pickle"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_partitions_outside_the_window_are_never_opened(make_job, tmp_path: Path, layout: str, fmt: str) -> None:
    folder, partitioning = LAYOUTS[layout]
    corrupt = write_hive(str(tmp_path / "metrics"), THREE_DAYS, folder, fmt, (HIVE_START, HIVE_END))
    source = file_source(str(tmp_path / "metrics"), fmt, **({"partitioning": partitioning} if partitioning else {}))
    job = make_job(source)

    frame = read_window(job, HIVE_START, HIVE_END)

    assert frame["ts"].tolist() == ["2024-01-02 05:00:00", "2024-01-02 06:00:00"]
    assert frame["value"].tolist() == [29.0, 30.0]
    assert list(frame.columns) == ["ts", "host", "value"]
    # A read over the corrupt partitions opens them, and names the first.
    with pytest.raises(
        SourceError, match=rf"for window \[2024-01-01T00:00:00\+00:00, unbounded\): {re.escape(corrupt[0])} is not valid"
    ):
        read_window(job, at("2024-01-01"), None)


def test_pruning_can_be_turned_off_for_partitions_by_arrival_time(make_job, tmp_path: Path) -> None:
    # Rows of 2024-01-01 that arrived a day late sit in the partition of 2024-01-02.
    (tmp_path / "m" / "date=2024-01-02").mkdir(parents=True)
    write(THREE_DAYS.iloc[:3], str(tmp_path / "m" / "date=2024-01-02" / "p.csv"), "csv")
    source = {"kind": "file", "path": str(tmp_path / "m")}

    assert read_window(make_job(source), START, END).empty
    assert read_window(make_job({**source, "prune_partitions": False}), START, END)["value"].tolist() == [1.0, 2.0]


def test_window_bounds_that_meet_partition_bounds_open_only_the_partitions_inside(make_job, tmp_path: Path) -> None:
    day_two = (at("2024-01-02"), at("2024-01-03"))
    write_hive(str(tmp_path / "metrics"), THREE_DAYS, LAYOUTS["date"][0], "parquet", day_two)

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / "metrics")}), *day_two)

    assert len(frame) == 24 and frame["value"].iloc[0] == 24.0


def test_partitions_that_say_nothing_of_time_are_always_read(make_job, tmp_path: Path, caplog) -> None:
    # region=eu has no time; the date=... value does not match the explicit format: both are read.
    (tmp_path / "m" / "region=eu").mkdir(parents=True)
    write(THREE_DAYS.iloc[:24], str(tmp_path / "m" / "region=eu" / "p.csv"), "csv")
    (tmp_path / "m" / "day=yesterday").mkdir()
    write(THREE_DAYS.iloc[24:48], str(tmp_path / "m" / "day=yesterday" / "p.csv"), "csv")
    job = make_job(file_source(str(tmp_path / "m"), partitioning={"column": "day", "format": "%Y%m%d"}))

    frame = read_window(job, at("2024-01-01 23:00"), at("2024-01-02 01:00"))

    assert frame["value"].tolist() == [24.0, 23.0]  # in file name order: day=... before region=...
    assert "partition day='yesterday' does not match format '%Y%m%d'; reading it" in caplog.text


def test_partition_values_become_the_columns_the_files_lack(make_job, tmp_path: Path) -> None:
    for host in ("007", "b"):
        folder = tmp_path / "m" / f"host={host}" / "date=2024-01-01"
        folder.mkdir(parents=True)
        write(THREE_DAYS.iloc[:6].drop(columns=["host"]), str(folder / "p.parquet"), "parquet")
    (tmp_path / "m" / "_temporary" / "x").mkdir(parents=True)  # a writer's leftovers are not data
    (tmp_path / "m" / "_temporary" / "x" / "p.parquet").write_bytes(GARBAGE)
    job = make_job({"kind": "file", "path": str(tmp_path / "m")})

    frame = read_window(job, START, END)

    assert list(frame.columns) == ["ts", "host", "value"]
    assert frame["host"].tolist() == ["007", "007", "b", "b"]  # text, as dimensions are
    chunks = list(FileReader(job).iter_chunks(4))
    assert pd.concat(chunks)["host"].tolist() == ["007"] * 6 + ["b"] * 6


def test_glob_over_hive_folders_prunes_too(make_job, tmp_path: Path) -> None:
    corrupt = write_hive(str(tmp_path / "metrics"), THREE_DAYS, LAYOUTS["date"][0], "csv", (HIVE_START, HIVE_END))

    job = make_job({"kind": "file", "path": str(tmp_path / "metrics" / "date=*" / "part-*.csv")})

    assert read_window(job, HIVE_START, HIVE_END)["value"].tolist() == [29.0, 30.0]
    with pytest.raises(SourceError, match=re.escape(corrupt[-1])):
        read_window(job, HIVE_END, None)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_hive_partitions_on_s3_are_pruned(make_job, s3_bucket, fmt: str) -> None:
    bucket, options = s3_bucket
    root = f"s3://{bucket}/metrics"
    corrupt = write_hive(root, THREE_DAYS, LAYOUTS["year-month-day"][0], fmt, (HIVE_START, HIVE_END), options)
    job = make_job({"kind": "file", "path": root, "storage_options": options})

    assert read_window(job, HIVE_START, HIVE_END)["value"].tolist() == [29.0, 30.0]
    with pytest.raises(SourceError, match=rf"{re.escape(corrupt[0])} is not valid"):
        read_window(job, None, HIVE_END)


# Object stores: a missing bucket, a denied read, a missing backend.


def test_s3_folder_markers_are_not_files(make_job, hourly, s3_bucket) -> None:
    # "Create folder" in the AWS console (and some sync tools) writes empty keys ending in "/".
    bucket, options = s3_bucket
    client = boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1")
    for key in ("m/", "m/date=2024-01-01/"):
        client.put_object(Bucket=bucket, Key=key, Body=b"")
    write(hourly, f"s3://{bucket}/m/date=2024-01-01/1.csv", "csv", options)
    job = make_job({"kind": "file", "path": f"s3://{bucket}/m", "storage_options": options})

    assert hours(read_window(job, START, END)) == ["01:00", "02:00"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_s3_object_replaced_while_it_is_read_says_so(make_job, hourly, s3_bucket, tmp_path: Path, monkeypatch, fmt: str) -> None:
    # s3fs refuses to read on once the ETag changed since the listing; the error said to check
    # that the storage is reachable.
    bucket, options = s3_bucket
    write(hourly.iloc[:1], f"s3://{bucket}/m/day.{fmt}", fmt, options)
    write(hourly, str(tmp_path / f"day.{fmt}"), fmt)
    listed = FileReader._files

    def files_then_replaced(self, *args):
        files = listed(self, *args)
        # Another process writes: the reader's file system has not seen it.
        client = boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1")
        client.put_object(Bucket=bucket, Key=f"m/day.{fmt}", Body=(tmp_path / f"day.{fmt}").read_bytes())
        return files

    monkeypatch.setattr(FileReader, "_files", files_then_replaced)
    job = make_job({"kind": "file", "path": f"s3://{bucket}/m", "storage_options": options})

    with pytest.raises(SourceError, match=rf"m/day\.{fmt} changed while it was read .*Run again once the writer has finished"):
        read_window(job, None, None)


def test_missing_bucket_is_named(make_job, s3_endpoint: str) -> None:
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    for path in ("s3://no-such-bucket-here/m.csv", "s3://no-such-bucket-here/m/*.csv"):
        job = make_job({"kind": "file", "path": path, "storage_options": options})
        with pytest.raises(
            SourceError,
            match=rf"{re.escape(path)}.*bucket 'no-such-bucket-here' does not exist \(or these credentials cannot see it\)\. Check the bucket name",
        ):
            read_window(job, START, END)


@contextmanager
def local_server(command: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``command`` (with ``{port}`` filled in with a free loopback port) until the block
    ends; yields its http endpoint once the port accepts connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [sys.executable, "-m", *(part.format(port=port) for part in command)]
    server = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"{command[0]} did not start within 30 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def locked_s3() -> Iterator[tuple[str, dict]]:
    """A second moto server that enforces IAM (INITIAL_NO_AUTH_ACTION_COUNT lets the set-up
    calls through unauthenticated). Its bucket holds one file; the credentials yielded belong
    to a user whose policy allows listing the bucket and nothing else."""
    setup_calls = 6  # create bucket, put 2 objects, create user, create key, put policy
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(setup_calls)}
    with local_server(["moto.server", "-H", "127.0.0.1", "-p", "{port}"], env) as endpoint:
        admin = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
        s3.create_bucket(Bucket="locked")
        s3.put_object(Bucket="locked", Key="m/1.csv", Body=b"ts,host,value\n2024-01-01 01:00:00,a,1\n")
        s3.put_object(Bucket="locked", Key="m/1.csv.gz", Body=gzip.compress(b"ts,host,value\n2024-01-01 01:00:00,a,1\n"))
        iam.create_user(UserName="lister")
        key = iam.create_access_key(UserName="lister")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "*"}]}
        iam.put_user_policy(UserName="lister", PolicyName="list-only", PolicyDocument=json.dumps(policy))
        yield "locked", {"endpoint_url": endpoint, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def test_object_store_permission_error_names_the_file(make_job, locked_s3) -> None:
    bucket, options = locked_s3
    job = make_job({"kind": "file", "path": f"s3://{bucket}/m/*.csv", "storage_options": options})

    with pytest.raises(
        SourceError,
        match=rf"^job 'cpu_load': .*{WINDOW_TEXT}: permission denied reading s3://{bucket}/m/1\.csv \(Access Denied\)\. .*credentials in `storage_options`",
    ) as caught:
        read_window(job, START, END)
    assert isinstance(caught.value.__cause__, PermissionError)


def test_a_storage_error_under_a_compressed_file_is_not_taken_for_a_corrupt_archive(make_job, locked_s3) -> None:
    bucket, options = locked_s3
    job = make_job({"kind": "file", "path": f"s3://{bucket}/m/*.csv.gz", "storage_options": options})

    with pytest.raises(SourceError, match=rf"permission denied reading s3://{bucket}/m/1\.csv\.gz \(Access Denied\)") as caught:
        read_window(job, START, END)
    assert isinstance(caught.value.__cause__, PermissionError)


def test_unknown_credentials_are_a_permission_error(make_job, locked_s3) -> None:
    bucket, options = locked_s3
    job = make_job(
        {"kind": "file", "path": f"s3://{bucket}/m/1.csv", "storage_options": {**options, "key": "nobody", "secret": "x"}}
    )

    with pytest.raises(SourceError, match=rf"permission denied reading s3://{bucket}/m/1\.csv"):
        read_window(job, START, END)


def test_missing_credentials_are_a_source_error_that_says_where_to_set_them(make_job, s3_without_credentials) -> None:
    bucket, no_keys = s3_without_credentials
    for path in (f"s3://{bucket}/m.csv", f"s3://{bucket}/m/*.csv"):
        job = make_job({"kind": "file", "path": path, "storage_options": no_keys})
        says = rf"no credentials to read {re.escape(path)} .*Give this worker credentials \(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or `profile` in `storage_options`"
        with pytest.raises(SourceError, match=says):
            read_window(job, START, END)


def test_an_unreachable_store_is_a_source_error_that_says_to_check_the_endpoint(make_job, unreachable_s3_options) -> None:
    # botocore's EndpointConnectionError came through as it was, a traceback.
    for path in ("s3://bucket/m.csv", "s3://bucket/m/*.csv"):
        job = make_job({"kind": "file", "path": path, "storage_options": unreachable_s3_options})
        with pytest.raises(SourceError, match=r"cannot reach the store holding .*Check that the store is up and that `endpoint_url`"):
            read_window(job, START, END)


def test_gs_without_google_credentials_is_a_source_error_that_says_where_to_set_them(make_job, monkeypatch, tmp_path) -> None:
    # gcsfs looks for Application Default Credentials when it is made: google-auth's
    # DefaultCredentialsError came through as it was, a traceback.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server
    job = make_job({"kind": "file", "path": "gs://bucket/m.csv", "storage_options": {"token": "google_default"}})

    with pytest.raises(
        SourceError,
        match=r"no credentials to read gs://bucket/m\.csv \(Your default credentials were not found.*\)\. "
        r"Set `token` to the path of a service-account key file .* in `storage_options`.*GOOGLE_APPLICATION_CREDENTIALS",
    ):
        read_window(job, START, END)


def test_gs_without_gcsfs_names_the_extra(tmp_path: Path) -> None:
    """gcsfs is installed here, so a child interpreter blocks its import (a stand-in for a
    worker without the ``gcs`` extra) and reads a gs:// source."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["gcsfs"] = None  # import gcsfs now raises ImportError
        import pandas as pd
        from pipelines.config import parse_job
        from pipelines.errors import MissingDependencyError
        from pipelines.sources import read_window
        job = parse_job({"name": "cpu_load", "source": {"kind": "file", "path": "gs://bucket/m.csv"}, "timestamp": "ts",
                         "frequency": "1h", "features": ["value"], "model": {"kind": "iforest"}})
        try:
            read_window(job, pd.Timestamp("2024-01-01", tz="UTC"), None)
        except MissingDependencyError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3], check=True
    )

    assert done.stdout.strip() == (
        "job 'cpu_load': reading gs:// (gs://bucket/m.csv) needs the optional package 'gcsfs': "
        "pip install -c constraints.txt -e '.[gcs]' in the anomaly-pipelines repository (or pip install gcsfs)"
    )


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    """A local GCS JSON API (gcp-storage-emulator, in memory) holding a bucket ``metrics``."""
    command = [
        "gcp_storage_emulator",
        "start",
        "-H",
        "127.0.0.1",
        "--port",
        "{port}",
        "--in-memory",
        "--default-bucket",
        "metrics",
        "-q",
    ]
    with local_server(command) as endpoint:
        yield endpoint


GS_SCRIPT = """
import json, sys
from tests.pipelines.sources.test_file import HIVE_END, HIVE_START, LAYOUTS, THREE_DAYS, write_hive
from pipelines.config import parse_job
from pipelines.errors import SourceError
from pipelines.sources import read_window

options = {"endpoint_url": sys.argv[1], "token": "anon"}
root = "gs://metrics/" + sys.argv[2]
corrupt = write_hive(root, THREE_DAYS, LAYOUTS["date"][0], sys.argv[2], (HIVE_START, HIVE_END), options)
def job(path):
    return parse_job({"name": "cpu_load", "source": {"kind": "file", "path": path, "storage_options": options},
                      "timestamp": "ts", "frequency": "1h", "dimensions": ["host"], "features": ["value"],
                      "model": {"kind": "iforest"}})
def error(path, start, end):
    try:
        read_window(job(path), start, end)
    except SourceError as exc:
        return str(exc)
print(json.dumps({
    "corrupt": corrupt,
    "values": read_window(job(root), HIVE_START, HIVE_END)["value"].tolist(),
    "over_corrupt": error(root, None, None),
    "no_bucket": error("gs://no-such-bucket/m.csv", HIVE_START, HIVE_END),
}))
"""


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_gs_reads_and_prunes_through_gcsfs(gcs_endpoint: str, fmt: str) -> None:
    """gcsfs against a local GCS emulator, in a child interpreter: gcsfs picks its file system
    class at import from GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT, and its default one first asks a
    gRPC API for the bucket layout, which no emulator serves (a minute of retries per call)."""
    env = {**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    done = subprocess.run(
        [sys.executable, "-c", GS_SCRIPT, gcs_endpoint, fmt],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["values"] == [29.0, 30.0]
    assert result["corrupt"][0].startswith(f"gs://metrics/{fmt}/date=2024-01-01/")
    assert f"{result['corrupt'][0]} is not valid" in result["over_corrupt"]
    assert "bucket 'no-such-bucket' does not exist" in result["no_bucket"]


@pytest.mark.parametrize(
    "make_file",
    [_latin1_csv, _truncated_parquet, lambda tmp_path, hourly: "*.csv"],
    ids=["latin1-csv", "truncated-parquet", "glob-nothing"],
)
def test_a_failed_read_writes_nothing(make_job, hourly, tmp_path: Path, monkeypatch, make_file) -> None:
    from pipelines.extraction import extract
    from pipelines.workspace import Window

    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    data = tmp_path / "data"
    data.mkdir()
    job = make_job({"kind": "file", "path": str(data / make_file(data, hourly))})

    with pytest.raises(SourceError, match=r"job 'cpu_load': cannot read file source"):
        extract(job, Window(START.to_pydatetime(), END.to_pydatetime()), run_id="manual__1")
    assert not (tmp_path / "var").exists()


def test_unknown_url_scheme_is_a_source_error(make_job) -> None:
    job = make_job({"kind": "file", "path": "nosuchstore://bucket/m.csv"})

    with pytest.raises(
        SourceError, match=r"'nosuchstore://bucket/m\.csv'.*Protocol not known: nosuchstore\. Use a local path or an fsspec URL"
    ) as caught:
        read_window(job, START, END)
    assert isinstance(caught.value, ConfigError)  # fails the Airflow task at once: a retry knows no more schemes


def _pickled(tmp_path: Path, hourly: pd.DataFrame) -> str:
    hourly.to_pickle(tmp_path / "m.pkl")
    return "m.pkl"


def _folder_of_two_headers(tmp_path: Path, hourly: pd.DataFrame) -> str:
    (tmp_path / "d").mkdir()
    hourly.to_csv(tmp_path / "d" / "1.csv", index=False)
    hourly.drop(columns="value").to_csv(tmp_path / "d" / "2.csv", index=False)
    return "d"


def _semicolons(tmp_path: Path, hourly: pd.DataFrame) -> str:
    hourly.to_csv(tmp_path / "m.csv", sep=";", index=False)
    return "m.csv"


#: How a command without a job file sets the source (anomaly-pipelines detect).
COMMAND_OPTIONS = {
    "path": "--train", "format": "--format", "encoding": "--encoding", "delimiter": "--delimiter",
    "allow_pickle": None, "storage_options": None,
}


@pytest.mark.parametrize(
    ("make_file", "in_job_file", "on_command_line"),
    [
        (lambda tmp_path, hourly: "*.csv", "Check `path`, or whether the data has landed yet.", "Check the --train path."),
        (lambda tmp_path, hourly: "missing.csv", "Check `path` in the job file.", "Check the --train path."),
        (
            _unknown_suffix,
            "Set `format` to csv, jsonl, json, parquet or pickle, or name the files with one of "
            "['.csv', '.json', '.jsonl', '.ndjson', '.parquet', '.pickle', '.pkl', '.pq'] (compressed",
            # No pickle: nothing on this command line can allow it.
            "Give --format csv, jsonl, json or parquet, or name the files with one of "
            "['.csv', '.json', '.jsonl', '.ndjson', '.parquet', '.pq'] (compressed",
        ),
        (
            _truncated_parquet,
            "Check that the file is complete; if its suffix misleads, set `format`.",
            "Check that the file is complete; if its suffix misleads, give --format.",
        ),
        (
            _pickled,
            "convert the data to Parquet, or set `allow_pickle: true` only if you trust whoever writes these files",
            "unpickling runs arbitrary code: convert the data to Parquet",
        ),
        (
            _zip_of_two,
            "unzip the archive into a folder and point `path` at it.",
            "unzip the archive into a folder and point --train at it.",
        ),
        (
            _folder_of_two_headers,
            "Write 'value' into every file, or move the files without it out of `path`.",
            "Write 'value' into every file, or move the files without it out of the --train path.",
        ),
        (_semicolons, 'which looks ;-separated. Set source.delimiter: ";" in the job file.', "which looks ;-separated. Give --delimiter ';'."),
        (
            _latin1_csv,
            "(invalid start byte). Set `encoding` in the source to the file's encoding (e.g. latin-1, cp1252, utf-16).",
            "(invalid start byte). Give --encoding with the file's encoding (e.g. latin-1, cp1252, utf-16).",
        ),
    ],
    ids=["glob-nothing", "missing", "unknown-suffix", "truncated-parquet", "pickle", "zip-of-two", "two-headers", "semicolons", "latin1"],
)
def test_advice_names_the_callers_options_where_it_has_no_job_file(
    make_job, hourly, tmp_path: Path, make_file, in_job_file: str, on_command_line: str
) -> None:
    # detect rewrote the job file's advice with regular expressions, and only the delimiter's and
    # the encoding's: the others said "Set `format`", "point `path`", "set `allow_pickle: true`",
    # settings that a command line without a job file does not have.
    job = make_job({"kind": "file", "path": str(tmp_path / make_file(tmp_path, hourly))})

    with pytest.raises((SourceError, ConfigError)) as in_a_job:
        FileReader(job).read(START, END)
    with pytest.raises(type(in_a_job.value)) as on_a_command_line:
        FileReader(job, options=COMMAND_OPTIONS).read(START, END)

    assert in_job_file in str(in_a_job.value)  # as the job file's users have always read it
    told = str(on_a_command_line.value)
    assert on_command_line in told
    assert "`" not in told and "job file" not in told


def test_a_missing_bucket_is_named_without_storage_options_where_none_can_be_given(make_job, s3_endpoint: str) -> None:
    job = make_job({"kind": "file", "path": "s3://no-such-bucket-here/m.csv", "storage_options": {"endpoint_url": s3_endpoint}})

    with pytest.raises(SourceError) as caught:
        FileReader(job, options=COMMAND_OPTIONS).read(START, END)
    assert str(caught.value).endswith(
        "bucket 'no-such-bucket-here' does not exist (or these credentials cannot see it). "
        "Check the bucket name in the --train path, and the credentials of this process."
    )
