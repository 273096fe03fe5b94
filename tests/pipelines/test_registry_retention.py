"""Retention of model versions (``ModelRegistry.prune``): every train registers a version, promoted
or not, and a series retrained hourly kept 8,760 a year, artifacts included."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines import registry as registry_module
from pipelines import storage
from pipelines.config import get_job, parse_job
from pipelines.errors import ConfigError, ModelError
from pipelines.registry import PRUNE_GRACE, ModelRegistry
from tests.pipelines.test_storage import gcs_emulator, plain_gcsfs  # noqa: F401  (fixtures)

JOB = "sales"
SERIES = "region=eu/west,host=a b"


@pytest.fixture(params=["local", "s3", "gcs"])
def registry(request: pytest.FixtureRequest, tmp_path) -> ModelRegistry:
    if request.param == "local":
        return ModelRegistry(str(tmp_path / "models"))
    if request.param == "gcs":
        request.getfixturevalue("plain_gcsfs")
        emulator = request.getfixturevalue("gcs_emulator")
        return ModelRegistry(f"gs://{emulator.bucket}/{tmp_path.name}", emulator.options)
    bucket, options = request.getfixturevalue("s3_bucket")
    return ModelRegistry(f"s3://{bucket}/models", options)


def later() -> datetime:
    """A prune run's clock once everything registered so far is past the grace period."""
    return datetime.now(UTC) + PRUNE_GRACE + timedelta(minutes=5)


def register(registry: ModelRegistry, count: int, *, promoted: bool = False) -> list[str]:
    files, metadata = {"model.skops": b"m" * 100, "extra.bin": b"x"}, {"decision": {"promoted": promoted}}
    return [registry.register(JOB, SERIES, files, metadata).version for _ in range(count)]


def stored(registry: ModelRegistry) -> set[str]:
    """Version folders holding any file, complete or not."""
    return {path.partition("/")[0] for path in storage.find(registry._url(JOB, SERIES, "versions"), registry.storage_options)}


def test_only_the_newest_versions_are_kept_and_the_others_are_removed_whole(registry: ModelRegistry, caplog) -> None:
    versions = register(registry, 6)

    with caplog.at_level(logging.INFO, logger="pipelines.registry"):
        pruned = registry.prune(JOB, SERIES, 3, now=later())

    assert pruned.removed == versions[:3] and pruned.failed == {}
    assert [v.version for v in registry.versions(JOB, SERIES)] == versions[3:]
    assert stored(registry) == set(versions[3:])  # artifacts too, not only metadata.json
    assert f"job {JOB}, series {SERIES}: removed 3 old model versions" in caplog.text
    if "://" not in registry.root:  # no empty folders left behind
        assert sorted(p.name for p in Path(registry._url(JOB, SERIES, "versions")).iterdir()) == versions[3:]
    # Nothing more to do: a second run removes nothing and says nothing.
    caplog.clear()
    assert registry.prune(JOB, SERIES, 3, now=later()).removed == []
    assert "removed" not in caplog.text


def test_the_champion_earlier_champions_and_the_tuned_version_are_kept_however_old(registry: ModelRegistry) -> None:
    oldest_champions = register(registry, 3, promoted=True)  # three champions before the current one
    champion = register(registry, 1, promoted=True)[0]
    registry.promote(JOB, SERIES, champion)
    lost = register(registry, 1)[0]
    tuned = register(registry, 1)[0]
    registry.write_tuned_params(JOB, SERIES, {"k": 1}, {"decision": {"version": tuned}}, version=tuned)
    newest = register(registry, 4)

    pruned = registry.prune(JOB, SERIES, 2, now=later())

    kept = [oldest_champions[1], oldest_champions[2], champion, tuned, *newest[-2:]]
    assert [v.version for v in registry.versions(JOB, SERIES)] == kept
    assert pruned.removed == [oldest_champions[0], lost, *newest[:2]]
    assert registry.champion(JOB, SERIES).version == champion
    assert registry.load_files(JOB, SERIES, champion) == {"model.skops": b"m" * 100, "extra.bin": b"x"}


