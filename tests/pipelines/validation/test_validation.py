"""Real Great Expectations runs on small raw batches."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import storage
from pipelines.config import REPO_ROOT, load_job_file, resolve_path
from pipelines.errors import ConfigError, DataValidationError
from pipelines.validation import (
    CheckResult,
    RowNumbers,
    ValidationReport,
    check_and_raise,
    quarantine,
    save_report,
    validate_batch,
)

WINDOW = (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 1, 3, tzinfo=UTC))


def _failed(report: ValidationReport) -> list[CheckResult]:
    return [check for check in report.checks if not check.success]


def _only_failure(report: ValidationReport) -> CheckResult:
    failed = _failed(report)
    assert len(failed) == 1, report.summary()
    assert not report.success
    return failed[0]


def test_clean_batch_passes(make_job, clean_frame: pd.DataFrame) -> None:
    # The same timestamp in two series (eu and us) is no duplicate.
    report = validate_batch(clean_frame, make_job(validation={"min_rows": 6}), window=WINDOW)

    assert report.success, report.summary()
    assert report.rows == 6
    assert report.window == ("2024-02-01T00:00:00+00:00", "2024-02-01T03:00:00+00:00")
    assert report.summary() == (
        "job web: validation of 6 rows in window 2024-02-01T00:00:00+00:00 .. 2024-02-01T03:00:00+00:00 "
        f"failed 0 of {len(report.checks)} checks"
    )
    expectations = {(check.expectation, check.column) for check in report.checks}
    assert {
        ("expect_compound_columns_to_be_unique", "timestamp, region"),
        ("expect_column_values_to_be_dateutil_parseable", "timestamp"),
        ("expect_column_values_to_not_be_in_set", "latency_ms"),
        ("expect_table_row_count_to_be_between", None),
    } <= expectations
    # All but the parseable, duplicate, readability and range checks, which look at timestamps outside
    # GX (suite.unparseable_instants, suite.duplicate_instants, suite.unread_instants, suite.far_instants).
    assert report.gx_result["statistics"]["evaluated_expectations"] == len(report.checks) - 4


@pytest.mark.parametrize("tz", [None, "UTC"])
def test_datetime_timestamps_pass(make_job, clean_frame: pd.DataFrame, tz: str | None) -> None:
    frame = clean_frame.assign(timestamp=pd.to_datetime(clean_frame["timestamp"]).dt.tz_convert(tz))
    assert validate_batch(frame, make_job()).success


def test_missing_column_fails_alone(make_job, clean_frame: pd.DataFrame) -> None:
    report = validate_batch(clean_frame.drop(columns=["latency_ms", "region"]), make_job())

    failed = _failed(report)
    assert [(c.expectation, c.column) for c in failed] == [
        ("expect_column_to_exist", "region"),
        ("expect_column_to_exist", "latency_ms"),
    ]
    # Checks needing the missing columns were skipped, so GX raised nothing.
    assert not [c for c in report.checks if c.detail and c.detail.startswith("error")]
    assert "failed 2 of" in report.summary()
    assert "expect_column_to_exist on latency_ms, the source gave no such column: check its spelling" in report.summary()


def test_text_feature_names_only_the_values_that_are_not_numbers(make_job, clean_frame: pd.DataFrame) -> None:
    # CSV gives numbers as text: those are numbers; "n/a" is not, and is the one reported.
    frame = clean_frame.assign(requests=["732", "1869", "n/a", None, "690", "1801"])
    check = _only_failure(validate_batch(frame, make_job(validation={"max_null_fraction": 0.2})))

    assert (check.expectation, check.column) == ("expect_column_values_to_be_in_type_list", "requests")
    assert check.unexpected_count == 1
    assert check.sample_values == ["n/a"]
    assert check.sample_rows == [2]


def test_mixed_object_feature_reports_only_the_non_numbers(make_job, clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.assign(latency_ms=pd.Series([1.5, "slow", 2, 3.5, "?", 4], dtype=object))
    check = _only_failure(validate_batch(frame, make_job()))

    assert (check.column, check.unexpected_count, check.sample_values, check.sample_rows) == (
        "latency_ms", 2, ["slow", "?"], [1, 4]
    )
    # Where those rows are in the source: a batch position alone is hard to find in a file.
    assert check.sample_where == ["timestamp=2024-02-01T00:00:00Z, region=us", "timestamp=2024-02-01T02:00:00Z, region=eu"]
    assert "at rows [1, 4] (timestamp=2024-02-01T00:00:00Z, region=us; timestamp=2024-02-01T02:00:00Z, region=eu)" in (
        check.describe()
    )


_DECIMAL_COMMAS = "these look like numbers written with a decimal comma (1,5 for 1.5): "
_IN_THE_SOURCE = "write them as plain numbers (1234.5) in the source, or convert them to numbers there"


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ({"kind": "file", "path": "web.csv", "delimiter": ";"}, 'set source.decimal: "," in the job file'),
        ({"kind": "file", "path": "exports/"}, 'set source.decimal: "," in the job file'),  # a folder may hold csv
        ({"kind": "file", "path": "web.jsonl"}, _IN_THE_SOURCE),
        ({"kind": "sql", "connection": {"url": "sqlite://"}, "query": "SELECT * FROM t WHERE ts >= :start AND ts < :end"},
         _IN_THE_SOURCE),
    ],
    ids=["csv", "folder", "jsonl", "sql"],
)
def test_numbers_with_decimal_commas_say_how_to_read_them(make_job, clean_frame: pd.DataFrame, source, hint) -> None:
    # A European export read with "." as the decimal point: every value of the column was text,
    # reported with its samples and nothing about the setting that reads them as numbers.
    frame = clean_frame.assign(latency_ms=["109,9", "120,4", "-1,25", ",5", " 108,7", "121"])
    check = _only_failure(validate_batch(frame, make_job(source=source)))

    assert (check.column, check.unexpected_count) == ("latency_ms", 5)
    assert check.detail == _DECIMAL_COMMAS + hint
    assert check.describe().endswith(f"at rows [0, 1, 2, 3, 4] (timestamp=2024-02-01T00:00:00Z, region=eu; "
                                     "timestamp=2024-02-01T00:00:00Z, region=us; timestamp=2024-02-01T01:00:00Z, region=eu; "
                                     "timestamp=2024-02-01T01:00:00Z, region=us; timestamp=2024-02-01T02:00:00Z, region=eu), "
                                     f"{_DECIMAL_COMMAS}{hint}")


def test_a_caller_gives_its_own_number_hint(make_job, clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.assign(latency_ms=["109,9", "120,4", "111,2", "118", "108,7", "121,3"])
    hint = lambda settings: "give " + " ".join(f"--{k} '{v}'" for k, v in settings.items())  # noqa: E731
    check = _only_failure(validate_batch(frame, make_job(), number_hint=hint))
    assert check.detail == _DECIMAL_COMMAS + "give --decimal ','"


@pytest.mark.parametrize(
    ("values", "source", "says"),
    [
        # Only thousands commas read 12,345,678 or 1,234.5: a decimal comma would misread them.
        (["1,234.5", "12,345,678", "-2,000", "118", "1,000.25", "121"], {},
         'these look like numbers with a comma between thousands (1,234.5 for 1234.5): set source.thousands: "," in the job file'),
        # 1,234 is 1.234 to a decimal comma and 1234 to a thousands one: told only the first, the
        # reader took every value for a thousandth of itself, without an error.
        (["1,234", "2,500", "-3,125", "118", "1,000", "121"], {},
         'these look like numbers written with a decimal comma (1,5 for 1.5) or with a comma between thousands (1,234 for '
         '1234), which the samples cannot tell apart: for decimal commas set source.decimal: "," in the job file; for '
         'thousands set source.thousands: "," in the job file'),
        (["1.234,5", "12.345.678", "-2,25", "118", "1.000", "121"], {"delimiter": ";"},
         "these look like numbers with a point between thousands and a decimal comma (1.234,5 for 1234.5): "
         'set source.thousands: "." and source.decimal: "," in the job file'),
        # The decimal comma is set already: only the thousands point is missing.
        (["1.234,5", "12.345.678"], {"delimiter": ";", "decimal": ","},
         "these look like numbers with a point between thousands and a decimal comma (1.234,5 for 1234.5): "
         'set source.thousands: "." in the job file'),
    ],
    ids=["comma-thousands", "ambiguous", "point-thousands", "point-thousands-decimal-set"],
)
def test_numbers_grouped_in_thousands_say_which_options_read_them(make_job, clean_frame, values, source, says) -> None:
    values = (values + ["118"] * 6)[:6]
    job = make_job(source={"kind": "file", "path": "web.csv", **source})
    check = _only_failure(validate_batch(clean_frame.assign(latency_ms=values), job))
    assert check.detail == says


@pytest.mark.parametrize(
    "values",
    [
        ["109,9", "n/a", "111,2", "118", "108,7", "121,3"],  # other text too: more than a locale's numbers
        ["1,2,3", "120,4", "111,2", "118", "108,7", "121,3"],
        ["109.9", "120,4.5", "111", "118", "108", "121"],
    ],
)
def test_text_that_is_not_all_decimal_commas_gets_no_decimal_hint(make_job, clean_frame: pd.DataFrame, values) -> None:
    check = _only_failure(validate_batch(clean_frame.assign(latency_ms=values), make_job()))
    assert check.detail is None


def test_true_and_false_among_numbers_are_not_numbers(make_job, clean_frame: pd.DataFrame) -> None:
    # A JSON source can mix them with numbers; pandas would read them as 1 and 0.
    frame = clean_frame.assign(latency_ms=pd.Series([1.5, True, 2, 3.5, False, 4], dtype=object))
    check = _only_failure(validate_batch(frame, make_job()))

    assert (check.column, check.unexpected_count, check.sample_values, check.sample_rows) == (
        "latency_ms", 2, ["True", "False"], [1, 4]
    )


def test_rows_read_with_datetime_timestamps_are_located_in_iso_8601(make_job, clean_frame: pd.DataFrame) -> None:
    # SQL and Parquet sources give datetimes, not text.
    frame = clean_frame.assign(timestamp=pd.to_datetime(clean_frame["timestamp"]), latency_ms=[1.0, 2.0, 3.0, float("inf"), 5.0, 6.0])
    check = _only_failure(validate_batch(frame, make_job()))

    assert (check.column, check.sample_rows) == ("latency_ms", [3])
    assert check.sample_where == ["timestamp=2024-02-01T01:00:00+00:00, region=us"]


def test_duplicate_timestamp_within_a_series_fails(make_job, clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.copy()
    frame.loc[4, "timestamp"] = frame.loc[0, "timestamp"]  # eu twice at 00:00
    check = _only_failure(validate_batch(frame, make_job()))

    assert (check.expectation, check.column) == ("expect_compound_columns_to_be_unique", "timestamp, region")
    assert check.unexpected_count == 2
    assert check.sample_rows == [0, 4]
    assert check.sample_values == [{"timestamp": "2024-02-01T00:00:00Z", "region": "eu"}] * 2


def test_rows_are_numbered_as_the_caller_says(make_job, clean_frame: pd.DataFrame) -> None:
    # A chunk of a file starting at its row 41: the rows the user can find are rows of the file,
    # in the sample, the message and the duplicate's detail alike; they are located as before.
    frame = clean_frame.assign(latency_ms=pd.Series([1.5, "slow", 2, 3.5, 4, 5], dtype=object))
    frame.loc[4, "timestamp"] = frame.loc[0, "timestamp"]  # eu twice at 00:00
    numbers = RowNumbers(first=41, of="the input file, counting its first data row as 1")
    report = validate_batch(frame, make_job(), rows=numbers)
    failed = {check.expectation: check for check in _failed(report)}
    text, duplicate = failed["expect_column_values_to_be_in_type_list"], failed["expect_compound_columns_to_be_unique"]

    assert (text.sample_rows, duplicate.sample_rows) == ([42], [41, 45])
    assert text.sample_where == ["timestamp=2024-02-01T00:00:00Z, region=us"]
    assert 'at rows [42] of the input file, counting its first data row as 1 (timestamp=2024-02-01T00:00:00Z, region=us)' in (
        report.summary()
    )
    assert "(UTC: 2024-02-01 00:00:00+00:00 at rows [41, 45])" in duplicate.detail
    saved = [check for check in report.to_dict()["checks"] if check["sample_rows"]]
    assert [(check["sample_rows"], check["rows_of"]) for check in saved] == [([42], numbers.of), ([41, 45], numbers.of)]


@pytest.mark.parametrize(
    "same_instant",
    ["2024-02-01 00:00:00+00:00", "2024-02-01T02:00:00+02:00", "2024-01-31T19:00:00-05:00"],
    ids=["other-spelling", "other-offset", "negative-offset"],
)
def test_one_instant_written_two_ways_is_a_duplicate_named_as_written(
    make_job, clean_frame: pd.DataFrame, same_instant: str
) -> None:
    # Resampling would merge the two rows into one bucket: validation must refuse them first.
    frame = clean_frame.copy()
    frame.loc[4, "timestamp"] = same_instant  # eu at 2024-02-01T00:00:00Z, a second time
    report = validate_batch(frame, make_job())
    check = _only_failure(report)

    assert (check.expectation, check.column) == ("expect_compound_columns_to_be_unique", "timestamp, region")
    assert (check.unexpected_count, check.sample_rows) == (2, [0, 4])
    assert check.sample_values == [
        {"timestamp": "2024-02-01T00:00:00Z", "region": "eu"},
        {"timestamp": same_instant, "region": "eu"},
    ]
    assert check.sample_where == ["timestamp=2024-02-01T00:00:00Z, region=eu", f"timestamp={same_instant}, region=eu"]
    assert check.detail == (
        "rows of column 'timestamp' naming the same instant in one series are duplicates however it is written "
        "(UTC: 2024-02-01 00:00:00+00:00 at rows [0, 4]); keep one row per timestamp and series in the source, then re-run"
    )
    summary = report.summary()
    assert summary.startswith("job web: validation of 6 rows")
    assert f'{{"timestamp": "{same_instant}", "region": "eu"}}' in summary


def test_one_instant_written_two_ways_without_dimensions_is_a_duplicate(make_job) -> None:
    frame = pd.DataFrame(
        {"timestamp": ["2024-02-01T00:00:00Z", "2024-02-01T01:00:00Z", "2024-02-01 00:00:00+00:00"], "requests": [1, 2, 3]}
    )
    check = _only_failure(validate_batch(frame, make_job(dimensions=[], features=["requests"])))

    assert (check.expectation, check.column) == ("expect_column_values_to_be_unique", "timestamp")
    assert (check.sample_rows, check.sample_values) == ([0, 2], ["2024-02-01T00:00:00Z", "2024-02-01 00:00:00+00:00"])
    assert "(UTC: 2024-02-01 00:00:00+00:00 at rows [0, 2]); keep one row per timestamp in the source" in check.detail


def test_the_duplicate_check_leaves_the_batch_a_jobs_suite_sees_as_read(
    make_job, clean_frame: pd.DataFrame, tmp_path: Path
) -> None:
    # Instants compared through a column added to GX's batch would fail these.
    columns = ["timestamp", "region", "requests", "latency_ms"]
    expectations = [
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": columns, "exact_match": True}},
        {"type": "expect_table_column_count_to_equal", "kwargs": {"value": 4}},
    ]
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "web", "expectations": expectations}))
    frame = clean_frame.copy()
    frame.loc[4, "timestamp"] = "2024-02-01 00:00:00+00:00"
    check = _only_failure(validate_batch(frame, make_job(), suite_path=str(suite)))
    assert check.expectation == "expect_compound_columns_to_be_unique"


def test_one_instant_in_two_series_is_no_duplicate(make_job, clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.copy()
    frame.loc[1, "timestamp"] = "2024-02-01T02:00:00+02:00"  # us at eu's 00:00Z, as us always was
    assert validate_batch(frame, make_job()).success


def test_duplicate_timestamp_without_dimensions_fails(make_job, clean_frame: pd.DataFrame) -> None:
    check = _only_failure(validate_batch(clean_frame.drop(columns="region"), make_job(dimensions=[])))

    assert (check.expectation, check.column) == ("expect_column_values_to_be_unique", "timestamp")
    assert check.unexpected_count == 6


def test_unparseable_and_missing_timestamps_fail(make_job, clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.assign(
        timestamp=["2024-02-01T00:00:00Z", "yesterday-ish", None, "2024-02-01 01:00", "2024-13-45", "2024-02-01T02:00Z"]
    )
    report = validate_batch(frame, make_job())

    failed = {check.expectation: check for check in _failed(report)}
    assert set(failed) == {"expect_column_values_to_not_be_null", "expect_column_values_to_be_dateutil_parseable"}
    parse = failed["expect_column_values_to_be_dateutil_parseable"]
    assert (parse.column, parse.unexpected_count, parse.sample_values, parse.sample_rows) == (
        "timestamp", 2, ["yesterday-ish", "2024-13-45"], [1, 4]
    )
    null = failed["expect_column_values_to_not_be_null"]
    assert (null.column, null.unexpected_count, null.sample_rows) == ("timestamp", 1, [2])
    assert null.sample_where == ["timestamp=null, region=eu"]


def test_timestamps_dateutil_takes_but_the_pipeline_cannot_read_fail(make_job, clean_frame: pd.DataFrame) -> None:
    # GX's parseable check (dateutil) passed a zone abbreviation and a bare number; the pipeline read no
    # instant from them, and resampling dropped those rows without a word.
    frame = clean_frame.assign(
        timestamp=["2024-02-01T00:00:00", "2024-02-01 00:00 EST", "2024-02-01T01:00:00", "12", "yesterday-ish",
                   "2024-02-01T02:00:00"]
    )
    failed = {check.expectation: check for check in _failed(validate_batch(frame, make_job()))}

    assert set(failed) == {"expect_column_values_to_be_readable_timestamps", "expect_column_values_to_be_dateutil_parseable"}
    unread = failed["expect_column_values_to_be_readable_timestamps"]
    assert (unread.column, unread.unexpected_count, unread.sample_values, unread.sample_rows) == (
        "timestamp", 2, ["2024-02-01 00:00 EST", "12"], [1, 3]
    )
    assert unread.sample_where[0] == "timestamp=2024-02-01 00:00 EST, region=us"
    assert "numeric offset" in unread.detail
    # Only GX's check reports a value dateutil cannot parse either.
    assert failed["expect_column_values_to_be_dateutil_parseable"].sample_rows == [4]


def test_naive_among_aware_timestamps_are_not_called_unreadable(make_job, clean_frame: pd.DataFrame) -> None:
    # Extraction refuses such a batch with its own message; validation must not call every row unreadable.
    frame = clean_frame.assign(timestamp=[f"2024-02-01T0{hour}:00:00{zone}" for hour, zone in zip((0, 0, 1, 1, 2, 2), ["Z", ""] * 3)])
    assert validate_batch(frame, make_job()).success


def test_placeholder_dates_beyond_pandas_range_fail_naming_their_rows(make_job, clean_frame: pd.DataFrame) -> None:
    # Valid dates, so GX's parseable check passes them, but resampling a batch holding them crashed with
    # a bare OutOfBoundsDatetime (a file scored whole has no window to drop them).
    frame = clean_frame.assign(
        timestamp=["2024-02-01T00:00:00Z", "0001-01-01T00:00:00Z", "2024-02-01T01:00:00Z", "9999-12-31T23:59:59Z",
                   "1677-09-22T00:00:00Z", "2024-02-01T02:00:00Z"]
    )
    check = _only_failure(validate_batch(frame, make_job()))

    assert (check.expectation, check.column, check.unexpected_count, check.sample_rows) == (
        "expect_column_values_to_be_between", "timestamp", 3, [1, 3, 4]
    )
    assert check.sample_values == ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1677-09-22T00:00:00Z"]
    assert check.sample_where[0] == "timestamp=0001-01-01T00:00:00Z, region=us"
    assert "years 1678 to 2261" in check.detail and "re-run" in check.detail


def test_epoch_numbers_are_not_timestamps(make_job, clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.assign(timestamp=[1706745600 + 3600 * (i // 2) for i in range(6)])
    check = _only_failure(validate_batch(frame, make_job()))

    assert (check.expectation, check.unexpected_count) == ("expect_column_values_to_be_dateutil_parseable", 6)
    assert check.sample_values[0] == "1706745600"


@pytest.mark.parametrize(("nulls", "fails"), [(1, False), (2, True)])
def test_null_fraction_limit(make_job, clean_frame: pd.DataFrame, nulls: int, fails: bool) -> None:
    frame = clean_frame.copy()
    frame.loc[[3, 5][:nulls], "latency_ms"] = np.nan
    report = validate_batch(frame, make_job(validation={"max_null_fraction": 0.2}))

    if not fails:
        assert report.success, report.summary()
        return
    check = _only_failure(report)
    assert (check.expectation, check.column, check.unexpected_count, check.sample_rows) == (
        "expect_column_values_to_not_be_null", "latency_ms", 2, [3, 5]
    )
    assert check.sample_values == [None, None]


@pytest.mark.parametrize(
    ("limit", "missing", "said"),
    [
        (0.0, [0, 1, 2, 3, 4, 5], "no row has a value of latency_ms: the job allows none (validation.max_null_fraction); "),
        (0.2, [3, 5], "2 of the 6 rows (33.3%) have no value of latency_ms: the job allows at most 20.0% (validation.max_null_fraction); "),
    ],
)
def test_a_feature_missing_too_often_says_how_often_and_the_setting_that_allows_it(
    make_job, clean_frame: pd.DataFrame, limit: float, missing: list[int], said: str
) -> None:
    # A sensor that stopped reporting failed every run with "6 unexpected, sample values [null, ...]" alone.
    frame = clean_frame.copy()
    frame.loc[missing, "latency_ms"] = np.nan
    check = _only_failure(validate_batch(frame, make_job(validation={"max_null_fraction": limit})))

    assert (check.expectation, check.column) == ("expect_column_values_to_not_be_null", "latency_ms")
    assert check.detail == (
        said + "fill the missing values in the source, or, if latency_ms may go missing, raise validation.max_null_fraction in "
        "the job file: the detectors take missing values (a feature with no value in a training window is left out by "
        "mset, and refused by name by the others)"
    )
    # The setting it names lets the batch through.
    assert validate_batch(frame, make_job(validation={"max_null_fraction": 1.0})).success


def test_a_suite_file_s_own_check_of_missing_values_gets_no_advice_on_the_job_setting(
    make_job, clean_frame: pd.DataFrame, tmp_path: Path
) -> None:
    # Its share is the suite's, not validation.max_null_fraction: raising that would not pass it.
    suite = tmp_path / "suite.json"
    mostly = {"column": "latency_ms", "mostly": 0.9}
    suite.write_text(json.dumps({"name": "web", "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": mostly}]}))
    frame = clean_frame.assign(latency_ms=clean_frame["latency_ms"].where(clean_frame.index != 3))
    report = validate_batch(frame, make_job(validation={"max_null_fraction": 0.5}), suite_path=str(suite))

    check = _only_failure(report)
    assert (check.expectation, check.column, check.unexpected_count) == ("expect_column_values_to_not_be_null", "latency_ms", 1)
    assert check.detail is None


def test_infinite_values_fail(make_job, clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.assign(latency_ms=[1.0, np.inf, np.nan, 2.0, -np.inf, 3.0])
    check = _only_failure(validate_batch(frame, make_job(validation={"max_null_fraction": 0.5})))

    assert (check.expectation, check.column) == ("expect_column_values_to_not_be_in_set", "latency_ms")
    assert check.unexpected_count == 2
    assert (check.sample_values, check.sample_rows) == (["inf", "-inf"], [1, 4])


def test_a_row_without_its_dimension_value_fails(make_job, clean_frame: pd.DataFrame) -> None:
    # It belongs to no series: grouping by the dimensions would have dropped it without a word.
    frame = clean_frame.assign(region=clean_frame["region"].where(clean_frame.index != 2))
    check = _only_failure(validate_batch(frame, make_job()))

    assert (check.expectation, check.column) == ("expect_column_values_to_not_be_null", "region")
    assert (check.unexpected_count, check.sample_rows) == (1, [2])
    assert check.detail is None  # a dimension's missing value is no feature's: no share allows it


def test_nullable_integer_features_pass(make_job, clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.assign(requests=pd.array([1, 2, None, 4, 5, 6], dtype="Int64"))
    assert validate_batch(frame, make_job(validation={"max_null_fraction": 0.2})).success


def test_too_few_rows_fail(make_job, clean_frame: pd.DataFrame) -> None:
    check = _only_failure(validate_batch(clean_frame, make_job(validation={"min_rows": 10})))

    assert (check.expectation, check.column) == ("expect_table_row_count_to_be_between", None)
    # "observed 6" alone did not say how many rows the job wants; "expected at least 10" not which setting wants them.
    assert check.detail == (
        "observed 6, expected at least 10; the job asks for at least 10 rows a window (validation.min_rows): check that "
        "the source holds the window's rows (a late load, a filter, the time zone of its timestamps), or lower "
        "validation.min_rows in the job file if windows this short are normal"
    )


def test_a_failed_measure_says_the_range_it_was_expected_in(make_job, clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    suite = tmp_path / "suite.json"
    mean = {"column": "latency_ms", "min_value": 0, "max_value": 100, "strict_max": True}
    count = {"min_value": 7, "strict_min": True}
    suite.write_text(
        json.dumps(
            {
                "name": "web",
                "expectations": [
                    {"type": "expect_column_mean_to_be_between", "kwargs": mean},
                    {"type": "expect_table_row_count_to_be_between", "kwargs": count},
                    {"type": "expect_column_max_to_be_between", "kwargs": {"column": "requests", "max_value": 5000}},
                ],
            }
        )
    )
    report = validate_batch(clean_frame, make_job(), suite_path=str(suite))

    details = {check.expectation: check.detail for check in _failed(report)}
    assert details == {
        "expect_column_mean_to_be_between": "observed 114.91666666666667, expected at least 0.0 and less than 100.0",
        "expect_table_row_count_to_be_between": "observed 6, expected more than 7",
    }
    passed = next(check for check in report.checks if check.expectation == "expect_column_max_to_be_between")
    assert passed.detail == "observed 1869"


def test_user_suite_is_applied_after_the_built_in_checks(make_job, clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    suite = tmp_path / "suite.json"
    suite.write_text(
        json.dumps(
            {
                "name": "web",
                "expectations": [
                    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "requests", "max_value": 1000}},
                    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "colour", "value_set": ["red"]}},
                ],
            }
        )
    )
    report = validate_batch(clean_frame, make_job(), suite_path=str(suite))

    failed = {check.column: check for check in _failed(report)}
    assert set(failed) == {"requests", "colour"}
    between = failed["requests"]
    assert (between.expectation, between.unexpected_count, between.sample_values, between.sample_rows) == (
        "expect_column_values_to_be_between", 3, [1869, 1790, 1801], [1, 3, 5]
    )
    # A user expectation on a column the batch lacks fails with GX's error; it does not raise.
    assert failed["colour"].detail.startswith("error: ") and "colour" in failed["colour"].detail
    assert "failed 2 of" in report.summary()


def test_suite_expectation_on_a_column_the_batch_lacks_says_to_fix_the_suite(
    make_job, clean_frame: pd.DataFrame, tmp_path: Path
) -> None:
    suite = tmp_path / "suite.json"
    expectations = [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "latency", "min_value": 0}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b", "kwargs": {"column_A": "requests", "column_B": "latncy"}},
    ]
    suite.write_text(json.dumps({"name": "web", "expectations": expectations}))
    report = validate_batch(clean_frame, make_job(), suite_path=str(suite))

    failed = {check.column: check for check in _failed(report)}
    assert set(failed) == {"latency", "requests, latncy"}
    fix = (
        "(a source reads only the job's timestamp, dimension and feature columns); correct the column's name in the "
        f"expectation suite {suite} (validation.suite in the job file), or remove the expectation"
    )
    assert failed["latency"].detail.endswith(
        f"the batch has no column latency: it has only timestamp, region, requests, latency_ms {fix}"
    )
    assert failed["requests, latncy"].detail.endswith(f"the batch has no column latncy: it has only {', '.join(clean_frame)} {fix}")
    assert "expect_column_values_to_be_between on latency, error: " in report.summary()


def test_suite_expectation_on_a_source_column_outside_the_job_says_only_the_job_s_columns_are_read(
    make_job, tmp_path: Path
) -> None:
    # The file has the column, so "correct the column's name" alone sent the user looking for a typo;
    # and the suite was not named, though a job's suite may be any file.
    from pipelines.sources import make_source

    data = tmp_path / "web.csv"
    data.write_text("timestamp,region,requests,latency_ms,status\n2024-02-01T00:00:00Z,eu,1,1.5,ok\n")
    suite = tmp_path / "web_suite.json"
    status = {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "status", "value_set": ["ok"]}}
    suite.write_text(json.dumps({"name": "web", "expectations": [status]}))
    job = make_job(source={"kind": "file", "path": str(data)}, validation={"suite": str(suite)})
    report = validate_batch(make_source(job).read(None, None), job, suite_path=str(suite))

    check = _only_failure(report)
    assert check.column == "status"
    assert check.detail.endswith(
        "the batch has no column status: it has only timestamp, region, requests, latency_ms (a source reads only the "
        f"job's timestamp, dimension and feature columns); correct the column's name in the expectation suite {suite} "
        "(validation.suite in the job file), or remove the expectation"
    )
    assert report.summary().startswith("job web: ")


def test_column_pair_check_names_both_columns(make_job, clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    suite = tmp_path / "suite.json"
    pair = {"type": "expect_column_pair_values_a_to_be_greater_than_b", "kwargs": {"column_A": "requests", "column_B": "latency_ms"}}
    suite.write_text(json.dumps({"name": "web", "expectations": [pair]}))
    frame = clean_frame.assign(latency_ms=[109.9, 120.4, 5000.0, 118.0, 108.7, 121.3])
    check = _only_failure(validate_batch(frame, make_job(), suite_path=str(suite)))

    assert (check.column, check.unexpected_count, check.sample_rows) == ("requests, latency_ms", 1, [2])
    assert check.describe().startswith("expect_column_pair_values_a_to_be_greater_than_b on requests, latency_ms, 1 unexpected")


def test_broken_user_suite_is_a_config_error(make_job, clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.json: cannot read the expectation suite"):
        validate_batch(clean_frame, make_job(), suite_path=str(tmp_path / "missing.json"))


def test_demo_suite_passes_on_demo_data() -> None:
    job = load_job_file(REPO_ROOT / "config" / "jobs" / "demo_web_metrics.yaml")
    frame = pd.read_csv(REPO_ROOT / "data" / "demo" / "web_metrics.csv")

    report = validate_batch(frame, job, suite_path=resolve_path(job.validation.suite))
    assert report.success, report.summary()
    frame.loc[2, "latency_ms"] = 0.0
    check = _only_failure(validate_batch(frame, job, suite_path=resolve_path(job.validation.suite)))
    assert (check.column, check.sample_rows) == ("latency_ms", [2])



def test_a_suite_range_check_on_a_column_with_text_says_it_could_not_run_and_why() -> None:
    # The demo suite bounds requests. A word among its numbers failed the type check (naming the
    # word) and the range check with GX's raw "Column values, min_value, and max_value must either
    # be None or of the same type", which reads like a fault of the suite.
    job = load_job_file(REPO_ROOT / "config" / "jobs" / "demo_web_metrics.yaml")
    frame = pd.read_csv(REPO_ROOT / "data" / "demo" / "web_metrics.csv", dtype=object).head(48)
    frame.loc[[5, 9], "requests"] = ["slow", "n/a"]
    frame.loc[7, "latency_ms"] = "slow"

    report = validate_batch(frame, job, suite_path=resolve_path(job.validation.suite), rows=RowNumbers(first=1))

    failed = {(check.expectation, check.column): check for check in _failed(report)}
    assert set(failed) == {
        (expectation, column)
        for expectation in ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_between")
        for column in ("requests", "latency_ms")
    }
    # Still failed: the column's range was not checked.
    assert failed["expect_column_values_to_be_between", "requests"].describe() == (
        'expect_column_values_to_be_between on requests, not checked: requests holds values that are not numbers ("slow", "n/a"; '
        "see expect_column_values_to_be_in_type_list on requests); it runs once requests holds only numbers"
    )
    assert failed["expect_column_values_to_be_between", "latency_ms"].detail.startswith(
        'not checked: latency_ms holds values that are not numbers ("slow"; '
    )
    assert failed["expect_column_values_to_be_in_type_list", "requests"].sample_rows == [6, 10]
    assert "same type" not in report.summary()


def test_a_suite_error_on_a_numeric_column_is_still_gx_s_own(make_job, clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    # Only an error on a column whose type check failed is explained away: a bound of the wrong
    # type in the suite itself is the suite's fault, and GX's error says so.
    suite = tmp_path / "suite.json"
    between = {"type": "expect_column_values_to_be_between", "kwargs": {"column": "requests", "min_value": "2024-01-01"}}
    suite.write_text(json.dumps({"name": "web", "expectations": [between]}))

    check = _only_failure(validate_batch(clean_frame, make_job(), suite_path=str(suite)))
    assert check.detail == "error: '>=' not supported between instances of 'int' and 'datetime.date'"


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict]:
    if request.param == "local":
        return str(tmp_path / "out"), {}
    bucket, options = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/out", options


@pytest.fixture
def failing(make_job, clean_frame: pd.DataFrame) -> tuple[pd.DataFrame, ValidationReport]:
    # A text column mixing numbers and words: Arrow cannot write it as it is.
    frame = clean_frame.assign(requests=pd.Series([1, "many", 3, 4, 5, 6], dtype=object))
    return frame, validate_batch(frame, make_job(), window=WINDOW)


def test_save_report_writes_json(root: tuple[str, dict], failing) -> None:
    url, options = root
    _, report = failing
    path = save_report(report, storage.join(url, "reports", "r.json"), options)

    assert json.loads(storage.read_bytes(path, options)) == report.to_dict()
    assert storage.find(url, options) == ["reports/r.json"]  # no temporary file left behind


def test_quarantine_keeps_raw_batch_and_report(root: tuple[str, dict], failing) -> None:
    url, options = root
    frame, report = failing
    directory = quarantine(frame, report, storage.join(url, "q"), options)

    assert storage.find(directory, options) == ["batch.parquet", "validation.json"]
    kept = pd.read_parquet(io.BytesIO(storage.read_bytes(storage.join(directory, "batch.parquet"), options)))
    assert list(kept.columns) == list(frame.columns)
    assert kept["requests"].tolist() == ["1", "many", "3", "4", "5", "6"]
    assert kept["latency_ms"].tolist() == frame["latency_ms"].tolist()
    assert json.loads(storage.read_bytes(storage.join(directory, "validation.json"), options))["success"] is False


def test_check_and_raise_stops_a_failing_batch(tmp_path: Path, make_job, failing) -> None:
    frame, _ = failing
    report_path, quarantine_dir = str(tmp_path / "report.json"), str(tmp_path / "quarantine")

    expected = (
        r"(?s)^job web: validation of 6 rows .*failed 1 of .*requests.*"
        r"The rejected batch is kept at .*quarantine; fix the source data"
    )
    with pytest.raises(DataValidationError, match=expected) as caught:
        check_and_raise(
            frame, make_job(), window=WINDOW, suite_path=None, report_path=report_path, quarantine_dir=quarantine_dir
        )

    assert caught.value.quarantine_path == quarantine_dir
    assert caught.value.report["checks"] == json.loads(Path(report_path).read_text())["checks"]
    assert sorted(p.name for p in Path(quarantine_dir).iterdir()) == ["batch.parquet", "validation.json"]


def test_check_and_raise_numbers_the_rows_of_a_window_from_1_and_says_what_they_count(tmp_path: Path, make_job, failing) -> None:
    # A scheduled window: its rows were numbered from 0, unsaid, while extraction's errors count
    # rows from 1; and they are rows of the batch read (and quarantined), not of the source table.
    frame, _ = failing  # "many" in the 2nd row
    with pytest.raises(DataValidationError) as caught:
        check_and_raise(
            frame, make_job(), window=WINDOW, report_path=str(tmp_path / "report.json"), quarantine_dir=str(tmp_path / "q")
        )

    assert 'sample values ["many"], at rows [2] of the batch read, counting the first row the source returned as 1 (' in str(
        caught.value
    )
    saved = [check for check in json.loads((tmp_path / "report.json").read_text())["checks"] if check["sample_rows"]]
    assert [(check["sample_values"], check["sample_rows"]) for check in saved] == [(["many"], [2])]


def test_check_and_raise_passes_a_clean_batch(tmp_path: Path, make_job, clean_frame: pd.DataFrame) -> None:
    report = check_and_raise(
        clean_frame, make_job(), window=WINDOW, suite_path=None,
        report_path=str(tmp_path / "report.json"), quarantine_dir=str(tmp_path / "quarantine"),
    )

    assert report.success
    assert json.loads((tmp_path / "report.json").read_text())["success"] is True
    assert not (tmp_path / "quarantine").exists()


def test_text_timestamps_are_not_each_parsed_by_dateutil(make_job, monkeypatch: pytest.MonkeyPatch) -> None:
    # GX's parseable check ran dateutil on every value, some 0.2 ms each: a csv window of a million
    # rows spent minutes there. Only values that are not ISO 8601 need it, each distinct one once
    # (the readability check asks about "x" too).
    import dateutil.parser
    from great_expectations.expectations.metrics.column_map_metrics import column_values_dateutil_parseable as gx_check

    calls: list[str] = []

    def spy(value, *args, **kwargs):
        calls.append(value)
        return real(value, *args, **kwargs)

    real = dateutil.parser.parse
    monkeypatch.setattr(dateutil.parser, "parse", spy)
    monkeypatch.setattr(gx_check, "parse", spy)
    stamps = pd.date_range("2024-02-01", periods=1000, freq="min", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
    stamps[10:13] = ["Feb 1 2024 05:00 +00:00", "x", "x"]
    frame = pd.DataFrame({"timestamp": stamps, "requests": range(1000), "latency_ms": 1.0})
    report = validate_batch(frame, make_job(dimensions=[]))

    failed = {check.expectation: check for check in _failed(report)}
    parse = failed["expect_column_values_to_be_dateutil_parseable"]
    assert (parse.unexpected_count, parse.sample_values, parse.sample_rows) == (2, ["x", "x"], [11, 12])
    assert sorted(calls) == ["Feb 1 2024 05:00 +00:00", "x"]


def test_one_series_written_as_a_number_and_as_text_is_one_series(make_job) -> None:
    # A JSON source keeps JSON's types: 7 and "7" passed as two series, then were typed as one series
    # "7" holding every instant twice, which resampling merged without a word.
    frame = pd.DataFrame(
        {
            "timestamp": ["2024-02-01T00:00:00Z", "2024-02-01T00:00:00Z", "2024-02-01T01:00:00Z"],
            "region": pd.Series([7, "7", 7], dtype=object),
            "requests": [1, 2, 3],
        }
    )
    check = _only_failure(validate_batch(frame, make_job(features=["requests"])))

    assert (check.expectation, check.unexpected_count, check.sample_rows) == ("expect_compound_columns_to_be_unique", 2, [0, 1])
    assert check.sample_values == [{"timestamp": "2024-02-01T00:00:00Z", "region": 7}, {"timestamp": "2024-02-01T00:00:00Z", "region": "7"}]


def test_values_gx_cannot_write_as_json_are_reported_not_raised(make_job, clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    # An interval column (PostgreSQL's INTERVAL reads as Timedelta) listed as a feature, and a uuid
    # dimension checked by the job's suite: GX's own JSON form of the result raised TypeError
    # ("... is of type Timedelta which cannot be serialized"), so no report named the values.
    import uuid

    hosts = [uuid.UUID(int=number % 2) for number in range(6)]
    frame = clean_frame.assign(latency_ms=pd.to_timedelta([1, 2, 3, 4, 5, 6], unit="s"), region=hosts)
    suite = tmp_path / "suite.json"
    in_set = {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "region", "value_set": ["eu"]}}
    suite.write_text(json.dumps({"name": "web", "expectations": [in_set]}))
    report = validate_batch(frame, make_job(), suite_path=str(suite))

    failed = {check.column: check for check in _failed(report)}
    assert set(failed) == {"latency_ms", "region"}
    assert (failed["latency_ms"].expectation, failed["latency_ms"].sample_values[:2]) == (
        "expect_column_values_to_be_in_type_list", ["0 days 00:00:01", "0 days 00:00:02"]
    )
    assert (failed["region"].unexpected_count, failed["region"].sample_values[:2]) == (6, [str(hosts[0]), str(hosts[1])])
    save_report(report, str(tmp_path / "report.json"))
    assert json.loads((tmp_path / "report.json").read_text())["checks"] == json.loads(json.dumps(report.to_dict()["checks"]))


def test_a_rejected_batch_with_integers_beyond_64_bits_is_quarantined(tmp_path: Path, make_job, clean_frame: pd.DataFrame) -> None:
    # A JSON source's byte counter (2**64 - 1 beside a -1) is an object column of Python ints: Arrow
    # raised OverflowError, so the batch was not kept and the run failed with that, not with the report.
    frame = clean_frame.assign(
        requests=pd.Series([2**64 - 1, -1, 3, 4, 5, 6], dtype=object), latency_ms=[1.0, np.inf, 2.0, 3.0, 4.0, 5.0]
    )
    quarantine_dir = tmp_path / "quarantine"
    with pytest.raises(DataValidationError, match=r"(?s)expect_column_values_to_not_be_in_set on latency_ms.*kept at"):
        check_and_raise(frame, make_job(), window=WINDOW, report_path=str(tmp_path / "report.json"), quarantine_dir=str(quarantine_dir))

    kept = pd.read_parquet(quarantine_dir / "batch.parquet")
    assert kept["requests"].tolist() == [str(2**64 - 1), "-1", "3", "4", "5", "6"]
    assert kept["latency_ms"].tolist() == frame["latency_ms"].tolist()


def test_a_long_text_value_is_shown_by_its_start_and_length(tmp_path: Path, make_job, clean_frame: pd.DataFrame) -> None:
    # An HTML error page pasted into a cell: the report, the log line and the run's error each
    # echoed the whole of every sampled value (some 10 MB of each for five 2 MB cells).
    page = "<html>" + "x" * 100_000 + "</body></html>"
    frame = clean_frame.astype({"latency_ms": object, "timestamp": object})
    frame.loc[1, "latency_ms"] = page
    frame.loc[2, "region"] = "r" * 100_000 + "-east"
    frame.loc[3, "timestamp"] = "t" * 100_000
    suite = tmp_path / "suite.json"
    in_set = {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "region", "value_set": ["eu", "us"]}}
    suite.write_text(json.dumps({"name": "web", "expectations": [in_set]}))
    quarantine_dir = tmp_path / "quarantine"
    with pytest.raises(DataValidationError) as raised:
        check_and_raise(
            frame, make_job(), window=WINDOW, suite_path=str(suite), report_path=str(tmp_path / "report.json"),
            quarantine_dir=str(quarantine_dir),
        )

    report = json.loads((tmp_path / "report.json").read_text())
    samples = {(check["expectation"], check["column"]): check["sample_values"] for check in report["checks"] if not check["success"]}
    assert samples[("expect_column_values_to_be_in_type_list", "latency_ms")] == ["<html>" + "x" * 34 + "… (99,960 characters left out) …" + "x" * 6 + "</body></html>"]
    assert samples[("expect_column_values_to_be_in_set", "region")] == ["r" * 40 + "… (99,945 characters left out) …" + "r" * 15 + "-east"]
    assert samples[("expect_column_values_to_be_dateutil_parseable", "timestamp")] == ["t" * 40 + "… (99,940 characters left out) …" + "t" * 20]
    assert len((tmp_path / "report.json").read_text()) < 50_000 and len(str(raised.value)) < 5_000
    assert "region=" + "r" * 40 + "… (99,945 characters left out) …" + "r" * 15 + "-east" in str(raised.value)
    kept = pd.read_parquet(quarantine_dir / "batch.parquet")
    assert (kept["latency_ms"][1], kept["region"][2], kept["timestamp"][3]) == (page, "r" * 100_000 + "-east", "t" * 100_000)


def _numbered_regions(make_job, rows: int) -> tuple[pd.DataFrame, str]:
    """``rows`` distinct dimension values, numbers but for one 10 kB text at row 7 (a host name
    pasted over a region id), and that text."""
    long = "host-" + "x" * 10_000
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-02-01", periods=rows, freq="h", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": pd.Series(range(rows), dtype=object),
            "requests": range(rows),
            "latency_ms": 100.0,
        }
    )
    frame.loc[7, "region"] = long
    return frame, long


def test_a_long_dimension_value_among_numbers_costs_the_fingerprint_no_wide_text(make_job) -> None:
    # GX fingerprints each batch with pandas, which hashed this column as NumPy text as wide as its
    # longest value, once per distinct value: 1,000 of them took 40 MB, 20,000 took 800 MB.
    import tracemalloc

    import great_expectations  # noqa: F401  # its import is not the batch's cost

    frame, _ = _numbered_regions(make_job, 1_000)
    job = make_job()
    validate_batch(frame.head(3), job)
    tracemalloc.start()
    try:
        report = validate_batch(frame, job)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert report.success, report.summary()
    assert peak < 20_000_000


def test_the_fingerprint_of_a_batch_is_the_one_gx_computes(make_job) -> None:
    from great_expectations.execution_engine import pandas_execution_engine as engine

    from pipelines.validation.suite import prepare_batch

    frame, _ = _numbered_regions(make_job, 30)
    report = validate_batch(frame, make_job())

    gx_own = getattr(engine.hash_pandas_dataframe, "__wrapped__", engine.hash_pandas_dataframe)
    assert report.gx_result["meta"]["batch_markers"]["pandas_data_fingerprint"] == gx_own(prepare_batch(frame, make_job()))


@pytest.mark.parametrize(
    ("expectation", "passes"),
    [
        ({"type": "expect_column_values_to_match_regex", "kwargs": {"column": "region", "regex": r"^\d+$"}}, False),
        ({"type": "expect_column_values_to_match_regex", "kwargs": {"column": "region", "regex": r"^(?:\d+|host-x+)$"}}, True),
        ({"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "region", "regex": "^host-x+$"}}, False),
        ({"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "region", "max_value": 10_005}}, True),
        ({"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "region", "max_value": 10_004}}, False),
    ],
)
def test_suite_checks_see_a_long_dimension_value_whole(make_job, tmp_path: Path, expectation: dict, passes: bool) -> None:
    frame, _ = _numbered_regions(make_job, 30)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "web", "expectations": [expectation]}))

    report = validate_batch(frame, make_job(), suite_path=str(suite))

    if passes:
        assert report.success, report.summary()
    else:
        check = _only_failure(report)
        assert (check.expectation, check.column, check.unexpected_count, check.sample_rows) == (expectation["type"], "region", 1, [7])
        assert check.sample_values == ["host-" + "x" * 35 + "… (9,945 characters left out) …" + "x" * 20]


@pytest.mark.parametrize("has_long", [True, False])
def test_a_value_set_check_sees_a_long_dimension_value_whole(make_job, tmp_path: Path, has_long: bool) -> None:
    frame, long = _numbered_regions(make_job, 30)
    # The long value cut as a report shows it is not the value: a set holding only that must fail.
    shown = "host-" + "x" * 35 + "… (9,945 characters left out) …" + "x" * 20
    value_set = [*range(30), long if has_long else shown]
    suite = tmp_path / "suite.json"
    in_set = {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "region", "value_set": value_set}}
    suite.write_text(json.dumps({"name": "web", "expectations": [in_set]}))

    report = validate_batch(frame, make_job(), suite_path=str(suite))

    if has_long:
        assert report.success, report.summary()
    else:
        check = _only_failure(report)
        assert (check.unexpected_count, check.sample_rows, check.sample_values) == (1, [7], [shown])


def test_a_batch_is_loaded_and_fingerprinted_once(make_job, clean_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    # Batch.validate loads the batch anew: getting it first hashed every value twice (seconds
    # for a window of a million rows).
    from great_expectations.execution_engine import pandas_execution_engine as engine

    hashed = []
    inner = engine.hash_pandas_dataframe

    def counted(df: pd.DataFrame) -> str:
        hashed.append(len(df))
        return inner(df)

    monkeypatch.setattr(engine, "hash_pandas_dataframe", counted)
    report = validate_batch(clean_frame, make_job())

    assert report.success, report.summary()
    assert hashed == [6]
