from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import nab, nab_lookahead
from pipelines.evaluation.nab import probationary_rows

ROOT = nab.nab_root()
if not (ROOT / "labels" / "combined_windows.json").exists():  # pragma: no cover
    pytest.skip(f"the NAB corpus is not at {ROOT}", allow_module_level=True)

KEY = "realAdExchange/exchange-3_cpc_results.csv"


def test_look_ahead_spans_the_whole_file_and_causal_only_the_training_rows() -> None:
    values = pd.read_csv(ROOT / "data" / KEY)["value"]
    probation = probationary_rows(len(values))
    ahead = nab_lookahead.stream_series(ROOT / "data" / KEY, KEY, "look-ahead")
    causal = nab_lookahead.stream_series(ROOT / "data" / KEY, KEY, "causal")
    assert ahead.params == {"value_range": (values.min(), values.max()), "rest": int(probation / 5)}
    assert causal.params == {"rest": 12}  # the default rest of 12 hours, on this hourly file
    for replay in (ahead, causal):
        assert not replay.scored[:probation].any() and replay.scored[probation:].all()
        assert ((replay.score >= 0) & (replay.score <= 1)).all()
    assert not np.array_equal(ahead.score, causal.score)


def test_the_section_names_both_settings_and_the_published_score() -> None:
    markdown = nab_lookahead.section([["look-ahead", "1.0", "2.0", "3.0", "4.0", "0.1 min"]], 58)
    assert "| look-ahead | 1.0 | 2.0 | 3.0 | 4.0 | 0.1 min |" in markdown
    assert "inputMin" not in markdown and "`nab/detectors/base.py`" in markdown and "69.9" in markdown


def test_a_flat_file_streams_with_the_detectors_own_range() -> None:
    key = "artificialNoAnomaly/art_flatline.csv"
    values = pd.read_csv(ROOT / "data" / key)["value"]
    assert values.min() == values.max()
    ahead = nab_lookahead.stream_series(ROOT / "data" / key, key, "look-ahead")
    assert "value_range" not in ahead.params
    assert ahead.scored[probationary_rows(len(values)) :].all() and not ahead.is_anomaly.any()
