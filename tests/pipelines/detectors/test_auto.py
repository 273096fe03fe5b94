from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import load_detector, make_detector
from pipelines.detectors.auto import AutoDetector, _clearly_better
from pipelines.detectors.synthetic import (
    SHIFT_NEWS_ROWS,
    Injected,
    detection_f1_by_planting,
    event_f1,
    inject_anomalies,
    mean_event_f1,
    mean_of_parts,
    plant_repeatedly,
    pooled_event_f1,
    robust_scale,
)
from pipelines.errors import ModelError


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    from tests.pipelines.detectors.conftest import seasonal_frame

    return seasonal_frame(28, seed=1)


@pytest.fixture(scope="module")
def detector(frame) -> AutoDetector:
    return AutoDetector(candidates=["seasonal_mad", "iforest", "mset"]).fit(frame.iloc[:-48])


def test_chooses_the_best_finder_of_planted_anomalies_and_says_why(detector: AutoDetector) -> None:
    trials = {t["kind"]: t for t in detector.trials_}
    assert set(trials) == {"seasonal_mad", "iforest", "mset"}
    best_f1 = max(t["f1"] for t in trials.values())
    assert trials[detector.chosen_]["f1"] >= best_f1 - 0.01
    tied = [t for t in trials.values() if t["f1"] >= best_f1 - 0.01]
    assert trials[detector.chosen_]["holdout_error"] == min(t["holdout_error"] for t in tied)
    assert detector.reason_.startswith(f"{detector.chosen_}: event F1")
    summary = detector.summary()
    assert summary["chosen"] == detector.chosen_ and summary["trials"] == detector.trials_


@pytest.mark.parametrize(
    ("gains", "clearly"),
    [
        ([0.25] * 5, True),  # the same lead on every planting
        ([0.3, 0.2, 0.25, 0.3, 0.2], True),
        ([0.6, -0.2, 0.5, -0.3, 0.1], False),  # a larger mean lead (0.14), but within chance
        ([0.005] * 5, False),  # a tie (within 0.01)
        ([0.0] * 5, False),
        ([0.2], True),  # one planting: nothing to test, more than a tie is enough
    ],
)
def test_a_candidate_is_clearly_better_by_more_than_a_tie_and_beyond_chance(gains: list[float], clearly: bool) -> None:
    preferred = {"f1_by_planting": [0.5] * len(gains)}
    trial = {"f1_by_planting": [0.5 + gain for gain in gains]}
    assert _clearly_better(trial, preferred) is clearly


def test_the_preferred_candidate_is_kept_unless_another_is_clearly_better(frame) -> None:
    candidates = ["seasonal_mad", "iforest", "mset"]
    # seasonal_mad's lead over iforest (0.99 to 0.97) is two plantings of five: not clear.
    kept = AutoDetector(candidates=candidates, prefer="iforest").fit(frame.iloc[:-48])
    trials = {t["kind"]: t for t in kept.trials_}
    assert trials["seasonal_mad"]["f1"] > trials["iforest"]["f1"] + 0.01
    assert kept.chosen_ == "iforest" and not _clearly_better(trials["seasonal_mad"], trials["iforest"])
    assert "kept as the preferred detector: seasonal_mad's F1 higher by 0.03" in kept.reason_
    # mset finds about half the events on every planting: the best of the others replaces it.
    beaten = AutoDetector(candidates=candidates, prefer="mset", stretches=2).fit(frame.iloc[:-48])
    assert beaten.chosen_ == "seasonal_mad" and beaten.reason_.endswith("clearly better than the preferred mset on each of 2 held-back stretches")
    # ... on the stretch before the last too: the preferred candidate and the challengers are fitted again there.
    earlier = {t["kind"]: t for t in beaten.earlier_trials_}
    assert set(earlier) == {"mset", "seasonal_mad", "iforest"} and {t["stretch"] for t in earlier.values()} == {2}
    assert _clearly_better(earlier["seasonal_mad"], earlier["mset"])
    assert kept.earlier_trials_ == []  # no challenger on the last stretch: nothing to confirm
    # Without a preference (or when the preferred is not a candidate) the best mean F1 wins.
    assert AutoDetector(candidates=candidates, prefer=None).fit(frame.iloc[:-48]).chosen_ == "seasonal_mad"
    assert AutoDetector(candidates=candidates, prefer="context").fit(frame.iloc[:-48]).chosen_ == "seasonal_mad"


