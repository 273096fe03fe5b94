"""One far-disturbed signal must not move the other signals' estimates nor share its blame."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.detectors import mset
from pipelines.detectors.mset import MSETDetector
from tests.pipelines.detectors.test_mset import plant

ROW = 30


@pytest.fixture(scope="module", params=[3, 30, 300])
def fitted(request) -> tuple[MSETDetector, object, object]:
    frame = plant(24 * 28, seed=11, signals=request.param)
    train, test = frame.iloc[: 24 * 21], frame.iloc[24 * 21 :]
    return MSETDetector().fit(train), train, test


@pytest.mark.parametrize("sigmas", [5.0, 20.0, 1e4])
def test_a_far_disturbed_signal_alone_takes_the_blame(fitted, sigmas: float) -> None:
    # With 30 signals and one 20 sigmas off, the kernel weighed the memory by that one signal: the
    # other 29 estimates moved by up to 1.5 standard deviations and every one of them reached the
    # alarm level beside it.
    detector, train, test = fitted
    signals = test.shape[1]
    disturbed = signals // 2
    moved = test.copy()
    moved.iloc[ROW, disturbed] += sigmas * test.iloc[:, disturbed].std()
    detection = detector.detect(moved, history=train)
    others = np.arange(signals) != disturbed
    assert detection.is_anomaly[ROW, 0] and detection.feature_score[ROW].argmax() == disturbed
    assert (detection.feature_score[ROW, others] < detector.threshold_).all()
    # The rule: a value that far out moves the others' estimates as a missing one would.
    missing = test.copy()
    missing.iloc[ROW, disturbed] = np.nan
    without = detector.detect(missing, history=train)
    np.testing.assert_allclose(detection.expected[ROW, others], without.expected[ROW, others], rtol=1e-9)


def test_every_signal_far_out_is_still_judged_on_its_own_residual(fitted) -> None:
    # A new operating state of the whole machine: nothing is left to shield the others from, so
    # nothing is left out and every signal keeps its estimate and evidence.
    detector, train, test = fitted
    moved = test.copy()
    moved.iloc[ROW] += 20.0 * test.std()
    detection = detector.detect(moved, history=train)
    assert detection.is_anomaly[ROW, 0] and np.isfinite(detection.expected[ROW]).all()
    assert detection.feature_score[ROW].max() >= detector.threshold_


def test_rows_left_out_of_estimates_score_the_same_in_chunks(monkeypatch) -> None:
    # The estimates without a far-out value are made again block by block, as the first ones:
    # made for those rows alone, a product's shape (so its last bits) depended on how many there were.
    frame = plant(24 * 21 + 20_000, seed=21, signals=3)
    train, test = frame.iloc[: 24 * 21], frame.iloc[24 * 21 :].copy()
    test.iloc[[7_811, 7_812, 15_630], 0] += 50.0  # around the first chunk's end, and in the third chunk
    test.iloc[3_000:3_400, 1] = 1e6  # a sensor stuck far out
    detector = MSETDetector().fit(train)
    assert 20_000 > 2 * mset._estimate_block_rows(len(detector.memory_))
    monkeypatch.setattr(mset, "_CHUNK_ELEMENTS", 1)
    chunked = detector.detect(test, history=train)
    monkeypatch.setattr(mset, "_CHUNK_ELEMENTS", 10**12)
    whole = detector.detect(test, history=train)
    for field in ("score", "feature_score", "expected", "lower", "upper", "is_anomaly"):
        np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field), err_msg=field)
    assert chunked.is_anomaly[[7_811, 15_630], 0].all() and (chunked.feature_score[3_000:3_400].argmax(axis=1) == 1).all()
