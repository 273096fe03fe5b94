"""Windows of runs without a data interval (asset-triggered or manual train runs), and where runs keep their files."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.config import parse_job
from pipelines.errors import ConfigError
from pipelines.runner import cleanup
from pipelines.workspace import (
    Window,
    Workspace,
    check_output_file,
    last_period,
    prediction_window,
    training_window,
    triggered_training_end,
    validation_report_path,
)

JOB = parse_job(
    {
        "name": "hourly",
        "source": {"kind": "file", "path": "data.csv"},
        "timestamp": "ts",
        "frequency": "1h",
        "features": ["value"],
        "model": {"kind": "seasonal_mad"},
    }
)


def test_the_latest_triggering_event_end_wins_on_the_job_grid() -> None:
    ends = ["2024-03-02T05:00:00+00:00", "2024-03-03T07:30:00+01:00"]  # the second is 06:30 UTC
    due = datetime(2024, 5, 1, tzinfo=UTC)
    assert triggered_training_end(JOB, ends, due) == datetime(2024, 3, 3, 6, tzinfo=UTC)


def test_without_events_the_run_ends_when_it_was_due_floored_to_the_grid() -> None:
    assert triggered_training_end(JOB, [], datetime(2024, 5, 1, 10, 59, tzinfo=UTC)) == datetime(2024, 5, 1, 10, tzinfo=UTC)


def test_without_events_or_due_time_it_ends_now() -> None:
    before = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    end = triggered_training_end(JOB, [], None)
    assert end >= before and end.minute == 0 and end.second == 0


@pytest.mark.parametrize(
    "run_ids",
    [
        ["..", "."],  # Airflow's default allowed_run_id_pattern accepts both
        ["manual__2024-03-01T00:00:00+00:00", "manual__2024-03-01T00_00_00_00_00"],
        ["r" * 120 + "a", "r" * 120 + "b"],
    ],
)
def test_each_run_id_gets_its_own_folder_inside_the_job(tmp_path: Path, monkeypatch, run_ids: list[str]) -> None:
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path))
    jobs = tmp_path / "work"
    other = Workspace("other_job", "scheduled__2024-03-01")
    os.makedirs(other.root)
    roots = [Workspace(JOB.name, run_id).root for run_id in run_ids]
    for root in roots:
        assert root.parent == jobs / JOB.name and not root.name.startswith(".")
    assert len(set(roots)) == len(roots)
    for run_id in run_ids:
        cleanup(JOB, run_id)
    assert other.root.is_dir()  # a run's cleanup never reaches another job's (or run's) files


@pytest.mark.parametrize("url", ["s3://bucket/scores/", "gs://bucket/scores/"])
def test_an_output_url_ending_in_a_slash_is_a_folder(url: str) -> None:
    # s3fs drops the slash and writes an object named "scores" in place of a file in the folder.
    with pytest.raises(ConfigError, match=rf"output '{url}' is a folder: .*'{url}scored.parquet'"):
        check_output_file(url)
    check_output_file(url + "scored.parquet")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: prediction_window(None, None, start="2024-03-01T00:00:00Z", job=JOB),
         r"^job hourly: predict needs a window: a scheduled data interval, or both 'start' and 'end'$"),
        (lambda: prediction_window("2024-03-01T00:00:00Z", "2024-03-02T00:00:00Z", end="2024-02-29T00:00:00Z", job=JOB),
         r"^job hourly: window end 2024-02-29T00:00:00\+00:00 is not after its start 2024-03-01T00:00:00\+00:00; give a start before"),
        (lambda: prediction_window(None, None, start="soon", end="2024-03-01T00:00:00Z", job=JOB),
         r"^job hourly: start 'soon' is not an ISO 8601 date-time"),
        (lambda: training_window(JOB, "2024-03-01T00:00:00Z", start="2024-03-05T00:00:00Z"),
         r"^job hourly: window end 2024-03-01T00:00:00\+00:00 is not after its start 2024-03-05T00:00:00\+00:00; give a start before"),
        (lambda: training_window(JOB, None), r"^job hourly: the training window needs an end: a scheduled data interval, or 'end'$"),
        (lambda: training_window(JOB, None, end="2024-02-30"), r"^job hourly: end '2024-02-30' is not an ISO 8601 date-time"),
    ],
)
def test_a_run_window_that_cannot_be_is_refused_naming_the_job(make, message: str) -> None:
    # "window end ... is not after its start" and "predict needs a window" named no job: in a
    # scheduler running many jobs, nothing said whose run conf or command was wrong.
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize("run_id", ["scheduled__2024-03-01", "manual__2024-03-01T00:00:00+00:00"])
def test_a_run_s_quarantines_are_its_batch_s_and_its_chunks_only(tmp_path: Path, monkeypatch, run_id: str) -> None:
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path))
    run = Workspace(JOB.name, run_id)
    chunks = [Path(run.quarantine + run.chunk_part(0)), Path(run.quarantine + run.chunk_part(12))]
    others = [
        Path(Workspace(JOB.name, "scheduled__2024-03-02").quarantine),
        # Beside the run's folder: other runs' (a run named so), not this run's chunks.
        Path(run.quarantine + "-chunk0"),
        Path(run.quarantine + "-chunk1-chunk2"),
        Path(Workspace("other_job", run_id).quarantine),
    ]
    assert run.quarantines() == []
    for folder in [*chunks, *others]:
        folder.mkdir(parents=True)
    assert all(chunk.parent == Path(run.quarantine) for chunk in chunks)
    assert run.quarantines() == [Path(run.quarantine)]
    cleanup(JOB, run_id, succeeded=False)
    assert all(folder.is_dir() for folder in [*chunks, *others])
    cleanup(JOB, run_id)
    assert not Path(run.quarantine).exists()
    assert [folder for folder in [*chunks, *others] if folder.exists()] == others


def test_a_run_named_like_another_run_s_chunk_keeps_its_quarantine(tmp_path: Path, monkeypatch) -> None:
    # Chunk N of run "X" was quarantined in "X-chunkN", the folder of the run literally named
    # "X-chunkN": the two shared it, and run "X" succeeding removed the other run's batch.
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path))
    x, named = Workspace(JOB.name, "X"), Workspace(JOB.name, "X-chunk3")
    assert x.quarantine + x.chunk_part(3) != named.quarantine
    Path(named.quarantine).mkdir(parents=True)
    (Path(named.quarantine) / "batch.parquet").write_bytes(b"rejected")
    Path(x.quarantine + x.chunk_part(3)).mkdir(parents=True)
    cleanup(JOB, "X")
    assert (Path(named.quarantine) / "batch.parquet").read_bytes() == b"rejected"
    assert not Path(x.quarantine).exists()


def _rejected(run_id: str, window: dict[str, str]) -> Path:
    """A quarantine folder as validation leaves it for ``run_id``'s rejected batch of ``window``."""
    folder = Path(Workspace(JOB.name, run_id).quarantine)
    folder.mkdir(parents=True)
    (folder / "batch.parquet").write_bytes(b"rejected")
    (folder / "validation.json").write_text(json.dumps({"success": False, "window": [window["start"], window["end"]]}))
    return folder


