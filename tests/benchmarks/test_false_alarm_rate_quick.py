"""The false-alarm benchmark compares the two tails for real, and leaves the calibration as it was."""

from __future__ import annotations

from benchmarks import false_alarm_rate
from pipelines.detectors import calibration


def test_the_exponential_and_the_fitted_tail_are_both_measured() -> None:
    frame = false_alarm_rate.series("Student t(3)", 6000, seed=1)
    exponential = false_alarm_rate.flagged_share("seasonal_mad", frame, 3000, 0.001, fitted_tail=False)
    fitted = false_alarm_rate.flagged_share("seasonal_mad", frame, 3000, 0.001, fitted_tail=True)
    assert calibration.MAX_TAIL_SHAPE == 0.9
    assert 0.0 <= fitted < exponential <= 1.0


def test_light_noise_gets_the_same_rate_from_both_tails() -> None:
    frame = false_alarm_rate.series("Gaussian", 4000, seed=0)
    rates = {fitted: false_alarm_rate.flagged_share("iforest", frame, 2000, 0.01, fitted_tail=fitted) for fitted in (False, True)}
    assert rates[False] == rates[True]
