"""Isolation Forest on causal window features of all features together."""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from pipelines.detectors.base import BaseDetector, Detection, make_detection, with_history
from pipelines.detectors.calibration import ScoreCalibrator, fit_per_feature, held_back_rows
from pipelines.detectors.features import fill_missing, rolling_expected, window_features
from pipelines.detectors.params import IsolationForestParams
from pipelines.errors import ModelError

#: Types skops must be told to trust when loading the model (all else it trusts by default).
SKOPS_TRUSTED_TYPES = ["numpy.dtype", "sklearn.tree._tree.Tree"]
#: Fewest training rows: the score calibration needs a spread of training scores.
_MIN_TRAINING_ROWS = 20


def _skops_io() -> ModuleType:
    # On import skops looks names up across every loaded module; inside Airflow that touches
    # over a thousand deprecated aliases, each logging a FutureWarning that buries the task log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import skops.io

    return skops.io


def _fill_limit(window: int, lags: int) -> int:
    """Rows a missing value is carried forward: as far back as a row's window features read."""
    return window + lags


def _lookback(window: int, lags: int) -> int:
    # A row's features read window + lags rows back, and the filled value of each of those rows
    # reads up to _fill_limit rows further back. Bounding the fill keeps a row's score a function
    # of its lookback_ rows before, so scoring rows in pieces (each given lookback_ rows of
    # history) equals one call; an unbounded fill carried a value from before a long gap into
    # one call but not into a call whose history started inside the gap. A value older than the
    # rows the features read is stale anyway: the training median stands in for it.
    return window + lags + _fill_limit(window, lags)


def _observed_rows(X: pd.DataFrame) -> np.ndarray:
    """Which rows of ``X`` hold at least one value: the only rows :meth:`detect` scores.

    A row with no value is filled (carried forward, then the training median) to compute its
    neighbours' window features, but it is no observation: a sensor offline for days filled the
    forest's sample with one made-up point and the calibration with its low scores, so real rows
    ranked as outliers of the training (3 % flagged for a contamination of 0.5 % when offline
    70 % of the training window). Rows with some values stay: the forest sees their filled
    features as :meth:`detect` does.
    """
    return ~np.isnan(X.to_numpy()).all(axis=1)


def _require_observed_rows(X: pd.DataFrame) -> np.ndarray:
    """:func:`_observed_rows` of ``X``, refused when they are too few to fit on."""
    mask = _observed_rows(X)
    observed = int(np.count_nonzero(mask))
    if observed < _MIN_TRAINING_ROWS:
        # The forest and its calibration learn from these rows alone (see _observed_rows).
        raise ModelError(
            f"IsolationForestDetector needs at least {_MIN_TRAINING_ROWS} training rows with a value (the score "
            f"calibration needs a spread of training scores); got {observed} of {len(X)} rows, the others have no "
            "value in any feature. Widen the training window or check the source."
        )
    return mask