def _script_trials(monkeypatch, by_stretch: list[dict[str, list[float]]]) -> list[tuple[list[str], int]]:
    """Replace ``AutoDetector._trials`` by scripted F1s per planting: the n-th call (the n-th
    held-back stretch) gets ``by_stretch[n]``, and a kind missing there could not fit. Returns
    the list each call appends its kinds and head length to."""
    fitted: list[tuple[list[str], int]] = []

    def scripted(self, kinds, head, tail, params):
        outcome = by_stretch[len(fitted)]
        fitted.append((list(kinds), len(head)))
        trials = [
            {"kind": kind, "f1": float(np.mean(outcome[kind])), "f1_by_planting": outcome[kind], "holdout_error": 1.0}
            if kind in outcome else {"kind": kind, "skipped": "too few rows"}
            for kind in kinds
        ]
        return trials, plant_repeatedly(tail, robust_scale(head), seed=0, times=params.plantings)

    monkeypatch.setattr(AutoDetector, "_trials", scripted)
    return fitted


@pytest.mark.parametrize(
    ("earlier", "chosen", "reason"),
    [
        ({"context": [0.5] * 5, "iforest": [0.9] * 5}, "iforest", "clearly better than the preferred context on each of 2 held-back stretches"),
        ({"context": [0.5] * 5, "iforest": [0.5] * 5}, "context",
         "kept as the preferred detector: iforest was clearly better on the last held-back rows but not on stretch 2 before them (F1 0.50 against 0.50)"),
        ({"context": [0.5] * 5}, "context", "iforest was clearly better on the last held-back rows but not on stretch 2 before them (it could not fit there)"),
        # Unopposed on stretch 2: the reason must not claim a comparison there.
        ({"iforest": [0.5] * 5}, "iforest",
         "clearly better than the preferred context on the last held-back rows; on stretch 2 before them context could not fit"),
    ],
)
def test_a_challenger_replaces_the_preferred_candidate_only_if_clearly_better_on_each_stretch(
    frame, monkeypatch, earlier: dict[str, list[float]], chosen: str, reason: str
) -> None:
    last = {"context": [0.5] * 5, "iforest": [0.9] * 5, "seasonal_mad": [0.505] * 5}
    fitted = _script_trials(monkeypatch, [last, earlier])
    training = frame.iloc[:400]
    detector = AutoDetector(candidates=["context", "iforest", "seasonal_mad"], stretches=2).fit(training)
    # The last quarter of 400 rows, then the last quarter of the 300 before it; seasonal_mad's
    # lead (0.005) is a tie, so only iforest is tried again, with the preferred context.
    assert fitted == [(["context", "iforest", "seasonal_mad"], 300), (["context", "iforest"], 225)]
    assert detector.chosen_ == chosen and reason in detector.reason_
    assert [t["stretch"] for t in detector.earlier_trials_] == [2, 2]


def test_without_a_preference_a_tie_is_not_called_keeping_the_preferred(frame, monkeypatch) -> None:
    # With prefer: null, a tie let the lower F1 win, and the reason said it was "kept as the
    # preferred detector", of which there was none.
    _script_trials(monkeypatch, [{"iforest": [0.496] * 5, "seasonal_mad": [0.504] * 5}])
    detector = AutoDetector(candidates=["iforest", "seasonal_mad"], prefer=None).fit(frame.iloc[:400])
    assert detector.chosen_ == "iforest"
    assert "preferred" not in detector.reason_
    assert detector.reason_.endswith("seasonal_mad's F1 higher by 0.01 is a tie")


