from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipelines
from pipelines.errors import ConfigError
from pipelines.evaluation import nab

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
# Weights of NAB's standard profile, written out so the expected numbers below are checkable by hand.
STANDARD = nab.Profile("standard", tp=1.0, fp=0.11, fn=1.0, tn=1.0)

# A 100-row hourly toy series: rows 0-14 are probation (floor(0.15 * 100)); one window, rows 40-49.
N_ROWS = 100
TIMESTAMPS = pd.date_range("2020-01-01", periods=N_ROWS, freq="h")
WINDOW_ROWS = (40, 49)
WINDOWS = [(TIMESTAMPS[WINDOW_ROWS[0]], TIMESTAMPS[WINDOW_ROWS[1]])]


def sigma(y: float) -> float:
    """NAB's curve 2 / (1 + e^(5y)) - 1, written as the equal tanh(-5y/2) to check the library."""
    return -1.0 if y > 3 else math.tanh(-2.5 * y)


def alarms_at(*rows: int, n: int = N_ROWS) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    flags[list(rows)] = True
    return flags


def score(*rows: int) -> nab.SeriesScore:
    return nab.score_series(TIMESTAMPS, alarms_at(*rows), WINDOWS, STANDARD)


# --------------------------------------------------------------------------- single series


@pytest.mark.parametrize(("n_rows", "expected"), [(7, 1), (100, 15), (1000, 150), (5000, 750), (22695, 750)])
def test_probation_is_15_percent_capped_at_750_rows(n_rows: int, expected: int) -> None:
    assert nab.probationary_rows(n_rows) == expected


def test_scaled_sigmoid_matches_nab_curve() -> None:
    y = np.array([-1.0, -0.1, 0.0, 0.5, 2.9, 3.01, 10.0])
    np.testing.assert_allclose(nab.scaled_sigmoid(y), [sigma(v) for v in y], atol=1e-12)
    # The unscaled value at a window's start, which NAB divides by so that a first-row hit earns 1.
    assert float(nab.scaled_sigmoid(-1.0)) == pytest.approx(0.98661, abs=1e-5)


def test_null_detector_loses_fn_weight_per_window() -> None:
    assert score() == nab.SeriesScore(raw=-1.0, tp=0, fp=0, fn=1)


def test_alarms_in_probation_are_ignored() -> None:
    # Row 5 would be a false positive before any window, row 20 is one.
    assert score(5) == nab.SeriesScore(raw=-1.0, tp=0, fp=0, fn=1)
    assert score(20) == nab.SeriesScore(raw=pytest.approx(-1.11), tp=0, fp=1, fn=1)


def test_window_reaching_into_probation_counts_only_alarms_after_it() -> None:
    windows = [(TIMESTAMPS[10], TIMESTAMPS[29])]  # 20 rows; rows 10-14 are probation
    in_probation = nab.score_series(TIMESTAMPS, alarms_at(12), windows, STANDARD)
    after = nab.score_series(TIMESTAMPS, alarms_at(12, 16), windows, STANDARD)
    assert in_probation == nab.SeriesScore(raw=-1.0, tp=0, fp=0, fn=1)
    assert after.tp == 1
    assert after.raw == pytest.approx(sigma(-(29 - 16 + 1) / 20) / sigma(-1.0))


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (40, 1.0),  # the window's first row earns the whole tpWeight
        (45, sigma(-5 / 10) / sigma(-1.0)),
        (49, sigma(-1 / 10) / sigma(-1.0)),  # its last row still earns a little
    ],
)
def test_true_positive_weight_by_position_in_window(row: int, expected: float) -> None:
    result = score(row)
    assert (result.tp, result.fp, result.fn) == (1, 0, 0)
    assert result.raw == pytest.approx(expected, abs=1e-12)


def test_earlier_detection_scores_higher() -> None:
    raws = [score(row).raw for row in range(*WINDOW_ROWS)]
    assert all(a > b > 0 for a, b in zip(raws, raws[1:]))


def test_only_the_first_alarm_in_a_window_counts() -> None:
    late_only = score(47)
    early_and_late = score(42, 44, 47, 49)
    assert early_and_late == nab.SeriesScore(raw=pytest.approx(score(42).raw), tp=1, fp=0, fn=0)
    assert early_and_late.raw > late_only.raw


