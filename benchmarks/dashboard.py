"""The Anomalies dashboard with a year of hourly data for 100 series: server time per request.

Builds a job's outputs in the real layout (``ParquetSink``: ``job=<job>/date=<day>/part-0.parquet``,
365 day files, 100 series x 8,760 hours x 2 features = 1.75 million rows) and a model registry with
one version per series, then calls the dashboard's pages and data endpoints through the FastAPI
app in process (Starlette's ``TestClient``: routing, parameter parsing, JSON and HTML rendering
included, no network) and reports the median (p50) and 95th percentile of the server time per
request. Token checking is replaced by a fixed admin user (FastAPI's ``dependency_overrides``):
it is the same cost on every request and is Airflow's, not the dashboard's; the per-job
permission checks still run.

Run: ``python -m benchmarks.dashboard [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks.report import fmt_number, interleaved, machine_line, publish, table, timed

SERIES = 100
DAYS = 365
QUICK_SERIES = 10
QUICK_DAYS = 30
REPEATS = 20
QUICK_REPEATS = 5
JOB = "bench_dashboard"

JOB_YAML = """
name: {job}
source: {{kind: file, path: data/none.csv, format: csv}}
timestamp: ts
frequency: 1h
dimensions: [host]
features: [requests, latency_ms]
model: {{kind: seasonal_mad}}
outputs: {{parquet: var/outputs}}
registry: var/models
"""


def build_outputs(directory: Path, series: int, days: int, seed: int = 0) -> None:
    """A year (``days``) of hourly scores for ``series`` series of two features, with ~0.5 % anomalies."""
    import numpy as np
    import pandas as pd

    from pipelines.config import get_job
    from pipelines.registry import ModelRegistry
    from pipelines.schema import conform
    from pipelines.sinks import ParquetSink

    (directory / "config" / "jobs").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "jobs" / f"{JOB}.yaml").write_text(JOB_YAML.format(job=JOB))
    job = get_job(JOB)
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=days * 24, freq="h", tz="UTC")
    hours = np.arange(len(times))
    frames = []
    for number in range(series):
        key = f"host=h{number:03d}"
        for feature, level in (("requests", 1000.0), ("latency_ms", 80.0)):
            expected = level * (1 + 0.3 * np.sin(2 * np.pi * hours / 24))
            value = expected + rng.normal(0, level * 0.05, len(times))
            anomalous = rng.random(len(times)) < 0.005
            value[anomalous] += level * rng.uniform(0.5, 1.0, anomalous.sum())
            score = np.clip(np.abs(value - expected) / (level * 0.3), 0, 1)
            frames.append(
                pd.DataFrame(
                    {
                        "job": JOB,
                        "series": key,
                        "timestamp": times,
                        "feature": feature,
                        "value": value,
                        "expected": expected,
                        "lower": expected - level * 0.15,
                        "upper": expected + level * 0.15,
                        "score": score,
                        "feature_score": score,
                        "is_anomaly": anomalous,
                        "model": "seasonal_mad",
                        "model_version": "v1",
                        "run_id": "bench",
                        "interval_start": times[0],
                        "interval_end": times[-1] + pd.Timedelta(hours=1),
                        "scored_at": pd.Timestamp("2025-01-01", tz="UTC"),
                        "host": key.split("=", 1)[1],
                    }
                )
            )
    frame = conform(pd.concat(frames, ignore_index=True), ["host"])
    ParquetSink(str(directory / "var" / "outputs")).write(
        frame, job=JOB, dimensions=["host"], start=times[0], end=times[-1] + pd.Timedelta(hours=1)
    )
    registry = ModelRegistry(str(directory / "var" / "models"))
    for number in range(series):
        key = f"host=h{number:03d}"
        version = registry.register(
            JOB, key, {"model.json": b"{}"}, {"metrics": {"holdout_error": 0.1}, "decision": {"promoted": True, "reason": "bench"}}
        )
        registry.promote(JOB, key, version.version)
    del job


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(repeats: int, series: int) -> tuple[list[tuple[str, list[float], int]], float, float]:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from pipelines.web.auth import require_user
    from pipelines.web.dashboard import router

    app = FastAPI()
    app.include_router(router)
    # An admin of Airflow's SimpleAuthManager: the job permission checks run as in production.
    app.dependency_overrides[require_user] = lambda: SimpleAuthManagerUser(username="bench", role="admin")
    client = TestClient(app)
    middle = f"host=h{series // 2:03d}"
    requests: dict[str, Callable[[], Any]] = {
        "jobs overview page": lambda: client.get("/dashboard/"),
        "job page (HTML: series table, events)": lambda: client.get(f"/dashboard/jobs/{JOB}"),
        "series summary (JSON)": lambda: client.get(f"/dashboard/data/jobs/{JOB}/series"),
        "chart of one series, whole range (JSON)": lambda: client.get(
            f"/dashboard/data/jobs/{JOB}/chart", params={"series": middle, "buckets": 600}
        ),
        "chart of one series, one week (JSON)": lambda: client.get(
            f"/dashboard/data/jobs/{JOB}/chart",
            params={"series": middle, "start": "2024-01-08T00:00:00Z", "end": "2024-01-15T00:00:00Z", "buckets": 600},
        ),
        "anomaly events, min score 0.9 (JSON)": lambda: client.get(
            f"/dashboard/data/jobs/{JOB}/anomalies", params={"min_score": 0.9}
        ),
        "models (JSON)": lambda: client.get(f"/dashboard/data/jobs/{JOB}/models"),
    }
    from pipelines.web import dashboard_data

    dashboard_data._CACHE.clear()
    cold, _ = timed(requests["job page (HTML: series table, events)"])
    cache_mib = dashboard_data._CACHE._bytes / 2**20
    sizes = {}
    for name, call in requests.items():
        answer = call()  # warm-up, and a check that it works
        if answer.status_code != 200:
            raise RuntimeError(f"{name}: HTTP {answer.status_code}: {answer.text[:500]}")
        sizes[name] = len(answer.content)
    seconds = interleaved(requests, repeats)
    return [(name, seconds[name], sizes[name]) for name in requests], cold, cache_mib


def run(quick: bool) -> str:
    series, days, repeats = (QUICK_SERIES, QUICK_DAYS, QUICK_REPEATS) if quick else (SERIES, DAYS, REPEATS)
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as scratch:
        directory = Path(scratch)
        variables = {"ANOMALY_PIPELINES_BASE_DIR": str(directory), "ANOMALY_PIPELINES_HOME": str(directory / "var")}
        with mock.patch.dict(os.environ, variables):
            started = time.perf_counter()
            build_outputs(directory, series, days)
            built = time.perf_counter() - started
            results, cold, cache_mib = measure(repeats, series)
    rows = [
        (name, fmt_number(statistics.median(s) * 1000), fmt_number(_percentile(s, 0.95) * 1000), f"{size / 1024:,.0f} KiB")
        for name, s, size in results
    ]
    points = series * days * 24
    return "\n\n".join(
        [
            "## Dashboard: server time per request",
            f"A job with {series} series x {days} days of hourly scores, 2 features "
            f"({points * 2:,} rows in {days} day files; built in {built:.0f} s). Each request through the "
            f"FastAPI app in process, {repeats} times after one warm-up; charts ask for 600 buckets "
            "(first, last, lowest and highest point per bucket, plus every anomaly). The first request "
            f"after a start reads the day files into the dashboard's cache: {cold * 1000:,.0f} ms for the job "
            f"page, {cache_mib:,.0f} MiB kept; later requests aggregate in memory.",
            table(["request", "p50 ms", "p95 ms", "response"], rows),
            machine_line(f"{repeats} requests"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 series x 30 days; print only")
    args = parser.parse_args(argv)
    publish("dashboard", run(args.quick), quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
