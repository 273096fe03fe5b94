"""A multivariate state estimator in the family of MSET: each signal estimated from the others by
similarity to remembered training states, residuals judged by a sequential probability ratio test.

Written here rather than taken from a library: no maintained Python package implements MSET
(Oracle's MSET2 is proprietary); the parts are a few NumPy operations.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from pipelines.detectors.base import BaseDetector, Detection, make_detection, unseen_values, with_history
from pipelines.detectors.calibration import ScoreCalibrator
from pipelines.detectors.params import MSETParams
from pipelines.detectors.sequential import single_step_residual
from pipelines.errors import ModelError

#: Scales the MAD to the standard deviation of normal noise.
_MAD_TO_SIGMA = 1.4826
#: Fewest training rows: the memory, the bandwidth choice and the calibration need a spread.
_MIN_TRAINING_ROWS = 30
#: Distances per block when estimating (rows x memory states), so memory stays bounded.
_BLOCK_ELEMENTS = 2_000_000
#: State values per chunk of rows when scoring (whole blocks of the estimate, at least one): the
#: arrays of a chunk are then small beside the frame and the scores' own arrays.
_CHUNK_ELEMENTS = 250_000
#: Bandwidth candidates, as multiples of the memory's typical nearest-neighbour distance.
_BANDWIDTH_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0)
#: Distance in standard units below which two memory states count as the same for the bandwidth
#: choice. A signal reading exactly 0 most of the time and dust (1e-158) some of the time made the
#: typical spacing 1e-158: a kernel that narrow weighs states by the rounding of their distances
#: (computed by expansion, about 1e-8 of a state's size), and from about 1e-154 its logits
#: overflowed and no row had an estimate. Data recorded to a few digits have states 1e-7 apart
#: (NAB's art_daily_flatmiddle): those still count.
_DISTINCT_SPACING = 1e-8
#: Distance in standard units beyond the memory's range of a state column from which a value is
#: left out of the other signals' estimates, as if missing. One signal far out (a stuck or broken
#: sensor) dominated every distance in its row, so the kernel weighed the memory states by that one
#: signal and the others' estimates followed it to its extreme state: with 30 signals and one 20
#: sigmas off, the other 29 moved by up to 1.5 of their standard deviations and every one of them
#: reached the alarm level, blamed along with it. The rule bounds the spill-over: a value that far
#: out moves no other signal's estimate; one within the margin moves them as any state in the
#: operating range would. Its own estimate never used it. A signal left with no other value to be
#: estimated from has no estimate (no evidence) on that row; when every signal is far out, nothing
#: is left out (a new operating state, each one's residual its own).
_OUTSIDE_UNITS = 1.0
#: Training rows the bandwidth is chosen on.
_BANDWIDTH_SAMPLE = 2000
_LONE_SIGNAL_LAGS = 3
#: Signals named in an error about missing values, so it stays readable with hundreds of them.
_NAMED_SIGNALS = 5
#: Contiguous stretches of training time; each is estimated from the memory of the others.
_CALIBRATION_FOLDS = 4
#: Surprise (``-log(1 - calibrated score)``) above which a signal's ``feature_score`` leaves the
#: calibrated score for a slower, logarithmic tail. The calibrated score rounds to 1.0 from a
#: surprise of about 37, so every signal far out tied at 1.0 and the top contributor was the first
#: of them, not the most disturbed; at 20 the score is 1 - 2e-9, beyond any threshold in use, and
#: float64 still tells surprises a few in 10,000 apart up to 1e12.
_CONTRIBUTION_KNEE = 20.0
#: Largest distance from the training median, and largest residual, in robust units that the
#: estimate and the sequential test compute with. A value 1e165 of its signal's scales away (a
#: signal in units of 1e-165 reading 1.0) squared to infinity: the distances became inf - inf,
#: every estimate NaN, and the row scored 0, unflagged. Capped, its square summed over 15,000
#: state columns and 10,000 rows of evidence stays finite; no measurement comes near it.
_STANDARD_CAP = 1e100


class MSETDetector(BaseDetector):
    """Multivariate state estimation with a sequential test on the residuals.

    Every kept signal is standardised (median, 1.4826 * MAD). A *state* is the standardised
    signals at one time, plus their ``lags`` past values. The memory matrix holds up to
    ``memory_size`` training states: for every state column the rows of its minimum and maximum
    (so the memory spans the operating range), then rows evenly spread over the states ordered by
    their norm (with more extremes than ``memory_size``, that many of them spread over the norm
    order). The estimate of signal *i* is a kernel-weighted mean of the memory's values of
    *i*, the weights being a Gaussian similarity between the current state *without signal i*
    and each memory state: every signal is estimated from the others (and from the past, with
    lags), so a disturbed signal does not pull its own estimate along. A value more than one
    standard unit outside the memory's range is left out of the other signals' estimates (as if
    missing), so one signal far out does not drag theirs to its extreme state and share its blame.

    Residuals ``z = (value - estimate) / sigma`` (sigma: robust scale of the training residuals)
    feed Wald's sequential probability ratio test, as a CUSUM of log-likelihood ratios over the
    last ``sprt_window`` rows, for a mean shift of ``±drift`` sigmas and for a variance growing
    ``variance_ratio`` times: a lone noisy residual gathers little evidence, a sustained or large
    one a lot, which is what cuts false alarms. The largest of the three statistics is a signal's
    raw score, calibrated per signal into ``feature_score`` (from a surprise of 20, a score of
    1 - 2e-9, continued by a slower tail that stays below 1, so that of several signals far out
    the most surprising still has the largest); the row's ``score`` is the calibrated largest
    surprise over signals, repeated per feature, and ``is_anomaly`` is the row's decision.
    Near-identical signals (one a copy of another plus noise) are each estimated mostly from the
    other, so a disturbance of one shows in its twin's residual too: where other signals pin the
    operating state the disturbed one's residual stays the larger and it is named, but the twins
    alone cannot be told apart and share the blame (keep one of them in the job's features).
    As in Wald's test (and MSET2's SPRT), the tests restart from no evidence after a decision for
    an anomaly: after a row that is an alarm (some signal's raw score reaches the level at which
    it alone makes the row's score reach the threshold), every signal's tests restart. The
    evidence behind an alarm is spent on it, so the rows after a spike are judged on their own
    residuals (before, any of them with ``|z| > drift / 2`` was charged the spike's whole evidence
    while the spike was in the window), and a sustained shift gathers evidence again and raises
    an alarm every few rows; restarting every signal, not only the one that reached its level,
    keeps the others from piling up the spill-over of the disturbed signal into their estimates
    and taking the blame. The training evidence restarts at the levels of a first calibration
    without restarts.
    ``expected`` is the estimate; the bounds are where a lone residual of that signal, with no
    evidence before it, makes the row an anomaly.

    Signals that are constant or missing in more than ``max_missing`` of the training rows, that
    change value once only beside other signals (a step: a setting or a mode switched), or that
    report within too short a stretch of them to be estimated, are dropped, with the reason
    kept in :attr:`dropped_signals_`. A constant one keeps its constant as ``expected``, ``lower``
    and ``upper`` (:attr:`constant_signals_`): a scored value that differs from it (beyond
    floating-point noise) was never seen in training, so it gets ``feature_score`` 1 and its row
    ``score`` 1, an anomaly whatever the threshold (a sensor coming alive, a setting changed, an
    error counter leaving 0); the same value, or none, scores 0. Such an alarm does not restart
    the other signals' tests: it spends none of their evidence. The other dropped signals have no
    estimate: ``expected``, ``lower`` and ``upper`` are NaN and their ``feature_score`` is 0,
    except that a step's value other than the two of training (:attr:`step_values_`) scores 1
    like a constant's change.

    Parameters
    ----------
    memory_size : int, default=256
        Training states kept in the memory matrix.
    lags : int or "auto", default="auto"
        Past values of every signal added to the state; "auto" is 0 with two or more kept signals
        and 3 with one.
    bandwidth : float or "auto", default="auto"
        Width of the Gaussian similarity in standard units; "auto" tries multiples of the memory's
        median nearest-neighbour distance and keeps the one with the smallest training error.
    sprt_window : int, default=12
        Rows of evidence accumulated by the sequential test; also what :meth:`detect` needs as
        history (with ``lags``).
    drift : float, default=1.0
        Mean shift, in residual sigmas, the test is tuned to.
    variance_ratio : float, default=4.0
        Growth of the residual variance the test is tuned to.
    max_missing : float, default=0.5
        Largest share of missing training values for a signal to be kept.
    threshold_kind, threshold_value :
        See :class:`~pipelines.config.ThresholdConfig`.

    Attributes
    ----------
    signals_ : ndarray of str
        Kept signals, in feature order.
    dropped_signals_ : dict of str to str
        Dropped signals and why.
    constant_signals_ : dict of str to float
        The dropped signals that were constant in training, and their constant.
    step_values_ : dict of str to list of float
        The dropped signals that changed once in training, and their values before and after.
    center_, scale_ : ndarray of shape (n_features_in_,)
        Median and robust scale of each feature (dropped ones included).
    lags_ : int
        Past values per signal in the state.
    memory_ : ndarray of shape (n_memory, n_state)
        The memory matrix, in standard units.
    bandwidth_ : float
        Width of the similarity kernel.
    residual_scale_ : ndarray of shape (n_signals,)
        Robust scale of each kept signal's training residuals (standard units).
    feature_calibrators_ : list of ScoreCalibrator
        Calibration of each kept signal's raw score.
    row_calibrator_ : ScoreCalibrator
        Calibration of the row's largest surprise.
    """

    kind = "mset"
    params_model = MSETParams
    # A signal that never reported in training is an uninformative one: dropped with its reason
    # ("missing in 100% of training rows") like any other, so one dead sensor of 300 does not
    # stop the other 299 from being watched.
    drops_empty_features = True

    def __init__(
        self,
        *,
        memory_size: int = 256,
        lags: int | str = "auto",
        bandwidth: float | str = "auto",
        sprt_window: int = 12,
        drift: float = 1.0,
        variance_ratio: float = 4.0,
        max_missing: float = 0.5,
        threshold_kind: str = "contamination",
        threshold_value: float = 0.005,
    ):
        self.memory_size = memory_size
        self.lags = lags
        self.bandwidth = bandwidth
        self.sprt_window = sprt_window
        self.drift = drift
        self.variance_ratio = variance_ratio
        self.max_missing = max_missing
        self.threshold_kind = threshold_kind
        self.threshold_value = threshold_value

    # -- fitting --------------------------------------------------------------------------

    def _fit(self, X: pd.DataFrame, params: MSETParams, unmeasurable: dict[str, str] | None = None) -> np.ndarray:
        self._require_rows(X, _MIN_TRAINING_ROWS, "for its memory and score calibration")
        values = X.to_numpy()
        with warnings.catch_warnings():
            # A signal with no value in training (see drops_empty_features) has NaN statistics,
            # and is dropped below as missing; numpy's "All-NaN slice" warning says nothing more.
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            warnings.filterwarnings("ignore", "Degrees of freedom", RuntimeWarning)
            self.center_ = np.nanmedian(values, axis=0)
            mad = np.nanmedian(np.abs(values - self.center_), axis=0) * _MAD_TO_SIGMA
            with np.errstate(over="ignore", invalid="ignore"):
                std = np.nanstd(values, axis=0)
            # The squares of values within 1e-162 of their mean underflow, and those of values near
            # 1e154 overflow: such a signal's std was 0 (scaled by 1, it stayed in its median's
            # 1e-162, and no value of it ever scored) or inf. Measured on the values over their
            # largest magnitude instead.
            lost = ~np.isfinite(std) | (std == 0)
            if lost.any():
                size = np.nanmax(np.abs(values[:, lost]), axis=0)
                size = np.where(size > 0, size, 1.0)
                std[lost] = np.nanstd(values[:, lost] / size, axis=0) * size
            # A signal whose MAD is 0 but that still moves (mostly constant, with excursions) is
            # scaled by its standard deviation instead, so its excursions stay finite.
            self.scale_ = np.where(mad > 0, mad, np.where(std > 0, std, 1.0))
            # Constant means every value equal, not a standard deviation of 0: the mean of 1,000 copies
            # of 0.1 is off in its last bit, so their std was 1e-17 and the signal was kept, flagging its
            # own constant after an aggregation; and the squares of values near 1e-170 underflow, so such
            # a signal's std was 0 and it was taken for a constant that moved at every row.
            varies = np.nanmax(values, axis=0) > np.nanmin(values, axis=0)
        dropped, self.constant_signals_ = _dropped(X, varies, params.max_missing)
        unmeasurable = unmeasurable or {}
        gone = dropped.keys() | unmeasurable.keys()
        steps, self.step_values_ = _steps(X, [j for j, name in enumerate(X.columns) if str(name) not in gone])
        dropped.update(steps)
        self.dropped_signals_ = {**dropped, **unmeasurable}
        kept = [i for i, name in enumerate(X.columns) if str(name) not in self.dropped_signals_]
        if not kept:
            raise ModelError(
                f"MSETDetector has no signal left to model ({_named_reasons(self.dropped_signals_)}). It needs a signal "
                f"that varies and has a value in at least {100 * (1 - params.max_missing):.3g}% of the training rows: "
                "widen the training window to a time the signals moved, or leave the constant and gappy ones out of "
                "the job's features."
            )
        self.signals_ = np.asarray([str(X.columns[i]) for i in kept], dtype=object)
        self.kept_ = np.asarray(kept)
        self.lags_ = (_LONE_SIGNAL_LAGS if len(kept) == 1 else 0) if params.lags == "auto" else params.lags
        self.sprt_window_ = params.sprt_window
        self.drift_, self.variance_ratio_ = params.drift, params.variance_ratio
        self.lookback_ = params.sprt_window + self.lags_
        self._fold_rows = -(-len(X) // _CALIBRATION_FOLDS)
        # The first ``lags_`` rows only give the lags of the rows after them: they make no state.
        self._require_rows(
            X, max(_MIN_TRAINING_ROWS + self.lags_, 4 * (self.lags_ + 1)), f"{_MIN_TRAINING_ROWS} states after its {self.lags_} lags"
        )

        states = self._states(values)
        complete = np.flatnonzero(~np.isnan(states).any(axis=1))
        if complete.size < _MIN_TRAINING_ROWS:
            raise ModelError(_too_few_complete_rows(X.iloc[:, self.kept_], complete.size, self.lags_))
        picked = _memory_rows(states[complete], params.memory_size)
        self.memory_ = states[complete][picked]
        memory_rows = complete[picked]
        self.bandwidth_ = (
            float(params.bandwidth) if params.bandwidth != "auto" else self._choose_bandwidth(states, memory_rows)
        )
        estimates = self._estimate(states, positions=np.arange(len(states)), own=memory_rows)
        standard = self._standard(values)
        residuals = standard - estimates
        # A row is estimated only from memory states of other stretches of training time: a signal
        # reporting within one stretch alone (kept with a high max_missing) had no residual at all,
        # so it got a made-up residual scale of 1 and a calibration on no evidence, and never scored.
        # Such a signal is uninformative here: dropped with the reason, and the others fitted again.
        unmeasured = np.flatnonzero(np.isnan(residuals).all(axis=0))
        if unmeasured.size:
            share = np.isnan(values[:, self.kept_[unmeasured]]).mean(axis=0)
            # Only the gappiest go; the others are fitted again. With two signals, one reporting
            # within one stretch leaves the other no row to be estimated from either: both were
            # dropped, the complete one as "missing in 0% of them", and the fit failed.
            worst = share >= share.max()
            unmeasured, share = unmeasured[worst], share[worst]
            reasons = {
                str(name): (
                    f"reports within too short a stretch of the training rows (missing in {100 * v:.3g}% of them) for any "
                    "of its values to be estimated from the states of other times: it could never be scored"
                )
                for name, v in zip(self.signals_[unmeasured], share, strict=True)
            }
            # A step dropped beside them is back when they go (see _steps): it is fitted alone.
            if unmeasured.size == len(self.signals_) and not steps:
                raise ModelError(
                    f"MSETDetector has no signal left to model ({_named_reasons(reasons)}). Leave such signals out of the "
                    "job's features until they have reported for longer."
                )
            return self._fit(X, params, {**unmeasurable, **reasons})
        spread = np.nanmedian(np.abs(residuals - np.nanmedian(residuals, axis=0)), axis=0) * _MAD_TO_SIGMA
        self.residual_scale_ = np.maximum(np.nan_to_num(spread, nan=1.0), 1e-6)
        z = residuals / self.residual_scale_
        # Where a test restarts depends on the calibration, which depends on the evidence: a first
        # calibration without restarts gives the levels, the final one is fitted on evidence that
        # restarts there, the way scoring computes it.
        scores = self._calibrate(self._evidence(z, np.full(len(self.signals_), np.inf)))
        _, policy = self._check_params()
        restart = self._restart_levels(self._decision_threshold(scores, policy))
        return self._calibrate(self._evidence(z, restart))

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Fit the signal and row calibrations on training evidence; the calibrated row scores."""
        self.feature_calibrators_ = [ScoreCalibrator().fit(raw[:, j]) for j in range(raw.shape[1])]
        row_raw = self._row_surprise(raw)
        # A signal's surprise is -log(1 - its calibrated score), standard exponential for normal rows,
        # so their largest has an exponential tail: a shape fitted to it is noise on top of the
        # signals' own tails. At a threshold of 0.999999 on Student t residuals a fitted row shape of
        # 0.36, composed with a signal's tail of 0.39, put that signal's alarm at a raw score of 3e24.
        self.row_calibrator_ = ScoreCalibrator(exponential_tail=True).fit(row_raw)
        return self.row_calibrator_.transform(row_raw)

    def _standard(self, values: np.ndarray) -> np.ndarray:
        """Kept signals in standard units."""
        standard = (values[:, self.kept_] - self.center_[self.kept_]) / self.scale_[self.kept_]
        return np.clip(standard, -_STANDARD_CAP, _STANDARD_CAP)

    def _states(self, values: np.ndarray) -> np.ndarray:
        """One state per row: the kept signals now, then each lag's values (NaN before the start)."""
        standard = self._standard(values)
        columns = [standard]
        for lag in range(1, self.lags_ + 1):
            shifted = np.full_like(standard, np.nan)
            shifted[lag:] = standard[:-lag]
            columns.append(shifted)
        return np.hstack(columns)

    def _choose_bandwidth(self, states: np.ndarray, memory_rows: np.ndarray) -> float:
        base = _typical_spacing(self.memory_)
        rows = np.linspace(0, len(states) - 1, min(len(states), _BANDWIDTH_SAMPLE)).round().astype(int)
        truth = states[rows, : len(self.signals_)]
        errors = []
        for factor in _BANDWIDTH_FACTORS:
            self.bandwidth_ = base * factor
            estimate = self._estimate(states[rows], positions=rows, own=memory_rows)
            squared = (truth - estimate) ** 2
            measured = ~np.isnan(squared)
            # Nothing estimable (a signal reporting within one stretch of training, dropped right
            # after): any width will do, without numpy's "Mean of empty slice" in the task log.
            errors.append(float(squared[measured].mean()) if measured.any() else np.inf)
        return float(base * _BANDWIDTH_FACTORS[int(np.argmin(errors))])

    # -- estimation and evidence ------------------------------------------------------------

    def _estimate(self, states: np.ndarray, positions: np.ndarray | None = None, own: np.ndarray | None = None) -> np.ndarray:
        """Leave-one-signal-out kernel estimates of the kept signals, each made without the state
        values far outside the memory when its own signal is not (see :data:`_OUTSIDE_UNITS`)."""
        estimates = self._kernel_estimate(states, positions, own)
        if len(self.signals_) < 2:
            # A lone signal is estimated from its own lags: no other signal to shield from it.
            return estimates
        outside = (states < self.memory_.min(axis=0) - _OUTSIDE_UNITS) | (states > self.memory_.max(axis=0) + _OUTSIDE_UNITS)
        # Again for each whole block of the estimate with a value far out, not for those rows alone:
        # a block's rows are multiplied together and a product's last bits depend on its shape, so
        # a row scores the same number in chunks as in one pass.
        block_rows = _estimate_block_rows(len(self.memory_))
        for start in range(0, len(states), block_rows):
            block = slice(start, start + block_rows)
            if not outside[block].any():
                continue
            shielded = self._kernel_estimate(
                np.where(outside[block], np.nan, states[block]), None if positions is None else positions[block], own
            )
            kept = ~outside[block, : len(self.signals_)] & outside[block].any(axis=1, keepdims=True)
            estimates[block] = np.where(kept, shielded, estimates[block])
        return estimates

    def _kernel_estimate(self, states: np.ndarray, positions: np.ndarray | None = None, own: np.ndarray | None = None) -> np.ndarray:
        """Leave-one-signal-out kernel estimates of the kept signals, block by block.

        In training, ``own`` names the state row each memory vector was taken from and
        ``positions`` the rows being estimated: a row is estimated only from memory states of
        the other folds (contiguous stretches of training time), so its residual is an honest
        out-of-sample one; in-sample residuals would make the calibration too optimistic.
        """
        n_signals = len(self.signals_)
        memory = self.memory_
        estimates = np.empty((len(states), n_signals))
        memory_norms = (memory**2).sum(axis=1)
        block_rows = _estimate_block_rows(len(memory))
        size = memory.shape[1]
        try:
            width = 2.0 * self.bandwidth_**2
        except OverflowError:  # a float's square beyond 1.8e308: every state as near as any other
            width = np.inf
        for start in range(0, len(states), block_rows):
            block = states[start : start + block_rows]
            observed = ~np.isnan(block)
            gaps = not observed.all()
            # Squared distances by expansion: no (rows x memory x columns) array is ever built.
            # A missing value (a signal that dropped out, a lag before the first row) leaves the
            # distance rather than being filled in: a stale or median stand-in made the other
            # signals' estimates wrong, and a dropped-out signal flagged the ones still reporting.
            # (In place where it can be: the same operations, with fewer arrays of rows x memory.)
            if gaps:
                known = np.where(observed, block, 0.0)
                total = 2.0 * known @ memory.T
                np.subtract((known**2).sum(axis=1)[:, None] + observed.astype(float) @ (memory**2).T, total, out=total)
            else:
                total = 2.0 * block @ memory.T
                np.subtract((block**2).sum(axis=1)[:, None] + memory_norms[None, :], total, out=total)
            np.maximum(total, 0.0, out=total)
            if own is not None and positions is not None:
                same_fold = positions[start : start + block_rows, None] // self._fold_rows == own[None, :] // self._fold_rows
                total = np.where(same_fold, np.inf, total)
            for i in range(n_signals):
                # The state without signal i: its own term leaves the distance. The arrays of
                # (rows x memory) are worked on in place, each step the same operation as before:
                # a copy per step made them most of the memory of scoring a narrow frame.
                own_term = block[:, i, None] - memory[None, :, i]
                np.square(own_term, out=own_term)
                if gaps:
                    # Over fewer values a distance is smaller: scaled to a whole state's, so one
                    # bandwidth serves every row.
                    others = observed.sum(axis=1) - observed[:, i]
                    own_term[~observed[:, i]] = 0.0
                    distance = np.subtract(total, own_term, out=own_term)
                    # A lone signal without lags has no other value (a factor of 0): a distance to
                    # another fold's memory is inf and gives NaN, no estimate, as intended, and
                    # no "invalid value encountered in multiply" in the task log.
                    with np.errstate(invalid="ignore"):
                        distance *= ((size - 1) / np.maximum(others, 1))[:, None]
                else:
                    others, distance = None, np.subtract(total, own_term, out=own_term)
                # In training, a row whose stretch of time holds every memory state has no distance
                # left: its estimate is NaN (no evidence), without a RuntimeWarning per signal.
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    # The largest logit is the nearest state's (dividing keeps the order), so a
                    # state far from all memory still gets weights.
                    nearest = distance.min(axis=1, keepdims=True)
                    top = -nearest / width
                    # A bandwidth whose square underflows (below 1e-162) made every logit -inf or
                    # 0/0, one whose square overflows raised OverflowError, and one below about
                    # 1e-154 turned a row's every logit to -inf: no estimate at all, and a fit that
                    # failed with "reports within too short a stretch of the training rows (missing
                    # in 0% of them)". Those rows are weighed from their nearest state instead:
                    # the same weights in exact arithmetic.
                    broken = np.flatnonzero((~np.isfinite(top[:, 0]) | (width == np.inf)) & np.isfinite(nearest[:, 0]))
                    beyond = distance[broken] - nearest[broken]
                    logits = np.negative(distance, out=distance)
                    logits /= width
                    if broken.size:
                        logits[broken] = -(beyond / self.bandwidth_) / (2.0 * self.bandwidth_)
                        top[broken] = 0.0
                    logits -= top
                weights = np.exp(logits, out=logits)
                estimate = weights @ memory[:, i] / weights.sum(axis=1)
                if others is not None:
                    # Nothing else observed in the state: no estimate, so no evidence either way
                    # (the memory's average is not an estimate of where this signal is now).
                    estimate = np.where(others > 0, estimate, np.nan)
                estimates[start : start + len(block), i] = estimate
        return estimates

    def _evidence(self, z: np.ndarray, restart: np.ndarray) -> np.ndarray:
        """Per signal, the sequential test's evidence (mean shift either way, variance growth),
        restarting after the rows where some signal's reaches its ``restart`` level."""
        return _restarting_sprt(z, self.sprt_window_, self.drift_, self.variance_ratio_, restart)

    def _restart_levels(self, threshold: float) -> np.ndarray:
        """Per signal, the smallest raw score with which that signal alone makes the row's score
        reach ``threshold`` (inf when nothing does)."""
        surprise = float(self.row_calibrator_.inverse(threshold))
        # Solved by the calibrator, which knows its tail: solved here for an exponential tail, the
        # levels fell short of the alarm once the tail could be heavier, and the tests restarted on
        # rows that were no alarm.
        return np.asarray([c.raw_at_surprise(surprise) for c in self.feature_calibrators_])

    def _row_surprise(self, raw: np.ndarray) -> np.ndarray:
        surprises = np.column_stack([c.surprise(raw[:, j]) for j, c in enumerate(self.feature_calibrators_)])
        return surprises.max(axis=1)

    def _detect(self, X: pd.DataFrame, history: pd.DataFrame | None) -> Detection:
        frame, n_history = with_history(X, history)
        values = frame.to_numpy()
        # A dropped signal has no estimate (its training median claimed bounds of zero width that
        # nothing measured), except a constant one, whose constant is all there is to expect.
        constant = np.full(values.shape[1], np.nan)
        for j, name in enumerate(frame.columns):
            constant[j] = self.constant_signals_.get(str(name), np.nan)
        expected = np.broadcast_to(constant, values.shape).copy()
        feature_score = np.zeros(values.shape)
        row_score = np.zeros(len(values))
        half_width = np.zeros(values.shape[1])
        if len(frame):
            restart = self._restart_levels(self.threshold_)
            # In chunks of rows: the states, estimates, residuals and evidence of every row at once
            # took about 14 times the frame. A chunk is whole blocks of the estimate (a block's
            # rows are multiplied together, and a product's last bits depend on its shape) and
            # carries the residuals of the sequential test's window before it, so each score is
            # the same number as from one pass over all rows.
            block_rows = _estimate_block_rows(len(self.memory_))
            chunk_rows = block_rows * max(1, _CHUNK_ELEMENTS // (block_rows * self.memory_.shape[1]))
            carried = np.zeros((0, len(self.signals_)))
            for start in range(0, len(values), chunk_rows):
                stop = min(len(values), start + chunk_rows)
                # Each state needs its signals' lags_ values before it.
                states = self._states(values[max(0, start - self.lags_) : stop])[start - max(0, start - self.lags_) :]
                estimates = self._estimate(states)
                z = (self._standard(values[start:stop]) - estimates) / self.residual_scale_
                window = np.concatenate([carried, z])
                raw = self._evidence(window, restart)[len(carried) :]
                carried = window[len(window) - min(len(window), self.sprt_window_ - 1) :]
                # A signal with no other one observed has no estimate and gives no evidence; it is
                # shown at its training median (0 in standard units), never as a gap in the output.
                shown = np.where(np.isnan(estimates), 0.0, estimates)
                expected[start:stop, self.kept_] = shown * self.scale_[self.kept_] + self.center_[self.kept_]
                feature_score[start:stop, self.kept_] = np.column_stack(
                    [_contribution(c, raw[:, j]) for j, c in enumerate(self.feature_calibrators_)]
                )
                row_score[start:stop] = self.row_calibrator_.transform(self._row_surprise(raw))
            # Where the row alarms on that one signal (its restart level), not where the signal's own
            # score reaches the threshold: the row's calibration of the signals' largest surprise is
            # stricter, and a value 15 % inside the alarm was shown outside the bounds, unflagged.
            widths = [float(single_step_residual(float(level), self.drift_, self.variance_ratio_)) for level in restart]
            half_width[self.kept_] = np.asarray(widths) * self.residual_scale_ * self.scale_[self.kept_]
        # A constant signal that moved is beyond anything seen in training, like an infinite value
        # (see BaseDetector): feature score 1 and row score 1, above any threshold, so the value
        # outside its bounds is flagged. A missing value (NaN) compares as no change.
        moved = unseen_values(values, constant)
        # So is a value of a step other than its two: an error counter that left 0 once in training
        # and now leaves 1. The two values seen, and none, score 0.
        names = self._feature_list()
        for name, known in self.step_values_.items():
            j = names.index(name)
            moved[:, j] = unseen_values(values[:, j], *known)
        feature_score[moved] = 1.0
        row_score[moved.any(axis=1)] = 1.0
        cut = slice(n_history, None)
        score = np.repeat(row_score[:, None], values.shape[1], axis=1)[cut]
        return make_detection(
            X.index,
            self._feature_list(),
            X.to_numpy(),
            expected[cut],
            np.broadcast_to(half_width, (len(X), values.shape[1])),
            score,
            feature_score[cut],
            score >= self.threshold_,
        )

    # -- artifacts ------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        state = {
            "signals_": [str(s) for s in self.signals_],
            "dropped_signals_": self.dropped_signals_,
            "constant_signals_": self.constant_signals_,
            "step_values_": self.step_values_,
            "lags_": self.lags_,
            "bandwidth_": self.bandwidth_,
            "sprt_window_": self.sprt_window_,
            "drift_": self.drift_,
            "variance_ratio_": self.variance_ratio_,
            "feature_calibrators_": [c.to_dict() for c in self.feature_calibrators_],
            "row_calibrator_": self.row_calibrator_.to_dict(),
        }
        arrays = {
            "center_": self.center_,
            "scale_": self.scale_,
            "memory_": self.memory_,
            "residual_scale_": self.residual_scale_,
            "kept_": self.kept_,
        }
        return state, arrays, {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]) -> None:
        self.signals_ = np.asarray(state["signals_"], dtype=object)
        self.dropped_signals_ = dict(state["dropped_signals_"])
        if "constant_signals_" in state:
            self.constant_signals_ = {str(name): float(value) for name, value in state["constant_signals_"].items()}
        else:
            # Saved before the constants were: a constant signal's training median is its constant.
            names = [str(c) for c in self.feature_names_in_]
            self.constant_signals_ = {
                name: float(arrays["center_"][names.index(name)])
                for name, why in self.dropped_signals_.items()
                if why.startswith("constant (")
            }
        # Saved before steps were dropped: none was.
        self.step_values_ = {str(name): [float(v) for v in known] for name, known in state.get("step_values_", {}).items()}
        self.lags_ = int(state["lags_"])
        self.bandwidth_ = float(state["bandwidth_"])
        self.sprt_window_ = int(state["sprt_window_"])
        self.drift_ = float(state["drift_"])
        self.variance_ratio_ = float(state["variance_ratio_"])
        self.feature_calibrators_ = [ScoreCalibrator.from_dict(c) for c in state["feature_calibrators_"]]
        self.row_calibrator_ = ScoreCalibrator.from_dict(state["row_calibrator_"])
        self.center_ = arrays["center_"]
        self.scale_ = arrays["scale_"]
        self.memory_ = arrays["memory_"]
        self.residual_scale_ = arrays["residual_scale_"]
        self.kept_ = arrays["kept_"]

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "signals": [str(s) for s in self.signals_],
            "dropped_signals": self.dropped_signals_,
            "memory_states": int(len(self.memory_)),
            "lags": self.lags_,
            "bandwidth": self.bandwidth_,
        }


