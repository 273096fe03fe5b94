"""Tuning: the search improves on the configured params, searches kinds, respects its budget,
never promotes a worse challenger, and switches to the labeled objective once people give feedback."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.config import JobConfig, parse_job
from pipelines.detectors.synthetic import mean_event_f1
from pipelines.errors import ConfigError, ModelError
from pipelines.training import detector_for, registry_for, train_series
from pipelines.tuning import evaluate, prepare_holdout, tune_series
from pipelines.workspace import Window

SERIES = "site=a"


@dataclass(frozen=True)
class _Label:
    """What prepare_holdout reads of a pipelines.labels.Label, for split tests that need no store."""

    start: datetime
    end: datetime
    verdict: bool
    feature: str | None = None
    created_at: datetime = datetime(2024, 6, 1, tzinfo=UTC)


def make_job(tmp_path: Path, model: dict[str, Any], **tune: Any) -> JobConfig:
    return parse_job(
        {
            "name": "tuned_job",
            "source": {"kind": "file", "path": "unused.csv"},
            "timestamp": "ts",
            "frequency": "1h",
            "dimensions": ["site"],
            "features": ["requests", "latency"],
            "model": model,
            "registry": str(tmp_path / "models"),
            "tune": tune,
        },
        source="tuned_job.yaml",
    )


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))


@pytest.fixture
def daily() -> pd.DataFrame:
    """Three weeks of hourly data with a strong daily cycle and little noise (seed 0)."""
    rng = np.random.default_rng(0)
    rows = 24 * 21
    hours = np.arange(rows)
    index = pd.date_range("2024-01-01", periods=rows, freq="1h", tz="UTC")
    return pd.DataFrame(
        {
            "requests": 100 + 30 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 1.5, rows),
            "latency": 50 + 10 * np.cos(2 * np.pi * hours / 24) + rng.normal(0, 1.0, rows),
        },
        index=index,
    )


def _window(data: pd.DataFrame) -> Window:
    return Window(data.index[0].to_pydatetime(), (data.index[-1] + pd.Timedelta("1h")).to_pydatetime())


def test_tuning_beats_the_configured_params_on_the_same_held_back_data(tmp_path, daily):
    # No season and a week-long level window: a poor fit for a daily cycle.
    job = make_job(tmp_path, {"kind": "seasonal_mad", "params": {"season": None, "level_window": 168}}, trials=15)
    result = tune_series(job, SERIES, daily, _window(daily), run_id="tune-1")

    holdout = prepare_holdout(job, SERIES, daily)
    configured = evaluate(detector_for(job).fit(holdout.head), holdout)
    tuned = evaluate(detector_for(job, result["params"], result["kind"]).fit(holdout.head), holdout)
    assert holdout.objective == "unlabeled" and len(holdout.plantings) == 5 and len(holdout.plantings[0].events) >= 3
    assert tuned["objective"] == pytest.approx(result["objective"])
    assert tuned["objective"] > configured["objective"] + 0.01
    assert result["default_objective"] == pytest.approx(configured["objective"])

    registry = registry_for(job)
    [record] = registry.tuning_history(job.name, SERIES)
    assert record["objective"]["kind"] == "unlabeled" and record["run_id"] == "tune-1"
    assert len(record["trials"]) == result["trials"] == 15
    assert all({"number", "kind", "params", "objective", "f1", "seconds"} <= set(t) for t in record["trials"])
    assert record["trials"][0]["params"] == {"season": None, "level_window": 168}  # the configured params run first
    assert record["decision"]["promoted"] and record["decision"]["reason"] == "no champion yet"

    tuned_doc = registry.tuned(job.name, SERIES)
    assert tuned_doc["kind"] == "seasonal_mad" and tuned_doc["params"] == result["params"]
    champion = registry.champion(job.name, SERIES)
    assert champion.version == result["version"]
    assert champion.metadata["tuning"]["decision"]["challenger"]["objective"] == result["objective"]
    assert champion.metadata["params"]["level_window"] == result["params"]["level_window"]


def test_the_detector_kind_is_searched_and_train_builds_the_winner(tmp_path, daily):
    # iforest (configured) has no notion of the daily cycle; level_shift models it.
    job = make_job(tmp_path, {"kind": "iforest", "params": {"n_estimators": 50}}, detectors=["iforest", "level_shift"], trials=6)
    result = tune_series(job, SERIES, daily, _window(daily))
    assert result["kind"] == "level_shift"
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    by_kind = {kind: [t["objective"] for t in record["trials"] if t["kind"] == kind] for kind in ("iforest", "level_shift")}
    assert by_kind["iforest"] and by_kind["level_shift"]
    assert max(by_kind["level_shift"]) > max(by_kind["iforest"])

    # Whether it is promoted is train's own rule; what matters here is which detector it builds.
    trained = train_series(job, SERIES, daily, _window(daily), run_id="train-after-tune")
    version = registry_for(job).version(job.name, SERIES, trained.version)
    assert version.metadata["model"] == "level_shift" and version.metadata["tuned_params"] == result["params"]
    assert {k: version.metadata["params"][k] for k in result["params"]} == result["params"]


def test_a_worse_challenger_is_not_promoted(tmp_path, daily):
    job = make_job(tmp_path, {"kind": "seasonal_mad"}, trials=10)
    first = tune_series(job, SERIES, daily, _window(daily))
    registry = registry_for(job)
    tuned_before = registry.tuned(job.name, SERIES)
    champion_before = registry.champion(job.name, SERIES)
    assert first["promoted"]

    # Restricted to the worst corner: no season, a 3-row level.
    worse = make_job(tmp_path, {"kind": "seasonal_mad"}, trials=10, grid={"season": [None], "level_window": [3]})
    second = tune_series(worse, SERIES, daily, _window(daily))
    assert not second["promoted"] and second["version"] is None
    assert second["trials"] == 1 and second["params"] == {"season": None, "level_window": 3}
    assert second["challenger_decision_objective"] < second["champion_objective"] + 0.02
    assert registry.champion(job.name, SERIES).version == champion_before.version
    assert registry.tuned(job.name, SERIES) == tuned_before
    assert len(registry.versions(job.name, SERIES)) == 1

    history = registry.tuning_history(job.name, SERIES)
    assert [h["decision"]["promoted"] for h in history] == [True, False]
    decision = history[-1]["decision"]
    assert decision["champion"]["version"] == champion_before.version
    assert decision["margin"] == 0.02 and "kept the champion" in decision["reason"]


def test_the_champion_is_judged_fitted_on_the_head_on_fresh_plantings(tmp_path, daily):
    # The serving model was trained on the whole window, the held-back rows included; judged as it
    # serves it would be scored on rows it learned.
    job = make_job(tmp_path, {"kind": "context"}, trials=1)
    train_series(job, SERIES, daily, _window(daily), run_id="train")
    result = tune_series(job, SERIES, daily, _window(daily))
    holdout = prepare_holdout(job, SERIES, daily)
    searched = evaluate(detector_for(job).fit(holdout.head), holdout)
    # The decision is taken on anomalies planted afresh, not on those the search maximised over.
    decision_holdout = holdout.replanted(job.tune.seed + len(holdout.plantings))
    assert [p.events for p in decision_holdout.plantings] != [p.events for p in holdout.plantings]
    decided = evaluate(detector_for(job).fit(holdout.head), decision_holdout)
    assert result["objective"] == pytest.approx(searched["objective"])
    assert result["champion_objective"] == pytest.approx(decided["objective"])
    # Same kind, same parameters, same footing: the challenger ties with the champion, which stays.
    assert result["challenger_decision_objective"] == pytest.approx(decided["objective"]) and not result["promoted"]
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    assert record["decision"]["planted_afresh"] and "planted afresh" in record["decision"]["reason"]


def test_a_challenger_is_promoted_only_when_clearly_better_on_each_held_back_stretch(tmp_path, daily):
    # Isolation Forest serves, with no notion of the daily cycle; the search tries level_shift. It
    # must win beyond chance on the held-back rows and on the two stretches before them, each
    # fitted on its own head with its own plantings. The challenger is pinned by the grid: what the
    # search picks on the held-back rows moves with any change to level_shift (its spike rule made
    # a slower level the best there, one that does no better than the forest on the stretch
    # before), and this test is about the stretches, not the search.
    train_series(make_job(tmp_path, {"kind": "iforest", "params": {"n_estimators": 50}}), SERIES, daily, _window(daily), run_id="train")
    pinned = {"season": ["1w"], "level_window": [4], "shift_window": [4], "drift": [3.4]}
    job = make_job(tmp_path, {"kind": "iforest"}, detectors=["level_shift"], trials=4, grid=pinned)
    result = tune_series(job, SERIES, daily, _window(daily))
    assert result["promoted"] and result["kind"] == "level_shift"
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    stretches = record["decision"]["stretches"]
    assert [s["stretch"] for s in stretches] == [1, 2, 3] and job.tune.stretches == 3
    assert [s["held_back_rows"] for s in stretches] == [126, 95, 71]  # 504 rows, a quarter held back each time
    assert stretches[0]["held_back_start"] > stretches[1]["held_back_start"] > stretches[2]["held_back_start"]
    for stretch in stretches:
        gains = np.subtract(stretch["challenger"]["objective_by_planting"], stretch["champion"]["objective_by_planting"])
        assert stretch["clearly_better"] and stretch["gain"] == pytest.approx(gains.mean(), abs=1e-5) and gains.mean() > 0.02
        assert stretch["p_value"] < 0.05
    assert "on each of 3 held-back stretch(es)" in result["reason"]


def test_a_lead_that_does_not_hold_on_an_earlier_stretch_keeps_the_champion(tmp_path, daily):
    # No season and a 3-row level serve; a daily season with a 6- or 24-row level is searched. Its
    # lead on the held-back rows is clear (and would have promoted it on one comparison), but on
    # the stretch before them the champion does better.
    bad = {"kind": "seasonal_mad", "params": {"season": None, "level_window": 3}}
    train_series(make_job(tmp_path, bad), SERIES, daily, _window(daily), run_id="train")
    champion = registry_for(make_job(tmp_path, bad)).champion("tuned_job", SERIES).version
    job = make_job(tmp_path, {"kind": "seasonal_mad"}, trials=4, grid={"season": ["1d"], "level_window": [6, 24]})
    result = tune_series(job, SERIES, daily, _window(daily))
    assert not result["promoted"] and result["version"] is None
    assert result["challenger_decision_objective"] > result["champion_objective"] + job.tune.promotion_margin
    assert registry_for(job).champion(job.name, SERIES).version == champion
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    first, second = record["decision"]["stretches"]  # the third is not tried
    assert first["clearly_better"] and first["p_value"] < 0.05
    assert not second["clearly_better"] and second["gain"] < 0
    assert result["reason"].startswith(f"kept the champion {champion} (seasonal_mad): on held-back stretch 2 of 3")


def test_a_small_grid_is_tried_exhaustively_once_per_point(tmp_path, daily):
    job = make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [6, 48]}, trials=20)
    result = tune_series(job, SERIES, daily)
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    # Only the grid's parameters are searched, each point once; the season stays the configured one.
    assert result["trials"] == 2
    assert [t["params"] for t in record["trials"]] == [{"level_window": 6}, {"level_window": 48}]
    assert registry_for(job).champion(job.name, SERIES).metadata["params"]["season"] == "1d"


def test_a_searched_season_a_trial_cannot_learn_is_skipped_not_scored_as_no_season(tmp_path, daily):
    # Two weeks of history (a new series): a trial fits on 252 rows, fewer than two weeks, and the
    # detector fitted without a season. The 1w trial scored as null did, won as the first of
    # equals, and the refit on all 336 rows served a weekly profile that no trial had scored.
    job = make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"season": ["1w", None]})
    result = tune_series(job, SERIES, daily.iloc[: 14 * 24])
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    weekly, none = record["trials"]
    assert weekly["params"] == {"season": "1w"} and "objective" not in weekly
    assert weekly["skipped"].startswith("season 1w needs two seasons of rows, more than the 252 a trial fits on")
    assert none["params"] == {"season": None} and "objective" in none
    assert result["params"] == {"season": None}


@pytest.mark.parametrize(
    ("frequency", "rows", "kind", "left_out"),
    [
        # A daily season spans one row of a daily series: every such trial was refused at fit.
        ("1d", 300, "seasonal_mad", ["seasonal_mad season 1d: spans 1 row of 1d, a season needs two"]),
        # Ten days of hours: a trial fits on 180 rows, under two weeks: every 1w trial was skipped.
        ("1h", 240, "seasonal_mad", ["seasonal_mad season 1w: a profile needs two seasons (336 rows), a trial fits on 180"]),
        # 150 rows hold two windows of at most 75: the forest refused longer ones at fit.
        ("1d", 200, "iforest", ["iforest window above 75: it fits on 2 windows, a trial on 150 rows"]),
    ],
)
def test_what_no_trial_can_learn_is_not_searched(tmp_path, frequency, rows, kind, left_out):
    rng = np.random.default_rng(0)
    index = pd.date_range("2024-01-01", periods=rows, freq=pd.Timedelta(frequency), tz="UTC")
    data = pd.DataFrame({"requests": 100 + 30 * np.sin(np.arange(rows) / 3) + rng.normal(0, 1.5, rows)}, index=index)
    data["latency"] = data["requests"] / 2 + rng.normal(0, 1, rows)
    params = {"season": None} if kind == "seasonal_mad" else {"window": 12}  # valid at every frequency and row count here
    job = make_job(tmp_path, {"kind": kind, "params": params}, trials=20)
    job = job.model_copy(update={"frequency": pd.Timedelta(frequency).to_pytimedelta()})
    tune_series(job, SERIES, data)
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    assert record["not_searched"] == left_out
    assert not [t for t in record["trials"] if "skipped" in t]
    assert len(record["trials"]) == 20


def test_the_trial_budget_and_the_timeout_stop_the_search(tmp_path, daily):
    job = make_job(tmp_path, {"kind": "level_shift"}, trials=4)
    assert tune_series(job, SERIES, daily)["trials"] == 4

    hurried = make_job(tmp_path / "hurried", {"kind": "level_shift"}, trials=10_000, timeout="1s")
    result = tune_series(hurried, SERIES, daily)
    [record] = registry_for(hurried).tuning_history(hurried.name, SERIES)
    assert 1 <= result["trials"] == len(record["trials"]) < 10_000
    assert record["budget"] == {"trials": 10_000, "timeout_seconds": 1.0}


def test_a_context_job_is_tuned_over_its_own_space_and_train_builds_the_result(tmp_path, daily):
    from pipelines.detectors.search_spaces import SEARCH_SPACES

    # One week: each trial of the memory steps through every planting, and a planted
    # spike beyond the levels widens them and relearns the rows before it.
    daily = daily.iloc[: 24 * 7]
    job = make_job(tmp_path, {"kind": "context", "params": {"value_bits": 2}}, trials=3)
    result = tune_series(job, SERIES, daily, _window(daily))
    assert result["kind"] == "context" and result["trials"] == 3
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    space = SEARCH_SPACES["context"]
    # The configured values (and the detector's defaults for the rest) run first; every trial stays in the space.
    assert record["trials"][0]["params"] == {"value_bits": 2, "max_left_facts": 7, "max_active": 15, "rest": "12h"}
    assert all(t["kind"] == "context" and all(space[k].contains(v) for k, v in t["params"].items()) for t in record["trials"])
    assert len({json.dumps(t["params"], sort_keys=True) for t in record["trials"]}) > 1
    assert result["objective"] == max(t["objective"] for t in record["trials"])

    trained = train_series(job, SERIES, daily, _window(daily), run_id="train-after-tune")
    version = registry_for(job).version(job.name, SERIES, trained.version)
    assert version.metadata["model"] == "context"
    assert {k: version.metadata["params"][k] for k in result["params"]} == result["params"]


def test_each_planted_event_is_judged_alone_so_a_rest_after_a_report_hides_none(tmp_path, daily):
    # A detector that reports only the first anomalous row of whatever it is given, as a long rest
    # would. Planted events come ~25 rows apart: judged together it would find one per planting.
    import dataclasses

    from pipelines.detectors.seasonal_mad import SeasonalMADDetector

    class FirstReportOnly(SeasonalMADDetector):
        def detect(self, X, history=None):
            found = super().detect(X, history=history)
            flags = np.zeros_like(found.is_anomaly)
            rows = np.flatnonzero(found.is_anomaly.any(axis=1))
            if rows.size:
                flags[rows[0]] = found.is_anomaly[rows[0]]
            return dataclasses.replace(found, is_anomaly=flags)

    job = make_job(tmp_path, {"kind": "seasonal_mad"})
    holdout = prepare_holdout(job, SERIES, daily)
    assert all(len(p.events) >= 3 for p in holdout.plantings)
    plain = evaluate(SeasonalMADDetector().fit(holdout.head), holdout)
    resting = evaluate(FirstReportOnly().fit(holdout.head), holdout)
    resting_detector = FirstReportOnly().fit(holdout.head)
    whole = mean_event_f1(
        [np.asarray(resting_detector.detect(p.frame, history=holdout.head).is_anomaly).any(axis=1) for p in holdout.plantings],
        holdout.plantings,
    )
    # Judged on whole plantings it finds only each planting's first event; judged alone, every event
    # the plain detector finds unless a false alarm in the clean rows before it comes first.
    assert plain["recall"] == 1.0 and whole["recall"] == 0.25
    assert resting["recall"] >= 0.6 > whole["recall"]


def test_auto_tunes_context_among_its_candidates_by_default(tmp_path):
    from pipelines.tuning import _spaces

    job = make_job(tmp_path, {"kind": "auto"})
    assert "context" in _spaces(job)


def test_auto_tunes_only_the_candidates_its_job_names(tmp_path):
    from pipelines.tuning import _spaces

    job = make_job(tmp_path, {"kind": "auto", "params": {"candidates": ["seasonal_mad", "level_shift"]}})
    assert list(_spaces(job)) == ["seasonal_mad", "level_shift"]
    # Set explicitly, tune.detectors still decides.
    job = make_job(tmp_path, {"kind": "auto", "params": {"candidates": ["seasonal_mad"]}}, detectors=["iforest"])
    assert list(_spaces(job)) == ["iforest"]


def test_auto_s_candidate_params_reach_the_kinds_tuning_tries_and_builds(tmp_path):
    # Tuning an auto job tries each candidate kind from that kind's defaults: a job giving auto's
    # Prophet its time zone and holidays had them dropped by every Prophet trial and by a Prophet
    # challenger it promoted.
    from pipelines.training import detector_for
    from pipelines.tuning import _defaults, _spaces

    given = {"prophet": {"time_zone": "America/New_York", "holidays_country": "US"}, "seasonal_mad": {"season": "1w"}}
    job = make_job(tmp_path, {"kind": "auto", "params": {"candidate_params": given}})
    prophet = detector_for(job, {"changepoint_prior_scale": 0.5}, "prophet").get_params()
    assert (prophet["time_zone"], prophet["holidays_country"], prophet["changepoint_prior_scale"]) == ("America/New_York", "US", 0.5)
    assert detector_for(job, {}, "iforest").get_params() == detector_for(make_job(tmp_path, {"kind": "auto"}), {}, "iforest").get_params()
    assert _defaults(job, "seasonal_mad", _spaces(job)["seasonal_mad"])["season"] == "1w"


@pytest.mark.parametrize(
    ("model", "tune", "where", "fragment"),
    [
        ({"kind": "seasonal_mad"}, {"detectors": ["seasonal_mad", "nope"]}, "parse", "'nope' cannot be tuned"),
        ({"kind": "seasonal_mad"}, {"detectors": ["auto"]}, "parse", "'auto' cannot be tuned"),
        ({"kind": "seasonal_mad"}, {"detectors": ["seasonal_mad"], "grid": {"level_window": [2]}}, "parse", "integer 3–168"),
        ({"kind": "iforest"}, {"grid": {"season": ["1d"]}}, "parse", "no searched detector (iforest) tunes 'season'"),
        ({"kind": "seasonal_mad"}, {"grid": {"level_window": [100_000]}}, "parse", "outside the search space of 'seasonal_mad'"),
    ],
)
def test_bad_tune_settings_are_clear_config_errors(tmp_path, daily, model, tune, where, fragment):
    with pytest.raises(ConfigError) as info:
        tune_series(make_job(tmp_path, model, **tune), SERIES, daily)
    message = str(info.value)
    assert fragment in message
    # A job file's error names the file; a run's error names the job.
    assert ("tuned_job.yaml" in message) if where == "parse" else message.startswith("job tuned_job:")
    assert not (tmp_path / "models").exists()


def _with_outage(data: pd.DataFrame) -> tuple[pd.DataFrame, datetime, datetime]:
    """A real anomaly in the last days: requests drop by a third for six hours."""
    data = data.copy()
    start, end = data.index[-60], data.index[-55]
    data.loc[start:end, "requests"] *= 0.66
    return data, start.to_pydatetime(), end.to_pydatetime()


def test_feedback_switches_the_next_tuning_to_the_labeled_objective(tmp_path, daily):
    labels = pytest.importorskip("pipelines.labels", reason="pipelines.labels (feedback) is not there yet")
    data, start, end = _with_outage(daily)
    job = make_job(tmp_path, {"kind": "seasonal_mad", "params": {"season": None, "level_window": 168}}, trials=8)
    first = tune_series(job, SERIES, data)
    assert first["objective_kind"] == "unlabeled"

    store = labels.label_store(job)
    low, high = float(data.loc[start:end, "requests"].min()), float(data.loc[start:end, "requests"].max())
    store.add(job.name, SERIES, start, end, True, feature="requests", value_min=low, value_max=high, note="outage", author="tests")
    quiet = data.index[-30].to_pydatetime(), data.index[-28].to_pydatetime()
    store.add(job.name, SERIES, *quiet, False, value_min=0.0, value_max=200.0, author="tests")
    second = tune_series(job, SERIES, data)
    assert second["objective_kind"] == "labeled"

    history = registry_for(job).tuning_history(job.name, SERIES)
    assert [h["objective"]["kind"] for h in history] == ["unlabeled", "labeled"]
    labeled = history[-1]["objective"]
    assert labeled["events"] == 1 and labeled["labels"] == {
        "true": 1, "false": 1, "true_scored": 1, "true_in_fitted_part": 0, "overruled": 0
    }
    # The champion is judged on the labeled objective too, so its score changed with the feedback.
    assert history[-1]["decision"]["champion"]["objective"] != history[0]["decision"]["challenger"]["objective"]
    # People's labels cannot be planted again or moved to an earlier stretch: one comparison decides.
    decision = history[-1]["decision"]
    assert not decision["planted_afresh"] and len(decision["stretches"]) == 1 and decision["stretches"][0]["p_value"] is None
    assert "people's labeled anomalies" in decision["reason"] and "stretch 1 of" not in decision["reason"]
    holdout = prepare_holdout(job, SERIES, data)
    assert [p.events for p in holdout.plantings] == [[(len(holdout.clean) - 60, len(holdout.clean) - 55)]]


def test_labels_in_the_fitted_part_pull_the_split_but_never_score_against_themselves(tmp_path, daily, monkeypatch):
    from pipelines import tuning

    early, late = daily.index[30], daily.index[400]
    found = [_Label(early.to_pydatetime(), early.to_pydatetime(), True), _Label(late.to_pydatetime(), daily.index[405].to_pydatetime(), True)]
    monkeypatch.setattr(tuning, "_series_labels", lambda job, series, data: found)
    job = make_job(tmp_path, {"kind": "seasonal_mad"})
    holdout = prepare_holdout(job, SERIES, daily)
    # The default split (75 %) is at row 378; the first labeled row in reach is 400 > 378, so the
    # split stays; the label at row 30 lies in the fitted head and is only counted.
    assert len(holdout.head) == 378 and holdout.objective == "labeled"
    assert [p.events for p in holdout.plantings] == [[(400 - 378, 405 - 378)]]
    assert holdout.labels == {"true": 2, "false": 0, "true_scored": 1, "true_in_fitted_part": 1, "overruled": 0}
    assert json.dumps(holdout.describe())  # recorded as JSON in the registry


def test_a_label_before_the_default_split_moves_it_earlier(tmp_path, daily, monkeypatch):
    from pipelines import tuning

    start = daily.index[300].to_pydatetime().astimezone(UTC)
    monkeypatch.setattr(tuning, "_series_labels", lambda job, series, data: [_Label(start, daily.index[303].to_pydatetime(), True)])
    holdout = prepare_holdout(make_job(tmp_path, {"kind": "seasonal_mad"}), SERIES, daily)
    assert len(holdout.head) == 300 and [p.events for p in holdout.plantings] == [[(0, 3)]]


def _rows(daily: pd.DataFrame, first: int, last: int, verdict: bool, feature: str | None = None, written: int = 1) -> _Label:
    return _Label(
        daily.index[first].to_pydatetime(), daily.index[last].to_pydatetime(), verdict, feature, datetime(2024, 6, 1, written, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("later", "events", "overruled"),
    [
        # The event re-scored with a wider span and judged a false alarm: the first verdict is no event.
        ([(398, 410, False, None)], [], 1),
        # A false alarm on one feature: the other feature's anomaly is still the event.
        ([(400, 405, False, "requests")], [(22, 27)], 0),
        # Both features judged false alarms: more specific than the whole-series verdict, whenever written.
        ([(400, 405, False, "requests"), (400, 405, False, "latency")], [], 1),
    ],
)
def test_overlapping_labels_score_the_verdict_that_holds(tmp_path, daily, monkeypatch, later, events, overruled):
    from pipelines import tuning

    first = _rows(daily, 400, 405, True, written=5)  # written after the feature labels: specificity still wins
    found = [first, *(_rows(daily, a, b, verdict, feature, written=6 if feature is None else 1) for a, b, verdict, feature in later)]
    monkeypatch.setattr(tuning, "_series_labels", lambda job, series, data: found)
    holdout = prepare_holdout(make_job(tmp_path, {"kind": "seasonal_mad"}), SERIES, daily)
    assert len(holdout.head) == 378 and holdout.objective == "labeled"
    assert holdout.planted == (not events) and (events == [] or [p.events for p in holdout.plantings] == [events])
    assert holdout.labels["true_scored"] == len(events) and holdout.labels["overruled"] == overruled


def test_confirmed_anomalies_are_left_out_of_what_tuning_fits(tmp_path, daily, monkeypatch):
    from pipelines import tuning

    found = [_rows(daily, 30, 35, True), _rows(daily, 100, 101, True, "latency")]
    monkeypatch.setattr(tuning, "_series_labels", lambda job, series, data: found)
    job = make_job(tmp_path, {"kind": "seasonal_mad"}, trials=1, grid={"level_window": [24]})
    holdout = prepare_holdout(job, SERIES, daily)
    assert holdout.head.iloc[30:36].isna().all().all() and holdout.head.iloc[100:102]["latency"].isna().all()
    assert holdout.head.drop(holdout.head.index[[*range(30, 36), 100, 101]]).notna().all().all()
    assert holdout.head["requests"].iloc[100:102].notna().all()

    result = tune_series(job, SERIES, daily, _window(daily))
    masking = registry_for(job).version(job.name, SERIES, result["version"]).metadata["label_masking"]
    assert (masking["rows"], masking["values"], masking["by_feature"]) == (8, 14, {"requests": 6, "latency": 8})


def test_an_anomaly_running_from_the_fitted_head_into_the_held_back_rows_is_not_scored(tmp_path, daily, monkeypatch):
    from pipelines import tuning

    # Starts before half of the rows, so it cannot move the split (378): its held-back rows are neither
    # an event (its start was not held back) nor normal rows a flag would be a false alarm on.
    monkeypatch.setattr(tuning, "_series_labels", lambda job, series, data: [_rows(daily, 200, 390, True)])
    holdout = prepare_holdout(make_job(tmp_path, {"kind": "seasonal_mad"}), SERIES, daily)
    assert len(holdout.head) == 378 and holdout.labels["true_in_fitted_part"] == 1 and holdout.labels["true_scored"] == 0
    assert holdout.clean.iloc[: 390 - 378 + 1].isna().all().all() and holdout.clean.iloc[390 - 378 + 1 :].notna().all().all()


def test_train_ignores_a_tuned_kind_the_job_no_longer_uses(tmp_path, daily, caplog):
    tune_series(make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [6]}), SERIES, daily)
    changed = make_job(tmp_path, {"kind": "iforest", "params": {"n_estimators": 50}})
    trained = train_series(changed, SERIES, daily, _window(daily), run_id="after-kind-change")
    version = registry_for(changed).version(changed.name, SERIES, trained.version)
    assert version.metadata["model"] == "iforest" and version.metadata["tuned_params"] == {}
    assert "ignoring tuned seasonal_mad params" in caplog.text


def _fails_when(monkeypatch: pytest.MonkeyPatch, cls: type, failing) -> None:
    """``cls.fit`` raises a numerical error (not a ModelError) when ``failing(detector, X)``."""
    fit = cls.fit

    def flaky(self, X, *args, **kwargs):
        if failing(self, X):
            raise np.linalg.LinAlgError("SVD did not converge")
        return fit(self, X, *args, **kwargs)

    monkeypatch.setattr(cls, "fit", flaky)


def test_a_trial_that_fails_is_recorded_and_the_search_goes_on(tmp_path, daily, monkeypatch):
    from pipelines.detectors.seasonal_mad import SeasonalMADDetector

    _fails_when(monkeypatch, SeasonalMADDetector, lambda detector, X: detector.level_window == 6)
    job = make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [6, 48]}, trials=20)
    result = tune_series(job, SERIES, daily)
    assert result["trials"] == 2 and result["params"] == {"level_window": 48} and result["promoted"]
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    failed, scored = record["trials"]
    assert failed["params"] == {"level_window": 6} and "objective" not in failed
    assert failed["skipped"] == "failed: LinAlgError: SVD did not converge"
    assert scored["params"] == {"level_window": 48} and "objective" in scored


def test_a_challenger_that_fails_on_an_earlier_stretch_keeps_the_champion(tmp_path, daily, monkeypatch):
    from pipelines.detectors.level_shift import LevelShiftDetector

    # As in the test above where level_shift wins every stretch; here it cannot fit the shorter heads.
    train_series(make_job(tmp_path, {"kind": "iforest", "params": {"n_estimators": 50}}), SERIES, daily, _window(daily), run_id="train")
    champion = registry_for(make_job(tmp_path, {"kind": "iforest"})).champion("tuned_job", SERIES).version
    _fails_when(monkeypatch, LevelShiftDetector, lambda detector, X: len(X) < 300)
    job = make_job(tmp_path, {"kind": "iforest"}, detectors=["level_shift"], trials=4)
    result = tune_series(job, SERIES, daily, _window(daily))
    assert not result["promoted"] and result["version"] is None
    assert result["reason"].endswith("on held-back stretch 2 of 3, anomalies planted afresh, challenger level_shift "
                                     "the challenger cannot fit here: SVD did not converge")
    assert registry_for(job).champion(job.name, SERIES).version == champion
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    assert [s["clearly_better"] for s in record["decision"]["stretches"]] == [True, False]


def test_a_winner_that_cannot_fit_the_whole_window_fails_naming_the_trial_and_keeps_its_record(tmp_path, daily, monkeypatch):
    from pipelines.detectors.seasonal_mad import SeasonalMADDetector

    # A bare LinAlgError named no job, series or trial, lost the trials, and (not a pipeline error)
    # stopped the tuning of every other series.
    job = make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [24]})
    _fails_when(monkeypatch, SeasonalMADDetector, lambda detector, X: len(X) == len(daily))
    with pytest.raises(ModelError) as raised:
        tune_series(job, SERIES, daily, _window(daily))
    assert str(raised.value) == (
        f"job tuned_job, series {SERIES}: the tuned challenger (trial 1: seasonal_mad {{'level_window': 24}}) cannot be fitted "
        "on the whole window (LinAlgError: SVD did not converge); nothing was promoted; leave these parameters out with "
        "tune.grid, or change tune.seed to search others"
    )
    registry = registry_for(job)
    assert registry.champion(job.name, SERIES) is None and registry.versions(job.name, SERIES) == []
    [record] = registry.tuning_history(job.name, SERIES)
    assert len(record["trials"]) == 1 and not record["decision"]["promoted"]
    assert record["decision"]["reason"].startswith("no champion yet; not promoted after all: job tuned_job")


@pytest.mark.parametrize(
    ("window", "unjudged", "remedy"),
    [
        (200, 1, "lower tune.holdout_fraction (0.25)"),  # 400 rows: trained on 504, the head of stretch 1 holds 378
        (160, 2, "set tune.stretches to 1 to compare on the later stretches only"),  # 320 rows: stretch 2's head holds 283
    ],
)
def test_a_champion_too_big_to_refit_on_a_stretch_s_head_is_not_replaced_unjudged(tmp_path, daily, window, unjudged, remedy):
    # Its refusal to fit on fewer rows than it serves with was taken for a broken champion: the
    # stretch counted as won, and any challenger replaced a healthy model without a comparison.
    served = make_job(tmp_path, {"kind": "iforest", "params": {"n_estimators": 50, "window": window}})
    champion = train_series(served, SERIES, daily, _window(daily), run_id="train").version
    pinned = {"season": ["1w"], "level_window": [4], "shift_window": [4], "drift": [3.4]}  # wins each stretch it is compared on
    job = make_job(tmp_path, {"kind": "iforest"}, detectors=["level_shift"], trials=4, grid=pinned)
    result = tune_series(job, SERIES, daily, _window(daily))
    assert not result["promoted"] and result["version"] is None
    assert registry_for(job).champion(job.name, SERIES).version == champion
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    stretches = record["decision"]["stretches"]
    assert [s["clearly_better"] for s in stretches] == [True] * (unjudged - 1) + [False]
    assert "champion" not in stretches[-1]
    assert stretches[-1]["champion_error"].startswith(f"IsolationForestDetector needs at least {2 * window}")
    assert stretches[-1]["verdict"].startswith(f"the champion cannot be refitted as it serves on the {[378, 283][unjudged - 1]} rows "
                                               f"before held-back stretch {unjudged} (IsolationForestDetector needs at least {2 * window}")
    assert stretches[-1]["verdict"].endswith(f"widen training_window, or {remedy}")
    assert f"on held-back stretch {unjudged} of 3" in result["reason"]


def test_a_champion_refitted_without_its_season_is_not_judged_as_that_weaker_model(tmp_path, daily, monkeypatch):
    from pipelines.detectors.selection import Comparison

    # A weekly season fits twice in the heads of stretch 1 (378 rows) but not of stretch 2 (283):
    # refitted there the champion fell back to no season and was compared as that other model.
    served = make_job(tmp_path, {"kind": "seasonal_mad", "params": {"season": "1w", "level_window": 24}})
    champion = train_series(served, SERIES, daily, _window(daily), run_id="train").version
    # Every comparison made is won: what is tested is which stretches are compared at all.
    monkeypatch.setattr("pipelines.tuning.compare", lambda challenger, reference, margin: Comparison(0.5, 0.001, margin))
    job = make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"season": ["1d"], "level_window": [24]}, trials=1)
    result = tune_series(job, SERIES, daily, _window(daily))
    assert not result["promoted"] and registry_for(job).champion(job.name, SERIES).version == champion
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    first, second = record["decision"]["stretches"]
    assert first["clearly_better"] and "champion" in first
    assert not second["clearly_better"] and "champion" not in second
    assert second["verdict"].startswith("the champion cannot be refitted as it serves on the 283 rows before held-back stretch 2 (")
    assert second["champion_error"].startswith("season '1w' spans 168 rows and a profile needs two seasons, but training had 283 rows")


def test_tuning_replaces_a_champion_that_cannot_be_loaded(tmp_path, daily):
    from pipelines import storage

    job = make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [24]})
    old = train_series(job, SERIES, daily, _window(daily), run_id="train")
    registry = registry_for(job)
    spoiled = storage.join(registry.root, job.name, SERIES, "versions", old.version, "arrays.npz")
    storage.atomic_write(spoiled, b"not a zip file")
    result = tune_series(job, SERIES, daily, _window(daily))
    assert result["promoted"] and result["champion_objective"] is None
    assert result["reason"].startswith(f"the champion cannot be loaded, so it is replaced: job tuned_job, series {SERIES}: "
                                       f"the serving model version {old.version} cannot be loaded (ModelError: the model "
                                       "artifact's arrays.npz is damaged (ValueError")
    assert registry.champion(job.name, SERIES).version == result["version"] != old.version
    [record] = registry.tuning_history(job.name, SERIES)
    assert record["decision"]["champion"]["version"] == old.version


def test_tuning_replaces_a_damaged_champion_pointer(tmp_path, daily):
    """The pointer's error said to retrain, and tune (and train) failed on the same pointer."""
    from pipelines import storage
    from pipelines.registry import UNREADABLE

    job = make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [24]})
    train_series(job, SERIES, daily, _window(daily), run_id="train")
    registry = registry_for(job)
    storage.atomic_write(storage.join(registry.root, job.name, SERIES, "champion.json"), b'{"version": ')
    result = tune_series(job, SERIES, daily, _window(daily))
    assert result["promoted"] and result["reason"].startswith("the champion cannot be loaded, so it is replaced: ")
    assert f"it is the champion pointer of job tuned_job, series {SERIES}" in result["reason"]
    assert registry.champion(job.name, SERIES).version == result["version"]
    [record] = registry.tuning_history(job.name, SERIES)
    assert record["decision"]["champion"]["version"] == UNREADABLE


