"""Seasonal median profile plus a rolling level, scored in robust (MAD) units per feature."""

from __future__ import annotations

import logging
from typing import Any, Self

import numpy as np
import pandas as pd

from pipelines.detectors.base import BaseDetector, Detection, make_detection, with_history
from pipelines.detectors.calibration import ScoreCalibrator, fit_per_feature
from pipelines.detectors.params import SeasonalMADParams
from pipelines.durations import parse_duration, rows_spanned
from pipelines.errors import ConfigError, UntimedDuration

log = logging.getLogger(__name__)

#: Scales the MAD to the standard deviation of normal noise.
_MAD_TO_SIGMA = 1.4826
#: Fewest points per slot for a per-slot scale. The MAD of n normal points is off by about
#: 1.17 / sqrt(n) of itself; a slot whose scale comes out too small keeps raising false alarms.
_MIN_SLOT_POINTS = 50
#: Fewest training rows: the score calibration needs a spread of training scores.
_MIN_TRAINING_ROWS = 20
#: Largest residual, as a share of the value's magnitude, taken for float rounding rather than a
#: deviation (64 units in the last place): a flat gauge of 0.7 averaged from 3 scrapes instead of 4
#: is 0.6999999999999998, and against a training threshold just above 0 it alarmed with score 1.
_ROUNDING = 64 * float(np.finfo(np.float64).eps)
#: Nanoseconds in one tick of each unit a DatetimeIndex may have.
_TICK_NANOSECONDS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


