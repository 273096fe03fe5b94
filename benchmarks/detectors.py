"""The detectors every benchmark measures: adding one to every table is one line in :data:`DETECTORS`.

Parameters are general defaults: the project never tunes a detector to the labels of a benchmark
series. Until 2026-12-02 one default had been chosen with NAB's corpus score in view: the
``margin`` of ``context`` (1.0, among four tried corpus-wide); its levels now widen by themselves
and the default is 0, the range seen, which is no choice among values (docs/BENCHMARKS.md lists
what was measured). The one adaptation per series is the label-free
:meth:`DetectorUnderTest.params_for` rule for seasons that do not fit the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class DetectorUnderTest:
    """A model kind of :data:`pipelines.detectors.DETECTORS` with the parameters it is run with."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind} ({shown})" if shown else self.kind

    def params_for(self, frequency: timedelta, training_rows: int) -> tuple[dict[str, Any], str | None]:
        """The parameters for one series, and why they differ from :attr:`params` (None if not).

        A season given as a duration needs two whole seasons of rows in the part of the first
        training window the challenger is fitted on (training holds back the tail to compare
        it with the champion); when there are fewer, the series runs without a season. The
        rule sees only the spacing and the length of the training data, never a label.
        """
        season = self.params.get("season")
        if not isinstance(season, str):
            return dict(self.params), None
        from pipelines.durations import rows_spanned
        from pipelines.training import HOLDOUT_FRACTION

        slots = rows_spanned(season, frequency)
        fitted_rows = int(training_rows * (1 - HOLDOUT_FRACTION))
        if fitted_rows >= 2 * slots:
            return dict(self.params), None
        note = (
            f"season {season} needs {2 * slots} fitted rows, the first training fits {fitted_rows}: "
            "season None"
        )
        return {**self.params, "season": None}, note


DETECTORS: list[DetectorUnderTest] = [
    DetectorUnderTest("seasonal_mad", {"season": "1d"}),
    DetectorUnderTest("iforest", {}),
    DetectorUnderTest("level_shift", {"season": "1d"}),
    DetectorUnderTest("mset", {}),
    DetectorUnderTest("prophet", {}),
    DetectorUnderTest("lstm", {}),
    DetectorUnderTest("context", {}),
]
