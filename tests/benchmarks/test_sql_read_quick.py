"""The SQL read benchmark's quick mode: both reads give the same rows and dtypes, and it reports both."""

from __future__ import annotations

import pytest

from benchmarks import sql_read
from benchmarks.report import table_rows

pytestmark = pytest.mark.slow


def test_quick_run_measures_both_reads_of_the_same_rows():
    # run() raises unless both reads return every row of the table with the same dtypes.
    rows = table_rows(sql_read.run(quick=True))
    assert [row[0] for row in rows] == list(sql_read.VARIANTS)
    assert all(row[2].endswith("MiB") and float(row[4].removesuffix(" s")) > 0 for row in rows)
