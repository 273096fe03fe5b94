"""Synthetic anomalies injected into normal data, and how well a detector finds them.

Without labels, the only way to compare detectors (or parameters) on a series is to plant known
anomalies into data held back from fitting and see which detector flags them: spikes (one row)
and level shifts (a stretch of rows), sized in robust standard deviations of each feature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Robust standard deviations: clearly anomalous, yet not trivial for every model.
SPIKE_SIZE = 6.0
SHIFT_SIZE = 4.0
#: A level shift counts as found when flagged within its first rows: a detector that adapts to
#: the new level is right to stop flagging it later.
SHIFT_DETECTION_ROWS = 5
#: Rows of a planted level shift that are still news: flags after them are false alarms. A
#: shifted level that lasts is the new normal; a detector that keeps flagging it sends a stream
#: of alarms about one change, which is what people mute. 24 rows is seasonal_mad's default
#: level window (a day of hourly data), the time a level-following detector needs to adapt.
SHIFT_NEWS_ROWS = 24
#: Planted events scored one at a time per planting (:meth:`Injected.one_by_one`): each costs a
#: detection over the held-back rows, and a long tail holds a dozen events; four per planting
#: over five plantings judge twenty events, the shift among them every time.
ONE_BY_ONE_EVENTS = 4


def robust_scale(frame: pd.DataFrame) -> np.ndarray:
    """A robust spread of each feature (1.4826 MAD, falling back to std, then 1)."""
    values = frame.to_numpy(dtype="float64")
    median = np.nanmedian(values, axis=0)
    mad = 1.4826 * np.nanmedian(np.abs(values - median), axis=0)
    std = np.nanstd(values, axis=0)
    return np.where(mad > 0, mad, np.where(std > 0, std, 1.0))


@dataclass(frozen=True)
class Injected:
    """Data with planted anomalies: ``events`` are (first row, last row) pairs, inclusive.

    ``news`` are the parts of the events where a flag is right, when that is less than the whole
    event (a long planted level shift is news only at its start); None means the events.
    ``clean`` is the data before planting, when the events were planted (None for real labels):
    then each event can be scored on its own (:meth:`one_by_one`).
    """

    frame: pd.DataFrame
    events: list[tuple[int, int]]
    news: list[tuple[int, int]] | None = None
    clean: pd.DataFrame | None = None

    def one_by_one(self, most: int = ONE_BY_ONE_EVENTS) -> list[Injected]:
        """One copy of the clean data per planted event, holding that event alone, for at most
        ``most`` events spread over the planting (the first and the last among them); for real
        labels (no clean data), this data itself."""
        if self.clean is None:
            return [self]
        planted, clean = self.frame.to_numpy(), self.clean.to_numpy(dtype="float64")
        chosen = np.unique(np.linspace(0, len(self.events) - 1, min(most, len(self.events))).round().astype(int))
        news_of = self.news or self.events
        copies = []
        for (first, last), news in ((self.events[i], news_of[i]) for i in chosen):
            values = clean.copy()
            values[first : last + 1] = planted[first : last + 1]
            copies.append(Injected(_like(self.frame, values), [(first, last)], [news]))
        return copies

    @property
    def rows(self) -> np.ndarray:
        """Mask of every row inside an event."""
        return _mask(len(self.frame), self.events)

    @property
    def news_rows(self) -> np.ndarray:
        """Mask of the rows where a flag is right."""
        return _mask(len(self.frame), self.events if self.news is None else self.news)


def _mask(rows: int, ranges: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(rows, dtype=bool)
    for first, last in ranges:
        mask[first : last + 1] = True
    return mask


def inject_spikes(frame: pd.DataFrame, scale: np.ndarray, *, seed: int = 0) -> Injected:
    """Spikes of ±``SPIKE_SIZE`` scales on about 2 % of rows (at least 3), one feature each."""
    rng = np.random.default_rng(seed)
    count = min(max(3, len(frame) // 50), len(frame) - 1)
    rows = np.sort(rng.choice(np.arange(1, len(frame)), size=count, replace=False))
    columns = rng.integers(0, frame.shape[1], size=count)
    values = frame.to_numpy(dtype="float64", copy=True)
    values[rows, columns] += rng.choice([-1.0, 1.0], size=count) * SPIKE_SIZE * scale[columns]
    return Injected(_like(frame, values), [(int(r), int(r)) for r in rows], clean=frame)


def inject_anomalies(frame: pd.DataFrame, scale: np.ndarray, *, seed: int = 0) -> Injected:
    """Spikes on about 2 % of the rows of the first half and one level shift of ±``SHIFT_SIZE``
    scales over the last quarter (one feature), news for its first ``SHIFT_NEWS_ROWS`` rows."""
    rng = np.random.default_rng(seed)
    half = len(frame) // 2
    spikes = inject_spikes(frame.iloc[:half], scale, seed=seed)
    values = np.vstack([spikes.frame.to_numpy(), frame.iloc[half:].to_numpy(dtype="float64", copy=True)])
    start = len(frame) - max(len(frame) // 4, SHIFT_DETECTION_ROWS)
    column = int(rng.integers(0, frame.shape[1]))
    values[start:, column] += rng.choice([-1.0, 1.0]) * SHIFT_SIZE * scale[column]
    shift = (start, len(frame) - 1)
    news = (start, min(shift[1], start + SHIFT_NEWS_ROWS - 1))
    return Injected(_like(frame, values), [*spikes.events, shift], [*spikes.events, news], clean=frame)


def _like(frame: pd.DataFrame, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)


def event_f1(flagged: np.ndarray, injected: Injected) -> dict[str, float]:
    """Event-wise precision, recall and F1 of row flags against the planted events.

    An event is found when flagged at one of its first ``SHIFT_DETECTION_ROWS`` rows; a flag is
    right when it falls inside the news part of an event (:attr:`Injected.news_rows`).
    """
    return pooled_event_f1([flagged], [injected])


def pooled_event_f1(flags: list[np.ndarray], injected: list[Injected]) -> dict[str, float]:
    """:func:`event_f1` over several frames at once: events found among all events, right flags
    among all flags."""
    events = sum(len(part.events) for part in injected)
    found = sum(
        bool(flagged[first : min(last, first + SHIFT_DETECTION_ROWS - 1) + 1].any())
        for flagged, part in zip(flags, injected, strict=True)
        for first, last in part.events
    )
    flagged_rows = sum(int(flagged.sum()) for flagged in flags)
    right = sum(int((flagged & part.news_rows).sum()) for flagged, part in zip(flags, injected, strict=True))
    recall = found / events if events else 0.0
    precision = right / flagged_rows if flagged_rows else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


def plant_repeatedly(frame: pd.DataFrame, scale: np.ndarray, *, seed: int, times: int) -> list[Injected]:
    """:func:`inject_anomalies` ``times`` over, with seeds ``seed``, ``seed + 1``, …

    A held-back tail of a few hundred rows takes about four events per planting, so one
    planting's F1 moves in steps of a quarter with where the spikes happen to land; the mean
    over several plantings ranks detectors by how they find anomalies, not by one draw.
    """
    return [inject_anomalies(frame, scale, seed=seed + offset) for offset in range(times)]


def mean_event_f1(flags: list[np.ndarray], plantings: list[Injected]) -> dict[str, float]:
    """:func:`event_f1` of each planting's flags, averaged part by part."""
    parts = [event_f1(flagged, planted) for flagged, planted in zip(flags, plantings, strict=True)]
    return mean_of_parts(parts)


