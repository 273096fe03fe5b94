"""Pictures of NAB replays: a series, its labelled windows, and where a detector alarmed.

``python -m benchmarks.nab_plot [--detector context] [--series KEY ...] [--out docs/img]`` replays
each series directly (:func:`benchmarks.nab_direct.replay_series`: the schedule of the NAB
tables, fit on the probationary rows, score 250 rows at a time, refit every 1,000 rows) and
draws its values with NAB's windows and the detector's flagged rows, and its scores under them.
With the default series it writes the section ``nab_plot`` of docs/BENCHMARKS.md: the per-file
tables there say how many windows a detector found; these show which, and what its false alarms
looked like.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.nab import SeriesReplay, nab_root
from benchmarks.nab_direct import parse_detector, replay_series
from benchmarks.report import REPO, read_section, table_rows, write_section

log = logging.getLogger(__name__)

SECTION = "nab_plot"

#: A series of each kind the text of docs/BENCHMARKS.md discusses: a holiday the memory misses
#: (nyc_taxi), a failure found early (machine_temperature), bursts (Twitter), one spike that
#: stretched the levels (exchange-4_cpc).
DEFAULT_SERIES = (
    "realKnownCause/nyc_taxi.csv",
    "realKnownCause/machine_temperature_system_failure.csv",
    "realTweets/Twitter_volume_AMZN.csv",
    "realAdExchange/exchange-4_cpc_results.csv",
)


@dataclass(frozen=True)
class AlarmSummary:
    """What one replay's flagged rows were to NAB: ``found`` windows (of ``windows``) and the
    rows flagged outside every window (``false_alarms``), as NAB's scorer counts them."""

    windows: int
    found: int
    false_alarms: int
    raw: float


