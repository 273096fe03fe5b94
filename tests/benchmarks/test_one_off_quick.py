"""The one-off benchmark's quick mode: the score DAG scores every point of a chunked file."""

from __future__ import annotations

import pytest

from benchmarks import one_off
from benchmarks.report import table_rows

pytestmark = pytest.mark.slow


def _mib(cell: str) -> float:
    number, unit = cell.split()
    assert unit == "MiB"
    return float(number.replace(",", ""))


def test_quick_run_scores_every_point_in_bounded_memory():
    # run() itself raises unless every point of the input came back scored.
    rows = table_rows(one_off.run(quick=True))
    assert [row[0] for row in rows] == ["20,000", "60,000"]
    assert all(row[1] == "10,000" and float(row[3].replace(",", "")) > 0 for row in rows)
    # Three times the input must not need anywhere near three times the memory.
    assert _mib(rows[1][4]) < 1.5 * _mib(rows[0][4])
