"""Validation of raw batches with Great Expectations: built-in checks from the job's settings plus
the job's own suite, a readable report, and quarantine of rejected batches.

Failing data never raises in :func:`validate_batch`; :func:`check_and_raise` is the gate that
stops a run.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial, wraps
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.config import FileSource, JobConfig
from pipelines.errors import DataValidationError
from pipelines.storage import atomic_write, join
from pipelines.validation.report import (
    SAMPLE_SIZE,
    CheckResult,
    RowNumbers,
    ValidationReport,
    build_report,
    expectation_columns,
)
from pipelines.validation.suite import (
    JOB_LIMIT,
    build_suite,
    duplicate_instants,
    far_instants,
    instants,
    prepare_batch,
    unparseable_instants,
    unread_instants,
)

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.core import ExpectationSuite, ExpectationSuiteValidationResult

__all__ = ["CheckResult", "RowNumbers", "ValidationReport", "check_and_raise", "quarantine", "save_report", "validate_batch"]

#: How :func:`check_and_raise` numbers the rows of a window read from a job's source: counted
#: from 1, as extraction's errors count the rows of a file. They are rows of the batch as read
#: (and as quarantined), not of a table or file the window was read from; each is also located
#: by its timestamp and dimensions.
WINDOW_ROWS = RowNumbers(first=1, of="the batch read, counting the first row the source returned as 1")

log = logging.getLogger(__name__)


def validate_batch(
    frame: pd.DataFrame,
    job: JobConfig,
    *,
    window: tuple[datetime | None, datetime | None] = (None, None),
    suite_path: str | None = None,
    missing_column_hint: Callable[[str], str] | None = None,
    rows: RowNumbers = RowNumbers(),
    number_hint: Callable[[dict[str, str]], str] | None = None,
    missing_values_hint: Callable[[str], str] | None = None,
    timed: bool = True,
) -> ValidationReport:
    """Check the raw ``frame`` of ``job`` for ``window``; failing data gives a failed report.

    ``suite_path`` is the job's suite file, already resolved; a missing or invalid file raises
    :class:`~pipelines.errors.ConfigError`. ``missing_column_hint`` (see
    :func:`~pipelines.validation.report.build_report`) is for callers whose columns were not
    named in a job file. ``rows`` says how the report numbers the rows of ``frame`` (by default
    0-based positions in it): e.g. a chunk of a file numbers them as rows of the file.
    ``number_hint`` says how to set csv options (``{"decimal": ","}``) that read a feature's
    numbers as a locale writes them ("1,5", "1,234.5"; by default, what the job's source can be
    told): for callers whose csv options are not a job file's. ``missing_values_hint`` says, given
    a feature with more missing values than ``validation.max_null_fraction`` allows, what to do (by
    default: the job file's setting): for callers whose settings are not a job file's.
    ``timed=False`` says the source has no time column: ``job.timestamp`` names one the caller
    adds after validation (rows' numbers standing for times), which is neither looked for nor
    checked, so the report names rows by their numbers and dimensions only.
    """
    if not timed:
        # The user never named this column: its checks counted among theirs, and each sampled row
        # was located at "__row_time__=1970-01-01T00:00:05" (a source may also hold a column so named).
        frame = frame.drop(columns=job.timestamp, errors="ignore")
    batch = prepare_batch(frame, job)
    suite = build_suite(batch, job, suite_path)
    if not timed:
        suite = _without_column(suite, job.timestamp)
    result = _run(batch, suite)
    bounds = (window[0].isoformat() if window[0] else None, window[1].isoformat() if window[1] else None)
    keys = batch[[name for name in (job.timestamp, *job.dimensions) if name in batch.columns]]
    parsed = instants(frame, job) if job.timestamp in frame.columns else None
    verdicts: dict[str, bool] = {}  # dateutil's, on timestamps as written: slow, so taken once
    more = [
        check
        for check in (
            unparseable_instants(batch, job, verdicts=verdicts, parsed=parsed),
            duplicate_instants(frame, batch, job, parsed=parsed, first_row=rows.first),
            unread_instants(batch, job, parsed, verdicts=verdicts),
            far_instants(batch, job, parsed),
        )
        if check
    ]
    report = build_report(
        result, job=job.name, rows=len(batch), window=bounds, keys=keys, missing_column_hint=missing_column_hint,
        columns=list(batch.columns), more=more, numbers=rows, number_hint=number_hint or partial(_number_hint, job),
        suite=suite_path,
    )
    _explain_limits(report, result, job, missing_values_hint or partial(_missing_values_hint, job))
    log.log(logging.INFO if report.success else logging.WARNING, "%s", report.summary())
    return report


def _explain_limits(
    report: ValidationReport, result: ExpectationSuiteValidationResult, job: JobConfig, missing_hint: Callable[[str], str]
) -> None:
    """Add to each failed built-in check of a limit the job sets (marked :data:`JOB_LIMIT` by
    ``build_suite``) what was found and the setting: the checks alone said "2016 unexpected,
    sample values [null, ...]" or "observed 6, expected at least 24", and a sensor that stopped
    reporting failed every run of the job without a word of ``validation.max_null_fraction``. For
    a feature's missing values the advice is ``missing_hint``'s. A suite file's checks are left
    as they are."""
    # The report lists GX's checks first, in the suite's order, then the checks run outside GX.
    for one, check in zip(result.results, report.checks):
        setting = (one.expectation_config.meta or {}).get(JOB_LIMIT)
        if check.success or setting is None:
            continue
        if setting == "validation.max_null_fraction":
            missing = check.unexpected_count or 0
            if missing == report.rows:
                count = "no row has a value"
            else:
                share = missing / report.rows if report.rows else 0.0
                count = f"{missing:,} of the {report.rows:,} rows ({share:.1%}) {'has' if missing == 1 else 'have'} no value"
            advice = f"{count} of {check.column}: {missing_hint(str(check.column))}"
        else:
            advice = (
                f"the job asks for at least {job.validation.min_rows:,} rows a window ({setting}): check that the "
                "source holds the window's rows (a late load, a filter, the time zone of its timestamps), or lower "
                f"{setting} in the job file if windows this short are normal"
            )
        check.detail = f"{check.detail}; {advice}" if check.detail else advice


def _missing_values_hint(job: JobConfig, column: str) -> str:
    limit = job.validation.max_null_fraction
    allowed = "none" if limit == 0 else f"at most {limit:.1%}"
    return (
        f"the job allows {allowed} (validation.max_null_fraction); fill the missing values in the source, or, if {column} may go "
        "missing, raise validation.max_null_fraction in the job file: the detectors take missing values (a feature "
        "with no value in a training window is left out by mset, and refused by name by the others)"
    )


def _without_column(suite: ExpectationSuite, column: str) -> ExpectationSuite:
    import great_expectations as gx

    kept = [one for one in suite.expectations if column not in expectation_columns(one.configuration.kwargs)]
    return gx.ExpectationSuite(name=suite.name, expectations=kept)


def _number_hint(job: JobConfig, settings: dict[str, str]) -> str:
    """How to read a feature's values that read as text like "1,5" or "1,234.5": a csv file
    source reads them as numbers once told its ``settings`` (those it has already are left out);
    other sources hand over what they hold."""
    if isinstance(job.source, FileSource):
        from pipelines.sources.file import suffix_format

        # A folder or a glob names no format: it may hold csv files.
        if (job.source.format or suffix_format(job.source.path) or "csv") == "csv":
            needed = {name: value for name, value in settings.items() if getattr(job.source, name) != value}
            if needed:
                return "set " + " and ".join(f'source.{name}: "{value}"' for name, value in needed.items()) + " in the job file"
    return "write them as plain numbers (1234.5) in the source, or convert them to numbers there"


def _run(batch: pd.DataFrame, suite: ExpectationSuite) -> ExpectationSuiteValidationResult:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.validator.v1_validator import Validator  # what Batch.validate runs

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            # In memory and without a docs site, so nothing is left on disk.
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,  # workers may have no network, and nothing should leave them
            progress_bars=ProgressBarsConfig(globally=False),  # tqdm bars would flood task logs
        ),
    )
    _fingerprint_cheaply()
    definition = (
        context.data_sources.add_pandas("batch")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
    )
    # SUMMARY keeps a sample of unexpected values and rows; COMPLETE would keep every one of them.
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE}
    # What Batch.validate runs, without get_batch first: that loaded and fingerprinted the batch
    # once more (hashing every value: seconds for a window of a million rows) only to be dropped.
    validator = Validator(batch_definition=definition, batch_parameters={"dataframe": batch}, result_format=result_format)
    return validator.validate_expectation_suite(suite)


def _fingerprint_cheaply() -> None:
    """Make GX fingerprint a batch without the cost of its long text values; the fingerprint stays
    the one GX computes.

    GX hashes every batch it is given (``pandas_data_fingerprint``, metadata only). pandas hashes
    an object column mixing text with other values (a dimension of numbers with one text value)
    as NumPy text as wide as its longest value, once per distinct value: one 10 kB value among
    20,000 distinct ones took 800 MB, a million rows 40 GB. A dimension's values cannot be cut as
    a feature's text is (``suite.prepare_batch``), since a suite may check them (a regex, a value
    set). So only the fingerprint changes how it reads them: each such value as its own Python
    text, which pandas hashes as it would have hashed the wide NumPy text. Installed once for the
    process; the batch GX checks is untouched.
    """
    from great_expectations.execution_engine import pandas_execution_engine as engine

    original = getattr(engine, "hash_pandas_dataframe", None)
    if original is None or getattr(original, "_pipelines_cheap", False):
        return  # already installed, or a GX that fingerprints otherwise: nothing to make cheaper

    @wraps(original)
    def fingerprint(df: pd.DataFrame) -> str:
        return original(_as_text_where_mixed(df))

    fingerprint._pipelines_cheap = True  # type: ignore[attr-defined]
    engine.hash_pandas_dataframe = fingerprint


def _as_text_where_mixed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each object column holding values other than text (pandas' hashing then
    takes it as NumPy text) given as Python text, missing values left missing."""
    from pandas.api.types import infer_dtype

    # By position: a frame may repeat a column's name.
    mixed = [
        position
        for position, dtype in enumerate(frame.dtypes)
        if dtype == object and infer_dtype(frame.iloc[:, position], skipna=True) not in ("string", "bytes", "empty")
    ]
    if not mixed:
        return frame
    out = frame.copy(deep=False)
    for position in mixed:
        out.isetitem(position, frame.iloc[:, position].map(str, na_action="ignore"))
    return out


def save_report(report: ValidationReport, path: str, storage_options: dict[str, Any] | None = None) -> str:
    """Write the report as JSON to ``path`` (local or a URL); returns ``path``."""
    atomic_write(path, json.dumps(report.to_dict(), indent=2, allow_nan=False).encode(), storage_options)
    return path


def quarantine(
    frame: pd.DataFrame,
    report: ValidationReport,
    directory: str,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Keep a rejected batch as ``<directory>/batch.parquet`` beside its ``validation.json``."""
    buffer = io.BytesIO()
    _arrow_writable(frame).to_parquet(buffer, index=False)
    atomic_write(join(directory, "batch.parquet"), buffer.getvalue(), storage_options)
    save_report(report, join(directory, "validation.json"), storage_options)
    return directory


def _arrow_writable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each object column Arrow cannot type (mixed values, integers beyond 64 bits)
    turned into strings."""
    import pyarrow as pa

    out = frame.copy()
    for name in frame.columns[frame.dtypes == object]:
        try:
            pa.array(frame[name], from_pandas=True)
        # OverflowError: a JSON source's counter beyond int64 (2**64 - 1 beside a -1) is an
        # object column of Python ints, which Arrow cannot hold as numbers.
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            out[name] = frame[name].astype("str")
    return out


def check_and_raise(
    frame: pd.DataFrame,
    job: JobConfig,
    *,
    window: tuple[datetime | None, datetime | None] = (None, None),
    suite_path: str | None = None,
    report_path: str,
    quarantine_dir: str,
    storage_options: dict[str, Any] | None = None,
    rows: RowNumbers = WINDOW_ROWS,
) -> ValidationReport:
    """Validate, save the report at ``report_path``; on failure quarantine the batch and raise
    :class:`~pipelines.errors.DataValidationError`. ``rows``: see :func:`validate_batch`; by
    default :data:`WINDOW_ROWS`. Its ``fix`` is the error's advice (by default, for a window)."""
    report = validate_batch(frame, job, window=window, suite_path=suite_path, rows=rows)
    save_report(report, report_path, storage_options)
    if report.success:
        return report
    kept = quarantine(frame, report, quarantine_dir, storage_options)
    fix = rows.fix or "fix the source data (or the job's validation settings) and re-run the interval."
    raise DataValidationError(
        f"{report.summary()}\nThe rejected batch is kept at {kept}; {fix}",
        report=report.to_dict(),
        quarantine_path=kept,
    )
