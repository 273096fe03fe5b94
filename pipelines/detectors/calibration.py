"""From raw nonconformity scores to calibrated scores, and from scores to decisions.

Every detector goes through this module, so that a score means the same thing everywhere and the
threshold comes from one place.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from pipelines.errors import ConfigError, ModelError

#: Most points of the empirical CDF kept (the artifact stays small for long training windows).
_MAX_KNOTS = 512
#: Floor of the tail scale, as a share of the largest training score's magnitude (1 when all are
#: 0): training scores that are all equal have no excess to fit. Relative, because some raw scores
#: are in the data's unit (a deviation from the expected value): an absolute 1e-12 was larger
#: than every excess of a series measured in units of 1e-12.
_MIN_TAIL_SCALE = 1e-12
#: Buckets of the segment lookup of :class:`_PiecewiseLinear` per knot. A bucket holding one knot
#: costs a comparison; points in one holding two or more are binary-searched. 8 measured as fast as
#: 4 at 10,000 points (after a rolling median, as a detector scores) and a quarter faster than 32,
#: whose larger tables are slower to read; 4 leaves more buckets with two knots.
_BUCKETS_PER_KNOT = 8
#: Latest share of the training rows a detector also scores out of sample for its calibration.
HELD_BACK_FRACTION = 0.2
#: Fewest held-back rows worth calibrating on: shorter windows calibrate on the fitted rows only.
MIN_HELD_BACK_ROWS = 50
#: Floor of the tail scale where even the relative floor is 0 (training scores near 1e-320): a
#: tail scale of 0 divides by zero.
_SMALLEST_SCALE = float(np.finfo(np.float64).smallest_subnormal)
#: Fewest excesses over the tail start from which the tail's shape is estimated; with fewer, the
#: tail is exponential. At 50 (500 scored rows) the estimate passed 0.2 for one exponential tail in
#: six: of 300 MSET signals, one got 0.79, and a spike of 10 of its standard deviations (a raw
#: score of 29 where it had needed 954) no longer made its row an anomaly.
MIN_SHAPE_EXCESSES = 200
#: Standard error of the shape estimate times the square root of the excesses (measured on
#: exponential and Student t(3) excesses, 50 to 2,000 of them). The tail takes the estimate less
#: one standard error, floored at 0: a lower confidence bound, so that a light tail seldom passes
#: for a heavy one. Shapes of 0.02 to 0.06 fitted to the noise of one of three MSET signals alike
#: were enough to blame another for its shift (surprises far out are compared across signals).
#: The price, on t(3) noise at a target of 0.001 (seasonal_mad, 2,000 rows, 3 seeds): 2.2 times the target
#: flagged, against 1.4 with the estimate unreduced, 1.8 less half an error, 3.1 exponential.
_SHAPE_ERROR = 1.9
#: Largest tail shape: the tail's scale comes from the mean excess, finite for shapes below 1.
#: Set to 0, every tail is exponential (benchmarks/false_alarm_rate.py compares the two).
MAX_TAIL_SHAPE = 0.9
#: Shapes tried, quantile levels of the excesses fitted, and each shape's quantile function at
#: those levels for a scale of 1 (``((1 - p) ** -shape - 1) / shape``, ``-log(1 - p)`` at 0).
_SHAPES = np.linspace(0.0, 0.9, 91)
_SHAPE_LEVELS = np.linspace(0.05, 0.9, 35)
_SHAPE_BASIS = np.vstack(
    [-np.log1p(-_SHAPE_LEVELS)] + [((1 - _SHAPE_LEVELS) ** -shape - 1) / shape for shape in _SHAPES[1:]]
)
#: The highest contamination threshold: the largest float below 1.0 (see :func:`decision_threshold`).
_BELOW_ONE = float(np.nextafter(1.0, 0.0))


class _PiecewiseLinear:
    """``np.interp(x, knots, values, left=left)`` with the segment of each point found in O(1).

    np.interp binary-searches the segment of every point, and that search was most of a
    detector's scoring time beyond the model itself (about 10 ms of a 100,000-row seasonal
    score). Here a uniform grid of buckets over the knots maps a point to the segment where its
    bucket starts, one past it when the point reaches the one knot inside the bucket; only points
    in the few buckets holding two knots or more are binary-searched. The arithmetic is
    np.interp's own (``slope * (x - x_j) + y_j``), so results are identical.
    """

    def __init__(self, knots: np.ndarray, values: np.ndarray, left: float):
        self.knots, self.values, self.left = knots, values, left
        self.buckets = max(1, _BUCKETS_PER_KNOT * knots.size)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            self.slopes = np.diff(values) / np.diff(knots) if knots.size > 1 else np.zeros(0)
            span = float(knots[-1] - knots[0])
            self.inverse_width = self.buckets / span if span > 0 else 0.0
        # Knots a subnormal apart (raw scores near 1e-310) overflow a slope, and knots spanning
        # more than the largest float overflow the grid: training points then scored inf, and a
        # knot NaN (a slope of inf times a distance of 0). np.interp computes the same slopes, so
        # such knots take :meth:`_without_overflow` instead.
        self.overflows = not (np.isfinite(self.slopes).all() and np.isfinite(span) and np.isfinite(self.inverse_width))
        if self.overflows or not span > 0:
            self.inverse_width = 0.0  # values_and_beyond then takes np.interp or _without_overflow
            return
        last = knots.size - 1
        edges = knots[0] + np.arange(self.buckets + 1) / self.inverse_width
        # Segment j holds [knots[j], knots[j+1]). A bucket starts in segment start[b] and holds
        # the knots start[b+1] - start[b] after it; clipped to real segments here, once, since
        # points outside the knots get their value set apart.
        start = np.searchsorted(knots, edges, side="right") - 1
        held = np.diff(start)
        self.bucket_segment = np.clip(start[:-1], 0, last - 1)
        following = np.minimum(self.bucket_segment + 1, last)
        # The last knot splits no bucket: points from it on are outside, and the segment after
        # it does not exist.
        self.bucket_split = np.where((held == 1) & (following < last), knots[following], np.inf)
        self.bucket_searched = held >= 2
        self.searches = bool(self.bucket_searched.any())

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """The values at ``points`` (any shape; NaN stays NaN)."""
        return self.values_and_beyond(np.ravel(points))[0].reshape(np.shape(points))

    def values_and_beyond(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The values at the points of the 1-d ``x``, and the indices of some points that include
        every one at or beyond ``knots[-1]`` (or None when not worked out)."""
        knots = self.knots
        if self.overflows:
            return self._without_overflow(x), None
        if knots.size < 2 or self.inverse_width == 0.0:
            # np.interp gives a NaN point the one knot's value (training scores all tied): a
            # missing raw score scored 0 instead of staying missing.
            return np.where(np.isnan(x), np.nan, np.interp(x, knots, self.values, left=self.left)), None
        # Few new arrays: at 100,000 points each costs about as much as the arithmetic on it
        # (fresh memory), so every array is reused in place once its content is no longer needed.
        with np.errstate(invalid="ignore", over="ignore"):  # NaN, inf and beyond the grid land in a clipped bucket, set below
            position = np.subtract(x, knots[0])
            position *= self.inverse_width
            bucket = position.astype(np.int64)
        # mode="clip" clips the buckets to the grid in the same pass.
        reached = x >= self.bucket_split.take(bucket, mode="clip", out=position)
        segment = self.bucket_segment.take(bucket, mode="clip", out=position.view(np.int64))
        segment += reached
        if self.searches:
            searched = np.flatnonzero(self.bucket_searched.take(bucket, mode="clip"))
            segment[searched] = np.clip(np.searchsorted(knots, x[searched], side="right") - 1, 0, knots.size - 2)
        # Points outside [knots[0], knots[-1]) are in the first or last bucket, or beyond the
        # grid: one unsigned comparison finds bucket <= 0 or >= buckets - 1 (the first bucket
        # wraps around to the largest), and only those points are compared with the knots.
        np.subtract(bucket, 1, out=bucket)
        near = np.flatnonzero(bucket.view(np.uint64) >= self.buckets - 2)
        gathered = bucket.view(np.float64)
        out = knots.take(segment)
        np.subtract(x, out, out=out)
        out *= self.slopes.take(segment, out=gathered)
        out += self.values.take(segment, out=gathered)
        # A NaN point's value is NaN already (arithmetic on NaN); the others outside the knots
        # are set here.
        at = x[near]
        out[near] = np.where(at < knots[0], self.left, np.where(at >= knots[-1], self.values[-1], out[near]))
        return out, near

    def _without_overflow(self, x: np.ndarray) -> np.ndarray:
        """The values at ``x`` as the share of its segment it has covered, a ratio in [0, 1]: the
        difference of two distinct floats is never 0, even between subnormals, and halved
        operands cannot overflow."""
        knots, values = self.knots, self.values
        segment = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, knots.size - 2)
        low, high = knots[segment], knots[segment + 1]
        with np.errstate(over="ignore", invalid="ignore"):
            share = (x - low) / (high - low)
            halved = (x / 2 - low / 2) / (high / 2 - low / 2)
        share = np.clip(np.where(np.isfinite(share), share, halved), 0.0, 1.0)
        out = values[segment] + (values[segment + 1] - values[segment]) * share
        return np.where(x < knots[0], self.left, np.where(x >= knots[-1], values[-1], np.where(np.isnan(x), np.nan, out)))


