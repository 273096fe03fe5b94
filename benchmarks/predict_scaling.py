"""The predict step end to end, as the number of rows and of series grows.

:func:`pipelines.runner.run_predict` reads the window from a Parquet file, validates it with
Great Expectations, scores each series with its champion and publishes the scores to a Parquet
dataset and a SQLite table. Each configuration gets its own folder (input file, model registry,
outputs); its models are trained once, untimed, before any measurement. Every measured run is
a fresh Python process that imports the libraries, then times ``run_predict`` alone and reports
its own peak RSS, so the peaks of different runs never mix. Outputs are removed before each
run, so every run writes the same, new rows.

The job is the demo job ``demo_web_metrics`` (two features, one series per ``region``) with
model ``seasonal_mad`` (season ``1d``, level window 24), a row every minute, built-in
validation checks only (its suite lists three regions), and the paths moved to the
configuration's folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.report import REPO, fmt_bytes, fmt_number, fmt_ratio, machine_line, median, table

log = logging.getLogger(__name__)

FREQUENCY = timedelta(minutes=1)
#: Train on three days (the season is one day; the detector needs two).
TRAINING_DAYS = 3
#: The first scored timestamp; training data is the three days before.
START = datetime(2024, 3, 1, tzinfo=timezone.utc)
FEATURES = ("requests", "latency_ms")
MODEL = {"kind": "seasonal_mad", "params": {"season": "1d", "level_window": 24}}
RESULT_MARK = "BENCH_RESULT "
#: Steps of run_predict timed inside the measured run (names of pipelines.runner it calls).
STEPS = {
    "extract": "extract",
    "validate": "validate",
    "read_series": "score",
    "score_series": "score",
    "publish_scored": "publish",
}


@dataclass(frozen=True)
class Case:
    """One measured configuration: ``rows`` scored rows over ``series`` series (rows split evenly)."""

    rows: int
    series: int

    @property
    def name(self) -> str:
        return f"rows{self.rows}_series{self.series}"

    @property
    def rows_per_series(self) -> int:
        return self.rows // self.series


def cases(quick: bool) -> tuple[list[Case], list[Case]]:
    """(growing rows at one series, growing series at a fixed total); they may share a case."""
    if quick:
        return [Case(1_000, 1), Case(10_000, 1)], [Case(10_000, 1), Case(10_000, 10)]
    return [Case(1_000, 1), Case(100_000, 1), Case(1_000_000, 1)], [
        Case(100_000, 1),
        Case(100_000, 10),
        Case(100_000, 100),
    ]


# -- setting a case up (untimed) -----------------------------------------------------------


def job_settings(folder: Path) -> dict[str, Any]:
    """The demo job, with the benchmark's source, model, spacing and paths."""
    import yaml

    job = yaml.safe_load((REPO / "config" / "jobs" / "demo_web_metrics.yaml").read_text())
    job.update(
        name="bench_predict",
        source={"kind": "file", "path": str(folder / "input.parquet"), "format": "parquet"},
        frequency="1min",
        model=MODEL,
        training_window=f"{TRAINING_DAYS}d",
        validation={"min_rows": 1, "max_null_fraction": 0.0},
        outputs={
            "parquet": str(folder / "outputs"),
            "table": {"connection": {"url": f"sqlite:///{folder / 'anomalies.db'}"}, "name": "anomalies"},
        },
        registry=str(folder / "models"),
    )
    return job


