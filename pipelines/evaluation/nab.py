"""Numenta Anomaly Benchmark (NAB) scoring, implemented from NAB's published rules.

NAB rewards a detector for raising one alarm early inside each labelled anomaly window and
charges it for alarms outside every window, the more so the farther they are from the last
window. Scores are summed over the corpus and normalised so that a detector that never alarms
scores 0 and one that alarms at the start of every window scores 100. The rules, with their
formulae, are in ``docs/NAB_SCORING.md``.

Everything is positional: windows, probation and distances are counted in rows, not time,
because that is how NAB counts them (several NAB series repeat or step back a timestamp).

All real work is done on :class:`_Layout`, the part of scoring that depends only on a series'
timestamps and windows, so one layout serves every profile, every threshold and every detector.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

__all__ = [
    "CorpusScore",
    "Profile",
    "SeriesScore",
    "load_profiles",
    "load_windows",
    "probationary_rows",
    "read_results_scores",
    "scaled_sigmoid",
    "score_corpus",
    "score_results_dir",
    "score_series",
    "sweep_threshold",
]

Window = tuple[pd.Timestamp, pd.Timestamp]

PROBATION_FRACTION = 0.15
#: NAB caps probation at 15 % of 5000 rows, so long series are not mostly probation.
PROBATION_CAP = 750
#: Beyond this many window lengths after a window, a false positive costs the full weight.
_FAR_AFTER_WINDOW = 3.0


@dataclass(frozen=True)
class Profile:
    """A NAB cost matrix: what a true positive earns and each error costs.

    Parameters
    ----------
    name : str
        Profile name in ``config/profiles.json`` (``standard``, ``reward_low_FP_rate``...).
    tp, fp, fn, tn : float
        ``tpWeight``, ``fpWeight``, ``fnWeight`` and ``tnWeight``. NAB gives true negatives
        no score, so ``tn`` is carried for completeness and never used.
    """

    name: str
    tp: float
    fp: float
    fn: float
    tn: float


@dataclass(frozen=True)
class SeriesScore:
    """The raw NAB score of one series under one profile.

    Attributes
    ----------
    raw : float
        ``tp * sum(A_tp) + fp * sum(A_fp) - fn * fn_count``.
    tp : int
        Windows detected (each counts once however many alarms it holds).
    fp : int
        Alarms outside every window, after the probationary period.
    fn : int
        Windows with no alarm.
    """

    raw: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class CorpusScore:
    """A detector's NAB score over a corpus under one profile.

    Attributes
    ----------
    profile : str
        Profile name.
    score : float
        ``100 * (raw - null) / (perfect - null)``: 0 for a detector that never alarms,
        100 for one that alarms at the first row of every window and nowhere else.
    raw, null, perfect : float
        Summed raw scores of the detector, of the never-alarming detector and of the perfect one.
    series : dict of str to SeriesScore
        Per-series raw scores, keyed like ``combined_windows.json``.
    """

    profile: str
    score: float
    raw: float
    null: float
    perfect: float
    series: dict[str, SeriesScore]


def scaled_sigmoid(y: np.ndarray | float) -> np.ndarray:
    """NAB's scoring curve ``2 / (1 + exp(5 y)) - 1``, with ``-1`` for ``y > 3``.

    ``y`` is a position relative to a window, in window lengths: ``-1`` at a window's first
    row, just below 0 at its last row, positive after it. The curve is near 1 early in a
    window, crosses 0 at its end and tends to -1 after it.
    """
    y = np.asarray(y, dtype=float)
    # exp overflows to inf far right of a window, which gives the right limit (-1) anyway;
    # the explicit cut at 3 window lengths is NAB's rule, kept so the two agree exactly.
    with np.errstate(over="ignore"):
        value = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y > _FAR_AFTER_WINDOW, -1.0, value)


# Dividing by this scales a detection on a window's first row to exactly ``tpWeight``.
_MAX_TP = float(scaled_sigmoid(-1.0))


def probationary_rows(n_rows: int) -> int:
    """Rows at the start of a series in which alarms are ignored: ``min(floor(0.15 n), 750)``."""
    return min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_CAP)


# --------------------------------------------------------------------------- configuration


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise SourceError(f"NAB file {path} not found: is the NAB root right?") from e
    except json.JSONDecodeError as e:
        raise SourceError(f"NAB file {path} is not valid JSON: {e}") from e


def load_profiles(nab_root: str | Path) -> dict[str, Profile]:
    """Read ``config/profiles.json`` of a NAB checkout.

    Parameters
    ----------
    nab_root : str or Path
        Folder holding NAB's ``config/``, ``labels/``, ``data/`` (and ``results/``).

    Returns
    -------
    dict of str to Profile
        Keyed by profile name.
    """
    path = Path(nab_root) / "config" / "profiles.json"
    raw = _read_json(path)
    try:
        return {
            name: Profile(
                name=name,
                tp=float(spec["CostMatrix"]["tpWeight"]),
                fp=float(spec["CostMatrix"]["fpWeight"]),
                fn=float(spec["CostMatrix"]["fnWeight"]),
                tn=float(spec["CostMatrix"]["tnWeight"]),
            )
            for name, spec in raw.items()  # type: ignore[union-attr]
        }
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise SourceError(
            f"{path}: each profile needs CostMatrix.tpWeight/fpWeight/fnWeight/tnWeight numbers ({e!r})"
        ) from e


def load_windows(nab_root: str | Path) -> dict[str, list[Window]]:
    """Read ``labels/combined_windows.json``: the anomaly windows of every series.

    Returns
    -------
    dict of str to list of (Timestamp, Timestamp)
        Keyed by the series path under ``data/`` (``"realKnownCause/nyc_taxi.csv"``); each
        window is ``(start, end)``, both inclusive, in time order.
    """
    path = Path(nab_root) / "labels" / "combined_windows.json"
    raw = _read_json(path)
    try:
        return {
            series: sorted((pd.Timestamp(start), pd.Timestamp(end)) for start, end in windows)
            for series, windows in raw.items()  # type: ignore[union-attr]
        }
    except (AttributeError, TypeError, ValueError) as e:
        raise SourceError(f"{path}: expected {{series: [[start, end], ...]}} ({e!r})") from e


def _profile(nab_root: str | Path, profile_name: str) -> Profile:
    profiles = load_profiles(nab_root)
    if profile_name not in profiles:
        raise ConfigError(f"unknown NAB profile {profile_name!r}; choose one of {', '.join(sorted(profiles))}")
    return profiles[profile_name]


def _read_timestamps(path: Path) -> pd.DatetimeIndex:
    try:
        column = pd.read_csv(path, usecols=["timestamp"])["timestamp"]
    except FileNotFoundError as e:
        raise SourceError(f"NAB series {path} not found: is the NAB root right?") from e
    except ValueError as e:
        raise SourceError(f"{path} has no 'timestamp' column ({e})") from e
    return pd.DatetimeIndex(pd.to_datetime(column))


# --------------------------------------------------------------------------- scoring core


@dataclass(frozen=True)
class _Layout:
    """What scoring needs from one series' timestamps and windows, whatever the detector.

    ``starts``/``ends`` are inclusive row bounds of the windows; ``window_of`` maps each row to
    its window (-1 outside); ``a_tp`` is the earned fraction of ``tpWeight`` for a first alarm
    on an in-window row, ``a_fp`` the fraction of ``fpWeight`` (negative) for an alarm on an
    outside row.
    """

    n: int
    probation: int
    starts: np.ndarray
    ends: np.ndarray
    window_of: np.ndarray
    a_tp: np.ndarray
    a_fp: np.ndarray


def _row_of(timestamps: pd.DatetimeIndex, when: pd.Timestamp, *, is_start: bool) -> int:
    # NAB locates a window bound at the first row stamped with it; a bound that falls between
    # rows is moved inward to the nearest row inside the window.
    exact = np.flatnonzero(timestamps == when)
    if exact.size:
        return int(exact[0])
    inside = np.flatnonzero(timestamps > when) if is_start else np.flatnonzero(timestamps < when)
    if not inside.size:
        return len(timestamps) if is_start else -1
    return int(inside[0] if is_start else inside[-1])


def _layout(timestamps: pd.Series | pd.DatetimeIndex, windows: Sequence[Window]) -> _Layout:
    index = pd.DatetimeIndex(timestamps)
    n = len(index)
    bounds = []
    for start, end in sorted(windows):
        left = _row_of(index, pd.Timestamp(start), is_start=True)
        right = _row_of(index, pd.Timestamp(end), is_start=False)
        if left > right:
            raise ConfigError(f"anomaly window {start} .. {end} holds no row of the series ({n} rows)")
        if bounds and left <= bounds[-1][1]:
            raise ConfigError(f"anomaly window {start} .. {end} overlaps the one before it; NAB windows are disjoint")
        bounds.append((left, right))
    starts = np.array([b[0] for b in bounds], dtype=np.int64)
    ends = np.array([b[1] for b in bounds], dtype=np.int64)

    rows = np.arange(n)
    window_of = np.full(n, -1, dtype=np.int64)
    a_tp = np.zeros(n)
    # Rows before the first window are charged the full weight: there is no window to be near.
    a_fp = np.full(n, -1.0)
    for k, (left, right) in enumerate(bounds):
        width = right - left + 1
        window_of[left : right + 1] = k
        inside = rows[left : right + 1]
        a_tp[left : right + 1] = scaled_sigmoid(-(right - inside + 1) / width) / _MAX_TP
        a_fp[left : right + 1] = 0.0
        stop = starts[k + 1] if k + 1 < len(bounds) else n
        after = rows[right + 1 : stop]
        # NAB measures distance after a window in (width - 1) rows; a one-row window would
        # divide by zero, so it is measured in rows.
        a_fp[right + 1 : stop] = scaled_sigmoid((after - right) / max(width - 1, 1))
    for array in (starts, ends, window_of, a_tp, a_fp):
        array.flags.writeable = False
    return _Layout(n, probationary_rows(n), starts, ends, window_of, a_tp, a_fp)


def _score(layout: _Layout, detections: np.ndarray, profile: Profile) -> SeriesScore:
    detections = np.asarray(detections)
    if detections.shape != (layout.n,):
        raise ConfigError(f"detections have shape {detections.shape}; expected one flag per row ({layout.n},)")
    if detections.dtype != bool:
        raise ConfigError(f"detections must be a boolean array, got dtype {detections.dtype}")
    alarms = np.flatnonzero(detections)
    alarms = alarms[alarms >= layout.probation]

    # The first alarm at or after each window's start counts if it is still inside that window;
    # a sentinel past the last row stands for "no alarm left".
    first_alarm = np.append(alarms, layout.n)[np.searchsorted(alarms, layout.starts)]
    hit = first_alarm <= layout.ends
    false_alarms = alarms[layout.window_of[alarms] < 0]

    n_hit = int(hit.sum())
    n_miss = len(layout.starts) - n_hit
    raw = (
        profile.tp * float(layout.a_tp[first_alarm[hit]].sum())
        + profile.fp * float(layout.a_fp[false_alarms].sum())
        - profile.fn * n_miss
    )
    return SeriesScore(raw=raw, tp=n_hit, fp=len(false_alarms), fn=n_miss)


def _null_and_perfect(layout: _Layout, profile: Profile) -> tuple[float, float]:
    # The perfect detector alarms once per window, on its first row that is past probation.
    first_scorable = np.maximum(layout.starts, layout.probation)
    perfect = np.zeros(layout.n, dtype=bool)
    perfect[first_scorable[first_scorable <= layout.ends]] = True
    return _score(layout, np.zeros(layout.n, dtype=bool), profile).raw, _score(layout, perfect, profile).raw


def _normalise(raw: float, null: float, perfect: float) -> float:
    if perfect == null:
        raise ConfigError("the scored series hold no anomaly window, so a normalised NAB score is undefined")
    return 100.0 * (raw - null) / (perfect - null)


def score_series(
    timestamps: pd.Series | pd.DatetimeIndex,
    detections: np.ndarray,
    windows: Sequence[Window],
    profile: Profile,
) -> SeriesScore:
    """Raw NAB score of one series' alarms.

    Parameters
    ----------
    timestamps : Series or DatetimeIndex
        The series' timestamps, in row order.
    detections : ndarray of bool
        One flag per row: True where the detector raised an alarm.
    windows : sequence of (Timestamp, Timestamp)
        The series' anomaly windows, bounds inclusive (see :func:`load_windows`).
    profile : Profile
        The cost matrix.

    Returns
    -------
    SeriesScore
        Raw score and window/alarm counts.
    """
    return _score(_layout(timestamps, windows), detections, profile)


# --------------------------------------------------------------------------- corpus


def _corpus_layouts(nab_root: str | Path, names: Sequence[str] | None = None) -> dict[str, _Layout]:
    windows = load_windows(nab_root)
    data = Path(nab_root) / "data"
    layouts = {}
    for name in sorted(names or windows):
        with _naming(name):
            layouts[name] = _layout(_read_timestamps(data / name), windows[name])
    return layouts


@contextmanager
def _naming(series: str) -> Iterator[None]:
    """Prefix the series to a :class:`ConfigError` raised inside: scoring a corpus of dozens of
    series, "detections have shape (4031,)" alone does not say which results file is short."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(f"NAB series {series}: {e}") from e