def test_a_tune_on_a_worker_without_the_champion_s_package_does_not_replace_it_unjudged(tmp_path, daily, monkeypatch):
    """The lstm champion could not be refitted on a worker without torch: "the champion cannot fit
    or score here" counted as the challenger clearly better, and it was promoted, compared with nothing."""
    import importlib.util

    from pipelines.detectors import lstm
    from pipelines.errors import MissingDependencyError

    job = make_job(tmp_path, {"kind": "lstm", "params": {"max_epochs": 2}}, detectors=["seasonal_mad"], grid={"level_window": [24]})
    first = train_series(job, SERIES, daily, _window(daily), run_id="with-torch")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "torch" else find_spec(name, *args))

    def no_torch():
        raise MissingDependencyError("torch", "lstm", "The lstm detector")

    monkeypatch.setattr(lstm, "_torch", no_torch)
    with pytest.raises(MissingDependencyError, match=rf"job tuned_job, series {SERIES}: the serving model version {first.version} \(lstm\)"):
        tune_series(job, SERIES, daily, _window(daily))
    registry = registry_for(job)
    assert registry.champion(job.name, SERIES).version == first.version and registry.tuned(job.name, SERIES) is None


def test_a_challenger_is_not_promoted_over_a_champion_promoted_while_it_was_tuned(tmp_path, daily, monkeypatch):
    from pipelines import tuning

    job = make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [24]})
    register = tuning.register_model
    trained = []

    def a_train_run_promotes_first(*args, **kwargs):
        monkeypatch.setattr(tuning, "register_model", register)
        trained.append(train_series(job, SERIES, daily, _window(daily), run_id="train"))
        return register(*args, **kwargs)

    monkeypatch.setattr(tuning, "register_model", a_train_run_promotes_first)
    result = tune_series(job, SERIES, daily, _window(daily))
    [train] = trained
    assert train.promoted and not result["promoted"]
    assert result["reason"] == (
        f"no champion yet; not promoted after all: another run promoted version {train.version} while this model was "
        f"compared with no champion, and it was never compared with {train.version}. Run train (or tune) again to compare with it"
    )
    registry = registry_for(job)
    assert registry.champion(job.name, SERIES).version == train.version
    assert registry.tuned(job.name, SERIES) is None  # later trains do not build the unproven parameters
    [record] = registry.tuning_history(job.name, SERIES)
    assert not record["decision"]["promoted"] and record["decision"]["reason"] == result["reason"]


