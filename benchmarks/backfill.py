"""Backfilling a month of hourly intervals through Airflow 3's own ``airflow backfill create``.

A standalone Airflow (the test suite's ``tests/airflow_server.py``: api-server, scheduler, DAG
processor and triggerer, LocalExecutor, SQLite) runs the test job ``backfill_hourly``
(``tests/airflow_jobs/``) over CSV files written under its project: train once, then backfill
every hourly interval of the range. Reports the wall time, runs per minute, and how many rows
of the Parquet dataset and of the SQL table are missing or duplicated (both must be 0).

The scenario's helpers are shared with ``tests/dags/test_backfill.py``, which runs one day.

Run: ``python -m benchmarks.backfill [--quick]`` (quick: one day, 24 runs; full: 30 days, 720).
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.report import machine_line, table

JOB = "backfill_hourly"
DAG_ID = f"{JOB}__predict"
SERIES = ("eu", "us")
FEATURES = ("requests", "latency_ms")
#: The job's training_window: the source starts this long before the backfilled range.
TRAINING_DAYS = 7
FIRST_DAY = pd.Timestamp("2024-03-09T00:00:00Z")
FULL_DAYS, QUICK_DAYS = 30, 1


def traffic(start: pd.Timestamp, end: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Hourly requests (a daily cycle) and latency per region in ``[start, end)``, reproducible."""
    hours = pd.date_range(start, end, freq="h", inclusive="left")
    rng = np.random.default_rng(seed)
    cycle = np.sin(2 * np.pi * hours.hour / 24)
    frames = [
        pd.DataFrame(
            {
                "timestamp": hours.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": region,
                "requests": np.round(1000 + 300 * cycle + 200 * offset + rng.normal(0, 20, len(hours)), 1),
                "latency_ms": np.round(100 + 10 * offset + rng.normal(0, 3, len(hours)), 2),
            }
        )
        for offset, region in enumerate(SERIES)
    ]
    return pd.concat(frames, ignore_index=True)


def write_source(project: Path, first_day: pd.Timestamp, days: int, *, withheld: Any = None) -> pd.DataFrame:
    """The job's source under ``project``: the training history and ``days`` to backfill.

    Rows for which ``withheld(frame) -> bool mask`` is true are left out (they arrive late);
    they are returned, so a test can append them later.
    """
    folder = project / "var" / "backfill_source"
    folder.mkdir(parents=True, exist_ok=True)
    data = traffic(first_day - pd.Timedelta(days=TRAINING_DAYS), first_day + pd.Timedelta(days=days), seed=7)
    late = withheld(data) if withheld is not None else pd.Series(False, index=data.index)
    data[~late].to_csv(folder / "main.csv", index=False)
    return data[late]


def add_late_rows(project: Path, rows: pd.DataFrame) -> None:
    rows.to_csv(project / "var" / "backfill_source" / "late.csv", index=False)


def train(server: Any, end: pd.Timestamp) -> subprocess.CompletedProcess:
    """``python -m pipelines.cli train`` against the server's project (models in its registry)."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "train", JOB, "--end", end.isoformat()],
        env=server.env,
        cwd=server.project,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _backfills(server: Any) -> list[dict[str, Any]]:
    answer = server.api("GET", "/api/v2/backfills", params={"dag_id": DAG_ID, "limit": 1000})
    answer.raise_for_status()
    return answer.json()["backfills"]


def _wait_until_no_backfill_is_active(server: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while any(b["completed_at"] is None for b in _backfills(server)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"a backfill of {DAG_ID} is still active after {timeout:.0f} s")
        time.sleep(5)


def create_backfill(server: Any, first: pd.Timestamp, last: pd.Timestamp, *extra: str) -> int:
    """``airflow backfill create`` for the intervals whose logical dates (their starts) are in
    ``[first, last]``, then the DAG unpaused so that the scheduler runs them; returns the
    backfill's id.

    The DAG is paused while the runs are created: on the server's SQLite metadata database the
    one long transaction that creates them would otherwise race the scheduler, and Airflow's
    scheduler dies when its own transaction meets "database is locked" after creating a run
    (PostgreSQL or MySQL in production do not lock the whole database).
    """
    server.wait_for_dag(DAG_ID)
    server.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": True}).raise_for_status()
    before = {b["id"] for b in _backfills(server)}
    args = ("backfill", "create", "--dag-id", DAG_ID, "--from-date", first.isoformat(), "--to-date", last.isoformat(), *extra)
    for _ in range(4):
        result = server.cli(*args, check=False)
        if result.returncode == 0 or "database is locked" not in result.stderr:
            break
        # SQLite can still be locked by the DAG processor. The runs were rolled back but the
        # backfill row stays active (Airflow cleans up after lock errors of PostgreSQL and MySQL
        # only) until the scheduler completes such orphans after two minutes; then try again.
        _wait_until_no_backfill_is_active(server)
    if result.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    created = sorted(b["id"] for b in _backfills(server) if b["id"] not in before)
    if not created:
        raise RuntimeError(f"airflow {' '.join(args)} created no backfill of {DAG_ID}")
    server.unpause(DAG_ID)
    return created[-1]  # earlier ones, if any, are orphans of attempts that met a lock


def wait_for_backfill(server: Any, backfill_id: int, logical_dates: list[pd.Timestamp], timeout: float) -> dict[str, str]:
    """Wait until the backfill completes; returns the final state of its run per logical date."""
    deadline = time.monotonic() + timeout
    unhealthy_since = None
    while time.monotonic() < deadline:
        if server.api("GET", f"/api/v2/backfills/{backfill_id}").json().get("completed_at"):
            break
        # A scheduler that died (SQLite metadata databases are prone to it under load) would
        # leave the backfill queued until the timeout: say so at once instead.
        scheduler = server.api("GET", "/api/v2/monitor/health").json().get("scheduler", {})
        if scheduler.get("status") == "healthy":
            unhealthy_since = None
        elif unhealthy_since is None:
            unhealthy_since = time.monotonic()
        elif time.monotonic() - unhealthy_since > 90:
            raise RuntimeError(f"the Airflow scheduler stopped during backfill {backfill_id}:\n{server.log_tail(120)}")
        time.sleep(5)
    else:
        raise TimeoutError(f"backfill {backfill_id} not complete after {timeout:.0f} s:\n{server.log_tail()}")
    wanted = {d.isoformat() for d in logical_dates}
    states: dict[str, str] = {}
    offset = 0
    while True:
        page = server.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100, "offset": offset}).json()["dag_runs"]
        for run in page:
            when = pd.Timestamp(run["logical_date"]).isoformat() if run["logical_date"] else None
            if run["run_type"] == "backfill" and when in wanted:
                states[when] = run["state"]
        if len(page) < 100:
            return states
        offset += 100


def read_outputs(project: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The job's rows in its Parquet dataset and in its SQL table (timestamps UTC-aware)."""
    parquet = pd.read_parquet(project / "var" / "backfill_outputs" / f"job={JOB}")
    with sqlite3.connect(project / "var" / "backfill.db") as connection:
        sql = pd.read_sql("SELECT * FROM anomalies WHERE job = ?", connection, params=[JOB])
    sql["timestamp"] = pd.to_datetime(sql["timestamp"]).dt.tz_localize("UTC")
    return parquet, sql


