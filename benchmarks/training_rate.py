"""What a ``context`` model's training anomaly rate costs and says, measured side by side.

Monitoring compares served anomaly rates with a model's ``train_anomaly_rate``. Most detectors
measure it by scoring their training rows again; ``context`` (2026-12-05) takes it from its fit,
each calibration row scored before its memory learned it, because a memory rescoring rows it
has just learned finds them no news. Per series this script fits ``context`` on the first
``points`` rows (as a training's final refit does), then, interleaved in one process:

- the rescoring pass the rate used to cost (``BaseDetector.training_anomaly_rate``), as a share
  of fit plus rescoring;
- both rates beside the rate the model then flags on the next ``points`` rows (served, with
  the training rows as history): the figure monitoring expects the training rate to predict.

Series: ``train_many``'s synthetic ones, and five NAB series when the corpus is present.

Run: ``python -m benchmarks.training_rate [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import pandas as pd

from benchmarks.nab import nab_root
from benchmarks.report import machine_line, table, write_section
from benchmarks.train_many import series_frame

SECTION = "training_rate"
SYNTHETIC, POINTS = 16, 2_000
QUICK_SYNTHETIC, QUICK_POINTS = 2, 400
NAB_SERIES = (
    "realKnownCause/nyc_taxi.csv",
    "realTweets/Twitter_volume_AMZN.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv",
    "realKnownCause/machine_temperature_system_failure.csv",
    "artificialNoAnomaly/art_noisy.csv",
)


def nab_frame(key: str) -> pd.DataFrame | None:
    path = nab_root() / "data" / key
    if not path.is_file():
        return None
    raw = pd.read_csv(path)
    frame = pd.DataFrame({"value": raw["value"].to_numpy(dtype="float64")}, index=pd.DatetimeIndex(pd.to_datetime(raw["timestamp"], utc=True)))
    return frame[~frame.index.duplicated()]


def measure(frame: pd.DataFrame, points: int) -> dict[str, float]:
    """Fit on the first ``points`` rows, serve the next ``points``: seconds and rates."""
    from pipelines.detectors.base import BaseDetector
    from pipelines.detectors.context import ContextDetector

    train, served = frame.iloc[:points], frame.iloc[points : 2 * points]
    started = time.perf_counter()
    model = ContextDetector().fit(train)
    fitted = time.perf_counter()
    rescored = BaseDetector.training_anomaly_rate(model, train)
    done = time.perf_counter()
    return {
        "fit_s": fitted - started,
        "rescore_s": done - fitted,
        "from_fit": model.training_anomaly_rate(train),
        "rescored": rescored,
        "served": float(model.detect(served, history=train).is_anomaly.any(axis=1).mean()),
    }


def run(quick: bool = False) -> str:
    points = QUICK_POINTS if quick else POINTS
    frames = {f"synthetic {n}": series_frame(n, 2 * points) for n in range(QUICK_SYNTHETIC if quick else SYNTHETIC)}
    for key in NAB_SERIES[: 1 if quick else None]:
        frame = nab_frame(key)
        if frame is not None and len(frame) >= 2 * points:
            frames[key] = frame
    results = {name: measure(frame, points) for name, frame in frames.items()}
    synthetic = [r for name, r in results.items() if name.startswith("synthetic")]
    share = statistics.median(r["rescore_s"] / (r["fit_s"] + r["rescore_s"]) for r in synthetic)
    rows = [
        [name.split("/")[-1], f"{r['from_fit']:.2%}", f"{r['rescored']:.2%}", f"{r['served']:.2%}",
         f"{r['rescore_s'] / (r['fit_s'] + r['rescore_s']):.2f}"]
        for name, r in results.items()
        if not name.startswith("synthetic")
    ]
    rows.append([
        f"{len(synthetic)} synthetic series (median)",
        f"{statistics.median(r['from_fit'] for r in synthetic):.2%}",
        f"{statistics.median(r['rescored'] for r in synthetic):.2%}",
        f"{statistics.median(r['served'] for r in synthetic):.2%}",
        f"{share:.2f}",
    ])
    return "\n".join([
        "## `context`'s training anomaly rate",
        "",
        f"`context` fitted on {points:,} rows and serving the next {points:,} (`python -m benchmarks.training_rate`): "
        "the training anomaly rate taken from the fit (each calibration row scored before the memory learned it), "
        "the rate of the training rows scored again (what every other detector reports), the rate then flagged "
        "on the served rows, and the rescoring's share of the time of a fit plus rescoring, measured per series "
        "in one process.",
        "",
        table(["Series", "Rate from the fit", "Rate rescored", "Rate served", "Rescoring's share of the time"], rows),
        "",
        machine_line("1 run").split(" Figures are")[0],
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training_rate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two short series and one NAB series; print only")
    args = parser.parse_args(argv)
    section = run(args.quick)
    print(section)
    if not args.quick:
        print(f"wrote section {SECTION!r} of {write_section(SECTION, section)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