def test_versions_registered_in_the_last_hour_are_kept(registry: ModelRegistry) -> None:
    # A run that registered one may be about to promote it.
    versions = register(registry, 4)
    assert registry.prune(JOB, SERIES, 1).removed == []
    assert [v.version for v in registry.versions(JOB, SERIES)] == versions


def test_interrupted_registrations_are_removed_once_old(registry: ModelRegistry) -> None:
    kept = register(registry, 1)[0]
    half = "20240101T000000000000Z-abcdef"  # artifacts written, metadata.json never
    storage.atomic_write(registry._url(JOB, SERIES, "versions", half, "model.skops"), b"m", registry.storage_options)
    fresh = registry_module._new_version()  # being registered right now
    storage.atomic_write(registry._url(JOB, SERIES, "versions", fresh, "model.skops"), b"m", registry.storage_options)

    assert registry.prune(JOB, SERIES, 1, now=datetime.now(UTC)).removed == [half]
    assert stored(registry) == {kept, fresh}


def test_a_version_that_cannot_be_removed_does_not_stop_the_others(registry: ModelRegistry, monkeypatch, caplog) -> None:
    versions = register(registry, 4)
    stuck = registry._url(JOB, SERIES, "versions", versions[1], "metadata.json")
    remove = storage.remove

    def refusing(url: str, storage_options=None) -> None:
        if url == stuck:
            raise PermissionError(13, "Access Denied", url)
        remove(url, storage_options)

    monkeypatch.setattr(storage, "remove", refusing)
    with caplog.at_level(logging.INFO, logger="pipelines.registry"):
        pruned = registry.prune(JOB, SERIES, 1, now=later())

    assert pruned.removed == [versions[0], versions[2]]
    assert list(pruned.failed) == [versions[1]] and "Access Denied" in pruned.failed[versions[1]]
    assert f"could not remove model version {versions[1]}" in caplog.text
    assert "removed 2 old model versions (1 could not be removed" in caplog.text
    # It stays whole (metadata.json could not go, so neither did its artifacts) and goes next time.
    assert stored(registry) == {versions[1], versions[3]}
    monkeypatch.setattr(storage, "remove", remove)
    assert registry.prune(JOB, SERIES, 1, now=later()).removed == [versions[1]]


def test_a_series_whose_champion_pointer_is_damaged_is_left_alone(registry: ModelRegistry, caplog) -> None:
    versions = register(registry, 3)
    storage.atomic_write(registry._url(JOB, SERIES, "champion.json"), b"{cut", registry.storage_options)
    with pytest.raises(ModelError, match="champion pointer"):
        registry.prune(JOB, SERIES, 1, now=later())
    with caplog.at_level(logging.WARNING, logger="pipelines.registry"):
        assert registry.prune_job(JOB, 1, now=later()) == {}
    assert f"series {SERIES}: old model versions not removed" in caplog.text
    assert [v.version for v in registry.versions(JOB, SERIES)] == versions


def test_a_version_pruned_between_a_promotion_s_check_and_its_write_is_not_left_as_champion(registry: ModelRegistry) -> None:
    # A rollback by hand to an old version while a prune removes it: the pointer must not name a
    # version that is gone.
    old, champion, _newer = register(registry, 3)
    registry.promote(JOB, SERIES, champion)
    pruner = ModelRegistry(registry.root, registry.storage_options)
    clock = later()

    class PrunedMidPromotion(ModelRegistry):
        def version(self, job: str, series: str, version: str):
            found = super().version(job, series, version)
            assert old in pruner.prune(JOB, SERIES, 1, now=clock).removed
            return found

    with pytest.raises(ModelError, match=f"version {old} was removed .* while it was being promoted"):
        PrunedMidPromotion(registry.root, registry.storage_options).promote_if_champion(JOB, SERIES, old, champion)
    assert registry.champion(JOB, SERIES).version == champion
    # Once gone, a promotion of it fails before touching the pointer.
    with pytest.raises(ModelError, match=f"no complete model version '{old}'"):
        registry.promote(JOB, SERIES, old)
    assert registry.champion(JOB, SERIES).version == champion


