"""The Great Expectations suite a raw batch is checked against: built-in checks derived from the
job's settings, then the expectations of the job's own suite file.

Great Expectations is imported inside the functions: importing it takes seconds.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pandas.api.types import is_datetime64_any_dtype, is_numeric_dtype

from pipelines.config import JobConfig, resolve_path
from pipelines.errors import ConfigError
from pipelines.json_values import json_safe
from pipelines.sources.base import LONGEST_TIMESTAMP, SUPPORTED_YEARS, parse_timestamps
from pipelines.storage import read_bytes
from pipelines.validation.report import SAMPLE_SIZE, CheckResult, expectation_columns, shortened

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import Expectation

#: Types a feature may have. GX compares a column's dtype with NumPy names and recognises pandas'
#: nullable dtypes by their class name; in object columns it checks each value against the list,
#: where ``int`` and ``float`` accept Python numbers.
NUMERIC_TYPES: list[str] = [
    *(f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)),
    "float16",
    "float32",
    "float64",
    *(f"{sign}Int{bits}Dtype" for sign in ("", "U") for bits in (8, 16, 32, 64)),
    "Float32Dtype",
    "Float64Dtype",
    "int",
    "float",
]


def prepare_batch(frame: pd.DataFrame, job: JobConfig) -> pd.DataFrame:
    """The raw batch as GX should see it: the same rows and values, in forms GX can check and report.

    Rows are renumbered 0..n-1, so the row indexes GX reports are positions in the batch.
    """
    batch = frame.reset_index(drop=True).infer_objects()
    timestamp = job.timestamp
    if timestamp in batch.columns and not is_datetime64_any_dtype(batch[timestamp]):
        # dateutil only parses text: other values (epoch numbers, date objects) are checked as text.
        batch[timestamp] = batch[timestamp].astype("str")
    for name in job.features:
        if name in batch.columns and not is_numeric_dtype(batch[name]):
            # Numbers written as text (as CSV gives them) are numbers; the values that are not stay
            # as they came, in an object column, where GX checks each value and names exactly them.
            raw = batch[name].astype(object)
            # True and False are not measurements, though pandas reads them as 1 and 0 (a JSON
            # source can mix them with numbers), and GX's type check takes a bool for an int: as
            # text, the type check names them.
            flags = raw.map(lambda value: isinstance(value, (bool, np.bool_)))
            raw = raw.where(~flags, raw.map(str))
            numbers = pd.to_numeric(raw, errors="coerce")
            # GX fingerprints a batch by hashing it, and hashes a column of numbers and text as
            # text of its longest value's width: one 10 kB cell among 20,000 rows took 800 MB, among
            # a million 40 GB. Text that is not a number fails the type check however much of it
            # GX sees, and the quarantine keeps it whole.
            text = numbers.isna()
            raw[text] = raw[text].map(shortened)
            batch[name] = raw.where(numbers.isna(), numbers.astype(object))
    return batch


#: Meta key marking a built-in check of a limit the job sets, valued with its setting
#: (``validation.max_null_fraction``, ``validation.min_rows``): a failure of it names the setting.
JOB_LIMIT = "job_limit"


def build_suite(batch: pd.DataFrame, job: JobConfig, suite_path: str | None = None) -> ExpectationSuite:
    """Built-in checks for ``batch`` (from :func:`prepare_batch`), then those of ``suite_path``.

    Checks that need a missing column are left out: the column's existence check reports it.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    present = set(batch.columns)
    timestamp = job.timestamp
    checks: list[Expectation] = [gxe.ExpectColumnToExist(column=name) for name in job.columns]
    if timestamp in present:
        checks.append(gxe.ExpectColumnValuesToNotBeNull(column=timestamp))
        # Whether text timestamps parse at all: checked by unparseable_instants, not here (see there why).
    # A row without a dimension value belongs to no series: grouping would drop it unseen.
    checks += [gxe.ExpectColumnValuesToNotBeNull(column=name) for name in job.dimensions if name in present]
    for name in job.features:
        if name not in present:
            continue
        checks += [
            gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_TYPES),
            # NaN is not in the set (GX counts it as missing), so this flags exactly +/-inf.
            gxe.ExpectColumnValuesToNotBeInSet(column=name, value_set=[math.inf, -math.inf]),
            gxe.ExpectColumnValuesToNotBeNull(
                column=name, mostly=1 - job.validation.max_null_fraction, meta={JOB_LIMIT: "validation.max_null_fraction"}
            ),
        ]
    # One row per timestamp and series: checked by duplicate_instants, not here (see there why).
    checks.append(gxe.ExpectTableRowCountToBeBetween(min_value=job.validation.min_rows, meta={JOB_LIMIT: "validation.min_rows"}))
    if suite_path:
        checks += load_expectations(suite_path)
    return gx.ExpectationSuite(name=job.name, expectations=checks)


