"""Retention follow-ups: pruning only the series a run trained, tuning records, ``prune --series``
of a series the registry does not hold, and versions whose promotion was never confirmed."""

from __future__ import annotations

import collections
import json
from datetime import UTC, datetime
from pathlib import Path

from pipelines import storage
from pipelines.config import get_job
from pipelines.registry import ModelRegistry
from tests.pipelines import test_registry_retention as retention
from tests.pipelines.test_registry_retention import JOB, SERIES, later
from tests.pipelines.test_storage import gcs_emulator, plain_gcsfs  # noqa: F401  (fixtures)

registry = retention.registry  # the same fixture: a registry on local disk, moto S3 and the GCS emulator

#: The decision register_model stores for a version it is about to promote (pipelines.training).
PENDING = {"promoted": False, "pending": True, "reason": "no champion yet; promotion not confirmed"}


def versions_of(registry: ModelRegistry, series: str) -> list[str]:
    return [v.version for v in registry.versions(JOB, series)]


def add(registry: ModelRegistry, series: str, decision: dict) -> str:
    return registry.register(JOB, series, {"model.skops": b"m"}, {"decision": decision}).version


class Requests:
    """The S3 requests made through ``registry``'s file system, by operation."""

    def __init__(self, registry: ModelRegistry) -> None:
        fs, path = storage.filesystem(registry.root, registry.storage_options)
        fs.ls(path.split("/")[0])  # connects: fs.s3 exists from then on
        self.calls: collections.Counter[str] = collections.Counter()
        fs.s3.meta.events.register("before-call.s3", self._seen)

    def _seen(self, model, **_) -> None:
        self.calls[model.name] += 1


# 1. Pruning after a run costs requests for the series it trained, not for every series of the job.


def test_prune_job_of_the_series_a_run_trained_leaves_the_others_unread(registry: ModelRegistry) -> None:
    untouched = {f"host=h{i}": [add(registry, f"host=h{i}", {"promoted": False}) for _ in range(3)] for i in range(3)}
    trained = [add(registry, SERIES, {"promoted": False}) for _ in range(3)]

    pruned = registry.prune_job(JOB, 1, now=later(), series=[SERIES, SERIES, "host=never-trained"])

    assert pruned[SERIES].removed == trained[:2]
    assert pruned["host=never-trained"].removed == []  # tried, but its fit failed before registering anything
    assert versions_of(registry, SERIES) == trained[-1:]
    assert {s: versions_of(registry, s) for s in untouched} == untouched
    # None: every series, as the CLI's prune does.
    assert set(registry.prune_job(JOB, 1, now=later())) == {SERIES, *untouched}
    assert all(len(versions_of(registry, s)) == 1 for s in untouched)


def test_pruning_the_one_trained_series_of_many_on_s3_costs_requests_for_that_series_only(s3_bucket) -> None:
    bucket, options = s3_bucket
    registry = ModelRegistry(f"s3://{bucket}/models", options)
    for i in range(60):
        add(registry, f"host=h{i:02d}", {"promoted": False})
    trained = [add(registry, SERIES, {"promoted": False}) for _ in range(3)]
    requests = Requests(registry)

    assert registry.prune_job(JOB, 1, now=later(), series=[SERIES])[SERIES].removed == trained[:2]
    # One listing of the series, its two pointers, then per version removed: its metadata read
    # twice, the pointer read again, a listing and two deletions. Before: every series' listing and
    # pointers, 60 times as many.
    assert requests.calls["ListObjectsV2"] == 1 + 2
    assert sum(requests.calls.values()) <= 2 + 1 + 2 * 6
    # A series with nothing beyond what is kept: one listing, no pointer read.
    requests.calls.clear()
    assert registry.prune_job(JOB, 1, now=later(), series=["host=h07"])["host=h07"].removed == []
    assert dict(requests.calls) == {"ListObjectsV2": 1}


