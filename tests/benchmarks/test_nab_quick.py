"""The NAB replay harness in its quick mode: three short series through the real pipeline
(GX validation, registry, Parquet outputs), then checks of what it reports."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import nab
from benchmarks.detectors import DETECTORS, DetectorUnderTest
from benchmarks.report import table_rows
from pipelines.evaluation.nab import probationary_rows

pytestmark = pytest.mark.slow

ROOT = nab.nab_root()
if not (ROOT / "labels" / "combined_windows.json").exists():  # pragma: no cover
    pytest.skip(f"the NAB corpus is not at {ROOT}", allow_module_level=True)

#: Cut inside a chunk that follows a retraining (rows 230-479 train first, chunk 4 at row 1230
#: is preceded by a retraining), so the check covers both schedules and mid-window scoring.
CAUSAL_SERIES = "realAdExchange/exchange-3_cpc_results.csv"
CUT_ROW = 1400


@pytest.fixture(scope="module")
def quick() -> tuple[list[nab.DetectorRun], str]:
    return nab.replay(quick=True)


def test_every_row_after_probation_gets_a_calibrated_score(quick: tuple[list[nab.DetectorRun], str]) -> None:
    runs, _ = quick
    assert [run.detector for run in runs] == DETECTORS[:1]
    (run,) = runs
    assert sorted(run.series) == sorted(nab.QUICK_SERIES)
    for key, replay in run.series.items():
        n = len(pd.read_csv(ROOT / "data" / key))
        probation = probationary_rows(n)
        assert replay.score.shape == replay.is_anomaly.shape == (n,)
        assert replay.scored[probation:].all(), key
        assert not replay.scored[:probation].any(), key
        scores = replay.score[probation:]
        assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all(), key
        assert (replay.score[:probation] == 0).all() and not replay.is_anomaly[:probation].any(), key
        assert replay.predict_runs == math.ceil((n - probation) / nab.CHUNK_ROWS)
        assert replay.training_runs == 1 + (replay.predict_runs - 1) // nab.RETRAIN_EVERY


def test_the_season_falls_back_only_where_two_days_do_not_fit(quick: tuple[list[nab.DetectorRun], str]) -> None:
    (run,) = quick[0]
    seasons = {key: replay.params.get("season") for key, replay in run.series.items()}
    # Hourly data: 24 slots, 184 fitted rows. 5-minute data: 288 slots, under 200 fitted rows.
    assert seasons == {
        "realAdExchange/exchange-3_cpc_results.csv": "1d",
        "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv": None,
        "realTraffic/speed_7578.csv": None,
    }
    assert run.series["realTraffic/speed_7578.csv"].note.endswith("season None")


@pytest.mark.parametrize(
    ("frequency", "rows", "season"),
    [
        (timedelta(hours=1), 60, "1d"),  # 48 fitted rows: exactly two seasons
        (timedelta(hours=1), 59, None),  # 47 fitted rows
        (timedelta(minutes=5), 750, "1d"),  # 600 >= 576
        (timedelta(minutes=5), 604, None),  # 483 < 576
    ],
)
def test_params_for_needs_two_seasons_in_the_fitted_rows(frequency: timedelta, rows: int, season: str | None) -> None:
    params, note = DetectorUnderTest("seasonal_mad", {"season": "1d", "level_window": 24}).params_for(frequency, rows)
    assert params == {"season": season, "level_window": 24}
    assert (note is None) == (season == "1d")


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.kind)
def test_replay_is_causal(
    detector: DetectorUnderTest, quick: tuple[list[nab.DetectorRun], str], tmp_path: Path
) -> None:
    """Scores before a cut do not change when the rows after it are removed from the file."""
    source = ROOT / "data" / CAUSAL_SERIES
    quick_run = quick[0][0]
    if quick_run.detector == detector:
        full = quick_run.series[CAUSAL_SERIES]
    else:
        full = nab.replay_series(source, CAUSAL_SERIES, detector, tmp_path / "full")
    truncated = tmp_path / "truncated.csv"
    lines = source.read_text().splitlines(keepends=True)
    truncated.write_text("".join(lines[: CUT_ROW + 1]))  # the header, then rows 0 .. CUT_ROW - 1
    # The plan is the job's configuration (NAB's probation, the data's spacing), set in advance.
    plan = nab.ReplayPlan.for_file(source)
    cut = nab.replay_series(truncated, CAUSAL_SERIES, detector, tmp_path / "cut", plan)

    assert cut.score.shape == (CUT_ROW,)
    assert cut.training_runs == 2  # the probation and the retraining before the chunk at row 1230
    assert cut.scored[plan.probation_rows :].all()
    # Up to rounding: a matrix product's last digit may depend on how many rows it multiplies
    # (mset's estimates; 1 ulp seen); a row after the cut leaking in would move scores far more.
    np.testing.assert_allclose(cut.score, full.score[:CUT_ROW], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(cut.is_anomaly, full.is_anomaly[:CUT_ROW])
    # The comparison is not vacuous: the scores vary (context's are shares of small counts, 0 in
    # its rests: 35 distinct values here, the others' several hundred), and the full replay
    # scored past the cut.
    assert np.unique(cut.score[plan.probation_rows :]).size > 25
    assert full.scored[CUT_ROW:].all()


def test_quick_table_has_fixed_and_swept_rows_with_nab_scores(quick: tuple[list[nab.DetectorRun], str]) -> None:
    runs, markdown = quick
    assert markdown.startswith("## Detection quality on NAB\n")
    assert "| Detector | Threshold | Standard | Reward low FP | Reward low FN | Source |" in markdown
    rows = table_rows(markdown)
    scores_table, runs_table = rows[:4], rows[4:]  # one detector: fixed and swept, rows then alerts; its run
    assert [row[1].split(":")[0] for row in scores_table] == ["fixed", "swept", "alerts, fixed", "alerts, swept"]
    assert all(row[0] == f"`{DETECTORS[0].label}`" and row[-1] == "ours, this run" for row in scores_table)
    for row in scores_table:
        values = [float(cell) for cell in row[2:5]]
        assert all(math.isfinite(v) and -100 <= v <= 100 for v in values)
    # No published row beside a slice normalised on its own: the numbers are not comparable.
    assert "ARTime" not in markdown and "not comparable" in markdown
    (run,) = runs
    assert len(runs_table) == 1
    assert runs_table[0][:3] == [f"`{DETECTORS[0].label}`", "3", str(sum(r.predict_runs for r in run.series.values()))]
    for profile in nab.PROFILES:
        assert -100 <= run.fixed[profile] <= 100
        threshold, best = run.swept[profile]
        assert math.isfinite(best) and -100 <= best <= 100
        # "Never alarm" (score 0) is among the candidates, so the best threshold scores at least 0.
        assert best >= 0
        assert threshold == math.inf or 0 <= threshold <= 1
        alert_threshold, alert_best = run.alerts_swept[profile]
        assert 0 <= alert_best <= 100 and (alert_threshold == math.inf or 0 <= alert_threshold <= 1)
        assert -100 <= run.alerts_fixed[profile] <= 100
    assert set(run.snooze_sensitivity) == set(nab.SNOOZE_SENSITIVITY)
    # Grouping flagged rows into events only removes charged alarms after an event's first row.
    assert run.snooze_sensitivity[0] >= run.fixed["standard"]


def test_alerts_go_out_at_the_start_of_an_event_and_not_again_while_snoozed() -> None:
    flagged = np.zeros(40, dtype=bool)
    flagged[[3, 4, 6, 7, 11, 20, 21, 35]] = True  # events (gap <= 1 row): 3-7, 11, 20-21, 35
    score = np.where(flagged, 0.99, 0.1)  # every event peaks alike: none escalates
    assert np.flatnonzero(nab.alerts(flagged, score, snooze_rows=0)).tolist() == [3, 11, 20, 35]
    # Snoozed until 7 + 5 = 12: the event at 11 is held; 20 is sent, snoozing until 26.
    assert np.flatnonzero(nab.alerts(flagged, score, snooze_rows=5)).tolist() == [3, 20, 35]
    assert np.flatnonzero(nab.alerts(flagged, score, snooze_rows=28)).tolist() == [3]
    assert np.flatnonzero(nab.alerts(flagged, score, snooze_rows=0, max_gap=0)).tolist() == [3, 6, 11, 20, 35]
    # Escalation: the event at 20 peaks above the alert at 3 and goes out through the snooze;
    # 35 peaks below 20's and stays held.
    score[21], score[35] = 0.999, 0.995
    assert np.flatnonzero(nab.alerts(flagged, score, snooze_rows=28)).tolist() == [3, 20]
    assert not nab.alerts(np.zeros(5, dtype=bool), np.zeros(5), snooze_rows=3).any()


def test_full_table_puts_the_published_scoreboard_beside_ours(quick: tuple[list[nab.DetectorRun], str]) -> None:
    runs, _ = quick
    markdown = nab.render(runs, quick=False, total_rows=3908, series_count=3)
    rows = {row[0]: row for row in table_rows(markdown) if row[-1] == "published"}
    assert list(rows) == [name for name, *_ in nab.PUBLISHED]
    assert rows["ARTime"][2:5] == ["74.9", "65.1", "80.4"]
    assert rows["Numenta HTM"][2:5] == ["70.5-69.7", "62.6-61.7", "75.2-74.2"]
    assert nab.PUBLISHED_SOURCE in markdown
    # A run of some detectors says how to reproduce it and which ones it left out.
    others = ", ".join(d.kind for d in DETECTORS[1:])
    assert f"Generated by `python -m benchmarks.nab --detectors {DETECTORS[0].kind}`" in markdown
    assert f"Not replayed through the pipeline in this run: {others}." in markdown


def test_an_unknown_detector_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"--detectors \['nope'\] are not in benchmarks.detectors.DETECTORS"):
        nab.replay(kinds=["nope"])


def test_direct_replay_scores_as_the_pipeline_until_the_first_refit(quick: tuple[list[nab.DetectorRun], str]) -> None:
    """``benchmarks.nab_direct`` calls the detectors without the pipeline on the same schedule:
    until the first refit both serve the model fitted on the probationary rows, so every score
    must match (later, the pipeline may keep a better champion where the direct replay refits)."""
    from benchmarks import nab_direct

    key = "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv"  # regular 5-minute rows
    pipeline = quick[0][0].series[key]
    direct = nab_direct.replay_series(ROOT / "data" / key, key, DETECTORS[0])
    probation = probationary_rows(len(direct.score))
    before_refit = slice(probation, probation + nab.CHUNK_ROWS * nab.RETRAIN_EVERY)
    assert direct.scored[before_refit].all() and np.unique(direct.score[before_refit]).size > 100
    np.testing.assert_allclose(direct.score[before_refit], pipeline.score[before_refit], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(direct.is_anomaly[before_refit], pipeline.is_anomaly[before_refit])
    assert direct.params == pipeline.params and direct.predict_runs == pipeline.predict_runs


def test_direct_replay_leaves_rows_unscored_until_a_training_succeeds(tmp_path: Path) -> None:
    """A series flat through its probation cannot train MSET (no signal left to model): no model
    serves, so nothing is scored until the first refit, which sees the varying rows."""
    from benchmarks import nab_direct

    rng = np.random.default_rng(0)
    values = np.r_[np.full(450, 45.0), 45 + rng.normal(0, 1, 2550)]
    path = tmp_path / "flat_start.csv"
    stamps = pd.date_range("2024-01-01", periods=len(values), freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(path, index=False)
    direct = nab_direct.replay_series(path, "flat_start.csv", DetectorUnderTest("mset", {}))
    probation = probationary_rows(len(values))
    first_refit = probation + nab.CHUNK_ROWS * nab.RETRAIN_EVERY
    assert (direct.failed_trainings, direct.training_runs) == (1, 3)
    assert not direct.scored[:first_refit].any() and direct.scored[first_refit:].all()
    assert (direct.score[:first_refit] == 0).all() and np.unique(direct.score[first_refit:]).size > 100


def test_pipeline_replay_leaves_rows_unscored_until_a_training_succeeds(tmp_path: Path) -> None:
    """As the direct replay: MSET cannot train on a flat probation, so the pipeline has no
    champion and predicts nothing until the first retraining, which sees varying rows."""
    rng = np.random.default_rng(0)
    values = np.r_[np.full(450, 45.0), 45 + rng.normal(0, 1, 2550)]
    path = tmp_path / "flat_start.csv"
    stamps = pd.date_range("2024-01-01", periods=len(values), freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(path, index=False)
    replay = nab.replay_series(path, "flat_start.csv", DetectorUnderTest("mset", {}), tmp_path / "work")
    first_refit = probationary_rows(len(values)) + nab.CHUNK_ROWS * nab.RETRAIN_EVERY
    assert (replay.failed_trainings, replay.training_runs) == (1, 3)
    assert not replay.scored[:first_refit].any() and replay.scored[first_refit:].all()
    assert np.unique(replay.score[first_refit:]).size > 100


def test_replaying_one_detector_again_replaces_only_its_row() -> None:
    from benchmarks import nab_direct

    def row(label: str, value: str) -> list[str]:
        return [f"`{label}`", value, value, value, value, "0", "1.0 min"]

    previous = nab_direct.section(nab_direct.table_text([row("a", "1.0"), row("b", "2.0"), row("c", "3.0")], 58, 2))
    merged, kept = nab_direct.merge_rows(previous, [row("b", "9.0"), row("d", "4.0")])
    assert merged == [row("a", "1.0"), row("b", "9.0"), row("c", "3.0"), row("d", "4.0")]
    assert kept == ["`a`", "`c`"]


def test_direct_replay_of_auto_counts_its_choices_and_a_later_run_keeps_them(tmp_path: Path) -> None:
    from benchmarks import nab_direct

    rng = np.random.default_rng(1)
    values = 10 + np.sin(np.arange(3000) * 2 * np.pi / 288) + rng.normal(0, 0.2, 3000)
    path = tmp_path / "seasonal.csv"
    stamps = pd.date_range("2024-01-01", periods=len(values), freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(path, index=False)
    candidates = ["seasonal_mad", "level_shift"]
    direct = nab_direct.replay_series(path, "seasonal.csv", DetectorUnderTest("auto", {"candidates": candidates, "plantings": 1}))
    assert direct.training_runs == 3 and len(direct.choices) == 3 and set(direct.choices) <= set(candidates)

    line = nab_direct.choices_line("`auto`", {"seasonal.csv": direct})
    first = f"`{direct.choices[0]}` 1 of 1 series."
    assert line.startswith("Choices of `auto`: `") and " of 3 trainings; " in line and line.endswith(first)
    previous = nab_direct.section("table", choices=[line, "Choices of `other`: `x` 1 of 1 trainings"])
    assert nab_direct.merge_choices(previous, ["`auto`"], ["fresh"]) == [line, "fresh"]


def test_a_pipeline_replay_of_some_detectors_keeps_the_rows_of_the_others() -> None:
    previous = "\n".join([
        "Generated by `python -m benchmarks.nab --detectors a b` (`benchmarks/nab.py`); do not edit by hand. "
        "Not replayed through the pipeline in this run: lstm.",
        "",
        "| Detector | Threshold | Standard | Source |",
        "| --- | --- | ---: | --- |",
        "| `a` | fixed | 1.0 | ours, this run |",
        "| `a` | swept | 2.0 | ours, this run |",
        "| `b` | fixed | 3.0 | ours, this run |",
        "| Perfect | optimised per profile by NAB | 100.0 | published |",
        "",
        "| Detector | Series |",
        "| --- | ---: |",
        "| `a` | 58 |",
        "| `b` | 58 |",
        "",
        "Run ended 2026-11-01 10:00 UTC.",
        "",
        "<details><summary><code>a</code>: series run without a season</summary>",
        "",
        "- `x.csv`: season None",
        "",
        "</details>",
    ])
    fresh = "\n".join([
        "Generated by `python -m benchmarks.nab --detectors b c` (`benchmarks/nab.py`); do not edit by hand. "
        "Not replayed through the pipeline in this run: a, lstm.",
        "",
        "| Detector | Threshold | Standard | Source |",
        "| --- | --- | ---: | --- |",
        "| `b` | fixed | 9.0 | ours, this run |",
        "| `c` | fixed | 4.0 | ours, this run |",
        "| `c` | swept | 5.0 | ours, this run |",
        "| Perfect | optimised per profile by NAB | 100.0 | published |",
        "",
        "| Detector | Series |",
        "| --- | ---: |",
        "| `b` | 58 |",
        "| `c` | 58 |",
        "",
        "Run ended 2026-11-24 10:00 UTC.",
    ])
    merged = nab.merged_section(previous, fresh)
    assert [row[:3] for row in table_rows(merged)] == [
        ["`a`", "fixed", "1.0"], ["`a`", "swept", "2.0"], ["`b`", "fixed", "9.0"], ["`c`", "fixed", "4.0"],
        ["`c`", "swept", "5.0"], ["Perfect", "optimised per profile by NAB", "100.0"],
        ["`a`", "58"], ["`b`", "58"], ["`c`", "58"],
    ]  # fmt: skip
    assert "Rows of `a` are kept from the run that ended 2026-11-01 10:00 UTC; the others are from this run." in merged
    assert "Not replayed through the pipeline in this run" not in merged
    assert "<summary><code>a</code>" in merged and "- `x.csv`: season None" in merged


def test_rows_kept_through_several_partial_replays_say_which_run_they_come_from() -> None:
    previous = "\n".join([
        "Generated by `python -m benchmarks.nab --detectors c` (`benchmarks/nab.py`); do not edit by hand. "
        "Rows of `a (season=1d)`, `b` are kept from the run that ended 2026-11-01 10:00 UTC; the others are from this run.",
        "",
        "Run ended 2026-11-02 10:00 UTC.",
    ])
    assert nab.kept_note(previous, ["`a (season=1d)`", "`b`", "`c`"]) == (
        "Rows of `a (season=1d)`, `b` are kept from the run that ended 2026-11-01 10:00 UTC; "
        "rows of `c` from the run that ended 2026-11-02 10:00 UTC; the others are from this run."
    )
    again = "Generated by x. " + nab.kept_note(previous, ["`a (season=1d)`", "`c`"]) + "\n\nRun ended 2026-11-03 10:00 UTC."
    assert nab.kept_note(again, ["`a (season=1d)`", "`c`", "`d`"]) == (
        "Rows of `a (season=1d)` are kept from the run that ended 2026-11-01 10:00 UTC; rows of `c` from the run that "
        "ended 2026-11-02 10:00 UTC; rows of `d` from the run that ended 2026-11-03 10:00 UTC; the others are from this run."
    )


def test_direct_replay_can_warm_start_each_refit_from_the_serving_model() -> None:
    from benchmarks import nab_direct

    source = ROOT / "data" / CAUSAL_SERIES
    context = DetectorUnderTest("context", {"margin": 1.0})  # room in the levels, so that refits warm-start
    cold = nab_direct.replay_series(source, CAUSAL_SERIES, context)
    warm = nab_direct.replay_series(source, CAUSAL_SERIES, context, warm_start=True)
    probation = probationary_rows(len(cold.score))
    first_refit = probation + nab.CHUNK_ROWS * nab.RETRAIN_EVERY
    np.testing.assert_array_equal(warm.score[:first_refit], cold.score[:first_refit])
    assert not np.array_equal(warm.score[first_refit:], cold.score[first_refit:])


def test_per_file_rows_score_each_file_and_list_the_choices() -> None:
    """One flag at the start of nyc_taxi's first window and one far from every window: one
    window found, one false alarm, the other windows missed; the flag runs of a day apart make
    two alerts, and ``auto``'s choices come along."""
    from benchmarks import nab_direct
    from benchmarks.nab import SeriesReplay
    from pipelines.evaluation.nab import load_windows

    key = "realKnownCause/nyc_taxi.csv"
    stamps = pd.DatetimeIndex(pd.to_datetime(pd.read_csv(ROOT / "data" / key)["timestamp"]))
    windows = load_windows(ROOT)[key]
    inside = int(stamps.searchsorted(windows[0][0]))
    outside = probationary_rows(len(stamps)) + 5
    assert all(not (start <= stamps[outside] <= end) for start, end in windows)
    flagged = np.zeros(len(stamps), dtype=bool)
    flagged[[inside, outside]] = True
    replay = SeriesReplay(
        key=key, score=flagged.astype(float), is_anomaly=flagged, scored=np.ones(len(stamps), dtype=bool), params={},
        note=None, dropped_rows=0, predict_runs=1, training_runs=2, promotions=2, failed_trainings=0, seconds=1.0,
        choices=("context", "lstm"),
    )
    [row] = nab_direct.per_file_rows("auto", {key: replay}, ROOT, partial=True)
    assert dict(zip(nab_direct.PER_FILE_HEADERS, row, strict=True)) | {"flagged_raw": "", "alerts_raw": ""} == {
        "detector": "auto", "series": key, "flagged_raw": "", "tp": "1", "fp": "1", "fn": str(len(windows) - 1),
        "alerts_raw": "", "alerts_fp": "1", "choices": "context lstm",
    }
    assert float(row[2]) == float(row[6]) < 1 - (len(windows) - 1)  # one hit, a false alarm and the misses


def test_a_per_file_csv_in_a_missing_folder_is_refused_before_the_replay(tmp_path: Path, capsys) -> None:
    from benchmarks import nab_direct

    with pytest.raises(SystemExit) as exited:
        nab_direct.main(["seasonal_mad", "--per-file", str(tmp_path / "absent" / "scores.csv")])
    assert exited.value.code == 2
    assert f"the folder {tmp_path / 'absent'} does not exist" in capsys.readouterr().err
