"""NAB replayed on the detectors directly: the schedule of :mod:`benchmarks.nab` without the pipeline.

The pipeline replay (``benchmarks.nab``) pays extraction, Great Expectations validation, the
registry and Parquet publishing on each of ~1,400 runs per detector, which makes detectors that
fit several models per training (``auto`` fits every candidate) take hours. This replay keeps
the same causal schedule — fit on NAB's probationary rows, score 250 rows at a time with the
detector's history, refit every 1,000 rows on the trailing 4,000 periods — and calls
``fit``/``detect`` directly. Two differences, both stated in the output: every refitted model
serves (the pipeline keeps a champion that serves better), and rows repeating a timestamp are
dropped in memory. It scores the same four ways as the pipeline replay (flagged rows and alerts,
fixed and swept) with the same functions, so the two tables can be read side by side.

``python -m benchmarks.nab_direct auto seasonal_mad:season=1d [--workers 2]`` prints a table and,
on the whole corpus, writes it as the section ``nab_direct`` of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import functools
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.detectors import DetectorUnderTest
from benchmarks.nab import (
    CHUNK_ROWS,
    RETRAIN_EVERY,
    TRAINING_PERIODS,
    ReplayPlan,
    SeriesReplay,
    alert_scores,
    fixed_alerts,
    nab_root,
    nab_scores,
    replay_in_pool,
)
from benchmarks.report import merge_table_rows, read_section, table, table_rows, write_section

log = logging.getLogger(__name__)

SECTION = "nab_direct"


def replay_series(csv_path: Path, key: str, detector: DetectorUnderTest, warm_start: bool = False) -> SeriesReplay:
    """Scores and decisions of ``detector`` on every row of one NAB file, causally; with
    ``warm_start``, each refit starts from the serving model, as the pipeline's training does
    from its champion (for detectors that support it)."""
    from pipelines.detectors import make_detector
    from pipelines.detectors.params import MODEL_PARAMS
    from pipelines.errors import ModelError

    began = time.perf_counter()
    raw = pd.read_csv(csv_path)
    stamps = pd.to_datetime(raw["timestamp"], utc=True)
    kept = ~stamps.duplicated().to_numpy()
    rows = np.flatnonzero(kept)
    frame = pd.DataFrame({"value": raw["value"].to_numpy(dtype="float64")[kept]}, index=pd.DatetimeIndex(stamps[kept]))
    plan = ReplayPlan.for_timestamps(stamps)
    first_chunk = int((rows < plan.probation_rows).sum())
    params, note = detector.params_for(plan.frequency, first_chunk)
    if warm_start and "warm_start" in MODEL_PARAMS[detector.kind].model_fields:
        params = {**params, "warm_start": True}  # context continues its memory only when asked to
    score, flagged, scored = np.zeros(len(raw)), np.zeros(len(raw), dtype=bool), np.zeros(len(raw), dtype=bool)
    model, trainings, failed, chunk, choices = None, 0, 0, 0, []
    for start in range(first_chunk, len(frame), CHUNK_ROWS):
        if chunk % RETRAIN_EVERY == 0:
            trainings += 1
            try:
                since = 0 if chunk == 0 else max(0, start - TRAINING_PERIODS)  # the first fit: every probationary row
                model = make_detector(detector.kind, params).fit(frame.iloc[since:start], warm_start=model if warm_start else None)
                if hasattr(model, "chosen_"):
                    choices.append(model.chosen_)
            except ModelError as exc:  # as in production: the serving model stays, if there is one
                failed += 1
                log.warning("%s: training before row %d failed, %s: %s", key, start,
                            "the model serves on" if model else "no model serves (rows unscored)", exc)
        chunk += 1
        if model is None:
            continue
        end = min(len(frame), start + CHUNK_ROWS)
        history = frame.iloc[max(0, start - max(int(model.lookback_), 1)) : start]
        detection = model.detect(frame.iloc[start:end], history=history)
        at = rows[start:end]
        score[at], flagged[at], scored[at] = detection.score.max(axis=1), detection.is_anomaly.any(axis=1), True
    return SeriesReplay(
        key=key, score=score, is_anomaly=flagged, scored=scored, params=params, note=note,
        dropped_rows=int((~kept).sum()), predict_runs=chunk, training_runs=trainings, promotions=trainings - failed,
        failed_trainings=failed, seconds=time.perf_counter() - began, choices=tuple(choices),
    )


def replay(
    detector: DetectorUnderTest, keys: Sequence[str], root: Path, workers: int, warm_start: bool = False
) -> dict[str, SeriesReplay]:
    label = detector.label + (", warm starts" if warm_start else "")
    return replay_in_pool(functools.partial(replay_series, detector=detector, warm_start=warm_start), keys, root, workers, label)


def parse_detector(text: str) -> DetectorUnderTest:
    """``kind`` or ``kind:name=value,name=value`` (values: int, float, None, or text)."""
    kind, _, spec = text.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        for cast in (int, float):
            try:
                params[name] = cast(value)
                break
            except ValueError:
                continue
        else:
            params[name] = None if value == "None" else value
    return DetectorUnderTest(kind, params)


HEADERS = ["Detector", "Flagged rows, fixed", "Flagged rows, swept", "Alerts, fixed", "Alerts, swept", "Failed refits", "Wall time"]


PER_FILE_HEADERS = ["detector", "series", "flagged_raw", "tp", "fp", "fn", "alerts_raw", "alerts_fp", "choices"]


def per_file_rows(label: str, series: dict[str, SeriesReplay], root: Path, partial: bool) -> list[list[str]]:
    """Raw NAB standard scores of each file (flagged rows and alerts, threshold fixed), with the
    detectors ``auto`` chose there: which files a detector gains or loses its corpus score on."""
    from pipelines.evaluation.nab import score_corpus

    flagged = score_corpus({k: r.is_anomaly for k, r in series.items()}, root, "standard", partial=partial).series
    alerted = score_corpus(fixed_alerts(series, root), root, "standard", partial=partial).series
    return [
        [label, key, f"{flagged[key].raw:.3f}", str(flagged[key].tp), str(flagged[key].fp), str(flagged[key].fn),
         f"{alerted[key].raw:.3f}", str(alerted[key].fp), " ".join(replay.choices)]
        for key, replay in series.items()
    ]


def score_rows(
    detectors: Sequence[DetectorUnderTest], keys: Sequence[str], root: Path, workers: int, partial: bool,
    warm_start: bool = False, per_file: Path | None = None,
) -> tuple[list[list[str]], list[str]]:
    """One table row per detector (its four NAB standard scores, failed refits and wall time),
    and for detectors that choose a detector per training (``auto``) a line of their choices;
    with ``per_file``, each file's raw scores are appended to that CSV (:func:`per_file_rows`)."""
    rows, choices = [], []
    for detector in detectors:
        began = time.perf_counter()
        series = replay(detector, keys, root, workers, warm_start)
        fixed, swept = nab_scores(series, root, partial)
        alerts_fixed, alerts_swept, _ = alert_scores(series, root, partial)
        label = detector.label + (", warm starts" if warm_start else "")
        if per_file is not None:
            new = not per_file.exists()
            with per_file.open("a", newline="") as out:
                writer = csv.writer(out)
                if new:
                    writer.writerow(PER_FILE_HEADERS)
                writer.writerows(per_file_rows(label, series, root, partial))
        rows.append([
            f"`{label}`",
            *(f"{value:.1f}" for value in (fixed["standard"], swept["standard"][1], alerts_fixed["standard"], alerts_swept["standard"][1])),
            f"{sum(r.failed_trainings for r in series.values())}",
            f"{(time.perf_counter() - began) / 60:.1f} min",
        ])
        log.info("%s: %s", detector.label, rows[-1])
        if any(r.choices for r in series.values()):
            choices.append(choices_line(rows[-1][0], series))
    return rows, choices


