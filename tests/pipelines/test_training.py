"""Training and promotion (pipelines/training.py): a worse model never serves, warm starts from
the champion, and the monitoring reference stored with every version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipelines.config import JobConfig, parse_job
from pipelines.detectors import load_detector
from pipelines.errors import ModelError
from pipelines.training import fingerprint, label_verdicts, registry_for, train_series
from pipelines.workspace import Window, to_utc

DAYS = 14
WINDOW = Window(to_utc("2024-01-01T00:00:00Z"), to_utc("2024-01-15T00:00:00Z"))


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Training reads the job's labels (sqlite:///var/labels.db by default): never the working copy's.
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))


def make_job(tmp_path: Path, kind: str = "seasonal_mad", **params) -> JobConfig:
    return parse_job(
        {
            "name": "trained",
            "source": {"kind": "python", "callable": "tests.pipelines.test_training:unused"},
            "timestamp": "timestamp",
            "frequency": "1h",
            "features": ["a", "b"],
            "model": {"kind": kind, "params": params},
            "training_window": f"{DAYS}d",
            "outputs": {"parquet": str(tmp_path / "outputs")},
            "registry": str(tmp_path / "models"),
        }
    )


def cycle(seed: int, phase_hours: int = 0) -> pd.DataFrame:
    index = pd.date_range(WINDOW.start, periods=24 * DAYS, freq="h")
    rng = np.random.default_rng(seed)
    wave = np.sin(2 * np.pi * (index.hour.to_numpy() - phase_hours) / 24)
    return pd.DataFrame(
        {"a": 50 + 10 * wave + rng.normal(size=len(index)), "b": 20 + 3 * wave + rng.normal(size=len(index))},
        index=index,
    )


def test_a_worse_challenger_is_registered_but_never_serves(tmp_path: Path) -> None:
    job = make_job(tmp_path, season="1d")
    first = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    assert first.promoted and first.reason == "no champion yet"

    # The head the challenger is fitted on is garbage; the held-back tail is like the champion's data.
    worse = cycle(1)
    head = int(len(worse) * 0.8)
    worse.iloc[:head] = np.random.default_rng(2).normal(500, 200, size=(head, 2))
    second = train_series(job, "all", worse, WINDOW, run_id="second")

    registry = registry_for(job)
    assert not second.promoted
    assert second.metrics["holdout_error"] > second.metrics["champion_holdout_error"]
    assert "kept the champion (the new model is worse)" in second.reason
    assert registry.champion(job.name, "all").version == first.version
    registered = registry.version(job.name, "all", second.version).metadata
    assert registered["decision"] == {"promoted": False, "reason": second.reason}
    assert [v.version for v in registry.versions(job.name, "all")] == [first.version, second.version]


def test_an_infinite_value_in_the_held_back_rows_does_not_let_a_worse_challenger_serve(tmp_path: Path) -> None:
    # One overflowed reading made both errors inf, and inf <= inf promoted the garbage model.
    job = make_job(tmp_path, season="1d")
    first = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    worse = _worse_head(1)
    worse.iloc[-3, 0] = np.inf
    second = train_series(job, "all", worse, WINDOW, run_id="second")
    assert np.isfinite(second.metrics["holdout_error"]) and np.isfinite(second.metrics["champion_holdout_error"])
    assert not second.promoted and "kept the champion (the new model is worse)" in second.reason
    assert registry_for(job).champion(job.name, "all").version == first.version


def test_a_better_challenger_replaces_the_champion(tmp_path: Path) -> None:
    job = make_job(tmp_path, season="1d")
    old = train_series(job, "all", cycle(0, phase_hours=12), WINDOW, run_id="old")  # the cycle moved since
    new = train_series(job, "all", cycle(1), WINDOW, run_id="new")
    assert new.promoted and "promoted (not worse)" in new.reason
    assert new.metrics["holdout_error"] < new.metrics["champion_holdout_error"]
    assert registry_for(job).champion(job.name, "all").version == new.version != old.version


def test_every_version_carries_its_monitoring_reference(tmp_path: Path) -> None:
    job = make_job(tmp_path, season="1d")
    result = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    metadata = registry_for(job).version(job.name, "all", result.version).metadata
    profile = metadata["monitoring"]
    assert set(profile["features"]) == {"a", "b"} and profile["rows"] == 24 * DAYS
    reference = profile["features"]["a"]
    assert len(reference["edges"]) == 9 and sum(reference["shares"]) == pytest.approx(1.0)
    assert reference["quantiles"][0] == pytest.approx(cycle(0)["a"].min())
    assert profile["calibrated_anomaly_rate"] == max(result.metrics["train_anomaly_rate"], 1 / (24 * DAYS))
    assert metadata["warm_started"] is False  # seasonal_mad has no warm start: always a cold fit


def test_iforest_warm_starts_from_a_champion_with_the_same_params(tmp_path: Path) -> None:
    job = make_job(tmp_path, "iforest", n_estimators=20, window=12)
    first = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    second = train_series(job, "all", cycle(1), WINDOW, run_id="second")
    registry = registry_for(job)
    assert registry.version(job.name, "all", first.version).metadata["warm_started"] is False
    warm = registry.version(job.name, "all", second.version).metadata
    assert warm["warm_started"] is True
    assert warm["detector"]["n_estimators"] == 30  # the champion's 20 trees and 10 new ones
    stored = load_detector("iforest", registry.load_files(job.name, "all", second.version))
    # The warm start kept every tree of the version that was serving when it trained.
    served = load_detector("iforest", registry.load_files(job.name, "all", first.version)).model_[-1].estimators_
    for old, kept in zip(served, stored.model_[-1].estimators_[:20], strict=True):
        np.testing.assert_array_equal(old.tree_.threshold, kept.tree_.threshold)
    assert stored.warm_started_ and len(stored.model_[-1].estimators_) == 30

    # Other parameters: the champion's forest does not fit them, so the fit is cold.
    other = make_job(tmp_path, "iforest", n_estimators=20, window=6)
    third = train_series(other, "all", cycle(2), WINDOW, run_id="third")
    cold = registry.version(job.name, "all", third.version).metadata
    assert cold["warm_started"] is False and cold["detector"]["n_estimators"] == 20


def test_a_failed_training_registers_nothing(tmp_path: Path) -> None:
    job = make_job(tmp_path, season="1d")
    first = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    with pytest.raises(ModelError, match=r"job trained, series all: only 5 rows in training window"):
        train_series(job, "all", cycle(1).iloc[:5], WINDOW, run_id="short")
    registry = registry_for(job)
    assert [v.version for v in registry.versions(job.name, "all")] == [first.version]
    assert registry.champion(job.name, "all").version == first.version


def test_a_window_of_mostly_missing_rows_is_too_short_to_train(tmp_path: Path) -> None:
    # A new region that reported twice a day apart: resampling gives 25 hourly rows, 23 missing.
    job = make_job(tmp_path, season="1d")
    sparse = cycle(0).iloc[:25].copy()
    sparse.iloc[1:-1] = np.nan
    with pytest.raises(
        ModelError,
        match=r"job trained, series new: only 2 rows with a value \(of 25 on the job's frequency grid\) in "
        r"training window \[2024-01-01T00:00:00\+00:00, .*\); at least 10 are needed. Widen training_window",
    ):
        train_series(job, "new", sparse, WINDOW, run_id="sparse")
    registry = registry_for(job)
    assert registry.versions(job.name, "new") == [] and registry.champion(job.name, "new") is None


def test_a_training_whose_held_back_rows_hold_no_value_keeps_the_champion_and_says_why(tmp_path: Path) -> None:
    # The source sent its last rows without values: neither model can be judged there, and the
    # reason said the new model was worse, sending people to look at it.
    job = make_job(tmp_path, season="1d")
    first = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    silent = cycle(1)
    silent.iloc[int(len(silent) * 0.8) :] = np.nan
    second = train_series(job, "all", silent, WINDOW, run_id="second")
    assert not second.promoted and second.reason.endswith(
        "kept the champion (the errors cannot be compared: no forecast of a compared row with a value)"
    ), second.reason
    assert registry_for(job).champion(job.name, "all").version == first.version


def test_a_detectors_own_error_names_the_job_the_series_and_the_window(tmp_path: Path) -> None:
    job = make_job(tmp_path, season="1d")
    with pytest.raises(ModelError, match=r"^job trained, series all, training window .*: SeasonalMADDetector needs at least"):
        train_series(job, "all", cycle(1).iloc[:12], WINDOW, run_id="twelve-rows")
    assert registry_for(job).versions(job.name, "all") == []


def test_champion_models_say_what_auto_chose_and_why(tmp_path: Path) -> None:
    from pipelines.training import champion_models

    job = make_job(tmp_path, "auto", candidates=["seasonal_mad", "level_shift"], prefer=None)
    assert champion_models(job) == []  # nothing trained yet
    trained = train_series(job, "all", cycle(0), WINDOW, run_id="first")

    [champion] = champion_models(job)
    version = registry_for(job).champion(job.name, "all")
    assert champion["series"] == "all" and champion["version"] == trained.version == version.version
    assert champion["model"] == "auto" and champion["chosen"] in ("seasonal_mad", "level_shift")
    assert champion["chosen"] == version.metadata["detector"]["chosen"]
    assert champion["choice_reason"] == version.metadata["detector"]["reason"] and champion["chosen"] in champion["choice_reason"]
    assert champion["decision"] == {"promoted": True, "reason": "no champion yet"}
    assert champion["rows"] == 24 * DAYS and champion["metadata"] == version.metadata

    with pytest.raises(ModelError, match=r"job trained has no model for series 'b=1'; series with models: all"):
        champion_models(job, "b=1")


def test_champion_models_of_a_single_detector_have_no_choice(tmp_path: Path) -> None:
    from pipelines.training import champion_models

    job = make_job(tmp_path, season="1d")
    train_series(job, "all", cycle(0), WINDOW, run_id="first")
    [champion] = champion_models(job, "all")
    assert champion["model"] == "seasonal_mad" and champion["chosen"] is None and champion["choice_reason"] is None


@pytest.mark.parametrize("spoiled", ["champion.json", "metadata.json"])
def test_listing_the_champion_models_leaves_out_a_damaged_series_only(tmp_path: Path, caplog, spoiled) -> None:
    """A damaged champion pointer or champion metadata stopped ``GET .../model`` and ``models`` for every series."""
    from pipelines import storage
    from pipelines.training import champion_models

    job = make_job(tmp_path, season="1d")
    damaged = train_series(job, "a=1", cycle(0), WINDOW, run_id="first")
    train_series(job, "b=2", cycle(1), WINDOW, run_id="first")
    folder = storage.join(registry_for(job).root, job.name, "a=1")
    path = storage.join(folder, "champion.json") if spoiled == "champion.json" else storage.join(folder, "versions", damaged.version, spoiled)
    storage.atomic_write(path, b'{"version": ')  # cut short
    train_series(job, "c=3", cycle(2), WINDOW, run_id="first")

    with caplog.at_level("WARNING", logger="pipelines.training"):
        assert [champion["series"] for champion in champion_models(job)] == ["b=2", "c=3"]
    assert "series a=1: left out of the champion models" in caplog.text
    with pytest.raises(ModelError, match="a=1"):  # asked for by name: its error, not an empty answer
        champion_models(job, "a=1")


def _older_format(files: dict[str, bytes]) -> tuple[str, bytes]:
    import json

    meta = json.loads(files["detector.json"])
    return "detector.json", json.dumps({**meta, "format": 0}).encode()


@pytest.mark.parametrize(
    "spoil, cause",
    [
        (_older_format, r"ModelError: the model artifact holds a 'seasonal_mad' detector in format 0"),
        (lambda files: ("arrays.npz", files["arrays.npz"][:40]), r"ModelError: the model artifact's arrays.npz is damaged \(BadZipFile"),  # cut short
    ],
    ids=["older-format", "truncated"],
)
def test_a_champion_that_cannot_be_loaded_is_replaced_by_the_next_training(tmp_path: Path, spoil, cause) -> None:
    from pipelines import storage
    from pipelines.training import load_champion

    job = make_job(tmp_path, season="1d")
    first = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    registry = registry_for(job)
    name, content = spoil(registry.load_files(job.name, "all", first.version))
    storage.atomic_write(storage.join(registry.root, job.name, "all", "versions", first.version, name), content)
    with pytest.raises(ModelError, match=rf"job trained, series all: the serving model version {first.version} cannot be "
                                         rf"loaded \({cause}.*run the job's train"):
        load_champion(job, "all")

    # Scoring fails and says to retrain: the retrain must be able to replace it.
    second = train_series(job, "all", cycle(1), WINDOW, run_id="second")
    assert second.promoted and second.reason.startswith("the champion cannot be loaded, so it is replaced: ")
    assert second.metrics["champion_holdout_error"] == float("inf")
    assert registry.champion(job.name, "all").version == second.version
    assert load_champion(job, "all")[0].version == second.version


@pytest.mark.parametrize("content", [b"", b'{"version": ', b"[]", b'{"promoted_at": "2026-01-01"}', b'{"version": "gone"}'])
def test_a_damaged_champion_pointer_is_replaced_by_the_next_training(tmp_path: Path, content: bytes) -> None:
    """Its error said to run the job's train, and the train failed on the same pointer: only a hand repair helped."""
    from pipelines import storage
    from pipelines.scoring import check_serving

    job = make_job(tmp_path, season="1d")
    train_series(job, "all", cycle(0), WINDOW, run_id="first")
    registry = registry_for(job)
    pointer = storage.join(registry.root, job.name, "all", "champion.json")
    storage.atomic_write(pointer, content)
    with pytest.raises(ModelError, match=rf"{pointer} .*it is the champion pointer of job trained, series all: run the job's train "
                       r"\(`anomaly-pipelines train trained`" if content != b'{"version": "gone"}'
                       else rf"job trained, series all: the champion pointer {pointer}"):
        registry.champion(job.name, "all")
    with pytest.raises(ModelError, match="job trained"):
        check_serving(job)

    second = train_series(job, "all", cycle(1), WINDOW, run_id="second")
    assert second.promoted and second.reason.startswith("the champion cannot be loaded, so it is replaced: ")
    assert registry.champion(job.name, "all").version == second.version
    check_serving(job)


