"""What every detector is: a scikit-learn style estimator that fits on a frame of features and
returns a :class:`Detection` for the rows it scores."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import ValidationError
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from pipelines.config import ThresholdConfig
from pipelines.detectors.calibration import decision_threshold
from pipelines.detectors.params import LARGEST_VALUE, DetectorParams
from pipelines.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 1
_SCORE_QUANTILES = (0.5, 0.9, 0.99, 0.999, 1.0)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare fields yourself
class Detection:
    """Result of scoring rows: arrays of shape ``(n_rows, n_features)`` aligned with ``index``
    and ``features``.

    ``score`` and ``feature_score`` are calibrated to [0, 1] (higher = more anomalous) and are 0
    where ``values`` is missing; an infinite value scores 1 and is an anomaly (see
    :class:`BaseDetector`); ``lower`` and ``upper`` are where the score of a feature would reach
    the detector's threshold. ``expected``, ``lower`` and ``upper`` are NaN where the detector has
    no estimate of a feature (MSET's signals dropped as missing or unmeasurable).
    """

    index: pd.Index
    features: list[str]
    values: np.ndarray
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    score: np.ndarray
    feature_score: np.ndarray
    is_anomaly: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """Long form: one row per (row, feature), in time order then feature order."""
        n_features = len(self.features)
        return pd.DataFrame(
            {
                "timestamp": self.index.repeat(n_features),
                "feature": np.tile(np.asarray(self.features, dtype=object), len(self.index)),
                "value": self.values.ravel(),
                "expected": self.expected.ravel(),
                "lower": self.lower.ravel(),
                "upper": self.upper.ravel(),
                "score": self.score.ravel(),
                "feature_score": self.feature_score.ravel(),
                "is_anomaly": self.is_anomaly.ravel(),
            }
        )


def with_history(X: pd.DataFrame, history: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    """The rows of ``history`` (if any) then those of ``X`` as one frame, and how many came from
    ``history``."""
    if history is None:
        return X, 0
    return pd.concat([history, X]), len(history)


def _as_saved(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as a model read from its files holds them: JSON has no tuples, so a range given
    as a tuple comes back a list, and the same settings compared unequal (every warm start from a
    served model was cold)."""
    return {name: list(value) if isinstance(value, tuple) else value for name, value in params.items()}


#: Relative difference from a value seen in training below which a scored value is that same value.
#: A constant that went through text or an aggregation comes back a few units in the last place off
#: (the mean of three readings of 0.1 is 0.10000000000000002): the same reading, not a change. 1e-9
#: is millions of such units, and far below any change of a sensor or a setting. Being relative, a
#: constant of 0 allows no other value: an error counter leaving 0 is a change.
SAME_VALUE_RTOL = 1e-9


def unseen_values(values: np.ndarray, *seen: np.ndarray | float) -> np.ndarray:
    """Where ``values`` differ from every one of ``seen`` (each broadcast against ``values``) by
    more than :data:`SAME_VALUE_RTOL`: a value training never held. A missing value, or a NaN in
    ``seen``, compares as no change."""
    with np.errstate(invalid="ignore"):
        return np.logical_and.reduce([np.abs(values - known) > SAME_VALUE_RTOL * np.abs(known) for known in seen])


def make_detection(
    index: pd.Index,
    features: list[str],
    values: np.ndarray,
    expected: np.ndarray,
    half_width: np.ndarray,
    score: np.ndarray,
    feature_score: np.ndarray,
    is_anomaly: np.ndarray,
    below: np.ndarray | None = None,
) -> Detection:
    """A :class:`Detection` where missing values score 0 and are never anomalies.

    The bounds are ``expected ± half_width``, or ``expected - below`` under it when given.
    """
    missing = np.isnan(values)
    if missing.any():
        same = feature_score is score
        score = np.where(missing, 0.0, score)
        feature_score = score if same else np.where(missing, 0.0, feature_score)
        is_anomaly = ~missing & is_anomaly
    return Detection(
        index=index,
        features=list(features),
        values=values,
        expected=expected,
        lower=expected - (half_width if below is None else below),
        upper=expected + half_width,
        score=score,
        feature_score=feature_score,
        is_anomaly=is_anomaly,
    )


class BaseDetector(BaseEstimator, metaclass=ABCMeta):
    """Base of all detectors: parameter checks, input checks, threshold, artifacts.

    Subclasses take their own parameters (those of their :attr:`params_model`) plus
    ``threshold_kind`` and ``threshold_value`` as keyword-only ``__init__`` arguments, store
    them unchanged, and implement ``_fit``, ``_detect``, ``_state`` and ``_restore``.

    Infinite values (+inf or -inf) follow one rule for every detector, applied here so that no
    ``_fit`` or ``_detect`` ever sees one: numeric libraries (scikit-learn, Prophet, torch) refuse
    them or turn them into NaN statistics, while an overflowing sensor or a division by zero
    upstream is just what people want flagged. In :meth:`fit` an infinite value is not a
    measurement: it is treated as missing, and a feature with no finite training value is refused
    like one with no value at all. In :meth:`detect` it is beyond anything seen: the detector
    scores the rows (and history) with it missing, then that cell gets ``feature_score`` 1, its
    row ``score`` 1 and ``is_anomaly`` True (every feature of the row with a value, for a detector
    that scores whole rows), whatever the threshold; ``values`` keeps the infinity, and
    ``expected``, ``lower`` and ``upper`` stay what the detector estimated from the other values.

    Attributes
    ----------
    threshold_ : float
        Calibrated score from which a point is an anomaly (``score >= threshold_``).
    lookback_ : int
        Rows of history :meth:`detect` uses before the first scored row.
    n_features_in_ : int
        Number of features seen in :meth:`fit`.
    feature_names_in_ : ndarray of str
        Names of the features seen in :meth:`fit`, in order.
    training_rows_ : int
        Rows the detector was fitted on.
    time_indexed_ : bool
        Whether the training index was a DatetimeIndex (else row numbers).
    training_score_quantiles_ : dict of str to float
        Quantiles of the calibrated training scores that decide anomalies.
    warm_started_ : bool
        Whether :meth:`fit` started from a champion's learned state (see ``warm_start``).
    """

    kind: ClassVar[str]
    params_model: ClassVar[type[DetectorParams]]
    #: Whether the detector models calendar time and so cannot fit rows indexed by row numbers.
    requires_timestamps: ClassVar[bool] = False
    #: Whether :meth:`fit` can start from a fitted detector of the same kind (``_fit_warm``).
    supports_warm_start: ClassVar[bool] = False
    #: Whether ``_fit`` drops a feature with no value in the training rows itself (with a reason
    #: it records) rather than :meth:`fit` refusing the training.
    drops_empty_features: ClassVar[bool] = False
    #: Parameters renamed since models were saved: old name -> new name (:meth:`from_files`).
    renamed_params: ClassVar[dict[str, str]] = {}

    @property
    def history_after_training(self) -> bool:
        """Whether :meth:`detect` uses only the history after the training rows (the rest of
        :attr:`lookback_` it would ignore): a scheduled run then reads no more than that."""
        return False

    def __sklearn_is_fitted__(self) -> bool:
        # fit and from_files set this attribute last. scikit-learn's default lists every
        # attribute of the detector instead.
        return hasattr(self, "training_score_quantiles_")

    def _feature_list(self) -> list[str]:
        """The names of the features seen in :meth:`fit`, as text, in order: scoring names its
        :class:`Detection`'s features by them rather than by the frame's columns, whose Arrow
        strings cost a third of a short score's wrapper time to read (the checks read them once)."""
        return [str(c) for c in self.feature_names_in_]

    def _check_fitted(self) -> None:
        """scikit-learn's ``check_is_fitted``, its error and message, without its per-call cost:
        it builds the estimator's tags on every call, a tenth of a short score's wrapper time."""
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    # -- fitting --------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, *, warm_start: BaseDetector | None = None) -> Self:
        """Learn the model, its score calibration and its threshold from ``X``.

        ``X`` has one column per feature and a sorted UTC DatetimeIndex or a RangeIndex; a few
        missing values are tolerated. ``warm_start``: a fitted detector (the champion) to start
        from when :meth:`can_warm_start_from` allows it and it was fitted on the same kind of index
        (timestamps or row numbers); otherwise the fit is cold.
        :attr:`warm_started_` says which it was. Calibration and threshold always come from ``X``.
        """
        params, policy = self._check_params()
        X = _check_frame(X, "X")
        if X.columns.empty:
            raise ModelError(f"{type(self).__name__}: X has no feature columns; pass at least one")
        names = _column_names(X)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:  # scoring finds features by name: two columns of one name cannot be told apart
            raise ModelError(f"{type(self).__name__}: X has repeated feature columns {repeated}; give each feature one column")
        X, _ = _without_infinities(X)
        empty = [name for name, seen in zip(names, np.isfinite(X.to_numpy()).any(axis=0).tolist(), strict=True) if not seen]
        if empty and not self.drops_empty_features:
            raise ModelError(
                f"{type(self).__name__}: features {empty} have no values in the training rows (each one is "
                f"missing or infinite, or too large to compute with: |value| >= {_TOO_LARGE:.3g}); fix them at "
                "the source, or leave them out of the job's features"
            )
        self.time_indexed_ = isinstance(X.index, pd.DatetimeIndex)
        # A champion fitted on the other kind of index learned from other inputs (iforest's
        # calendar features exist only with timestamps, context compares its training end with
        # the new index): starting from it crashed inside scikit-learn or pandas, so the fit is cold.
        self.warm_started_ = (
            warm_start is not None
            and getattr(warm_start, "time_indexed_", None) == self.time_indexed_
            and self.can_warm_start_from(warm_start, list(X.columns))
        )
        if self.warm_started_:
            decision_scores = self._fit_warm(X, params, warm_start)
        else:
            decision_scores = self._fit(X, params)
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.training_rows_ = len(X)
        self.threshold_ = self._decision_threshold(decision_scores, policy)
        finite = decision_scores[np.isfinite(decision_scores)]
        self.training_score_quantiles_ = {str(q): float(np.quantile(finite, q)) for q in _SCORE_QUANTILES}
        log.info(
            "%s fitted on %d rows x %d features; threshold %.6f",
            type(self).__name__,
            len(X),
            X.shape[1],
            self.threshold_,
        )
        return self

    def _decision_threshold(self, decision_scores: np.ndarray, policy: ThresholdConfig) -> float:
        """The threshold from the scores ``_fit`` returned, by the job's policy: the same rule for
        every detector (:func:`~pipelines.detectors.calibration.decision_threshold`) unless a
        detector's scores need their own."""
        return decision_threshold(decision_scores, policy.kind, policy.value)

    def _check_params(self) -> tuple[DetectorParams, ThresholdConfig]:
        values = self.get_params()
        threshold = {"kind": values.pop("threshold_kind"), "value": values.pop("threshold_value")}
        try:
            params = self.params_model(**values)
        except ValidationError as exc:
            # An empty location is a check of the parameters together, whose message names them.
            raise self._invalid(exc, lambda loc: str(loc[0]) if loc else None) from None
        try:
            policy = ThresholdConfig(**threshold)
        except ValidationError as exc:
            # The range check of ThresholdConfig is about the value, whatever the kind.
            raise self._invalid(exc, lambda loc: f"threshold_{loc[0]}" if loc else "threshold_value") from None
        return params, policy

    def _invalid(self, exc: ValidationError, name_of: Any) -> ConfigError:
        given = self.get_params()
        problems = []
        for err in exc.errors():
            name = name_of(err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            problems.append(message if name is None else f"parameter {name!r}: {message} (got {given.get(name)!r})")
        return ConfigError(
            f"invalid {type(self).__name__} ({self.kind!r}) parameters: {'; '.join(problems)}. "
            "Fix them in the job's model settings."
        )

    def _require_rows(self, X: pd.DataFrame, needed: int, reason: str) -> None:
        if len(X) < needed:
            raise ModelError(
                f"{type(self).__name__} needs at least {needed} training rows ({reason}); got {len(X)}. "
                "Widen the training window or wait for more data."
            )

    @abstractmethod
    def _fit(self, X: pd.DataFrame, params: Any) -> np.ndarray:
        """Learn the model from checked input; return the calibrated training scores that
        :attr:`threshold_` is taken from."""

    def can_warm_start_from(self, other: BaseDetector, features: list[str]) -> bool:
        """Whether :meth:`fit` on ``features`` may start from ``other``: a fitted detector of the
        same kind, parameters and features, of a kind that supports it."""
        return (
            self.supports_warm_start
            and type(other) is type(self)
            and hasattr(other, "threshold_")
            and _as_saved(other.get_params()) == _as_saved(self.get_params())
            and other._feature_list() == [str(c) for c in features]
        )

    def _fit_warm(self, X: pd.DataFrame, params: Any, champion: BaseDetector) -> np.ndarray:
        """Like :meth:`_fit`, starting from ``champion``'s learned state (same kind and params)."""
        raise NotImplementedError(f"{type(self).__name__} does not support warm starts")

    def training_anomaly_rate(self, X: pd.DataFrame) -> float:
        """Share of the timestamps of ``X``, the rows this model was fitted on, that it flags (any
        feature): the anomaly rate its threshold implies, which monitoring compares served rates
        with. By default the rows are scored again; a detector whose scoring learns from the rows
        it scores measures the rate during the fit instead (``ContextDetector``)."""
        if not len(X):
            # The mean of no rows is NaN, which monitoring took for the expected rate of every later run.
            raise ModelError(
                f"{type(self).__name__}: X has no rows to measure the training anomaly rate on; "
                "pass the rows the model was fitted on"
            )
        return float(self.detect(X).is_anomaly.any(axis=1).mean())

    # -- scoring --------------------------------------------------------------------------

    def detect(self, X: pd.DataFrame, history: pd.DataFrame | None = None) -> Detection:
        """Score exactly the rows of ``X``.

        ``history`` holds rows right before ``X`` (only the last :attr:`lookback_` are used) so
        that windowed statistics at the start of ``X`` match those of one longer call; without
        it the first rows use what exists. The model is not changed. An infinite value is an
        anomaly of score 1 (see :class:`BaseDetector`).
        """
        self._check_fitted()
        X = self._check_features(_check_frame(X, "X"), "X")
        if history is not None and len(history):
            history = self._check_features(_check_frame(history, "history"), "history").iloc[-self.lookback_ :]
            if len(X) and history.index[-1] >= X.index[0]:
                raise ModelError(
                    f"history must end before the first scored row ({X.index[0]}), but it reaches "
                    f"{history.index[-1]}; pass only earlier rows as history"
                )
            history, _ = _without_infinities(history)
        else:
            history = None  # not an empty frame: slicing one costs more than the checks above
        finite_X, infinite = _without_infinities(X)
        detection = self._detect(finite_X, history)
        return detection if infinite is None else _flag_infinite(detection, X.to_numpy(), infinite)

    def _check_features(self, frame: pd.DataFrame, what: str) -> pd.DataFrame:
        expected = self._feature_list()
        columns = _column_names(frame)
        if columns == expected:  # the usual case: no renamed copy, no reordering (fit refused repeats)
            self._check_index_kind(frame, what)
            return frame
        repeated = sorted({name for name in columns if columns.count(name) > 1})
        if repeated:
            # fit refuses them too: scoring silently read the first of two "b" columns (or one of
            # MSET's reindexing failed on the history), and which one was meant cannot be told.
            raise ModelError(f"{what} has repeated feature columns {repeated}; give each feature one column")
        missing = [c for c in expected if c not in columns]
        extra = [c for c in columns if c not in expected]
        if missing or (extra and what == "X"):
            raise ModelError(
                f"{what} must have exactly the features the detector was fitted on {expected}: "
                f"missing {missing}, extra {extra}. Score with the same feature columns, or retrain."
            )
        self._check_index_kind(frame, what)
        return frame.set_axis(columns, axis=1)[expected]

    def _check_index_kind(self, frame: pd.DataFrame, what: str) -> None:
        if isinstance(frame.index, pd.DatetimeIndex) != self.time_indexed_:
            fitted = "timestamps" if self.time_indexed_ else "row numbers"
            raise ModelError(f"{what} must be indexed by {fitted}, like the training data")

    @abstractmethod
    def _detect(self, X: pd.DataFrame, history: pd.DataFrame | None) -> Detection:
        """Score ``X`` with checked columns; ``history`` is checked, and None rather than empty
        (:func:`with_history` joins them)."""

    # -- artifacts ------------------------------------------------------------------------

    def to_files(self) -> dict[str, bytes]:
        """The fitted detector as files (JSON and npz, plus skops for scikit-learn objects)."""
        self._check_fitted()
        state, arrays, extra = self._state()
        meta = {
            "format": ARTIFACT_FORMAT,
            "kind": self.kind,
            "params": self.get_params(),
            "learned": {
                "threshold_": self.threshold_,
                "lookback_": self.lookback_,
                "feature_names_in_": self._feature_list(),
                "training_rows_": self.training_rows_,
                "time_indexed_": self.time_indexed_,
                "training_score_quantiles_": self.training_score_quantiles_,
                "warm_started_": bool(getattr(self, "warm_started_", False)),
                **state,
            },
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return {
            "detector.json": json.dumps(meta, indent=2, sort_keys=True, default=_json_scalar).encode(),
            "arrays.npz": buffer.getvalue(),
            **extra,
        }

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> Self:
        """Inverse of :meth:`to_files`."""
        missing = [name for name in ("detector.json", "arrays.npz") if name not in files]
        if missing:
            raise ModelError(f"the model artifact lacks {missing}; it was not written by to_files(): retrain")
        try:
            meta = json.loads(files["detector.json"])
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError named no file
            raise ModelError(f"the model artifact's detector.json is damaged ({type(exc).__name__}: {exc}): retrain") from exc
        if not isinstance(meta, dict):
            raise ModelError(f"the model artifact's detector.json holds a {type(meta).__name__}, not a detector's settings: retrain")
        if meta.get("kind") != cls.kind or meta.get("format") != ARTIFACT_FORMAT:
            raise ModelError(
                f"the model artifact holds a {meta.get('kind')!r} detector in format {meta.get('format')}, "
                f"not a {cls.kind!r} detector in format {ARTIFACT_FORMAT}: load it with its own kind, or retrain"
            )
        detector = cls(**{cls.renamed_params.get(name, name): value for name, value in meta["params"].items()})
        learned = meta["learned"]
        try:
            with np.load(io.BytesIO(files["arrays.npz"]), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a truncated or bit-flipped archive
            raise ModelError(f"the model artifact's arrays.npz is damaged ({type(exc).__name__}: {exc}): retrain") from exc
        detector.threshold_ = float(learned["threshold_"])
        detector.lookback_ = int(learned["lookback_"])
        detector.feature_names_in_ = np.asarray(learned["feature_names_in_"], dtype=object)
        detector.n_features_in_ = len(detector.feature_names_in_)
        detector.training_rows_ = int(learned["training_rows_"])
        detector.time_indexed_ = bool(learned["time_indexed_"])
        detector.training_score_quantiles_ = dict(learned["training_score_quantiles_"])
        detector.warm_started_ = bool(learned.get("warm_started_", False))  # absent before warm starts existed
        detector._restore(learned, arrays, files)
        return detector

    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        """Learned state beyond the common one: JSON-able values, arrays, extra files."""

    @abstractmethod
    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]) -> None:
        """Set the learned attributes back from what :meth:`_state` returned."""

    def summary(self) -> dict[str, Any]:
        """JSON-able facts about the fitted detector, for the model's metadata."""
        self._check_fitted()
        return {
            "kind": self.kind,
            "features": self._feature_list(),
            "training_rows": self.training_rows_,
            "threshold_kind": self.threshold_kind,
            "threshold_value": self.threshold_value,
            "threshold": self.threshold_,
            "lookback": self.lookback_,
            "training_score_quantiles": self.training_score_quantiles_,
        }


def _json_scalar(value: Any) -> Any:
    # Parameters from tuning grids may be numpy scalars.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


#: Magnitudes taken as infinite: beyond it a square overflows float64, so variances, distances
#: and rolling statistics of the value turn infinite inside the detectors (scikit-learn then
#: refused the rows; MSET's similarity of every row went to 0). Such numbers are no measurement;
#: ``-1.7e308`` is a common "no data" marker.
_TOO_LARGE = LARGEST_VALUE


def _without_infinities(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray | None]:
    """``frame`` with its infinite values (and those too large to compute with, see
    :data:`_TOO_LARGE`) missing, and where they were (None when nowhere: the frame is then
    returned as it is, without a copy)."""
    values = frame.to_numpy()
    # The usual frame has none: two reductions that ignore NaN tell it without a temporary array.
    if values.size == 0 or (np.fmax.reduce(values, axis=None) < _TOO_LARGE and np.fmin.reduce(values, axis=None) > -_TOO_LARGE):
        return frame, None
    with np.errstate(invalid="ignore"):
        infinite = np.abs(values) >= _TOO_LARGE
    if not infinite.any():
        return frame, None
    return frame.mask(infinite), infinite


def _flag_infinite(detection: Detection, values: np.ndarray, infinite: np.ndarray) -> Detection:
    """``detection``, made from the rows with their infinite values missing, with those values
    put back as anomalies of score 1 (the rule in :class:`BaseDetector`)."""
    feature_score = np.where(infinite, 1.0, detection.feature_score)
    if detection.feature_score is detection.score:  # scored cell by cell (make_detection keeps them one array)
        score, flagged = feature_score, infinite
    else:
        # One score per row, repeated over the row's features except where a value is missing:
        # the whole row is anomalous, as for any other row the detector flags.
        flagged = infinite.any(axis=1, keepdims=True) & ~np.isnan(values)
        score = np.where(flagged, 1.0, detection.score)
    return replace(
        detection,
        values=np.where(infinite, values, detection.values),
        score=score,
        feature_score=feature_score,
        is_anomaly=detection.is_anomaly | flagged,
    )


def _column_dtypes(frame: pd.DataFrame) -> list[Any]:
    """The dtype of each column of ``frame``, in order.

    ``DataFrame.dtypes`` builds a Series of them, which took 0.1 ms with the caches cold after
    scoring: 5 % of a 10,000-row seasonal_mad score. pandas' block manager lists them without
    it; ``DataFrame.dtypes`` (public) serves if a pandas release drops that private method.
    """
    get_dtypes = getattr(getattr(frame, "_mgr", None), "get_dtypes", None)
    return list(get_dtypes()) if callable(get_dtypes) else frame.dtypes.tolist()


def _column_names(frame: pd.DataFrame) -> list[str]:
    """The names of the columns of ``frame`` as text, in order.

    pandas 3 keeps string column names in Arrow, and iterating them builds one Arrow scalar per
    name: 75 µs with the caches cold after scoring (3 % of a 10,000-row seasonal_mad score), where
    one Arrow call lists them in 25. Any other names, a name missing in Arrow, or a pandas release
    that stores them otherwise take the public path.
    """
    columns = frame.columns
    arrow = getattr(columns.array, "_pa_array", None) if isinstance(columns.dtype, pd.StringDtype) else None
    if arrow is not None and getattr(arrow, "null_count", 1) == 0:
        return [str(name) for name in arrow.to_pylist()]
    return [str(c) for c in columns]


def _check_frame(frame: Any, what: str) -> pd.DataFrame:
    """``frame`` as float64, after checking its type and index."""
    if not isinstance(frame, pd.DataFrame):
        raise ModelError(f"{what} must be a pandas DataFrame with one column per feature, got {type(frame).__name__}")
    index = frame.index
    if isinstance(index, pd.DatetimeIndex):
        if index.tz is None:
            raise ModelError(f"{what} has a timezone-naive DatetimeIndex; localize it to UTC first")
        if str(index.tz) != "UTC":
            frame = frame.set_axis(index.tz_convert("UTC"))
    elif not pd.api.types.is_integer_dtype(index.dtype):
        raise ModelError(f"{what} must be indexed by UTC timestamps or row numbers, got a {type(index).__name__}")
    if not (frame.index.is_monotonic_increasing and frame.index.is_unique):
        raise ModelError(f"{what} must be sorted by its index without duplicates ({_disorder(frame.index)}); sort it and drop repeated rows")
    dtypes = _column_dtypes(frame)
    # The usual frame, all float64, is returned without reading its column names: with string
    # columns that costs more than the rest of these checks.
    if all(dtype == "float64" for dtype in dtypes):
        return frame
    text = [str(c) for c, dtype in zip(frame.columns, dtypes, strict=True) if not pd.api.types.is_numeric_dtype(dtype)]
    if text:
        raise ModelError(f"{what} has non-numeric feature columns {text}; features must be numbers")
    # A copy only when some column is not float64 yet: scoring never writes into the frame.
    return frame.astype("float64")


def _disorder(index: pd.Index) -> str:
    """Where ``index`` first repeats or goes back, and how often, for an error a user can act on."""
    repeated = index[index.duplicated()].unique()
    steps = np.flatnonzero(np.asarray(index[1:] < index[:-1]))
    parts = []
    if len(repeated):
        parts.append(f"{len(repeated)} repeated, first {', '.join(str(v) for v in repeated[:3])}")
    if len(steps):
        parts.append(f"{len(steps)} going back, first at position {steps[0] + 1} ({index[steps[0] + 1]} after {index[steps[0]]})")
    return "; ".join(parts)
