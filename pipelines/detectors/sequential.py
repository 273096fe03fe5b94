"""Wald's sequential probability ratio test on standardised residuals, with a bounded memory.

A lone large residual gathers some evidence; a sustained small one (a level shift, a variance
change) gathers more and more. Detectors use it to tell shifts from noise and to cut false
alarms (MSET2's SPRT stage).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Largest |residual| (robust units) the tests compute with; a larger one brings the same evidence.
#: A row's evidence is a difference of cumulative sums, so one huge residual stayed in every later
#: difference: from 1e8 the variance test's square (1e16) left later rows' evidence off by units
#: for good, long after the window had passed (by 3 after a residual of 1e20), and from 1e155 the
#: square overflowed and inf - inf made them NaN. At 1e4 the square is 1e8 and later rows stay
#: within 1e-8 of exact, while the evidence (3.75e7) is far beyond any threshold.
_RESIDUAL_CAP = 1e4


def _capped(z: np.ndarray) -> np.ndarray:
    """Residuals as the tests use them: missing ones bring no evidence, huge ones the cap's."""
    return np.clip(np.nan_to_num(np.asarray(z, dtype="float64"), nan=0.0), -_RESIDUAL_CAP, _RESIDUAL_CAP)


def windowed_cusum(increments: np.ndarray, window: int) -> np.ndarray:
    """``max(0, largest sum of the increments over the last k rows, k <= window)`` per row.

    Wald's test with a reset at zero is a CUSUM; bounding its memory to ``window`` rows makes a
    row's evidence depend only on those rows, so split scoring equals one long call.
    """
    totals = np.vstack([np.zeros((1, increments.shape[1])), np.cumsum(increments, axis=0)])
    earlier = pd.DataFrame(totals[:-1]).rolling(window, min_periods=1).min().to_numpy()
    return np.maximum(totals[1:] - earlier, 0.0)


def sprt_evidence(z: np.ndarray, window: int, drift: float, variance_ratio: float | None = None) -> np.ndarray:
    """Per column, the largest windowed log-likelihood ratio for a mean shift of ``±drift`` and,
    when ``variance_ratio`` is given, for the variance growing that many times.

    A row is charged with the accumulated evidence only when it adds to it, so after a lone large
    residual the following rows that lower the statistic are not flagged; a row that adds a little
    (|z| above ``drift / 2``) within ``window`` rows of it is charged with the large residual's
    evidence too. That suits ``level_shift``, for which a shift is a lasting state; ``mset`` restarts
    its test after each alarm instead (``MSETDetector``). Missing residuals bring no evidence;
    residuals beyond ``±1e4`` bring that of ``±1e4`` (finite, and never less for a larger one).
    """
    z = _capped(z)
    increments = [drift * z - drift * drift / 2.0, -drift * z - drift * drift / 2.0]
    if variance_ratio is not None:
        increments.append(-0.5 * np.log(variance_ratio) + 0.5 * z * z * (1.0 - 1.0 / variance_ratio))
    return np.maximum.reduce([np.where(inc > 0, windowed_cusum(inc, window), 0.0) for inc in increments])


def single_step_residual(evidence: float | np.ndarray, drift: float, variance_ratio: float | None = None) -> np.ndarray:
    """The |z| of one residual, from no prior evidence, whose evidence reaches ``evidence``."""
    evidence = np.asarray(evidence, dtype="float64")
    mean_test = evidence / drift + drift / 2.0
    if variance_ratio is None:
        return mean_test
    variance_test = np.sqrt(np.maximum(evidence + 0.5 * np.log(variance_ratio), 0.0) / (0.5 * (1.0 - 1.0 / variance_ratio)))
    return np.minimum(mean_test, variance_test)


def sprt_bounds(z: np.ndarray, window: int, drift: float, evidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row and column, the residual (robust units) above which, and the one below which, the
    mean-shift tests reach ``evidence`` (one value per column), given what the rows before it
    (within the window) already accumulated. Returned as distances: (up, down), both > 0.
    """
    z = _capped(z)
    bounds = []
    for sign in (1.0, -1.0):
        increments = drift * sign * z - drift * drift / 2.0
        # Evidence of the last window - 1 rows up to the row before: what a row adds to.
        prior = np.vstack([np.zeros((1, z.shape[1])), windowed_cusum(increments, max(window - 1, 1))[:-1]])
        if window == 1:
            prior = np.zeros_like(prior)
        needed = np.maximum(np.asarray(evidence, dtype="float64") - prior, 0.0)
        # A row is charged only when it adds evidence (its increment > 0, i.e. |z| > drift / 2).
        bounds.append(np.maximum(needed / drift + drift / 2.0, drift / 2.0))
    return bounds[0], bounds[1]
