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


def test_a_key_missing_from_the_first_row_still_gets_its_column() -> None:
    """The train summary appends its failed series after the results: their "failed" flag was
    dropped with every key the first row lacks, so a failed series showed as a row of blanks."""
    rows = [
        {"series": "region=eu", "version": "v2", "promoted": True, "resampling": {"rows": 3}},
        {"series": "region=us", "failed": True},
    ]
    assert format_table(rows).splitlines() == [
        "series     version  promoted  failed",
        "---------  -------  --------  ------",
        "region=eu  v2       True            ",
        "region=us                     True  ",
    ]