def instants(frame: pd.DataFrame, job: JobConfig) -> pd.Series | None:
    """The timestamps of the raw ``frame`` (which must have the column) parsed as the pipeline
    parses them, numbered as the batch, NaT where one does not parse; None when naive and aware
    ones are mixed: the instant of a naive one would be a guess (extraction refuses such a batch,
    naming the rows)."""
    try:
        return parse_timestamps(frame[job.timestamp].reset_index(drop=True), job.timestamp_format)
    except ValueError:
        return None


def duplicate_instants(
    frame: pd.DataFrame, batch: pd.DataFrame, job: JobConfig, *, parsed: pd.Series | None = None, first_row: int = 0
) -> CheckResult | None:
    """The built-in duplicate check: one row per instant and series, for the raw ``frame`` and its
    ``batch`` (from :func:`prepare_batch`); None when a column it needs is missing. ``parsed`` is
    :func:`instants` of ``frame``, when the caller has it already (and it is not None).
    ``sample_rows`` are positions in the batch, as GX's are; the detail, which names the rows of
    each instant, numbers them from ``first_row`` (see
    :class:`~pipelines.validation.report.RowNumbers`), as the report will number ``sample_rows``.

    ``2024-01-01T00:00:00Z``, ``2024-01-01 00:00:00+00:00`` and ``2024-01-01T02:00:00+02:00`` are
    one instant, which resampling would merge (only logging it). GX compares values as written;
    comparing instants there would need them as a column of the batch, which a job's own suite
    (``expect_table_columns_to_match_set``...) would then see. So it runs here, on the instants
    parsed as the pipeline parses them, and is reported as GX's uniqueness check was, showing the
    values as written. A timestamp that does not parse is compared as written; a missing one is
    left to the not-null check.
    """
    keys = [job.timestamp, *job.dimensions]
    if not set(keys) <= set(batch.columns):
        return None
    shown = batch[job.timestamp]
    parsed = instants(frame, job) if parsed is None else parsed
    if parsed is None:
        # Naive among aware: compare them as written.
        parsed = pd.Series(pd.NaT, index=shown.index, dtype="datetime64[ns, UTC]")
    # A row is its instant, or its value as written when that did not parse, and its series, named
    # as extraction's prepare() names it: the raw value as text, so 7 and "7" (a JSON source keeps
    # both) are one.
    identity = pd.DataFrame(
        {
            "instant": parsed,
            "written": shown.where(parsed.isna()),
            **{name: frame[name].reset_index(drop=True).astype("string") for name in job.dimensions},
        }
    )
    repeated = identity.duplicated(keep=False).to_numpy() & shown.notna().to_numpy()
    rows = np.flatnonzero(repeated)[:SAMPLE_SIZE].tolist()
    sample = batch.loc[rows, keys]
    check = CheckResult(
        # Named as GX's check was, so reports, messages and what reads them stay as they were.
        expectation="expect_compound_columns_to_be_unique" if job.dimensions else "expect_column_values_to_be_unique",
        column=", ".join(keys),
        success=not repeated.any(),
        unexpected_count=int(repeated.sum()),
        sample_values=json_safe(sample.to_dict("records") if job.dimensions else sample[job.timestamp].tolist()),
        sample_rows=rows,
    )
    if not check.success:
        groups = identity.loc[rows].groupby(list(identity.columns), sort=False, dropna=False).groups
        shared = "; ".join(
            f"{repr(shortened(key[1])) if pd.isna(key[0]) else key[0]} at rows {[first_row + int(row) for row in found]}"
            for key, found in groups.items()
        )
        series = " and series" if job.dimensions else ""
        check.detail = (
            f"rows of column {job.timestamp!r} naming the same instant{' in one series' if job.dimensions else ''} "
            f"are duplicates however it is written (UTC: {shared}); keep one row per timestamp{series} in the "
            "source, then re-run"
        )
    return check


