"""A GX validation result turned into what an operator needs: which check failed, on which
column, how many values, some of them and the rows holding them; plus a JSON form."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.errors import cut_middle
from pipelines.json_values import json_safe

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult

#: How many unexpected values and rows a check keeps.
SAMPLE_SIZE = 5

#: How much of one text value a report shows, its start and its end: a csv cell can hold
#: megabytes (an HTML error page pasted in), which the report, the task log and the run's error
#: echoed whole, several times. The end tells apart long values that begin alike (host names).
SHOWN_CHARS = 60
_HEAD, _TAIL = 40, 20

_SHORTENED = re.compile(rf".{{{_HEAD}}}… \([\d,]+ characters left out\) ….{{{_TAIL}}}", re.DOTALL)


def shortened(value: Any) -> Any:
    """``value`` (JSON-safe) with each text longer than :data:`SHOWN_CHARS` cut in the middle, as
    job files' errors cut a long value. Text it cut already is kept as it is: the batch GX sees
    holds feature text cut so (see ``suite.prepare_batch``)."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS and not _SHORTENED.fullmatch(value):
        return cut_middle(value, _HEAD, _TAIL)
    if isinstance(value, list):
        return [shortened(item) for item in value]
    if isinstance(value, dict):
        return {key: shortened(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class RowNumbers:
    """How a report numbers the rows of a batch: its first row is ``first``, and ``of`` says
    what the numbers count, as the report's messages show it (e.g. "the input file (row 1 = its
    first data row)"). The default, positions in the batch from 0 and unsaid, suits a caller that
    says it itself (a web call's points are "numbered from 0").

    A batch is often part of something larger (a chunk of a file, a window of a table): the
    numbers must be those the user can find there, with the same convention as other errors.
    """

    first: int = 0
    of: str | None = None
    #: What the batch is, for the report's header, when "N rows in window ..." would not let the
    #: user find it: e.g. "rows 33 to 64 of input file 'in.csv' (chunk 2 of 4)". The caller
    #: that knows how the rows are numbered is the one that knows what they are part of.
    batch: str | None = None
    #: What to do when the batch is rejected, for :func:`~pipelines.validation.check_and_raise`'s
    #: error (None: fix the source and re-run the interval, as for a scheduled window).
    fix: str | None = None


@dataclass
class CheckResult:
    """The outcome of one expectation.

    ``column`` is the checked column, the columns joined by ", " for multi-column checks, or
    None for table checks. ``sample_rows`` are the rows numbered as ``rows_of`` says (None:
    0-based positions in the batch; see :class:`RowNumbers`) and ``sample_where`` says where each
    of them is in the source (its timestamp and dimensions as read), since a position in a
    window's batch is hard to find in a file or table. ``detail`` is the observed value of checks
    without per-row results, or the error GX raised.
    """

    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    sample_values: list[Any] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)
    detail: str | None = None
    sample_where: list[str] = field(default_factory=list)
    rows_of: str | None = None

    @classmethod
    def from_gx(cls, result: ExpectationValidationResult) -> CheckResult:
        config = result.expectation_config
        kwargs = config.kwargs
        column = ", ".join(expectation_columns(kwargs)) or None
        outcome = result.result or {}
        error = _exception_message(result.exception_info or {})
        if error:
            detail = f"error: {error}"
        elif "observed_value" in outcome:
            detail = f"observed {json_safe(outcome['observed_value'])}{_expected_range(kwargs) if not result.success else ''}"
        else:
            detail = None
        count = outcome.get("unexpected_count")
        return cls(
            expectation=config.type,
            column=column,
            success=bool(result.success),
            unexpected_count=None if count is None else int(count),
            sample_values=json_safe(list(outcome.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]),
            sample_rows=[int(row) for row in list(outcome.get("partial_unexpected_index_list") or [])[:SAMPLE_SIZE]],
            detail=detail,
        )

    def describe(self) -> str:
        """One line: expectation, column, count, sample values and rows, detail."""
        parts = [self.expectation + (f" on {self.column}" if self.column else "")]
        if self.unexpected_count is not None:
            parts.append(f"{self.unexpected_count} unexpected")
        if self.sample_values:
            # Non-ASCII values as they are: "\u00e9" in a message is hard to match with the source's "é".
            parts.append(f"sample values {json.dumps(self.sample_values, ensure_ascii=False)}")
        if self.sample_rows:
            where = f" ({'; '.join(self.sample_where)})" if self.sample_where else ""
            of = f" of {self.rows_of}" if self.rows_of else ""
            parts.append(f"at rows {self.sample_rows}{of}{where}")
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


@dataclass
class ValidationReport:
    """The validation of one batch of one job; ``gx_result`` is GX's own result, JSON-safe."""

    job: str
    success: bool
    checks: list[CheckResult]
    rows: int
    window: tuple[str | None, str | None]
    gx_result: dict[str, Any] = field(default_factory=dict, repr=False)
    #: What the batch is (see :attr:`RowNumbers.batch`); None: its rows in its window.
    batch: str | None = None

    @property
    def failed(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.success]

    def summary(self) -> str:
        """A header line, then one line per failed check."""
        start, end = (bound or "unbounded" for bound in self.window)
        # A chunk of a one-off file is named as such: the window then spans the whole file, and
        # "32 rows in window ..." said neither which file nor which of its rows.
        what = self.batch or f"{self.rows} rows in window {start} .. {end}"
        header = f"job {self.job}: validation of {what} failed {len(self.failed)} of {len(self.checks)} checks"
        return "\n".join([header, *(f"  - {check.describe()}" for check in self.failed)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "success": self.success,
            "rows": self.rows,
            "window": list(self.window),
            "batch": self.batch,
            "checks": [asdict(check) for check in self.checks],
            "gx_result": self.gx_result,
        }


def build_report(
    result: ExpectationSuiteValidationResult,
    *,
    job: str,
    rows: int,
    window: tuple[str | None, str | None],
    keys: pd.DataFrame | None = None,
    missing_column_hint: Callable[[str], str] | None = None,
    columns: Collection[str] | None = None,
    more: Sequence[CheckResult] = (),
    numbers: RowNumbers = RowNumbers(),
    number_hint: Callable[[dict[str, str]], str] | None = None,
    suite: str | None = None,
) -> ValidationReport:
    """The report of ``result``; ``keys`` (the batch's timestamp and dimension columns, rows
    numbered as GX numbered them) locate each sampled row in the source; ``missing_column_hint``
    says, for a column the source lacks, what to check (by default the job file); ``columns``, the
    batch's (the job's columns it has: sources read no others), let an expectation of the suite
    file ``suite`` that names another column say so; ``more`` are
    checks run outside GX, reported after GX's. The checks' ``sample_rows`` are positions in the
    batch; the report numbers them as ``numbers`` says. When a feature's values that are not
    numbers all look like numbers as a locale writes them ("1,5", "1,234.5", "1.234,5"),
    ``number_hint`` says how to set the csv options that read them, given as ``{"decimal": ","}``
    (None: nothing is said)."""
    for one in result.results:
        if one.result:
            # GX's own JSON form raises on values it does not know (a Timedelta of an interval
            # column, a UUID): the report would crash where it should name them.
            one.result = shortened(json_safe(one.result))
    checks = [CheckResult.from_gx(one) for one in result.results]
    located = keys is not None and not keys.empty
    # A job's column the source lacks is explained by its failed existence check.
    explained = {check.column for check in checks if check.expectation == "expect_column_to_exist" and not check.success}
    for one, check in zip(result.results, checks, strict=True):
        absent = [
            name
            for name in expectation_columns(one.expectation_config.kwargs)
            if columns is not None and name not in columns and name not in explained
        ]
        if absent and not check.success:
            # GX only says the column does not exist; the fix is in the suite file, not the data. The
            # column may well be in the source: "correct its name" alone sent users looking for a typo.
            check.detail = (
                f"{check.detail + '; ' if check.detail else ''}the batch has no column {', '.join(absent)}: "
                f"it has only {', '.join(map(str, columns or []))} (a source reads only the job's timestamp, "
                f"dimension and feature columns); correct the column's name in the expectation suite"
                f"{f' {suite}' if suite else ''} (validation.suite in the job file), or remove the expectation"
            )
        if check.expectation == "expect_column_to_exist" and not check.success and not check.detail:
            # Sources read only the job's columns, so the batch cannot list the source's own.
            check.detail = (
                missing_column_hint(check.column or "")
                if missing_column_hint
                else "the source gave no such column: check its spelling in the job file against the source"
            )
        advice = _number_advice(check.sample_values, number_hint) if number_hint and check.expectation == _TYPE_CHECK else None
        if advice and not check.success:
            check.detail = f"{check.detail + '; ' if check.detail else ''}{advice}"
        if located:
            check.sample_where = [_where(keys, row) for row in check.sample_rows if 0 <= row < len(keys)]
    for check in more:
        check.sample_values = shortened(check.sample_values)
        if located:
            check.sample_where = [_where(keys, row) for row in check.sample_rows if 0 <= row < len(keys)]
        checks.append(check)
    for check in checks:
        if check.sample_rows:
            check.sample_rows = [numbers.first + row for row in check.sample_rows]
            check.rows_of = numbers.of
    _explain_untyped([(expectation_columns(one.expectation_config.kwargs), check) for one, check in zip(result.results, checks)])
    return ValidationReport(
        job=job,
        success=all(check.success for check in checks),
        checks=checks,
        rows=rows,
        window=window,
        gx_result=json_safe(result.to_json_dict()),
        batch=numbers.batch,
    )


#: The built-in check that a feature holds numbers (see ``suite.build_suite``).
_TYPE_CHECK = "expect_column_values_to_be_in_type_list"


#: Numbers as a locale writes them, which read as text where "." is the decimal point and nothing
#: groups thousands: what each is said to be, and the csv options that read it.
_GROUPED = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?")  # 1,234.5 or 12,345,678
_ONE_GROUP = re.compile(r"[-+]?\d{1,3},\d{3}")  # 1,234: a decimal comma, or a thousands one
_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+")  # 1,5 or -0,25
_DOT_GROUPED = re.compile(r"[-+]?\d{1,3}(\.\d{3})+(,\d+)?")  # 1.234,5 or 12.345.678

_DECIMAL_COMMA_SAID = "these look like numbers written with a decimal comma (1,5 for 1.5)"


def _number_advice(values: list[Any], hint: Callable[[dict[str, str]], str]) -> str | None:
    """What ``values`` (a feature's sampled values that are not numbers) look like and what to
    set, when every one of them is a number as some locale writes it; else None: one sample of
    other text ("n/a", "slow") means the column holds more than a locale's numbers.

    "1,234" is ambiguous: told it was a decimal comma, a reader would take it for 1.234, a
    thousandth of the number a thousands comma means, so both readings are given.
    """
    texts = [value.strip() for value in values if isinstance(value, str)]
    if not texts or len(texts) < len(values):
        return None
    if all(_ONE_GROUP.fullmatch(text) for text in texts):
        return (
            f"{_DECIMAL_COMMA_SAID} or with a comma between thousands (1,234 for 1234), which the samples cannot tell "
            f"apart: for decimal commas {hint({'decimal': ','})}; for thousands {hint({'thousands': ','})}"
        )
    if all(_GROUPED.fullmatch(text) for text in texts):
        return f"these look like numbers with a comma between thousands (1,234.5 for 1234.5): {hint({'thousands': ','})}"
    if all(_DECIMAL_COMMA.fullmatch(text) for text in texts):
        return f"{_DECIMAL_COMMA_SAID}: {hint({'decimal': ','})}"
    if all(_DOT_GROUPED.fullmatch(text) or _DECIMAL_COMMA.fullmatch(text) for text in texts):
        return (
            "these look like numbers with a point between thousands and a decimal comma (1.234,5 for 1234.5): "
            f"{hint({'thousands': '.', 'decimal': ','})}"
        )
    return None


def _explain_untyped(checks: list[tuple[list[str], CheckResult]]) -> None:
    """Say why a check of GX (with the columns it checks) errored on a column holding values that
    are not numbers, in place of GX's error.

    A range check of the job's suite (``expect_column_values_to_be_between``) on a column with
    text in it cannot compare: GX raises "Column values, min_value, and max_value must either be
    None or of the same type", which reads like a fault of the suite, beside the type check that
    names the actual values. The check stays failed, since the column's range was not checked (a
    value out of range may hide among its numbers); the line says so and points to the values.
    """
    untyped = {
        check.column: check for _, check in checks if check.expectation == _TYPE_CHECK and not check.success and check.column
    }
    for columns, check in checks:
        if check.success or check.expectation == _TYPE_CHECK or not (check.detail or "").startswith("error: "):
            continue
        causes = [untyped[name] for name in columns if name in untyped]
        if not causes:
            continue
        why = "; ".join(_not_numbers(cause) for cause in causes)
        only = " and ".join(cause.column or "" for cause in causes)
        check.detail = f"not checked: {why}; it runs once {only} {'hold' if len(causes) > 1 else 'holds'} only numbers"


def _not_numbers(check: CheckResult) -> str:
    """What the failed type ``check`` found, briefly: its own line gives the count and the rows."""
    values = ", ".join(dict.fromkeys(json.dumps(value, ensure_ascii=False) for value in check.sample_values))
    return f"{check.column} holds values that are not numbers ({values}; see {_TYPE_CHECK} on {check.column})"


def _expected_range(kwargs: dict[str, Any]) -> str:
    """", expected at least 10" for a check of a measure between bounds; "" when it has none. A
    failed row count said only "observed 0", not how many rows the job wants."""
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    low_said = f"{'more than' if kwargs.get('strict_min') else 'at least'} {json_safe(low)}" if low is not None else None
    high_said = f"{'less than' if kwargs.get('strict_max') else 'at most'} {json_safe(high)}" if high is not None else None
    said = " and ".join(part for part in (low_said, high_said) if part)
    return f", expected {said}" if said else ""


def expectation_columns(kwargs: dict[str, Any]) -> list[str]:
    """The columns an expectation checks: ``column``, ``column_list``, or a pair's ``column_A`` and ``column_B``."""
    if kwargs.get("column"):
        return [kwargs["column"]]
    return list(kwargs.get("column_list") or []) or [kwargs[name] for name in ("column_A", "column_B") if kwargs.get(name)]


def _where(keys: pd.DataFrame, row: int) -> str:
    """``column=value`` for each key column of ``row``, values as read (a missing one as null)."""
    values = {name: shortened(json_safe(value)) for name, value in keys.iloc[row].items()}
    return ", ".join(f"{name}={'null' if value is None else value}" for name, value in values.items())


def _exception_message(info: dict[str, Any]) -> str | None:
    # GX reports an error of the expectation itself flat, and errors of its metrics keyed by metric.
    if "raised_exception" in info:
        return info["exception_message"] if info["raised_exception"] else None
    messages = {
        str(one.get("exception_message"))
        for one in info.values()
        if isinstance(one, dict) and one.get("raised_exception")
    }
    return "; ".join(sorted(messages)) or None