def classify(stamps: pd.DatetimeIndex, flagged: np.ndarray, windows: Sequence[tuple[pd.Timestamp, pd.Timestamp]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of the first alarm in each window (the one NAB rewards), rows flagged outside every
    window, and the number of windows with an alarm."""
    inside = np.zeros(len(stamps), dtype=bool)
    first: list[int] = []
    for start, end in windows:
        rows = (stamps >= start) & (stamps <= end)
        inside |= rows
        hits = np.flatnonzero(rows & flagged)
        if len(hits):
            first.append(int(hits[0]))
    return np.asarray(first, dtype=np.int64), np.flatnonzero(flagged & ~inside), len(first)


def draw(key: str, label: str, replay: SeriesReplay, root: Path, out: Path) -> AlarmSummary:
    """Write ``out`` (PNG): values with NAB's windows (shaded), the probationary rows (grey),
    the first alarm in each window (green) and false alarms (red); the served scores below."""
    from pipelines.evaluation.nab import load_windows, probationary_rows, score_corpus
    from pipelines.plots import pyplot, save

    plt = pyplot()

    raw = pd.read_csv(root / "data" / key)
    stamps = pd.DatetimeIndex(pd.to_datetime(raw["timestamp"]))  # naive, as NAB's windows are
    values = raw["value"].to_numpy(dtype="float64")
    windows = [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in load_windows(root)[key]]
    first, false, found = classify(stamps, replay.is_anomaly, windows)
    nab = score_corpus({key: replay.is_anomaly}, root, "standard", partial=True).series[key]
    summary = AlarmSummary(windows=len(windows), found=found, false_alarms=len(false), raw=nab.raw)

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 4.8), sharex=True, height_ratios=(3, 1.3), layout="constrained")
    probation = probationary_rows(len(raw))
    for axis in (top, bottom):
        axis.axvspan(stamps[0], stamps[probation - 1], color="0.85", lw=0)
        for start, end in windows:
            axis.axvspan(start, end, color="tab:orange", alpha=0.25, lw=0)
    top.plot(stamps, values, lw=0.5, color="tab:blue")
    top.scatter(stamps[first], values[first], s=40, marker="o", color="tab:green", zorder=3, label="first alarm in a window")
    top.scatter(stamps[false], values[false], s=30, marker="x", color="tab:red", zorder=3, label="false alarm")
    top.set_ylabel("value")
    top.legend(loc="upper left", fontsize=8, frameon=False)
    top.set_title(
        f"{key}: {label}, {found} of {len(windows)} windows found, {len(false)} false-alarm rows, "
        f"NAB raw score {nab.raw:.2f} (standard profile; shaded: windows, grey: probation)",
        fontsize=9,
    )
    bottom.plot(stamps, np.where(replay.scored, replay.score, np.nan), lw=0.5, color="0.3")
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("score")
    save(figure, out)
    return summary


@dataclass(frozen=True)
class Standing:
    """One detector's NAB standard score on flagged rows: ours with the threshold fixed in
    advance and swept, or a published score (``fixed`` None)."""

    label: str
    fixed: float | None
    swept: float


def scoreboard(nab_section: str) -> list[Standing]:
    """Our detectors' fixed and swept flagged-row scores and the published scores, from the table
    of the section ``nab`` (the pipeline replay), best swept score first."""
    ours: dict[str, dict[str, float]] = {}
    published: list[Standing] = []
    for row in table_rows(nab_section):
        if len(row) != 6:
            continue  # the section's other tables (snoozes, runs)
        label, threshold, standard = row[0], row[1], float(re.match(r"-?[0-9.]+", row[2]).group())  # "70.5-69.7": a range over seeds
        if label.startswith("`"):
            kind = threshold.split(":")[0]
            if kind in ("fixed", "swept"):
                ours.setdefault(label.strip("`"), {})[kind] = standard
        elif label not in ("Perfect", "Null"):
            published.append(Standing(label, None, standard))
    standings = [Standing(label, s.get("fixed"), s["swept"]) for label, s in ours.items() if "swept" in s] + published
    return sorted(standings, key=lambda standing: -standing.swept)


def draw_scoreboard(standings: Sequence[Standing], out: Path, floor: float = -20.0) -> None:
    """Horizontal bars: each of our detectors' swept score (and its fixed one beside it), the
    published scores in grey; scores under ``floor`` are drawn to it and written out."""
    from pipelines.plots import pyplot, save

    plt = pyplot()  # first: it names the extra when matplotlib is missing
    from matplotlib.patches import Patch

    figure, axis = plt.subplots(figsize=(9, 0.32 * len(standings) + 1.2), layout="constrained")
    rows = np.arange(len(standings))[::-1]

    def bar(row: float, value: float, height: float, color: str) -> None:
        axis.barh(row, max(value, floor), height=height, color=color)
        axis.text(max(value, 0.0) + 0.8, row, f"{value:.1f}", va="center", fontsize=7)

    for row, standing in zip(rows, standings, strict=True):
        if standing.fixed is None:
            bar(row, standing.swept, 0.6, "0.7")
        else:
            bar(row + 0.18, standing.swept, 0.36, "tab:blue")
            bar(row - 0.18, standing.fixed, 0.36, "tab:cyan")
    lines = [axis.axvline(target, color=color, lw=0.8, ls="--", label=name)
             for target, name, color in ((70.5, "Numenta HTM, 70.5", "tab:orange"), (74.9, "ARTime, 74.9", "tab:red"))]
    handles = [Patch(color="tab:blue", label="ours, threshold swept"), Patch(color="tab:cyan", label="ours, threshold fixed in advance"),
               Patch(color="0.7", label="published (swept)"), *lines]
    axis.legend(handles=handles, loc="lower right", fontsize=7)
    axis.set_yticks(rows, [f"{s.label} (ours)" if s.fixed is not None else s.label for s in standings], fontsize=8)
    axis.set_xlim(floor, 100)
    axis.set_xlabel("NAB standard score on flagged rows (scores under %g drawn to it)" % floor)
    save(figure, out)


def section(entries: Sequence[tuple[str, Path, AlarmSummary]], label: str, board: Path | None = None) -> str:
    lines = [
        "## NAB replays, drawn",
        "",
        f"Generated by `python -m benchmarks.nab_plot` (`benchmarks/nab_plot.py`): `{label}` replayed directly on each "
        "series (the schedule of the tables above), its values with NAB's windows shaded and the probationary rows in grey, "
        "the first flagged row in each window (green, the one NAB rewards) and the rows flagged outside every window (red); "
        "the served scores below.",
        "",
    ]
    if board is not None:
        lines += [
            "The scoreboard first, from the table of the pipeline replay (section \"Detection quality on NAB\"): every "
            "detector's standard score on flagged rows, with the threshold swept and fixed in advance, beside the published ones.",
            "",
            f"![NAB standard scores]({board.relative_to(REPO / 'docs').as_posix()})",
            "",
        ]
    for key, image, summary in entries:
        lines += [
            f"**{key}**: {summary.found} of {summary.windows} windows found, {summary.false_alarms} false-alarm rows, "
            f"raw score {summary.raw:.2f}.",
            "",
            f"![{label} on {key}]({image.relative_to(REPO / 'docs').as_posix()})",
            "",
        ]
    lines.append(f"Run ended {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nab_plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", default="context", help="kind or kind:name=value,... (default: context)")
    parser.add_argument("--series", nargs="*", help=f"NAB keys (default: {', '.join(DEFAULT_SERIES)}; then the section is written)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder for the PNG files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pipelines").setLevel(logging.WARNING)
    from pipelines.evaluation.nab import load_windows

    root, detector = nab_root(), parse_detector(args.detector)
    keys = args.series or list(DEFAULT_SERIES)
    unknown = sorted(set(keys) - set(load_windows(root)))
    if unknown:  # checked before any replay, which can take a minute a series
        parser.error(f"not a NAB series under {root / 'data'}: {', '.join(unknown)} (keys look like {DEFAULT_SERIES[0]})")
    entries = []
    for key in keys:
        replay = replay_series(root / "data" / key, key, detector)
        image = args.out / f"nab_{detector.kind}_{Path(key).stem}.png"
        summary = draw(key, detector.label, replay, root, image)
        log.info("%s: %s (%.1f s of replay) -> %s", key, summary, replay.seconds, image)
        entries.append((key, image, summary))
    if args.series or args.out.resolve() != (REPO / "docs" / "img").resolve():
        for key, image, summary in entries:
            print(f"{key}: {summary.found} of {summary.windows} windows found, {summary.false_alarms} false-alarm rows -> {image}")
        return 0
    board = args.out / "nab_scoreboard.png"
    draw_scoreboard(scoreboard(read_section("nab")), board)
    write_section(SECTION, section(entries, detector.label, board))
    return 0


if __name__ == "__main__":
    sys.exit(main())