def test_prune_models_prunes_the_series_it_is_given(project: Path) -> None:
    from pipelines.runner import prune_models
    from pipelines.training import registry_for

    job = get_job("demo_web_metrics").model_copy(update={"registry_keep": 1})
    registry = registry_for(job)
    versions = {key: [registry.register(job.name, key, {"m": b"m"}, {}).version for _ in range(3)] for key in ("a", "b")}

    prune_models(job, now=later(), series=["a"])

    assert [v.version for v in registry.versions(job.name, "a")] == versions["a"][-1:]
    assert [v.version for v in registry.versions(job.name, "b")] == versions["b"]
    prune_models(job, now=later())  # without series: all of them, for callers that cannot tell
    assert [v.version for v in registry.versions(job.name, "b")] == versions["b"][-1:]


# 2. Tuning records: one per tune run, and none was ever removed.


def records(registry: ModelRegistry, series: str = SERIES) -> list[str]:
    return storage.find(registry._url(JOB, series, "tuning"), registry.storage_options)


def test_old_tuning_records_go_but_those_of_the_tuned_and_champion_versions_stay(registry: ModelRegistry) -> None:
    plain = {"decision": {"promoted": False}}
    tuned = add(registry, SERIES, {"promoted": True})
    made = [registry.record_tuning(JOB, SERIES, plain)]
    made.append(registry.record_tuning(JOB, SERIES, {"decision": {"promoted": True, "version": tuned}}))
    registry.write_tuned_params(JOB, SERIES, {"k": 1}, {"decision": {"version": tuned}}, version=tuned)
    champion = add(registry, SERIES, {"promoted": True})
    registry.promote(JOB, SERIES, champion)
    made.append(registry.record_tuning(JOB, SERIES, plain))
    made.append(registry.record_tuning(JOB, SERIES, {"decision": {"promoted": True, "version": champion}}))
    damaged = registry.record_tuning(JOB, SERIES, plain)
    storage.atomic_write(registry._url(JOB, SERIES, "tuning", damaged), b"{cut", registry.storage_options)
    made += [damaged, *(registry.record_tuning(JOB, SERIES, plain) for _ in range(3))]
    assert records(registry) == made

    # Within the hour every record stays: the tune run that wrote one may still be running.
    assert registry.prune(JOB, SERIES, 2).records_removed == []
    pruned = registry.prune(JOB, SERIES, 2, now=later())

    assert pruned.records_removed == [made[0], made[2], made[4], made[5]] and pruned.records_failed == {}
    assert records(registry) == [made[1], made[3], *made[-2:]]
    assert versions_of(registry, SERIES) == [tuned, champion]  # versions untouched: both needed
    # What the records kept are for: training tells a tuned.json deleted by people from one not written yet.
    assert registry.tuned_written(JOB, SERIES, champion)
    assert registry.prune(JOB, SERIES, 2, now=later()).records_removed == []


