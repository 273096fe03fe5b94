from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import REPO_ROOT
from pipelines.errors import ConfigError
from pipelines.validation.suite import (
    build_suite,
    duplicate_instants,
    load_expectations,
    prepare_batch,
    unparseable_instants,
)


def _checks(suite) -> list[tuple[str, str | None]]:
    """(type, column) of each expectation; multi-column checks name their columns joined by ","."""
    found = []
    for expectation in suite.expectations:
        kwargs = expectation.configuration.kwargs
        found.append((expectation.expectation_type, kwargs.get("column") or ",".join(kwargs.get("column_list", [])) or None))
    return found


def test_prepare_batch_numbers_rows_and_shows_values_as_gx_can_check_them(make_job) -> None:
    frame = pd.DataFrame(
        {
            "timestamp": [1706745600, None, 1706749200],
            "region": ["eu", "eu", "us"],
            "requests": ["10", "x", None],
            "latency_ms": [1.5, 2.5, np.nan],
        },
        index=[7, 3, 9],
    )
    batch = prepare_batch(frame, make_job())

    assert list(batch.index) == [0, 1, 2]
    assert batch["timestamp"].tolist()[::2] == ["1706745600.0", "1706749200.0"]
    assert pd.isna(batch["timestamp"][1])
    assert batch["requests"].dtype == object
    assert batch["latency_ms"].dtype == "float64"
    assert list(frame.index) == [7, 3, 9]  # the caller's frame is left alone


def test_prepare_batch_keeps_datetime_timestamps(make_job) -> None:
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=2, freq="h", tz="UTC"), "requests": [1, 2]})
    assert prepare_batch(frame, make_job()).dtypes["timestamp"] == "datetime64[us, UTC]"


@pytest.mark.parametrize(
    ("written", "rows"),
    [
        # One instant three ways: all three are duplicates of each other.
        (["2024-01-01T00:00:00Z", "2024-01-01 00:00:00+00:00", "2024-01-01T02:00:00+02:00", "2024-01-01T01:00Z"], [0, 1, 2]),
        # What does not parse is compared as written; missing ones are the not-null check's.
        (["soon", "soon", "Soon", None, None], [0, 1]),
        # Naive among aware: which instant a naive one names would be a guess, so as written.
        (["2024-01-01T00:00:00Z", "2024-01-01 00:00:00", "2024-01-01 00:00:00"], [1, 2]),
    ],
    ids=["one-instant", "unparsed-and-missing", "naive-among-aware"],
)
def test_duplicate_instants_compares_timestamps_as_the_utc_instants_they_name(make_job, written, rows) -> None:
    job = make_job(dimensions=[])
    frame = pd.DataFrame({"timestamp": written, "requests": range(len(written))})
    check = duplicate_instants(frame, prepare_batch(frame, job), job)

    assert (check.expectation, check.column, check.success) == ("expect_column_values_to_be_unique", "timestamp", False)
    assert (check.unexpected_count, check.sample_rows) == (len(rows), rows)
    assert check.sample_values == [written[row] for row in rows]  # as written, not as parsed


def test_duplicate_instants_needs_the_timestamp_and_dimension_columns(make_job) -> None:
    frame = pd.DataFrame({"timestamp": ["2024-01-01T00:00:00Z"], "requests": [1]})
    assert duplicate_instants(frame, prepare_batch(frame, make_job()), make_job()) is None  # no region


def test_build_suite_leaves_out_checks_of_missing_columns(make_job) -> None:
    batch = prepare_batch(pd.DataFrame({"timestamp": ["2024-01-01"], "requests": [1]}), make_job())
    checks = _checks(build_suite(batch, make_job()))

    assert checks[:4] == [
        ("expect_column_to_exist", "timestamp"),
        ("expect_column_to_exist", "region"),
        ("expect_column_to_exist", "requests"),
        ("expect_column_to_exist", "latency_ms"),
    ]
    assert not [c for c in checks[4:] if c[1] in ("region", "latency_ms") or (c[1] and "," in c[1])]
    assert ("expect_column_values_to_be_in_type_list", "requests") in checks
    assert checks[-1] == ("expect_table_row_count_to_be_between", None)


