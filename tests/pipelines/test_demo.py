"""The demo (`make demo`) runs its own jobs whatever other job files the project holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import demo

REPO = Path(__file__).resolve().parents[2]


def test_a_broken_job_file_of_the_user_hides_no_demo_job(project: Path) -> None:
    # The demo loaded every job and stopped at any import error: one broken file of the user's
    # ended `make demo` in a traceback though the demo's jobs were fine.
    (project / "dags").symlink_to(REPO / "dags")
    (project / "config" / "jobs" / "mine.yaml").write_text("name: mine\nsource: {kind: file, path: x.csv}\n")

    bag_dags = demo._loaded_dags()
    assert {f"{name}__predict" for name in demo.DEMO_JOBS} <= set(bag_dags.dags)
    with pytest.raises(RuntimeError, match=r"(?s)the DAG mine__train was not loaded; DAG import errors:\n.*mine\.yaml: invalid job configuration"):
        demo._run_dag("mine__train", {}, demo.TRAIN_END)


def test_a_demo_job_that_cannot_run_is_one_error_line_not_a_traceback(project: Path, capsys) -> None:
    # `make demo` ended in a traceback of the demo's own code, the reason in its last line.
    (project / "config" / "jobs" / "demo_sensors.yaml").write_text("name: demo_sensors\nfeatures: []\n")

    assert demo.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no job named 'demo_sensors'; configured jobs: demo_web_metrics. 1 job file(s) make no job until fixed:")
    assert "demo_sensors.yaml: invalid job configuration" in err


def test_the_demos_help_names_its_command_in_plain_text(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        demo.main(["--help"])
    out = capsys.readouterr().out
    assert stopped.value.code == 0 and out.startswith("usage: python -m pipelines.demo [-h] [--setup-only]")
    assert "``" not in out and "`make demo`" in out
