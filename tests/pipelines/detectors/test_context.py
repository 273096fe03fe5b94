from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipelines.config import ModelConfig
from pipelines.detectors.context import ContextDetector, _Quantiser
from pipelines.errors import ConfigError
from tests.pipelines.detectors.conftest import SCORE_DAYS, TRAIN_DAYS, seasonal_frame, spiked

SPIKE_ROWS = [9, 40, 77, 118, 151]


@pytest.fixture
def series(split_series: Callable) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_series(seed=7)


@pytest.fixture
def detector(series) -> ContextDetector:
    # A rest shorter than the spacing of the spikes below, so that each can be flagged.
    return ContextDetector(rest=12).fit(series[0])


def test_flags_injected_spikes(detector: ContextDetector, series) -> None:
    train, test = series
    detection = detector.detect(spiked(test, SPIKE_ROWS), history=train)
    # Three of the five leave the training range; two fall in seasonal troughs and stay inside
    # it. The first spike beyond the range widens the levels with room past it, and a later,
    # smaller one can land in that room as a merely rare level (row 151 scores 0.61 with the
    # room, 0.90 without): three of five are flagged, four without the room, with which NAB's
    # corpus scores 2.2 to 2.6 points lower on each of its four scores (docs/CONFIGURATION.md).
    assert detection.is_anomaly[SPIKE_ROWS, 0].sum() >= 3
    assert detection.is_anomaly[[9, 77], 0].all()  # the first two beyond the training range
    assert detection.is_anomaly[:, 0].sum() <= len(SPIKE_ROWS) + 3


def test_quiet_on_clean_data(detector: ContextDetector, series) -> None:
    train, test = series
    assert detector.detect(test, history=train).is_anomaly.mean() <= 0.02


def test_flags_a_level_shift_near_its_start_then_learns_it(detector: ContextDetector, series) -> None:
    train, test = series
    shifted = test.copy()
    shifted.iloc[48:, 0] += 8.0
    assert detector.detect(shifted, history=train).is_anomaly[48:54, 0].any()
    score = ContextDetector(rest=0).fit(train).detect(shifted, history=train).score[:, 0]
    assert score[48:72].mean() > score[96:].mean() + 0.15


def test_flags_a_variance_change(detector: ContextDetector, series) -> None:
    train, test = series
    noisy = test.copy()
    noisy.iloc[48:, 0] += np.random.default_rng(1).normal(scale=4.0, size=len(test) - 48)
    flagged = detector.detect(noisy, history=train).is_anomaly[:, 0]
    assert not flagged[:48].any() and flagged[48:72].any()


def test_a_rest_follows_a_flag(series) -> None:
    train, test = series
    resting = ContextDetector(rest=30).fit(train)
    # A spike up, another within the rest, and one down after it (a spike like the first would
    # be less new by then: the memory has seen two).
    detection = resting.detect(spiked(spiked(test, [40, 50], size=30.0), [90], size=-30.0), history=train)
    assert detection.is_anomaly[40, 0] and detection.score[50, 0] == 0.0 and detection.is_anomaly[90, 0]


def test_a_value_beyond_every_level_breaks_a_rest(series) -> None:
    """A rest mutes more of the event it reported; a value beyond anything seen, even the room
    the first spike left, is news and is reported inside the rest."""
    train, test = series
    resting = ContextDetector(rest=30).fit(train)
    same = resting.detect(spiked(test, [40, 50], size=30.0), history=train)
    worse = resting.detect(spiked(spiked(test, [40], size=30.0), [50], size=200.0), history=train)
    assert same.is_anomaly[40, 0] and worse.is_anomaly[40, 0]
    assert same.score[50, 0] == 0.0 and not same.is_anomaly[41:70, 0].any()
    assert worse.score[50, 0] == 1.0 and worse.is_anomaly[50, 0]
    assert not worse.is_anomaly[51:80, 0].any()  # the break starts a rest of its own


def test_a_rest_given_as_a_duration_lasts_that_long_at_any_spacing() -> None:
    """The default rest is 12 hours: the same values muted for 12 rows when they come hourly
    and for 24 when they come every half hour (a rest in rows would be a different time on each)."""
    frame = spiked(seasonal_frame(TRAIN_DAYS + SCORE_DAYS, seed=7), [24 * TRAIN_DAYS + 40], size=30.0)
    muted = {}
    for spacing in ("h", "30min"):
        spaced = frame.set_axis(pd.date_range("2024-01-01", periods=len(frame), freq=spacing, tz="UTC"))
        train, test = spaced.iloc[: 24 * TRAIN_DAYS], spaced.iloc[24 * TRAIN_DAYS :]
        detector = ContextDetector().fit(train)
        score = detector.detect(test, history=train).score[:, 0]
        assert score[40] == 1.0
        muted[spacing] = (detector.rest_rows_, int(np.argmax(score[41:] > 0)))  # rows muted after the report
    # One row more than the rest: the step back from the spike is new too and extends it.
    assert muted == {"h": (12, 13), "30min": (24, 25)}