class ScoreCalibrator:
    """Monotone map from raw scores (higher = more anomalous) to [0, 1].

    The calibrated score is the estimated probability that a normal point is less anomalous
    than this one. Up to a high quantile of the training scores it is the empirical CDF
    (``P(raw < x)``, linear between knots); above it, a generalized Pareto tail fitted to the
    excesses over that quantile (peaks over threshold), so points beyond every training point
    keep being ranked instead of all reaching 1.0.

    The tail's shape is estimated (a fit of the excesses' quantiles, less one standard error) from
    at least :data:`MIN_SHAPE_EXCESSES` excesses and kept in ``[0, MAX_TAIL_SHAPE]``: 0 is the
    exponential tail. An exponential tail on heavy-tailed scores (Student t with 3 degrees of
    freedom) flagged 3.3 times the target false-alarm probability of 0.001 on new rows; a shape
    below 0 would end the tail at a finite raw score, beyond which every point scored 1.0, unranked.

    Parameters
    ----------
    tail_quantile : float, default=0.9
        Quantile of the training scores where the tail starts.
    exponential_tail : bool, default=False
        Keep the tail's shape at 0, for raw scores whose tail is exponential by construction
        (surprises of other calibrators, or their largest of a few).

    Attributes
    ----------
    knots_raw_ : ndarray
        Increasing raw scores of the body, ending at ``tail_start_``.
    knots_score_ : ndarray
        Calibrated score at each knot (strictly increasing).
    tail_start_ : float
        Raw score where the tail starts (a training score).
    tail_mass_ : float
        Share of training scores above ``tail_start_``.
    tail_scale_ : float
        Scale of the tail (the mean excess over ``tail_start_`` times ``1 - tail_shape_``).
    tail_shape_ : float
        Shape of the tail: 0 exponential, above 0 heavier (a power law).
    """

    def __init__(self, tail_quantile: float = 0.9, exponential_tail: bool = False):
        self.tail_quantile = tail_quantile
        self.exponential_tail = exponential_tail

    def fit(self, raw: np.ndarray) -> Self:
        """Learn the map from training raw scores (NaN are ignored)."""
        scores = np.sort(np.asarray(raw, dtype="float64").ravel())
        scores = scores[np.isfinite(scores)]
        if scores.size < 2:
            raise ModelError(
                f"cannot calibrate scores from {scores.size} finite training score(s); "
                "train on more rows without missing values"
            )
        start = float(np.quantile(scores, self.tail_quantile, method="lower"))
        body = scores[scores <= start]
        picks = np.unique(np.linspace(0, body.size - 1, min(body.size, _MAX_KNOTS)).round().astype(int))
        self.knots_raw_ = np.unique(body[picks])
        self.knots_score_ = np.searchsorted(scores, self.knots_raw_, side="left") / scores.size
        excess = scores[scores > start] - start
        self.tail_start_ = start
        # At least one point's worth of mass, so the tail still ranks when nothing exceeded it.
        self.tail_mass_ = max(excess.size, 1) / scores.size
        magnitude = float(np.abs(scores).max()) or 1.0
        self.tail_shape_ = 0.0 if self.exponential_tail else _tail_shape(excess)
        scale = _mean_excess(excess) * (1.0 - self.tail_shape_)  # a generalized Pareto's mean is scale / (1 - shape)
        self.tail_scale_ = max(scale, _MIN_TAIL_SCALE * magnitude, _SMALLEST_SCALE)
        self._body = None
        return self

    def _body_map(self) -> _PiecewiseLinear:
        if getattr(self, "_body", None) is None:
            self._body = _PiecewiseLinear(self.knots_raw_, self.knots_score_, left=0.0)
        return self._body

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated scores in [0, 1]; NaN stays NaN."""
        raw = np.asarray(raw, dtype="float64")
        flat_raw = raw.reshape(-1)
        body = self._body_map()
        out, beyond = body.values_and_beyond(flat_raw)
        if beyond is not None and self.tail_start_ >= body.knots[-1]:
            # The tail starts where the body's knots end (as fitted): only points beyond them
            # can be in it, and comparing those few is cheaper than comparing every point.
            tail = beyond[flat_raw[beyond] > self.tail_start_]
        else:
            tail = np.flatnonzero(flat_raw > self.tail_start_)
        out[tail] = 1.0 - self.tail_mass_ * np.exp(-self._tail_surprise(flat_raw[tail] - self.tail_start_))
        return out.reshape(raw.shape)

    def _tail_surprise(self, excess: np.ndarray) -> np.ndarray:
        """``-log`` of the tail's survival at ``excess`` (>= 0) over ``tail_start_``, relative to
        ``tail_mass_``."""
        shape = self.tail_shape_
        if shape == 0.0:
            with np.errstate(over="ignore"):  # beyond the largest float the surprise is infinite: score 1
                return excess / self.tail_scale_
        # Divided first: shape * excess overflows for excesses near the largest float; past it
        # too (a scale below the shape), the log of the quotient is taken as a difference, or a
        # finite raw score had an infinite surprise, tied with every larger one.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            scaled = excess / (self.tail_scale_ / shape)
            beyond = np.isinf(scaled) & np.isfinite(excess)
            return np.where(beyond, np.log(excess) - np.log(self.tail_scale_ / shape), np.log1p(scaled)) / shape

    def raw_at_surprise(self, surprise: float) -> float:
        """The smallest raw score whose :meth:`surprise` reaches ``surprise`` (inf for inf, and
        where that raw score would be beyond the largest float)."""
        if not np.isfinite(surprise):
            return float("inf")
        start = -np.log(self.tail_mass_)
        if surprise <= start:
            return float(self.inverse(-np.expm1(-surprise)))
        # Solved in the tail itself: through the calibrated score, 1 - exp(-surprise) rounds to
        # 1.0 (an infinite raw score) from a surprise of about 37.
        return float(self.tail_start_ + self._tail_excess(surprise - start))

    def _tail_excess(self, surprise: np.ndarray | float) -> np.ndarray:
        """The excess over ``tail_start_`` whose :meth:`_tail_surprise` is ``surprise``."""
        shape = self.tail_shape_
        if shape == 0.0:
            return np.multiply(self.tail_scale_, surprise)
        with np.errstate(over="ignore"):
            return np.multiply(self.tail_scale_ / shape, np.expm1(np.multiply(shape, surprise)))

    def surprise(self, raw: np.ndarray) -> np.ndarray:
        """``-log(1 - transform(raw))``: the same order, without the ceiling at 1.0.

        In the tail it grows without bound (linearly in the raw score for an exponential tail, as
        its log for a heavier one), so it still tells extreme points apart where the calibrated
        score has rounded to 1.0; detectors combine surprises, never scores.
        """
        raw = np.asarray(raw, dtype="float64")
        body = self._body_map()(raw)
        with np.errstate(invalid="ignore"):  # NaN raw scores, not taken
            tail = -np.log(self.tail_mass_) + self._tail_surprise(np.maximum(raw - self.tail_start_, 0.0))
        return np.where(raw > self.tail_start_, tail, -np.log1p(-np.minimum(body, 1.0 - self.tail_mass_)))

    def inverse(self, score: np.ndarray | float) -> np.ndarray:
        """The smallest raw score whose calibrated score reaches ``score`` (inf for 1)."""
        score = np.clip(np.asarray(score, dtype="float64"), 0.0, 1.0)
        body = np.interp(score, self.knots_score_, self.knots_raw_)
        with np.errstate(divide="ignore", invalid="ignore"):
            tail = self.tail_start_ + self._tail_excess(np.log(self.tail_mass_ / (1.0 - score)))
        # Between the body's last score and the start of the tail lies the jump of tied scores.
        jump = np.where(score > self.knots_score_[-1], self.tail_start_, body)
        return np.where(score > 1.0 - self.tail_mass_, tail, jump)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state; :meth:`from_dict` restores it exactly."""
        return {
            "tail_quantile": self.tail_quantile,
            "exponential_tail": self.exponential_tail,
            "knots_raw": self.knots_raw_.tolist(),
            "knots_score": self.knots_score_.tolist(),
            "tail_start": self.tail_start_,
            "tail_mass": self.tail_mass_,
            "tail_scale": self.tail_scale_,
            "tail_shape": self.tail_shape_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        calibrator = cls(tail_quantile=state["tail_quantile"], exponential_tail=bool(state.get("exponential_tail", False)))
        calibrator.knots_raw_ = np.asarray(state["knots_raw"], dtype="float64")
        calibrator.knots_score_ = np.asarray(state["knots_score"], dtype="float64")
        calibrator.tail_start_ = float(state["tail_start"])
        calibrator.tail_mass_ = float(state["tail_mass"])
        calibrator.tail_scale_ = float(state["tail_scale"])
        # Calibrators saved before the shape was fitted have an exponential tail.
        calibrator.tail_shape_ = float(state.get("tail_shape", 0.0))
        return calibrator


def fit_per_feature(raw: np.ndarray, features: list[str], owner: str) -> list[ScoreCalibrator]:
    """A :class:`ScoreCalibrator` fitted on each column of ``raw`` (rows x ``features``); an error
    names ``owner`` (the detector) and the feature that has too few scores."""
    calibrators = []
    for f, name in enumerate(features):
        try:
            calibrators.append(ScoreCalibrator().fit(raw[:, f]))
        except ModelError as exc:
            # Without the feature's name, a job of many features could not tell which one to fix.
            scored = int(np.isfinite(raw[:, f]).sum())
            raise ModelError(
                f"{owner}: feature {name!r} has {scored} training row(s) with a value to score, too few to calibrate "
                "its scores (2 at least); widen the training window, fix the feature at the source, or leave it out "
                "of the job's features"
            ) from exc
    return calibrators


def _mean_excess(excess: np.ndarray) -> float:
    """Mean of the excesses (0 for none), without overflowing: the sum of excesses near 1e307
    is infinite, and a tail scale of inf gave every point above the tail start the same score."""
    if not excess.size:
        return 0.0
    with np.errstate(over="ignore"):
        mean = float(excess.mean())
    if np.isfinite(mean):
        return mean
    top = float(excess.max())
    return float(np.mean(excess / top)) * top


def _tail_shape(excess: np.ndarray) -> float:
    """A lower bound of the generalized Pareto shape of ``excess``: the shape whose quantile
    function, scaled, fits the 5 % to 90 % quantiles of ``excess`` best (least squares), less its
    standard error, in ``[0, MAX_TAIL_SHAPE]``; 0 for fewer than :data:`MIN_SHAPE_EXCESSES`.

    Quantiles, not moments or likelihood: a training window's few real anomalies are its largest
    excesses, and ten points at 1e6 among 10,000 normal ones took the moment estimate to the
    largest shape, a tail under which nothing short of them was ever an anomaly again; ten at 1e6
    among 1,000 took scipy.stats.genpareto.fit (maximum likelihood) from 0 to 0.84. The top 10 %
    of the excesses (1 % of the rows) do not move this fit. genpareto.fit with them censored
    (scipy.stats.CensoredData) is as robust but no less spread (0.12 at 200 excesses, as here),
    and takes 50 ms a fit against 0.14 ms: an MSET of 300 signals fits 600 calibrations.
    """
    if excess.size < MIN_SHAPE_EXCESSES or MAX_TAIL_SHAPE <= 0:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # excesses near the largest float; shape is scale-free
        quantiles = np.quantile(excess / float(excess.max()), _SHAPE_LEVELS)
    if not (np.isfinite(quantiles).all() and quantiles[-1] > 0):
        return 0.0
    fitted_scale = (_SHAPE_BASIS @ quantiles) / np.einsum("ij,ij->i", _SHAPE_BASIS, _SHAPE_BASIS)
    residual = np.square(quantiles - fitted_scale[:, None] * _SHAPE_BASIS).sum(axis=1)
    shape = float(_SHAPES[np.argmin(residual)]) - _SHAPE_ERROR / np.sqrt(excess.size)
    return float(np.clip(shape, 0.0, MAX_TAIL_SHAPE))


def held_back_rows(training_rows: int, min_fitted_rows: int) -> int:
    """Rows at the end of a training window to score out of sample for the calibration (split
    conformal): the latest :data:`HELD_BACK_FRACTION`, or 0 when that is fewer than
    :data:`MIN_HELD_BACK_ROWS` or would leave fewer than ``min_fitted_rows`` to fit on.

    A model errs less on rows it was fitted on than on new rows, so a calibration on its
    training rows alone makes a fixed threshold flag more new rows than it was set for; the
    held-back scores are added to the training ones (not used alone: a forecaster's interval
    widening over the held-back horizon may leave them all at 0, with nothing to calibrate on).
    """
    held_back = int(training_rows * HELD_BACK_FRACTION)
    return held_back if held_back >= MIN_HELD_BACK_ROWS and training_rows - held_back >= min_fitted_rows else 0


def decision_threshold(training_scores: np.ndarray, kind: str, value: float) -> float:
    """The calibrated score from which a point is an anomaly (``score >= threshold``).

    ``"score"``: ``value`` itself. ``"false_alarm_probability"``: ``1 - value`` (scores are
    calibrated probabilities). ``"contamination"``: the ``1 - value`` quantile of the
    training scores, taken as the smallest training score that flags at most ``value`` of the
    training points, so that ties (a flat series) never flag them all; when not even one point
    may be flagged, just above the highest training score. Never above the largest score below
    1.0, though.

    Calibrated scores end at 1.0, and training points far out in the tail all round to it: above
    1.0 a cut would flag nothing ever again, however far out a new point lies (a forecaster
    trained over a level step, whose calibration rows came after it, stayed mute to a 1e9 spike).
    Just below 1.0 it flags what scores as high as the most extreme training points, and the
    raw score it stands for is finite (:meth:`ScoreCalibrator.inverse` of 1.0 is not), so the
    bounds of a flagged value stay finite and exclude it.
    """
    _check_policy(kind, value)
    if kind == "score":
        return float(value)
    if kind == "false_alarm_probability":
        return float(1.0 - value)
    scores = np.sort(np.asarray(training_scores, dtype="float64").ravel())
    scores = scores[np.isfinite(scores)]
    if not scores.size:
        raise ModelError(
            "cannot take a contamination threshold: no training row has a finite score; "
            "train on rows with values, or set threshold_kind to 'score' or 'false_alarm_probability'"
        )
    allowed = int(np.floor(value * scores.size + 1e-9))
    above_max = min(float(np.nextafter(scores[-1], np.inf)), _BELOW_ONE)
    if allowed == 0:
        return above_max
    candidate = scores[scores.size - allowed]
    if np.searchsorted(scores, candidate, side="left") < scores.size - allowed:
        higher = scores[scores > candidate]
        return min(float(higher[0]), _BELOW_ONE) if higher.size else above_max
    return min(float(candidate), _BELOW_ONE)


#: Values each threshold kind takes: (low, high, whether high itself is allowed). Contamination
#: may reach 1 here (a detector may ask to flag every calibration row, see ``ContextDetector``).
_POLICY_RANGES = {
    "contamination": (0.0, 1.0, True),
    "false_alarm_probability": (0.0, 1.0, False),
    "score": (0.0, 1.0, False),
}


def _check_policy(kind: str, value: float) -> None:
    # A NaN value passed every comparison below as a threshold of NaN (which flags nothing,
    # silently) or failed as "cannot convert float NaN to integer"; an unknown kind was taken
    # for contamination.
    if kind not in _POLICY_RANGES:
        raise ConfigError(f"threshold_kind must be one of {', '.join(map(repr, _POLICY_RANGES))}, got {kind!r}")
    low, high, high_allowed = _POLICY_RANGES[kind]
    number = isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
    if not (number and low < value and (value < high or (high_allowed and value == high))):
        bound = "]" if high_allowed else ")"
        raise ConfigError(
            f"threshold_value for threshold_kind {kind!r} must be a number in ({low:g}, {high:g}{bound}, got {value!r}; "
            "fix it in the job's threshold settings"
        )
