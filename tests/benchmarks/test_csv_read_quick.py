"""The csv read benchmark's quick mode: the source reads every row of each width, and it reports the ratios."""

from __future__ import annotations

from benchmarks import csv_read
from benchmarks.report import table_rows


def test_quick_run_reads_every_width_and_reports_ratios_against_the_narrow_read():
    # run() asserts the source read returns every row of each file.
    rows = table_rows(csv_read.run(quick=True))
    assert [int(row[0]) for row in rows] == list(csv_read.WIDTHS)
    assert all(row[1] == f"{csv_read.QUICK_ROWS:,}" for row in rows)
    assert all(float(row[-1].removesuffix("×")) > 0 and float(row[-2].removesuffix("×")) > 0 for row in rows)