def unread_instants(
    batch: pd.DataFrame, job: JobConfig, parsed: pd.Series | None, *, verdicts: dict[str, bool] | None = None
) -> CheckResult | None:
    """The built-in check that every timestamp GX's parseable check passes is one the pipeline
    reads (``parsed``, :func:`instants` of the raw batch); None without a timestamp column, or
    when ``parsed`` is None (naive among aware timestamps, which extraction refuses).

    dateutil, which GX's check uses, takes a zone abbreviation (``2024-02-01 00:00 EST``, with a
    warning that it ignores it) or a bare number (``12``, the 12th of this month) as a date;
    :func:`~pipelines.sources.base.parse_timestamps` reads neither, and resampling dropped such
    rows without a word. Values dateutil cannot parse either are left to the parseable check
    (:func:`unparseable_instants`), so no row is reported twice; ``verdicts`` are dateutil's on
    values that check tried already.
    """
    if parsed is None or job.timestamp not in batch.columns or job.timestamp_format:
        # With the job's format, a value not written in it is unparseable (the check below), dateutil aside.
        return None
    values = batch[job.timestamp]
    suspects = np.flatnonzero((values.notna() & parsed.isna()).to_numpy())
    verdicts = {} if verdicts is None else verdicts
    unread = []
    for row in suspects.tolist():
        value = values.iloc[row]
        if value not in verdicts:
            verdicts[value] = _dateutil_parseable(value)
        if verdicts[value]:
            unread.append(row)
    rows = unread[:SAMPLE_SIZE]
    check = CheckResult(
        expectation="expect_column_values_to_be_readable_timestamps",
        column=job.timestamp,
        success=not unread,
        unexpected_count=len(unread),
        sample_values=json_safe(values.iloc[rows].tolist()),
        sample_rows=rows,
    )
    if unread:
        check.detail = (
            "these values look like dates but name no instant the pipeline can read (a zone abbreviation such as "
            "EST? a bare number?); write them in ISO 8601 with a numeric offset (e.g. 2024-02-01T00:00:00-05:00) "
            "in the source, then re-run"
        )
    return check


def unparseable_instants(
    batch: pd.DataFrame, job: JobConfig, *, verdicts: dict[str, bool] | None = None, parsed: pd.Series | None = None
) -> CheckResult | None:
    """The built-in check that every text timestamp of ``batch`` (from :func:`prepare_batch`) is a
    date at all, as GX's ``expect_column_values_to_be_dateutil_parseable`` checked it; None without
    a timestamp column or when it holds datetimes (nothing to parse).

    GX runs dateutil on every value, some 0.2 ms each: a window of a million rows from a csv spent
    minutes there. Values that pandas reads as ISO 8601 are dates to dateutil too, and are the
    bulk of any batch; dateutil sees only the others, each distinct value once. Those must hold a
    digit, since pandas also reads "now" and "today", which dateutil (and a source) does not.
    dateutil's verdicts are added to ``verdicts``, for :func:`unread_instants`: in text that holds
    no timestamps (epoch seconds) every value is to try, and each took it twice. With the job's
    ``timestamp_format``, a value is unparseable when ``parsed`` (:func:`instants` of the raw
    batch, parsed here when not given) has none for it.
    """
    if job.timestamp not in batch.columns or is_datetime64_any_dtype(batch[job.timestamp]):
        return None
    values = batch[job.timestamp]
    if job.timestamp_format:
        # The job says how its times are written: dateutil's guesses (13.01.2024 read either way,
        # digits-only forms not at all) would judge another reading than the pipeline's.
        read = parsed if parsed is not None else parse_timestamps(values, job.timestamp_format)
        unread = values.notna().to_numpy() & read.isna().to_numpy()
        positions = values.index[unread]
    else:
        text = values.astype("string")
        iso = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True).notna() & text.str.contains(r"\d", regex=True)
        others = values[values.notna() & ~iso.fillna(False).to_numpy()]
        verdicts = {} if verdicts is None else verdicts
        for value in others.unique():
            if value not in verdicts:
                verdicts[value] = _dateutil_parseable(value)
        failed = np.flatnonzero(others.map(verdicts).eq(False).to_numpy())
        positions = others.index[failed]
    rows = [int(row) for row in positions[:SAMPLE_SIZE]]
    check = CheckResult(
        # Named as GX's check was, so reports, messages and what reads them stay as they were.
        expectation="expect_column_values_to_be_dateutil_parseable",
        column=job.timestamp,
        success=not len(positions),
        unexpected_count=len(positions),
        sample_values=json_safe(values.loc[rows].tolist()),
        sample_rows=rows,
    )
    if len(positions) and job.timestamp_format:
        check.detail = f"these values are not written as the job's timestamp_format {job.timestamp_format!r}: fix them, or the format"
    return check


def _dateutil_parseable(value: object) -> bool:
    """Whether dateutil, as GX's parseable check uses it, takes ``value`` as a date."""
    from dateutil import parser

    if len(str(value)) > LONGEST_TIMESTAMP:  # dateutil's time grows with the square of the length
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "tzname EST identified but not understood"
        try:
            parser.parse(str(value))
        except (ValueError, OverflowError):
            return False
    return True