def test_concurrent_trains_and_prunes_never_remove_the_version_being_promoted(registry: ModelRegistry, monkeypatch) -> None:
    # Old versions (registered three hours ago) for the prunes to remove meanwhile.
    past = datetime.now(UTC) - timedelta(hours=3)
    names = iter(f"{past + timedelta(seconds=i):%Y%m%dT%H%M%S%fZ}-{i:06x}" for i in range(1000))
    new_version = registry_module._new_version
    monkeypatch.setattr(registry_module, "_new_version", lambda: next(names))
    old = register(registry, 12, promoted=True)
    monkeypatch.setattr(registry_module, "_new_version", new_version)
    registry.promote(JOB, SERIES, old[-1])

    errors: list[BaseException] = []
    promoted: list[str] = []
    done = threading.Event()
    # Threads of one process share s3fs's cached file system and its listing cache: a listing landing
    # beside a read made a file just written unreadable (a defect of storage.read_bytes, not of
    # pruning; separate processes, as Airflow's tasks are, share nothing). Without that cache here.
    options = {**registry.storage_options, "use_listings_cache": False}

    def train() -> None:
        # As register_model does: register (as promoted), then promote over the champion compared with.
        trainer = ModelRegistry(registry.root, options)
        try:
            for _ in range(6):
                compared = trainer.champion_version(JOB, SERIES)
                version = trainer.register(JOB, SERIES, {"model.skops": b"new"}, {"decision": {"promoted": True}}).version
                assert trainer.promote_if_champion(JOB, SERIES, version, compared) == version
                assert trainer.load_files(JOB, SERIES, version) == {"model.skops": b"new"}
                promoted.append(version)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def prune() -> None:
        pruner = ModelRegistry(registry.root, options)
        try:
            while not done.is_set():
                pruner.prune(JOB, SERIES, 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=train), threading.Thread(target=prune), threading.Thread(target=prune)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    registry.prune(JOB, SERIES, 1)  # one after the last promotion, however the threads interleaved
    assert registry.champion(JOB, SERIES).version == promoted[-1]
    remaining = [v.version for v in registry.versions(JOB, SERIES)]
    assert set(promoted) <= set(remaining)  # all in the grace period
    # Of the old ones: the earlier champions a rollback needs, nothing else.
    assert [v for v in remaining if v in old] == old[-2:]


def test_train_runs_prune_the_job_s_versions(project: Path) -> None:
    from pipelines.runner import cleanup, run_train
    from pipelines.training import registry_for
    from pipelines.workspace import Window, to_utc

    job = get_job("demo_web_metrics").model_copy(update={"registry_keep": 1})
    window = Window(to_utc("2024-02-02T00:00:00Z"), to_utc("2024-03-01T00:00:00Z"))
    for run in range(3):
        run_train(job, window, run_id=f"train-{run}")
    registry = registry_for(job)
    before = {s: [v.version for v in registry.versions(job.name, s)] for s in registry.series(job.name)}
    assert all(len(versions) == 3 for versions in before.values())  # registered within the hour: kept

    cleanup(job, "train-3", purpose="train", now=later())

    for series, versions in before.items():
        champion = registry.champion_version(job.name, series)
        assert [v.version for v in registry.versions(job.name, series)] == sorted({champion, versions[-1]})


