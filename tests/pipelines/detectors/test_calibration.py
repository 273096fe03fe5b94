from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.detectors.calibration import ScoreCalibrator, decision_threshold
from pipelines.errors import ConfigError, ModelError


@pytest.fixture
def training_raw() -> np.ndarray:
    return np.abs(np.random.default_rng(0).normal(size=2000))


@pytest.fixture
def calibrator(training_raw: np.ndarray) -> ScoreCalibrator:
    return ScoreCalibrator().fit(training_raw)


def test_scores_are_monotone_and_in_unit_interval(calibrator: ScoreCalibrator, training_raw: np.ndarray) -> None:
    grid = np.linspace(-1, training_raw.max() * 3, 5000)
    scores = calibrator.transform(grid)
    assert np.all(np.diff(scores) >= 0)
    assert scores.min() == 0.0 and scores.max() < 1.0


def test_training_scores_are_roughly_uniform(calibrator: ScoreCalibrator, training_raw: np.ndarray) -> None:
    scores = calibrator.transform(training_raw)
    assert np.quantile(scores, [0.25, 0.5, 0.75]) == pytest.approx([0.25, 0.5, 0.75], abs=0.01)
    assert np.mean(scores >= 0.99) == pytest.approx(0.01, abs=0.006)


def test_tail_keeps_ranking_beyond_the_training_maximum(calibrator: ScoreCalibrator, training_raw: np.ndarray) -> None:
    top = training_raw.max()
    beyond = calibrator.transform(np.array([top, top + 1, top + 2, top + 4]))
    assert np.all(np.diff(beyond) > 0)
    assert beyond[-1] < 1.0


@pytest.mark.parametrize("raw", [0.05, 0.7, 1.5, 3.0, 6.0])
def test_inverse_undoes_transform(calibrator: ScoreCalibrator, raw: float) -> None:
    assert float(calibrator.inverse(calibrator.transform(raw))) == pytest.approx(raw, rel=1e-6)


def test_inverse_of_one_is_infinite(calibrator: ScoreCalibrator) -> None:
    assert np.isinf(calibrator.inverse(1.0))


def test_missing_raw_scores_stay_missing(calibrator: ScoreCalibrator) -> None:
    out = calibrator.transform(np.array([np.nan, 1.0]))
    assert np.isnan(out[0]) and 0 < out[1] < 1


def test_json_round_trip_is_exact(calibrator: ScoreCalibrator) -> None:
    restored = ScoreCalibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    grid = np.linspace(0, 10, 1001)
    np.testing.assert_array_equal(restored.transform(grid), calibrator.transform(grid))
    np.testing.assert_array_equal(restored.inverse(grid / 10), calibrator.inverse(grid / 10))


def test_tied_training_scores_do_not_score_high() -> None:
    flat = ScoreCalibrator().fit(np.zeros(100))
    assert float(flat.transform(0.0)) == 0.0
    assert float(flat.transform(1e-6)) > 0.99


def test_fit_needs_two_finite_scores() -> None:
    with pytest.raises(ModelError, match="from 1 finite training score"):
        ScoreCalibrator().fit(np.array([1.0, np.nan]))


def test_contamination_flags_at_most_that_share_of_training() -> None:
    scores = np.random.default_rng(1).uniform(size=1000)
    threshold = decision_threshold(scores, "contamination", 0.01)
    assert np.sum(scores >= threshold) == 10


def test_contamination_threshold_is_not_undercut_by_ties() -> None:
    scores = np.r_[np.zeros(990), np.linspace(0.5, 0.9, 10)]
    threshold = decision_threshold(scores, "contamination", 0.2)
    assert np.sum(scores >= threshold) == 10


def test_contamination_too_small_to_flag_any_training_point() -> None:
    scores = np.linspace(0, 0.9, 50)
    threshold = decision_threshold(scores, "contamination", 0.005)
    assert threshold > 0.9 and np.sum(scores >= threshold) == 0


@pytest.mark.parametrize("value", [0.005, 0.01])
def test_contamination_threshold_stays_below_the_top_of_the_scale(value: float) -> None:
    # Extreme training points tie at 1.0 (their tail probability rounds to 0): a cut above 1.0
    # would flag nothing ever again, not even a point far beyond every training point.
    below_one = np.nextafter(1.0, 0.0)
    scores = np.r_[np.linspace(0.0, 0.9, 90), np.ones(10)]
    assert decision_threshold(scores, "contamination", value) == below_one
    assert decision_threshold(np.r_[np.linspace(0.0, 0.9, 50), 1.0], "contamination", 0.005) == below_one
    assert decision_threshold(np.r_[np.linspace(0.0, 0.9, 90), np.ones(10)], "contamination", 0.1) == below_one
    # The raw score at that cut is finite, so a flagged value lies outside its bounds.
    calibrator = ScoreCalibrator().fit(np.r_[np.abs(np.random.default_rng(0).normal(size=9990)), np.full(10, 1e6)])
    assert float(calibrator.transform(1e6)) == 1.0
    assert np.isfinite(calibrator.inverse(below_one)) and calibrator.inverse(below_one) < 1e6


def test_score_threshold_is_the_value() -> None:
    assert decision_threshold(np.array([0.1, 0.2]), "score", 0.97) == 0.97


def test_false_alarm_probability_threshold_is_one_minus_the_value() -> None:
    assert decision_threshold(np.array([0.1, 0.2]), "false_alarm_probability", 0.001) == pytest.approx(0.999)