class SeasonalMADDetector(BaseDetector):
    """Robust seasonal baseline, each feature on its own.

    ``expected`` is the seasonal median profile (the median of the training values at the same
    position within the season) plus a causal level: the median of the last ``level_window``
    residuals before each row, which follows level shifts after a delay. The raw score is
    ``|value - expected| / scale`` with ``scale = 1.4826 * MAD`` of the training residuals
    (per slot of the season when every slot has enough points, else one for the feature),
    calibrated per feature; ``score`` and ``feature_score`` are the same. The training residuals
    behind the scale and the calibration are taken against the median of the *other* seasons
    at each row's slot (leave one out), so that they err as much as new rows do.

    Parameters
    ----------
    season : str, int or None, default="1d"
        Length of the season: a duration (``"1d"``, ``"1w"``) for timestamped data, a number of
        rows, or None for no seasonal profile. Training rows that hold fewer than two seasons
        fit no profile (see ``season_fallback_``). A row's slot is its position in the season in
        UTC (the detector sees UTC timestamps, whatever the source's time zone): a series that
        follows a local clock with daylight saving moves an hour against its profile at each
        change, and its rows around the daily swings alarm until the training window has moved
        past the change (business hours on 15-minute rows: 8 to 9 false alarms a day in the weeks
        after the change, where there were none before): give such series their ``time_zone``.
    time_zone : str, default="UTC"
        IANA time zone whose wall-clock time places a row in its season (09:00 local stays one
        slot across daylight-saving changes; in the hour repeated when the clocks go back, both
        rows share their slot). The rows keep their UTC timestamps.
    level_window : int, default=24
        Residuals whose median is the level; also the history :meth:`detect` uses. The median
        moves once half the window holds a new level, so a level change is flagged for about
        ``level_window / 2`` rows, then absorbed.
    min_scale : float, default=1e-9
        Floor of the scale as a share of the series' typical magnitude (see :func:`scale_floor`),
        so flat series do not divide by zero. A series whose noise is smaller than that share of
        its level is scaled by the floor: at 1e12 with unit noise the scale is 1000, and
        ``level_shift``, which ignores residuals under ``drift / 2`` scales, missed spikes of
        500 and a shift of 3 (``seasonal_mad`` still flags them); give such series a smaller
        ``min_scale`` (1e-14 found them all).
    threshold_kind : {"contamination", "score"}, default="contamination"
        How :attr:`threshold_` is chosen (see :class:`pipelines.config.ThresholdConfig`).
    threshold_value : float, default=0.005
        Share of training points flagged, or the fixed score threshold.

    Attributes
    ----------
    season_ : pandas.Timedelta, int or None
        The season as a duration, in rows, or None.
    season_fallback_ : str or None
        Why the model has no season although one was asked for (too little history), or None.
    step_ : pandas.Timedelta or None
        Median spacing of the training timestamps (None without timestamps).
    n_slots_ : int
        Positions within the season (1 without season).
    profile_ : ndarray of shape (n_slots_, n_features_in_)
        Median training value per slot and feature; for a slot without training values, the
        linear interpolation between the nearest slots with values (the season wraps around).
    level_fallback_ : ndarray of shape (n_features_in_,)
        Level used where no earlier residual exists: the median training residual.
    scale_ : ndarray of shape (n_slots_, n_features_in_)
        Robust scale of the residuals per slot and feature.
    calibrators_ : list of ScoreCalibrator
        Calibration of the raw scores of each feature.
    raw_at_threshold_ : ndarray of shape (n_features_in_,)
        Raw score of each feature whose calibrated score reaches ``threshold_``.
    threshold_, lookback_, n_features_in_, feature_names_in_, training_rows_ :
        See :class:`~pipelines.detectors.base.BaseDetector`; ``lookback_`` is ``level_window``.
    """

    kind = "seasonal_mad"
    params_model = SeasonalMADParams

    def __init__(
        self,
        *,
        season: int | str | None = "1d",
        level_window: int = 24,
        min_scale: float = 1e-9,
        time_zone: str = "UTC",
        threshold_kind: str = "contamination",
        threshold_value: float = 0.005,
    ):
        self.season = season
        self.level_window = level_window
        self.min_scale = min_scale
        self.time_zone = time_zone
        self.threshold_kind = threshold_kind
        self.threshold_value = threshold_value

    def fit(self, X: pd.DataFrame, *, warm_start: BaseDetector | None = None) -> Self:
        """See :meth:`BaseDetector.fit`."""
        super().fit(X, warm_start=warm_start)
        self._learn_raw_at_threshold()
        return self

    def _learn_raw_at_threshold(self) -> None:
        # Once per fit (threshold_ is set after _fit) rather than on every detect.
        self.raw_at_threshold_ = np.array([float(c.inverse(self.threshold_)) for c in self.calibrators_])
        # The features whose threshold a float rounding of their values could reach (a flat
        # series: its training residuals all 0, its threshold just above): only those are checked
        # for rounding when scoring. Elsewhere a rounding residual is far below the threshold, and
        # the check on every cell cost 3 % of the scoring at 10,000 points, 8 % at 100,000.
        magnitude = np.abs(self.profile_).max(axis=0) + np.abs(self.level_fallback_)
        rounding_z = 1e3 * _ROUNDING * magnitude / self.scale_.min(axis=0)
        self.rounding_features_ = np.flatnonzero(self.raw_at_threshold_ <= rounding_z)

    def _fit(self, X: pd.DataFrame, params: SeasonalMADParams) -> np.ndarray:
        self._require_rows(X, _MIN_TRAINING_ROWS, "to calibrate its scores")
        self._learn_season(params.season, X.index)
        self.lookback_ = params.level_window
        values = X.to_numpy()
        slots = self._slots(X.index)
        overall = np.nanmedian(values, axis=0)
        by_slot = pd.DataFrame(values).groupby(slots).median().reindex(range(self.n_slots_)).to_numpy()
        # A slot without training values (an outage at the same hour of each season) or with one
        # only (an outage in one of two seasons) is estimated from the slots around it: the
        # overall median is off by the whole seasonal swing there, so every new row in an empty
        # slot alarmed, and the training rows compared with it set the threshold so high that a
        # one-day outage in two weeks of a weekly season hid every 6-sigma spike.
        neighbours = np.column_stack([from_neighbours(by_slot[:, f], overall[f]) for f in range(values.shape[1])])
        self.profile_ = np.where(np.isnan(by_slot), neighbours, by_slot)
        self.level_fallback_ = np.nanmedian(values - self.profile_[slots], axis=0)
        # Each training row is compared with a profile of the *other* seasons: a profile holds
        # the row it is compared with, so in-sample residuals understate the errors on new rows
        # (with two seasons, the median is the mean of the pair and halves the residual's
        # variance: the threshold for 0.5 % flagged 16 % of new rows of NAB's pure noise).
        held_out = np.column_stack([
            leave_one_out_medians(values[:, f], slots, self.n_slots_, self.profile_[:, f], neighbours[:, f])
            for f in range(values.shape[1])
        ])
        errors = _without_rounding(values - self._expected(values, slots, held_out), values)
        self.scale_ = _robust_scale(errors, slots, self.n_slots_, scale_floor(values, params.min_scale))
        raw = self._raw(errors / self.scale_[slots])
        self.calibrators_ = fit_per_feature(raw, [str(c) for c in X.columns], type(self).__name__)
        return self._calibrate(raw)

    def _learn_season(self, season: int | str | None, index: pd.Index) -> None:
        self.step_ = pd.Series(index).diff().median() if self.time_indexed_ else None
        self.season_fallback_ = None
        if season is None:
            self.season_, self.n_slots_ = None, 1
            return
        if isinstance(season, int):
            self.season_, self.n_slots_ = season, season
        elif not self.time_indexed_:
            raise UntimedDuration("season", season, "give the season as a number of rows")
        else:
            self.season_ = pd.Timedelta(parse_duration(season))
            self.n_slots_ = rows_spanned(self.season_, self.step_)
            if self.n_slots_ < 2:
                raise ConfigError(
                    f"parameter 'season' ({season!r}) must span at least two rows of the data, "
                    f"which come every {self.step_}; choose a longer season or None"
                )
        if len(index) < 2 * self.n_slots_:
            # A new job has little history: it serves without a profile now and learns the season
            # when a later training window holds two of them, instead of failing every training.
            self.season_fallback_ = (
                f"season {season!r} spans {self.n_slots_} rows and a profile needs two seasons, but training "
                f"had {len(index)} rows: fitted without a season (a training on a longer window learns it)"
            )
            log.warning("%s: %s", self.kind, self.season_fallback_)
            self.season_, self.n_slots_ = None, 1

    def _slots(self, index: pd.Index) -> np.ndarray:
        """Position of each row within the season, in [0, n_slots_)."""
        if self.season_ is None:
            return np.zeros(len(index), dtype=np.int64)
        if not self.time_indexed_:
            return np.asarray(index, dtype=np.int64) % self.season_
        if self.time_zone != "UTC":
            # The local wall-clock time, as if it were UTC: a day of 23 or 25 hours at a clock
            # change keeps each hour in its slot (09:00 stays 09:00), as the series' users see it.
            index = index.tz_convert(self.time_zone).tz_localize(None).tz_localize("UTC")
        # Integer ticks of the index's own unit since the epoch: the same arithmetic as on
        # Timedeltas, without pandas building intermediate indexes (or a nanosecond copy) per call.
        # Durations that are whole ticks give the same slots in ticks as in nanoseconds.
        since, tick = index.asi8, _TICK_NANOSECONDS[index.unit]
        step = self.step_.value
        season = self.season_.value if isinstance(self.season_, pd.Timedelta) else None
        if step % tick or (season or 0) % tick:
            since, tick = index.as_unit("ns").asi8, 1
        # In place after the first operation, which must not write into the index: at 100,000
        # rows a new array costs about as much as the arithmetic.
        if season is not None:
            # since % season, from floor divisions: numpy divides by a constant much faster than
            # it takes a remainder.
            slots = np.floor_divide(since, season // tick)
            slots *= season // tick
            np.subtract(since, slots, out=slots)
            slots //= step // tick
            return np.minimum(slots, self.n_slots_ - 1, out=slots)
        slots = np.floor_divide(since, step // tick)
        slots %= self.season_
        return slots

    def _expected(self, values: np.ndarray, slots: np.ndarray, profile: np.ndarray | None = None) -> np.ndarray:
        """The profile (``profile_`` at each row's slot unless given per row) plus the level."""
        profile = self.profile_[slots] if profile is None else profile
        residuals = pd.DataFrame(values - profile)
        # Rolling medians skip missing residuals, so missing values need no filling here.
        level = residuals.shift(1).rolling(self.level_window, min_periods=1).median().to_numpy()
        return profile + np.where(np.isnan(level), self.level_fallback_, level)

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        if len(self.calibrators_) == 1:  # the one column as it is, without a stacked copy
            return self.calibrators_[0].transform(raw)
        return np.column_stack([c.transform(raw[:, f]) for f, c in enumerate(self.calibrators_)])

    def _raw(self, z: np.ndarray) -> np.ndarray:
        """Raw scores from residuals in robust units (rows in time order, history first); may
        overwrite ``z``."""
        return np.abs(z, out=z)

    def _bounds(self, z: np.ndarray, raw_at_threshold: np.ndarray, n_history: int) -> tuple[np.ndarray, np.ndarray]:
        """The residuals (robust units, above and below ``expected``) that reach the threshold, for
        the rows after the ``n_history`` first of ``z``: arrays that broadcast against those rows."""
        return raw_at_threshold, raw_at_threshold

    def _detect(self, X: pd.DataFrame, history: pd.DataFrame | None) -> Detection:
        frame, n_history = with_history(X, history)
        slots = self._slots(frame.index)
        values = frame.to_numpy()
        expected = self._expected(values, slots)
        scale = self.scale_[slots]
        z = np.subtract(values, expected)
        rounded = self.rounding_features_  # see _learn_raw_at_threshold
        if rounded.size:
            z[:, rounded] = _without_rounding(z[:, rounded], values[:, rounded])
        z /= scale
        above, below = self._bounds(z, self.raw_at_threshold_, n_history)
        score = self._calibrate(self._raw(z)[n_history:])  # last: it may overwrite z
        scale = scale[n_history:]
        # Symmetric bounds (the same array twice) are computed once, into the scale's own
        # array: at 100,000 rows a new array costs about as much as the arithmetic.
        below = None if below is above else below * scale
        half_width = np.multiply(above, scale, out=scale)
        # Within rounding of the expected value nothing is flagged (_without_rounding), so
        # neither is it outside the bounds, which a flat series' threshold leaves at 0 wide.
        if rounded.size:
            rounding = np.abs(expected[n_history:, rounded]) * _ROUNDING
            half_width[:, rounded] = np.maximum(half_width[:, rounded], rounding)
            if below is not None:
                below[:, rounded] = np.maximum(below[:, rounded], rounding)
        return make_detection(
            X.index,
            self._feature_list(),
            values[n_history:],
            expected[n_history:],
            half_width,
            score,
            score,
            score >= self.threshold_,
            below=below,
        )

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        season = str(self.season_) if isinstance(self.season_, pd.Timedelta) else self.season_
        state = {
            "season_": season,
            "step_": None if self.step_ is None else str(self.step_),
            "n_slots_": self.n_slots_,
            "season_fallback_": self.season_fallback_,
            "calibrators_": [c.to_dict() for c in self.calibrators_],
        }
        arrays = {"profile_": self.profile_, "level_fallback_": self.level_fallback_, "scale_": self.scale_}
        return state, arrays, {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]) -> None:
        season = state["season_"]
        self.season_ = pd.Timedelta(season) if isinstance(season, str) else season
        self.step_ = None if state["step_"] is None else pd.Timedelta(state["step_"])
        self.n_slots_ = int(state["n_slots_"])
        self.season_fallback_ = state.get("season_fallback_")  # absent in models saved before the fallback
        self.calibrators_ = [ScoreCalibrator.from_dict(c) for c in state["calibrators_"]]
        self.profile_ = arrays["profile_"]
        self.level_fallback_ = arrays["level_fallback_"]
        self.scale_ = arrays["scale_"]
        self._learn_raw_at_threshold()

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "season_slots": self.n_slots_,
            "season_fallback": self.season_fallback_,
            "step": None if self.step_ is None else str(self.step_),
            "median_scale": [float(s) for s in np.median(self.scale_, axis=0)],
        }


