from __future__ import annotations

import json
import re
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import load_detector, mset
from pipelines.detectors.mset import MSETDetector, _typical_spacing
from pipelines.errors import ModelError

TRAIN_ROWS = 24 * 21
TEST_ROWS = 24 * 7


def plant(rows: int, seed: int, signals: int = 4) -> pd.DataFrame:
    """Hourly signals of one machine: a daily load drives every signal (each with its own gain
    and offset), plus independent noise, so each signal is predictable from the others."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC")
    load = np.sin(2 * np.pi * index.hour.to_numpy() / 24) + 0.3 * rng.normal(size=rows)
    return pd.DataFrame(
        {f"s{i}": 10.0 * (i + 1) + (2.0 + i) * load + 0.2 * rng.normal(size=rows) for i in range(signals)},
        index=index,
    )


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = plant(TRAIN_ROWS + TEST_ROWS, seed=11)
    return frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:]


@pytest.fixture(scope="module")
def detector(data) -> MSETDetector:
    return MSETDetector().fit(data[0])


def test_estimates_each_signal_from_the_others(detector: MSETDetector, data) -> None:
    train, test = data
    detection = detector.detect(test, history=train)
    error = np.abs(detection.values - detection.expected)
    # The shared load is most of each signal's swing; the estimate recovers it from the others.
    swing = test.std().to_numpy()
    assert (np.median(error, axis=0) < 0.25 * swing).all()


def test_quiet_on_clean_data(detector: MSETDetector, data) -> None:
    train, test = data
    assert detector.detect(test, history=train).is_anomaly[:, 0].mean() <= 0.02


@pytest.mark.parametrize(
    ("disturb", "rows"),
    [
        ("spike", [30, 80, 130]),
        ("level shift", list(range(60, 90))),
        ("variance", list(range(100, 130))),
    ],
)
def test_finds_disturbances_and_names_the_signal(detector: MSETDetector, data, disturb: str, rows: list[int]) -> None:
    train, test = data
    disturbed = test.copy()
    noise = np.random.default_rng(5).normal(size=len(rows))
    change = {"spike": 3.0, "level shift": 1.5, "variance": 2.0 * noise}[disturb]
    disturbed.iloc[rows, 2] += change  # s2 only; its normal noise is 0.2
    detection = detector.detect(disturbed, history=train)
    flagged = detection.is_anomaly[rows, 0]
    # The test restarts after each alarm (Wald's SPRT, as MSET2 runs it), so a lasting disturbance
    # alarms every few rows rather than on every row: a row is flagged on its own evidence since.
    assert flagged.mean() >= {"spike": 1.0, "level shift": 0.5, "variance": 0.35}[disturb]
    # The disturbed signal carries the largest contribution on the flagged rows.
    contributions = detection.feature_score[np.asarray(rows)[flagged]]
    assert (contributions.argmax(axis=1) == 2).mean() >= 0.9
    elsewhere = np.setdiff1d(np.arange(len(test)), np.arange(min(rows), max(rows) + detector.lookback_ + 1))
    assert detection.is_anomaly[elsewhere, 0].mean() <= 0.02


@pytest.mark.parametrize(("much", "little"), [(3, 1), (2, 0), (3, 0)])
def test_the_most_disturbed_signal_has_the_largest_feature_score_however_far_out(detector: MSETDetector, data, much: int, little: int) -> None:
    # Two signals far beyond their bounds, one disturbed 20 times more: their calibrated scores
    # both rounded to 1.0, and the top contributor was the first of them, not the most disturbed.
    train, test = data
    disturbed = test.copy()
    rows = [30, 90, 150]
    disturbed.iloc[rows, much] += 400 * 0.2  # the signals' own noise is 0.2
    # Downwards: the far-out state pulls every estimate up, which would hide a little rise.
    disturbed.iloc[rows, little] -= 20 * 0.2
    detection = detector.detect(disturbed, history=train)
    assert detection.is_anomaly[rows, 0].all()
    for j in (much, little):
        assert ((disturbed.iloc[rows, j] < detection.lower[rows, j]) | (disturbed.iloc[rows, j] > detection.upper[rows, j])).all()
    assert (detection.feature_score[rows].argmax(axis=1) == much).all()
    assert (detection.feature_score[rows] < 1.0).all()


def test_of_two_near_identical_signals_the_disturbed_one_is_named() -> None:
    # twin is s0 plus a little noise, so each is estimated mostly from the other and a disturbance
    # of twin moves s0's estimate too; the other signals pin the operating point, so twin's
    # residual is the larger, but both scored 1.0 and the first of them, s0, was named.
    frame = plant(TRAIN_ROWS + TEST_ROWS, seed=11, signals=3)
    frame["twin"] = frame["s0"] + 0.01 * np.random.default_rng(1).normal(size=len(frame))
    train, test = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:].copy()
    detector = MSETDetector(memory_size=128).fit(train)
    rows = list(range(10, 160, 15))
    test.iloc[rows, 3] += 3.0  # 15 times s0's own noise
    detection = detector.detect(test, history=train)
    assert detection.is_anomaly[rows, 0].all()
    assert (detection.feature_score[rows].argmax(axis=1) == 3).all()
    assert (detection.feature_score[rows, 3] > detection.feature_score[rows, 0]).all()


def test_a_signal_that_drops_out_leaves_the_others_estimated_from_the_rest(detector: MSETDetector, data) -> None:
    # s1 stops reporting for the whole week: the other signals are estimated from what is still
    # observed (a stale stand-in for s1 flagged them), and a spike on s2 is still found.
    train, test = data
    dropped = test.copy()
    dropped["s1"] = np.nan
    quiet = detector.detect(dropped, history=train)
    assert quiet.is_anomaly.any(axis=1).mean() <= 0.02
    clean = detector.detect(test, history=train)
    others = [0, 2, 3]
    assert np.abs(quiet.expected[:, others] - clean.expected[:, others]).max() < 1.0  # the noise is 0.2, the gains 2-5
    assert np.isnan(quiet.expected[:, 1]).sum() == 0  # s1 itself is still estimated from the others
    dropped.iloc[[40, 100], 2] += 3.0
    flagged = detector.detect(dropped, history=train)
    assert flagged.is_anomaly[[40, 100], 0].all() and (flagged.feature_score[[40, 100]].argmax(axis=1) == 2).all()


def test_correlation_break_is_found_when_each_value_is_in_range(detector: MSETDetector, data) -> None:
    """s0 keeps its normal range but stops following the load: only a multivariate model sees it."""
    train, test = data
    broken = test.copy()
    rows = slice(50, 80)
    broken.iloc[rows, 0] = test.iloc[rows, 0].to_numpy()[::-1]
    detection = detector.detect(broken, history=train)
    flagged = detection.is_anomaly[50:80, 0]
    assert flagged.mean() >= 0.35 and flagged[:5].any()  # found at once, then every few rows (the test restarts)
    assert (detection.feature_score[50:80][flagged].argmax(axis=1) == 0).mean() >= 0.8


def test_flat_and_mostly_missing_signals_are_dropped_with_a_reason(data) -> None:
    train, test = data
    train, test = train.copy(), test.copy()
    train["flat"], test["flat"] = 5.0, 5.0
    train["gappy"] = np.where(np.arange(len(train)) % 3 == 0, 1.0, np.nan)
    test["gappy"] = 1.0
    detector = MSETDetector().fit(train)
    assert set(detector.dropped_signals_) == {"flat", "gappy"}
    assert "constant" in detector.dropped_signals_["flat"]
    assert "missing in 66.7%" in detector.dropped_signals_["gappy"]
    assert detector.summary()["dropped_signals"] == detector.dropped_signals_
    detection = detector.detect(test, history=train)
    assert (detection.feature_score[:, 4:] == 0).all() and (detection.expected[:, 4] == 5.0).all()


def test_a_signal_that_never_reported_in_training_is_dropped_and_the_others_watched(data) -> None:
    # The base check refused the whole training ("features ['dead'] have no values"): one dead
    # sensor of many stopped every other one from being watched.
    train, test = data
    detector = MSETDetector().fit(train.assign(dead=np.nan))
    assert detector.dropped_signals_ == {"dead": "missing in 100% of training rows (more than max_missing 50%)"}
    broken = test.assign(dead=np.nan)
    broken.iloc[[40, 100], 2] += 3.0
    detection = detector.detect(broken, history=train.assign(dead=np.nan))
    assert detection.is_anomaly[[40, 100], 0].all() and (detection.feature_score[[40, 100]].argmax(axis=1) == 2).all()
    assert (detection.feature_score[:, 4] == 0).all()
    loaded = load_detector("mset", detector.to_files())
    np.testing.assert_array_equal(loaded.detect(broken, history=train.assign(dead=np.nan)).score, detection.score)


def test_a_lone_signal_is_estimated_from_its_own_past() -> None:
    frame = plant(TRAIN_ROWS + TEST_ROWS, seed=3, signals=1)
    train, test = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:].copy()
    detector = MSETDetector().fit(train)
    assert detector.lags_ == 3 and detector.lookback_ == detector.sprt_window + 3
    test.iloc[[40, 100], 0] += 4.0
    flagged = detector.detect(test, history=train).is_anomaly[:, 0]
    assert flagged[[40, 100]].all() and flagged.mean() <= 0.05


def test_a_lone_signal_needs_its_lags_on_top_of_the_fewest_rows() -> None:
    # The first 3 rows only give lags: 32 rows make 29 states, and the error says so (it blamed gaps).
    frame = plant(33, seed=4, signals=1)
    with pytest.raises(ModelError, match=r"needs at least 33 training rows \(30 states after its 3 lags\); got 32"):
        MSETDetector().fit(frame.iloc[:32])
    assert MSETDetector().fit(frame).memory_.shape[0] > 0


def test_three_hundred_signals() -> None:
    rng = np.random.default_rng(0)
    rows, signals = 600, 300
    index = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC")
    drivers = rng.normal(size=(rows, 3))
    gains = rng.normal(size=(3, signals))
    frame = pd.DataFrame(drivers @ gains + 0.1 * rng.normal(size=(rows, signals)), index=index)
    frame.columns = [f"sensor_{i:03d}" for i in range(signals)]
    train, test = frame.iloc[:500], frame.iloc[500:].copy()
    detector = MSETDetector(memory_size=128).fit(train)
    test.iloc[60, 123] += 10 * train.iloc[:, 123].std()
    detection = detector.detect(test, history=train)
    assert detection.is_anomaly[60, 0]
    assert detection.feature_score[60].argmax() == 123


def test_round_trip_keeps_dropped_signals_and_scores(data) -> None:
    train, test = data
    train = train.assign(flat=1.0)
    detector = MSETDetector(memory_size=64).fit(train)
    loaded = load_detector("mset", detector.to_files())
    assert loaded.dropped_signals_ == detector.dropped_signals_
    a, b = detector.detect(test.assign(flat=1.0), history=train), loaded.detect(test.assign(flat=1.0), history=train)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.expected, b.expected)


def test_nothing_to_model_is_explained() -> None:
    frame = pd.DataFrame({"a": 1.0, "b": 2.0}, index=pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC"))
    with pytest.raises(ModelError, match=r"no signal left to model \(a: constant \(1\.0\) .*b: constant \(2\.0\)"):
        MSETDetector().fit(frame)


@pytest.fixture(scope="module")
def three_signals() -> dict[int, tuple[MSETDetector, pd.DataFrame, pd.DataFrame]]:
    fitted = {}
    for seed in (1, 3):
        frame = plant(2500, seed=seed, signals=3)
        train, test = frame.iloc[:2000], frame.iloc[2000:]
        fitted[seed] = (MSETDetector().fit(train), train, test)
    return fitted


@pytest.mark.parametrize("seed", [1, 3])
@pytest.mark.parametrize("sigmas", [10, 30])
def test_a_spike_is_not_charged_to_the_rows_after_it(three_signals, seed: int, sigmas: int) -> None:
    # The sequential test restarts after an alarm: a normal row after a spike that adds a little
    # evidence (any |z| > drift / 2) was charged the spike's whole evidence while the spike was in
    # the window, so a 10-sigma spike also flagged the row 3 rows later and a 30-sigma one more.
    detector, train, test = three_signals[seed]
    clean = detector.detect(test, history=train).is_anomaly[:, 0]
    spiked = test.copy()
    spiked.iloc[250, 1] += sigmas * 0.2  # s1's own noise is 0.2
    detection = detector.detect(spiked, history=train)
    added = np.flatnonzero(detection.is_anomaly[:, 0] & ~clean)
    assert added.tolist() == [250]
    # At 30 sigmas the spill-over into the others' estimates is far out too: it tied at 1.0.
    assert detection.feature_score[250].argmax() == 1


@pytest.mark.parametrize("seed", [1, 3])
def test_a_sustained_shift_raises_an_alarm_every_few_rows(three_signals, seed: int) -> None:
    detector, train, test = three_signals[seed]
    shifted = test.copy()
    rows = np.arange(200, 248)
    shifted.iloc[rows, 1] += 3 * 0.2
    detection = detector.detect(shifted, history=train)
    flagged = detection.is_anomaly[rows, 0]
    assert flagged.mean() >= 0.25
    assert (detection.feature_score[rows[flagged]].argmax(axis=1) == 1).mean() >= 0.9
    assert not detection.is_anomaly[248 : 248 + detector.lookback_, 0].any()


def test_the_memory_holds_at_most_memory_size_states_with_many_signals() -> None:
    # 60 signals (the same holds for 300, or for lags) have up to 120 rows of extremes: all of
    # them were kept whatever memory_size said, and 300 signals with 5 lags asked for 31 GiB.
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(200, 60))).add_prefix("s")
    detector = MSETDetector(memory_size=16).fit(frame)
    assert detector.memory_.shape[0] == detector.summary()["memory_states"] == 16
    spike = frame.iloc[-20:].copy()
    spike.iloc[10, 7] += 20.0
    assert detector.detect(spike, history=frame.iloc[:-20]).feature_score[10].argmax() == 7


def test_the_bandwidth_choice_never_builds_the_whole_difference_array() -> None:
    # (memory x memory x state) differences took 60 GB for 5,000 states of 300 signals.
    memory = np.random.default_rng(3).normal(size=(400, 200))
    tracemalloc.start()
    try:
        spacing = _typical_spacing(memory)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6  # the whole array is 256 MB
    some = memory[:50]  # small enough to compare with the distances computed at once
    nearest = np.sqrt(np.where(np.eye(50, dtype=bool), np.inf, ((some[:, None] - some[None]) ** 2).sum(axis=2)).min(axis=1))
    assert _typical_spacing(some) == np.median(nearest) and spacing > 0


def test_a_share_missing_is_not_rounded_to_the_limit() -> None:
    # One gap in 504 rows with max_missing 0 read "missing in 0% ... (more than max_missing 0%)".
    train = plant(TRAIN_ROWS, seed=6)
    train.iloc[3, 1] = np.nan
    detector = MSETDetector(max_missing=0.0).fit(train)
    assert detector.dropped_signals_ == {"s1": "missing in 0.198% of training rows (more than max_missing 0%)"}


def test_too_few_complete_rows_names_the_signals_missing_most() -> None:
    # 40 signals, each missing in its own rows: few rows have them all. The error listed every
    # signal (4,000 characters with 300 of them), not the ones whose gaps to fix.
    frame = plant(185, seed=7, signals=40)
    for j in range(40):
        frame.iloc[j * 4 : j * 4 + (12 if j == 9 else 4), j] = np.nan
    with pytest.raises(ModelError) as caught:
        MSETDetector().fit(frame)
    message = str(caught.value)
    assert re.search(r"each of its 40 kept signals has a value; got 25 of 185\. Signals missing most often: s9 \(6\.5%\), s0 \(2\.2%\)", message)
    assert "and 35 more" in message and "s39" not in message and len(message) < 500


def test_a_signal_reporting_in_one_stretch_of_training_alone_is_dropped_with_the_reason(data) -> None:
    # Kept by a high max_missing, s3 has no value estimable from the memory of other times: it got
    # a made-up residual scale of 1 and never scored (a spike of 7 sigmas scored 0), silently.
    train, test = data
    train = train.copy()
    train.iloc[:404, 3] = np.nan
    detector = MSETDetector(max_missing=0.9).fit(train)
    assert list(detector.signals_) == ["s0", "s1", "s2"]
    assert re.fullmatch(r"reports within too short a stretch .*missing in 80\.2% .*could never be scored", detector.dropped_signals_["s3"])
    disturbed = test.copy()
    disturbed.iloc[40, 2] += 3.0  # the signals kept still find a spike, and name it
    detection = detector.detect(disturbed, history=train)
    assert detection.is_anomaly[40, 0] and detection.feature_score[40].argmax() == 2  # s2, of s0..s3
    # With no signal left that can be measured, it says so for each.
    alone = train[["s3"]].copy()
    alone.iloc[:404, 0] = np.nan
    with pytest.raises(ModelError, match=r"no signal left to model \(s3: reports within too short a stretch"):
        MSETDetector(max_missing=0.9, lags=0).fit(alone)


def test_a_new_signal_beside_a_single_other_one_is_dropped_alone(data) -> None:
    # s3 reports in the last fifth of training only: the rows with both signals lie in one stretch
    # of time, so s0, estimated from s3 alone, had no residual either. Both were dropped, s0 as
    # "missing in 0% of them", and the fit failed (after printing numpy's RuntimeWarnings).
    train, test = (part[["s0", "s3"]].copy() for part in data)
    train.iloc[:404, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector = MSETDetector(max_missing=0.9).fit(train)
        assert list(detector.signals_) == ["s0"] and list(detector.dropped_signals_) == ["s3"] and detector.lags_ == 3
        # A lone signal reporting within one stretch says why, with no warning before the error.
        with pytest.raises(ModelError, match=r"no signal left to model \(s3: reports within too short a stretch"):
            MSETDetector(max_missing=0.9, lags=0).fit(train[["s3"]])
    # s0 is modelled as if fitted alone (from its own past), and s3 has no estimate.
    test.iloc[40, 0] += 8.0
    detection = detector.detect(test, history=train)
    alone = MSETDetector().fit(train[["s0"]]).detect(test[["s0"]], history=train[["s0"]])
    np.testing.assert_array_equal(detection.score[:, 0], alone.score[:, 0])
    assert detection.is_anomaly[40, 0] and np.isnan(detection.expected[:, 1]).all()


def test_rows_without_memory_from_other_times_fit_without_warnings(data) -> None:
    # s3 installed half-way, s1 gone later: every row with all signals lies in one stretch of time,
    # whose rows have no memory state of another time to be estimated from (no evidence, by design);
    # each fit printed 24 RuntimeWarnings "invalid value encountered in subtract" into the task log.
    train = data[0].copy()
    train.iloc[:252, 3] = np.nan
    train.iloc[310:, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector = MSETDetector().fit(train)
    assert np.isfinite(detector.residual_scale_).all() and detector.dropped_signals_ == {}


@pytest.fixture(scope="module")
def with_constants(data) -> tuple[MSETDetector, pd.DataFrame, pd.DataFrame]:
    """Fitted with a signal stuck at 5, an error counter at 0 and a mostly missing one."""
    train, test = data
    train = train.assign(flat=5.0, errors=0.0, gappy=np.where(np.arange(len(train)) % 3 == 0, 1.0, np.nan))
    test = test.assign(flat=5.0, errors=0.0, gappy=1.0)
    return MSETDetector().fit(train), train, test


def test_a_signal_constant_in_training_that_moves_is_an_anomaly(with_constants) -> None:
    # flat read 5 in every training row and 172 when scored: the row said expected 5, lower = upper
    # = 5, feature_score 0 and is_anomaly False, a value outside its own bounds left unflagged.
    detector, train, test = with_constants
    assert detector.constant_signals_ == {"flat": 5.0, "errors": 0.0}
    clean = detector.detect(test, history=train)
    moved = test.copy()
    moved.iloc[[20, 21], 4] = 172.0
    moved.iloc[90, 5] = 1.0  # the error counter leaves 0
    moved.iloc[40, 4] = np.mean([5.0, 5.0, 5.0 + 1e-15])  # floating-point noise: the same reading
    moved.iloc[[60, 61], 4] = np.nan  # missing: no evidence either way
    detection = detector.detect(moved, history=train)
    added = np.flatnonzero(detection.is_anomaly[:, 0] & ~clean.is_anomaly[:, 0])
    assert added.tolist() == [20, 21, 90]
    assert (detection.feature_score[[20, 21], 4] == 1.0).all() and detection.feature_score[90, 5] == 1.0
    assert (detection.score[[20, 21, 90], :4] >= detector.threshold_).all()
    assert (detection.feature_score[[40, 60, 61], 4] == 0).all() and not detection.is_anomaly[[60, 61], 4].any()
    # The kept signals' scores are not changed by it; the constant stays the expected value and both bounds.
    np.testing.assert_array_equal(detection.feature_score[:, :4], clean.feature_score[:, :4])
    assert (detection.expected[:, 4] == 5.0).all() and (detection.lower[:, 4] == 5.0).all() and (detection.upper[:, 4] == 5.0).all()
    # The mostly missing signal has no estimate: no bounds are claimed for it (its median was shown as both).
    assert np.isnan(detection.expected[:, 6]).all() and np.isnan(detection.lower[:, 6]).all() and np.isnan(detection.upper[:, 6]).all()
    assert (detection.feature_score[:, 6] == 0).all()


def test_round_trip_keeps_the_constants(with_constants) -> None:
    detector, train, test = with_constants
    moved = test.copy()
    moved.iloc[20, 4] = 172.0
    files = detector.to_files()
    assert json.loads(files["detector.json"])["learned"]["constant_signals_"] == {"flat": 5.0, "errors": 0.0}
    a = detector.detect(moved, history=train)
    # A model saved before the constants were stored takes them from its training medians.
    meta = json.loads(files["detector.json"])
    del meta["learned"]["constant_signals_"]
    older = {**files, "detector.json": json.dumps(meta).encode()}
    for loaded in (load_detector("mset", files), load_detector("mset", older)):
        assert loaded.constant_signals_ == detector.constant_signals_
        b = loaded.detect(moved, history=train)
        assert b.is_anomaly[20, 0] and b.feature_score[20, 4] == 1.0
        np.testing.assert_array_equal(a.score, b.score)
        np.testing.assert_array_equal(a.expected, b.expected)


def test_a_constant_is_one_whatever_its_binary_value_and_a_tiny_signal_is_no_constant(data) -> None:
    # 504 copies of 1.1 have a std of 4e-16 (their mean is off in its last bit): the signal was kept
    # and the same reading, averaged, flagged; signals near 1e-170 have a std of 0 (the squares
    # underflow) and were taken for constants that moved at every row.
    def with_both(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(flat=1.1, tiny=frame["s1"] * 1e-170)

    train, test = (with_both(frame) for frame in data)
    assert np.std(train["flat"]) > 0
    detector = MSETDetector().fit(train)
    assert detector.constant_signals_ == {"flat": 1.1}
    assert "tiny" in detector.signals_
    moved = test.copy()
    moved.iloc[10, 4] = np.mean([1.1] * 7)  # the same reading, off in its last bit (1.0999999999999999)
    moved.iloc[20, 4] = 2.2
    detection = detector.detect(moved, history=train)
    assert detection.feature_score[10, 4] == 0 and detection.feature_score[20, 4] == 1.0 and detection.is_anomaly[20, 0]
    assert detector.detect(test, history=train).is_anomaly.any(axis=1).mean() < 0.05


def test_nothing_to_model_among_hundreds_of_signals_names_a_few_and_says_what_to_do() -> None:
    # 300 signals constant over the window (a machine switched off) made an error of 22,000 characters.
    index = pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC")
    frame = pd.DataFrame({f"sensor_{j:03d}": float(j) for j in range(300)}, index=index)
    with pytest.raises(ModelError) as caught:
        MSETDetector().fit(frame)
    message = str(caught.value)
    assert len(message) < 1000
    assert re.search(r"sensor_000: constant \(0\.0\).*sensor_004: constant \(4\.0\).*; and 295 more\)", message)
    assert "sensor_005" not in message and "leave the constant and gappy ones out of the job's features" in message


def test_a_value_whose_square_overflows_in_its_signals_units_is_flagged_not_lost(data) -> None:
    # A signal in units of 1e-165 reading 1.0: its distance to every memory state squared to
    # infinity, every estimate of the row was NaN and the row scored 0.
    train, test = (frame.assign(tiny=frame["s1"] * 1e-165) for frame in data)
    detector = MSETDetector().fit(train)
    moved = test.copy()
    moved.iloc[30, 4] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detection = detector.detect(moved, history=train)
    assert detection.is_anomaly[30].all() and detection.score[30, 0] == 1.0
    assert detection.feature_score[30].argmax() == 4
    assert np.isfinite(detection.expected[30]).all()


@pytest.mark.parametrize("bandwidth", [1e-200, 1e-160, 1e6])
def test_a_bandwidth_at_the_float_limits_still_estimates(data, bandwidth: float) -> None:
    # Below 1e-162 its square was 0 and every logit -inf or 0/0: no row had an estimate, and the
    # fit failed with "reports within too short a stretch of the training rows (missing in 0% of
    # them)" for every signal; 1e200 raised OverflowError (now refused: the widest allowed, 1e6,
    # is already the flat kernel).
    train, test = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector = MSETDetector(bandwidth=bandwidth).fit(train)
        spiked = test.copy()
        spiked.iloc[30, 2] += 3.0 if bandwidth < 1 else 30.0
        detection = detector.detect(spiked, history=train)
    assert detector.dropped_signals_ == {} and np.isfinite(detection.expected).all()
    assert detection.is_anomaly[30, 0] and detection.feature_score[30].argmax() == 2
    if bandwidth > 1:  # every memory state equally near: each signal's estimate is the memory's mean
        np.testing.assert_allclose(detection.expected[0], detector.memory_.mean(axis=0) * detector.scale_ + detector.center_)


def _zeros_dust_and_readings(rows: int, dust: float, seed: int) -> pd.DataFrame:
    """Two signals reading exactly 0 most of the time, float dust some of the time, and values."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=rows, p=[0.55, 0.33, 0.12])
    index = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC")
    return pd.DataFrame(
        {name: np.where(kind == 0, 0.0, np.where(kind == 1, dust * rng.random(rows), 1 + rng.random(rows))) for name in "ab"},
        index=index,
    )


