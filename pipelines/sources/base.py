"""What every source shares: the protocol, the window and its messages, timestamp parsing.

A window is ``[start, end)``: start inclusive, end exclusive, both UTC-aware; ``None`` leaves
that side unbounded.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from pipelines.config import JobConfig
from pipelines.errors import SourceError

log = logging.getLogger(__name__)

#: What an unbounded side of the window is bound as in a query that always compares both
#: sides; the widest range that Python, PostgreSQL, SQLite text and BigQuery TIMESTAMP share.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


class Source(Protocol):
    """Reads one job's rows in a window. The registry builds each source from its job."""

    def __init__(self, job: JobConfig) -> None: ...

    def read(self, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        """The job's columns that exist, raw as stored, rows in ``[start, end)``, in source order.

        Missing columns are left to validation; an empty window gives an empty frame.
        """
        ...


def utc_bound(value: datetime | None) -> pd.Timestamp | None:
    """``value`` as a UTC timestamp; a naive bound is a caller's bug, not data to guess about."""
    if value is None:
        return None
    bound = pd.Timestamp(value)
    if bound.tzinfo is None:
        raise ValueError(f"window bounds must be timezone-aware datetimes, got {value!r}")
    return bound.tz_convert("UTC")


def bounds(start: pd.Timestamp | None, end: pd.Timestamp | None) -> tuple[datetime, datetime]:
    """The window for a query with both ``start`` and ``end`` parameters: aware UTC datetimes."""
    return (
        EARLIEST if start is None else start.to_pydatetime(),
        LATEST if end is None else end.to_pydatetime(),
    )


def describe_window(start: datetime | None, end: datetime | None) -> str:
    return f"[{start.isoformat() if start else 'unbounded'}, {end.isoformat() if end else 'unbounded'})"


def source_error(
    job: JobConfig,
    where: str,
    start: datetime | None,
    end: datetime | None,
    problem: str,
    todo: str,
    *,
    kind: type[SourceError] = SourceError,
) -> SourceError:
    """A :class:`SourceError` naming the job, the source and the window, then what to do;
    ``kind=SourceDataError`` when the rows were read but cannot be used (no retry can help)."""
    # A whole read (a one-off input, detect's files) has no window: "for window [unbounded,
    # unbounded)" said nothing but noise.
    window = f" for window {describe_window(start, end)}" if start is not None or end is not None else ""
    return kind(f"job {job.name!r}: cannot read {where}{window}: {problem}. {todo}")


def job_columns(frame: pd.DataFrame, job: JobConfig) -> pd.DataFrame:
    """The job's columns that ``frame`` has, in the job's order (timestamp, dimensions, features)."""
    return frame[[column for column in job.columns if column in frame.columns]]


def bytes_as_text(value: object) -> object:
    """A binary value (an SQL BINARY/VARBINARY/BLOB, a Parquet binary column) as text: decoded
    when it is valid UTF-8, else ``0x`` and its bytes in upper-case hex (``0xFFFE``), as SQL
    clients show binary; any other value as it is.

    One naming everywhere: grouping by ``astype("string")`` decoded valid bytes (and raised a
    bare UnicodeDecodeError on others) while storing by ``str()`` wrote ``b'eu'``, so series keys
    and validation named one value two ways.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + data.hex().upper()
    return value


def binary_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the binary values of its object columns named by :func:`bytes_as_text`;
    ``frame`` itself when it has none (the check runs in C, cheap on a large window)."""
    out = frame
    for name in frame.columns:
        if _has_binary(frame[name]):
            if out is frame:
                out = frame.copy(deep=False)
            out[name] = frame[name].map(bytes_as_text)
    return out


def _has_binary(column: pd.Series) -> bool:
    kind = pd.api.types.infer_dtype(column, skipna=True) if column.dtype == object else ""
    return kind == "bytes" or kind.startswith("mixed")  # mixed-integer: bytes beside ints


#: Years whose every instant pandas' nanosecond timestamps hold (they stop in 1677 and 2262):
#: data, windows and labels outside them cannot be resampled, scored or read back.
SUPPORTED_YEARS = (1678, 2261)


#: Text pandas reads as the time it runs at.
_CLOCK_WORDS = ["now", "today"]


#: Longer than any date-time as text (2024-03-03T14:00:00.123456789+05:30 is 35 characters).
LONGEST_TIMESTAMP = 64


def parse_timestamps(
    values: pd.Series, form: str | None = None, *, refuse_day_first: bool = False, doubt: DayFirstDoubt | None = None
) -> pd.Series:
    """``values`` as UTC timestamps, NaT where missing or unparseable.

    Naive timestamps are taken as UTC; aware ones are converted to UTC. Text is parsed with
    ``form`` (the job's ``timestamp_format``) when given, and a value that does not follow it is
    unparseable. Without it, text is parsed value by value (``format="mixed"``, as the rest of the
    library does; ISO 8601, or one format that reads alike, faster); text longer than
    :data:`LONGEST_TIMESTAMP` is unparseable, and so is text that would be dated by the clock
    (``now``, ``today``, a time without a date). Binary values are read as their text
    (:func:`bytes_as_text`). Numbers are not parsed: their unit (seconds? milliseconds?) would be
    a guess, so they count as unparseable; only with ``form`` are integers read, as their digits.

    Raises ValueError when naive and aware values are mixed: the zone of the naive ones would
    be a guess; with ``refuse_day_first``, :class:`DayFirstDates` (a ValueError) when, without
    ``form``, a numeric date can only be read day first (what sources ask for: the value-by-value
    reading of such a column is two readings at once). With ``refuse_day_first`` too, one warning
    when numeric dates are read month first but could as well be day first (see
    :class:`DayFirstDoubt`); given ``doubt``, or within :meth:`DayFirstDoubt.collecting`, a read of
    several parts (chunks, files) notes each part there instead, and warns once, when it has read
    them all (:meth:`DayFirstDoubt.warn`).
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    if form is not None and pd.api.types.is_integer_dtype(values.dtype):
        # A format of digits only (%Y%m%d%H%M) reads as integers from a database or a spreadsheet.
        values = values.astype("string")
    elif pd.api.types.is_numeric_dtype(values.dtype):
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    if refuse_day_first and doubt is None:
        doubt = _COLLECTING.get()
    text = (values.map(bytes_as_text) if _has_binary(values) else values).astype("string")
    # dateutil's time grows with the square of a text's length: one 1 MB cell held a worker for
    # 75 s, 16 MiB for hours. No date-time is that long, so such text is unparseable unread.
    text = text.where(~(text.str.len() > LONGEST_TIMESTAMP).fillna(False))
    # pandas reads these words as the clock's time (ISO 8601 included); no source means that.
    text = text.where(~text.isin(_CLOCK_WORDS))
    if form is not None:
        return _formatted_timestamps(text, form)
    fast = _iso_timestamps(text)
    if fast is not None:
        if refuse_day_first and doubt is not None and fast.notna().any():
            doubt.told = True  # ISO 8601 here, numeric dates in another part: written two ways, no guess at which
        return fast
    parsed = _one_format_timestamps(text)
    if parsed is None:
        # Only here can a date be day first: ISO 8601 is year first, and the one format is month first.
        if refuse_day_first:
            _refuse_day_first(text)
        parsed = _mixed_timestamps(text)
    if refuse_day_first:
        noted = doubt if doubt is not None else DayFirstDoubt()
        noted.note(text, parsed, values.name)
        if doubt is None:
            noted.warn()
    return parsed


def _formatted_timestamps(text: pd.Series, form: str) -> pd.Series:
    aware = "%z" in form
    parsed = pd.to_datetime(text, format=form, errors="coerce", utc=aware)
    return parsed if aware else parsed.dt.tz_localize("UTC")


#: A numeric date (13/01/2024, 13.01.24, 13-01-2024) whose first two numbers can be day and month.
_NUMERIC_DATE = r"^\s*(\d{1,2})([/.-])(\d{1,2})\2\d{2}(?:\d{2})?(?!\d)"


class DayFirstDates(ValueError):
    """Numeric dates written day first, found without a ``timestamp_format``: pandas reads
    01/02/2024 as 2 January and 13/01/2024 (no month 13) as 13 January, so a day-first column
    was read both ways, silently, and its first twelve days of each month landed in other months.

    ``position`` is the first such value's, counted from 0 in the values parsed."""

    todo = (
        "Set timestamp_format in the job file to how the dates are written, e.g. timestamp_format: '%d/%m/%Y %H:%M' "
        "(quoted: YAML does not take a plain value starting with %), or write them as ISO 8601 (2024-01-13T10:00:00Z)"
    )

    def __init__(self, position: int, value: str, day: int, count: int) -> None:
        self.position, self.value, self.count = position, value, count
        super().__init__(
            f"{value!r} is a date written day first ({day} is no month; {count} value(s) are written so), and dates such "
            "as 01/02/2024 would be read month first (2 January) unless the job sets timestamp_format"
        )


def _refuse_day_first(text: pd.Series) -> None:
    """Raise :class:`DayFirstDates` when a value of ``text`` is a numeric date whose first number
    (above 12) can only be a day: reading the others month first would be a guess that the file
    itself contradicts."""
    parts = text.str.extract(_NUMERIC_DATE)
    if parts.empty or parts[0].isna().all():
        return
    first, second = pd.to_numeric(parts[0]), pd.to_numeric(parts[2])
    day_first = ((first > 12) & (second <= 12)).fillna(False).to_numpy()
    if day_first.any():
        position = int(day_first.argmax())
        raise DayFirstDates(position, str(text.iloc[position]), int(first.iloc[position]), int(day_first.sum()))


class DayFirstDoubt:
    """Whether the numeric dates (:data:`_NUMERIC_DATE`) of one read, read month first, could as
    well be day first, judged over every part of one read (the chunks of a one-off input, the files
    of a window and the rows kept) as over one column; :meth:`warn` logs it once, at the read's end.

    They could when both first numbers are at most 12 on every row (one above 12 tells the order:
    in second place month first is proven, in first :func:`_refuse_day_first` refused) and the first
    is not the same on every row. With the first the same, month first reads days of one month, day
    first the same day of several months: the data speak for month first, unless they are monthly.
    Warned of is what continuous data written day first over the first 12 days of a month look like,
    which month first reads as days of up to 12 months apart.

    Judged part by part, a read of ten chunks warned up to ten times, warned of chunks that a later
    one proved month first (13 in second place), and never warned when each chunk held one date
    (chunks of a day each) although the file went from day to day. So parts are noted and the
    warning waits for the read's end: all it keeps is whether the order was told and the first value
    read in each month (at most 12), so memory stays that of one chunk. A later part that proves
    the dates day first raises before the end, and its error stands alone.

    Read from the parsed timestamps, whose month and day are the two numbers where the text is such
    a date (pandas reads them month first): a few vectorised passes, the text matched at the first
    value of each month only, so that a column of ISO dates or one with days past 12 costs a look
    at its days.
    """

    def __init__(self) -> None:
        self.told = False  # the data say the order (a day past 12), or are written some other way
        self.column: object = None
        #: The first value read in each month: (its two numbers alike, the value, its separator).
        self.firsts: dict[int, tuple[bool, str, str]] = {}

    def note(self, text: pd.Series, parsed: pd.Series, column: object) -> None:
        """Take in one part of the read: ``text`` as written, ``parsed`` month first from it."""
        self.column = column
        held = parsed.dropna()
        if self.told or held.empty:
            return
        days = held.dt.day.to_numpy()
        if days.max() > 12:
            self.told = True
            return
        months = held.dt.month.to_numpy()
        rows = np.flatnonzero(parsed.notna().to_numpy())  # by position: an index may repeat labels
        for at in np.unique(months, return_index=True)[1]:
            if int(months[at]) in self.firsts:
                continue
            value = str(text.iloc[rows[at]])
            found = re.match(_NUMERIC_DATE, value)
            if not found or (int(found[1]), int(found[3])) != (months[at], days[at]):
                self.told = True  # another way of writing dates, which the numbers above say nothing of
                return
            self.firsts[int(months[at])] = (found[1] == found[3], value, found[2])

    @contextmanager
    def collecting(self) -> Iterator[DayFirstDoubt]:
        """Within it, :func:`parse_timestamps` notes here what it would warn of: a source's reader
        parses its files (to cut the window) where extraction cannot pass a doubt along, and saw
        more than the rows extraction keeps (every row of the files, not one day of them)."""
        token = _COLLECTING.set(self)
        try:
            yield self
        finally:
            _COLLECTING.reset(token)

    def warn(self) -> None:
        """Log the warning when every part read could as well be day first."""
        if self.told or len(self.firsts) < 2:
            return
        _, example, separator = min(self.firsts.values())  # one whose two numbers differ, if any: 03/04/2024, not 03/03/2024
        form = separator.join(("%d", "%m", "%Y"))
        log.warning(
            "timestamp column %r: numeric dates such as %r are read month first; set timestamp_format (e.g. '%s %%H:%%M') if "
            "it is day first (every date's first two numbers are at most 12, so nothing in the data tells which is the day)",
            self.column, example, form,
        )


#: The doubt of the read under way (:meth:`DayFirstDoubt.collecting`), if any.
_COLLECTING: ContextVar[DayFirstDoubt | None] = ContextVar("day_first_doubt", default=None)


def _mixed_timestamps(text: pd.Series) -> pd.Series:
    """:func:`parse_timestamps` of ``text`` value by value: the reference every faster path equals."""
    parsed = _value_by_value(text)
    return parsed.where(~_dated_by_the_clock(text, parsed))


def _dated_by_the_clock(text: pd.Series, parsed: pd.Series) -> pd.Series:
    """True where ``parsed`` took its date from the day it ran: a time without a date (``10:30``
    was today at 10:30; a date without a year is read in year 1, which validation refuses).

    Such a row was dated by the clock, outside any past window, and dropped there unseen; as
    NaT it stays for validation, which names it. Only values parsed within a year of today that
    do not write that year are asked, each once, whether another default changes their year.
    """
    year = pd.Timestamp.now(tz="UTC").year
    years = [str(y) for y in (year - 1, year, year + 1)]
    asked = parsed.dt.year.isin([int(y) for y in years]).fillna(False) & ~text.str.contains("|".join(years)).fillna(True)
    if not asked.any():
        return pd.Series(False, index=text.index)
    verdicts = {value: _year_by_default(value) for value in text[asked].unique()}
    return asked & text.map(verdicts).fillna(False).astype(bool)


def _year_by_default(value: str) -> bool:
    from dateutil import parser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown zone names: pandas read those as NaT already
            return parser.parse(value, default=datetime(1904, 1, 1)).year != parser.parse(value, default=datetime(1970, 1, 1)).year
    except (ValueError, OverflowError):
        return False  # dateutil cannot tell; pandas' reading stands


def _value_by_value(text: pd.Series) -> pd.Series:
    try:
        parsed = pd.to_datetime(text, format="mixed", errors="coerce")
    except ValueError:
        # pandas refuses several zones without utc=True, and cannot say whether some values
        # had none; several offsets (e.g. summer time) are fine, naive among aware is not.
        parsed = pd.to_datetime(text, format="mixed", errors="coerce", utc=True)
        naive = text[parsed.notna()].map(lambda value: pd.Timestamp(value).tzinfo is None)
        if naive.any():
            raise ValueError(
                f"{int(naive.sum())} of {len(naive)} timestamps have no time zone while the others "
                f"have one (first naive: {text[naive.idxmax()]!r})"
            ) from None
        return parsed
    return parsed.dt.tz_localize("UTC") if parsed.dt.tz is None else parsed.dt.tz_convert("UTC")


#: Values below which a column is parsed value by value: fast enough, and then nothing is guessed.
_ONE_FORMAT_MIN = 1000
#: Values of a column checked against the value-by-value parser when one format parsed them all.
_ONE_FORMAT_SAMPLE = 200


def _one_format_timestamps(text: pd.Series) -> pd.Series | None:
    """:func:`parse_timestamps` of ``text`` when every value has the format of the first, else None.

    Value by value, 100,000 times as ``%m/%d/%Y %H:%M`` took 5.9 s and as RFC 2822 10 s. The
    format is taken only where parsing with it cannot read a value otherwise than value by value
    does (which reads numeric dates month first): with a four-digit year and a day, month before
    day, no two-digit year and no zone name. A value it cannot read, or a sample read otherwise
    by the value-by-value parser, sends the whole column to that parser.
    """
    held = text.notna()
    if int(held.sum()) < _ONE_FORMAT_MIN:
        return None
    values = text[held]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a day-first guess warns; such a format is refused below
        form = guess_datetime_format(values.iloc[0])
    if form is None or not _reads_alike(form):
        return None
    aware = "%z" in form
    parsed = pd.to_datetime(text, format=form, errors="coerce", utc=aware)
    if (parsed.isna() & held).any():
        return None
    if not aware:
        parsed = parsed.dt.tz_localize("UTC")
    where = values.index[np.unique(np.linspace(0, len(values) - 1, _ONE_FORMAT_SAMPLE).astype(int))]
    if not parsed[where].equals(_mixed_timestamps(text[where])):
        return None
    return parsed


def _reads_alike(form: str) -> bool:
    """Whether parsing with ``form`` reads each value it accepts as the value-by-value parser does."""
    if "%Y" not in form or "%d" not in form or any(code in form for code in ("%y", "%Z", "%j", "%U", "%W")):
        return False
    return "%m" not in form or form.index("%m") < form.index("%d")


#: An ISO 8601 time of day followed by its zone (Z, +01:00, +0100 or +01): a time is required, so
#: the day of a date (2024-03-01) is not read as the offset -01.
_ZONED = r":\d{2}(?::\d{2})?(?:[.,]\d+)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"


def _iso_timestamps(text: pd.Series) -> pd.Series | None:
    """:func:`parse_timestamps` of ``text`` when every value is ISO 8601, else None.

    Value by value (``format="mixed"``) took 1.2 s a million aware timestamps and 5.2 s when
    their offsets change with summer time (each value's zone was then checked in Python); ISO
    8601, what sources mostly hold, parses at 0.2 s. Any value it cannot read sends the whole
    column to the value-by-value parser, so the result (and every error) stays that parser's.
    """
    held = text.notna()
    try:
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    except ValueError:  # several offsets (summer time), or naive among aware
        parsed = None
    if parsed is not None:
        if (parsed.isna() & held).any():
            return None
        return parsed.dt.tz_localize("UTC") if parsed.dt.tz is None else parsed.dt.tz_convert("UTC")
    try:
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    except ValueError:
        return None
    # With utc=True a naive value is taken as UTC: only every value written with its zone is fine.
    if (parsed.isna() & held).any() or not text[held].str.contains(_ZONED, regex=True).all():
        return None
    return parsed


def window_mask(timestamps: pd.Series, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.Series:
    """True for rows in ``[start, end)`` and for rows without a parsed timestamp.

    Rows without one are kept so that validation reports them with their row numbers instead
    of their silently vanishing.
    """
    inside = pd.Series(True, index=timestamps.index)
    if start is not None:
        inside &= timestamps >= start
    if end is not None:
        inside &= timestamps < end
    return inside | timestamps.isna()


@dataclass(frozen=True)
class TimestampZone:
    """Whether timestamps carry a time zone, told by the first that parsed: its row (counted from
    1 in the file, header excluded), its chunk (counted from 0) and the value as written."""

    aware: bool
    row: int
    value: str
    chunk: int = 0

    def describe(self) -> str:
        return f"chunk {self.chunk + 1} has them {'with' if self.aware else 'without'} (first at row {self.row}: {self.value!r})"


def first_zone(
    raw: pd.Series, parsed: pd.Series, *, chunk: int = 0, offset: int = 0, form: str | None = None
) -> TimestampZone | None:
    """The :class:`TimestampZone` of ``raw`` (``parsed`` by :func:`parse_timestamps` with ``form``,
    which has checked that its values agree), None when no value parsed; ``offset`` rows come before ``raw``."""
    found = parsed.notna().to_numpy()
    if not found.any():
        return None
    position = int(found.argmax())
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw.dtype):
        aware = isinstance(raw.dtype, pd.DatetimeTZDtype)
    elif form is not None:
        aware = "%z" in form  # every value parsed follows it
    else:
        # Parsed as parse_timestamps parses text, so both judge a value alike.
        aware = pd.to_datetime(raw.iloc[[position]].astype("string"), format="mixed").dt.tz is not None
    return TimestampZone(aware, offset + position + 1, str(raw.iloc[position]), chunk)