def write_input(case: Case, path: Path) -> int:
    """Training days plus the scored rows of every series, timestamp-typed Parquet; returns rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    per_series = TRAINING_DAYS * 24 * 60 + case.rows_per_series
    steps = np.arange(per_series)
    start = np.datetime64(START.replace(tzinfo=None), "us") - np.timedelta64(TRAINING_DAYS, "D")
    times = start + steps.astype("timedelta64[m]")
    rng = np.random.default_rng(case.rows + case.series)
    daily = np.sin(2 * np.pi * steps / (24 * 60))
    # Time-major order (all series of a minute together), like rows appended to a table.
    n = per_series * case.series
    table = pa.table(
        {
            "timestamp": pa.array(np.repeat(times, case.series), type=pa.timestamp("us", tz="UTC")),
            "region": pa.array(np.tile([f"r{i:03d}" for i in range(case.series)], per_series)),
            "requests": np.repeat(1000 + 200 * daily, case.series) + rng.normal(0, 20, n),
            "latency_ms": np.repeat(120 + 10 * daily, case.series) + np.abs(rng.normal(0, 5, n)),
        }
    )
    pq.write_table(table, path)
    return n


def set_up(case: Case, root: Path) -> Path:
    """The case's folder with its input file, job file and spec (what the child processes read)."""
    folder = root / case.name
    folder.mkdir(parents=True, exist_ok=True)
    import yaml

    (folder / "job.yaml").write_text(yaml.safe_dump(job_settings(folder), sort_keys=False))
    input_rows = write_input(case, folder / "input.parquet")
    end = START + FREQUENCY * case.rows_per_series
    spec = {
        "job_file": str(folder / "job.yaml"),
        "train": [(START - timedelta(days=TRAINING_DAYS)).isoformat(), START.isoformat()],
        "predict": [START.isoformat(), end.isoformat()],
        "rows": case.rows,
        "series": case.series,
        "input_rows": input_rows,
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    return folder


def _child_env(folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANOMALY_PIPELINES_BASE_DIR": str(folder),
        "ANOMALY_PIPELINES_HOME": str(folder / "home"),
        "GX_ANALYTICS_ENABLED": "false",
    }


def _run_child(mode: str, folders: list[Path]) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "benchmarks.predict_scaling", "--child", mode, *map(str, folders)]
    done = subprocess.run(command, cwd=REPO, env=_child_env(folders[0]), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"predict benchmark child ({mode}) failed:\n{done.stderr[-4000:]}")
    return [json.loads(line[len(RESULT_MARK) :]) for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]


# -- the child process ---------------------------------------------------------------------


def _window(bounds: list[str]):
    from pipelines.workspace import Window, to_utc

    return Window(to_utc(bounds[0]), to_utc(bounds[1]))


def _load(folder: Path):
    from pipelines.config import load_job_file

    os.environ["ANOMALY_PIPELINES_BASE_DIR"] = str(folder)
    os.environ["ANOMALY_PIPELINES_HOME"] = str(folder / "home")
    spec = json.loads((folder / "spec.json").read_text())
    return spec, load_job_file(spec["job_file"])


def _child_train(folders: list[Path]) -> None:
    from pipelines.runner import run_train

    for folder in folders:
        spec, job = _load(folder)
        results = run_train(job, _window(spec["train"]), run_id="bench-train")
        print(RESULT_MARK + json.dumps({"folder": str(folder), "series": len(results)}), flush=True)