def _dropped(X: pd.DataFrame, varies: np.ndarray, max_missing: float) -> tuple[dict[str, str], dict[str, float]]:
    """The signals to drop and why, and the constant ones' constants."""
    reasons, constants = {}, {}
    missing = X.isna().mean().to_numpy()
    for j, name in enumerate(X.columns):
        if missing[j] > max_missing:
            # Three significant digits, not whole percents: 1 gap in 504 rows with max_missing 0 read
            # "missing in 0% of training rows (more than max_missing 0%)".
            reasons[str(name)] = (
                f"missing in {100 * missing[j]:.3g}% of training rows (more than max_missing {100 * max_missing:.3g}%)"
            )
        elif not varies[j]:
            # A Python float: the repr of a numpy scalar ("np.float64(5.0)") reached users' messages and the model metadata.
            constants[str(name)] = float(X.iloc[:, j].dropna().iloc[0])
            reasons[str(name)] = f"constant ({constants[str(name)]!r}) in every training row: nothing to estimate"
    return reasons, constants


def _steps(X: pd.DataFrame, kept: list[int]) -> tuple[dict[str, str], dict[str, list[float]]]:
    """The signals among ``kept`` (column positions) that change value once in training (a step),
    why they go, and their values before and after the step.

    A step is a time marker, not a signal to estimate: kept, the few memory states after a step
    late in training (a setting switched) weighed every other signal's estimate at scoring, where
    all rows are after it, and the other signals of a plant were flagged on 40% of the rows while
    the step itself was never blamed. They go only when some other signal stays: a lone step is
    estimated from its own lags, with nothing to skew.
    """
    reasons, known = {}, {}
    for j in kept:
        column = X.iloc[:, j].dropna()
        values = column.to_numpy()
        steps = np.flatnonzero(values[1:] != values[:-1])
        if steps.size == 1:
            before, after = float(values[steps[0]]), float(values[steps[0] + 1])
            known[str(X.columns[j])] = [before, after]
            reasons[str(X.columns[j])] = (
                f"changes once in training, from {before!r} to {after!r} at {column.index[steps[0] + 1]}: a step (a setting "
                "or mode switched) that the other signals cannot estimate, and whose states on one side of it would skew "
                "their estimates; a value other than these two is an anomaly"
            )
    return (reasons, known) if len(reasons) < len(kept) else ({}, {})


