"""What a csv file source's read costs against pandas' own read of the job's columns, by width.

Since 2026-12-07 a csv source parses every column of the file (``pipelines/sources/file.py``,
``_csv_options``): with ``usecols`` pandas drops the fields of a row beyond the header's without
a word, so a value holding an unquoted delimiter put that row's values into the wrong columns
unseen. This measures the price of that, side by side, on files of 5, 20 and 100 columns of
which the job reads 3 (time, one dimension, one feature):

* ``pandas, job's columns`` — ``pd.read_csv(usecols=...)``, the read before the change;
* ``pandas, every column`` — ``pd.read_csv`` of the whole file, then the job's columns;
* ``source read`` — ``FileReader.read`` of the job, as extraction calls it (timestamps parsed,
  checks included).

Run: ``python -m benchmarks.csv_read [--quick]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report import fmt_number, fmt_ratio, interleaved, machine_line, median, publish, table

ROWS, QUICK_ROWS = 200_000, 20_000
WIDTHS = (5, 20, 100)
REPEATS, QUICK_REPEATS = 3, 1


def _write(folder: Path, width: int, rows: int) -> Path:
    rng = np.random.default_rng(width)
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=rows, freq="min", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
            "host": rng.choice(["a", "b", "c", "d"], rows),
            "value": rng.random(rows).round(4),
        }
    )
    for column in range(width - 3):
        frame[f"other_{column}"] = rng.random(rows).round(4)
    path = folder / f"metrics_{width}.csv"
    frame.to_csv(path, index=False)
    return path


def _job(path: Path):
    from pipelines.config import parse_job

    return parse_job(
        {
            "name": "csv_read",
            "source": {"kind": "file", "path": str(path)},
            "timestamp": "ts",
            "frequency": "1min",
            "dimensions": ["host"],
            "features": ["value"],
            "model": {"kind": "seasonal_mad"},
        },
        source="csv_read.yaml",
    )


def run(quick: bool) -> str:
    from pipelines.sources.file import FileReader

    rows, repeats = (QUICK_ROWS, QUICK_REPEATS) if quick else (ROWS, REPEATS)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in WIDTHS:
            path = _write(Path(tmp), width, rows)
            reader = FileReader(_job(path))
            wanted = ["ts", "host", "value"]
            variants = {
                "pandas, job's columns": lambda: pd.read_csv(path, usecols=wanted, dtype={"host": str}),
                "pandas, every column": lambda: pd.read_csv(path, dtype={"host": str})[wanted],
                "source read": lambda: reader.read(None, None),
            }
            assert len(reader.read(None, None)) == rows
            seconds = {name: median(times) for name, times in interleaved(variants, repeats).items()}
            base = seconds["pandas, job's columns"]
            out.append([
                width, f"{rows:,}", *(fmt_number(seconds[name]) for name in variants),
                fmt_ratio(seconds["pandas, every column"] / base), fmt_ratio(seconds["source read"] / base),
            ])
    return "\n\n".join([
        f"csv source reads of {rows:,} rows, 3 columns used, by the file's width (seconds; ratios against "
        "pandas' read of the job's columns, the read before csv rows longer than the header were refused).",
        table(
            ["columns", "rows", "pandas, job's columns", "pandas, every column", "source read", "every column ×", "source read ×"],
            out,
        ),
        "The source parses every column: with `usecols` pandas drops a row's fields beyond the header's "
        "without a word, and its C reader reads a trailing empty field as a missing one, so no narrowed read "
        "sees such rows. The cost grows with the columns the job does not use; the read is a small part of "
        "a run (validation and fitting take longer), and a file written with only the job's columns pays nothing.",
        machine_line(f"{repeats} repeats"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small files, one repeat: checks the benchmark runs")
    args = parser.parse_args()
    publish("csv_read", run(quick=args.quick), quick=args.quick)


if __name__ == "__main__":
    main()