CHOICES = "Choices of "


def choices_line(label: str, series: dict[str, SeriesReplay]) -> str:
    """How often each detector was chosen, over every training and over the first ones."""

    def counts(picks: list[str]) -> str:
        return ", ".join(f"`{kind}` {n}" for kind, n in Counter(picks).most_common())

    every = [kind for replay in series.values() for kind in replay.choices]
    first = [replay.choices[0] for replay in series.values() if replay.choices]
    return (
        f"{CHOICES}{label}: {counts(every)} of {len(every)} trainings; at the first training (the probationary rows): "
        f"{counts(first)} of {len(first)} series."
    )


def table_text(rows: list[list[str]], series: int, workers: int) -> str:
    return "\n".join([
        f"NAB standard profile, direct replay of {series} series (every refitted model serves; {workers} worker(s)):",
        "",
        table(HEADERS, rows, align="lrrrrrr"),
    ])


def merge_rows(previous: str, rows: list[list[str]]) -> tuple[list[list[str]], list[str]]:
    """The rows of the ``previous`` section with ``rows`` replacing those of the same detector
    (new detectors appended), and the detectors kept from it: so one detector can be replayed
    again without replaying them all."""
    return merge_table_rows([row for row in table_rows(previous) if len(row) == len(HEADERS)], rows)