def test_a_quarantine_that_cannot_be_checked_does_not_fail_a_run_that_succeeded(tmp_path: Path, monkeypatch, caplog) -> None:
    # Marking another run's quarantine superseded is a note for people: a report that cannot be
    # read (a store down, a permission) failed the run's last task after its work was done.
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))
    window = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
    kept = _rejected("scheduled__2024-03-02", window.to_dict())
    Path(validation_report_path(JOB, "train", window, "manual__1")).mkdir(parents=True)  # unreadable as a file
    with caplog.at_level("WARNING", logger="pipelines.runner"):
        cleanup(JOB, "manual__1")
    assert (kept / "batch.parquet").exists() and not (kept / "superseded.json").exists()
    assert f"could not check or mark the quarantine {kept} as superseded" in caplog.text


def test_a_train_and_a_predict_run_of_one_run_id_keep_apart(tmp_path: Path, monkeypatch) -> None:
    # Airflow names a scheduled run after the time it runs: the weekly train and the hourly predict
    # due at the same instant both ran as scheduled__<that time>, wrote the same raw.parquet, and
    # the train's success removed the work folder and the quarantine the predict run was using.
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path))
    run_id = "scheduled__2024-03-10T02:00:00+00:00"
    train, predict = Workspace(JOB.name, run_id, "train"), Workspace(JOB.name, run_id, "predict")
    assert train.raw_batch != predict.raw_batch and train.quarantine != predict.quarantine
    for workspace in (train, predict):
        os.makedirs(workspace.root)
        Path(workspace.raw_batch).write_bytes(b"rows")
        os.makedirs(workspace.quarantine)
    cleanup(JOB, run_id, purpose="train")
    assert not train.root.exists() and not Path(train.quarantine).exists()
    assert Path(predict.raw_batch).read_bytes() == b"rows" and Path(predict.quarantine).is_dir()
    cleanup(JOB, run_id, purpose="predict", succeeded=False)
    assert not predict.root.exists() and Path(predict.quarantine).is_dir()  # a failed run keeps its quarantine