def _named_reasons(reasons: dict[str, str]) -> str:
    """The first signals dropped and why, then how many more: 300 constant signals (a machine off
    over the training window) made an error of 22,000 characters."""
    named = "; ".join(f"{name}: {why}" for name, why in list(reasons.items())[:_NAMED_SIGNALS])
    return named + (f"; and {len(reasons) - _NAMED_SIGNALS} more" if len(reasons) > _NAMED_SIGNALS else "")


def _too_few_complete_rows(kept: pd.DataFrame, complete: int, lags: int) -> str:
    """Why training stopped for want of rows with every kept signal: the signals missing most.

    With many signals, a few gaps each in different rows leave almost no complete row (300
    signals each missing 2 % of rows left 7 of 2,000): the message listed every kept signal
    (4,000 characters), not the ones to fix, and widening the window does not help then.
    """
    missing = kept.isna().mean()
    worst = missing[missing > 0].sort_values(ascending=False, kind="stable")
    named = ", ".join(f"{name} ({share:.1%})" for name, share in worst.iloc[:_NAMED_SIGNALS].items()) or "none"
    if len(worst) > _NAMED_SIGNALS:
        named += f" and {len(worst) - _NAMED_SIGNALS} more"
    after_lags = f" (and in its {lags} lags)" if lags else ""
    return (
        f"MSETDetector needs at least {_MIN_TRAINING_ROWS} training rows where each of its {kept.shape[1]} kept "
        f"signals has a value{after_lags}; got {complete} of {len(kept)}. Signals missing most often: {named}. "
        "Fill those gaps at the source, drop the gappiest signals from the job's features (or set max_missing "
        "below their share), or widen the training window."
    )


