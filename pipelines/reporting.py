"""Readable summaries of runs for task logs and the terminal."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of ``rows`` (dicts), one line per row, columns aligned."""
    if not rows:
        return "(nothing)"
    if not columns:
        # Every row's keys, not only the first's: a train run's failed series ({"series": ..., "failed":
        # True} after the results) showed as a row of blanks, its "failed" column dropped.
        nested = {key for row in rows for key, value in row.items() if isinstance(value, (dict, list))}
        columns = [key for key in dict.fromkeys(key for row in rows for key in row) if key not in nested]
    columns = list(columns)
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    # One line a row: a reason of several lines (an error message) broke the table in a task's log.
    return "" if value is None else " ".join(str(value).splitlines())


def log_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    log.info("%s\n%s", title, format_table(rows, columns))