def rows_per_timestamp(frame: pd.DataFrame, hours: list[pd.Timestamp]) -> dict[pd.Timestamp, int]:
    inside = frame[frame["timestamp"].isin(hours)]
    return {pd.Timestamp(t): int(n) for t, n in inside.groupby("timestamp").size().items()}


def copies(frame: pd.DataFrame, hours: list[pd.Timestamp]) -> tuple[int, int]:
    """(duplicated rows, missing rows) against one row per (hour, series, feature)."""
    keys = frame[frame["timestamp"].isin(hours)].groupby(["timestamp", "series", "feature"]).size()
    expected = len(hours) * len(SERIES) * len(FEATURES)
    return int((keys - 1).sum()), expected - len(keys)


def backfill_range(server: Any, days: int, timeout: float) -> dict[str, Any]:
    """Train, then backfill ``days`` of hourly intervals; the figures of the run."""
    write_source(server.project, FIRST_DAY, days)
    trained = train(server, FIRST_DAY)
    if trained.returncode != 0:
        raise RuntimeError(f"training failed:\n{trained.stderr[-3000:]}")
    hours = list(pd.date_range(FIRST_DAY, periods=24 * days, freq="h"))
    started = time.perf_counter()
    backfill = create_backfill(server, hours[0], hours[-1])
    states = wait_for_backfill(server, backfill, hours, timeout)
    elapsed = time.perf_counter() - started
    parquet, sql = read_outputs(server.project)
    parquet_dup, parquet_missing = copies(parquet, hours)
    sql_dup, sql_missing = copies(sql, hours)
    succeeded = sum(state == "success" for state in states.values())
    return {
        "intervals": len(hours),
        "succeeded": succeeded,
        "failed": len(hours) - succeeded,
        "seconds": elapsed,
        "runs_per_minute": len(hours) / elapsed * 60,
        "parquet_duplicates": parquet_dup,
        "parquet_missing": parquet_missing,
        "sql_duplicates": sql_dup,
        "sql_missing": sql_missing,
    }


def run(quick: bool = False, *, days: int | None = None, database_url: str | None = None) -> str:
    """``database_url``: Airflow's metadata database (default SQLite, which may hit "database is
    locked" with a scheduler and a long backfill writing at once; PostgreSQL does not)."""
    from tests.airflow_server import start_server

    days = days or (QUICK_DAYS if quick else FULL_DAYS)
    with tempfile.TemporaryDirectory(prefix="backfill-bench-") as scratch:
        server = start_server(Path(scratch), database_url=database_url)
        try:
            figures = backfill_range(server, days, timeout=600 + 30 * 24 * days)
        finally:
            server.stop()
    rows = [
        [
            f"{figures['intervals']} hourly intervals ({days} d)",
            f"{figures['succeeded']} / {figures['failed']}",
            f"{figures['seconds']:.0f} s",
            f"{figures['runs_per_minute']:.1f}",
            f"{figures['parquet_duplicates']} / {figures['parquet_missing']}",
            f"{figures['sql_duplicates']} / {figures['sql_missing']}",
        ]
    ]
    return "\n".join(
        [
            "### Backfill through `airflow backfill create`",
            "",
            f"Job `{JOB}` (2 regions x 2 features, seasonal_mad), one `airflow standalone` (LocalExecutor,",
            f"{'PostgreSQL' if database_url else 'SQLite'} metadata, parallelism 4), default backfill concurrency. Each run extracts its hour plus",
            "the models' lookback, validates, scores each series and publishes to Parquet and SQLite.",
            "",
            table(
                ["backfill", "runs ok / failed", "wall time", "runs per minute", "Parquet dup / missing", "SQL dup / missing"],
                rows,
            ),
            "",
            machine_line("one run"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backfill", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one day (24 runs) instead of 30 days (720 runs)")
    parser.add_argument("--days", type=int, help="days of hourly intervals to backfill (default 30)")
    parser.add_argument("--database-url", help="Airflow metadata database, e.g. postgresql+psycopg2://...")
    args = parser.parse_args()
    print(run(args.quick, days=args.days, database_url=args.database_url))


if __name__ == "__main__":
    main()