def test_a_tuned_version_not_promoted_after_all_says_so_in_its_tuning_section(tmp_path, daily, monkeypatch):
    from pipelines import tuning

    job = make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [24]})
    register = tuning.register_model

    def a_train_run_promotes_first(*args, **kwargs):
        monkeypatch.setattr(tuning, "register_model", register)
        train_series(job, SERIES, daily, _window(daily), run_id="train")
        return register(*args, **kwargs)

    monkeypatch.setattr(tuning, "register_model", a_train_run_promotes_first)
    result = tune_series(job, SERIES, daily, _window(daily))
    assert not result["promoted"] and "not promoted after all" in result["reason"]
    stored = registry_for(job).version(job.name, SERIES, result["version"]).metadata
    assert stored["decision"] == {"promoted": False, "reason": f"tuning: {result['reason']}"}
    # The copy of the tuning decision in the version agrees with the version's decision and the tuning record.
    assert stored["tuning"]["decision"]["promoted"] is False and stored["tuning"]["decision"]["reason"] == result["reason"]
    [record] = registry_for(job).tuning_history(job.name, SERIES)
    assert {k: v for k, v in stored["tuning"]["decision"].items() if k != "version"} == {
        k: v for k, v in record["decision"].items() if k != "version"
    }


def test_a_tuned_champion_of_another_kind_survives_the_next_scheduled_train(tmp_path, daily):
    import json

    from pipelines import storage
    from pipelines.series import series_slug

    job = make_job(tmp_path, {"kind": "iforest", "params": {"n_estimators": 50}}, detectors=["iforest", "level_shift"],
                   grid={"level_window": [6]}, trials=3)
    tuned = tune_series(job, SERIES, daily, _window(daily))
    assert tuned["promoted"] and tuned["kind"] == "level_shift"
    registry = registry_for(job)
    champion = registry.champion(job.name, SERIES)
    # Tuning records the job's model in force, not the kind it tuned.
    assert champion.metadata["configured_model"] == {"kind": "iforest", "params": {"n_estimators": 50}}
    assert registry.tuned(job.name, SERIES)["report"]["configured_model"] == champion.metadata["configured_model"]

    trained = train_series(job, SERIES, daily, _window(daily), run_id="scheduled")
    assert trained.reason.startswith("holdout error ") and "the job's" not in trained.reason

    # A tuned champion registered before the record was kept: still the job's own model.
    meta = {k: v for k, v in champion.metadata.items() if k != "configured_model"}
    storage.atomic_write(storage.join(registry.root, job.name, series_slug(SERIES), "versions", champion.version, "metadata.json"),
                         json.dumps(meta).encode())
    registry.promote(job.name, SERIES, champion.version)
    again = train_series(job, SERIES, daily, _window(daily), run_id="scheduled-again")
    assert again.reason.startswith("holdout error ") and "the job's" not in again.reason