@pytest.mark.parametrize("dust", [1e-100, 1e-158])
def test_the_automatic_bandwidth_is_not_chosen_on_float_dust(dust: float) -> None:
    # The memory's typical spacing was the dust's (3.5e-100, 7e-160): a kernel weighing states by
    # the rounding of their distances, and from 1e-154 logits that overflowed (a RuntimeWarning per
    # signal and block, no estimate, a threshold of 5e-324 and nothing ever flagged).
    frame = _zeros_dust_and_readings(700, dust, seed=3)
    train, test = frame.iloc[:600], frame.iloc[600:].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector = MSETDetector().fit(train)
        assert detector.bandwidth_ > 1e-3 and detector.threshold_ > 0.5
        test.iloc[50, 0] = 4.0  # twice the largest reading
        detection = detector.detect(test, history=train)
    assert detection.is_anomaly[50, 0] and detection.feature_score[50].argmax() == 0


@pytest.mark.parametrize("size", [1e-165, 1.6e153])
def test_a_mostly_constant_signal_is_scaled_whatever_the_size_of_its_values(data, size: float) -> None:
    # Mostly 0 (a MAD of 0), so scaled by its standard deviation, whose squares underflowed below
    # 1e-162 (a std of 0, a scale of 1: the signal stayed within 1e-162 of its median and nothing
    # it did was ever scored) and overflowed from about 1e153 (a scale of inf: every value
    # standardised to 0, and a RuntimeWarning in the task log).
    train, test = data
    rng = np.random.default_rng(5)
    train = train.assign(rare=np.where(rng.random(len(train)) < 0.4, size * (0.5 + 0.5 * rng.random(len(train))), 0.0))
    test = test.assign(rare=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector = MSETDetector().fit(train)
    assert 0 < detector.scale_[4] < size
    test.iloc[40, 4] = 8 * size
    detection = detector.detect(test, history=train)
    assert detection.is_anomaly[40, 0] and detection.feature_score[40].argmax() == 4


@pytest.mark.parametrize(("signals", "gaps", "sprt_window"), [(1, 0.0, 12), (3, 0.02, 12), (3, 0.0, 1), (2, 0.0, 40)])
def test_scoring_in_chunks_gives_the_same_numbers_as_one_pass(monkeypatch, signals: int, gaps: float, sprt_window: int) -> None:
    frame = plant(TRAIN_ROWS + 20_000, seed=21, signals=signals)
    frame = frame.mask(np.random.default_rng(6).random(frame.shape) < gaps)
    train, test = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:].copy()
    test.iloc[[7_811, 7_812, 15_630], 0] += 5.0  # around the first chunk's end, and in the third chunk
    detector = MSETDetector(sprt_window=sprt_window).fit(train)
    assert 20_000 > 2 * mset._estimate_block_rows(len(detector.memory_))
    monkeypatch.setattr(mset, "_CHUNK_ELEMENTS", 1)  # a chunk is one block of the estimate
    chunked = detector.detect(test, history=train)
    monkeypatch.setattr(mset, "_CHUNK_ELEMENTS", 10**12)
    whole = detector.detect(test, history=train)
    for field in ("score", "feature_score", "expected", "lower", "upper", "is_anomaly"):
        np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field), err_msg=field)
    assert chunked.is_anomaly[[7_811, 15_630], 0].all()


def test_scoring_takes_a_few_times_the_frame_in_memory(monkeypatch) -> None:
    # States, estimates, residuals and three sequential tests of every row at once, with their
    # copies, took 13 to 15 times the frame (2 GiB for 1,000,000 rows of 20 signals); the
    # detection's own arrays are 5 times it. Small blocks and chunks keep their fixed share (tens
    # of MB, whatever the frame) out of the measure on a frame this small.
    monkeypatch.setattr(mset, "_BLOCK_ELEMENTS", 20_000)
    monkeypatch.setattr(mset, "_CHUNK_ELEMENTS", 20_000)
    frame = plant(TRAIN_ROWS + 20_000, seed=22, signals=20)
    train, test = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:]
    detector = MSETDetector(memory_size=64).fit(train)
    tracemalloc.start()
    try:
        detector.detect(test)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 7 * test.to_numpy().nbytes  # 13.1 before