def _memory_rows(states: np.ndarray, size: int) -> np.ndarray:
    """Row numbers of the memory: each column's extremes, then rows spread over the norm order;
    never more than ``size`` rows."""
    chosen = set(np.argmin(states, axis=0).tolist()) | set(np.argmax(states, axis=0).tolist())
    by_norm = np.argsort(np.linalg.norm(states, axis=1), kind="stable")
    if len(chosen) > size:
        # More extremes than room (many signals, or lags). Keeping them all ignored memory_size:
        # 300 signals with 5 lags made a memory of 1,523 states (256 asked), and the bandwidth
        # choice then asked for 31 GiB. ``size`` of them are kept, spread over the norm order.
        extremes = by_norm[np.isin(by_norm, list(chosen))]
        return np.sort(extremes[np.linspace(0, len(extremes) - 1, size).round().astype(int)])
    room = max(size - len(chosen), 0)
    spread = by_norm[np.linspace(0, len(by_norm) - 1, min(room, len(by_norm))).round().astype(int)]
    for row in spread.tolist():
        if len(chosen) >= size:
            break
        chosen.add(row)
    return np.asarray(sorted(chosen))


def _contribution(calibrator: ScoreCalibrator, raw: np.ndarray) -> np.ndarray:
    """A signal's ``feature_score``: its calibrated score up to a surprise of
    :data:`_CONTRIBUTION_KNEE`, then ``1 - exp(-knee) / (1 + knee * log(surprise / knee))``.

    The tail joins the calibrated score with the same value and slope at the knee, stays below 1.0
    for every finite surprise, and keeps the order of the surprises, which are comparable across
    signals (the row's score is the largest of them): the most disturbed signal has the largest
    ``feature_score`` however far out several signals are.
    """
    score = calibrator.transform(raw)
    surprise = calibrator.surprise(raw)
    beyond = surprise > _CONTRIBUTION_KNEE
    if not beyond.any():
        return score
    with np.errstate(divide="ignore", invalid="ignore"):  # only the rows below the knee, not taken
        tail = 1.0 - np.exp(-_CONTRIBUTION_KNEE) / (1.0 + _CONTRIBUTION_KNEE * np.log(surprise / _CONTRIBUTION_KNEE))
    return np.where(beyond, tail, score)


