"""Training many series at once: 1,000 series of 2,000 points each, per detector, on every core.

Each series is trained the way one mapped ``train`` task trains it — ``pipelines.training.
train_series``: fit on the head, score the held-back tail, compare with the champion, refit on
everything, register the model — in a pool of one worker process per core (as Airflow's
LocalExecutor runs mapped tasks side by side). Series differ in level, amplitude, phase and
noise. The figure is the wall time of the whole set; the per-series median shows the cost of
one task's work without Airflow's process start-up.

Run: ``python -m benchmarks.train_many [--quick] [--series N] [--points N] [--detectors a,b]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from benchmarks.report import cores, machine_line, table, write_section

SECTION = "train_many"
SERIES, POINTS = 1_000, 2_000
QUICK_SERIES, QUICK_POINTS = 8, 600
DETECTORS = ("seasonal_mad", "iforest", "mset", "prophet", "lstm", "context", "auto")

JOB = {
    "name": "train_many",
    "source": {"kind": "file", "path": "unused.parquet"},
    "timestamp": "ts",
    "frequency": "1h",
    "dimensions": ["sensor"],
    "features": ["value"],
    "training_window": "120d",
    "schedules": {"train": None, "predict": None, "tune": None},
}


def series_frame(number: int, points: int) -> pd.DataFrame:
    """Hourly points of series ``number``: its own level, daily amplitude, phase and noise."""
    rng = np.random.default_rng(number)
    index = pd.date_range("2024-01-01", periods=points, freq="h", tz="UTC")
    hours = index.hour.to_numpy()
    level, amplitude, phase, noise = rng.uniform(10, 1000), rng.uniform(0.5, 20), rng.uniform(0, 24), rng.uniform(0.2, 3)
    values = level + amplitude * np.sin(2 * np.pi * (hours - phase) / 24) + noise * rng.normal(size=points)
    return pd.DataFrame({"value": values}, index=index)


def _train_one(args: tuple[str, int, int, str]) -> float:
    kind, number, points, home = args
    os.environ["ANOMALY_PIPELINES_HOME"] = home
    from pipelines.config import parse_job
    from pipelines.training import train_series
    from pipelines.workspace import Window

    job = parse_job({**JOB, "model": {"kind": kind}, "registry": f"{home}/models"})
    data = series_frame(number, points)
    window = Window(data.index[0], data.index[-1] + pd.Timedelta("1h"))
    started = time.perf_counter()
    train_series(job, f"sensor={number}", data, window, run_id="benchmark")
    return time.perf_counter() - started


def _quiet() -> None:
    import logging

    logging.disable(logging.WARNING)


def train_all(kind: str, series: int, points: int, workers: int) -> tuple[float, list[float]]:
    """Wall seconds to train ``series`` series with ``workers`` processes, and each series' seconds."""
    with tempfile.TemporaryDirectory(prefix="train-many-") as home:
        tasks = [(kind, number, points, home) for number in range(series)]
        started = time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers, initializer=_quiet) as pool:
            per_series = list(pool.map(_train_one, tasks, chunksize=max(1, series // (workers * 20))))
        return time.perf_counter() - started, per_series


def run(quick: bool = False, *, series: int | None = None, points: int | None = None,
        detectors: Sequence[str] = DETECTORS) -> str:
    series = series or (QUICK_SERIES if quick else SERIES)
    points = points or (QUICK_POINTS if quick else POINTS)
    workers = cores()
    rows = []
    for kind in detectors:
        wall, per_series = train_all(kind, series, points, workers)
        rows.append(
            [
                f"`{kind}`",
                f"{series:,}",
                f"{points:,}",
                workers,
                f"{wall:,.1f} s" if wall < 120 else f"{wall / 60:,.1f} min",
                f"{series / wall:,.2f}",
                f"{statistics.median(per_series):.3f} s",
            ]
        )
        print(f"{kind}: {series} series in {wall:.1f} s", file=sys.stderr, flush=True)
    return "\n".join(
        [
            "## Training many series",
            "",
            f"{series:,} series of {points:,} hourly points each (one feature), trained per series with "
            "`train_series` (fit on the head, held-back comparison with the champion, refit, register) in a "
            f"pool of {workers} worker processes, as mapped train tasks run side by side. `auto` fits every "
            "available candidate on each series before refitting the winner.",
            "",
            table(
                ["Detector", "Series", "Points each", "Workers", "Wall time", "Series/s", "Median per series"],
                rows,
                "lrrrrrr",
            ),
            "",
            # One run per detector, one after another: no ratio is taken between them.
            machine_line("1 run").split(" Figures are")[0] + " One run per detector, one after another.",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_many", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few short series; print only")
    parser.add_argument("--series", type=int, help=f"series to train (default {SERIES:,})")
    parser.add_argument("--points", type=int, help=f"points per series (default {POINTS:,})")
    parser.add_argument("--detectors", help=f"comma-separated subset of {','.join(DETECTORS)}")
    args = parser.parse_args(argv)
    detectors = args.detectors.split(",") if args.detectors else DETECTORS
    section = run(args.quick, series=args.series, points=args.points, detectors=detectors)
    print(section)
    if not args.quick and args.series is None and args.points is None:
        print(f"wrote section {SECTION!r} of {write_section(SECTION, section)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