def test_a_worker_without_the_champion_s_package_does_not_replace_it_unjudged(tmp_path: Path, monkeypatch) -> None:
    """An auto champion that chose lstm, trained again on a worker without torch: its "cannot score"
    was taken for a broken model (error inf), and the auto model without lstm replaced it, compared with nothing."""
    import importlib.util

    from pipelines.detectors import lstm
    from pipelines.errors import MissingDependencyError
    from pipelines.training import load_champion

    job = make_job(tmp_path, kind="auto", candidates=["lstm", "seasonal_mad"], prefer="lstm")
    first = train_series(job, "all", cycle(0), WINDOW, run_id="with-torch")
    assert load_champion(job, "all")[1].summary()["chosen"] == "lstm"

    # This worker has no torch: what auto's candidates and the lstm detector look for.
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "torch" else find_spec(name, *args))

    def no_torch():
        raise MissingDependencyError("torch", "lstm", "The lstm detector")

    monkeypatch.setattr(lstm, "_torch", no_torch)
    message = (rf"job trained, series all: the serving model version {first.version} \(auto\), which a new model is compared "
               r"with before it may replace it, needs the optional package 'torch': pip install .*\[lstm\]")
    with pytest.raises(MissingDependencyError, match=message):
        train_series(job, "all", cycle(1), WINDOW, run_id="without-torch")
    registry = registry_for(job)
    assert registry.champion(job.name, "all").version == first.version and len(registry.versions(job.name, "all")) == 1


