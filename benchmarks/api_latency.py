"""Latency of the scoring API's synchronous ``detect``: p50 and p95 over repeated HTTP calls.

The plugin's app runs under uvicorn on loopback (one worker, like one api-server worker) over a
throwaway project with demo_web_metrics trained on the shipped demo data; the calls carry a real
Airflow JWT, so authentication (signature, expiry and the revocation lookup in Airflow's metadata
DB) and authorization are part of every figure. Sizes are data points (rows x the job's two
features), up to 30,000, the synchronous limit. Sizes alternate within each repeat, in reverse
order every other repeat. Latency is client-side: from sending the request to the whole JSON
answer read.

Run: ``python -m benchmarks.api_latency [--quick]`` (or ``python -m benchmarks --only api``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import REPO, fmt_number, machine_line, publish, table

JOB = "demo_web_metrics"
FEATURES = 2
REGIONS = ("eu", "us", "apac")
SIZES = (300, 3_000, 30_000)
REPEATS, QUICK_REPEATS = 30, 3
WARMUP = 2  # first calls load Great Expectations' context and the models' modules
JWT_SECRET = "anomaly-pipelines-benchmark-secret-of-a-decent-length-for-hs512-0123456789"
TRAIN = ("2024-02-02T00:00:00Z", "2024-03-01T00:00:00Z")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(directory: Path) -> dict[str, str]:
    home = directory / "airflow"
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ANOMALY_PIPELINES"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "ANOMALY_PIPELINES_BASE_DIR": str(directory),
        "ANOMALY_PIPELINES_HOME": str(directory / "var"),
        "GX_ANALYTICS_ENABLED": "false",
    }


def _prepare(directory: Path, env: dict[str, str]) -> str:
    """Project copy, metadata DB, trained models; returns an admin token (not measured)."""
    shutil.copytree(REPO / "config", directory / "config")
    (directory / "data").symlink_to(REPO / "data")
    run = {"env": env, "cwd": REPO, "check": True, "capture_output": True, "text": True}
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], **run)
    subprocess.run([sys.executable, "-m", "pipelines.cli", "train", JOB, "--start", TRAIN[0], "--end", TRAIN[1]], **run)
    mint = (
        "from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser\n"
        "from pipelines.web.auth import auth_manager\n"
        "print(auth_manager().generate_jwt(SimpleAuthManagerUser(username='bench', role='admin')))\n"
    )
    return subprocess.run([sys.executable, "-c", mint], **run).stdout.strip().splitlines()[-1]


def points(size: int) -> list[dict[str, Any]]:
    """``size`` data points: hourly rows of the three regions, with a daily cycle and fixed noise."""
    import numpy as np
    import pandas as pd

    rows = size // FEATURES
    rng = np.random.default_rng(size)
    times = pd.date_range("2024-03-01", periods=-(-rows // len(REGIONS)), freq="h", tz="UTC")
    out = []
    for i in range(rows):
        moment = times[i // len(REGIONS)]
        cycle = np.sin(2 * np.pi * moment.hour / 24)
        out.append(
            {
                "timestamp": moment.isoformat(),
                "region": REGIONS[i % len(REGIONS)],
                "requests": float(round(700 + 300 * cycle + rng.normal(0, 30))),
                "latency_ms": float(round(110 + 15 * cycle + abs(rng.normal(0, 5)), 2)),
            }
        )
    return out


def _serve(env: dict[str, str], port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "pipelines.web.app:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {server.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("uvicorn did not listen within 120 s")


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def measure(repeats: int) -> dict[int, dict[str, float]]:
    import httpx

    with tempfile.TemporaryDirectory(prefix="bench-api-") as scratch:
        directory = Path(scratch)
        env = _env(directory)
        token = _prepare(directory, env)
        port = _free_port()
        server = _serve(env, port)
        try:
            url = f"http://127.0.0.1:{port}/api/v1/jobs/{JOB}/detect"
            bodies = {size: httpx.Request("POST", url, json={"points": points(size)}).content for size in SIZES}
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            seconds: dict[int, list[float]] = {size: [] for size in SIZES}
            with httpx.Client(timeout=300) as client:

                def call(size: int) -> float:
                    started = time.perf_counter()
                    answer = client.post(url, content=bodies[size], headers=headers)
                    answer.read()
                    elapsed = time.perf_counter() - started
                    if answer.status_code != 200 or answer.json()["points"] != size:
                        raise RuntimeError(f"detect of {size} points answered {answer.status_code}: {answer.text[:500]}")
                    return elapsed

                for size in SIZES:
                    for _ in range(WARMUP):
                        call(size)
                for repeat in range(repeats):
                    for size in SIZES if repeat % 2 == 0 else reversed(SIZES):
                        seconds[size].append(call(size))
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        size: {
            "p50": statistics.median(values),
            "p95": _percentile(values, 95) if len(values) > 1 else values[0],
            "max": max(values),
            "request_mib": len(bodies[size]) / 2**20,
        }
        for size, values in seconds.items()
    }


def run(quick: bool = False) -> str:
    repeats = QUICK_REPEATS if quick else REPEATS
    results = measure(repeats)
    rows = [
        [
            f"{size:,}",
            f"{size // FEATURES:,}",
            f"{r['request_mib']:.2f} MiB",
            f"{fmt_number(r['p50'] * 1000)} ms",
            f"{fmt_number(r['p95'] * 1000)} ms",
            f"{fmt_number(r['max'] * 1000)} ms",
            f"{fmt_number(size / r['p50'])}",
        ]
        for size, r in results.items()
    ]
    largest = results[max(SIZES)]
    return "\n".join(
        [
            "## Scoring API: synchronous detect latency",
            "",
            machine_line(f"{repeats} calls per size").split(" Figures are")[0]
            + f" {repeats} calls per size after {WARMUP} warm-up calls, sizes alternating within each repeat.",
            "",
            f"`POST /api/v1/jobs/{JOB}/detect` on the plugin's app under uvicorn (one worker) on loopback, "
            "with a real Airflow JWT: authentication, validation with the job's Great Expectations checks, "
            "the champion `seasonal_mad` model of each of 3 series, and the JSON answer (one output row per point).",
            "",
            table(["data points", "rows", "request body", "p50", "p95", "max", "points/s at p50"], rows),
            "",
            f"At the 30,000-point limit a call takes {largest['p50']:.2f} s (p50) and {largest['p95']:.2f} s (p95).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    publish("api", run(quick=args.quick), quick=args.quick)


if __name__ == "__main__":
    main()
