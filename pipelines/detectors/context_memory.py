"""A contextual sequence memory: the learning core of the ``context`` detector.

This is the algorithm of the Contextual Anomaly Detector, open-source edition (CAD OSE, Mikhail
Smirnov, 2016; third on the NAB scoreboard), written anew for this library: no maintained
package provides it (the original lives inside the NAB benchmark's repository as a script), and
the detector needs what that script lacks: copying and saving the memory as plain arrays.

Each step receives a set of *facts* (small integers: here the bits of a quantised value). A
*context* pairs a *left* set of facts (what held at the previous step: its value facts plus the
contexts active then, as facts of their own) with a *right* set (the facts now). The memory
remembers every pair it has seen and the sub-pairs where remembered ones overlap. A step then
measures two things: the share of the contexts whose left side held that are confirmed by the
facts now (high when the sequence goes as before), and the share of the candidate new contexts
that were really new (high when the sequence goes somewhere never seen). Its anomaly score is
``(1 - confirmed + new) / 2``, and 1 when a fact was never seen before (CAD OSE never meets one:
on NAB it quantised every file over that file's whole range, known in advance; here values beyond
the training range get facts of their own, see :mod:`pipelines.detectors.context`).
"""

from __future__ import annotations

from collections import Counter
from itertools import chain
from typing import Self

import numpy as np

#: Offset of the facts that stand for active contexts, above every value fact.
NEURON_FACT = 1 << 31

_LEFT, _RIGHT = 0, 1


