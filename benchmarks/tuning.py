"""Does tuning pay on NAB? Untuned ``auto`` against ``auto`` tuned on the probationary rows.

Series: the first file (by name) of every NAB category, a rule that never looks at labels.
Each series is replayed twice through the pipeline (:func:`benchmarks.nab.replay_series`:
train on the probationary rows, predict chunk by chunk, retrain every few chunks):

* *untuned*: ``model: auto`` with its defaults (it picks a kind per training, default params);
* *tuned*: ``run_train`` then ``run_tune`` on the probationary rows only (``tune.detectors`` =
  the auto candidates, a ``--trials`` / ``--timeout`` budget per series), so the tuned challenger
  must beat the serving ``auto`` model by ``tune.promotion_margin``, as in a deployment; when it
  does, the replay's trainings build the tuned kind and params from ``tuned.json``, as a
  deployment's scheduled trains would.

Scores are NAB's standard profile over this subset (``partial=True``: null and perfect are the
subset's, so they are not comparable with published NAB scores): of the job's own decisions,
and of the best single threshold over the subset's scores. Tuning seconds per series are
printed (median, max). ``python -m benchmarks.tuning`` writes the section ``tuning`` of
docs/BENCHMARKS.md; ``--quick`` runs two short series with a tiny budget and only prints.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.detectors import DetectorUnderTest
from benchmarks.nab import (
    SeriesReplay,
    _quiet_worker,
    _read_timestamps,
    chunk_starts,
    nab_root,
    pipeline_home,
    replay_series,
    series_job,
    source_file,
)
from benchmarks.report import machine_facts, table, write_section

log = logging.getLogger(__name__)

SECTION = "tuning"
PROFILE = "standard"
QUICK_SERIES = ("artificialWithAnomaly/art_daily_flatmiddle.csv", "realKnownCause/ambient_temperature_system_failure.csv")


def first_of_each_category(root: Path) -> list[str]:
    """``<category>/<file>`` of the first CSV (by name) of every category: no label is read."""
    return [f"{folder.name}/{sorted(folder.glob('*.csv'))[0].name}" for folder in sorted((root / "data").iterdir()) if folder.is_dir()]


@dataclass(frozen=True)
class SeriesResult:
    key: str
    untuned: SeriesReplay
    tuned: SeriesReplay
    tuning_seconds: float
    tuned_kind: str
    tuned_params: dict[str, Any]
    trials: int
    objective: float
    default_objective: float | None
    promoted: bool
    stretches: list[dict[str, Any]]

    def decision(self) -> str:
        """Promoted or not, and the stretch that decided: its mean gain over the champion and p-value."""
        if not self.stretches:
            return "yes (no champion)" if self.promoted else "no"
        last = self.stretches[-1]
        tested = "" if last["p_value"] is None else f", p {last['p_value']:.2g}"
        gain = "" if last["gain"] is None else f": {last['gain']:+.3f}{tested}"
        return f"{'yes' if self.promoted else 'no'}, stretch {last['stretch']}{gain}"


def tune_and_replay(csv_path: str, key: str, workdir: str, kinds: list[str], trials: int, timeout: str) -> SeriesResult:
    """Both replays of one series (run in a worker process)."""
    from benchmarks.nab import ReplayPlan
    from pipelines.config import TuneConfig
    from pipelines.runner import run_train, run_tune
    from pipelines.workspace import Window

    path, base = Path(csv_path), Path(workdir)
    detector = DetectorUnderTest("auto", {"candidates": kinds})
    untuned = replay_series(path, key, detector, base / "untuned")

    tuned_dir = base / "tuned"
    timestamps = _read_timestamps(path)
    plan = ReplayPlan.for_timestamps(timestamps)
    source, _ = source_file(path, timestamps, tuned_dir)
    job = series_job(key, source, detector, detector.params, plan, tuned_dir)
    job = job.model_copy(update={"tune": TuneConfig(detectors=kinds, trials=trials, timeout=timeout)})
    probation = Window(timestamps.min().to_pydatetime(), chunk_starts(timestamps, plan)[0].to_pydatetime())
    with pipeline_home(tuned_dir):
        # As deployed: the train DAG has run, so tuning's challenger must beat a serving model.
        run_train(job, probation, run_id="train")
        began = time.perf_counter()
        [result] = run_tune(job, probation, run_id="tune")
    seconds = time.perf_counter() - began
    tuned = replay_series(path, key, detector, tuned_dir)
    return SeriesResult(
        key, untuned, tuned, seconds, result["kind"], result["params"], result["trials"], result["objective"],
        result["default_objective"], bool(result["promoted"]), result["stretches"],
    )


def scores(replays: dict[str, SeriesReplay], root: Path) -> tuple[float, tuple[float, float], dict[str, float]]:
    """Standard NAB score of the job's decisions, (threshold, score) of the best single threshold,
    and each series' raw score of the job's decisions (what a series added to the first)."""
    from pipelines.evaluation.nab import score_corpus, sweep_threshold

    fixed = score_corpus({k: r.is_anomaly for k, r in replays.items()}, root, PROFILE, partial=True)
    swept = sweep_threshold({k: r.score for k, r in replays.items()}, root, PROFILE, partial=True)
    return fixed.score, swept, {key: one.raw for key, one in fixed.series.items()}


def run_all(keys: Sequence[str], kinds: list[str], trials: int, timeout: str, workers: int) -> list[SeriesResult]:
    root = nab_root()
    results: list[SeriesResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        jobs = [(str(root / "data" / key), key, str(Path(tmp) / str(i)), kinds, trials, timeout) for i, key in enumerate(keys)]
        if workers <= 1:
            results = [tune_and_replay(*args) for args in jobs]
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_quiet_worker) as pool:
                futures = [pool.submit(tune_and_replay, *args) for args in jobs]
                for future in as_completed(futures):
                    results.append(future.result())
                    log.info("%s done (%d/%d)", results[-1].key, len(results), len(jobs))
    return sorted(results, key=lambda r: r.key)


def render(results: list[SeriesResult], *, kinds: list[str], trials: int, timeout: str, workers: int, seconds: float) -> str:
    root = nab_root()
    untuned_fixed, (untuned_threshold, untuned_swept), untuned_raw = scores({r.key: r.untuned for r in results}, root)
    tuned_fixed, (tuned_threshold, tuned_swept), tuned_raw = scores({r.key: r.tuned for r in results}, root)
    tuning = [r.tuning_seconds for r in results]
    facts = machine_facts()
    lines = [
        "## Tuning on NAB",
        "",
        f"`python -m benchmarks.tuning`: {len(results)} NAB series (the first file of each category), each replayed "
        "through the pipeline twice: `model: auto` untuned, and `auto` trained then tuned (`<job>__tune`) on the probationary rows "
        f"(detectors {', '.join(kinds)}; budget {trials} trials or {timeout} per series). NAB standard profile over "
        "this subset (null and perfect of the subset: not comparable with published NAB scores).",
        "",
        table(
            ["Model", "Standard, job's threshold", "Standard, best single threshold (threshold)"],
            [
                ["`auto`, untuned", f"{untuned_fixed:.1f}", f"{untuned_swept:.1f} ({untuned_threshold:.4g})"],
                ["`auto`, tuned", f"{tuned_fixed:.1f}", f"{tuned_swept:.1f} ({tuned_threshold:.4g})"],
            ],
            align="lrr",
        ),
        "",
        f"Tuning time per series: median {statistics.median(tuning):.1f} s, max {max(tuning):.1f} s.",
        "",
        table(
            [
                "Series", "Tuned kind", "Tuned params", "Trials", "Objective (configured → tuned)", "Promoted",
                "Raw score, untuned → tuned", "Tuning s",
            ],
            [
                [
                    r.key, r.tuned_kind, ", ".join(f"{k}={_short(v)}" for k, v in sorted(r.tuned_params.items())) or "defaults",
                    str(r.trials),
                    f"{'—' if r.default_objective is None else f'{r.default_objective:.3f}'} → {r.objective:.3f}",
                    r.decision(),
                    f"{untuned_raw[r.key]:.2f} → {tuned_raw[r.key]:.2f}",
                    f"{r.tuning_seconds:.1f}",
                ]
                for r in results
            ],
            align="lllrrlrr",
        ),
        "",
        "*Promoted*: whether the tuned challenger was clearly better than the serving `auto` model (by "
        "`tune.promotion_margin` and a paired test over the plantings at 5 %) on each of `tune.stretches` (3) held-back "
        "stretches (if not, the replay's trainings stay `auto`), and the stretch that decided, with the challenger's "
        "mean gain in objective and the p-value. *Raw score*: the series' NAB standard raw score "
        "at the job's threshold (a found window earns up to 1, a missed one costs 1, each false-alarm row up to 0.11).",
        "",
        f"Wall time {seconds / 60:.1f} min with {workers} worker process(es). Machine: {facts['cores']} cores "
        f"({facts['cpu']}), Python {facts['python']}. Run ended {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines.detectors.search_spaces import TUNABLE_KINDS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.tuning", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two short series, a tiny budget; print only")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--timeout", default="2min", help="tuning budget per series (a duration)")
    parser.add_argument("--kinds", default=",".join(TUNABLE_KINDS), help="comma-separated detector kinds (both arms)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    _quiet_worker()
    logging.getLogger(__name__).setLevel(logging.INFO)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    markdown = compare(args.quick, kinds=kinds, trials=args.trials, timeout=args.timeout, workers=args.workers)
    print(markdown)
    if not args.quick:
        write_section(SECTION, markdown)
    return 0


def compare(quick: bool, *, kinds: list[str], trials: int, timeout: str, workers: int) -> str:
    """Replay untuned and tuned ``auto`` (``quick``: two short series, a tiny budget); the section."""
    trials, timeout = (4, "30s") if quick else (trials, timeout)
    keys = list(QUICK_SERIES) if quick else first_of_each_category(nab_root())
    began = time.perf_counter()
    results = run_all(keys, kinds, trials, timeout, workers)
    return render(results, kinds=kinds, trials=trials, timeout=timeout, workers=workers, seconds=time.perf_counter() - began)


def run(quick: bool = False) -> str:
    """``python -m benchmarks --only tuning``: the defaults of :func:`main`."""
    from pipelines.detectors.search_spaces import TUNABLE_KINDS

    return compare(quick, kinds=list(TUNABLE_KINDS), trials=12, timeout="2min", workers=2)


if __name__ == "__main__":
    sys.exit(main())