def _restarting_sprt(z: np.ndarray, window: int, drift: float, variance_ratio: float, restart: np.ndarray) -> np.ndarray:
    """Per column, the largest of the three CUSUMs of log-likelihood ratios (mean up, mean down,
    variance growth) over the last ``window`` rows, every test restarting from zero after a row
    where the largest of some column reaches that column's ``restart`` level (the decision for H1
    on the row).

    A row's value is that of the test run over its own window, from no evidence at the window's
    start, so it depends on those rows only and split scoring equals one long call. Without a
    restart it is :func:`~pipelines.detectors.sequential.sprt_evidence`: a windowed CUSUM charged
    to a row only when the row adds to it. The restart is what that gating alone missed: a normal
    row after a spike adds a little (any ``|z| > drift / 2`` does) and so was charged with the
    spike's whole evidence as long as the spike was in the window. Missing residuals bring no
    evidence.
    """
    z = np.nan_to_num(np.asarray(z, dtype="float64"), nan=0.0)
    np.clip(z, -_STANDARD_CAP, _STANDARD_CAP, out=z)
    rows, columns = z.shape
    restart = np.asarray(restart, dtype="float64")
    evidence = np.empty((rows, columns))
    block_rows = max(1, _BLOCK_ELEMENTS // max(3 * columns, 1))
    for start in range(0, rows, block_rows):
        stop = min(rows, start + block_rows)
        # The increments of this block's rows and of the window - 1 rows before them, made block by
        # block: made for every row at once, with their padded copy, they were six arrays the size
        # of z, most of the peak memory of scoring. The same numbers, so the same evidence.
        first = max(0, start - window + 1)
        increments = _increments(z[first:stop], drift, variance_ratio)
        # Rows before the first bring nothing: a zero increment leaves a test at zero.
        padded = np.concatenate([np.zeros((3, window - 1 - (start - first), columns)), increments], axis=1)
        # Every row's own run, side by side: step k adds the increment k rows into its window.
        tests = np.zeros((3, stop - start, columns))
        for k in range(window):
            tests += padded[:, k : k + stop - start]
            np.maximum(tests, 0.0, out=tests)
            if k < window - 1:  # a row's own decision restarts the rows after it, not its score
                alarm = (tests.max(axis=0) >= restart).any(axis=1)
                tests *= ~alarm[:, None]
        evidence[start:stop] = np.where(padded[:, window - 1 :] > 0, tests, 0.0).max(axis=0)
    return evidence


def _increments(z: np.ndarray, drift: float, variance_ratio: float) -> np.ndarray:
    """Per row and column, the log-likelihood ratio increments of the three tests: mean up, mean
    down, variance growth."""
    return np.stack(
        [
            drift * z - drift * drift / 2.0,
            -drift * z - drift * drift / 2.0,
            -0.5 * np.log(variance_ratio) + 0.5 * z * z * (1.0 - 1.0 / variance_ratio),
        ]
    )


def _estimate_block_rows(memory_states: int) -> int:
    """Rows estimated together (their distances to the memory in one product)."""
    return max(1, _BLOCK_ELEMENTS // max(memory_states, 1))


def _typical_spacing(memory: np.ndarray) -> float:
    """Median distance from each memory state to its nearest other state, over the states that
    have a distinct one (farther than :data:`_DISTINCT_SPACING`)."""
    # Block by block: the whole (memory x memory x state) array of differences took 60 GB for
    # 5,000 states of 300 signals. Each distance is summed as before, so the result is identical.
    nearest = np.empty(len(memory))
    block_rows = max(1, _BLOCK_ELEMENTS // max(memory.size, 1))
    for start in range(0, len(memory), block_rows):
        block = memory[start : start + block_rows]
        squared = ((block[:, None, :] - memory[None, :, :]) ** 2).sum(axis=2)
        squared[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        nearest[start : start + len(block)] = np.sqrt(squared.min(axis=1))
    positive = nearest[np.isfinite(nearest) & (nearest > _DISTINCT_SPACING)]
    return float(np.median(positive)) if positive.size else 1.0