def _warm_trees(params: IsolationForestParams) -> int:
    """Trees a warm start adds to the champion's forest: half a forest, so the trees grown on
    the new window are a third of the first grown forest."""
    return max(params.n_estimators // 2, 1)


class IsolationForestDetector(BaseDetector):
    """Multivariate detector: scikit-learn's IsolationForest on window features.

    For each feature the window features are its value, its first difference, its deviation
    from the median of the previous ``window`` rows and the standard deviation of the last
    ``window`` rows (see :mod:`pipelines.detectors.features`), robustly standardised.
    ``score`` is the row score, the same for every feature of a row: the larger of the forest's
    calibrated score (``-score_samples``) and the largest calibrated feature deviation, calibrated
    again on the training rows (a forest dilutes one signal far out of range among many normal
    window features). ``is_anomaly`` is the row's decision repeated for each feature. ``feature_score``
    tells which features drove it: the calibrated deviation of each feature from ``expected``
    (the median of its previous ``window`` values), and ``lower``/``upper`` are where that
    feature score reaches :attr:`threshold_`. Missing values are forward filled, at most
    ``window + lags`` rows, then filled with the training median, to compute the features; a
    training row without any value is left out of the forest and the calibrations (it is never scored).

    Parameters
    ----------
    n_estimators : int, default=200
        Number of trees.
    max_samples : int or "auto", default="auto"
        Rows drawn to build each tree.
    max_features : float, default=1.0
        Share of the window features drawn for each tree.
    window : int, default=24
        Rows of the rolling windows; with ``lags``, the history :meth:`detect` uses (see ``lookback_``).
    lags : int, default=0
        Past values of each feature added to its window features.
    calendar : bool, default=True
        Add the hour of day and day of week (sine and cosine), for timestamped data.
    time_zone : str, default="UTC"
        IANA time zone whose wall-clock hour and day the calendar parts are.
    random_state : int, default=0
        Seed of the forest; a fixed seed makes training reproducible.
    threshold_kind : {"contamination", "score"}, default="contamination"
        How :attr:`threshold_` is chosen (see :class:`pipelines.config.ThresholdConfig`).
    threshold_value : float, default=0.005
        Share of training rows flagged, or the fixed score threshold.

    Attributes
    ----------
    model_ : sklearn.pipeline.Pipeline
        RobustScaler, a constant imputer (missing window statistics count as typical) and the
        IsolationForest, fitted on the training window features.
    medians_ : ndarray of shape (n_features_in_,)
        Training median of each feature, to fill missing values with no earlier value.
    row_calibrator_ : ScoreCalibrator
        Calibration of the forest's scores: those of the training rows plus those of the latest
        rows from a forest grown without them (:func:`~pipelines.detectors.calibration.held_back_rows`).
    calibration_rows_ : int
        Rows scored out of sample for the calibration (0: too short a window for it).
    combined_calibrator_ : ScoreCalibrator
        Calibration of the row scores (forest and largest feature deviation combined).
    feature_calibrators_ : list of ScoreCalibrator
        Calibration of each feature's absolute deviation from ``expected``.
    threshold_, lookback_, n_features_in_, feature_names_in_, training_rows_ :
        See :class:`~pipelines.detectors.base.BaseDetector`; ``lookback_`` is ``2 * (window + lags)``:
        the rows the features read, and as many again that a missing value may be carried from.
    """

    kind = "iforest"
    params_model = IsolationForestParams
    supports_warm_start = True

    def __init__(
        self,
        *,
        n_estimators: int = 200,
        max_samples: int | str = "auto",
        max_features: float = 1.0,
        window: int = 24,
        lags: int = 0,
        calendar: bool = True,
        time_zone: str = "UTC",
        random_state: int = 0,
        threshold_kind: str = "contamination",
        threshold_value: float = 0.005,
    ):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.window = window
        self.lags = lags
        self.calendar = calendar
        self.time_zone = time_zone
        self.random_state = random_state
        self.threshold_kind = threshold_kind
        self.threshold_value = threshold_value

    def _fit(self, X: pd.DataFrame, params: IsolationForestParams) -> np.ndarray:
        from sklearn.ensemble import IsolationForest
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import RobustScaler

        self._require_rows(X, max(_MIN_TRAINING_ROWS, 2 * params.window), "two windows at least")
        observed = _require_observed_rows(X)
        self.lookback_ = _lookback(params.window, params.lags)
        self.medians_ = X.median().to_numpy()
        values = fill_missing(X, pd.Series(self.medians_, index=X.columns), limit=_fill_limit(params.window, params.lags))
        forest = IsolationForest(
            n_estimators=params.n_estimators,
            max_samples=params.max_samples,
            max_features=params.max_features,
            random_state=params.random_state,
        )
        imputer = SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True)
        self.model_ = make_pipeline(RobustScaler(), imputer, forest)
        expected = rolling_expected(values, params.window)
        features = self.features(values, expected)
        self.model_.fit(features[observed])
        return self._calibrate_training(X, expected, features, observed)

    def _fit_warm(self, X: pd.DataFrame, params: IsolationForestParams, champion: BaseDetector) -> np.ndarray:
        # The champion's trees split on features scaled by the champion's scaler, so that scaler
        # is kept (refitting it would move every split); new trees are grown on the new window in
        # the same space, and the calibration is learned again on the new window, so scores and
        # threshold describe the forest that will serve. The forest is bounded: a champion that
        # already holds twice n_estimators trees is not extended (the next fit is cold).
        import copy

        self._require_rows(X, max(_MIN_TRAINING_ROWS, 2 * params.window), "two windows at least")
        observed = _require_observed_rows(X)
        forest = champion.model_[-1]
        if len(forest.estimators_) + _warm_trees(params) > 2 * params.n_estimators:
            self.warm_started_ = False
            return self._fit(X, params)
        self.lookback_ = _lookback(params.window, params.lags)
        self.medians_ = X.median().to_numpy()
        values = fill_missing(X, pd.Series(self.medians_, index=X.columns), limit=_fill_limit(params.window, params.lags))
        self.model_ = copy.deepcopy(champion.model_)
        scaler, imputer, forest = self.model_
        expected = rolling_expected(values, params.window)
        features = self.features(values, expected)
        grown = forest.set_params(warm_start=True, n_estimators=len(forest.estimators_) + _warm_trees(params))
        grown.fit(imputer.fit_transform(scaler.transform(features[observed])))
        grown.set_params(warm_start=False)  # a later plain fit of this object must start afresh
        return self._calibrate_training(X, expected, features, observed)

    def _calibrate_training(
        self, X: pd.DataFrame, expected: pd.DataFrame, features: np.ndarray, observed: np.ndarray
    ) -> np.ndarray:
        raw = np.where(observed, -self.model_.score_samples(features), np.nan)
        deviation = np.abs(X.to_numpy() - expected.to_numpy())
        # Deviations are causal (from earlier rows only): in-sample is out of sample for them.
        self.feature_calibrators_ = fit_per_feature(deviation, [str(c) for c in X.columns], type(self).__name__)
        held_back = held_back_rows(len(X), max(_MIN_TRAINING_ROWS, 2 * self.window))
        if held_back and np.count_nonzero(observed[:-held_back]) < _MIN_TRAINING_ROWS:
            held_back = 0  # too few rows with a value before the held-back ones to grow a forest on
        self.calibration_rows_ = held_back
        if held_back:
            from sklearn.base import clone

            # The forest's scores of the latest rows from a forest grown without them.
            head = clone(self.model_).fit(features[:-held_back][observed[:-held_back]])
            tail = np.where(observed[-held_back:], -head.score_samples(features[-held_back:]), np.nan)
            raw = np.concatenate([raw, tail])
            deviation = np.vstack([deviation, deviation[-held_back:]])
        self.row_calibrator_ = ScoreCalibrator().fit(raw)
        combined = self._row_surprise(raw, deviation)
        # Exponential: the largest of surprises already tails exponentially; a fitted shape on top of
        # the row and feature calibrators' own counted the heavy tail twice (as in MSET's row calibrator).
        self.combined_calibrator_ = ScoreCalibrator(exponential_tail=True).fit(combined)
        return self.combined_calibrator_.transform(combined)

    def features(self, values: pd.DataFrame, expected: pd.DataFrame | None = None) -> np.ndarray:
        """The forest's input for gap-filled ``values`` (see :func:`window_features`)."""
        return window_features(
            values, self.window, lags=self.lags, calendar=self.calendar, expected=expected, time_zone=self.time_zone
        ).to_numpy()

    def _feature_scores(self, deviation: np.ndarray) -> np.ndarray:
        return np.column_stack([c.transform(deviation[:, f]) for f, c in enumerate(self.feature_calibrators_)])

    def _row_surprise(self, forest_raw: np.ndarray, deviation: np.ndarray) -> np.ndarray:
        # An isolation forest dilutes one signal far out of range among many normal window
        # features (each split picks that signal rarely), and its path lengths saturate for
        # extreme points; so the row keeps the larger of the forest's surprise and the largest
        # single-feature deviation surprise (unbounded, so extremes stay ranked).
        forest = self.row_calibrator_.surprise(forest_raw)
        features = [c.surprise(deviation[:, f]) for f, c in enumerate(self.feature_calibrators_)]
        largest = np.nan_to_num(np.column_stack(features), nan=0.0).max(axis=1) if features else forest
        return np.maximum(forest, largest)

    def _detect(self, X: pd.DataFrame, history: pd.DataFrame | None) -> Detection:
        frame, n_history = with_history(X, history)
        values = fill_missing(frame, pd.Series(self.medians_, index=X.columns), limit=_fill_limit(self.window, self.lags))
        expected_all = rolling_expected(values, self.window)
        features = self.features(values, expected_all)[n_history:]
        expected = expected_all.to_numpy()[n_history:]
        observed = X.to_numpy()
        deviation = np.abs(observed - expected)
        feature_score = self._feature_scores(deviation)
        if len(X):
            row_raw = self._row_surprise(-self.model_.score_samples(features), deviation)
            row_score = self.combined_calibrator_.transform(row_raw)
        else:  # scikit-learn refuses empty input
            row_score = np.zeros(0)
        half_width = np.array([float(c.inverse(self.threshold_)) for c in self.feature_calibrators_])
        score = np.repeat(row_score[:, None], observed.shape[1], axis=1)
        return make_detection(
            X.index,
            self._feature_list(),
            observed,
            expected,
            np.broadcast_to(half_width, observed.shape),
            score,
            feature_score,
            score >= self.threshold_,
        )

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        model = _skops_io().dumps(self.model_)
        state = {
            "row_calibrator_": self.row_calibrator_.to_dict(),
            "combined_calibrator_": self.combined_calibrator_.to_dict(),
            "feature_calibrators_": [c.to_dict() for c in self.feature_calibrators_],
            "calibration_rows_": self.calibration_rows_,
        }
        return state, {"medians_": self.medians_}, {"model.skops": model}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]) -> None:
        if "model.skops" not in files:
            raise ModelError("the iforest artifact lacks model.skops; it was not written by to_files(): retrain")
        try:
            self.model_ = _skops_io().loads(files["model.skops"], trusted=SKOPS_TRUSTED_TYPES)
        except Exception as exc:  # skops raises several types for untrusted or damaged files
            raise ModelError(f"cannot load the iforest model from model.skops: {exc}; retrain the model") from exc
        self.row_calibrator_ = ScoreCalibrator.from_dict(state["row_calibrator_"])
        self.combined_calibrator_ = ScoreCalibrator.from_dict(state["combined_calibrator_"])
        self.feature_calibrators_ = [ScoreCalibrator.from_dict(c) for c in state["feature_calibrators_"]]
        self.medians_ = arrays["medians_"]
        self.calibration_rows_ = int(state.get("calibration_rows_", 0))  # absent before held-back calibration
        # A model saved before 2026-12-06 asked for window + lags rows of history, too few for the
        # bounded forward fill to score rows in pieces as in one call.
        self.lookback_ = max(self.lookback_, _lookback(self.window, self.lags))

    def summary(self) -> dict[str, Any]:
        forest = self.model_[-1]
        return {
            **super().summary(),
            "n_estimators": len(forest.estimators_),
            "max_samples": int(forest.max_samples_),
            "calibration_rows": self.calibration_rows_,
        }
