"""Scoring in several threads at once (the scoring API's): each forecast runs on one torch thread
and gives the scores of a call alone, and the calling threads' settings are left as they were.
Trainings in several threads take turns, so each gives the weights it gives alone.

torch's thread count (OpenMP's) belongs to the thread that sets it, so saving and restoring it
around each forecast, as ``_predict`` does, cannot undo another thread's: measured with torch
2.13 (a thread's ``set_num_threads(1)`` left the main thread's 2 alone).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipelines.detectors.lstm import LSTMDetector, _predict  # noqa: E402


def test_overlapping_scores_stay_on_one_thread_and_leave_other_threads_settings_alone() -> None:
    # The first thread in leaves first; the second forecasts after it left.
    windows = np.zeros((4, 3, 1), dtype="float32")
    order: dict[int, int] = {}
    lock = threading.Lock()
    both_inside = threading.Barrier(2, timeout=10)
    first_left = threading.Event()
    threads_seen: list[int] = []

    def network(batch):
        with lock:
            order[threading.get_ident()] = len(order)
        both_inside.wait()
        if order[threading.get_ident()] == 1:
            assert first_left.wait(timeout=10)
        threads_seen.append(torch.get_num_threads())
        return batch[:, -1, :]

    def score() -> None:
        _predict(torch, network, windows)
        if order[threading.get_ident()] == 0:
            first_left.set()

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        workers = [threading.Thread(target=score) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
        assert threads_seen == [1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_scores_from_many_threads_at_once_equal_one_thread_alone() -> None:
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(12, seed=2)
    detector = LSTMDetector(window=12, hidden_size=8, max_epochs=2).fit(frame.iloc[:240])
    alone = detector.detect(frame.iloc[240:]).score
    results: list[np.ndarray] = []

    def score() -> None:
        for _ in range(5):
            results.append(detector.detect(frame.iloc[240:]).score)

    workers = [threading.Thread(target=score) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert len(results) == 20
    for scores in results:
        np.testing.assert_array_equal(scores, alone)


def test_trainings_in_two_threads_at_once_equal_each_alone(monkeypatch) -> None:
    # torch's seed belongs to the process: the second training's seed re-seeded the first one's
    # weights when it came between the first's seeding and its network. Here the first training
    # waits (up to 2 s) for the second to be seeded before it builds its network, which is
    # exactly that interleaving unless trainings take turns.
    from pipelines.detectors import lstm
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(12, seed=2).iloc[:240]
    alone = {seed: LSTMDetector(window=12, hidden_size=8, max_epochs=2, random_state=seed).fit(frame) for seed in (1, 2)}
    first_building, second_seeded, first_built = threading.Event(), threading.Event(), threading.Event()
    build = lstm._network

    def network(*args):
        if threading.current_thread().name == "first":
            first_building.set()
            second_seeded.wait(timeout=2)
            built = build(*args)
            first_built.set()
            return built
        second_seeded.set()  # _network runs after the seeding
        first_built.wait(timeout=2)
        return build(*args)

    monkeypatch.setattr(lstm, "_network", network)
    together: dict[int, LSTMDetector] = {}

    def train(seed: int) -> None:
        together[seed] = LSTMDetector(window=12, hidden_size=8, max_epochs=2, random_state=seed).fit(frame)

    first = threading.Thread(target=train, args=(1,), name="first")
    first.start()
    assert first_building.wait(timeout=30)
    second = threading.Thread(target=train, args=(2,), name="second")
    second.start()
    for worker in (first, second):
        worker.join(timeout=120)
    assert set(together) == {1, 2}
    for seed in (1, 2):
        for name, weights in alone[seed].state_dict_.items():
            np.testing.assert_array_equal(together[seed].state_dict_[name], weights)
