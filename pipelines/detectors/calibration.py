"""From raw nonconformity scores to calibrated scores, and from scores to decisions.

Every detector goes through this module, so that a score means the same thing everywhere and the
threshold comes from one place.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from pipelines.errors import ModelError

#: Most points of the empirical CDF kept (the artifact stays small for long training windows).
_MAX_KNOTS = 512
#: Floor of the tail scale: training scores that are all equal have no excess to fit.
_MIN_TAIL_SCALE = 1e-12


class ScoreCalibrator:
    """Monotone map from raw scores (higher = more anomalous) to [0, 1].

    The calibrated score is the estimated probability that a normal point is less anomalous
    than this one. Up to a high quantile of the training scores it is the empirical CDF
    (``P(raw < x)``, linear between knots); above it, an exponential tail fitted to the
    excesses over that quantile (peaks over threshold), so points beyond every training point
    keep being ranked instead of all reaching 1.0.

    Parameters
    ----------
    tail_quantile : float, default=0.9
        Quantile of the training scores where the exponential tail starts.

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
        Mean excess over ``tail_start_``: the scale of the exponential tail.
    """

    def __init__(self, tail_quantile: float = 0.9):
        self.tail_quantile = tail_quantile

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
        self.tail_scale_ = max(float(excess.mean()) if excess.size else 0.0, _MIN_TAIL_SCALE)
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated scores in [0, 1]; NaN stays NaN."""
        raw = np.asarray(raw, dtype="float64")
        body = np.interp(raw, self.knots_raw_, self.knots_score_, left=0.0)
        excess = np.maximum(raw - self.tail_start_, 0.0)
        tail = 1.0 - self.tail_mass_ * np.exp(-excess / self.tail_scale_)
        return np.where(raw > self.tail_start_, tail, body)

    def surprise(self, raw: np.ndarray) -> np.ndarray:
        """``-log(1 - transform(raw))``: the same order, without the ceiling at 1.0.

        In the tail it is linear in the raw score, so it still tells extreme points apart where
        the calibrated score has rounded to 1.0; detectors combine surprises, never scores.
        """
        raw = np.asarray(raw, dtype="float64")
        body = np.interp(raw, self.knots_raw_, self.knots_score_, left=0.0)
        tail = -np.log(self.tail_mass_) + np.maximum(raw - self.tail_start_, 0.0) / self.tail_scale_
        return np.where(raw > self.tail_start_, tail, -np.log1p(-np.minimum(body, 1.0 - self.tail_mass_)))

    def inverse(self, score: np.ndarray | float) -> np.ndarray:
        """The smallest raw score whose calibrated score reaches ``score`` (inf for 1)."""
        score = np.clip(np.asarray(score, dtype="float64"), 0.0, 1.0)
        body = np.interp(score, self.knots_score_, self.knots_raw_)
        with np.errstate(divide="ignore"):
            tail = self.tail_start_ + self.tail_scale_ * np.log(self.tail_mass_ / (1.0 - score))
        # Between the body's last score and the start of the tail lies the jump of tied scores.
        jump = np.where(score > self.knots_score_[-1], self.tail_start_, body)
        return np.where(score > 1.0 - self.tail_mass_, tail, jump)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state; :meth:`from_dict` restores it exactly."""
        return {
            "tail_quantile": self.tail_quantile,
            "knots_raw": self.knots_raw_.tolist(),
            "knots_score": self.knots_score_.tolist(),
            "tail_start": self.tail_start_,
            "tail_mass": self.tail_mass_,
            "tail_scale": self.tail_scale_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        calibrator = cls(tail_quantile=state["tail_quantile"])
        calibrator.knots_raw_ = np.asarray(state["knots_raw"], dtype="float64")
        calibrator.knots_score_ = np.asarray(state["knots_score"], dtype="float64")
        calibrator.tail_start_ = float(state["tail_start"])
        calibrator.tail_mass_ = float(state["tail_mass"])
        calibrator.tail_scale_ = float(state["tail_scale"])
        return calibrator


def decision_threshold(training_scores: np.ndarray, kind: str, value: float) -> float:
    """The calibrated score from which a point is an anomaly (``score >= threshold``).

    ``"score"``: ``value`` itself. ``"false_alarm_probability"``: ``1 - value`` (scores are
    calibrated probabilities). ``"contamination"``: the ``1 - value`` quantile of the
    training scores, taken as the smallest training score that flags at most ``value`` of the
    training points, so that ties (a flat series) never flag them all; when not even one point
    may be flagged, just above the highest training score.
    """
    if kind == "score":
        return float(value)
    if kind == "false_alarm_probability":
        return float(1.0 - value)
    scores = np.sort(np.asarray(training_scores, dtype="float64").ravel())
    scores = scores[np.isfinite(scores)]
    allowed = int(np.floor(value * scores.size + 1e-9))
    above_max = float(np.nextafter(scores[-1], np.inf))
    if allowed == 0:
        return above_max
    candidate = scores[scores.size - allowed]
    if np.searchsorted(scores, candidate, side="left") < scores.size - allowed:
        higher = scores[scores > candidate]
        return float(higher[0]) if higher.size else above_max
    return float(candidate)
