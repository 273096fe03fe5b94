"""The rule for replacing one detector with another on held-back rows, shared by ``model: auto``
(a challenger against its preferred candidate) and tuning (a challenger against the serving
champion): the challenger must be *clearly* better, on each of several held-back stretches.

Clearly better: its lead over the plantings of anomalies (both detectors met the same events)
is more than a margin and beyond chance, by a one-sided paired t-test at 5 %. Held-back
stretches: the last share of the rows, then the same share of the rows before them, and so on
(a rolling origin). The held-back rows are a few hundred, the rows scored next thousands: a lead
on one stretch that does not hold on the one before may not hold on the next rows either. With
this rule (and ``context`` preferred) ``auto``'s false-alarm rows on NAB's direct replay fell from
924 to 237 (docs/BENCHMARKS.md, "NAB: what was changed").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

#: Significance of the paired test.
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """A challenger's lead over a reference, planting by planting."""

    gain: float
    p_value: float | None  # None with one planting: nothing to test
    margin: float

    @property
    def clearly_better(self) -> bool:
        return self.gain > self.margin and (self.p_value is None or self.p_value < ALPHA)

    def describe(self) -> str:
        tested = "" if self.p_value is None else f", p = {self.p_value:.3g}"
        verdict = "clearly better" if self.clearly_better else (
            f"not more than the margin {self.margin}" if self.gain <= self.margin else "within chance"
        )
        return f"gain {self.gain:+.3f}{tested}: {verdict}"


def compare(challenger: Sequence[float], reference: Sequence[float], margin: float) -> Comparison:
    """The mean of ``challenger - reference`` (paired by planting) and the one-sided p-value that
    it exceeds 0."""
    gains = np.subtract(challenger, reference, dtype=float)
    if len(gains) < 2:
        return Comparison(float(gains.mean()), None, margin)
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):  # equal gains: t is infinite, p is 0
        p_value = float(stats.ttest_1samp(gains, 0.0, alternative="greater").pvalue)
    # Every gain 0: no lead to test (the p-value is 0/0).
    return Comparison(float(gains.mean()), p_value if np.isfinite(p_value) else None, margin)


def held_back_stretches(X: pd.DataFrame, fraction: float, count: int, min_rows: int) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Up to ``count`` (head, tail) pairs, latest first: the last ``fraction`` of the rows held back
    from the rows before them, then the same share of those rows from the rows before it, and so
    on, while the rows split number at least ``min_rows``."""
    stretches, rows = [], X
    while len(stretches) < count and len(rows) >= min_rows:
        split = int(len(rows) * (1 - fraction))
        stretches.append((rows.iloc[:split], rows.iloc[split:]))
        rows = rows.iloc[:split]
    return stretches