def test_a_train_between_a_tune_promotion_and_its_tuned_params_builds_the_serving_tuned_model(tmp_path, daily, caplog):
    """A tune run promotes, then writes tuned.json: a train starting in between built the parameters
    the tuned model had just beaten (here level_window 6 beside a serving 12), and could promote them."""
    from pipelines.training import register_model

    job = make_job(tmp_path, {"kind": "iforest", "params": {"n_estimators": 50}}, detectors=["iforest", "level_shift"],
                   grid={"level_window": [6]}, trials=3)
    first = tune_series(job, SERIES, daily, _window(daily), run_id="tune-1")
    assert first["promoted"] and first["params"] == {"level_window": 6}
    registry = registry_for(job)
    # The state a second tune run leaves between its promotion and its write of tuned.json.
    params = {"level_window": 12}
    serving = register_model(
        job, SERIES, detector_for(job, params, "level_shift").fit(daily), daily, _window(daily), run_id="tune-2",
        kind="level_shift", tuned=params, metrics={}, promoted=True, reason="tuning: clearly better",
        compared_with=first["version"], extra=lambda decision: {"tuning": {"decision": decision}},
    )
    assert registry.champion(job.name, SERIES).version == serving.version
    assert registry.tuned_params(job.name, SERIES) == {"level_window": 6}

    with caplog.at_level("WARNING", logger="pipelines.training"):
        trained = train_series(job, SERIES, daily, _window(daily), run_id="train-in-between")
    built = registry.version(job.name, SERIES, trained.version).metadata
    assert built["model"] == "level_shift" and built["tuned_params"] == params
    assert f"tuned.json holds the parameters of version {first['version']}, but the tuned version {serving.version} serves" in caplog.text

    registry.promote(job.name, SERIES, first["version"])  # tuned.json names the serving version: it stands
    third = train_series(job, SERIES, daily, _window(daily), run_id="train-third")
    assert registry.version(job.name, SERIES, third.version).metadata["tuned_params"] == {"level_window": 6}