def test_false_positive_far_after_a_window_costs_more_than_one_just_after() -> None:
    just_after, far_after = score(40, 51), score(40, 90)
    # Distance after a window is counted in (width - 1) rows: row 51 is 2/9 of a window past it.
    assert just_after.raw == pytest.approx(1.0 + 0.11 * sigma(2 / 9), abs=1e-12)
    assert far_after.raw == pytest.approx(1.0 - 0.11, abs=1e-12)  # beyond 3 windows: the full weight
    assert just_after.raw > far_after.raw
    assert (just_after.fp, far_after.fp) == (1, 1)


def test_false_positive_before_any_window_costs_full_weight() -> None:
    assert score(20, 40).raw == pytest.approx(1.0 - 0.11, abs=1e-12)


def test_window_bounds_are_rows_where_timestamps_repeat() -> None:
    # NAB counts rows, and locates a bound at the first row stamped with it.
    stamps = pd.DatetimeIndex(list(TIMESTAMPS[:41]) + [TIMESTAMPS[40]] + list(TIMESTAMPS[41:99]))
    at_first = nab.score_series(stamps, alarms_at(40), WINDOWS, STANDARD)
    at_repeat = nab.score_series(stamps, alarms_at(41), WINDOWS, STANDARD)
    assert at_first.raw == pytest.approx(1.0)
    assert at_repeat.raw == pytest.approx(sigma(-10 / 11) / sigma(-1.0))  # the window now spans 11 rows


def test_detections_must_be_one_boolean_per_row() -> None:
    with pytest.raises(ConfigError, match=r"expected one flag per row \(100,\)"):
        nab.score_series(TIMESTAMPS, np.zeros(99, dtype=bool), WINDOWS, STANDARD)
    with pytest.raises(ConfigError, match="must be a boolean array"):
        nab.score_series(TIMESTAMPS, np.zeros(N_ROWS), WINDOWS, STANDARD)


def test_overlapping_windows_are_rejected() -> None:
    windows = [(TIMESTAMPS[40], TIMESTAMPS[49]), (TIMESTAMPS[45], TIMESTAMPS[60])]
    with pytest.raises(ConfigError, match="overlaps"):
        nab.score_series(TIMESTAMPS, alarms_at(), windows, STANDARD)


# --------------------------------------------------------------------------- toy corpus


TOY_WINDOWS = {
    "catA/one.csv": [(40, 49), (70, 79)],
    "catB/two.csv": [(60, 71)],
}


@pytest.fixture
def toy_root(tmp_path: Path) -> Path:
    """A three-window NAB folder: NAB's profiles, two 100-row series."""
    (tmp_path / "config").mkdir()
    (tmp_path / "labels").mkdir()
    profiles = {
        name: {"CostMatrix": {"tpWeight": 1.0, "fnWeight": fn, "fpWeight": fp, "tnWeight": 1.0}}
        for name, fp, fn in [
            ("standard", 0.11, 1.0),
            ("reward_low_FP_rate", 0.22, 1.0),
            ("reward_low_FN_rate", 0.11, 2.0),
        ]
    }
    (tmp_path / "config" / "profiles.json").write_text(json.dumps(profiles))
    (tmp_path / "config" / "thresholds.json").write_text(
        json.dumps({"toy": {name: {"score": 0.0, "threshold": 0.9} for name in PROFILES}})
    )
    labels = {
        name: [[str(TIMESTAMPS[a]), str(TIMESTAMPS[b])] for a, b in rows] for name, rows in TOY_WINDOWS.items()
    }
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    for name in TOY_WINDOWS:
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": TIMESTAMPS, "value": np.arange(N_ROWS)}).to_csv(path, index=False)
    return tmp_path


