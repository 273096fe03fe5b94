from __future__ import annotations

import json

from pipelines.validation.report import CheckResult, ValidationReport


def test_summary_lists_failed_checks_only() -> None:
    report = ValidationReport(
        job="web",
        success=False,
        checks=[
            CheckResult("expect_column_to_exist", "timestamp", True),
            CheckResult("expect_column_values_to_not_be_in_set", "latency_ms", False, 2, ["inf", "-inf"], [1, 4]),
            CheckResult("expect_table_row_count_to_be_between", None, False, detail="observed 2"),
        ],
        rows=2,
        window=("2024-02-01T00:00:00+00:00", None),
        gx_result={"success": False},
    )

    assert report.summary().splitlines() == [
        "job web: validation of 2 rows in window 2024-02-01T00:00:00+00:00 .. unbounded failed 2 of 3 checks",
        "  - expect_column_values_to_not_be_in_set on latency_ms, 2 unexpected, "
        'sample values ["inf", "-inf"], at rows [1, 4]',
        "  - expect_table_row_count_to_be_between, observed 2",
    ]
    as_json = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert as_json["window"] == ["2024-02-01T00:00:00+00:00", None]
    assert as_json["checks"][1]["sample_rows"] == [1, 4]
    assert as_json["gx_result"] == {"success": False}


def test_sample_values_are_shown_as_they_are_not_as_escapes() -> None:
    check = CheckResult("expect_column_values_to_be_in_type_list", "requests", False, 2, ["n/д", "—"], [1, 4])

    assert check.describe() == (
        'expect_column_values_to_be_in_type_list on requests, 2 unexpected, sample values ["n/д", "—"], at rows [1, 4]'
    )


def test_rows_say_what_they_count() -> None:
    check = CheckResult(
        "expect_column_values_to_not_be_null", "requests", False, 1, [None], [73],
        sample_where=["ts=2024-01-01T00:00:00Z"], rows_of="the input file, counting its first data row as 1",
    )

    assert check.describe() == (
        "expect_column_values_to_not_be_null on requests, 1 unexpected, sample values [null], "
        "at rows [73] of the input file, counting its first data row as 1 (ts=2024-01-01T00:00:00Z)"
    )


def test_a_batch_that_is_part_of_a_file_is_named_in_the_header() -> None:
    # A chunk of a one-off file: its window spans the whole file, so "32 rows in window ..." said
    # neither which file nor which of its rows.
    report = ValidationReport(
        job="web", success=False, checks=[CheckResult("expect_table_row_count_to_be_between", None, False, detail="observed 0")],
        rows=32, window=("2024-02-01T00:00:00+00:00", None), batch="rows 33 to 64 of input file 'in.csv' (chunk 2 of 4)",
    )

    assert report.summary().splitlines()[0] == (
        "job web: validation of rows 33 to 64 of input file 'in.csv' (chunk 2 of 4) failed 1 of 1 checks"
    )
    assert report.to_dict()["batch"] == "rows 33 to 64 of input file 'in.csv' (chunk 2 of 4)"
