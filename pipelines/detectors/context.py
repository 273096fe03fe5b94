"""A sequence-memory detector: scores how new each step is in the context of the steps before it.

The other detectors judge a value by its distance from an expected value. This one remembers the
*sequences* a signal has gone through, at a coarse resolution, and scores a step high when it
takes the signal somewhere the memory has not seen from there: a spike, a level never visited,
but also an ordinary value at an unusual moment, or a change of rhythm. The memory keeps learning
while it scores, so a new normal stops being new after it has been seen a few times.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import ThresholdConfig
from pipelines.detectors.base import BaseDetector, Detection, make_detection
from pipelines.detectors.calibration import decision_threshold
from pipelines.detectors.context_memory import ContextMemory
from pipelines.detectors.params import ContextParams
from pipelines.durations import rows_spanned
from pipelines.errors import UntimedDuration

log = logging.getLogger(__name__)

#: Fewest training rows: the first half fills the memory, the second sets the threshold.
_MIN_TRAINING_ROWS = 50
#: Most contexts a warm start carries on with; beyond, retraining starts a fresh memory.
_MAX_WARM_CONTEXTS = 500_000
#: Rows of history every score asks for: the memory continues over each row after its
#: training rows, so this caps the rows between a training and the rows it scores (a row
#: missing from the history would make a score depend on how the rows were split into calls).
_MAX_LOOKBACK = 10_000
#: Most recent rows the memory relearns when its levels widen. A cost cap: every scoring call
#: starts from the fitted model, so a series that has left the fitted levels widens them again
#: at each call; 2,000 rows take about 0.3 s. On NAB (streaming prototype, swept) 1,200 rows
#: scored 66.0, 3,000 66.8 and 10,000 66.2: within a point from 1,200 up.
_RELEARN_ROWS = 2_000
#: Fewest calibration rows a contamination or false-alarm cut is estimated from (see ``fit``).
_TAIL_ROWS = 10


class _Quantiser:
    """Value -> level -> facts, and facts -> level, for one signal.

    The training range plus ``margin`` ranges each side is cut into ``2**bits - 1`` steps, and
    the ``2**bits`` levels start at its low end: level 0 begins at the minimum, the top level
    begins at the maximum and reaches one step past it. A level is given to the memory as its
    bits (fact ``2 * b + bit`` for bit ``b``). Values outside all levels get one more fact,
    "below" or "above", plus the bits of how many levels out they are: new facts, so the memory
    finds them new whatever it learned.

    The ends are not alike, and that is measured, not an accident left in: a value a hair under
    the minimum is beyond every level, one up to a step over the maximum is not. Both symmetric
    cuts scored lower on NAB's whole corpus (docs/BENCHMARKS.md, "NAB: what was changed"): half
    a step of room at each end found 9 fewer of 101 windows (dips just under the range seen), no room
    at either end added 58 false-alarm rows (new highs by a little are most metrics' ordinary
    right tail).
    """

    def __init__(self, low: float, step: float, bits: int):
        self.low, self.step, self.bits = low, step, bits
        self.top = top = 2**bits - 1
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

    @classmethod
    def spanning(cls, low: float, high: float, margin: float, bits: int) -> _Quantiser:
        """Levels over [low, high] widened by ``margin`` ranges on each side."""
        span = high - low
        # A span of a few subnormal units (values like 1e-323 and 0) makes a step of 0, and every
        # level a division by zero: it is drawn as flat.
        if not span / (2**bits - 1) > 0:
            span = max(abs(high), 1.0)  # a flat series: a level of its own size
        return cls(low - margin * span, (1.0 + 2.0 * margin) * span / (2**bits - 1), bits)

    def level(self, value: float) -> int:
        position = (value - self.low) / self.step
        if position < self.lowest:  # compared before floor(), which refuses infinities
            return self.lowest
        return self.highest if position >= self.highest else math.floor(position)


class _Stream:
    """Where scoring one signal's rows stands: its levels and the range of values they were
    drawn over, its memory, the most recent values (relearned when the levels widen), the rows
    since the last raw score that started a rest, and the last level seen."""

    def __init__(
        self, quantiser: _Quantiser, seen: tuple[float, float], memory: ContextMemory, recent: deque[float],
        since_high: int, last_level: int,
    ):
        self.quantiser, self.seen, self.memory, self.recent = quantiser, seen, memory, recent
        self.since_high, self.last_level = since_high, last_level

    def copy(self) -> _Stream:
        return _Stream(self.quantiser, self.seen, self.memory.copy(), self.recent.copy(), self.since_high, self.last_level)

    def widen(self, value: float, margin: float, headroom: float) -> None:
        """Redraw the levels over the range drawn so far and ``value``, reaching ``headroom``
        of the new range past ``value``, and relearn the recent values (``value`` the last of
        them) with them: the memory keeps what it knew, at the new levels."""
        low, high = self.seen
        new_low, new_high = min(low, value), max(high, value)
        room = headroom * (new_high - new_low)
        self.seen = (new_low - room if value < low else new_low, new_high + room if value > high else new_high)
        self.quantiser = quantiser = _Quantiser.spanning(*self.seen, margin, self.quantiser.bits)
        self.memory = memory = ContextMemory(self.memory.max_left_facts, self.memory.max_active)
        facts, lowest = quantiser.facts, quantiser.lowest
        for recent in self.recent:
            memory.step(facts[quantiser.level(recent) - lowest])


class ContextDetector(BaseDetector):
    """Contextual sequence memory per feature, after the Contextual Anomaly Detector (CAD OSE).

    Each feature's values are quantised to ``2**value_bits`` levels over the range of the values
    seen so far, widened by ``margin`` ranges on each side (a coarse grid: the memory learns the
    shape of the sequence, not its noise). A :class:`~pipelines.detectors.context_memory.ContextMemory`
    learns the sequence of levels online and gives each step a raw score in [0, 1]: half the
    share of the remembered contexts the step failed to confirm, plus half the share of new
    contexts it made. After a raw score of ``rest_above``, the rows of the next ``rest`` score 0,
    as in CAD: one anomaly is reported once, at its start; rows whose value is missing count
    towards it (a rest does not outlast a silent sensor). The rest is a duration (12 hours by
    default; rows of the training rows' median spacing, :attr:`rest_rows_`), or a number of rows:
    a rest of rows means a different time on every series (150 rows were six days of an hourly
    series, and a false alarm's rest muted the real anomaly days later). A value beyond every level is scored
    even in a rest: the rest mutes the rest of an event, not something beyond anything seen (a
    false alarm's rest muted the real anomaly after it). Training reports nothing, so scoring
    after a cold fit starts out of any rest; a warm start keeps the rest of the rows it learned,
    which the serving model scored.

    **The levels widen by themselves.** CAD OSE was given each NAB file's minimum and maximum
    before its first row and drew its levels over them; a deployment knows only the rows seen so
    far. A value beyond every level is scored with facts the memory never saw (raw score 1: a new
    fact), then the levels are redrawn over the range seen so far, that value included, and the
    memory relearns the most recent rows (at most 2,000) at the new levels: it keeps what it
    knew instead of starting again, and the next such value is no longer new. The new levels
    reach ``widen_headroom`` of the new range past that value: a new level's noise makes new
    highs for a while, and levels drawn exactly to each would be redrawn (and the memory
    relearned) at every one. Levels drawn over the training range alone, without widening, must
    leave room for growth (``margin``), which makes them coarse; widening lets them fit the data
    (``margin`` 0).

    The raw score is the score: it is a share with the same meaning on every series, and CAD
    OSE's own cut (0.75) is one. It is *not* passed through the empirical-CDF calibration of the
    other detectors: the memory's steady score creeps as it learns, so steps after training sat
    in the tail of the training scores' CDF (on NAB, CDF-calibrated scores reached 0.99 on
    ordinary rows and the best swept threshold scored 0.0, against 56.1 for the raw scores).

    ``fit`` runs the memory over the training rows; the raw scores of their second half (each
    row scored before it was learned: held back from the memory) give the threshold. With
    ``contamination`` or ``false_alarm_probability`` ``value``, the threshold is the cut that
    flags at most that share of those rows (the raw score is a share, not a probability, so the
    two kinds mean the same here), but never below ``rest_above`` (a step the memory rates below
    what starts a rest is not an anomaly for it). The share is at least ``10 / rows`` of the
    half: a cut flagging fewer than 10 rows would be the score of its top one or two, which a
    young memory rates near 1 (on NAB's 302-row halves, a 0.5 % cut was 1.0 on several files
    and flagged nothing but new facts). :attr:`calibration_share_` is the share of those rows
    the threshold flags. A ``score`` threshold is taken as given. With ``warm_start``, retraining
    with the serving model (``fit(warm_start=...)``) continues that model's memory and levels over
    the rows it has not learned, when they fit in its levels; otherwise the fit is cold (a
    retraining is where the levels narrow again). It is off by default: every NAB replay of warm
    starts scored below fresh memories on the training window (0.7 to 1.7 points, four
    measurements, docs/BENCHMARKS.md). ``detect`` continues a copy of the fitted memory over the rows of ``history``
    that came after the training rows, then over ``X``, learning (and widening) as it goes; the
    fitted model is not changed. So that rows score the same however they are split into calls,
    :attr:`lookback_` asks for 10,000 rows of history whatever the training's length: every row
    between the training and the rows scored, up to that many.

    ``expected`` is the middle of the level the memory predicted from the previous step (the
    level of the most confirmed remembered context, or the previous row's level when none
    predicted one), ``lower``/``upper`` that level's edges.

    Parameters
    ----------
    value_bits, margin, rest, rest_above, max_left_facts, max_active, value_range, widen_headroom, warm_start :
        See :class:`~pipelines.detectors.params.ContextParams`.
    threshold_kind, threshold_value :
        See :class:`~pipelines.config.ThresholdConfig`.

    Attributes
    ----------
    low_, step_ : ndarray of shape (n_features_in_,)
        Lower edge of level 0 and width of a level, per feature, as fitted.
    calibration_share_ : float or None
        Share of the calibration rows (the training rows' second half) at or above the threshold
        (None for a model saved before it was recorded).
    calibration_rate_ : float or None
        Share of the calibration rows' timestamps flagged on any feature: what
        :meth:`training_anomaly_rate` returns (None for a model saved before it was recorded).
    rest_rows_ : int
        The rest in rows (``rest`` at the training rows' median spacing when it is a duration).
    streams_ : list
        The fitted memory of each feature and where its scoring stood after the training rows.
    training_end_ : pandas.Timestamp or int
        Index of the last training row: history up to it is already learned.
    """

    kind = "context"
    params_model = ContextParams
    supports_warm_start = True
    renamed_params = {"rest_rows": "rest"}  # models saved before 2026-12-03 hold the rest in rows
    history_after_training = True  # the memory continues from its training rows: nothing before them is read

    def __init__(
        self,
        *,
        value_bits: int = 3,
        margin: float = 0.0,
        rest: int | str = "12h",
        rest_above: float = 0.75,
        max_left_facts: int = 7,
        max_active: int = 15,
        value_range: tuple[float, float] | None = None,
        widen_headroom: float = 0.25,
        warm_start: bool = False,
        threshold_kind: str = "contamination",
        threshold_value: float = 0.005,
    ):
        self.value_bits = value_bits
        self.margin = margin
        self.rest = rest
        self.rest_above = rest_above
        self.max_left_facts = max_left_facts
        self.max_active = max_active
        self.value_range = value_range
        self.widen_headroom = widen_headroom
        self.warm_start = warm_start
        self.threshold_kind = threshold_kind
        self.threshold_value = threshold_value

    def _fit(self, X: pd.DataFrame, params: ContextParams) -> np.ndarray:
        self._require_rows(X, _MIN_TRAINING_ROWS, "half of them fill the memory, half calibrate its scores")
        self.rest_rows_ = self._rest_rows(X.index, params.rest)
        values = X.to_numpy()
        self.streams_ = []
        finite = np.where(np.isfinite(values), values, np.nan)  # an infinity is beyond every level, never its edge
        for low, high in zip(np.nanmin(finite, axis=0).tolist(), np.nanmax(finite, axis=0).tolist(), strict=True):
            if params.value_range is not None:
                low, high = params.value_range
                quantiser = _Quantiser.spanning(low, high, 0.0, params.value_bits)  # as given: no margin
            else:
                quantiser = _Quantiser.spanning(low, high, params.margin, params.value_bits)
            memory = ContextMemory(params.max_left_facts, params.max_active)
            self.streams_.append(_Stream(quantiser, (low, high), memory, deque(maxlen=_RELEARN_ROWS), self.rest_rows_, 0))
        raw, _, _ = self._run(self.streams_, values)
        # Training rows are never reported, so no report rests the first rows scored: a young
        # memory often starts a rest near the end of training, which muted the whole rest after
        # every cold fit (auto's held-back trials of context among them).
        for stream in self.streams_:
            stream.since_high = self.rest_rows_
        self.training_end_ = X.index[-1]
        # Not the training rows' count: after a short training (NAB's 169 probationary rows) the
        # history of a later call lacked the first rows after training, which the memory then
        # never learned.
        self.lookback_ = _MAX_LOOKBACK
        return raw[len(X) // 2 :]

    def can_warm_start_from(self, other: BaseDetector, features: list[str]) -> bool:
        return bool(self.warm_start) and super().can_warm_start_from(other, features)

    def _fit_warm(self, X: pd.DataFrame, params: ContextParams, champion: BaseDetector) -> np.ndarray:
        assert isinstance(champion, ContextDetector)
        unseen = X.loc[X.index > champion.training_end_]
        values = unseen.to_numpy()
        top = champion.low_ + 2**params.value_bits * champion.step_
        # A feature silent since the champion's training has no value to leave its levels: its
        # NaN minimum compared False and made every such retraining cold (with an All-NaN warning).
        within = bool(np.all(np.isnan(values) | ((values >= champion.low_) & (values < top)))) if len(values) else False
        if len(unseen) < _MIN_TRAINING_ROWS // 2 or not within or sum(s.memory.contexts for s in champion.streams_) > _MAX_WARM_CONTEXTS:
            self.warm_started_ = False
            return self._fit(X, params)
        self.rest_rows_ = self._rest_rows(X.index, params.rest)
        self.streams_ = [stream.copy() for stream in champion.streams_]
        raw, _, _ = self._run(self.streams_, values)
        self.training_end_ = X.index[-1]
        self.lookback_ = _MAX_LOOKBACK
        return raw

    def _rest_rows(self, index: pd.Index, rest: int | str) -> int:
        if isinstance(rest, int):
            return rest
        if not isinstance(index, pd.DatetimeIndex):
            raise UntimedDuration("rest", rest, "give the rest as a number of rows (e.g. rest: 150)")
        return rows_spanned(rest, pd.Series(index).diff().median())  # positive: the index is unique and sorted

    def _decision_threshold(self, calibration: np.ndarray, policy: ThresholdConfig) -> float:
        """The cut flagging ``max(value, 10 / rows)`` of the calibration rows, never below
        ``rest_above`` (a ``score`` threshold: the base's rule, as given); it also records
        :attr:`calibration_share_`."""
        if policy.kind == "score":
            threshold = super()._decision_threshold(calibration, policy)
        else:
            share = max(policy.value, _TAIL_ROWS / max(calibration.size, 1))
            cut = decision_threshold(calibration, "contamination", min(share, 1.0)) if calibration.size else 0.0
            threshold = max(cut, float(self.rest_above))
        flagged = calibration >= threshold  # rows x features, as _fit returns them
        self.calibration_share_ = float(flagged.mean()) if calibration.size else 0.0
        self.calibration_rate_ = float(flagged.any(axis=1).mean()) if calibration.size else 0.0
        return threshold

    def training_anomaly_rate(self, X: pd.DataFrame) -> float:
        # Scored again, the training rows come to a memory that has just learned them: it flagged
        # none of 2,000 on five NAB series (nyc_taxi, Twitter_volume_AMZN and three others) whose
        # next 2,000 it flagged at up to 0.2 %. The rate the threshold implies is the one of the
        # calibration rows, each scored in the fit before the memory learned it, rests included.
        # It also spares a second pass over the training rows: 30 % of a training's time.
        if self.calibration_rate_ is None:  # a model saved before it was recorded
            return super().training_anomaly_rate(X)
        return self.calibration_rate_

    # Read off the streams, which hold the levels (a widening during a warm start moves them).
    @property
    def low_(self) -> np.ndarray:
        return np.array([stream.quantiser.low for stream in self.streams_])

    @property
    def step_(self) -> np.ndarray:
        return np.array([stream.quantiser.step for stream in self.streams_])

    def _run(self, streams: list[_Stream], values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step every feature's stream through ``values``; the raw scores (0 in a rest or where a
        value is missing), and the middle and half-width of the level expected at each row."""
        raw = np.zeros(values.shape)
        middle, half = np.zeros(values.shape), np.zeros(values.shape)
        rest_rows, rest_above, margin, headroom = self.rest_rows_, self.rest_above, self.margin, self.widen_headroom
        for f, stream in enumerate(streams):
            quantiser, memory, recent = stream.quantiser, stream.memory, stream.recent
            facts, level_of, lowest, top = quantiser.facts, quantiser.level_of, quantiser.lowest, quantiser.top
            since_high, last_level = stream.since_high, stream.last_level
            column_raw, column_middle, column_half = raw[:, f], middle[:, f], half[:, f]
            for i, value in enumerate(values[:, f].tolist()):
                if value != value:  # missing: nothing to learn, nothing to score
                    column_middle[i], column_half[i] = quantiser.low + (last_level + 0.5) * quantiser.step, quantiser.step / 2
                    # The row still passes: a rest of 12 hours outlasted two days of a silent sensor
                    # and muted the first anomaly after it.
                    since_high += 1
                    continue
                level = quantiser.level(value)
                score, predicted = memory.step(facts[level - lowest])
                expected = level_of.get(predicted, last_level) if predicted else last_level
                column_middle[i], column_half[i] = quantiser.low + (expected + 0.5) * quantiser.step, quantiser.step / 2
                beyond = not 0 <= level <= top
                # A value beyond every level breaks a rest: a rest mutes more of the event it
                # reported, not a new extreme (as alerts escalate through a snooze).
                column_raw[i] = score if since_high >= rest_rows or beyond else 0.0
                since_high = 0 if score >= rest_above else since_high + 1
                recent.append(value)
                if beyond and math.isfinite(value):
                    stream.widen(value, margin, headroom)
                    quantiser, memory = stream.quantiser, stream.memory
                    facts, level_of, lowest = quantiser.facts, quantiser.level_of, quantiser.lowest
                    level = quantiser.level(value)
                last_level = level
            stream.since_high, stream.last_level = since_high, last_level
        return raw, middle, half

    def _detect(self, X: pd.DataFrame, history: pd.DataFrame | None) -> Detection:
        streams = [stream.copy() for stream in self.streams_]
        if history is not None:
            unseen = history.loc[history.index > self.training_end_]
            if len(unseen) >= self.lookback_:
                # detect() kept the last lookback_ rows of history: rows right after the training ones
                # were cut, the memory skips them, and the scores depend on how rows were split into runs.
                log.warning(
                    "%s: the history after the last training row (%s) fills the %d rows it reads, so rows before %s "
                    "may be missing from it: the memory goes on without them and the scores depend on how the rows "
                    "are split into runs; retrain at least every %d rows",
                    type(self).__name__, self.training_end_, self.lookback_, unseen.index[0], self.lookback_,
                )
            if len(unseen):
                self._run(streams, unseen.to_numpy())
        values = X.to_numpy()
        score, middle, half = self._run(streams, values)
        return make_detection(X.index, self._feature_list(), values, middle, half, score, score, score >= self.threshold_)

    # -- artifacts ------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        arrays: dict[str, np.ndarray] = {
            "low_": self.low_,
            "step_": self.step_,
            "seen_": np.array([stream.seen for stream in self.streams_], dtype="float64").reshape(-1, 2),
        }
        for f, stream in enumerate(self.streams_):
            arrays.update({f"memory{f}_{name}": array for name, array in stream.memory.to_arrays().items()})
            arrays[f"recent{f}"] = np.fromiter(stream.recent, dtype="float64", count=len(stream.recent))
        time_indexed = isinstance(self.training_end_, pd.Timestamp)
        state = {
            "calibration_share_": self.calibration_share_,
            "calibration_rate_": self.calibration_rate_,
            "rest_rows_": self.rest_rows_,
            "since_high_": [s.since_high for s in self.streams_],
            "last_level_": [s.last_level for s in self.streams_],
            "training_end_": self.training_end_.isoformat() if time_indexed else int(self.training_end_),
        }
        return state, arrays, {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]) -> None:
        # Models saved before the levels could widen (2026-12-02) lack the range they were drawn
        # over and the recent values: the range is the levels' own, less their margin, and a
        # widening of such a model starts its memory afresh (it has no rows to relearn).
        seen = arrays.get("seen_")
        if seen is None:
            span = arrays["step_"] * (2**self.value_bits - 1) / (1.0 + 2.0 * self.margin)
            seen = np.column_stack([arrays["low_"] + self.margin * span, arrays["low_"] + (1.0 + self.margin) * span])
        # A model saved before 2026-12-04 asked for as many rows of history as it trained on.
        self.lookback_ = max(self.lookback_, _MAX_LOOKBACK)
        # A model saved before the rest could be a duration had it in rows (``rest``, renamed).
        self.rest_rows_ = int(state.get("rest_rows_", self.rest))
        share = state.get("calibration_share_")
        self.calibration_share_ = None if share is None else float(share)
        rate = state.get("calibration_rate_")
        self.calibration_rate_ = None if rate is None else float(rate)
        end = state["training_end_"]
        self.training_end_ = pd.Timestamp(end) if isinstance(end, str) else int(end)
        self.streams_ = []
        levels = zip(arrays["low_"].tolist(), arrays["step_"].tolist(), seen.tolist(), strict=True)
        for f, ((low, step, (seen_low, seen_high)), since_high, last_level) in enumerate(
            zip(levels, state["since_high_"], state["last_level_"], strict=True)
        ):
            prefix = f"memory{f}_"
            own = {name.removeprefix(prefix): array for name, array in arrays.items() if name.startswith(prefix)}
            memory = ContextMemory.from_arrays(own, self.max_left_facts, self.max_active)
            recent = deque(arrays.get(f"recent{f}", np.empty(0)).tolist(), maxlen=_RELEARN_ROWS)
            quantiser = _Quantiser(low, step, self.value_bits)
            self.streams_.append(_Stream(quantiser, (seen_low, seen_high), memory, recent, int(since_high), int(last_level)))

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "levels": 2**self.value_bits,
            "rest_rows": self.rest_rows_,
            "level_width": [float(step) for step in self.step_],
            "calibration_share": self.calibration_share_,
            "contexts": [stream.memory.contexts for stream in self.streams_],
        }