class ContextMemory:
    """The memory of one signal, learning as it steps.

    Parameters
    ----------
    max_left_facts : int
        Longest overlap of left facts a derived context may have.
    max_active : int
        Most active contexts carried to the next step as left facts (the most confirmed first).
    """

    def __init__(self, max_left_facts: int = 7, max_active: int = 15):
        self.max_left_facts = max_left_facts
        self.max_active = max_active
        # Per side: facts -> semi-context id; id -> facts; fact -> ids of the semi-contexts
        # holding it (in id order, so that crossings list them in a reproducible order).
        self._ids: tuple[dict[tuple[int, ...], int], dict[tuple[int, ...], int]] = ({}, {})
        self._facts: tuple[list[tuple[int, ...]], list[tuple[int, ...]]] = ([], [])
        # id -> number of facts: len() of _facts, kept beside it because a step compares it for
        # hundreds of semi-contexts (7 % of a step's time when taken with len()).
        self._sizes: tuple[list[int], list[int]] = ([], [])
        self._by_fact: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})
        self._children: list[dict[int, int]] = []  # left id -> {right id: context id}
        self._count: list[int] = []  # context id -> times confirmed
        self._zero_level: list[bool] = []  # context id -> seen whole, as (left group, facts)
        self._left_group: tuple[int, ...] = ()
        self._left_matched: dict[int, int] = {}

    @property
    def contexts(self) -> int:
        return len(self._count)

    def step(self, facts: set[int] | frozenset[int]) -> tuple[float, tuple[int, ...] | None]:
        """Learn one step; return its anomaly score in [0, 1] and the facts the memory
        predicted for it from the previous step (None when no remembered context did)."""
        now = tuple(sorted(facts))
        unseen = any(fact not in self._by_fact[_RIGHT] for fact in now)
        candidates: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
        new_whole, just_made = False, -1
        if self._left_group and now:
            candidates.add((self._left_group, now))
            just_made, new_whole = self._context(self._left_group, now, zero_level=True)
            if not new_whole:
                just_made = -1
        right_matched = self._cross(_RIGHT, now)
        active, selected, derived, predicted, best = [], 0, [], None, (-1, -1)
        left_facts, right_facts, counts, zero_level = self._facts[_LEFT], self._facts[_RIGHT], self._count, self._zero_level
        left_now, right_now_facts = frozenset(self._left_group), frozenset(now)
        left_sizes, right_sizes, most = self._sizes[_LEFT], self._sizes[_RIGHT], self.max_left_facts
        # Only lefts held whole (they predict) or, at a new whole context, short enough to
        # derive from matter: most share only some facts with the group, and filtering them in
        # one comprehension is most of what a step saves.
        lefts = [
            (left, matched)
            for left, matched in self._left_matched.items()
            if matched == left_sizes[left] or (new_whole and matched <= most)
        ]
        for left, matched in lefts:
            whole_left = matched == left_sizes[left]
            derivable = new_whole and matched <= most
            for right, context in self._children[left].items():
                if context == just_made:
                    continue
                right_now = right_matched.get(right, 0)
                if whole_left:
                    selected += 1
                    # The prediction: the most confirmed of the longest right sides (a
                    # derived context's right side may hold only some of a value's facts).
                    rank = (right_sizes[right], counts[context])
                    if rank > best:
                        best, predicted = rank, right_facts[right]
                    if right_now and right_now == right_sizes[right]:
                        counts[context] += 1
                        active.append(context)
                        continue
                if right_now and derivable and zero_level[context]:
                    derived.append((_present(left_facts[left], left_now), _present(right_facts[right], right_now_facts)))
        candidates.update(derived)
        confirmed = len(active) / selected if selected else 0.0
        # The most confirmed contexts become facts of the next left group (ties: the older first).
        active.sort(key=lambda context: (counts[context], -context))
        carried = {NEURON_FACT + context for context in active[-self.max_active :]} if self.max_active else set()
        self._left_group = tuple(sorted(set(now) | carried))
        added = sum(self._context(left, right, zero_level=False)[1] for left, right in derived)
        self._left_matched = self._cross(_LEFT, self._left_group)
        new = (added + 1) / len(candidates) if new_whole and candidates else 0.0
        if unseen:
            # A fact never seen before (a value beyond every level learned) is as new as it
            # gets; the shares above can stay moderate then, as few contexts hold such a fact.
            return 1.0, predicted
        return (1.0 - confirmed + new) / 2.0, predicted

    def _semi_context(self, side: int, facts: tuple[int, ...]) -> int:
        ids = self._ids[side]
        found = ids.get(facts)
        if found is not None:
            return found
        made = ids[facts] = len(self._facts[side])
        self._facts[side].append(facts)
        self._sizes[side].append(len(facts))
        by_fact = self._by_fact[side]
        for fact in facts:
            by_fact.setdefault(fact, []).append(made)
        if side == _LEFT:
            self._children.append({})
        return made

    def _context(self, left: tuple[int, ...], right: tuple[int, ...], zero_level: bool) -> tuple[int, bool]:
        """The id of the context (left, right), made if new; and whether it was made."""
        children = self._children[self._semi_context(_LEFT, left)]
        right_id = self._semi_context(_RIGHT, right)
        found = children.get(right_id)
        if found is None:
            made = children[right_id] = len(self._count)
            self._count.append(0)
            self._zero_level.append(zero_level)
            return made, True
        if zero_level:
            self._zero_level[found] = True
        return found, False

    def _cross(self, side: int, facts: tuple[int, ...]) -> dict[int, int]:
        """Semi-contexts of ``side`` holding any of ``facts`` -> how many of them, in the order
        the semi-contexts are first met (fact by fact, each fact's in id order).

        Counts only: a step needs which facts match for the few contexts it derives
        (:func:`_present`), and counting in C was most of the cost of listing them per step."""
        by_fact = self._by_fact[side]
        return Counter(chain.from_iterable(by_fact.get(fact, ()) for fact in facts))

    # -- copies and artifacts -------------------------------------------------------------

    def copy(self) -> Self:
        """An independent memory in the same state (the fitted one stays as it is)."""
        twin = type(self)(self.max_left_facts, self.max_active)
        twin._ids = (dict(self._ids[0]), dict(self._ids[1]))
        twin._facts = (list(self._facts[0]), list(self._facts[1]))
        twin._sizes = (list(self._sizes[0]), list(self._sizes[1]))
        twin._by_fact = tuple({fact: list(ids) for fact, ids in side.items()} for side in self._by_fact)  # type: ignore[assignment]
        twin._children = [dict(children) for children in self._children]
        twin._count, twin._zero_level = list(self._count), list(self._zero_level)
        twin._left_group = self._left_group
        twin._left_matched = dict(self._left_matched)
        return twin

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The state as integer arrays (:meth:`from_arrays` rebuilds it exactly)."""
        arrays: dict[str, np.ndarray] = {}
        for name, side in (("left", _LEFT), ("right", _RIGHT)):
            facts = self._facts[side]
            arrays[f"{name}_facts"] = np.fromiter((f for group in facts for f in group), dtype=np.int64)
            arrays[f"{name}_sizes"] = np.fromiter((len(group) for group in facts), dtype=np.int64, count=len(facts))
        pairs = [(left, right, context) for left, children in enumerate(self._children) for right, context in children.items()]
        pairs.sort(key=lambda pair: pair[2])  # ids run 0..n-1: the row is the id
        contexts = np.zeros((len(pairs), 4), dtype=np.int64)
        if pairs:
            contexts[:, :2] = np.asarray(pairs, dtype=np.int64)[:, :2]
            contexts[:, 2] = np.asarray(self._count, dtype=np.int64)
            contexts[:, 3] = np.asarray(self._zero_level, dtype=np.int64)
        arrays["contexts"] = contexts
        arrays["left_group"] = np.asarray(self._left_group, dtype=np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], max_left_facts: int, max_active: int) -> Self:
        memory = cls(max_left_facts, max_active)
        for name, side in (("left", _LEFT), ("right", _RIGHT)):
            sizes = arrays[f"{name}_sizes"]
            ends = np.cumsum(sizes)
            flat = arrays[f"{name}_facts"].tolist()
            # Starts from the ends and sizes, not by shifting the ends: a memory that has not made
            # a context yet (one value learned) has no semi-contexts, and a shift would leave a
            # start with no end.
            for start, end in zip((ends - sizes).tolist(), ends.tolist(), strict=True):
                memory._semi_context(side, tuple(flat[start:end]))
        # Contexts come back in id order, so every left side lists its children in the order
        # they were made, as during learning.
        for left, right, count, zero_level in arrays["contexts"].tolist():
            memory._children[left][right] = len(memory._count)
            memory._count.append(count)
            memory._zero_level.append(bool(zero_level))
        memory._left_group = tuple(arrays["left_group"].tolist())
        memory._left_matched = memory._cross(_LEFT, memory._left_group)
        return memory


def _present(facts: tuple[int, ...], held: frozenset[int]) -> tuple[int, ...]:
    """The facts of a semi-context that hold now, in its own (ascending) order: every group of
    facts is stored sorted, so this is the order in which crossing met them."""
    return tuple(fact for fact in facts if fact in held)