def _check_names(given: Mapping[str, object], known: Mapping[str, object], partial: bool) -> list[str]:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(
            f"series {unknown[:5]} are not in the NAB corpus; keys look like 'realKnownCause/nyc_taxi.csv'"
        )
    missing = sorted(set(known) - set(given))
    if missing and not partial:
        raise ConfigError(
            f"{len(missing)} NAB series have no detections (e.g. {missing[:3]}); a NAB score needs the "
            "whole corpus: pass partial=True to score a subset against its own null and perfect"
        )
    return sorted(given)


def score_corpus(
    detections: Mapping[str, np.ndarray],
    nab_root: str | Path,
    profile_name: str,
    *,
    partial: bool = False,
) -> CorpusScore:
    """Normalised NAB score of boolean alarms over the corpus.

    Parameters
    ----------
    detections : mapping of str to ndarray of bool
        Per series (keyed like :func:`load_windows`), one alarm flag per row of ``data/<series>``.
    nab_root : str or Path
        NAB folder (``config/``, ``labels/``, ``data/``).
    profile_name : str
        A profile of ``config/profiles.json``.
    partial : bool, default False
        Allow a subset of the corpus; null and perfect are then those of the subset, so the
        score is not comparable with published NAB scores.

    Returns
    -------
    CorpusScore
    """
    profile = _profile(nab_root, profile_name)
    names = _check_names(detections, load_windows(nab_root), partial)
    return _score_layouts(_corpus_layouts(nab_root, names), detections, profile)


