"""The calibration's generalized Pareto tail: what it fits, what it flags, and that it inverts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.detectors import calibration
from pipelines.detectors.calibration import ScoreCalibrator


def heavy(rows: int, seed: int = 0) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).standard_t(3, size=rows))


@pytest.fixture
def fitted() -> ScoreCalibrator:
    calibrator = ScoreCalibrator().fit(heavy(5000))
    assert 0.1 < calibrator.tail_shape_ <= calibration.MAX_TAIL_SHAPE
    return calibrator


@pytest.mark.parametrize("seed", range(3))
def test_heavy_tailed_scores_flag_near_the_false_alarm_target_on_new_scores(monkeypatch, seed: int) -> None:
    # With an exponential tail, |t(3)| scores flagged 2.4 to 2.8 times the target of 0.001 on new
    # scores of the same process: the tail fell off faster than the scores do.
    train, new = heavy(5000, seed), heavy(1_000_000, seed=100 + seed)
    rate = (ScoreCalibrator().fit(train).transform(new) >= 0.999).mean()
    monkeypatch.setattr(calibration, "MAX_TAIL_SHAPE", 0.0)
    exponential = (ScoreCalibrator().fit(train).transform(new) >= 0.999).mean()
    assert exponential > 0.0024
    assert 0.0007 <= rate <= 0.0015


def test_light_tailed_scores_keep_an_exponential_tail() -> None:
    # Fitted unreduced from 50 excesses, one exponential tail in six passed a shape of 0.2; an MSET
    # signal given 0.79 then needed a raw score of 954 instead of 29 to alarm.
    shapes = [ScoreCalibrator().fit(np.random.default_rng(seed).exponential(size=2000)).tail_shape_ for seed in range(20)]
    assert sum(shape > 0 for shape in shapes) <= 3 and max(shapes) < 0.1
    assert all(ScoreCalibrator().fit(heavy(1000, seed)).tail_shape_ == 0.0 for seed in range(5))  # 100 excesses


def test_a_few_real_anomalies_in_training_do_not_make_the_tail_heavy() -> None:
    clean = heavy(10_000)
    shape = ScoreCalibrator().fit(clean).tail_shape_
    # The moment estimate went to the largest shape, 0.9; maximum likelihood (scipy) to 0.84.
    assert ScoreCalibrator().fit(np.concatenate([clean, np.full(10, 1e6)])).tail_shape_ <= shape + 0.06


def test_surprise_is_monotone_and_unbounded(fitted: ScoreCalibrator) -> None:
    raw = np.concatenate([np.linspace(0, 100, 10_001), np.logspace(2.1, 308, 400), [np.finfo(float).max]])
    surprise = fitted.surprise(raw)
    assert np.all(np.diff(surprise) >= 0) and np.all(np.diff(surprise[10_000:]) > 0)
    assert np.isfinite(surprise).all() and fitted.surprise(np.array([np.inf]))[0] == np.inf
    scores = fitted.transform(raw)
    assert np.all(np.diff(scores) >= 0) and scores.max() <= 1.0


@pytest.mark.parametrize("raw", [0.5, 2.0, 5.0, 40.0, 1e4, 1e200])
def test_inverse_and_raw_at_surprise_undo_the_tail(fitted: ScoreCalibrator, raw: float) -> None:
    # Far out 1 - score keeps few digits (and the score rounds to 1.0, whose inverse is inf):
    # the surprise is what inverts there.
    if 1.0 - fitted.transform(raw) > 1e-6:
        assert float(fitted.inverse(fitted.transform(raw))) == pytest.approx(raw, rel=1e-6)
    assert fitted.raw_at_surprise(float(fitted.surprise(np.array(raw)))) == pytest.approx(raw, rel=1e-9)


@pytest.mark.parametrize("surprise", [1.0, 2.0, 5.0, 40.0, 300.0])
def test_raw_at_surprise_is_the_smallest_raw_score_reaching_it(fitted: ScoreCalibrator, surprise: float) -> None:
    raw = fitted.raw_at_surprise(surprise)
    assert float(fitted.surprise(np.array(raw))) == pytest.approx(surprise, rel=1e-9)
    assert float(fitted.surprise(np.array(raw - 1e-6 * max(abs(raw), 1.0)))) < surprise


def test_the_fitted_tail_round_trips_through_json(fitted: ScoreCalibrator) -> None:
    restored = ScoreCalibrator.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert restored.tail_shape_ == fitted.tail_shape_ and not restored.exponential_tail
    raw = np.linspace(0, 1000, 5001)
    np.testing.assert_array_equal(restored.transform(raw), fitted.transform(raw))
    np.testing.assert_array_equal(restored.surprise(raw), fitted.surprise(raw))
    np.testing.assert_array_equal(restored.inverse(raw / 1000), fitted.inverse(raw / 1000))


def test_a_calibrator_saved_before_the_shape_scores_as_it_did(fitted: ScoreCalibrator) -> None:
    state = fitted.to_dict()
    del state["tail_shape"], state["exponential_tail"]
    old = ScoreCalibrator.from_dict(state)
    assert old.tail_shape_ == 0.0
    raw = np.linspace(old.tail_start_, old.tail_start_ + 50, 501)
    expected = 1.0 - old.tail_mass_ * np.exp((old.tail_start_ - raw) / old.tail_scale_)
    np.testing.assert_array_equal(old.transform(raw)[1:], expected[1:])


def test_an_exponential_tail_can_be_asked_for() -> None:
    calibrator = ScoreCalibrator(exponential_tail=True).fit(heavy(5000))
    assert calibrator.tail_shape_ == 0.0
    assert ScoreCalibrator.from_dict(json.loads(json.dumps(calibrator.to_dict()))).exponential_tail