def test_a_rest_as_a_duration_needs_timestamps(series) -> None:
    train, _ = series
    rows = train.reset_index(drop=True)
    with pytest.raises(ConfigError, match=r"parameter 'rest' is the duration '12h' but the data has no timestamps; give the rest as a number of rows"):
        ContextDetector().fit(rows)
    assert ContextDetector(rest=12).fit(rows).rest_rows_ == 12


def test_rest_rows_of_an_older_job_is_refused_with_its_new_name() -> None:
    with pytest.raises(ValidationError, match=r"'rest_rows' is now 'rest' .*write rest: 150 to keep 150 rows"):
        ModelConfig(kind="context", params={"rest_rows": 150})


def test_a_rest_started_in_training_does_not_mute_the_first_rows_scored(series) -> None:
    train, test = series
    # A spike three rows before the end of training starts a rest there (it reports nothing);
    # the spike five rows into scoring is the first report and is flagged.
    spiky_end = spiked(train, [len(train) - 3], size=30.0)
    detector = ContextDetector(rest=30).fit(spiky_end)
    detection = detector.detect(spiked(test, [5], size=-30.0), history=spiky_end)
    assert detection.is_anomaly[5, 0]


def test_a_value_beyond_every_level_is_a_new_fact_then_the_levels_widen_to_hold_it(detector: ContextDetector, series) -> None:
    train, test = series
    far = test.copy()
    far.iloc[60, 0] = train["a"].max() + 20 * (train["a"].max() - train["a"].min())
    detection = detector.detect(far, history=train)
    assert detection.is_anomaly[60, 0] and detection.score[60, 0] == 1.0
    width = detection.upper[:, 0] - detection.lower[:, 0]
    seen = far.iloc[60, 0] - min(train["a"].min(), test["a"].min())
    drawn = seen * (1 + detector.widen_headroom)  # the room past the far value
    assert width[61:] == pytest.approx(drawn / 7) and (width[:60] < seen / 7 / 5).all()
    np.testing.assert_array_equal(detector.step_, ContextDetector(rest=12).fit(train).step_)  # the fitted model is unchanged


def test_widened_levels_leave_headroom_past_the_value_that_left_them(series) -> None:
    train, test = series
    low, high = train["a"].min(), train["a"].max()
    far = test.copy()
    far.iloc[60:, 0] += 2 * (high - low)  # a new level from row 60, its noise making new highs for a while
    headroom = ContextDetector(rest=0, widen_headroom=0.25).fit(train).detect(far, history=train)
    exact = ContextDetector(rest=0, widen_headroom=0.0).fit(train).detect(far, history=train)
    span = far.iloc[60, 0] - min(low, test["a"].iloc[:60].min())
    headroom_width = headroom.upper[:, 0] - headroom.lower[:, 0]
    exact_width = exact.upper[:, 0] - exact.lower[:, 0]
    assert headroom_width[61] == pytest.approx(span * 1.25 / 7)
    # Without room, every new high of the new level redraws the levels (and relearns the
    # memory); with a quarter of the range past the first, none of them does.
    assert len(np.unique(exact_width[61:].round(9))) > 1
    assert len(np.unique(headroom_width[61:].round(9))) == 1


def test_an_infinite_value_is_a_new_fact_and_widens_nothing(detector: ContextDetector, series) -> None:
    train, test = series
    broken = test.copy()
    broken.iloc[60, 0] = np.inf
    detection = detector.detect(broken, history=train)
    assert detection.is_anomaly[60, 0] and detection.score[60, 0] == 1.0
    clean = detector.detect(test, history=train)
    np.testing.assert_array_equal(detection.upper[:60], clean.upper[:60])
    assert np.isfinite(detection.upper[61:, 0]).all() and (detection.upper[61:, 0] - detection.lower[61:, 0] < 5).all()