def test_a_train_between_the_first_tune_s_promotion_and_its_tuned_json_builds_the_tuned_model(tmp_path, daily, monkeypatch, caplog):
    """With no tuned.json yet (the series' first tuning), a train between the tune run's promotion
    and its write built the job's untuned model beside the tuned one, as if tuned.json were deleted."""
    from pipelines.registry import ModelRegistry

    job = make_job(tmp_path, {"kind": "iforest", "params": {"n_estimators": 50}}, detectors=["iforest", "level_shift"],
                   grid={"level_window": [6]}, trials=3)
    write = ModelRegistry.write_tuned_params
    trained = []

    def a_train_runs_first(self, *args, **kwargs):
        assert self.tuned(job.name, SERIES) is None  # the first tuning: nothing written yet
        trained.append(train_series(job, SERIES, daily, _window(daily), run_id="train-in-between"))
        return write(self, *args, **kwargs)

    monkeypatch.setattr(ModelRegistry, "write_tuned_params", a_train_runs_first)
    with caplog.at_level("WARNING", logger="pipelines.training"):
        tuned = tune_series(job, SERIES, daily, _window(daily), run_id="tune-1")
    assert tuned["promoted"] and tuned["kind"] == "level_shift"
    [train] = trained
    built = registry_for(job).version(job.name, SERIES, train.version).metadata
    assert built["model"] == "level_shift" and built["tuned_params"] == {"level_window": 6}
    assert f"tuned.json is not written yet, but the tuned version {tuned['version']} serves" in caplog.text


