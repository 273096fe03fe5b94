"""The replacement rule auto and tuning share: clearly better (margin and a paired test), on
stretches held back latest first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.selection import compare, held_back_stretches


@pytest.mark.parametrize(
    ("gains", "margin", "clearly"),
    [
        ([0.25] * 5, 0.01, True),  # the same lead on every planting
        ([0.25] * 5, 0.3, False),  # ... but not more than a larger margin
        ([0.6, -0.2, 0.5, -0.3, 0.1], 0.01, False),  # a mean lead of 0.14 within chance
        ([0.0] * 5, 0.0, False),  # no lead at all
        ([0.2], 0.1, True),  # one planting: nothing to test, the margin decides
        ([0.05], 0.1, False),
    ],
)
def test_a_challenger_is_clearly_better_by_more_than_the_margin_and_beyond_chance(gains, margin, clearly) -> None:
    reference = [0.5] * len(gains)
    comparison = compare([0.5 + gain for gain in gains], reference, margin)
    assert comparison.clearly_better is clearly
    assert comparison.gain == pytest.approx(np.mean(gains))
    assert (comparison.p_value is None) == (len(gains) == 1 or not any(gains))
    assert ("clearly better" in comparison.describe()) is clearly


def test_a_lead_within_chance_says_so_and_gives_its_p_value() -> None:
    comparison = compare([1.1, 0.3, 1.0, 0.2, 0.6], [0.5] * 5, margin=0.02)
    assert 0.05 < comparison.p_value < 1 and comparison.describe().endswith("within chance")
    assert "not more than the margin 0.5" in compare([0.6] * 5, [0.5] * 5, margin=0.5).describe()


def test_stretches_are_held_back_latest_first_each_from_the_rows_before_it() -> None:
    rows = pd.DataFrame({"x": np.arange(400.0)})
    stretches = held_back_stretches(rows, 0.25, 3, min_rows=60)
    assert [(len(head), len(tail)) for head, tail in stretches] == [(300, 100), (225, 75), (168, 57)]
    for (head, tail), (earlier_head, earlier_tail) in zip(stretches, stretches[1:]):
        assert tail.index[0] == head.index[-1] + 1  # a tail follows its own head
        assert earlier_tail.index[-1] == tail.index[0] - 1 and len(earlier_head) + len(earlier_tail) == len(head)
    # Stops when the rows left to split are too few.
    assert len(held_back_stretches(rows, 0.25, 10, min_rows=60)) == 7
    assert held_back_stretches(rows.iloc[:59], 0.25, 3, min_rows=60) == []