def test_a_train_run_prunes_the_series_it_trained_and_leaves_the_others_unread(project: Path, monkeypatch) -> None:
    # Pruning every series after each run cost some 30,000 requests for a job of 10,000 series on S3.
    from pipelines.runner import run_train
    from pipelines.training import registry_for
    from pipelines.workspace import Window, to_utc

    job = get_job("demo_web_metrics").model_copy(update={"registry_keep": 1})
    registry = registry_for(job)
    untrained = [registry.register(job.name, "region=zz", {"m": b"m"}, {}).version for _ in range(3)]
    window = Window(to_utc("2024-02-02T00:00:00Z"), to_utc("2024-03-01T00:00:00Z"))
    run_train(job, window, run_id="train-0")
    run_train(job, window, run_id="train-1")
    monkeypatch.setattr(registry_module, "PRUNE_GRACE", timedelta(0))  # the run's own prune may remove anything
    run_train(job, window, run_id="train-2")

    trained = [s for s in registry.series(job.name) if s != "region=zz"]
    assert trained
    for series in trained:
        versions = [v.version for v in registry.versions(job.name, series)]
        assert len(versions) <= 2 and registry.champion_version(job.name, series) in versions
    assert [v.version for v in registry.versions(job.name, "region=zz")] == untrained


def test_predict_runs_do_not_prune(project: Path) -> None:
    from pipelines.runner import cleanup
    from pipelines.training import registry_for

    job = get_job("demo_web_metrics").model_copy(update={"registry_keep": 1})
    registry = registry_for(job)
    versions = [registry.register(job.name, "region=eu", {"m": b"m"}, {}).version for _ in range(3)]
    cleanup(job, "predict-1", purpose="predict", now=later())
    assert [v.version for v in registry.versions(job.name, "region=eu")] == versions


@pytest.mark.parametrize(("value", "reason"), [(0, "greater than or equal to 1"), ("30", "valid integer")])
def test_registry_keep_below_one_is_refused(value, reason) -> None:
    job = {
        "name": "web", "source": {"kind": "file", "path": "data/x.csv"}, "timestamp": "ts", "frequency": "1h",
        "features": ["value"], "model": {"kind": "seasonal_mad"}, "registry_keep": value,
    }
    with pytest.raises(ConfigError) as info:
        parse_job(job, source="jobs/web.yaml")
    line = next(line for line in str(info.value).splitlines() if line.strip().startswith("registry_keep:"))
    assert reason in line
    assert parse_job({**job, "registry_keep": 5}, source="jobs/web.yaml").registry_keep == 5


def test_a_version_promoted_while_its_metadata_is_being_removed_is_given_back(registry: ModelRegistry) -> None:
    # The promotion checked the version before the prune removed its metadata.json, and wrote the
    # pointer before the prune read it again: the prune puts the version back, whole.
    old, champion, _newer = register(registry, 3)
    registry.promote(JOB, SERIES, champion)
    pointer = registry._url(JOB, SERIES, "champion.json")

    class PromotedMidPrune(ModelRegistry):
        def champion_version(self, job: str, series: str, *, unreadable: bool = False):
            if unreadable:  # the read after the removal of metadata.json
                storage.atomic_write(pointer, b'{"version": "%s"}' % old.encode(), self.storage_options)
            return super().champion_version(job, series, unreadable=unreadable)

    pruned = PromotedMidPrune(registry.root, registry.storage_options).prune(JOB, SERIES, 1, now=later())

    assert old not in pruned.removed
    assert registry.champion(JOB, SERIES).version == old
    assert registry.load_files(JOB, SERIES, old) == {"model.skops": b"m" * 100, "extra.bin": b"x"}


def test_the_prune_command_removes_old_versions_now_and_says_which(project: Path, capsys, monkeypatch) -> None:
    import json

    from pipelines.cli import main
    from pipelines.training import registry_for

    job = get_job("demo_web_metrics")
    registry = registry_for(job)
    versions = [registry.register(job.name, "region=eu", {"m": b"m"}, {}).version for _ in range(4)]
    registry.promote(job.name, "region=eu", versions[0])
    monkeypatch.setattr(registry_module, "PRUNE_GRACE", timedelta(0))  # as if registered over an hour ago

    assert main(["prune", job.name, "--series", "region=eu", "--keep", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"region=eu": {"removed": [versions[1]], "failed": {}}}
    assert [v.version for v in registry.versions(job.name, "region=eu")] == [versions[0], *versions[2:]]
