from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import nab, nab_plot
from benchmarks.nab_direct import parse_detector, replay_series
from pipelines.evaluation.nab import score_corpus

ROOT = nab.nab_root()
if not (ROOT / "labels" / "combined_windows.json").exists():  # pragma: no cover
    pytest.skip(f"the NAB corpus is not at {ROOT}", allow_module_level=True)

KEY = "realAdExchange/exchange-4_cpc_results.csv"


def test_classify_takes_the_first_alarm_of_each_window_and_every_alarm_outside() -> None:
    stamps = pd.date_range("2024-01-01", periods=10, freq="h")
    flagged = np.zeros(10, dtype=bool)
    flagged[[1, 3, 4, 8]] = True
    windows = [(stamps[3], stamps[5]), (stamps[6], stamps[7])]
    first, false, found = nab_plot.classify(stamps, flagged, windows)
    assert first.tolist() == [3] and false.tolist() == [1, 8] and found == 1


def test_a_drawn_replay_counts_what_nabs_scorer_counts(tmp_path) -> None:
    replay = replay_series(ROOT / "data" / KEY, KEY, parse_detector("context"))
    image = tmp_path / "plot.png"
    summary = nab_plot.draw(KEY, "context", replay, ROOT, image)
    scored = score_corpus({KEY: replay.is_anomaly}, ROOT, "standard", partial=True).series[KEY]
    assert (summary.found, summary.false_alarms, summary.raw) == (scored.tp, scored.fp, scored.raw)
    assert summary.windows == scored.tp + scored.fn == 3
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 20_000


def test_the_section_links_each_image_under_docs(tmp_path) -> None:
    summary = nab_plot.AlarmSummary(windows=3, found=2, false_alarms=4, raw=0.29)
    markdown = nab_plot.section([(KEY, nab.REPO / "docs" / "img" / "x.png", summary)], "context")
    assert f"**{KEY}**: 2 of 3 windows found, 4 false-alarm rows, raw score 0.29." in markdown
    assert "![context on realAdExchange/exchange-4_cpc_results.csv](img/x.png)" in markdown


SECTION = """
| Detector | Threshold | Standard | Reward low FP | Reward low FN | Source |
| --- | --- | ---: | ---: | ---: | --- |
| `iforest` | fixed: contamination 0.005 of each training window (as deployed), flagged rows | -21.4 | -126.2 | 15.0 | ours |
| `iforest` | swept: best corpus-wide score threshold per profile, flagged rows | 41.3 | 34.3 | 46.2 | ours |
| `iforest` | alerts, fixed: the fixed threshold, one alert per event | 48.6 | 19.0 | 60.3 | ours |
| Perfect | optimised per profile by NAB | 100.0 | 100.0 | 100.0 | published |
| Numenta HTM | optimised per profile by NAB | 70.5-69.7 | 62.6-61.7 | 75.2-74.2 | published |
| Null | optimised per profile by NAB | 0.0 | 0.0 | 0.0 | published |

| Detector | 0 | 12 | 50 | 100 | 200 | 400 |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| `iforest` | 15.7 | 25.2 | 35.4 | 42.2 | 48.1 | 50.2 |
"""


def test_the_scoreboard_reads_flagged_rows_fixed_and_swept_and_the_published_scores(tmp_path) -> None:
    standings = nab_plot.scoreboard(SECTION)
    assert standings == [
        nab_plot.Standing("Numenta HTM", None, 70.5),  # the first of a range over seeds
        nab_plot.Standing("iforest", -21.4, 41.3),  # alerts rows and the snooze table left out
    ]
    image = tmp_path / "board.png"
    nab_plot.draw_scoreboard(standings, image)
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unknown_series_is_refused_before_any_replay(capsys) -> None:
    with pytest.raises(SystemExit):
        nab_plot.main(["--series", "realKnownCause/nyc_taxi.csv", "nope.csv", "--out", "/tmp/unused"])
    error = capsys.readouterr().err
    assert "not a NAB series" in error and "nope.csv" in error and "nyc_taxi.csv," not in error
