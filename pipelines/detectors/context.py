"""A sequence-memory detector: scores how new each step is in the context of the steps before it.

The other detectors judge a value by its distance from an expected value. This one remembers the
*sequences* a signal has gone through, at a coarse resolution, and scores a step high when it
takes the signal somewhere the memory has not seen from there: a spike, a level never visited,
but also an ordinary value at an unusual moment, or a change of rhythm. The memory keeps learning
while it scores, so a new normal stops being new after it has been seen a few times.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from pipelines.detectors.base import BaseDetector, Detection, make_detection
from pipelines.detectors.context_memory import ContextMemory
from pipelines.detectors.params import ContextParams

#: Fewest training rows: the first half fills the memory, the second sets the threshold.
_MIN_TRAINING_ROWS = 50
#: Most contexts a warm start carries on with; beyond, retraining starts a fresh memory.
_MAX_WARM_CONTEXTS = 500_000
#: Most rows of history a score learns from (those after the training rows).
_MAX_LOOKBACK = 10_000


class _Quantiser:
    """Value -> level -> facts, and facts -> level, for one signal.

    The training range plus ``margin`` ranges each side is cut into ``2**bits`` levels; a level
    is given to the memory as its bits (fact ``2 * b + bit`` for bit ``b``). Values outside all
    levels get one more fact, "below" or "above", plus the bits of how many levels out they are:
    new facts, so the memory finds them new whatever it learned.
    """

    def __init__(self, low: float, step: float, bits: int):
        self.low, self.step, self.bits = low, step, bits
        top = 2**bits - 1
        self.lowest, self.highest = -top, 2 * top
        self.facts = [self._facts_of(level, top) for level in range(self.lowest, self.highest + 1)]
        self.level_of = {tuple(sorted(facts)): self.lowest + i for i, facts in enumerate(self.facts)}

    def _facts_of(self, level: int, top: int) -> frozenset[int]:
        extra: set[int] = set()
        if level < 0:
            extra, level = {2 * self.bits}, -level
        elif level > top:
            extra, level = {2 * self.bits + 1}, level - top
        return frozenset(extra | {2 * b + ((level >> b) & 1) for b in range(self.bits)})

    def level(self, value: float) -> int:
        position = (value - self.low) / self.step
        if position < self.lowest:  # compared before floor(), which refuses infinities
            return self.lowest
        return self.highest if position >= self.highest else math.floor(position)


class _Stream:
    """Where scoring one signal's rows stands: its memory, the rows since the last raw score
    that started a rest, and the last level seen."""

    def __init__(self, memory: ContextMemory, since_high: int, last_level: int):
        self.memory, self.since_high, self.last_level = memory, since_high, last_level

    def copy(self) -> _Stream:
        return _Stream(self.memory.copy(), self.since_high, self.last_level)


class ContextDetector(BaseDetector):
    """Contextual sequence memory per feature, after the Contextual Anomaly Detector (CAD OSE).

    Each feature's values are quantised to ``2**value_bits`` levels over its training range
    widened by ``margin`` ranges on each side (a coarse grid: the memory learns the shape of
    the sequence, not its noise). A :class:`~pipelines.detectors.context_memory.ContextMemory`
    learns the sequence of levels online and gives each step a raw score in [0, 1]: half the
    share of the remembered contexts the step failed to confirm, plus half the share of new
    contexts it made. After a raw score of ``rest_above`` the next ``rest_rows`` rows score 0,
    as in CAD: one anomaly is reported once, at its start.

    The raw score is the score: it is a share with the same meaning on every series, and CAD
    OSE's own cut (0.75) is one. It is *not* passed through the empirical-CDF calibration of the
    other detectors: the memory's steady score creeps as it learns, so steps after training sat
    in the tail of the training scores' CDF (on NAB, CDF-calibrated scores reached 0.99 on
    ordinary rows and the best swept threshold scored 0.0, against 56.1 for the raw scores).

    ``fit`` runs the memory over the training rows; the raw scores of their second half (each
    row scored before it was learned) give the threshold. With ``contamination`` or
    ``false_alarm_probability`` the threshold is at least ``rest_above``: a step the memory rates
    below what starts a rest is not an anomaly for it, whatever share of training rows reached
    it. A ``score`` threshold is taken as given. A warm start (retraining with the serving model
    as ``warm_start``) continues that model's memory and levels over the rows it has not
    learned, when they fit in its levels; otherwise the fit is cold. ``detect``
    continues a copy of the fitted memory over the rows of ``history`` that came after the
    training rows, then over ``X``, learning as it goes; the fitted model is not changed.

    ``expected`` is the middle of the level the memory predicted from the previous step (the
    level of the most confirmed remembered context, or the previous row's level when none
    predicted one), ``lower``/``upper`` that level's edges.

    Parameters
    ----------
    value_bits, margin, rest_rows, rest_above, max_left_facts, max_active, value_range :
        See :class:`~pipelines.detectors.params.ContextParams`.
    threshold_kind, threshold_value :
        See :class:`~pipelines.config.ThresholdConfig`.

    Attributes
    ----------
    low_, step_ : ndarray of shape (n_features_in_,)
        Lower edge of level 0 and width of a level, per feature.
    streams_ : list
        The fitted memory of each feature and where its scoring stood after the training rows.
    training_end_ : pandas.Timestamp or int
        Index of the last training row: history up to it is already learned.
    """

    kind = "context"
    params_model = ContextParams
    supports_warm_start = True

    def __init__(
        self,
        *,
        value_bits: int = 3,
        margin: float = 1.0,
        rest_rows: int = 150,
        rest_above: float = 0.75,
        max_left_facts: int = 7,
        max_active: int = 15,
        value_range: tuple[float, float] | None = None,
        threshold_kind: str = "contamination",
        threshold_value: float = 0.005,
    ):
        self.value_bits = value_bits
        self.margin = margin
        self.rest_rows = rest_rows
        self.rest_above = rest_above
        self.max_left_facts = max_left_facts
        self.max_active = max_active
        self.value_range = value_range
        self.threshold_kind = threshold_kind
        self.threshold_value = threshold_value

    def _fit(self, X: pd.DataFrame, params: ContextParams) -> np.ndarray:
        self._require_rows(X, _MIN_TRAINING_ROWS, "half of them fill the memory, half calibrate its scores")
        values = X.to_numpy()
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        span = high - low
        span = np.where(span > 0, span, np.maximum(np.abs(high), 1.0))  # a flat series: a level of its own size
        self.low_ = low - params.margin * span
        self.step_ = (1.0 + 2.0 * params.margin) * span / (2**params.value_bits - 1)
        if params.value_range is not None:
            given_low, given_high = params.value_range
            self.low_ = np.full(X.shape[1], float(given_low))
            self.step_ = np.full(X.shape[1], (given_high - given_low) / (2**params.value_bits - 1))
        self._make_quantisers()
        self.streams_ = [
            _Stream(ContextMemory(params.max_left_facts, params.max_active), params.rest_rows, 0) for _ in range(X.shape[1])
        ]
        raw, _ = self._run(self.streams_, values)
        self.training_end_ = X.index[-1]
        self.lookback_ = min(len(X), _MAX_LOOKBACK)
        return raw[len(X) // 2 :]

    def _fit_warm(self, X: pd.DataFrame, params: ContextParams, champion: BaseDetector) -> np.ndarray:
        assert isinstance(champion, ContextDetector)
        unseen = X.loc[X.index > champion.training_end_]
        values = unseen.to_numpy()
        top = champion.low_ + 2**params.value_bits * champion.step_
        within = bool(np.all((np.nanmin(values, axis=0) >= champion.low_) & (np.nanmax(values, axis=0) < top))) if len(values) else False
        if len(unseen) < _MIN_TRAINING_ROWS // 2 or not within or sum(s.memory.contexts for s in champion.streams_) > _MAX_WARM_CONTEXTS:
            self.warm_started_ = False
            return self._fit(X, params)
        self.low_, self.step_ = champion.low_.copy(), champion.step_.copy()
        self._make_quantisers()
        self.streams_ = [stream.copy() for stream in champion.streams_]
        raw, _ = self._run(self.streams_, values)
        self.training_end_ = X.index[-1]
        self.lookback_ = min(len(X), _MAX_LOOKBACK)
        return raw

    def fit(self, X: pd.DataFrame, *, warm_start: BaseDetector | None = None) -> ContextDetector:
        super().fit(X, warm_start=warm_start)
        if self.threshold_kind != "score":
            self.threshold_ = max(self.threshold_, float(self.rest_above))
        return self

    def _make_quantisers(self) -> None:
        self.quantisers_ = [_Quantiser(float(low), float(step), self.value_bits) for low, step in zip(self.low_, self.step_, strict=True)]

    def _run(self, streams: list[_Stream], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step every feature's stream through ``values``; the raw scores (0 in a rest or where a
        value is missing) and the level expected at each row."""
        raw = np.zeros(values.shape)
        expected = np.zeros(values.shape, dtype=np.int64)
        for f, (stream, quantiser) in enumerate(zip(streams, self.quantisers_, strict=True)):
            memory, facts, level_of = stream.memory, quantiser.facts, quantiser.level_of
            since_high, last_level, lowest = stream.since_high, stream.last_level, quantiser.lowest
            column_raw, column_expected = raw[:, f], expected[:, f]
            for i, value in enumerate(values[:, f].tolist()):
                if value != value:  # missing: nothing to learn, nothing to score
                    column_expected[i] = last_level
                    continue
                level = quantiser.level(value)
                score, predicted = memory.step(facts[level - lowest])
                column_expected[i] = level_of.get(predicted, last_level) if predicted else last_level
                column_raw[i] = score if since_high >= self.rest_rows else 0.0
                since_high = 0 if score >= self.rest_above else since_high + 1
                last_level = level
            stream.since_high, stream.last_level = since_high, last_level
        return raw, expected

    def _detect(self, X: pd.DataFrame, history: pd.DataFrame | None) -> Detection:
        streams = [stream.copy() for stream in self.streams_]
        if history is not None:
            unseen = history.loc[history.index > self.training_end_]
            if len(unseen):
                self._run(streams, unseen.to_numpy())
        values = X.to_numpy()
        raw, level = self._run(streams, values)
        score = raw
        lower = self.low_ + level * self.step_
        return make_detection(
            X.index,
            list(X.columns),
            values,
            lower + self.step_ / 2.0,
            np.broadcast_to(self.step_ / 2.0, values.shape),
            score,
            score,
            score >= self.threshold_,
        )

    # -- artifacts ------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        arrays: dict[str, np.ndarray] = {"low_": self.low_, "step_": self.step_}
        for f, stream in enumerate(self.streams_):
            arrays.update({f"memory{f}_{name}": array for name, array in stream.memory.to_arrays().items()})
        time_indexed = isinstance(self.training_end_, pd.Timestamp)
        state = {
            "since_high_": [s.since_high for s in self.streams_],
            "last_level_": [s.last_level for s in self.streams_],
            "training_end_": self.training_end_.isoformat() if time_indexed else int(self.training_end_),
        }
        return state, arrays, {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]) -> None:
        self.low_, self.step_ = arrays["low_"], arrays["step_"]
        self._make_quantisers()
        end = state["training_end_"]
        self.training_end_ = pd.Timestamp(end) if isinstance(end, str) else int(end)
        self.streams_ = []
        for f, (since_high, last_level) in enumerate(zip(state["since_high_"], state["last_level_"], strict=True)):
            prefix = f"memory{f}_"
            own = {name.removeprefix(prefix): array for name, array in arrays.items() if name.startswith(prefix)}
            memory = ContextMemory.from_arrays(own, self.max_left_facts, self.max_active)
            self.streams_.append(_Stream(memory, int(since_high), int(last_level)))

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "levels": 2**self.value_bits,
            "level_width": [float(step) for step in self.step_],
            "contexts": [stream.memory.contexts for stream in self.streams_],
        }