def far_instants(batch: pd.DataFrame, job: JobConfig, parsed: pd.Series | None) -> CheckResult | None:
    """The built-in range check: every timestamp (``parsed``, :func:`instants` of the raw batch)
    within :data:`~pipelines.sources.base.SUPPORTED_YEARS`; None without a timestamp column or
    ``parsed``.

    A sentinel such as 0001-01-01 or 9999-12-31 is a valid date, so GX's parseable check passes
    it, but resampling (nanosecond timestamps, which end in 1677 and 2262) would crash on it with
    a bare OutOfBoundsDatetime, or make millions of buckets between it and the real rows. Sources
    read for a window drop such rows as outside it; a file scored whole (score-file, detect-file)
    has no window, so they are reported here, with their rows.
    """
    if parsed is None or job.timestamp not in batch.columns:
        return None
    first, last = SUPPORTED_YEARS
    far = (parsed.notna() & ~parsed.dt.year.between(first, last)).to_numpy()
    rows = np.flatnonzero(far)[:SAMPLE_SIZE].tolist()
    check = CheckResult(
        expectation="expect_column_values_to_be_between",
        column=job.timestamp,
        success=not far.any(),
        unexpected_count=int(far.sum()),
        sample_values=json_safe(batch.loc[rows, job.timestamp].tolist()),
        sample_rows=rows,
    )
    if not check.success:
        check.detail = (
            f"timestamps must lie in the years {first} to {last} (pandas' timestamps end in 1677 and 2262); "
            "drop or correct these rows (placeholder dates such as 0001-01-01 or 9999-12-31?) in the source, then re-run"
        )
    return check


def load_expectations(path: str) -> list[Expectation]:
    """The expectations of a GX suite file (JSON, as GX writes it); raises :class:`ConfigError`."""
    from great_expectations.core.expectation_suite import ExpectationSuiteSchema
    from great_expectations.exceptions import GreatExpectationsError
    from marshmallow import ValidationError

    fix = "fix the file, or validation.suite in the job file"
    try:
        data = json.loads(read_bytes(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the expectation suite ({exc}); {fix}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: the expectation suite is not valid JSON ({exc}); {fix}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an expectation suite must be a JSON object, got {type(data).__name__}; {fix}")
    try:
        configurations = ExpectationSuiteSchema().load(data).get("expectations", [])
    except ValidationError as exc:
        raise ConfigError(f"{path}: not a valid Great Expectations suite: {exc.messages}; {fix}") from exc
    expectations = []
    for number, configuration in enumerate(configurations, start=1):
        try:
            expectations.append(configuration.to_domain_obj())
        except (GreatExpectationsError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path}: expectation {number} ({configuration.type}) is not valid: {exc}; {fix}"
            ) from exc
        problem = _kwargs_problem(configuration.kwargs)
        if problem:
            raise ConfigError(f"{path}: expectation {number} ({configuration.type}) is not valid: {problem}; {fix}")
    return expectations


def check_suite(job: JobConfig) -> None:
    """Raise :class:`ConfigError` when the job's expectation suite (``validation.suite``) cannot be
    loaded or names a column the job does not read: either failed only in the validate task, after
    extracting the window, quarantining good data and saying to fix the source."""
    if not job.validation.suite:
        return
    path = resolve_path(job.validation.suite)
    for number, expectation in enumerate(load_expectations(path), start=1):
        unknown = [name for name in expectation_columns(expectation.configuration.kwargs) if name not in job.columns]
        if unknown:
            raise ConfigError(
                f"{path}: expectation {number} ({expectation.configuration.type}) checks {', '.join(map(repr, unknown))}, "
                f"which job {job.name} does not read (its columns: {', '.join(job.columns)}); name one of those, or add "
                "the column to the job's dimensions or features"
            )


def _kwargs_problem(kwargs: dict) -> str | None:
    """What GX would raise only when the expectation runs, for settings that can never run.

    GX takes min_value above max_value and a regex that does not compile, then errs on every
    batch: each run failed validation and quarantined its data, saying to fix the source.
    """
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    try:
        inverted = low is not None and high is not None and low > high
    except TypeError:  # bounds of two types (a date and a number): GX's own check names them
        inverted = False
    if inverted:
        return f"min_value {low!r} is above max_value {high!r}"
    for name in ("regex", "regex_list"):
        value = kwargs.get(name)
        for pattern in value if isinstance(value, list) else [value] if isinstance(value, str) else []:
            try:
                re.compile(pattern)
            except re.error as exc:
                return f"{name} {pattern!r} is not a regular expression ({exc})"
            try:
                # As GX matches it: pandas runs it on pyarrow's RE2 unless it needs Python's re, and
                # RE2 refuses some patterns re takes (more than 1000 repeats: ^.{1,2000}$).
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "has match groups": GX's own run warns so, not loading
                    pd.Series([""], dtype=object).astype(str).str.contains(pattern)
            except ValueError as exc:
                repeats = (
                    " (RE2 repeats at most 1000 times: bound a value's length with expect_column_value_lengths_to_be_between)"
                    if "repetition" in str(exc)
                    else ""
                )
                return f"{name} {pattern!r} cannot run: GX matches it with RE2, which says: {exc}{repeats}"
    return None
