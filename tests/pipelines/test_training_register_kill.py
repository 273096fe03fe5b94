"""A promotion stopped half-way (pipelines/training.py register_model): the version's metadata is
written before the champion pointer, and what it says must never claim a promotion that the
pointer does not hold. A real training subprocess is killed between the two writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.training import UNCONFIRMED, champion_models, registry_for, train_series
from tests.pipelines.test_training import WINDOW, cycle, job_stored_at, make_job

REPO = Path(__file__).resolve().parents[2]

#: A training of ``cycle(1)``, which beats the champion trained on ``cycle(0, phase_hours=8)``, that
#: stops for good inside ``ModelRegistry.<method>`` once it is called, after touching ``marker``.
CHILD = """
import sys, time
from pathlib import Path
from pipelines.registry import ModelRegistry
from pipelines.training import train_series
from tests.pipelines.test_training import WINDOW, cycle, job_stored_at, make_job

base, method, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
real = getattr(ModelRegistry, method)

def stall(self, *args, **kwargs):
    marker.write_text("in " + method)
    time.sleep(600)

setattr(ModelRegistry, method, stall)
train_series(make_job(base, season="1d"), "all", cycle(1), WINDOW, run_id="killed")
"""


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))


def _train_and_kill_inside(tmp_path: Path, method: str) -> None:
    marker = tmp_path / "stalled"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), method, str(marker)], cwd=REPO, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert child.poll() is None, f"the training ended (exit code {child.returncode}) before reaching {method}"
            assert time.monotonic() < deadline, f"the training did not reach {method} in 180 s"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def _the_other(registry, job, *known: str):
    [version] = [v for v in registry.versions(job.name, "all") if v.version not in known]
    return version


def test_a_training_killed_before_the_champion_pointer_is_written_shows_no_promotion(tmp_path: Path) -> None:
    # Its metadata said {"promoted": true}: the dashboard showed "promoted" on a model that never served.
    from pipelines.web import dashboard_data

    job = make_job(tmp_path, season="1d")
    old = train_series(job, "all", cycle(0, phase_hours=8), WINDOW, run_id="old")
    _train_and_kill_inside(tmp_path, "promote_if_champion")

    registry = registry_for(job)
    killed = _the_other(registry, job, old.version)
    assert registry.champion_version(job.name, "all") == old.version
    decision = killed.metadata["decision"]
    assert decision["promoted"] is False and decision["pending"] is True
    assert decision["reason"].endswith(f"promoted (not worse); {UNCONFIRMED}")
    [entry] = dashboard_data.models(job, ["all"])
    assert [(v["version"], v["champion"], v["promoted"], v["pending"]) for v in entry["versions"]] == [
        (killed.version, False, False, True),
        (old.version, True, True, False),
    ]
    [serving] = champion_models(job)  # what `anomaly-pipelines models` and GET .../model show
    assert serving["version"] == old.version and serving["decision"] == {"promoted": True, "reason": "no champion yet"}


def test_a_training_killed_after_the_champion_pointer_is_written_shows_the_new_model_serving(tmp_path: Path) -> None:
    from pipelines.web import dashboard_data

    job = make_job(tmp_path, season="1d")
    old = train_series(job, "all", cycle(0, phase_hours=8), WINDOW, run_id="old")
    _train_and_kill_inside(tmp_path, "amend")  # the record of the promotion's outcome

    registry = registry_for(job)
    killed = _the_other(registry, job, old.version)
    assert registry.champion_version(job.name, "all") == killed.version
    assert killed.metadata["decision"]["pending"] is True  # true: no outcome was recorded
    [entry] = dashboard_data.models(job, ["all"])
    assert [(v["version"], v["champion"], v["promoted"], v["pending"]) for v in entry["versions"]] == [
        (killed.version, True, True, False),
        (old.version, False, True, False),
    ]
    # The CLI's and the API's list of serving models says it serves too.
    [serving] = champion_models(job)
    assert serving["version"] == killed.version and serving["decision"]["promoted"] is True
    # The next training compares with the model that serves, and its own promotion is recorded.
    later = train_series(job, "all", cycle(1), WINDOW, run_id="later")
    assert f"vs champion {killed.version}" in later.reason


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_failed_champion_pointer_write_leaves_the_version_unpromoted(
    tmp_path: Path, where: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import storage

    job = job_stored_at(tmp_path, where, request)

    def refused(*args, **kwargs):
        raise OSError("503 SlowDown: please reduce your request rate")

    with monkeypatch.context() as patched, pytest.raises(OSError, match="SlowDown"):
        patched.setattr(storage, "replace_if_unchanged", refused)
        train_series(job, "all", cycle(0), WINDOW, run_id="refused")
    registry = registry_for(job)
    [version] = registry.versions(job.name, "all")
    assert registry.champion_version(job.name, "all") is None
    assert version.metadata["decision"] == {"promoted": False, "pending": True, "reason": f"no champion yet; {UNCONFIRMED}"}

    retried = train_series(job, "all", cycle(0), WINDOW, run_id="retry")
    assert retried.promoted and registry.champion_version(job.name, "all") == retried.version
    assert registry.version(job.name, "all", retried.version).metadata["decision"] == {"promoted": True, "reason": "no champion yet"}


def test_a_promotion_whose_record_fails_is_still_reported_as_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    # The champion pointer names it: failing the run would report a serving model as a failed training.
    from pipelines.registry import ModelRegistry

    def unavailable(*args, **kwargs):
        raise OSError("connection reset")

    monkeypatch.setattr(ModelRegistry, "amend", unavailable)
    job = make_job(tmp_path, season="1d")
    result = train_series(job, "all", cycle(0), WINDOW, run_id="first")
    registry = registry_for(job)
    assert result.promoted and result.reason == "no champion yet"
    assert registry.champion_version(job.name, "all") == result.version
    assert registry.version(job.name, "all", result.version).metadata["decision"]["pending"] is True
    assert f"version {result.version} serves (the champion pointer names it), but recording its promotion" in caplog.text
