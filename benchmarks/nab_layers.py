"""Layers over detectors' scores that give them a whole-history notion of normal, measured on NAB.

Each layer turns the scores a detector served (a direct replay, :mod:`benchmarks.nab_direct`)
into new scores and decisions, causally (a row's new score uses that row and earlier ones only),
and is scored the four ways of the other NAB tables:

- ``likelihood``: Numenta's anomaly likelihood (the layer of its HTM detector, 70.5 on NAB):
  the moving average of the last few surprises compared with a normal distribution fitted to
  the averages of the series' earlier served rows; alarm at a tail probability of 10⁻⁵. The
  parameters are Numenta's published defaults, except the learning period (see ``--learning``).
- ``history rank``: each score ranked against every earlier served score of its series, the
  detector's own calibration counting as :data:`PRIOR_ROWS` earlier rows.
- ``max`` of two detectors' scores (an ensemble); a row is flagged when either flags it.

None of these layers was adopted (docs/BENCHMARKS.md, "NAB: what was changed, and what it did",
has the figures and why); this script keeps the measurement reproducible:
``python -m benchmarks.nab_layers [--learning 388] [--workers 2]`` prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtr

from benchmarks.nab import CONTAMINATION, SeriesReplay, alert_scores, nab_root, nab_scores
from benchmarks.nab_direct import parse_detector, replay
from benchmarks.report import table

#: Numenta's defaults (nupic ``AnomalyLikelihood``): rows averaged, rows of history the
#: distribution is fitted to, rows between re-estimations, the tail probability of an alarm.
AVERAGING_ROWS = 10
HISTORY_ROWS = 8640
REESTIMATE_EVERY = 100
ALARM_TAIL = 1e-5
#: Numenta's learning period: 288 rows ignored, then 100 more before the first estimate.
LEARNING_ROWS = 388
#: Floors of the fitted mean and variance (Numenta's), so a series of near-zero surprises does
#: not make every small bump an alarm.
MIN_MEAN, MIN_VARIANCE = 0.03, 0.0003
#: Earlier rows the detector's own calibration counts for in the history rank.
PRIOR_ROWS = 1000

DETECTORS = ("seasonal_mad:season=1d", "iforest", "mset")
HEADERS = ["Layer", "Flagged rows, fixed", "Flagged rows, swept", "Alerts, fixed", "Alerts, swept"]


def surprise(score: np.ndarray) -> np.ndarray:
    """``-log(1 - score)``: calibrated scores without their ceiling at 1."""
    return -np.log1p(-np.minimum(score, 1.0 - 1e-15))


def anomaly_likelihood(surprises: np.ndarray, learning_rows: int = LEARNING_ROWS) -> np.ndarray:
    """Per row, the probability that an average of :data:`AVERAGING_ROWS` surprises at least as
    far from the mean occurs in normal data (0.5 while learning); small is anomalous.

    Two-sided, with Numenta's filter: a tail below :data:`ALARM_TAIL` right after another is
    raised to 10⁻³, so a lasting anomaly alarms at its start.
    """
    # Written out rather than imported: nupic is Python 2 only and htm.core has no wheels here.
    n = surprises.size
    sums = np.concatenate([[0.0], np.cumsum(surprises)])
    rows = np.arange(n)
    first = np.maximum(0, rows - AVERAGING_ROWS + 1)
    averages = (sums[rows + 1] - sums[first]) / (rows + 1 - first)
    tail = np.full(n, 0.5)
    for start in range(learning_rows, n, REESTIMATE_EVERY):
        earlier = averages[max(0, start - HISTORY_ROWS) : start]
        mean = max(float(earlier.mean()), MIN_MEAN)
        deviation = math.sqrt(max(float(earlier.var()), MIN_VARIANCE))
        block = averages[start : start + REESTIMATE_EVERY]
        tail[start : start + block.size] = ndtr(-np.abs(block - mean) / deviation)
    red = tail < ALARM_TAIL
    tail[1:][red[1:] & red[:-1]] = 1e-3
    return tail


def history_rank(score: np.ndarray) -> np.ndarray:
    """Per row, the share of earlier rows (and of the detector's calibration, as
    :data:`PRIOR_ROWS` rows) that scored below it."""
    ranked = np.empty(score.size)
    for row, value in enumerate(score):
        at_least = np.count_nonzero(score[:row] >= value) + PRIOR_ROWS * (1.0 - value)
        ranked[row] = 1.0 - (at_least + 0.5) / (row + PRIOR_ROWS + 1)
    return ranked


def _layered(replay_: SeriesReplay, score: np.ndarray, flagged: np.ndarray) -> SeriesReplay:
    full_score, full_flagged = np.zeros(replay_.score.size), np.zeros(replay_.score.size, dtype=bool)
    full_score[replay_.scored], full_flagged[replay_.scored] = score, flagged
    return dataclasses.replace(replay_, score=full_score, is_anomaly=full_flagged)


def likelihood_layer(series: dict[str, SeriesReplay], learning_rows: int) -> dict[str, SeriesReplay]:
    layered = {}
    for key, served in series.items():
        tail = anomaly_likelihood(surprise(served.score[served.scored]), learning_rows)
        # -log: 1 - tail would round the smallest tails to the same score.
        layered[key] = _layered(served, -np.log(tail), tail < ALARM_TAIL)
    return layered


def history_rank_layer(series: dict[str, SeriesReplay]) -> dict[str, SeriesReplay]:
    layered = {}
    for key, served in series.items():
        ranked = history_rank(served.score[served.scored])
        layered[key] = _layered(served, ranked, ranked >= 1.0 - CONTAMINATION)
    return layered


def max_layer(first: dict[str, SeriesReplay], second: dict[str, SeriesReplay]) -> dict[str, SeriesReplay]:
    """Rows scored by both; the higher score, flagged when either flagged."""
    layered = {}
    for key, one in first.items():
        other = second[key]
        both = one.scored & other.scored
        layered[key] = dataclasses.replace(
            one,
            score=np.where(both, np.maximum(one.score, other.score), 0.0),
            is_anomaly=both & (one.is_anomaly | other.is_anomaly),
            scored=both,
        )
    return layered


def score_row(label: str, series: dict[str, SeriesReplay], partial: bool) -> list[str]:
    root = nab_root()
    fixed, swept = nab_scores(series, root, partial)
    alerts_fixed, alerts_swept, _ = alert_scores(series, root, partial)
    values = (fixed["standard"], swept["standard"][1], alerts_fixed["standard"], alerts_swept["standard"][1])
    return [label, *(f"{value:.1f}" for value in values)]


def run(keys: Sequence[str], learning_rows: int, workers: int, partial: bool) -> str:
    root = nab_root()
    served = {text: replay(parse_detector(text), keys, root, workers) for text in DETECTORS}
    base = DETECTORS[0]
    rows = [score_row(f"`{text}` alone", served[text], partial) for text in DETECTORS]
    rows.append(score_row(f"likelihood over `{base}` (learning {learning_rows} rows)", likelihood_layer(served[base], learning_rows), partial))
    rows.append(score_row(f"history rank over `{base}`", history_rank_layer(served[base]), partial))
    rows += [score_row(f"max of `{base}` and `{other}`", max_layer(served[base], served[other]), partial) for other in DETECTORS[1:]]
    return f"NAB standard profile, {len(keys)} series, direct replay:\n\n" + table(HEADERS, rows, align="lrrrr")


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines.evaluation.nab import load_windows

    parser = argparse.ArgumentParser(prog="python -m benchmarks.nab_layers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--learning", type=int, default=LEARNING_ROWS, help="rows before the first likelihood estimate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--series", nargs="*", help="NAB keys (default: the whole corpus)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    keys = args.series or sorted(load_windows(nab_root()))
    print(run(keys, args.learning, args.workers, partial=bool(args.series)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