@pytest.mark.parametrize(("f1", "chosen"), [((0.494, 0.496), "iforest"), ((0.480, 0.496), "seasonal_mad")])
def test_f1s_within_a_hundredth_are_a_tie_broken_by_the_forecast_error(frame, monkeypatch, f1, chosen: str) -> None:
    # Rounding to two decimals made 0.494 and 0.496 no tie (0.49 against 0.50).
    errors = {"iforest": 0.5, "seasonal_mad": 2.0}

    def scripted(self, kinds, head, tail, params):
        by_kind = dict(zip(["iforest", "seasonal_mad"], f1, strict=True))
        trials = [{"kind": k, "f1": by_kind[k], "f1_by_planting": [by_kind[k]] * 5, "holdout_error": errors[k]} for k in kinds]
        return trials, plant_repeatedly(tail, robust_scale(head), seed=0, times=params.plantings)

    monkeypatch.setattr(AutoDetector, "_trials", scripted)
    detector = AutoDetector(candidates=["iforest", "seasonal_mad"], prefer=None).fit(frame.iloc[:400])
    assert detector.chosen_ == chosen
    if chosen == "iforest":
        assert detector.reason_.endswith("seasonal_mad's F1 higher by 0.00 is a tie, broken by the smaller forecast error")


def test_a_preferred_candidate_that_could_not_fit_is_named_in_the_reason(frame, monkeypatch) -> None:
    # The choice fell to the best mean F1 without a word that the preference was not applied.
    _script_trials(monkeypatch, [{"iforest": [0.9] * 5}])
    detector = AutoDetector(candidates=["prophet", "iforest"], prefer="prophet").fit(frame.iloc[:400])
    assert detector.chosen_ == "iforest"
    assert detector.reason_.endswith("the preferred prophet could not fit (too few rows), so the best mean F1 won")


def test_by_default_a_challenger_must_also_be_clearly_better_on_a_third_stretch(frame, monkeypatch) -> None:
    by_stretch = [
        {"context": [0.5] * 5, "iforest": [0.9] * 5},  # the last held-back rows
        {"context": [0.5] * 5, "iforest": [0.9] * 5},  # the stretch before them
        {"context": [0.8] * 5, "iforest": [0.8] * 5},  # and the one before that: a tie
    ]
    fitted = _script_trials(monkeypatch, by_stretch)
    detector = AutoDetector(candidates=["context", "iforest"]).fit(frame.iloc[:400])
    # 400 rows: heads of 300, 225 and 168 rows; iforest led on the first two and tied on the third.
    assert fitted == [(["context", "iforest"], 300), (["context", "iforest"], 225), (["context", "iforest"], 168)]
    assert detector.chosen_ == "context"
    assert "iforest was clearly better on the last held-back rows but not on stretch 3 before them (F1 0.80 against 0.80)" in detector.reason_
    assert [t["stretch"] for t in detector.earlier_trials_] == [2, 2, 3, 3]
    # Its training anomaly rate is the chosen memory's, measured as it learned (not rescored).
    rate = detector.training_anomaly_rate(frame.iloc[:400])
    assert rate == detector.model_.calibration_rate_ > detector.detect(frame.iloc[:400]).is_anomaly.any(axis=1).mean()


def test_stretches_one_decides_on_the_last_held_back_rows_alone(frame) -> None:
    detector = AutoDetector(candidates=["seasonal_mad", "iforest", "mset"], prefer="mset", stretches=1).fit(frame.iloc[:-48])
    assert detector.chosen_ == "seasonal_mad" and detector.earlier_trials_ == []
    assert detector.reason_.endswith("clearly better than the preferred mset")


def test_scores_with_the_chosen_detector_refitted_on_everything(detector: AutoDetector, frame) -> None:
    assert detector.model_.kind == detector.chosen_ and detector.model_.training_rows_ == len(frame) - 48
    test = frame.iloc[-48:].copy()
    test.iloc[10, 0] += 8.0
    detection = detector.detect(test, history=frame.iloc[:-48])
    assert detection.is_anomaly[10, 0]
    assert detection.is_anomaly.any(axis=1).mean() <= 0.1