def test_a_deleted_tuned_json_is_said_and_train_builds_the_job_s_model(tmp_path, daily, caplog):
    # Deleting tuned.json is how people go back to the job's configured model: told apart from a
    # tune run that has not written it yet, it is honoured, and said.
    job = make_job(tmp_path, {"kind": "iforest", "params": {"n_estimators": 50}}, detectors=["iforest", "level_shift"],
                   grid={"level_window": [6]}, trials=3)
    tuned = tune_series(job, SERIES, daily, _window(daily), run_id="tune-1")
    assert tuned["promoted"] and tuned["kind"] == "level_shift"
    registry = registry_for(job)
    (Path(registry.root) / job.name / SERIES / "tuned.json").unlink()
    with caplog.at_level("WARNING", logger="pipelines.training"):
        trained = train_series(job, SERIES, daily, _window(daily), run_id="after-delete")
    built = registry.version(job.name, SERIES, trained.version).metadata
    assert built["model"] == "iforest" and built["tuned_params"] == {}
    assert (
        f"tuned.json was deleted after tuning stored the parameters of the serving version {tuned['version']}: training builds "
        "the job's configured model (iforest)"
    ) in caplog.text


def test_train_ignores_tuned_params_once_the_job_file_changes_its_model(tmp_path, daily, caplog):
    tuned = tune_series(make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [6]}), SERIES, daily)
    assert tuned["promoted"] and tuned["params"] == {"level_window": 6}
    # The user sets the parameter tuning chose: the job file wins over the older tuning.
    changed = make_job(tmp_path, {"kind": "seasonal_mad", "params": {"level_window": 48}})
    trained = train_series(changed, SERIES, daily, _window(daily), run_id="after-params-change")
    version = registry_for(changed).version(changed.name, SERIES, trained.version)
    assert version.metadata["params"]["level_window"] == 48 and version.metadata["tuned_params"] == {}
    assert "ignoring tuned seasonal_mad params: the job's model changed since that tuning" in caplog.text
    assert trained.promoted and trained.reason.startswith("promoted: the job's model changed (seasonal_mad params: level_window ")