def test_the_prune_command_says_which_tuning_records_it_removed(project: Path, capsys, monkeypatch) -> None:
    from pipelines import registry as registry_module
    from pipelines.cli import main
    from pipelines.training import registry_for

    job = get_job("demo_web_metrics")
    registry = registry_for(job)
    registry.register(job.name, "region=eu", {"m": b"m"}, {})
    made = [registry.record_tuning(job.name, "region=eu", {"decision": {"promoted": False}}) for _ in range(3)]
    monkeypatch.setattr(registry_module, "PRUNE_GRACE", registry_module.timedelta(0))

    assert main(["prune", job.name, "--series", "region=eu", "--keep", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"region=eu": {"removed": [], "failed": {}, "tuning_records_removed": made[:2]}}


# 3. `prune --series` of a series the registry does not hold.


def test_the_prune_command_refuses_a_series_the_registry_does_not_hold(project: Path, capsys) -> None:
    from pipelines.cli import main
    from pipelines.training import registry_for

    job = get_job("demo_web_metrics")
    assert main(["prune", job.name, "--series", "region=nowhere"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"job {job.name}: the model registry" in captured.err and "holds no series 'region=nowhere'" in captured.err
    assert f"no series yet (run `anomaly-pipelines train {job.name}` first)" in captured.err

    registry = registry_for(job)
    for i in range(12):
        registry.register(job.name, f"region=r{i:02d}", {"m": b"m"}, {})
    assert main(["prune", job.name, "--series", "region=r1"]) == 2
    err = capsys.readouterr().err
    shown = ", ".join(f"region=r{i:02d}" for i in range(10))
    assert f"holds no series 'region=r1'; series it holds: {shown} (the first 10 of 12)" in err
    # A series held only by its tuning records (its versions all removed by hand) is pruned.
    registry.record_tuning(job.name, "region=tuned-only", {"decision": {}})
    assert main(["prune", job.name, "--series", "region=tuned-only"]) == 0
    assert json.loads(capsys.readouterr().out) == {"region=tuned-only": {"removed": [], "failed": {}}}


# 4. Versions whose promotion was never confirmed.


def test_an_unconfirmed_promotion_that_served_is_kept_as_a_rollback_target(registry: ModelRegistry) -> None:
    first, second = (add(registry, SERIES, {"promoted": True}) for _ in range(2))
    # Its run stopped after the champion pointer named it, before amending its decision.
    served = add(registry, SERIES, PENDING)
    registry.promote(JOB, SERIES, served)
    champion = add(registry, SERIES, {"promoted": True})
    registry.promote(JOB, SERIES, champion)
    lost, newest = (add(registry, SERIES, {"promoted": False}) for _ in range(2))

    pruned = registry.prune(JOB, SERIES, 1, now=later())

    # The rollback target is `served`; the two confirmed earlier champions stay as well, as nothing
    # tells that `served` ever served.
    assert pruned.removed == [lost]
    assert versions_of(registry, SERIES) == [first, second, served, champion, newest]


def test_unconfirmed_promotions_kept_are_few_and_never_older_than_the_earlier_champions(registry: ModelRegistry) -> None:
    oldest_pending = add(registry, SERIES, PENDING)
    confirmed = [add(registry, SERIES, {"promoted": True}) for _ in range(2)]
    pending = [add(registry, SERIES, PENDING) for _ in range(3)]
    champion = add(registry, SERIES, {"promoted": True})
    registry.promote(JOB, SERIES, champion)

    pruned = registry.prune(JOB, SERIES, 1, now=later())

    # The two newest pending ones; not the third, nor one older than the earlier champions kept.
    assert pruned.removed == [oldest_pending, pending[0]]
    assert versions_of(registry, SERIES) == [*confirmed, *pending[1:], champion]


def test_versions_whose_promotion_failed_are_not_kept_as_earlier_champions(registry: ModelRegistry) -> None:
    # register_model amends a version whose promotion another run overtook: no longer pending.
    champion = add(registry, SERIES, {"promoted": True})
    registry.promote(JOB, SERIES, champion)
    overtaken = add(registry, SERIES, {"promoted": False, "reason": "…; not promoted after all: another run promoted …"})
    newest = add(registry, SERIES, {"promoted": False})
    assert registry.prune(JOB, SERIES, 1, now=later()).removed == [overtaken]
    assert versions_of(registry, SERIES) == [champion, newest]


def test_a_clock_of_now_keeps_everything_just_registered(registry: ModelRegistry) -> None:
    versions = [add(registry, SERIES, PENDING) for _ in range(4)]
    registry.record_tuning(JOB, SERIES, {"decision": {}})
    registry.record_tuning(JOB, SERIES, {"decision": {}})
    pruned = registry.prune(JOB, SERIES, 1, now=datetime.now(UTC))
    assert (pruned.removed, pruned.records_removed) == ([], [])
    assert versions_of(registry, SERIES) == versions
