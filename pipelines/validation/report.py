"""A GX validation result turned into what an operator needs: which check failed, on which
column, how many values, some of them and the rows holding them; plus a JSON form."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.json_values import json_safe

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult

#: How many unexpected values and rows a check keeps.
SAMPLE_SIZE = 5


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
        column = ", ".join(_columns(kwargs)) or None
        outcome = result.result or {}
        error = _exception_message(result.exception_info or {})
        if error:
            detail = f"error: {error}"
        elif "observed_value" in outcome:
            detail = f"observed {json_safe(outcome['observed_value'])}"
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

    @property
    def failed(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.success]

    def summary(self) -> str:
        """A header line, then one line per failed check."""
        start, end = (bound or "unbounded" for bound in self.window)
        header = (
            f"job {self.job}: validation of {self.rows} rows in window {start} .. {end} "
            f"failed {len(self.failed)} of {len(self.checks)} checks"
        )
        return "\n".join([header, *(f"  - {check.describe()}" for check in self.failed)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "success": self.success,
            "rows": self.rows,
            "window": list(self.window),
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
) -> ValidationReport:
    """The report of ``result``; ``keys`` (the batch's timestamp and dimension columns, rows
    numbered as GX numbered them) locate each sampled row in the source; ``missing_column_hint``
    says, for a column the source lacks, what to check (by default the job file); ``columns``, the
    batch's, let an expectation of the suite file that names another column say so; ``more`` are
    checks run outside GX, reported after GX's. The checks' ``sample_rows`` are positions in the
    batch; the report numbers them as ``numbers`` says."""
    checks = [CheckResult.from_gx(one) for one in result.results]
    located = keys is not None and not keys.empty
    # A job's column the source lacks is explained by its failed existence check.
    explained = {check.column for check in checks if check.expectation == "expect_column_to_exist" and not check.success}
    for one, check in zip(result.results, checks, strict=True):
        absent = [
            name
            for name in _columns(one.expectation_config.kwargs)
            if columns is not None and name not in columns and name not in explained
        ]
        if absent and not check.success:
            # GX only says the column does not exist; the fix is in the suite file, not the data.
            check.detail = (
                f"{check.detail + '; ' if check.detail else ''}the batch has no column {', '.join(absent)}: "
                f"it has only {', '.join(map(str, columns or []))}; correct the column's name in the expectation "
                "suite (validation.suite in the job file), or remove the expectation"
            )
        if check.expectation == "expect_column_to_exist" and not check.success and not check.detail:
            # Sources read only the job's columns, so the batch cannot list the source's own.
            check.detail = (
                missing_column_hint(check.column or "")
                if missing_column_hint
                else "the source gave no such column: check its spelling in the job file against the source"
            )
        if located:
            check.sample_where = [_where(keys, row) for row in check.sample_rows if 0 <= row < len(keys)]
    for check in more:
        if located:
            check.sample_where = [_where(keys, row) for row in check.sample_rows if 0 <= row < len(keys)]
        checks.append(check)
    for check in checks:
        if check.sample_rows:
            check.sample_rows = [numbers.first + row for row in check.sample_rows]
            check.rows_of = numbers.of
    return ValidationReport(
        job=job,
        success=all(check.success for check in checks),
        checks=checks,
        rows=rows,
        window=window,
        gx_result=json_safe(result.to_json_dict()),
    )


def _columns(kwargs: dict[str, Any]) -> list[str]:
    """The columns an expectation checks: ``column``, ``column_list``, or a pair's ``column_A`` and ``column_B``."""
    if kwargs.get("column"):
        return [kwargs["column"]]
    return list(kwargs.get("column_list") or []) or [kwargs[name] for name in ("column_A", "column_B") if kwargs.get(name)]


def _where(keys: pd.DataFrame, row: int) -> str:
    """``column=value`` for each key column of ``row``, values as read (a missing one as null)."""
    values = {name: json_safe(value) for name, value in keys.iloc[row].items()}
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