@pytest.mark.parametrize("fap", [0.01, 0.05])
def test_false_alarm_probability_holds_on_new_normal_data(fap: float) -> None:
    """Calibrated scores make the target false-alarm rate come true on data the model never saw."""
    from pipelines.detectors.seasonal_mad import SeasonalMADDetector
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(21 + 70, seed=9)
    train, new = frame.iloc[: 24 * 21], frame.iloc[24 * 21 :]
    detector = SeasonalMADDetector(threshold_kind="false_alarm_probability", threshold_value=fap).fit(train)
    rate = detector.detect(new, history=train).is_anomaly.mean()
    assert fap / 2 <= rate <= fap * 2


@pytest.mark.parametrize("seed", range(6))
def test_the_segment_lookup_gives_exactly_np_interp(seed: int) -> None:
    # The body map replaces np.interp for speed; it must not change a single score.
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 5000))
    training = [
        np.abs(rng.standard_normal(size)),
        rng.integers(0, 5, size).astype(float),  # heavy ties: few knots
        np.exp(3 * rng.standard_normal(size)),  # knots spread over decades
    ][seed % 3]
    calibrator = ScoreCalibrator().fit(training)
    knots = calibrator.knots_raw_
    raw = np.concatenate(
        [
            rng.uniform(-1, 2 * knots[-1] + 1, 20_000),
            knots,
            np.nextafter(knots, -np.inf),  # just below each knot: the comparison that splits a bucket
            rng.choice(training, 500),
            [np.nan, np.inf, -np.inf, 0.0, 1e300, -1e300],  # beyond the grid and beyond an integer bucket
        ]
    )
    body = np.interp(raw, knots, calibrator.knots_score_, left=0.0)
    # The generalized Pareto tail (exponential at shape 0): lognormal training scores get a shape.
    excess, shape = np.maximum(raw - calibrator.tail_start_, 0.0), calibrator.tail_shape_
    with np.errstate(over="ignore"):
        surprise = excess / calibrator.tail_scale_ if shape == 0 else np.log1p(excess / (calibrator.tail_scale_ / shape)) / shape
    tail = 1.0 - calibrator.tail_mass_ * np.exp(-surprise)
    expected = np.where(raw > calibrator.tail_start_, tail, body)
    np.testing.assert_array_equal(calibrator.transform(raw), expected)
    assert calibrator.transform(np.float64(knots[0])).shape == ()
    if seed % 3 == 2:  # knots spread over decades: some buckets hold several knots and are searched
        assert calibrator._body_map().bucket_searched.any()


def test_a_column_of_raw_scores_is_calibrated_as_a_column(calibrator: ScoreCalibrator, training_raw: np.ndarray) -> None:
    raw = np.r_[training_raw, training_raw.max() * 2, np.nan]
    column = calibrator.transform(raw[:, None])
    assert column.shape == (raw.size, 1)
    np.testing.assert_array_equal(column[:, 0], calibrator.transform(raw))


@pytest.mark.parametrize("scale", [1e-310, 1e-320])
def test_subnormal_raw_scores_calibrate_into_the_unit_interval(scale: float) -> None:
    # Knots a subnormal apart overflowed the slopes of the segment lookup (and of np.interp):
    # training points scored inf, and one NaN.
    raw = np.abs(np.random.default_rng(0).normal(size=500)) * scale
    calibrator = ScoreCalibrator().fit(raw)
    scores = calibrator.transform(np.r_[raw, 0.0, raw.max() * 2])
    assert np.isfinite(scores).all() and scores.min() >= 0.0 and scores.max() <= 1.0
    assert np.all(np.diff(calibrator.transform(np.sort(raw))) >= 0)
    np.testing.assert_allclose(calibrator.transform(calibrator.knots_raw_), calibrator.knots_score_, atol=1e-12)
    assert np.quantile(scores[:-2], 0.5) == pytest.approx(0.5, abs=0.01)
    assert np.isfinite(calibrator.surprise(raw)).all()


def test_raw_scores_near_the_largest_float_keep_their_tail() -> None:
    # The mean of excesses near 1e307 overflowed: a tail scale of inf gave every point of the
    # tail the same score, and the threshold's raw bound was infinite.
    rng = np.random.default_rng(0)
    raw = np.r_[-1.7e308, rng.uniform(-1, 1, 300) * 1e308, 1.7e308, 1.79e308]
    calibrator = ScoreCalibrator().fit(raw)
    assert np.isfinite(calibrator.tail_scale_)
    top = np.sort(raw)[-5:]
    assert np.all(np.diff(calibrator.transform(top)) > 0)
    assert np.isfinite(calibrator.inverse(0.999))


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("contamination", float("nan"), r"threshold_value for threshold_kind 'contamination' must be a number in \(0, 1\], got nan"),
        ("score", float("nan"), r"threshold_value for threshold_kind 'score' must be a number in \(0, 1\), got nan"),
        ("false_alarm_probability", float("inf"), r"threshold_value .* got inf"),
        ("false_alarm_probability", 1.0, r"must be a number in \(0, 1\), got 1.0"),
        ("contamination", -0.1, r"got -0.1"),
        ("contamination", True, r"got True"),
        ("fap", 0.01, r"threshold_kind must be one of 'contamination', 'false_alarm_probability', 'score', got 'fap'"),
    ],
)
def test_a_bad_threshold_policy_names_the_parameter(kind: str, value: float, message: str) -> None:
    # A NaN score threshold came back as NaN (flagging nothing), a NaN contamination failed with
    # "cannot convert float NaN to integer", and an unknown kind was taken for contamination.
    with pytest.raises(ConfigError, match=message):
        decision_threshold(np.linspace(0.0, 0.9, 100), kind, value)


@pytest.mark.parametrize("scores", [np.array([]), np.full(5, np.nan)])
def test_contamination_without_finite_training_scores_says_what_to_do(scores: np.ndarray) -> None:
    with pytest.raises(ModelError, match="no training row has a finite score; train on rows with values"):
        decision_threshold(scores, "contamination", 0.01)