def test_build_suite_checks_series_keys_and_parseability(make_job) -> None:
    frame = pd.DataFrame(
        {"timestamp": pd.to_datetime(["2024-01-01"]), "region": ["eu"], "requests": [1], "latency_ms": [1.0]}
    )
    with_dimensions = _checks(build_suite(prepare_batch(frame, make_job()), make_job()))
    # Duplicates are instants, however written: duplicate_instants checks them, not GX.
    assert not [check for check in with_dimensions if "unique" in check[0]]
    assert ("expect_column_values_to_not_be_null", "region") in with_dimensions
    # Whether text parses: unparseable_instants checks it, not GX.
    assert ("expect_column_values_to_be_dateutil_parseable", "timestamp") not in with_dimensions

    job = make_job(dimensions=[])
    text = frame.assign(timestamp=["2024-01-01"])
    without_dimensions = _checks(build_suite(prepare_batch(text, job), job))
    assert ("expect_column_values_to_not_be_null", "timestamp") in without_dimensions
    assert ("expect_column_values_to_be_dateutil_parseable", "timestamp") not in without_dimensions


def test_unparseable_instants_checks_text_timestamps_only(make_job) -> None:
    job = make_job(dimensions=[])
    # Datetime values need no parsing; text values do.
    dates = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-01"]), "requests": [1]})
    assert unparseable_instants(prepare_batch(dates, job), job) is None
    assert unparseable_instants(prepare_batch(dates.drop(columns="timestamp"), job), job) is None
    text = dates.assign(timestamp=["2024-01-01"])
    check = unparseable_instants(prepare_batch(text, job), job)
    assert (check.expectation, check.column, check.success, check.unexpected_count) == (
        "expect_column_values_to_be_dateutil_parseable", "timestamp", True, 0
    )


@pytest.mark.parametrize(
    "written",
    [
        # What dateutil takes, as GX's check took it: ISO 8601 and not; zone names; bare numbers.
        "2024-02-01T00:00:00Z", "20240201T000000Z", "2024-02-01T00:00:00,5Z", "2024-02-01t00:00:00z",
        "2024-02-01 00:00 EST", "Feb 1 2024", "12", "0001-01-01T00:00:00Z", "2024-02-01T00:00:00-25:00",
        # What it does not: pandas reads "now" and "today" as ISO 8601, dateutil does not.
        "now", "Today", "yesterday-ish", "2024-13-45", "2024-02-30", "2024-02-01T24:00:00", "+2024-02-01", "1706745600.0",
    ],
)
def test_unparseable_instants_judges_each_value_as_dateutil_does(make_job, written: str) -> None:
    from dateutil import parser

    try:
        parser.parse(written)
        parseable = True
    except (ValueError, OverflowError):
        parseable = False
    job = make_job(dimensions=[])
    frame = pd.DataFrame({"timestamp": ["2024-02-01T01:00:00Z", written, None], "requests": [1, 2, 3]})
    check = unparseable_instants(prepare_batch(frame, job), job)

    assert (check.success, check.unexpected_count, check.sample_rows) == (
        (True, 0, []) if parseable else (False, 1, [1])
    )