def test_widened_levels_keep_what_the_memory_knew(series) -> None:
    train, test = series
    span = train["a"].max() - train["a"].min()
    restless = ContextDetector(rest=0).fit(train)
    above = test.copy()
    above.iloc[20, 0] = train["a"].max() + 0.5 * span  # widens the levels by half
    score = restless.detect(above, history=train).score[:, 0]
    # The memory relearned the recent rows at the new levels: after the step back from the new
    # high (a context never seen, score 1) nothing is new to it, and ordinary rows score as low
    # as in a memory that had those levels from the start.
    fresh = ContextDetector(rest=0, value_range=(train["a"].min(), train["a"].max() + 0.5 * span)).fit(train)
    assert score[20] == 1.0 and (score[22:] < 1.0).all()
    assert score[60:].mean() < fresh.detect(test, history=train).score[60:, 0].mean() + 0.1


def test_expected_is_the_level_the_memory_predicted(detector: ContextDetector, series) -> None:
    train, test = series
    detection = detector.detect(test, history=train)
    width = detection.upper - detection.lower
    # Levels are narrow next to the noise and it crosses their edges: the predicted level is
    # mostly the one the value falls in or a neighbour, rarely farther.
    levels_off = np.floor((detection.values - detection.lower) / width)
    assert (np.abs(levels_off) <= 1).mean() > 0.75 and (np.abs(levels_off) <= 2).mean() > 0.9
    np.testing.assert_allclose(detection.expected, detection.lower + width / 2)


def test_history_after_training_is_learned_before_scoring(detector: ContextDetector, series) -> None:
    train, test = series
    shifted = test.copy()
    shifted.iloc[:, 0] += 8.0  # a new level from the first scored row on
    first, rest = shifted.iloc[:72], shifted.iloc[72:]
    restless = ContextDetector(rest=0).fit(train)
    learned = restless.detect(rest, history=pd.concat([train, first])).score[:, 0]
    unlearned = restless.detect(rest, history=train).score[:, 0]
    assert learned[:24].mean() < unlearned[:24].mean() - 0.1


def test_margin_widens_the_levels(series) -> None:
    train, _ = series
    span = train.max() - train.min()
    for margin in (0.0, 1.0):
        fitted = ContextDetector(margin=margin).fit(train)
        np.testing.assert_allclose(fitted.step_, (1 + 2 * margin) * span / 7)
        np.testing.assert_allclose(fitted.low_, train.min() - margin * span)


def test_the_levels_are_strict_under_the_minimum_and_reach_a_step_over_the_maximum() -> None:
    # Measured on NAB (docs/BENCHMARKS.md): a dip under the range seen is news, a new high by
    # less than a level is a metric's ordinary right tail.
    levels = _Quantiser.spanning(0.0, 7.0, 0.0, 3)
    assert (levels.low, levels.step) == (0.0, 1.0)
    assert levels.level(0.0) == 0 and levels.level(-1e-9) < 0
    assert levels.level(7.0) == levels.level(7.999) == levels.top == 7
    assert levels.level(8.0) > levels.top


def test_a_span_too_small_for_a_step_is_drawn_as_flat() -> None:
    # 1e-323 over 7 levels is a step of 0: every level was a division by zero.
    index = pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC")
    frame = pd.DataFrame({"a": np.where(np.arange(100) % 2, 0.0, 1e-323)}, index=index)
    detector = ContextDetector().fit(frame)
    assert detector.step_[0] > 0 and not detector.detect(frame).is_anomaly.any()


def test_flat_series_is_quiet_until_it_moves(series) -> None:
    train, test = (frame.assign(a=5.0) for frame in series)
    detector = ContextDetector(rest=0).fit(train)
    moved = test.assign(a=[5.0] * 10 + [50.0] + [5.0] * (len(test) - 11))
    assert np.flatnonzero(detector.detect(moved, history=train).is_anomaly[:, 0])[:1].tolist() == [10]


@pytest.mark.parametrize("size", [12.0, 30.0, -30.0])
def test_spikes_inside_and_far_beyond_the_levels_score_high(series, size: float) -> None:
    train, test = series
    detection = ContextDetector(rest=0).fit(train).detect(spiked(test, [40], size=size), history=train)
    assert detection.is_anomaly[40, 0] and detection.score[40, 0] >= 0.75


def test_a_warm_start_continues_the_serving_memory(series) -> None:
    train, test = series
    # Room around the training range, so that the later rows fit in the serving levels.
    detector = ContextDetector(rest=12, margin=1.0, warm_start=True).fit(train)
    before = detector.to_files()
    later = pd.concat([train, test]).iloc[len(test) :]  # the window moved on by the scored rows
    warm = ContextDetector(rest=12, margin=1.0, warm_start=True).fit(later, warm_start=detector)
    assert warm.warm_started_
    np.testing.assert_array_equal(warm.step_, detector.step_)
    assert all(w.memory.contexts > c.memory.contexts for w, c in zip(warm.streams_, detector.streams_, strict=True))
    assert warm.training_end_ == test.index[-1]
    assert detector.to_files() == before  # the champion is not changed
    cold = ContextDetector(rest=12, margin=1.0, warm_start=True).fit(later)
    assert not cold.warm_started_ and cold.summary()["contexts"] != warm.summary()["contexts"]


