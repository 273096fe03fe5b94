from __future__ import annotations

import json
import logging
import os
import re

import pytest

from pipelines import storage
from pipelines.errors import ModelError
from pipelines.registry import UNREADABLE, ModelRegistry

SERIES = "region=eu/west,host=a b"  # characters that must be escaped in a folder name


@pytest.fixture(params=["local", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path) -> ModelRegistry:
    if request.param == "local":
        return ModelRegistry(str(tmp_path / "models"))
    bucket, options = request.getfixturevalue("s3_bucket")
    return ModelRegistry(f"s3://{bucket}/models", options)


def test_register_promote_champion_round_trip(registry: ModelRegistry) -> None:
    assert registry.champion("sales", SERIES) is None
    first = registry.register("sales", SERIES, {"model.skops": b"m1", "scaler.skops": b"s1"}, {"score": 0.5})
    second = registry.register("sales", SERIES, {"model.skops": b"m2"}, {"score": 0.7})

    assert first.metadata["score"] == 0.5
    assert {k: first.metadata[k] for k in ("job", "series", "version")} == {
        "job": "sales",
        "series": SERIES,
        "version": first.version,
    }
    assert first.metadata["registered_at"].endswith("+00:00")
    assert [v.version for v in registry.versions("sales", SERIES)] == [first.version, second.version]
    assert registry.versions("sales", SERIES)[1] == second
    assert registry.series("sales") == [SERIES]
    assert registry.load_files("sales", SERIES, first.version) == {"model.skops": b"m1", "scaler.skops": b"s1"}

    registry.promote("sales", SERIES, first.version)
    assert registry.champion("sales", SERIES) == first
    registry.promote("sales", SERIES, second.version)
    assert registry.champion("sales", SERIES) == second


def test_version_without_metadata_is_invisible(registry: ModelRegistry) -> None:
    kept = registry.register("sales", "all", {"model.skops": b"ok"}, {})
    registry.promote("sales", "all", kept.version)
    # A registration that crashed after its artifacts, before metadata.json.
    crashed = "29990101T000000000000Z-abcdef"
    storage.atomic_write(
        storage.join(registry.root, "sales", "all", "versions", crashed, "model.skops"),
        b"partial",
        registry.storage_options,
    )
    storage.atomic_write(
        storage.join(registry.root, "sales", "other", "versions", crashed, "model.skops"),
        b"partial",
        registry.storage_options,
    )

    assert [v.version for v in registry.versions("sales", "all")] == [kept.version]
    assert registry.series("sales") == ["all"]
    with pytest.raises(ModelError, match=rf"no complete model version '{crashed}'.*known versions: {kept.version}$"):
        registry.promote("sales", "all", crashed)
    with pytest.raises(ModelError, match="no complete model version"):
        registry.load_files("sales", "all", crashed)
    assert registry.champion("sales", "all") == kept


def test_promote_of_a_missing_version_keeps_the_champion(registry: ModelRegistry) -> None:
    kept = registry.register("sales", "all", {"model.skops": b"ok"}, {})
    registry.promote("sales", "all", kept.version)
    with pytest.raises(ModelError, match="no complete model version 'nope'"):
        registry.promote("sales", "all", "nope")
    assert registry.champion("sales", "all") == kept


def test_failed_champion_write_keeps_the_old_champion(tmp_path, monkeypatch) -> None:
    registry = ModelRegistry(str(tmp_path))
    kept = registry.register("sales", "all", {"model.skops": b"ok"}, {})
    newer = registry.register("sales", "all", {"model.skops": b"better"}, {})
    registry.promote("sales", "all", kept.version)

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        registry.promote("sales", "all", newer.version)
    monkeypatch.undo()
    assert registry.champion("sales", "all") == kept
    # No temporary file is left; the lock of champion writes stays (see storage.replace_if_unchanged).
    assert sorted(p.name for p in (tmp_path / "sales" / "all").iterdir()) == ["champion.json", "champion.json.lock", "versions"]


def test_promote_if_champion_promotes_only_over_the_expected_champion(registry: ModelRegistry) -> None:
    first, second, third = (registry.register("sales", SERIES, {"model.skops": b"m"}, {}) for _ in range(3))
    assert registry.promote_if_champion("sales", SERIES, first.version, "an-older-version") is None  # none serves
    assert registry.champion_version("sales", SERIES) is None
    assert registry.promote_if_champion("sales", SERIES, first.version, None) == first.version
    # Compared with no champion, but the first serves now: not promoted, and told which serves.
    assert registry.promote_if_champion("sales", SERIES, second.version, None) == first.version
    assert registry.promote_if_champion("sales", SERIES, second.version, first.version) == second.version
    assert registry.promote_if_champion("sales", SERIES, third.version, first.version) == second.version
    assert registry.champion("sales", SERIES) == second
    registry.promote("sales", SERIES, first.version)  # unconditional: whatever serves
    assert registry.champion("sales", SERIES) == first


def test_promote_gives_up_with_a_model_error_when_the_pointer_keeps_changing(registry: ModelRegistry, monkeypatch) -> None:
    version = registry.register("sales", SERIES, {"model.skops": b"m"}, {}).version
    # Another writer wins every round (or a store's conditional writes always fail): no endless loop.
    monkeypatch.setattr(storage, "replace_if_unchanged", lambda *args, **kwargs: False)
    with pytest.raises(ModelError, match=rf"could not promote version {version}: the champion pointer changed at each of 5 tries"):
        registry.promote("sales", SERIES, version)


def test_amend_replaces_sections_but_keeps_the_identity(registry: ModelRegistry) -> None:
    kept = registry.register("sales", SERIES, {"model.skops": b"m"}, {"decision": {"promoted": True}, "score": 1})
    amended = registry.amend("sales", SERIES, kept.version, {"decision": {"promoted": False}, "version": "forged"})
    assert amended == registry.version("sales", SERIES, kept.version)
    assert amended.metadata == {**kept.metadata, "decision": {"promoted": False}}


def test_promote_in_an_empty_registry_says_to_train(registry: ModelRegistry) -> None:
    with pytest.raises(ModelError, match=r"known versions: none \(train the job first\)"):
        registry.promote("sales", "all", "nope")


def test_a_missing_version_and_a_page_of_versions_read_only_the_newest(registry: ModelRegistry, caplog) -> None:
    # It named every version, each metadata.json read to do so: with 3,000 versions a 93 kB
    # message, a minute on S3.
    versions = [registry.register("sales", SERIES, {"model.skops": b"m"}, {}).version for _ in range(12)]
    registry.promote("sales", SERIES, versions[-1])
    with pytest.raises(ModelError) as raised:
        registry.version("sales", SERIES, "nope")
    assert str(raised.value).endswith(f"known versions: 12, the newest 10: {', '.join(versions[2:])}")
    assert versions[1] not in str(raised.value)
    # A page of the newest versions reads only theirs: the oldest one's damage goes unseen.
    oldest = storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b", "versions", versions[0], "metadata.json")
    storage.atomic_write(oldest, b"{cut sh", registry.storage_options)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.registry"):
        assert [v.version for v in registry.versions("sales", SERIES, newest=3)] == versions[-3:]
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert registry.versions("sales", SERIES, newest=0) == []
    assert [v.version for v in registry.versions("sales", SERIES, newest=50)] == versions[1:]
    assert f"version {versions[0]} left out" in caplog.text


def test_many_registrations_give_unique_sorted_versions(tmp_path) -> None:
    registry = ModelRegistry(str(tmp_path))
    registered = [registry.register("sales", "all", {}, {"i": i}).version for i in range(30)]
    assert len(set(registered)) == 30
    listed = registry.versions("sales", "all")
    assert [v.version for v in listed] == registered == sorted(registered)
    assert [v.metadata["i"] for v in listed] == list(range(30))


@pytest.mark.parametrize("name", ["metadata.json", "sub/model.skops", ".."])
def test_invalid_artifact_names_are_refused(tmp_path, name: str) -> None:
    registry = ModelRegistry(str(tmp_path))
    with pytest.raises(ModelError, match="invalid artifact file names"):
        registry.register("sales", "all", {name: b"x"}, {})
    assert registry.versions("sales", "all") == []


def test_metadata_that_is_not_json_is_refused_before_writing(tmp_path) -> None:
    registry = ModelRegistry(str(tmp_path))
    with pytest.raises(ModelError, match="cannot be stored as JSON.*plain str"):
        registry.register("sales", "all", {"model.skops": b"x"}, {"fitted": object()})
    assert storage.find(str(tmp_path)) == []


def test_tuned_params_round_trip(registry: ModelRegistry) -> None:
    assert registry.tuned_params("sales", SERIES) is None
    registry.write_tuned_params("sales", SERIES, {"n_estimators": 100}, {"best_score": 0.9})
    registry.write_tuned_params("sales", SERIES, {"n_estimators": 200}, {"best_score": 0.95})
    assert registry.tuned_params("sales", SERIES) == {"n_estimators": 200}
    tuned = storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b", "tuned.json")
    document = json.loads(storage.read_bytes(tuned, registry.storage_options))
    assert document["report"] == {"best_score": 0.95}


def test_tuned_params_of_an_earlier_version_landing_last_do_not_replace_a_later_ones(registry: ModelRegistry) -> None:
    """Two tune runs promoted one after the other: the first one's write landed last, and every
    later train built the parameters of a model no longer serving."""
    earlier = registry.register("sales", SERIES, {"model.skops": b"ok"}, {}).version
    later = registry.register("sales", SERIES, {"model.skops": b"ok"}, {}).version
    assert registry.write_tuned_params("sales", SERIES, {"n_estimators": 200}, {"run": "later"}, version=later)
    assert not registry.write_tuned_params("sales", SERIES, {"n_estimators": 100}, {"run": "earlier"}, version=earlier)
    assert registry.tuned("sales", SERIES)["version"] == later and registry.tuned_params("sales", SERIES) == {"n_estimators": 200}
    # A damaged file names no version: tuning replaces it.
    tuned = storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b", "tuned.json")
    storage.atomic_write(tuned, b'{"version": "9', registry.storage_options)
    assert registry.write_tuned_params("sales", SERIES, {"n_estimators": 100}, {"run": "earlier"}, version=earlier)
    assert registry.tuned_params("sales", SERIES) == {"n_estimators": 100}


def test_a_damaged_tuned_params_file_names_the_job_and_the_series_and_a_remedy_that_works(registry: ModelRegistry) -> None:
    """It said "or run the job's tune again", but a tune run that keeps the champion writes nothing."""
    tuned = storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b", "tuned.json")
    storage.atomic_write(tuned, b'{"params": ', registry.storage_options)
    with pytest.raises(ModelError) as caught:
        registry.tuned("sales", SERIES)
    message = str(caught.value)
    assert message.startswith(f"{tuned} is not valid JSON")
    assert f"it holds the tuned parameters of job sales, series {SERIES}: delete it to train with the job's configured model" in message
    assert "run the job's tune again" not in message


def test_tuning_history_reads_oldest_first_or_only_the_newest(registry: ModelRegistry) -> None:
    for number in range(4):
        registry.record_tuning("sales", SERIES, {"run": number})
    assert [r["run"] for r in registry.tuning_history("sales", SERIES)] == [0, 1, 2, 3]
    assert [r["run"] for r in registry.tuning_history("sales", SERIES, newest=2)] == [2, 3]
    assert [r["run"] for r in registry.tuning_history("sales", SERIES, newest=10)] == [0, 1, 2, 3]
    assert registry.tuning_history("sales", SERIES, newest=0) == []


def test_champion_version_names_the_pointer_even_when_it_cannot_be_loaded(registry: ModelRegistry) -> None:
    assert registry.champion_version("sales", SERIES) is None
    kept = registry.register("sales", SERIES, {"model.skops": b"ok"}, {})
    registry.promote("sales", SERIES, kept.version)
    assert registry.champion_version("sales", SERIES) == kept.version
    # The pointer outlived its version (deleted by hand, or by a bucket's lifecycle rule).
    storage.remove(storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b", "versions", kept.version, "metadata.json"),
                   registry.storage_options)
    assert registry.champion_version("sales", SERIES) == kept.version
    with pytest.raises(ModelError, match=f"no complete model version '{kept.version}'"):
        registry.champion("sales", SERIES)


def test_a_champion_whose_version_is_gone_names_the_pointer_and_says_to_train(registry: ModelRegistry) -> None:
    # Scoring said only "no complete model version ...; known versions: <the others>": neither
    # that the champion pointer was the problem nor what to run.
    older = registry.register("sales", SERIES, {"model.skops": b"old"}, {})
    kept = registry.register("sales", SERIES, {"model.skops": b"ok"}, {})
    registry.promote("sales", SERIES, kept.version)
    folder = storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b", "versions", kept.version)
    for name in storage.find(folder, registry.storage_options):
        storage.remove(storage.join(folder, name), registry.storage_options)
    with pytest.raises(
        ModelError,
        match=rf"^job sales, series {re.escape(SERIES)}: the champion pointer .*champion\.json names a version that is gone: "
        rf"no complete model version '{kept.version}' in .* \(its folder or its metadata\.json is missing; complete versions: "
        rf"{older.version}\); run the job's train to register and promote a new model$",
    ):
        registry.champion("sales", SERIES)


def test_long_and_non_ascii_series_keys_are_stored_and_listed(registry: ModelRegistry) -> None:
    # 30 CJK characters are 270 bytes once percent-encoded: over the 255 a local file name may hold.
    tokyo, osaka = "city=" + "東京都" * 30, "city=" + "東京都" * 29 + "大阪"
    short = "city=Zürich"
    for key, content in ((tokyo, b"t"), (osaka, b"o"), (short, b"z")):
        registry.promote("sales", key, registry.register("sales", key, {"model.skops": content}, {}).version)
    assert registry.series("sales") == sorted([tokyo, osaka, short])
    assert registry.load_files("sales", tokyo, registry.champion("sales", tokyo).version) == {"model.skops": b"t"}
    assert registry.load_files("sales", osaka, registry.champion("sales", osaka).version) == {"model.skops": b"o"}


def test_series_of_a_local_registry_do_not_walk_every_file(tmp_path, monkeypatch) -> None:
    registry = ModelRegistry(str(tmp_path))
    for key in ("all", SERIES):
        registry.promote("sales", key, registry.register("sales", key, {"model.skops": b"m"}, {}).version)
    registry.record_tuning("sales", "tuned only", {"run": 1})
    # Walking every artifact and tune record took 3 s for 10,000 series: one listing per series' versions instead.
    monkeypatch.setattr(storage, "find", lambda *args, **kwargs: pytest.fail("series() walked the whole job folder"))
    assert registry.series("sales") == sorted(["all", SERIES])
    assert registry.series("no such job") == []


#: What a full disk, a killed copy or a hand edit leaves: empty, cut short, not an object.
DAMAGED = [b"", b'{"version": "2026', b"[]"]


@pytest.mark.parametrize("content", DAMAGED)
def test_a_damaged_metadata_file_names_itself_and_hides_only_its_version(registry: ModelRegistry, content: bytes) -> None:
    kept = registry.register("sales", SERIES, {"model.skops": b"ok"}, {})
    damaged = registry.register("sales", SERIES, {"model.skops": b"ok"}, {})
    registry.promote("sales", SERIES, damaged.version)
    other = registry.register("sales", "all", {"model.skops": b"ok"}, {})
    folder = storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b", "versions", damaged.version)
    storage.atomic_write(storage.join(folder, "metadata.json"), content, registry.storage_options)

    assert registry.series("sales") == sorted(["all", SERIES])
    assert registry.versions("sales", SERIES) == [kept]  # left out, with a warning
    assert registry.versions("sales", "all") == [other]
    message = rf"{folder}/metadata.json (is not valid JSON|holds a JSON list).*run the job's train.*delete the version's folder"
    with pytest.raises(ModelError, match=message):
        registry.champion("sales", SERIES)
    with pytest.raises(ModelError, match=message):
        registry.load_files("sales", SERIES, damaged.version)
    assert registry.champion_version("sales", SERIES) == damaged.version  # training replaces what it cannot load
    registry.promote("sales", SERIES, kept.version)
    assert registry.champion("sales", SERIES) == kept


@pytest.mark.parametrize("content", [*DAMAGED, b'{"promoted_at": "2026-01-01"}'])
def test_a_damaged_champion_pointer_names_the_job_the_series_and_the_command_and_a_promotion_may_replace_it(
    registry: ModelRegistry, content: bytes
) -> None:
    """The error named only a file path (the series as a slug), and nothing could replace the pointer but a hand."""
    version = registry.register("sales", SERIES, {"model.skops": b"ok"}, {}).version
    pointer = storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b", "champion.json")
    storage.atomic_write(pointer, content, registry.storage_options)

    said = rf"{re.escape(pointer)} .*; it is the champion pointer of job sales, series {re.escape(SERIES)}: .*`anomaly-pipelines train sales`"
    with pytest.raises(ModelError, match=said):
        registry.champion("sales", SERIES)
    with pytest.raises(ModelError, match=said):  # a promotion that expected a version does not overwrite it
        registry.promote_if_champion("sales", SERIES, version, "20260101T000000000000Z-abcdef")
    assert registry.champion_version("sales", SERIES, unreadable=True) == UNREADABLE
    assert registry.promote_if_champion("sales", SERIES, version, UNREADABLE) == version
    assert registry.champion("sales", SERIES).version == version
    # Once repaired, a promotion that still expects the damaged pointer learns which version serves.
    other = registry.register("sales", SERIES, {"model.skops": b"ok"}, {}).version
    assert registry.promote_if_champion("sales", SERIES, other, UNREADABLE) == version


@pytest.mark.parametrize("content", [*DAMAGED, b'{"promoted_at": "2026-01-01"}'])
def test_a_damaged_champion_pointer_names_itself_and_what_to_do(registry: ModelRegistry, content: bytes) -> None:
    version = registry.register("sales", SERIES, {"model.skops": b"ok"}, {}).version
    other = registry.register("sales", "all", {"model.skops": b"ok"}, {})
    registry.promote("sales", "all", other.version)
    pointer = storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b", "champion.json")
    storage.atomic_write(pointer, content, registry.storage_options)

    message = rf"{pointer} (is not valid JSON|holds a JSON list|names no version).*delete it, then run the job's train"
    with pytest.raises(ModelError, match=message):
        registry.champion_version("sales", SERIES)
    with pytest.raises(ModelError, match=message):
        registry.champion("sales", SERIES)
    with pytest.raises(ModelError, match=message):
        registry.promote("sales", SERIES, version)
    assert registry.series("sales") == sorted(["all", SERIES])
    assert registry.champion("sales", "all") == other
    storage.remove(pointer, registry.storage_options)  # what the message says to do
    registry.promote("sales", SERIES, version)
    assert registry.champion_version("sales", SERIES) == version


def test_damaged_tuning_files_name_themselves_and_one_record_does_not_hide_the_others(registry: ModelRegistry) -> None:
    first = registry.record_tuning("sales", SERIES, {"run": 0})
    registry.record_tuning("sales", SERIES, {"run": 1})
    folder = storage.join(registry.root, "sales", "region=eu%2Fwest,host=a%20b")
    storage.atomic_write(storage.join(folder, "tuning", first), b'{"run": ', registry.storage_options)
    assert registry.tuning_history("sales", SERIES) == [{"run": 1}]
    storage.atomic_write(storage.join(folder, "tuned.json"), b"", registry.storage_options)
    with pytest.raises(ModelError, match=r"tuned.json is not valid JSON.*delete it to train with the job's configured model"):
        registry.tuned_params("sales", SERIES)


def test_a_cut_slug_takes_its_key_from_a_readable_version(tmp_path) -> None:
    registry = ModelRegistry(str(tmp_path))
    tokyo = "city=" + "東京都" * 30
    registry.register("sales", tokyo, {"model.skops": b"old"}, {})
    newest = registry.register("sales", tokyo, {"model.skops": b"new"}, {})
    (damaged,) = (tmp_path / "sales").glob(f"*/versions/{newest.version}/metadata.json")
    damaged.write_bytes(b"")
    assert registry.series("sales") == [tokyo]
    damaged.parent.parent.joinpath(sorted(p.name for p in damaged.parent.parent.iterdir())[0], "metadata.json").write_bytes(b"{")
    assert registry.series("sales") == []  # no key to tell: left out, with a warning, not a crash


def test_two_tune_runs_recording_at_the_same_instant_keep_both_records(registry: ModelRegistry, monkeypatch) -> None:
    # Named by the microsecond alone, the second record replaced the first (a CLI tune beside a
    # scheduled one, or two hosts): one run's trials and decision were lost.
    from datetime import UTC, datetime

    from pipelines import registry as module

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

    monkeypatch.setattr(module, "datetime", Frozen)
    names = [registry.record_tuning("sales", SERIES, {"run": number}) for number in range(2)]
    assert names[0] != names[1] and all(name.startswith("20240301T120000123456Z") for name in names)
    assert sorted(r["run"] for r in registry.tuning_history("sales", SERIES)) == [0, 1]