def detection_f1_by_planting(flag: Callable[[pd.DataFrame], np.ndarray], plantings: list[Injected]) -> list[dict[str, float]]:
    """How well ``flag`` (a frame -> row flags) finds the events of each planting, one
    precision / recall / F1 per planting; planted events are scored one at a time
    (:meth:`Injected.one_by_one`).

    A planting puts an event in about every 25 rows, far closer than real anomalies come. Scored
    together, a detector's answer to one event would also be its answer to the one before: a
    detector that stays quiet after a report (``context`` rested 150 rows, as CAD does) found one
    event of four on every planting of nyc_taxi's probation, and one that follows levels adapts
    to the previous spike. One at a time, each event is judged on clean rows around it, and a
    false alarm weighs against one event, not four, as it does where anomalies are rare.

    ``auto`` ranks detector kinds this way, planting by planting (its candidates meet the same
    events, so it can test their difference), and tuning scores its trials this way too: it
    compares kinds as well, and settings that react to nearby events differently (``context``'s
    ``rest``). With whole plantings it preferred the shortest rest and other kinds to ``context``:
    on NAB's seven-series tuning benchmark (docs/BENCHMARKS.md, "Tuning on NAB", before tuning
    faced a champion) the tuned models scored -6.0, and 36.9 with events one at a time.
    """
    parts = []
    for planted in plantings:
        copies = planted.one_by_one()
        parts.append(pooled_event_f1([np.asarray(flag(copy.frame)) for copy in copies], copies))
    return parts


def mean_of_parts(parts: list[dict[str, float]]) -> dict[str, float]:
    """Each measure (f1, precision, recall) averaged over the parts."""
    return {name: float(np.mean([part[name] for part in parts])) for name in parts[0]}