def test_retraining_starts_a_fresh_memory_unless_warm_starts_are_asked_for(series) -> None:
    train, test = series
    later = pd.concat([train, test]).iloc[len(test) :]
    champion = ContextDetector(rest=12, margin=1.0).fit(train)
    refit = ContextDetector(rest=12, margin=1.0).fit(later, warm_start=champion)
    cold = ContextDetector(rest=12, margin=1.0).fit(later)
    assert not refit.warm_started_ and refit.summary()["contexts"] == cold.summary()["contexts"]
    np.testing.assert_array_equal(refit.detect(later).score, cold.detect(later).score)


def test_a_warm_start_continues_when_a_feature_was_silent_since_the_serving_training(series) -> None:
    # Its NaN minimum compared False against the levels: the retraining went cold, with a warning.
    train, test = series
    champion = ContextDetector(rest=12, margin=1.0, warm_start=True).fit(train)
    later = pd.concat([train, test.assign(b=np.nan)]).iloc[len(test) :]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refit = ContextDetector(rest=12, margin=1.0, warm_start=True).fit(later, warm_start=champion)
    assert refit.warm_started_ and refit.training_end_ == test.index[-1]
    # A value outside the levels in a feature that did report still makes it cold.
    moved = pd.concat([train, test.assign(b=np.nan, a=test["a"] + 1000.0)]).iloc[len(test) :]
    assert not ContextDetector(rest=12, margin=1.0, warm_start=True).fit(moved, warm_start=champion).warm_started_


def test_a_warm_start_outside_the_serving_levels_is_cold(series) -> None:
    train, test = series
    champion = ContextDetector(rest=12, warm_start=True).fit(train)
    moved = pd.concat([train, test + 100.0]).iloc[len(test) :]
    refit = ContextDetector(rest=12, warm_start=True).fit(moved, warm_start=champion)
    assert not refit.warm_started_
    assert refit.low_[0] == pytest.approx(moved["a"].min())  # a retraining is where the levels narrow again


def test_a_value_range_given_in_advance_sets_the_levels(series) -> None:
    train, _ = series
    fitted = ContextDetector(value_range=(0.0, 70.0)).fit(train)
    np.testing.assert_array_equal(fitted.low_, [0.0, 0.0])
    np.testing.assert_array_equal(fitted.step_, [10.0, 10.0])


def test_a_contamination_cut_is_estimated_from_at_least_ten_calibration_rows() -> None:
    # White noise at 256 levels without rests: nearly every step makes new contexts and scores
    # high. The second half of 200 training rows calibrates: a cut flagging 5 % of it would rest
    # on its top 5 rows, so the cut flags 10 rows (10 %), as a 10 % contamination does.
    noise = pd.DataFrame({"a": np.random.default_rng(3).normal(size=200)})
    naive = ContextDetector(value_bits=8, rest=0, threshold_kind="score", threshold_value=0.5).fit(noise)
    few = ContextDetector(value_bits=8, rest=0, threshold_value=0.05).fit(noise)
    ten = ContextDetector(value_bits=8, rest=0, threshold_value=0.1).fit(noise)
    more = ContextDetector(value_bits=8, rest=0, threshold_value=0.3).fit(noise)
    assert few.threshold_ == ten.threshold_ > 0.75 and few.calibration_share_ == pytest.approx(0.1)
    assert more.threshold_ < ten.threshold_ and more.calibration_share_ == pytest.approx(0.3)
    assert naive.threshold_ == 0.5 and naive.calibration_share_ > 0.5
    fap = ContextDetector(value_bits=8, rest=0, threshold_kind="false_alarm_probability", threshold_value=0.1).fit(noise)
    assert fap.threshold_ == ten.threshold_  # a share of held-back rows either way: the raw score is no probability