def test_demo_suite_loads() -> None:
    expectations = load_expectations(str(REPO_ROOT / "config" / "expectations" / "demo_web_metrics.json"))
    assert [(e.expectation_type, e.column) for e in expectations] == [
        ("expect_column_values_to_be_in_set", "region"),
        ("expect_column_values_to_be_between", "requests"),
        ("expect_column_values_to_be_between", "latency_ms"),
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read the expectation suite"),
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object, got list"),
        ('{"name": "s", "expectation": []}', "not a valid Great Expectations suite.*Unknown field"),
        ('{"name": "s", "expectations": [{"kwargs": {}}]}', "not a valid Great Expectations suite.*type missing"),
        (
            '{"name": "s", "expectations": [{"type": "expect_the_moon", "kwargs": {}}]}',
            r"expectation 1 \(expect_the_moon\) is not valid",
        ),
        (
            json.dumps({"name": "s", "expectations": [
                {"type": "expect_column_to_exist", "kwargs": {"column": "a"}},
                {"type": "expect_column_values_to_be_between", "kwargs": {"min_value": 0}},
            ]}),
            r"expectation 2 \(expect_column_values_to_be_between\) is not valid.*column\s+field required",
        ),
    ],
)
def test_broken_suite_file_is_a_config_error_naming_it(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "suite.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=rf"(?s){path}: .*{problem}.*fix the file, or validation.suite"):
        load_expectations(str(path))


def test_prepare_batch_shortens_feature_text_that_is_not_a_number(make_job) -> None:
    # GX fingerprints a batch by hashing it, and a column of numbers and text as text of its longest
    # value's width: one 10 kB cell among 20,000 rows took 800 MB, among a million 40 GB.
    page = "<html>" + "x" * 10_000 + "</body></html>"
    frame = pd.DataFrame(
        {"timestamp": ["2024-02-01T00:00:00Z"] * 3, "region": ["eu", "us", "ap"], "requests": [1, page, "9" * 70], "latency_ms": 1.5}
    )
    batch = prepare_batch(frame, make_job())

    assert batch["requests"].tolist() == [1.0, "<html>" + "x" * 34 + "… (9,960 characters left out) …" + "x" * 6 + "</body></html>", 1e70]  # a long number stays one
    assert frame["requests"][1] == page  # the raw batch, which quarantine keeps, is left alone


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"column": "requests", "min_value": 10, "max_value": 1}, r"min_value 10 is above max_value 1"),
        ({"column": "region", "regex": "(eu"}, r"regex '\(eu' is not a regular expression \(missing \)"),
        ({"column": "region", "regex_list": ["eu", "[us"]}, r"regex_list '\[us' is not a regular expression"),
        # Python's re takes them, RE2 (which pandas runs them on) does not: GX erred on every batch.
        (
            {"column": "region", "regex": "^[a-z]{1,2000}$"},
            r"regex '\^\[a-z\]\{1,2000\}\$' cannot run: GX matches it with RE2, which says: .*repetition size.*"
            r"at most 1000 times: bound a value's length with expect_column_value_lengths_to_be_between",
        ),
        ({"column": "region", "regex_list": ["eu", "(?>u)s"]}, r"regex_list '\(\?>u\)s' cannot run: GX matches it with RE2"),
    ],
)
def test_suite_settings_that_can_never_run_are_a_config_error(tmp_path: Path, kwargs: dict, problem: str) -> None:
    # GX took them and erred on every batch at run time: each run failed validation and quarantined
    # its data, saying to fix the source.
    kind = "expect_column_values_to_be_between" if "min_value" in kwargs else (
        "expect_column_values_to_match_regex" if "regex" in kwargs else "expect_column_values_to_match_regex_list"
    )
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "s", "expectations": [{"type": kind, "kwargs": kwargs}]}))
    with pytest.raises(ConfigError, match=rf"{path}: expectation 1 \({kind}\) is not valid: {problem}.*fix the file"):
        load_expectations(str(path))


def test_suite_bounds_that_can_run_load(tmp_path: Path) -> None:
    expectations = [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "requests", "min_value": 5, "max_value": 5}},
        {"type": "expect_column_max_to_be_between", "kwargs": {"column": "ts", "min_value": "2024-01-01", "max_value": "2024-12-31"}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "region", "regex": r"^(eu|us)\d*$"}},
        # RE2 has no lookahead: pandas runs these on Python's re.
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "region", "regex": r"^(?!eu)x{1,2000}"}},
    ]
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "s", "expectations": expectations}))
    assert len(load_expectations(str(path))) == 4


def test_a_long_timestamp_twice_is_quoted_short_by_the_duplicate_check(make_job) -> None:
    # Its detail quoted the value whole: two rows of one 100 kB cell made a 100 kB line.
    job = make_job(dimensions=[])
    frame = pd.DataFrame({"timestamp": ["t" * 100_000 + "Z"] * 2, "requests": [1, 2]})
    check = duplicate_instants(frame, prepare_batch(frame, job), job)

    assert f"(UTC: '{'t' * 40}… (99,941 characters left out) …{'t' * 19}Z' at rows [0, 1])" in check.detail
    assert len(check.detail) < 500


def test_with_a_timestamp_format_the_checks_read_timestamps_as_extraction_does(make_job) -> None:
    job = make_job(dimensions=[]).model_copy(update={"timestamp_format": "%d.%m.%Y %H:%M"})
    # 1 February and 2 January, written day first, then 1 February in ISO (not written as the format).
    written = ["01.02.2024 00:00", "02.01.2024 00:00", "2024-02-01 00:00", "13.01.2024 10:00"]
    frame = pd.DataFrame({"timestamp": written, "requests": range(len(written))})
    batch = prepare_batch(frame, job)

    assert duplicate_instants(frame, batch, job).success
    check = unparseable_instants(batch, job)
    assert (check.success, check.unexpected_count, check.sample_rows) == (False, 1, [2])
    assert "timestamp_format '%d.%m.%Y %H:%M'" in check.detail
    # Without the format dateutil takes all four, and the month-first reading takes 02.01.2024 for
    # 2024-02-01: a duplicate that is not one.
    plain = make_job(dimensions=[])
    assert unparseable_instants(batch, plain).success
    assert duplicate_instants(frame, batch, plain).sample_rows == [1, 2]
