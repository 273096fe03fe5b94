from __future__ import annotations

from pipelines.reporting import format_table


def test_a_cell_of_several_lines_keeps_its_row_on_one_line() -> None:
    """A train result's reason of several lines (an error message) broke the table in the task log."""
    rows = [
        {"series": "region=eu", "reason": "champion kept:\nits F1 is higher", "rows": 3},
        {"series": "region=us", "reason": "ok", "rows": 12},
    ]
    lines = format_table(rows).splitlines()
    assert lines == [
        "series     reason                           rows",
        "---------  -------------------------------  ----",
        "region=eu  champion kept: its F1 is higher  3   ",
        "region=us  ok                               12  ",
    ]