def test_a_champion_that_needs_a_package_to_load_is_not_taken_for_a_broken_one(tmp_path: Path, monkeypatch) -> None:
    """A prophet champion on a worker without prophet "could not be loaded": the next train replaced it unjudged."""
    from pipelines.detectors import prophet
    from pipelines.errors import MissingDependencyError
    from pipelines.training import load_champion

    job = make_job(tmp_path, kind="prophet")
    first = train_series(job, "all", cycle(0), WINDOW, run_id="with-prophet")

    def no_prophet():
        raise MissingDependencyError("prophet", "prophet", "The prophet detector")

    monkeypatch.setattr(prophet, "_prophet", no_prophet)
    message = rf"job trained, series all: the serving model version {first.version} \(prophet\) needs the optional package 'prophet'"
    with pytest.raises(MissingDependencyError, match=message):
        load_champion(job, "all")
    with pytest.raises(MissingDependencyError, match=message):
        train_series(job, "all", cycle(1), WINDOW, run_id="without-prophet")
    assert registry_for(job).champion(job.name, "all").version == first.version


def test_a_model_compared_with_a_champion_replaced_meanwhile_is_not_promoted(tmp_path: Path, monkeypatch) -> None:
    from pipelines import training

    job = make_job(tmp_path, season="1d")
    old = train_series(job, "all", cycle(0, phase_hours=8), WINDOW, run_id="old")
    register = training.register_model
    others = []

    def another_run_promotes_first(*args, **kwargs):
        # Another run (a tune, a CLI train, a retry) promotes its model while this one was fitting.
        monkeypatch.setattr(training, "register_model", register)
        others.append(train_series(job, "all", cycle(3), WINDOW, run_id="other"))
        return register(*args, **kwargs)

    monkeypatch.setattr(training, "register_model", another_run_promotes_first)
    late = train_series(job, "all", cycle(1), WINDOW, run_id="late")
    [other] = others
    assert other.promoted and f"vs champion {old.version}" in other.reason
    # The late model beat the old champion, but was never compared with the one now serving.
    assert f"vs champion {old.version}" in late.reason and late.metrics["holdout_error"] < late.metrics["champion_holdout_error"]
    assert not late.promoted
    assert f"not promoted after all: another run promoted version {other.version}" in late.reason
    registry = registry_for(job)
    assert registry.champion(job.name, "all").version == other.version
    assert registry.version(job.name, "all", late.version).metadata["decision"] == {"promoted": False, "reason": late.reason}