def scale_floor(values: np.ndarray, share: float) -> np.ndarray:
    """Per feature, the floor of the robust scale: ``share`` of the feature's typical magnitude
    (the median of its training rows' absolute values; their largest where that is 0; 1 where
    every value is 0). An absolute floor (it was 1e-9) flattened every residual of a series
    measured in units of 1e-12, and :class:`LevelShiftDetector` saw no shift in it.
    """
    magnitude = np.abs(values)
    typical = np.nanmedian(magnitude, axis=0)
    largest = np.nanmax(magnitude, axis=0)
    with np.errstate(over="ignore"):
        floor = share * np.where(typical > 0, typical, np.where(largest > 0, largest, 1.0))
    # A share near 1e308 overflowed the floor: a scale of inf scored every row 0 (a spike of 1e6
    # on a series of 10 went unflagged) and made every bound NaN.
    return np.minimum(floor, np.finfo(np.float64).max)


def _without_rounding(residuals: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``residuals``, set to 0 in place where they are within :data:`_ROUNDING` of ``values``."""
    with np.errstate(invalid="ignore"):
        residuals[np.abs(residuals) <= _ROUNDING * np.abs(values)] = 0.0
    return residuals


def _robust_scale(errors: np.ndarray, slots: np.ndarray, n_slots: int, floor: np.ndarray) -> np.ndarray:
    """``1.4826 * MAD`` per slot and feature, or per feature where some slot has too few points."""
    frame = pd.DataFrame(errors)
    groups = frame.groupby(slots)
    per_slot = (frame - groups.transform("median")).abs().groupby(slots).median().reindex(range(n_slots)).to_numpy()
    counts = groups.count().reindex(range(n_slots), fill_value=0).to_numpy()
    overall = np.nanmedian(np.abs(errors - np.nanmedian(errors, axis=0)), axis=0)
    use_slots = (counts >= _MIN_SLOT_POINTS).all(axis=0)
    return np.maximum(_MAD_TO_SIGMA * np.where(use_slots, per_slot, overall), floor)


def from_neighbours(by_slot: np.ndarray, fallback: float) -> np.ndarray:
    """Per slot, the linear interpolation between the nearest *other* slots whose ``by_slot`` is
    not NaN, around the season's end as well; ``fallback`` where no other slot has a value."""
    n_slots = len(by_slot)
    present = np.flatnonzero(~np.isnan(by_slot))
    out = np.full(n_slots, float(fallback))
    if len(present) == 1:
        out[:] = by_slot[present[0]]
        out[present[0]] = fallback
    if len(present) < 2:
        return out
    slots = np.arange(n_slots)
    before = present[(np.searchsorted(present, slots, side="left") - 1) % len(present)]
    after = present[np.searchsorted(present, slots, side="right") % len(present)]
    to_before, to_after = (slots - before) % n_slots, (after - slots) % n_slots
    return by_slot[before] + (by_slot[after] - by_slot[before]) * to_before / (to_before + to_after)


def leave_one_out_medians(
    values: np.ndarray, slots: np.ndarray, n_slots: int, by_slot: np.ndarray, overall: float | np.ndarray
) -> np.ndarray:
    """Per row, the median of the other finite values of its slot: ``by_slot`` (the slot's
    median) for a missing value, ``overall`` (one value, or one per slot) where the slot holds no
    other value.

    Hand-written because no library computes leave-one-out medians by group; sorting each slot's
    values once gives all of them (the median of the others is one or two neighbours of the
    middle, on the side away from the row left out).
    """
    finite = np.isfinite(values)
    order = np.lexsort((values, ~finite, slots))  # by slot, its finite values first, ascending
    ordered, ordered_slots = values[order], slots[order]
    starts = np.searchsorted(ordered_slots, ordered_slots, side="left")
    rank = np.arange(len(values)) - starts
    others = np.bincount(slots[finite], minlength=n_slots)[ordered_slots] - 1
    lower, upper = (others - 1) // 2, others // 2  # middle positions among the others

    def position(j: np.ndarray) -> np.ndarray:  # the others' j-th value, skipping the row itself
        return np.clip(starts + np.where(j < rank, j, j + 1), 0, len(values) - 1)

    medians = (ordered[position(lower)] + ordered[position(upper)]) / 2.0
    medians = np.where(others >= 1, medians, overall if np.ndim(overall) == 0 else np.asarray(overall)[ordered_slots])
    medians = np.where(finite[order], medians, by_slot[ordered_slots])
    out = np.empty_like(medians)
    out[order] = medians
    return out
