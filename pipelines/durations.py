"""Durations written in job files (``15min``, ``1h``, ``28d``, ``1w``).

Hand-written rather than pandas' parser because job files are validated while Airflow parses
DAG files, where importing pandas would slow every parse; the accepted grammar is small.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {
    "s": "seconds",
    "sec": "seconds",
    "min": "minutes",
    "m": "minutes",
    "h": "hours",
    "d": "days",
    "D": "days",
    "w": "weeks",
    "W": "weeks",
}
_PATTERN = re.compile(r"^\s*(\d+)\s*(s|sec|min|m|h|d|D|w|W)\s*$")
#: The longest span pandas can hold (``pd.Timedelta.max``, about 292 years): every duration ends
#: up in pandas arithmetic, where a longer one would overflow far from the job file that gave it.
_LONGEST = timedelta(microseconds=(2**63 - 1) // 1000)


def parse_duration(text: str) -> timedelta:
    """Parse ``"<integer><unit>"`` with unit one of s, min, h, d, w; raise ValueError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        # YAML reads `frequency: 3600` as a number, and an unquoted `1:30` as the number 90
        # (sexagesimal, YAML 1.1): the unit the writer meant is unknown, so it must be written.
        raise ValueError(
            f"{text!r} is a number without a unit: write the unit, as in '{text}s' (seconds) or '{text}min' (minutes); "
            "units are s, min, h, d, w (e.g. '15min', '1h', '28d'), and an unquoted 1:30 is the number 90 to YAML"
        )
    match = _PATTERN.match(str(text))
    if not match:
        raise ValueError(
            f"{text!r} is not a duration: write an integer and a unit, "
            "one of s, min, h, d, w (e.g. '15min', '1h', '28d')"
        )
    amount, unit = int(match.group(1)), match.group(2)
    if amount <= 0:
        raise ValueError(f"{text!r} must be a positive duration")
    try:
        duration = timedelta(**{_UNITS[unit]: amount})
    except OverflowError:  # beyond timedelta's range: pydantic reports only ValueError with the field path
        duration = None
    if duration is None or duration > _LONGEST:
        raise ValueError(f"{text!r} is too long a duration; the longest is {_LONGEST.days} days")
    return duration



def duration_text(value: timedelta) -> str:
    """``value`` as a job file writes it (``2h``, ``90min``, ``3d``): what :func:`parse_duration`
    reads back, in the largest unit that divides it (seconds rounded up)."""
    seconds = math.ceil(value.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def rough_duration_text(seconds: float) -> str:
    """``seconds`` as people read a time taken or left: 45s, 12min 5s, 3h 20min (not a job file's
    duration: :func:`duration_text` is exact)."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}min {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}min"


def rows_spanned(duration: str | timedelta, step: timedelta) -> int:
    """Rows ``duration`` spans at one row per ``step``, rounded up (``"1d"`` at 5 minutes: 288)."""
    return math.ceil((parse_duration(duration) if isinstance(duration, str) else duration) / step)