def test_superseded_and_old_layout_quarantines_are_swept_after_a_month_untouched(tmp_path: Path, monkeypatch, caplog) -> None:
    # Nothing removed a superseded quarantine, or one of the layout before purposes (which no run
    # clears or marks any more): var/quarantine grew for ever. A rejected batch nobody needs to
    # fix a run goes after a month untouched; one still waiting for its run to succeed stays.
    import time

    from pipelines.runner import QUARANTINE_KEPT, SUPERSEDED

    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path))
    window = {"start": "2024-03-01T00:00:00+00:00", "end": "2024-03-02T00:00:00+00:00"}
    folders = {
        "old layout": _rejected("scheduled__2023-01-01", window),
        "old layout, recent": _rejected("scheduled__2023-01-02", window),
        "superseded": _rejected("scheduled__2024-03-02", window),
        "superseded, rejected again since": _rejected("scheduled__2024-03-03", window),
        "not superseded": _rejected("scheduled__2024-03-04", window),
    }
    for name in ("superseded", "superseded, rejected again since", "not superseded"):  # into the train layout
        moved = Path(Workspace(JOB.name, folders[name].name, "train").quarantine)
        moved.parent.mkdir(parents=True, exist_ok=True)
        folders[name] = folders[name].rename(moved)
    for name in ("superseded", "superseded, rejected again since"):
        (folders[name] / SUPERSEDED).write_text("{}")
    long_ago = time.time() - QUARANTINE_KEPT.total_seconds() - 3600
    for name in ("old layout", "superseded", "superseded, rejected again since", "not superseded"):
        for path in (folders[name], *folders[name].iterdir()):
            os.utime(path, (long_ago, long_ago))
    (folders["superseded, rejected again since"] / "batch.parquet").write_bytes(b"rejected again")

    # Without a purpose, quarantine/<job>/<run> is the current layout: only superseded ones go.
    cleanup(JOB, "this-run", succeeded=False)
    assert [name for name, folder in folders.items() if not folder.exists()] == ["superseded"]

    with caplog.at_level("INFO", logger="pipelines.runner"):
        cleanup(JOB, "this-run", purpose="predict", succeeded=False)
    assert [name for name, folder in folders.items() if folder.exists()] == [
        "old layout, recent", "superseded, rejected again since", "not superseded"
    ]
    assert "removed 1 quarantine folders superseded by a later run (or of the layout before purposes)" in caplog.text
    assert str(folders["old layout"]) in caplog.text


def test_one_off_scoring_keeps_its_files_in_the_score_run_s_folders(tmp_path: Path, monkeypatch) -> None:
    # Validation names one-off scoring's purpose one_off, and the rule that its quarantine is the
    # score run's lived at one call site, so any other caller passing the purpose on made a one_off
    # folder that the run's cleanup never cleared. Apart from predict's: a manual predict and a
    # manual score run can be given one run id.
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path))
    one_off, score = Workspace(JOB.name, "one-off", "one_off"), Workspace(JOB.name, "one-off", "score")
    assert one_off == score
    assert (one_off.root, one_off.quarantine, one_off.raw_chunk(0)) == (score.root, score.quarantine, score.raw_chunk(0))
    assert one_off.root != Workspace(JOB.name, "one-off", "predict").root
    Path(one_off.quarantine + one_off.chunk_part(2)).mkdir(parents=True)
    cleanup(JOB, "one-off", purpose="score")
    assert not Path(one_off.quarantine).exists()


def test_a_run_without_interval_or_schedule_scores_the_last_whole_period_before_it_was_due() -> None:
    assert last_period(JOB, "2024-03-02T05:30:00Z") == Window(datetime(2024, 3, 2, 4, tzinfo=UTC), datetime(2024, 3, 2, 5, tzinfo=UTC))
    assert last_period(JOB, datetime(2024, 3, 2, 5, tzinfo=UTC)).end == datetime(2024, 3, 2, 5, tzinfo=UTC)  # on the grid: ends there