def test_train_ignores_tuned_params_once_the_job_file_changes_its_frequency(tmp_path, daily, caplog):
    from datetime import timedelta

    tuned = tune_series(make_job(tmp_path, {"kind": "seasonal_mad"}, grid={"level_window": [6]}), SERIES, daily)
    assert tuned["promoted"] and tuned["params"] == {"level_window": 6}
    # 6 rows were 6 hours; at 30 minutes they are 3: what tuning chose is not what it means now.
    faster = make_job(tmp_path, {"kind": "seasonal_mad"}).model_copy(update={"frequency": timedelta(minutes=30)})
    data = daily.set_axis(pd.date_range("2024-01-01", periods=len(daily), freq="30min", tz="UTC"))
    trained = train_series(faster, SERIES, data, _window(data), run_id="after-frequency-change")
    version = registry_for(faster).version(faster.name, SERIES, trained.version)
    assert version.metadata["params"]["level_window"] == 24 and version.metadata["tuned_params"] == {}
    assert "ignoring tuned seasonal_mad params: the job's frequency changed (1h → 30min) since that tuning" in caplog.text
    assert trained.promoted and trained.reason.startswith("promoted: the job's frequency changed (1h → 30min)")


def test_a_window_of_mostly_missing_rows_is_too_short_to_tune(tmp_path, daily):
    # A new site that reported a few times: resampling leaves the hours between missing. Tuned,
    # every trial scored F1 0 on a held-back tail of missing rows and the first one was promoted.
    job = make_job(tmp_path, {"kind": "seasonal_mad", "params": {"season": None}}, trials=4)
    sparse = daily.iloc[:200].copy()
    sparse.iloc[3:-3] = np.nan
    with pytest.raises(
        ModelError,
        match=r"job tuned_job, series site=a: 200 rows are too few to tune \(at least 10 in the fitted head and 10 in the "
        r"held-back tail, now 3 and 3 with a value, held back from 2024-01-07T06:00:00\+00:00\); widen training_window",
    ):
        tune_series(job, SERIES, sparse, _window(sparse))
    registry = registry_for(job)
    assert registry.champion(job.name, SERIES) is None and registry.versions(job.name, SERIES) == []


def test_tuning_replaces_a_champion_of_another_frequency(tmp_path, daily):
    from datetime import timedelta

    first = tune_series(make_job(tmp_path, {"kind": "seasonal_mad"}, trials=10), SERIES, daily)
    assert first["promoted"]
    # Scoring refuses the hourly champion once the job is at 30 minutes: kept because a weak
    # challenger was not clearly better than it, it left the series with nothing that can score.
    worse = make_job(tmp_path, {"kind": "seasonal_mad"}, trials=10, grid={"season": [None], "level_window": [3]})
    faster = worse.model_copy(update={"frequency": timedelta(minutes=30)})
    data = daily.set_axis(pd.date_range("2024-01-01", periods=len(daily), freq="30min", tz="UTC"))
    second = tune_series(faster, SERIES, data, _window(data))
    assert second["promoted"] and second["reason"].startswith(
        f"the job's frequency changed (1h → 30min) since champion {first['version']} (seasonal_mad) was trained"
    ), second["reason"]
    champion = registry_for(faster).champion(faster.name, SERIES)
    assert champion.version == second["version"] != first["version"] and champion.metadata["frequency"] == "30min"
