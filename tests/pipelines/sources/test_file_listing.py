"""Listing an object store: the ``key=value`` folders that cannot hold the window are never listed."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import boto3
import pandas as pd
import pytest

from pipelines.sources import read_window


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture(scope="module")
def logged_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A moto server of its own whose request log the tests read; yields (endpoint, log file)."""
    log = tmp_path_factory.mktemp("moto") / "requests.log"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("moto server did not start within 30 s")
        yield f"http://127.0.0.1:{port}", log
    finally:
        server.terminate()
        server.wait(timeout=10)


def listings(log: Path, since: int) -> list[tuple[str, bool]]:
    """(prefix, whether by folder) of each ListObjectsV2 request logged after line ``since``."""
    found = []
    for line in log.read_text().splitlines()[since:]:
        match = re.search(r"GET /[^ ?]+\?(\S*list-type=2\S*)", line)
        if match:
            query = dict(part.split("=", 1) for part in match.group(1).split("&") if "=" in part)
            found.append((unquote(query.get("prefix", "")), "delimiter" in query))
    return found


DAYS = pd.date_range("2024-01-01", periods=20, freq="D")
LAYOUTS = {
    "date": lambda day: f"date={day:%Y-%m-%d}",
    "year-month-day": lambda day: f"year={day:%Y}/month={day:%m}/day={day:%d}",
}


@pytest.fixture(scope="module")
def bucket(logged_s3: tuple[str, Path]) -> tuple[str, dict]:
    endpoint, _ = logged_s3
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    client.create_bucket(Bucket="big")
    for name, layout in LAYOUTS.items():
        for day in DAYS:
            body = "ts,host,value\n" + "".join(f"{day:%Y-%m-%d} {hour:02d}:00:00,a,{day.day}.0\n" for hour in range(24))
            client.put_object(Bucket="big", Key=f"{name}/{layout(day)}/part-0.csv", Body=body.encode())
    return "big", {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("glob", [False, True], ids=["folder", "glob"])
def test_partitions_outside_the_window_are_not_listed(make_job, logged_s3, bucket, layout: str, glob: bool) -> None:
    _, log = logged_s3
    name, options = bucket
    depth = layout.count("-") + 1
    path = f"s3://{name}/{layout}" + ("/" + "/".join(["*=*"] * depth) + "/*.csv" if glob else "")
    job = make_job({"kind": "file", "path": path, "storage_options": options})
    since = len(log.read_text().splitlines())

    frame = read_window(job, at("2024-01-05"), at("2024-01-06 12:00"))

    assert frame["value"].tolist() == [5.0] * 24 + [6.0] * 12
    listed = listings(log, since)
    # Never the whole tree (a folder's find, one request per 1000 keys), nor a folder per day (s3fs's glob).
    assert all(by_folder for _, by_folder in listed), listed
    days = {prefix for prefix, _ in listed if prefix.count("/") > depth}
    assert days == {f"{layout}/{LAYOUTS[layout](day)}/" for day in (at("2024-01-05"), at("2024-01-06"))}
    assert len(listed) <= depth + 3  # the root (and its info), one folder a level above the days, the 2 days


def test_a_window_outside_every_partition_reads_nothing(make_job, bucket) -> None:
    name, options = bucket
    job = make_job({"kind": "file", "path": f"s3://{name}/date", "storage_options": options})

    assert read_window(job, at("2025-01-01"), at("2025-01-02")).empty


def test_partitions_without_a_time_above_dated_ones_are_read_and_pruned(make_job, tmp_path: Path) -> None:
    # host=... folders say nothing of time; below them the date=... ones are still pruned.
    for host in ("a", "b"):
        for day in DAYS[:3]:
            folder = tmp_path / "m" / f"host={host}" / f"date={day:%Y-%m-%d}"
            folder.mkdir(parents=True)
            (folder / "p.csv").write_text(f"ts,value\n{day:%Y-%m-%d} 05:00:00,{day.day}\n")
    job = make_job({"kind": "file", "path": str(tmp_path / "m")})

    frame = read_window(job, at("2024-01-02"), at("2024-01-03"))

    assert frame["host"].tolist() == ["a", "b"] and frame["value"].tolist() == [2, 2]
