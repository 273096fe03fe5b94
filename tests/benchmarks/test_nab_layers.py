"""The whole-history layers of benchmarks.nab_layers on synthetic surprises and scores."""

from __future__ import annotations

import numpy as np

from benchmarks import nab_layers
from benchmarks.nab import SeriesReplay


def test_likelihood_learns_then_alarms_at_the_start_of_a_lasting_change_only() -> None:
    rng = np.random.default_rng(7)
    surprises = rng.exponential(1.0, 3000)  # calibrated scores of normal rows: Exp(1) surprises
    surprises[2500:2560] += 4.0
    tail = nab_layers.anomaly_likelihood(surprises, learning_rows=400)

    assert (tail[:400] == 0.5).all()
    alarms = np.flatnonzero(tail < nab_layers.ALARM_TAIL)
    assert ((alarms >= 2500) & (alarms < 2510)).any()
    # Averages of ten Exp(1) surprises have a heavier tail than the normal fitted to them: a few
    # in 2,000 noise rows, where a tail of 10⁻⁵ promises none. One reason the layer was not adopted.
    assert 0 < np.count_nonzero(alarms < 2500) <= 5
    # Consecutive red rows are filtered: a lasting change alarms at its start, not all along.
    assert np.count_nonzero((alarms >= 2500) & (alarms < 2560)) < 10


def test_history_rank_lowers_a_burst_the_series_has_shown_before() -> None:
    score = np.linspace(0.0, 0.9, 2000)
    np.random.default_rng(1).shuffle(score)
    score[500] = score[1500] = 0.9999
    ranked = nab_layers.history_rank(score)

    assert ranked[500] > 0.999
    assert ranked[1500] < ranked[500]
    assert ((ranked >= 0) & (ranked <= 1)).all()


def _replay(score: list[float], flagged: list[bool], scored: list[bool]) -> SeriesReplay:
    return SeriesReplay(
        key="s", score=np.array(score), is_anomaly=np.array(flagged), scored=np.array(scored), params={}, note=None,
        dropped_rows=0, predict_runs=1, training_runs=1, promotions=1, failed_trainings=0, seconds=0.0,
    )


def test_max_layer_keeps_rows_both_scored_and_flags_what_either_flagged() -> None:
    one = _replay([0.0, 0.2, 0.9, 0.1], [False, False, True, False], [False, True, True, True])
    other = _replay([0.5, 0.7, 0.1, 0.3], [True, True, False, False], [True, True, True, False])
    (layered,) = nab_layers.max_layer({"s": one}, {"s": other}).values()

    np.testing.assert_array_equal(layered.scored, [False, True, True, False])
    np.testing.assert_array_equal(layered.score, [0.0, 0.7, 0.9, 0.0])
    np.testing.assert_array_equal(layered.is_anomaly, [False, True, True, False])