def toy_scores(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Noise in [0, 0.5) and 0.9 on each window's first row: any threshold in (0.5, 0.9] is perfect."""
    scores = {}
    for name, windows in TOY_WINDOWS.items():
        values = rng.uniform(0.0, 0.5, N_ROWS)
        values[[a for a, _ in windows]] = 0.9
        scores[name] = values
    return scores


@pytest.mark.parametrize("profile", PROFILES)
def test_perfect_detector_scores_100_and_null_0(toy_root: Path, profile: str) -> None:
    perfect = {name: alarms_at(*(a for a, _ in rows)) for name, rows in TOY_WINDOWS.items()}
    null = {name: alarms_at() for name in TOY_WINDOWS}
    best = nab.score_corpus(perfect, toy_root, profile)
    assert best.score == pytest.approx(100.0)
    assert best.raw == best.perfect == pytest.approx(3.0)
    assert nab.score_corpus(null, toy_root, profile).score == pytest.approx(0.0)


def test_corpus_score_is_normalised_sum_of_series(toy_root: Path) -> None:
    detections = {"catA/one.csv": alarms_at(45, 90), "catB/two.csv": alarms_at(20)}
    result = nab.score_corpus(detections, toy_root, "reward_low_FN_rate")
    hit = sigma(-5 / 10) / sigma(-1.0)
    expected_raw = (hit + 0.11 * sigma((90 - 79) / 9) - 2.0) + (-0.11 - 2.0)
    assert result.raw == pytest.approx(expected_raw)
    assert (result.null, result.perfect) == (pytest.approx(-6.0), pytest.approx(3.0))
    assert result.score == pytest.approx(100 * (expected_raw + 6.0) / 9.0)
    assert result.series["catA/one.csv"] == nab.SeriesScore(raw=pytest.approx(expected_raw + 2.11), tp=1, fp=1, fn=1)


def test_corpus_needs_every_series_unless_partial(toy_root: Path) -> None:
    only_one = {"catA/one.csv": alarms_at(40, 70)}
    with pytest.raises(ConfigError, match="1 NAB series have no detections"):
        nab.score_corpus(only_one, toy_root, "standard")
    assert nab.score_corpus(only_one, toy_root, "standard", partial=True).score == pytest.approx(100.0)
    with pytest.raises(ConfigError, match="not in the NAB corpus"):
        nab.score_corpus({**only_one, "catA/nope.csv": alarms_at()}, toy_root, "standard", partial=True)


def test_unknown_profile_is_named(toy_root: Path) -> None:
    with pytest.raises(ConfigError, match="unknown NAB profile 'strict'; choose one of reward_low_FN_rate"):
        nab.score_corpus({}, toy_root, "strict")


def test_results_dir_uses_thresholds_json(toy_root: Path) -> None:
    scores = toy_scores(np.random.default_rng(0))
    for name, values in scores.items():
        category, file_name = name.split("/")
        path = toy_root / "results" / "toy" / category / f"toy_{file_name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": TIMESTAMPS, "anomaly_score": values}).to_csv(path, index=False)
    results = toy_root / "results" / "toy"
    assert nab.score_results_dir(results, toy_root, "toy") == pytest.approx(dict.fromkeys(PROFILES, 100.0))
    # Too low a threshold alarms on noise, then misses nothing but pays for false positives.
    noisy = nab.score_results_dir(results, toy_root, "toy", thresholds=dict.fromkeys(PROFILES, 0.1))
    assert all(value < 100.0 for value in noisy.values())
    with pytest.raises(ConfigError, match="no threshold for detector 'other'"):
        nab.score_results_dir(results, toy_root, "other")



def test_a_series_of_the_wrong_length_is_named(toy_root: Path) -> None:
    # Scoring dozens of series, a shape alone does not say which results file is short.
    scores = toy_scores(np.random.default_rng(0))
    scores["catB/two.csv"] = scores["catB/two.csv"][:-1]
    with pytest.raises(ConfigError, match=r"NAB series catB/two.csv: detections have shape \(99,\)"):
        nab.score_corpus({name: values >= 0.9 for name, values in scores.items()}, toy_root, "standard")
    with pytest.raises(ConfigError, match=r"NAB series catB/two.csv: scores have shape \(99,\)"):
        nab.sweep_threshold(scores, toy_root, "standard")

def test_sweep_finds_the_separating_threshold(toy_root: Path) -> None:
    scores = toy_scores(np.random.default_rng(1))
    assert nab.sweep_threshold(scores, toy_root, "standard") == (0.9, pytest.approx(100.0))
    # 0.6 and 0.7 tie at 100: the higher one (fewer alarms on unseen data) wins.
    grid = np.array([0.1, 0.3, 0.6, 0.7, 0.95])
    assert nab.sweep_threshold(scores, toy_root, "standard", grid) == (0.7, pytest.approx(100.0))


