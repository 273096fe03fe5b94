from __future__ import annotations

import numpy as np

from pipelines.detectors.context_memory import NEURON_FACT, ContextMemory

# A repeating sequence of four "values", each a set of facts (as the quantised bits would be).
CYCLE = [{0, 2}, {1, 2}, {0, 3}, {1, 3}]


def run(memory: ContextMemory, steps: list[set[int]]) -> list[float]:
    return [memory.step(facts)[0] for facts in steps]


def test_a_repeated_sequence_stops_being_new_and_a_break_in_it_is_new() -> None:
    memory = ContextMemory()
    scores = run(memory, CYCLE * 30)
    assert scores[1] == 1.0  # the first transition: nothing remembered, every context new
    assert max(scores[-20:]) < 0.1
    # The same values in another order: each transition is new in its context.
    assert run(memory, [CYCLE[0], CYCLE[2]])[1] > 0.75
    # Values never seen at all.
    assert run(memory.copy(), [{4, 6}])[0] > 0.75


def test_prediction_is_the_value_that_followed_before() -> None:
    memory = ContextMemory()
    run(memory, CYCLE * 10)
    _, predicted = memory.step(CYCLE[0])
    assert predicted == (0, 2)
    _, predicted = memory.step({0, 2})  # after CYCLE[0] came CYCLE[1] every time
    assert predicted == (1, 2)


def test_active_contexts_become_facts_of_the_next_step() -> None:
    memory = ContextMemory(max_active=3)
    run(memory, CYCLE * 10)
    carried = [fact for fact in memory._left_group if fact >= NEURON_FACT]
    assert 1 <= len(carried) <= 3


def test_a_copy_learns_without_changing_the_original() -> None:
    memory = ContextMemory()
    run(memory, CYCLE * 10)
    before = memory.to_arrays()
    copy = memory.copy()
    run(copy, [{5, 7}, {4, 6}] * 5)
    assert copy.contexts > memory.contexts
    for name, array in memory.to_arrays().items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_arrays_rebuild_a_memory_that_steps_identically() -> None:
    memory = ContextMemory(max_left_facts=5, max_active=4)
    rng = np.random.default_rng(0)
    steps = [CYCLE[i % 4] if rng.random() < 0.9 else {int(rng.integers(4, 8)), 9} for i in range(300)]
    run(memory, steps)
    arrays = memory.to_arrays()
    assert all(array.dtype == np.int64 for array in arrays.values())
    rebuilt = ContextMemory.from_arrays(arrays, max_left_facts=5, max_active=4)
    more = [CYCLE[i % 4] if i % 7 else {5, 9} for i in range(50)]
    assert [memory.step(s) for s in more] == [rebuilt.step(s) for s in more]


def test_arrays_rebuild_a_memory_that_has_made_no_context_yet() -> None:
    # After one step (a feature with a single value in its training rows) nothing is remembered
    # but the left group the next step starts from.
    memory = ContextMemory()
    memory.step(CYCLE[0])
    arrays = memory.to_arrays()
    assert arrays["left_sizes"].size == 0 and arrays["right_sizes"].size == 0 and len(arrays["contexts"]) == 0
    rebuilt = ContextMemory.from_arrays(arrays, max_left_facts=7, max_active=15)
    assert [memory.step(s) for s in CYCLE * 3] == [rebuilt.step(s) for s in CYCLE * 3]
