"""Naming of series: one series is one dimension group of one job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote

ALL_SERIES = "all"


def series_key(dimensions: Sequence[str], values: Sequence[object] | Mapping[str, object]) -> str:
    """``"region=eu,host=a"`` for a dimension group, ``"all"`` when the job has no dimensions."""
    if not dimensions:
        return ALL_SERIES
    if isinstance(values, Mapping):
        values = [values[d] for d in dimensions]
    return ",".join(f"{d}={v}" for d, v in zip(dimensions, values, strict=True))


def parse_series_key(key: str, dimensions: Sequence[str]) -> dict[str, str]:
    """Inverse of :func:`series_key` (values come back as strings)."""
    if not dimensions:
        return {}
    parts = dict(part.split("=", 1) for part in key.split(","))
    return {d: parts[d] for d in dimensions}


def series_slug(key: str) -> str:
    """A file-system-safe, reversible name for a series (used for directories)."""
    return quote(key, safe="=,-_.")