def test_sweep_prefers_never_alarming_over_a_harmful_threshold(toy_root: Path) -> None:
    # Scores that peak only outside the windows: at 1.0 every alarm is a false positive.
    scores = {name: np.zeros(N_ROWS) for name in TOY_WINDOWS}
    scores["catA/one.csv"][[20, 90]] = 1.0
    candidates = np.array([1.0, math.inf])
    assert nab.sweep_threshold(scores, toy_root, "standard", candidates) == (math.inf, pytest.approx(0.0))


@pytest.mark.parametrize("profile", PROFILES)
def test_sweep_agrees_with_direct_scoring(toy_root: Path, profile: str) -> None:
    rng = np.random.default_rng(2)
    scores = {name: rng.uniform(size=N_ROWS) for name in TOY_WINDOWS}
    scores["catB/two.csv"][[3, 50]] = np.nan  # never an alarm
    for threshold in [0.05, 0.5, 0.8, 0.97]:
        direct = nab.score_corpus({k: v >= threshold for k, v in scores.items()}, toy_root, profile).score
        swept = nab.sweep_threshold(scores, toy_root, profile, np.array([threshold]))
        assert swept == (threshold, pytest.approx(direct, abs=1e-9))


# --------------------------------------------------------------------------- NAB corpus


def _nab_root() -> Path | None:
    for candidate in (Path(pipelines.__file__).parents[2] / "shared/datasets/nab", Path("/work/shared/datasets/nab")):
        if (candidate / "labels" / "combined_windows.json").is_file():
            return candidate
    return None


NAB_ROOT = _nab_root()
corpus = pytest.mark.skipif(NAB_ROOT is None, reason="NAB dataset not found at ../shared/datasets/nab")


@pytest.fixture(scope="module")
def published() -> dict[str, dict[str, float]]:
    assert NAB_ROOT is not None
    return json.loads((NAB_ROOT / "results" / "final_results.json").read_text())


@pytest.fixture(scope="module")
def gaussian_scores() -> dict[str, np.ndarray]:
    assert NAB_ROOT is not None
    return nab.read_results_scores(NAB_ROOT / "results" / "windowedGaussian", NAB_ROOT, "windowedGaussian")


@corpus
@pytest.mark.parametrize("detector", ["windowedGaussian", "null"])
def test_rescoring_published_results_reproduces_final_results(detector: str, published) -> None:
    assert NAB_ROOT is not None
    scores = nab.score_results_dir(NAB_ROOT / "results" / detector, NAB_ROOT, detector)
    assert scores == pytest.approx(published[detector], abs=0.01)
    if detector == "windowedGaussian":
        expected = {"standard": 39.65, "reward_low_FP_rate": 20.87, "reward_low_FN_rate": 47.41}
        assert scores == pytest.approx(expected, abs=0.01)


@corpus
@pytest.mark.parametrize("profile", PROFILES)
def test_every_series_matches_nab_raw_scores(profile: str, gaussian_scores) -> None:
    assert NAB_ROOT is not None
    reference = pd.read_csv(NAB_ROOT / "results" / "windowedGaussian" / f"windowedGaussian_{profile}_scores.csv")
    reference = reference.dropna(subset=["File"]).set_index("File")
    threshold = float(reference["Threshold"].iloc[0])
    result = nab.score_corpus({k: v >= threshold for k, v in gaussian_scores.items()}, NAB_ROOT, profile)
    ours = pd.Series({name: s.raw for name, s in result.series.items()})
    pd.testing.assert_series_equal(ours.sort_index(), reference["Score"].sort_index(), check_names=False, atol=1e-9)
    assert (result.null, result.perfect) == (-116.0 * (2 if profile == "reward_low_FN_rate" else 1), 116.0)


@corpus
@pytest.mark.parametrize("profile", PROFILES)
def test_sweep_recovers_nab_optimised_threshold(profile: str, gaussian_scores, published) -> None:
    # thresholds.json holds NAB's optimiser's choice: an exact sweep must find the same optimum.
    assert NAB_ROOT is not None
    threshold, best = nab.sweep_threshold(gaussian_scores, NAB_ROOT, profile)
    assert threshold == 1.0
    assert best == pytest.approx(published["windowedGaussian"][profile], abs=0.01)