def _timing_steps(times: dict[str, float]) -> None:
    """Wrap the step functions run_predict calls, adding their seconds to ``times``."""
    import pipelines.runner as runner

    def wrap(func: Callable[..., Any], step: str) -> Callable[..., Any]:
        def timed_step(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                times[step] = times.get(step, 0.0) + time.perf_counter() - start

        return timed_step

    for name, step in STEPS.items():
        if callable(getattr(runner, name, None)):
            setattr(runner, name, wrap(getattr(runner, name), step))
    # Within publish: each sink's write (patched on the class, which publish instantiates).
    from pipelines.sinks import ParquetSink, SqlSink

    ParquetSink.write = wrap(ParquetSink.write, "parquet")
    sql_replacing, parquet_replacing = SqlSink.replacing, ParquetSink.replacing

    @contextmanager
    def timed_sql(*args: Any, **kwargs: Any) -> Iterator[Any]:
        start = time.perf_counter()  # SqlSink.write goes through here too
        try:
            with sql_replacing(*args, **kwargs) as value:
                yield value
        finally:
            times["sql"] = times.get("sql", 0.0) + time.perf_counter() - start

    @contextmanager
    def timed_parquet(*args: Any, **kwargs: Any) -> Iterator[Any]:
        # publish writes the SQL table inside the Parquet write's block (between staging the
        # files and moving them): the Parquet write's time is the block's less the SQL write's.
        start, sql_before = time.perf_counter(), times.get("sql", 0.0)
        try:
            with parquet_replacing(*args, **kwargs) as value:
                yield value
        finally:
            inside = times.get("sql", 0.0) - sql_before
            times["parquet"] = times.get("parquet", 0.0) + time.perf_counter() - start - inside

    SqlSink.replacing, ParquetSink.replacing = timed_sql, timed_parquet


def _peak_rss() -> int:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child_predict(folder: Path) -> None:
    # Everything run_predict imports lazily is imported first, so the time and the memory
    # above the baseline are those of the run, not of imports.
    import great_expectations  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import sqlalchemy  # noqa: F401

    import pipelines.detectors.seasonal_mad  # noqa: F401
    import pipelines.runner as runner
    import pipelines.sinks  # noqa: F401
    import pipelines.sources  # noqa: F401

    spec, job = _load(folder)
    baseline = _peak_rss()
    steps: dict[str, float] = {}
    _timing_steps(steps)
    start = time.perf_counter()
    result = runner.run_predict(job, _window(spec["predict"]), run_id="bench-predict")
    seconds = time.perf_counter() - start
    print(
        RESULT_MARK
        + json.dumps(
            {
                "seconds": seconds,
                "steps": steps,
                "output_rows": result.rows,
                "series": len(result.rows_per_series),
                "baseline_rss": baseline,
                "peak_rss": _peak_rss(),
            }
        ),
        flush=True,
    )


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.predict_scaling")
    parser.add_argument("--child", choices=["train", "predict"], required=True)
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.child == "train":
        _child_train(args.folders)
    else:
        _child_predict(args.folders[0])


# -- measurement and report ------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    case: Case
    repeats: int
    seconds: float
    steps: dict[str, float]
    output_rows: int
    series_scored: int
    baseline_rss: int
    peak_rss: int
    days: int

    @property
    def rows_per_second(self) -> float:
        return self.case.rows / self.seconds


def _clear_outputs(folder: Path) -> None:
    shutil.rmtree(folder / "outputs", ignore_errors=True)
    shutil.rmtree(folder / "home", ignore_errors=True)
    (folder / "anomalies.db").unlink(missing_ok=True)


def measure(quick: bool, repeats: int | None = None, root: Path | None = None) -> list[Measured]:
    by_rows, by_series = cases(quick)
    unique = list(dict.fromkeys([*by_rows, *by_series]))
    repeats = repeats or (1 if quick else 3)
    with tempfile.TemporaryDirectory(prefix="bench-predict-", dir=root) as tmp:
        folders = {case: set_up(case, Path(tmp)) for case in unique}
        trained = _run_child("train", list(folders.values()))
        if len(trained) != len(unique):
            raise RuntimeError(f"training set up {len(trained)} of {len(unique)} cases")
        runs: dict[Case, list[dict[str, Any]]] = {case: [] for case in unique}
        for repeat in range(repeats):
            order = unique if repeat % 2 == 0 else list(reversed(unique))
            for case in order:
                _clear_outputs(folders[case])
                log.info("predict benchmark: %s, repeat %d of %d", case.name, repeat + 1, repeats)
                (result,) = _run_child("predict", [folders[case]])
                runs[case].append(result)
    out = []
    for case in unique:
        results = runs[case]
        step_names = sorted({name for r in results for name in r["steps"]})
        out.append(
            Measured(
                case=case,
                repeats=repeats,
                seconds=median(r["seconds"] for r in results),
                steps={name: median(r["steps"].get(name, 0.0) for r in results) for name in step_names},
                output_rows=results[0]["output_rows"],
                series_scored=results[0]["series"],
                baseline_rss=int(median(r["baseline_rss"] for r in results)),
                peak_rss=int(median(r["peak_rss"] for r in results)),
                days=-(-(case.rows_per_series * FREQUENCY) // timedelta(days=1)),
            )
        )
    return out


def _shares(m: Measured) -> str:
    def share(name: str) -> str:
        return f"{100 * m.steps.get(name, 0.0) / m.seconds:.0f}%"

    text = ", ".join(f"{name} {share(name)}" for name in ("extract", "validate", "score", "publish") if name in m.steps)
    if "parquet" in m.steps or "sql" in m.steps:
        text += f" (Parquet {share('parquet')}, SQL {share('sql')})"
    return text


def _growth_text(results: list[Measured]) -> str:
    """How time grew between consecutive sizes, and which step grew most where it was steepest."""
    segments = []
    steepest: tuple[float, Measured, Measured] | None = None
    for small, large in zip(results, results[1:]):
        rows, seconds = large.case.rows / small.case.rows, large.seconds / small.seconds
        kind = "less than linear" if seconds < rows else "more than linear"
        segments.append(
            f"{small.case.rows:,} → {large.case.rows:,} rows ({rows:,.0f}× the rows) took {seconds:,.1f}× the time, {kind}"
        )
        if steepest is None or seconds / rows > steepest[0]:
            steepest = (seconds / rows, small, large)
    text = "; ".join(segments) + "."
    if steepest is not None:
        _, small, large = steepest
        names = ("extract", "validate", "score", "parquet", "sql")
        steps = [name for name in names if small.steps.get(name) and name in large.steps]
        if steps:
            name = max(steps, key=lambda n: large.steps[n] / small.steps[n])
            labels = {"parquet": "the Parquet write", "sql": "the SQL write"}
            text += (
                f" From {small.case.rows:,} to {large.case.rows:,} rows the step that grew most is "
                f"{labels.get(name, name)}: {large.steps[name] / small.steps[name]:,.1f}× "
                f"({fmt_number(small.steps[name])} s → {fmt_number(large.steps[name])} s)."
            )
    last = results[-1]
    return text + f" At {last.case.rows:,} rows the largest step is {_largest(last)}."


def _largest(m: Measured) -> str:
    steps = {name: m.steps[name] for name in ("extract", "validate", "score", "parquet", "sql") if name in m.steps}
    name = max(steps, key=steps.__getitem__)
    labels = {"parquet": "the Parquet write", "sql": "the SQL write"}
    return f"{labels.get(name, name)} ({100 * steps[name] / m.seconds:.0f}% of the time)"


def _rows_table(results: list[Measured], reference: Measured) -> str:
    headers = [
        "rows",
        "series",
        "seconds",
        "rows/s",
        "time ratio (vs 1st)",
        "rows/s ratio (vs 1st)",
        "time split",
        "peak RSS",
        "peak RSS rise over imports",
    ]
    rows = [
        [
            f"{m.case.rows:,}",
            f"{m.case.series:,}",
            fmt_number(m.seconds),
            fmt_number(m.rows_per_second),
            fmt_ratio(m.seconds / reference.seconds),
            fmt_ratio(m.rows_per_second / reference.rows_per_second),
            _shares(m),
            fmt_bytes(m.peak_rss),
            fmt_bytes(m.peak_rss - m.baseline_rss),
        ]
        for m in results
    ]
    return table(headers, rows, align="rrrrrrlrr")


def markdown(results: list[Measured], quick: bool) -> str:
    by_rows, by_series = cases(quick)
    found = {m.case: m for m in results}
    rows_part = [found[c] for c in by_rows]
    series_part = [found[c] for c in by_series]
    first = rows_part[0]
    one, many = series_part[0], series_part[-1]
    repeats = results[0].repeats
    return "\n\n".join(
        [
            "## Predict step end to end: rows and series",
            machine_line(f"{repeats} run{'s' if repeats > 1 else ''} of every configuration"),
            "`pipelines.runner.run_predict`: read the window (plus 24 rows of history per series) "
            "from a Parquet file with typed timestamps → Great Expectations validation → score each "
            "series with its champion → publish to the Parquet dataset and a SQLite table. The "
            "job is the demo job with model `seasonal_mad` (season `1d`, level window 24), two "
            "features, one row a minute per series, built-in validation checks only; models are "
            f"trained once per configuration on the {TRAINING_DAYS} days before, untimed. Each run "
            "is a fresh process; *seconds* is `run_predict` alone (imports excluded), *time split* "
            "its steps (and, within publish, the Parquet and the SQL writes), *peak RSS* the "
            "process's own peak (`getrusage(RUSAGE_SELF).ru_maxrss`) and "
            "*peak RSS rise over imports* how far the run raised that peak above the one its imports "
            "had reached (0 when the run stayed below it). A row is one "
            f"timestamp of one series; the outputs hold {len(FEATURES)} rows per row (one per feature).",
            "### Growing rows, one series",
            _rows_table(rows_part, first),
            _growth_text(rows_part),
            f"### Growing series, {one.case.rows:,} rows in total",
            _rows_table(series_part, one),
            f"Splitting the same {one.case.rows:,} rows into {many.case.series} series instead of 1 "
            f"takes {many.seconds / one.seconds:.2f}× the time. The score step (a model load, a "
            "scoring call and a staged file per series) went from "
            f"{fmt_number(one.steps.get('score'))} s to {fmt_number(many.steps.get('score'))} s; the "
            "Parquet write (one file per UTC day) went from "
            f"{fmt_number(one.steps.get('parquet'))} s for {one.days} days to "
            f"{fmt_number(many.steps.get('parquet'))} s for {many.days} day{'s' if many.days > 1 else ''}, "
            "since the same rows then span fewer days.",
        ]
    )


def run(quick: bool = False) -> str:
    return markdown(measure(quick), quick)


if __name__ == "__main__":  # pragma: no cover
    if "--child" in sys.argv:
        _child(sys.argv[1:])
    else:
        print(run(quick=True))