def test_the_training_anomaly_rate_is_the_calibration_rows_as_scored_before_they_were_learned() -> None:
    # Two features of white noise, no rests: the memory is surprised by most steps while it
    # learns them, far less when the learned rows come again.
    rng = np.random.default_rng(5)
    noise = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    model = ContextDetector(value_bits=6, rest=0, threshold_value=0.05).fit(noise)
    rescored = float(model.detect(noise).is_anomaly.any(axis=1).mean())
    rate = model.training_anomaly_rate(noise)
    assert rate == model.calibration_rate_
    # Any feature counts: the rate of timestamps is at least the share of single cells.
    assert model.calibration_share_ <= rate <= 2 * model.calibration_share_
    assert rate > 0.05 and rescored < rate / 2
    again = ContextDetector.from_files(model.to_files())
    assert again.training_anomaly_rate(noise) == rate


def test_a_model_saved_before_the_levels_could_widen_still_loads_and_scores(series) -> None:
    import io
    import json

    train, test = series
    fitted = ContextDetector(margin=1.0).fit(train)
    files = fitted.to_files()
    meta = json.loads(files["detector.json"])
    del meta["learned"]["calibration_share_"], meta["learned"]["calibration_rate_"]
    with np.load(io.BytesIO(files["arrays.npz"])) as npz:
        arrays = {name: npz[name] for name in npz.files if name != "seen_" and not name.startswith("recent")}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    old = ContextDetector.from_files({"detector.json": json.dumps(meta).encode(), "arrays.npz": buffer.getvalue()})
    assert old.calibration_share_ is None and old.calibration_rate_ is None
    # Without the rate measured in the fit, the training rows are scored again.
    assert old.training_anomaly_rate(train) == float(old.detect(train).is_anomaly.any(axis=1).mean())
    # The range is recovered from the levels: the training range.
    assert old.streams_[0].seen == pytest.approx((train["a"].min(), train["a"].max()))
    far = spiked(test, [40], size=100.0)
    np.testing.assert_array_equal(old.detect(test, history=train).score, fitted.detect(test, history=train).score)
    assert old.detect(far, history=train).is_anomaly[40, 0]


def test_a_model_saved_with_its_rest_in_rows_loads_and_rests_as_long(series) -> None:
    import json

    train, test = series
    fitted = ContextDetector(rest=30).fit(train)
    files = fitted.to_files()
    meta = json.loads(files["detector.json"])
    meta["params"]["rest_rows"] = meta["params"].pop("rest")  # as saved before 2026-12-03
    del meta["learned"]["rest_rows_"]
    old = ContextDetector.from_files({**files, "detector.json": json.dumps(meta).encode()})
    assert old.rest == 30 and old.rest_rows_ == 30
    spikes = spiked(test, [40, 50], size=30.0)
    np.testing.assert_array_equal(old.detect(spikes, history=train).score, fitted.detect(spikes, history=train).score)


def test_rows_score_the_same_in_pieces_as_in_one_call_after_a_short_training(split_series) -> None:
    train, test = split_series(seed=3, train_days=3)  # 72 training rows, then 168: more than trained on
    model = ContextDetector(rest=12).fit(train)
    whole = model.detect(test, history=train).score
    pieces = [
        model.detect(test.iloc[start : start + 24], history=pd.concat([train, test.iloc[:start]])).score
        for start in range(0, len(test), 24)
    ]
    np.testing.assert_array_equal(np.vstack(pieces), whole)
    assert model.lookback_ >= len(test)


def test_a_model_saved_asking_for_its_training_rows_of_history_asks_for_every_row_since(split_series) -> None:
    import json

    train, test = split_series(seed=3, train_days=3)
    fitted = ContextDetector(rest=12).fit(train)
    files = fitted.to_files()
    meta = json.loads(files["detector.json"])
    meta["learned"]["lookback_"] = len(train)  # as saved before 2026-12-04
    old = ContextDetector.from_files({**files, "detector.json": json.dumps(meta).encode()})
    assert old.lookback_ == fitted.lookback_ > len(test)
    late = test.iloc[120:]
    np.testing.assert_array_equal(
        old.detect(late, history=pd.concat([train, test.iloc[:120]])).score,
        fitted.detect(test, history=train).score[120:],
    )


def test_a_feature_with_one_training_value_round_trips_through_files(series) -> None:
    # Its memory made no context from a single value: loading it must still give the same model.
    train, test = series
    sparse = train.copy()
    sparse.iloc[1:, 0] = np.nan
    fitted = ContextDetector().fit(sparse)
    restored = ContextDetector.from_files(fitted.to_files())
    before, after = fitted.detect(test, history=sparse), restored.detect(test, history=sparse)
    assert before.score[:, 0].max() == 1.0  # the feature is scored, not skipped: its values are all new
    for name in ("expected", "lower", "upper", "score", "feature_score", "is_anomaly"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name), err_msg=name)