def _score_layouts(
    layouts: Mapping[str, _Layout], detections: Mapping[str, np.ndarray], profile: Profile
) -> CorpusScore:
    series = {}
    for name, layout in layouts.items():
        with _naming(name):
            series[name] = _score(layout, np.asarray(detections[name]), profile)
    bounds = [_null_and_perfect(layout, profile) for layout in layouts.values()]
    raw = sum(s.raw for s in series.values())
    null = sum(b[0] for b in bounds)
    perfect = sum(b[1] for b in bounds)
    return CorpusScore(profile.name, _normalise(raw, null, perfect), raw, null, perfect, series)


def read_results_scores(results_dir: str | Path, nab_root: str | Path, detector_name: str) -> dict[str, np.ndarray]:
    """Read a detector's anomaly scores laid out as in NAB's ``results/<detector>/``.

    Parameters
    ----------
    results_dir : str or Path
        Folder holding ``<category>/<detector>_<series>.csv`` files with an ``anomaly_score`` column.
    nab_root : str or Path
        NAB folder, for the list of series.
    detector_name : str
        The file-name prefix.

    Returns
    -------
    dict of str to ndarray of float
        Keyed like :func:`load_windows`.
    """
    scores = {}
    for name in sorted(load_windows(nab_root)):
        category, file_name = name.split("/", 1)
        path = Path(results_dir) / category / f"{detector_name}_{file_name}"
        try:
            scores[name] = pd.read_csv(path, usecols=["anomaly_score"])["anomaly_score"].to_numpy(dtype=float)
        except FileNotFoundError as e:
            raise SourceError(f"results file {path} not found: every NAB series needs one") from e
        except ValueError as e:
            raise SourceError(f"{path} has no numeric 'anomaly_score' column ({e})") from e
    return scores