def merge_choices(previous: str, kept: Sequence[str], fresh: Sequence[str]) -> list[str]:
    """The :func:`choices_line` lines of ``previous`` for the detectors whose rows were
    ``kept`` from it, then ``fresh``."""
    earlier = [line for line in previous.splitlines() if line.startswith(CHOICES)]
    return [line for line in earlier if line.split(":")[0].removeprefix(CHOICES) in kept] + list(fresh)


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines.evaluation.nab import load_windows

    parser = argparse.ArgumentParser(prog="python -m benchmarks.nab_direct", description=__doc__.split("\n\n")[0])
    parser.add_argument("detectors", nargs="+", help="kind or kind:name=value,... (e.g. seasonal_mad:season=1d)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--series", nargs="*", help="NAB keys (default: the whole corpus)")
    parser.add_argument(
        "--warm-start", action="store_true",
        help="refit from the serving model, as the pipeline does from its champion (rows labelled 'warm starts')",
    )
    parser.add_argument(
        "--per-file", type=Path, metavar="CSV",
        help="append each file's raw NAB standard scores (and auto's choices) to this CSV",
    )
    args = parser.parse_args(argv)
    if args.per_file is not None and not args.per_file.parent.is_dir():
        # Checked before the replay, which can take an hour, rather than when the CSV is written.
        parser.error(f"--per-file {args.per_file}: the folder {args.per_file.parent} does not exist; create it or choose another path")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pipelines").setLevel(logging.WARNING)
    root = nab_root()
    keys = args.series or sorted(load_windows(root))
    rows, choices = score_rows(
        [parse_detector(d) for d in args.detectors], keys, root, args.workers, partial=bool(args.series), warm_start=args.warm_start,
        per_file=args.per_file,
    )
    if args.series:
        print(section(table_text(rows, len(keys), args.workers), choices=choices))
        return 0
    previous = read_section(SECTION)
    rows, kept = merge_rows(previous, rows)
    choices = merge_choices(previous, kept, choices)
    note = ""
    if kept:
        earlier = re.search(r"Run ended ([0-9: -]+ UTC)", previous)
        note = (
            f"Rows of {', '.join(kept)} are kept from earlier runs"
            + (f" (the latest ended {earlier.group(1)})" if earlier else "")
            + "; the others are from this one."
        )
    markdown = section(table_text(rows, len(keys), args.workers), note, choices)
    print(markdown)
    write_section(SECTION, markdown)
    return 0


def section(result: str, note: str = "", choices: Sequence[str] = ()) -> str:
    """The Markdown section ``nab_direct`` around a :func:`table_text` table, with the lines
    of :func:`choices_line` after it."""
    return "\n".join([
        "## NAB, direct replay (detectors without the pipeline)",
        "",
        "Generated by `python -m benchmarks.nab_direct <detectors>` (`benchmarks/nab_direct.py`): the schedule of the "
        "pipeline replay above (fit on the probationary rows, score 250 rows at a time, refit every 1,000 rows on the "
        "trailing 4,000 periods) with `fit`/`detect` called directly, for detectors whose pipeline replay takes hours "
        "(`auto` fits every candidate at each refit). Until the first refit its scores equal the pipeline's "
        "(`tests/benchmarks/test_nab_quick.py`); after it, every refitted model serves, where the pipeline keeps a "
        "champion that serves better.",
        "",
        result,
        "",
        *(line for choice in choices for line in (choice, "")),
        f"Run ended {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.{' ' + note if note else ''}",
    ])


if __name__ == "__main__":
    sys.exit(main())