@pytest.mark.parametrize(
    ("candidates", "threshold", "cut"),
    [(["context"], {}, 0.995), (["seasonal_mad"], {}, 0.995), (["context"], {"threshold_kind": "score", "threshold_value": 0.9}, 0.9)],
)
def test_scores_put_the_chosen_detectors_threshold_on_the_policys_cut(frame, candidates, threshold, cut) -> None:
    training, test = frame.iloc[:-200], frame.iloc[-200:].copy()
    test.iloc[[20, 90, 150], 0] += 10.0
    detector = AutoDetector(candidates=candidates, **threshold).fit(training)
    inner = detector.model_.detect(test, history=training)
    outer = detector.detect(test, history=training)
    assert detector.threshold_ == cut
    np.testing.assert_array_equal(outer.is_anomaly, inner.is_anomaly)  # the chosen detector decides
    assert outer.is_anomaly.any() and not outer.is_anomaly.all()
    np.testing.assert_array_equal(outer.score >= detector.threshold_, outer.is_anomaly)
    # In order: a higher score of the chosen detector stays higher, in [0, 1].
    order = np.argsort(inner.score[:, 0], kind="stable")
    assert np.all(np.diff(outer.score[order, 0]) >= 0) and 0 <= outer.score.min() and outer.score.max() <= 1
    np.testing.assert_array_equal(outer.expected, inner.expected)
    if candidates == ["context"] and not threshold:
        # context's raw share flags from its own cut (0.75 or more): its scores move up onto 0.995.
        assert detector.model_.threshold_ < 0.99 and (inner.score >= 0.99).sum() < outer.is_anomaly.sum()


def test_round_trip_restores_the_choice(detector: AutoDetector, frame) -> None:
    loaded = load_detector("auto", detector.to_files())
    assert loaded.chosen_ == detector.chosen_ and loaded.reason_ == detector.reason_
    test = frame.iloc[-48:]
    np.testing.assert_array_equal(loaded.detect(test).score, detector.detect(test).score)


def test_candidates_that_cannot_fit_are_skipped_with_their_reason(frame) -> None:
    rows = frame.reset_index(drop=True)  # no timestamps: Prophet cannot model them
    detector = AutoDetector(candidates=["prophet", "seasonal_mad", "mset"]).fit(rows)
    trials = {t["kind"]: t for t in detector.trials_}
    assert "needs timestamps" in trials["prophet"]["skipped"]
    assert "no timestamps" in trials["seasonal_mad"]["skipped"]  # its default season is a duration
    assert detector.chosen_ == "mset"