def score_results_dir(
    results_dir: str | Path,
    nab_root: str | Path,
    detector_name: str,
    *,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Normalised NAB scores of a results folder, one per profile.

    Alarms are rows with ``anomaly_score >= threshold``, the threshold being the detector's
    per-profile one in ``config/thresholds.json`` (the one its published scores used).

    Parameters
    ----------
    results_dir : str or Path
        Folder laid out like NAB's ``results/<detector>/`` (see :func:`read_results_scores`).
    nab_root : str or Path
        NAB folder.
    detector_name : str
        The detector's name in file names and in ``thresholds.json``.
    thresholds : mapping of str to float, optional
        Per-profile thresholds to use instead of ``thresholds.json`` (for detectors not in it).

    Returns
    -------
    dict of str to float
        ``{"standard": 39.65, "reward_low_FP_rate": ..., "reward_low_FN_rate": ...}``.
    """
    profiles = load_profiles(nab_root)
    if thresholds is None:
        path = Path(nab_root) / "config" / "thresholds.json"
        table = _read_json(path)
        if detector_name not in table:  # type: ignore[operator]
            raise ConfigError(
                f"{path} has no threshold for detector {detector_name!r}: pass thresholds=, "
                "or choose one with sweep_threshold"
            )
        thresholds = {p: float(v["threshold"]) for p, v in table[detector_name].items()}  # type: ignore[index]
    missing = sorted(set(profiles) - set(thresholds))
    if missing:
        raise ConfigError(f"no threshold for profiles {missing} of detector {detector_name!r}")
    scores = read_results_scores(results_dir, nab_root, detector_name)
    layouts = _corpus_layouts(nab_root)
    result = {}
    for name in sorted(profiles):
        # NaN scores (a detector still warming up) are no alarm: NaN >= t is False.
        alarms = {series: values >= thresholds[name] for series, values in scores.items()}
        result[name] = _score_layouts(layouts, alarms, profiles[name]).score
    return result


# --------------------------------------------------------------------------- threshold sweep


def _sweep_raw(layout: _Layout, scores: np.ndarray, thresholds: np.ndarray, profile: Profile) -> np.ndarray:
    """Raw score of ``scores >= t`` for every ``t`` in ``thresholds`` (sorted or not) at once.

    A window's first alarm at threshold ``t`` is its first row whose running maximum reaches
    ``t``; the false-alarm cost is a prefix sum over outside rows sorted by score. So each
    threshold costs a binary search per window and per series instead of a pass over the rows.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (layout.n,):
        raise ConfigError(f"scores have shape {scores.shape}; expected one per row ({layout.n},)")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    scorable = np.arange(layout.n) >= layout.probation

    raw = np.zeros(len(thresholds))
    for left, right in zip(layout.starts, layout.ends):
        left = max(int(left), layout.probation)
        if left > right:
            raw -= profile.fn
            continue
        running_max = np.maximum.accumulate(scores[left : right + 1])
        first = np.searchsorted(running_max, thresholds, side="left")
        hit = first < len(running_max)
        earned = layout.a_tp[left : right + 1][np.minimum(first, len(running_max) - 1)]
        raw += np.where(hit, profile.tp * earned, -profile.fn)

    outside = scorable & (layout.window_of < 0)
    order = np.argsort(-scores[outside], kind="stable")
    descending = scores[outside][order]
    cost = np.concatenate([[0.0], np.cumsum(layout.a_fp[outside][order])])
    # Number of outside rows with score >= t: searching the negated (ascending) scores.
    n_alarms = np.searchsorted(-descending, -thresholds, side="right")
    return raw + profile.fp * cost[n_alarms]


def sweep_threshold(
    scores: Mapping[str, np.ndarray],
    nab_root: str | Path,
    profile_name: str,
    thresholds: np.ndarray | None = None,
    *,
    partial: bool = False,
) -> tuple[float, float]:
    """The single corpus-wide threshold that maximises the normalised NAB score.

    As NAB's optimiser does, one threshold serves every series and is chosen per profile;
    alarms are rows with ``score >= threshold``.

    Parameters
    ----------
    scores : mapping of str to ndarray of float
        Per series (keyed like :func:`load_windows`), one anomaly score per row; higher is
        more anomalous, NaN is never an alarm.
    nab_root : str or Path
        NAB folder.
    profile_name : str
        A profile of ``config/profiles.json``.
    thresholds : ndarray of float, optional
        Candidates. By default every distinct finite score in the corpus, plus ``inf`` (never
        alarm), which makes the search exact.
    partial : bool, default False
        Allow a subset of the corpus (see :func:`score_corpus`).

    Returns
    -------
    (float, float)
        The best threshold and its normalised score; among equal scores, the highest
        threshold (fewest alarms).
    """
    profile = _profile(nab_root, profile_name)
    names = _check_names(scores, load_windows(nab_root), partial)
    layouts = _corpus_layouts(nab_root, names)
    if thresholds is None:
        values = np.concatenate([np.asarray(scores[name], dtype=float) for name in names])
        thresholds = np.append(np.unique(values[np.isfinite(values)]), np.inf)
    thresholds = np.asarray(thresholds, dtype=float)
    if thresholds.ndim != 1 or not len(thresholds) or np.isnan(thresholds).any():
        raise ConfigError("thresholds must be a non-empty 1-D array of numbers")

    raw = np.zeros(len(thresholds))
    null = perfect = 0.0
    for name in names:
        with _naming(name):
            raw += _sweep_raw(layouts[name], scores[name], thresholds, profile)
        lo, hi = _null_and_perfect(layouts[name], profile)
        null, perfect = null + lo, perfect + hi
    _normalise(0.0, null, perfect)  # fails early if the series hold no window
    normalised = 100.0 * (raw - null) / (perfect - null)
    best_score = normalised.max()
    best = thresholds[normalised == best_score].max()
    log.debug("NAB sweep over %d thresholds for %s: best %.4f at %r", len(thresholds), profile_name, best_score, best)
    return float(best), float(best_score)