def registry_at(job: JobConfig, where: str, request: pytest.FixtureRequest) -> JobConfig:
    """``job`` with its registry on local disk as it is, or (``where`` "s3") in a moto bucket."""
    if where != "s3":
        return job
    bucket, options = request.getfixturevalue("s3_bucket")
    return job.model_copy(update={"registry": f"s3://{bucket}/models", "outputs": job.outputs.model_copy(update={"storage_options": options})})


def job_stored_at(tmp_path: Path, where: str, request: pytest.FixtureRequest) -> JobConfig:
    """A daily-season job whose registry is on local disk or (``where`` "s3") in a moto bucket."""
    return registry_at(make_job(tmp_path, season="1d"), where, request)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_of_two_promotions_racing_from_the_same_champion_exactly_one_wins(
    tmp_path: Path, where: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from pipelines import storage, training

    job = job_stored_at(tmp_path, where, request)
    data = cycle(0)
    racers = {"racer-0", "racer-1"}
    both_read = threading.Barrier(len(racers), timeout=30)
    waited: set[str] = set()
    read = storage.read_bytes

    def read_then_wait_for_the_other(url: str, storage_options: dict | None = None) -> bytes:
        # Each racer's first read of the champion pointer waits until the other has read it too:
        # both compared with the same champion (none), and neither has written yet.
        try:
            return read(url, storage_options)
        finally:
            me = threading.current_thread().name
            if url.endswith("/champion.json") and me in racers and me not in waited:
                waited.add(me)
                both_read.wait()

    monkeypatch.setattr(storage, "read_bytes", read_then_wait_for_the_other)
    results: dict[str, object] = {}

    def promote(name: str) -> None:
        try:
            results[name] = training.register_model(
                job, "all", training.detector_for(job).fit(data), data, WINDOW, run_id=name, kind=job.model.kind, tuned={},
                metrics={"holdout_error": 0.0}, promoted=True, reason="no champion yet", compared_with=None,
            )
        except BaseException as exc:  # the assertion below shows it
            results[name] = exc

    threads = [threading.Thread(target=promote, args=(name,), name=name) for name in sorted(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    errors = {name: result for name, result in results.items() if isinstance(result, BaseException)}
    assert not errors and len(results) == 2 and waited == racers

    winners = [v for v in results.values() if v.metadata["decision"]["promoted"]]
    losers = [v for v in results.values() if not v.metadata["decision"]["promoted"]]
    assert len(winners) == 1 and len(losers) == 1, [v.metadata["decision"] for v in results.values()]
    [winner], [loser] = winners, losers
    assert loser.metadata["decision"]["reason"] == (
        f"no champion yet; not promoted after all: another run promoted version {winner.version} while this model was "
        f"compared with no champion, and it was never compared with {winner.version}. Run train (or tune) again to compare with it"
    )
    registry = registry_for(job)
    assert registry.champion(job.name, "all").version == winner.version
    # Both are registered, and what is stored says what happened to each.
    assert sorted(v.version for v in registry.versions(job.name, "all")) == sorted([winner.version, loser.version])
    assert registry.version(job.name, "all", loser.version).metadata["decision"] == loser.metadata["decision"]
    assert registry.version(job.name, "all", winner.version).metadata["decision"] == {"promoted": True, "reason": "no champion yet"}


def _worse_head(seed: int) -> pd.DataFrame:
    """Like :func:`cycle`, with a garbage head: a challenger fitted on it forecasts worse than the champion."""
    worse = cycle(seed)
    head = int(len(worse) * 0.8)
    worse.iloc[:head] = np.random.default_rng(seed + 1).normal(500, 200, size=(head, 2))
    return worse


@pytest.mark.parametrize(
    "kind, params, threshold, said",
    [
        ("iforest", {"n_estimators": 20}, None, "model changed (seasonal_mad → iforest)"),
        ("seasonal_mad", {"season": "1d", "level_window": 48}, None, "model changed (seasonal_mad params: level_window 24 → 48)"),
        ("seasonal_mad", {"season": "1d"}, 0.02, "threshold changed (value 0.005 → 0.02)"),
    ],
    ids=["kind", "params", "threshold"],
)
def test_a_model_changed_in_the_job_file_serves_after_the_next_training(tmp_path: Path, kind, params, threshold, said) -> None:
    job = make_job(tmp_path, season="1d")
    first = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    changed = make_job(tmp_path, kind, **params)
    if threshold is not None:
        changed = changed.model_copy(update={"threshold": changed.threshold.model_copy(update={"value": threshold})})

    # Worse by forecast error, but the job file asks for it: it serves, and the reason says why.
    second = train_series(changed, "all", _worse_head(1), WINDOW, run_id="second")
    assert second.metrics["holdout_error"] > second.metrics["champion_holdout_error"]
    assert second.promoted and second.reason.startswith(
        f"promoted: the job's {said}, so the new model serves without a comparison (holdout error "
    ), second.reason
    registry = registry_for(job)
    assert registry.champion(job.name, "all").version == second.version != first.version
    assert registry.version(job.name, "all", second.version).metadata["configured_model"] == {"kind": kind, "params": params}

    # The job unchanged since: compared again, a worse model never replaces it (iforest's rolling
    # median forecasts alike whatever the forest: a tie, which promotes).
    third = train_series(changed, "all", _worse_head(3), WINDOW, run_id="third")
    assert third.reason.startswith("holdout error ") and "the job's" not in third.reason
    assert third.promoted is (third.metrics["holdout_error"] <= third.metrics["champion_holdout_error"])
    assert registry.champion(job.name, "all").version == (third.version if third.promoted else second.version)


def test_a_frequency_changed_in_the_job_file_serves_after_the_next_training_without_a_warm_start(tmp_path: Path) -> None:
    # iforest's lags count rows: a forest of hourly rows learned nothing of 30-minute rows, and a
    # comparison on them could keep it serving, scoring the new rows as if they were hours.
    job = make_job(tmp_path, "iforest", n_estimators=20)
    first = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    faster = job.model_copy(update={"frequency": pd.Timedelta("30min").to_pytimedelta()})
    data = _worse_head(1).set_axis(pd.date_range(WINDOW.start, periods=24 * DAYS, freq="30min"))
    second = train_series(faster, "all", data, WINDOW, run_id="second")
    assert second.promoted and second.reason.startswith(
        "promoted: the job's frequency changed (1h → 30min), so the new model serves without a comparison"
    ), second.reason
    registry = registry_for(job)
    assert registry.champion(job.name, "all").version == second.version != first.version
    metadata = registry.version(job.name, "all", second.version).metadata
    assert metadata["frequency"] == "30min" and metadata["warm_started"] is False
    assert registry.version(job.name, "all", first.version).metadata["frequency"] == "1h"


@pytest.mark.parametrize(
    "kind, params, promoted",
    [("seasonal_mad", {"season": "1d", "level_window": 48}, False), ("iforest", {"n_estimators": 20}, True)],
    ids=["same-kind-is-unchanged", "other-kind-is-changed"],
)
def test_a_champion_registered_before_the_job_model_was_recorded(tmp_path: Path, kind, params, promoted) -> None:
    import json

    from pipelines import storage

    job = make_job(tmp_path, season="1d")
    first = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    registry = registry_for(job)
    old = {k: v for k, v in registry.version(job.name, "all", first.version).metadata.items() if k != "configured_model"}
    url = storage.join(registry.root, job.name, "all", "versions", first.version, "metadata.json")
    storage.atomic_write(url, json.dumps(old).encode())

    # Without a record, params cannot be told apart: the same kind is compared; another kind is a change.
    second = train_series(make_job(tmp_path, kind, **params), "all", _worse_head(1), WINDOW, run_id="second")
    assert second.promoted is promoted
    assert ("model changed (seasonal_mad → iforest)" in second.reason) is promoted
    assert ("kept the champion (the new model is worse)" in second.reason) is not promoted


def _weekly(days: int, seed: int = 0) -> pd.DataFrame:
    """Hourly rows from WINDOW.start: one fixed weekly profile (a value per hour of the week) plus noise."""
    index = pd.date_range(WINDOW.start, periods=24 * days, freq="h")
    rng = np.random.default_rng(seed)
    week = rng.normal(0, 5, size=(24 * 7, 2))
    values = week[np.arange(len(index)) % (24 * 7)] + rng.normal(size=(len(index), 2)) + [50, 20]
    return pd.DataFrame(values, index=index, columns=["a", "b"])


def _weekly_job(tmp_path: Path, days: int) -> JobConfig:
    # A weekly season in a window of 14 days: the job-file check refuses it (the fit learns no
    # season from fewer than two), so it is set past validation, as the windows compared here are.
    job = make_job(tmp_path)
    weekly = job.model.model_copy(update={"params": {**job.model.params, "season": "1w"}})
    return job.model_copy(update={"model": weekly, "training_window": pd.Timedelta(days=days).to_pytimedelta()})


def _day(days: float):
    return (pd.Timestamp(WINDOW.start) + pd.Timedelta(days=days)).to_pydatetime()


def _errors_on_last(job: JobConfig, champion_version: str, data: pd.DataFrame, rows: int) -> tuple[float, float]:
    """Challenger (fitted on the head of ``data``) and champion errors on the last ``rows`` rows,
    each given every row before them as history: what the comparison must compute."""
    from pipelines.detectors.synthetic import robust_scale
    from pipelines.training import HOLDOUT_FRACTION, detector_for, holdout_error

    head = data.iloc[: int(len(data) * (1 - HOLDOUT_FRACTION))]
    registry = registry_for(job)
    champion = load_detector("seasonal_mad", registry.load_files(job.name, "all", champion_version))
    compared, history, scale = data.iloc[-rows:], data.iloc[:-rows], robust_scale(head)
    return (
        holdout_error(detector_for(job).fit(head), compared, history, scale),
        holdout_error(champion, compared, history, scale),
    )


def test_the_champion_is_compared_only_on_rows_it_was_not_trained_on(tmp_path: Path) -> None:
    """The champion was scored on the whole held-back tail, though it was trained on most of it.

    Yesterday's champion was trained on the job's former 14-day window, so its weekly profile is
    the mean of two weeks (it holds half of each of its training rows), one of them a day of bad
    readings. The job's window is 30 days now; today's tail is its last 6 days, 5 of which the champion was trained
    on: there it looked better than the new model (0.17 vs 0.21) and kept it out, though on the
    day it had not seen it is clearly worse (0.40 vs 0.24).
    """
    data = _weekly(31)
    data.loc[(data.index >= _day(23)) & (data.index < _day(24))] -= 6  # a day of bad readings a week ago
    yesterday = data[(data.index >= _day(16)) & (data.index < _day(30))]
    old = train_series(_weekly_job(tmp_path, 14), "all", yesterday, Window(_day(16), _day(30)), run_id="yesterday")
    job = _weekly_job(tmp_path, 30)
    today = data[data.index >= _day(1)]
    new = train_series(job, "all", today, Window(_day(1), _day(31)), run_id="today")

    assert new.promoted, new.reason
    assert new.reason.startswith(f"holdout error {new.metrics['holdout_error']:.4g} vs champion {old.version} ")
    assert ("on the last 24 of 144 held-back rows, after the champion's last training row (2024-01-30T23:00:00+00:00): "
            "promoted (not worse)") in new.reason
    assert new.metrics["compared_rows"] == 24 and new.metrics["compared_out_of_sample"] is True
    assert new.metrics["holdout_error"] < 0.7 * new.metrics["champion_holdout_error"]
    # Both scored on today's last day, with every row before it as history.
    expected = _errors_on_last(job, old.version, today, 24)
    assert (new.metrics["holdout_error"], new.metrics["champion_holdout_error"]) == pytest.approx(expected)
    assert registry_for(job).champion(job.name, "all").version == new.version


@pytest.mark.parametrize(
    "unseen, missing, fresh", [(0, 0, 0), (5, 0, 5), (24, 21, 3)], ids=["re-run", "five-new-rows", "a-gap-after-training"]
)
def test_with_too_few_rows_after_the_champions_training_the_whole_tail_is_compared(
    tmp_path: Path, unseen: int, missing: int, fresh: int
) -> None:
    """Re-running an interval, retraining a few rows later, or a gap in the source since leaves too
    few held-back rows with values the champion was not trained on: the whole tail is compared, as
    before, and the reason says so."""
    job = make_job(tmp_path, season="1d")
    data = cycle(0)
    old = train_series(job, "all", data.iloc[: len(data) - unseen], WINDOW, run_id="old")
    data.iloc[len(data) - unseen : len(data) - unseen + missing] = np.nan  # as resampling leaves a gap
    again = train_series(job, "all", data, WINDOW, run_id="again")

    tail = len(data) - int(len(data) * 0.8)
    assert again.metrics["compared_rows"] == tail and again.metrics["compared_out_of_sample"] is False
    assert f"on all {tail} held-back rows: only {fresh} with values come after the champion's last training row (" in again.reason
    assert f"fewer than 10, so it is also judged on {tail - unseen} rows it was trained on, which favours it" in again.reason
    # The numbers of the whole-tail comparison, and its decision.
    assert (again.metrics["holdout_error"], again.metrics["champion_holdout_error"]) == pytest.approx(
        _errors_on_last(job, old.version, data, tail)
    )
    assert again.promoted is (again.metrics["holdout_error"] <= again.metrics["champion_holdout_error"])


def test_a_worse_model_compared_out_of_sample_still_never_serves(tmp_path: Path) -> None:
    job = _weekly_job(tmp_path, 30)
    data = _weekly(31)
    old = train_series(job, "all", data[data.index < _day(30)], Window(_day(0), _day(30)), run_id="yesterday")
    today = data[data.index >= _day(1)].copy()
    head = int(len(today) * 0.8)
    today.iloc[:head] = np.random.default_rng(2).normal(500, 200, size=(head, 2))  # the new model learns garbage
    new = train_series(job, "all", today, Window(_day(1), _day(31)), run_id="today")

    assert not new.promoted and "kept the champion (the new model is worse)" in new.reason
    assert "on the last 24 of 144 held-back rows, after the champion's last training row" in new.reason
    assert new.metrics["compared_rows"] == 24 and new.metrics["compared_out_of_sample"] is True
    assert new.metrics["holdout_error"] > new.metrics["champion_holdout_error"]
    assert registry_for(job).champion(job.name, "all").version == old.version


def _label(start: int, end: int, verdict: bool, feature: str | None = None, written: int = 0) -> SimpleNamespace:
    """What label_verdicts reads of a pipelines.labels.Label: rows ``start`` to ``end`` of WINDOW's hours."""
    index = cycle(0).index
    return SimpleNamespace(
        start=index[start].to_pydatetime(), end=index[end].to_pydatetime(), verdict=verdict, feature=feature,
        created_at=datetime(2024, 2, 1, written, tzinfo=UTC),
    )


T, F, N = 1.0, 0.0, np.nan


@pytest.mark.parametrize(
    ("labels", "a", "b", "overruled"),
    [
        # An event re-scored and re-labelled with another span: the later verdict holds where they overlap.
        ([_label(2, 5, True, written=1), _label(4, 7, False, written=2)], [N, N, T, T, F, F, F, F], [N, N, T, T, F, F, F, F], 0),
        ([_label(2, 5, True, written=2), _label(4, 7, False, written=1)], [N, N, T, T, T, T, F, F], [N, N, T, T, T, T, F, F], 0),
        # A feature's label decides its feature over a whole-series label, written before or after it.
        ([_label(2, 5, False, written=1), _label(3, 4, True, "a", written=2)], [N, N, F, T, T, F, N, N], [N, N, F, F, F, F, N, N], 0),
        ([_label(3, 4, True, "a", written=1), _label(2, 5, False, written=2)], [N, N, F, T, T, F, N, N], [N, N, F, F, F, F, N, N], 0),
        # Relabelled as a whole: the first verdict decides nothing any more; a feature the job dropped neither.
        ([_label(3, 4, True, written=1), _label(2, 5, False, written=2)], [N, N, F, F, F, F, N, N], [N, N, F, F, F, F, N, N], 1),
        ([_label(3, 4, True, "gone")], [N] * 8, [N] * 8, 1),
    ],
)
def test_overlapping_labels_give_each_row_and_feature_one_verdict(labels, a, b, overruled) -> None:
    index = cycle(0).index[:8]
    verdicts = label_verdicts(index, ["a", "b"], labels)
    np.testing.assert_array_equal(verdicts.values, np.column_stack([a, b]))
    assert verdicts.overruled == overruled


def _incident() -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """Two calm weeks with a confirmed two-day incident: feature a at 80 instead of 50."""
    data = cycle(0)
    data.iloc[100:148, 0] = 80 + np.random.default_rng(5).normal(size=48)
    return data, data.index[100], data.index[147]


def test_confirmed_anomalies_are_left_out_of_what_the_model_learns(tmp_path: Path) -> None:
    from pipelines.labels import label_store

    job = make_job(tmp_path, "iforest", n_estimators=20, window=12)
    data, start, end = _incident()
    label_store(job).add(job.name, "all", start.to_pydatetime(), end.to_pydatetime(), True, value_min=0, value_max=100)
    result = train_series(job, "all", data, WINDOW, run_id="after-the-incident")
    version = registry_for(job).version(job.name, "all", result.version)
    assert version.metadata["label_masking"] == {
        "rows": 48, "values": 96, "by_feature": {"a": 48, "b": 48},
        "reason": "inside people's true anomaly labels: left out of what the model learns as normal",
    }
    assert result.rows == len(data) and version.metadata["data_fingerprint"] != fingerprint(data)
    # The incident comes again: the model did not learn it as normal (fitted on it, it flagged none of these).
    detector = load_detector("iforest", registry_for(job).load_files(job.name, "all", result.version))
    again = pd.DataFrame({"a": [80.0] * 5, "b": [20.0] * 5}, index=pd.date_range(WINDOW.end, periods=5, freq="h"))
    assert detector.detect(again, history=data).is_anomaly.any(axis=1).all()


def test_a_feature_label_leaves_out_that_feature_and_false_alarms_change_nothing(tmp_path: Path) -> None:
    from pipelines.labels import label_store

    job = make_job(tmp_path, season="1d")
    data, start, end = _incident()
    store = label_store(job)
    store.add(job.name, "all", data.index[10].to_pydatetime(), data.index[20].to_pydatetime(), False, value_min=0, value_max=100)
    plain = train_series(job, "all", data, WINDOW, run_id="false-alarm-only")
    metadata = registry_for(job).version(job.name, "all", plain.version).metadata
    # No true label: the very data is fitted (a job without labels trains as it always did).
    assert metadata["label_masking"] == {"rows": 0, "values": 0} and metadata["data_fingerprint"] == fingerprint(data)

    store.add(job.name, "all", start.to_pydatetime(), end.to_pydatetime(), True, feature="a", value_min=0, value_max=100)
    masked = train_series(job, "all", data, WINDOW, run_id="feature-label")
    masking = registry_for(job).version(job.name, "all", masked.version).metadata["label_masking"]
    assert (masking["rows"], masking["values"], masking["by_feature"]) == (48, 48, {"a": 48})


def test_labels_that_leave_a_feature_nothing_to_learn_are_named(tmp_path: Path) -> None:
    from pipelines.labels import label_store

    job = make_job(tmp_path, season="1d")
    data = cycle(0)
    first = data.index[0].to_pydatetime()
    label_store(job).add(job.name, "all", first, data.index[-1].to_pydatetime(), True, feature="b", value_min=0, value_max=100)
    with pytest.raises(ModelError, match=r"^job trained, series all, training window .*: true anomaly labels cover every value "
                       r"of feature\(s\) b in the window, so nothing normal is left to learn; widen training_window, or withdraw"):
        train_series(job, "all", data, WINDOW, run_id="all-labelled")
    assert registry_for(job).versions(job.name, "all") == []