def test_a_candidate_failing_with_any_error_is_skipped_and_named(frame, monkeypatch) -> None:
    from pipelines.detectors.mset import MSETDetector

    def diverge(self, X, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(MSETDetector, "fit", diverge)
    detector = AutoDetector(candidates=["mset", "seasonal_mad"], prefer=None).fit(frame)
    trials = {t["kind"]: t for t in detector.trials_}
    assert trials["mset"]["skipped"] == "failed: LinAlgError: SVD did not converge"
    assert detector.chosen_ == "seasonal_mad"


def test_no_usable_candidate_is_an_error(frame) -> None:
    with pytest.raises(ModelError, match="no candidate detector could fit this series .*prophet: .*needs timestamps"):
        AutoDetector(candidates=["prophet"]).fit(frame.reset_index(drop=True))


def test_planted_anomalies_and_event_f1(frame) -> None:
    clean = frame.iloc[:200]
    planted = inject_anomalies(clean, robust_scale(clean), seed=3)
    assert len(planted.events) == 4  # 3 spikes in the first half, one level shift at the end
    changed = (planted.frame != clean).any(axis=1).to_numpy()
    np.testing.assert_array_equal(changed, planted.rows)
    perfect = event_f1(planted.news_rows, planted)
    assert perfect == {"f1": 1.0, "precision": 1.0, "recall": 1.0}
    # The 50-row shift is news for its first SHIFT_NEWS_ROWS rows: flagging all of it is 26 false alarms.
    assert planted.events[-1][1] - planted.events[-1][0] + 1 == 50
    assert event_f1(planted.rows, planted)["precision"] == pytest.approx((3 + SHIFT_NEWS_ROWS) / (3 + 50))
    # Flagging only the shift's first row finds one event of four with full precision.
    only_shift = np.zeros(200, dtype=bool)
    only_shift[planted.events[-1][0]] = True
    assert event_f1(only_shift, planted) == pytest.approx({"f1": 0.4, "precision": 1.0, "recall": 0.25})


def test_a_seasonal_candidate_runs_without_a_season_on_a_short_history() -> None:
    # 300 five-minute rows: fewer than two daily seasons (576 rows) in the fitted head, so the
    # robust baselines are tried (and may win) without a season instead of being skipped.
    rng = np.random.default_rng(3)
    index = pd.date_range("2024-01-01", periods=300, freq="5min", tz="UTC")
    frame = pd.DataFrame({"value": 10 + rng.normal(0, 1, 300)}, index=index)
    detector = AutoDetector(candidates=["seasonal_mad", "level_shift"]).fit(frame)
    trials = {t["kind"]: t for t in detector.trials_}
    assert all("skipped" not in t and "training had 225 rows" in t["season_fallback"] for t in trials.values())
    assert detector.model_.season_ is None and "training had 300 rows" in detector.model_.season_fallback_
    restored = load_detector("auto", detector.to_files())
    assert restored.model_.season_fallback_ == detector.model_.season_fallback_
    np.testing.assert_array_equal(restored.detect(frame).score, detector.detect(frame).score)


def test_a_trial_is_the_mean_over_its_plantings_of_one_candidate_fitted_once(frame) -> None:
    training = frame.iloc[:-48]
    detector = AutoDetector(candidates=["seasonal_mad"], plantings=3, random_state=4).fit(training)
    (trial,) = detector.trials_
    split = int(len(training) * 0.75)
    head, tail = training.iloc[:split], training.iloc[split:]
    plantings = plant_repeatedly(tail, robust_scale(head), seed=4, times=3)
    candidate = make_detector("seasonal_mad", {}).fit(head)

    def one_by_one(planted: Injected) -> dict[str, float]:
        copies = planted.one_by_one()
        return pooled_event_f1([candidate.detect(c.frame, history=head).is_anomaly.any(axis=1) for c in copies], copies)

    each = [one_by_one(p) for p in plantings]
    assert trial["f1"] == pytest.approx(np.mean([e["f1"] for e in each]), abs=1e-4)
    assert trial["recall"] == pytest.approx(np.mean([e["recall"] for e in each]), abs=1e-4)
    assert "mean of 3 plantings, 4 of their 4 anomalies scored one at a time" in detector.reason_


def test_planted_events_are_scored_one_at_a_time_each_in_a_clean_copy(frame) -> None:
    clean = frame.iloc[:200]
    planted = inject_anomalies(clean, robust_scale(clean), seed=3)
    copies = planted.one_by_one()
    assert [c.events for c in copies] == [[event] for event in planted.events]
    for copy, (first, last) in zip(copies, planted.events, strict=True):
        changed = (copy.frame != clean).any(axis=1).to_numpy()
        assert changed[first : last + 1].all() and changed.sum() == last - first + 1
    assert copies[-1].news == [planted.news[-1]] and copies[-1].news[0][1] - copies[-1].news[0][0] + 1 == SHIFT_NEWS_ROWS
    # Real labels have no clean copy: they are scored where they are.
    labelled = Injected(clean, [(5, 6), (50, 50)])
    assert labelled.one_by_one() == [labelled]
    # A long tail holds many events; four are scored, spread from the first to the shift.
    long = inject_anomalies(frame, robust_scale(frame), seed=3)
    chosen = [c.events[0] for c in long.one_by_one()]
    assert len(long.events) == 7 and len(chosen) == 4
    assert chosen[0] == long.events[0] and chosen[-1] == long.events[-1]
    # Pooled: events found among all events, right flags among all flags.
    hits = [c.news_rows.copy() for c in copies]
    hits[0][:] = False
    hits[1][150] = True  # one false alarm (row 150 is in no event of the second copy)
    assert not copies[1].news_rows[150]
    right = sum(int(c.news_rows.sum()) for c in copies[1:])
    assert pooled_event_f1(hits, copies)["recall"] == pytest.approx(3 / 4)
    assert pooled_event_f1(hits, copies)["precision"] == pytest.approx(right / (right + 1))


def test_a_detector_that_rests_after_a_report_is_judged_on_every_planted_event(frame) -> None:
    # context stays quiet for its rest after a report: on a whole planting, the first event it
    # reports silences it for the others, which is how plantings (an event every ~25 rows)
    # differ from real anomalies, not how well it finds them.
    one = frame[["a"]]  # one signal, one rest
    head, tail = one.iloc[:-300], one.iloc[-300:]
    plantings = plant_repeatedly(tail, robust_scale(head), seed=0, times=3)
    # A rest longer than the planted events' spacing, and room around the training range so
    # that no clean row is a new high (a new fact, reported) and only planted events report.
    candidate = make_detector("context", {"rest": 150, "margin": 1.0}).fit(head)

    def flag(rows: pd.DataFrame) -> np.ndarray:
        return candidate.detect(rows, history=head).is_anomaly.any(axis=1)

    whole = mean_event_f1([flag(p.frame) for p in plantings], plantings)
    apart = mean_of_parts(detection_f1_by_planting(flag, plantings))
    # The first of four events each time, and two spikes beyond every level (which break a
    # rest): 5 of 12. One at a time, every event is found (and a few rows outside them).
    assert whole["recall"] == pytest.approx(5 / 12)
    assert apart["recall"] == 1.0 and apart["precision"] > 0.9


def test_plantings_differ_and_the_first_is_the_seed_s_own(frame) -> None:
    clean = frame.iloc[-300:]
    scale = robust_scale(clean)
    plantings = plant_repeatedly(clean, scale, seed=3, times=3)
    assert plantings[0].events == inject_anomalies(clean, scale, seed=3).events
    assert len({tuple(p.events) for p in plantings}) == 3
    # Found in the first planting only: a third of its F1 and recall, full precision where it flagged.
    flags = [plantings[0].news_rows, np.zeros(len(clean), dtype=bool), np.zeros(len(clean), dtype=bool)]
    assert mean_event_f1(flags, plantings) == pytest.approx({"f1": 1 / 3, "precision": 1 / 3, "recall": 1 / 3})


def test_a_feature_added_within_the_held_back_rows_is_left_out_of_the_choice_only(frame) -> None:
    # Every candidate refused a head where the new sensor had no value, and the choice failed
    # with "no candidate detector could fit this series", though each could fit all the rows.
    training = frame.iloc[:-48].copy()
    training.iloc[:-100, 1] = np.nan
    detector = AutoDetector(candidates=["seasonal_mad", "iforest", "mset"]).fit(training)
    assert all(t["features"] == ["a"] for t in detector.trials_)
    assert detector.reason_.endswith("judged on ['a'] alone: ['b'] have no values before the held-back rows")
    assert list(detector.model_.feature_names_in_) == ["a", "b"]  # the winner serves every feature
    assert detector.detect(frame.iloc[-48:], history=training).score.shape == (48, 2)


def test_no_feature_with_values_before_the_held_back_rows_is_an_error_saying_so(frame) -> None:
    training = frame.iloc[:-48].copy()
    training.iloc[:-100] = np.nan
    with pytest.raises(ModelError, match=r"seasonal_mad: no feature has a value in the \d+ rows before the held-back rows"):
        AutoDetector(candidates=["seasonal_mad", "iforest"]).fit(training)
