"""``anomaly-pipelines predict`` when some series have no model yet: the others are scored, and
the last line names the ones that are not and the command that trains them."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.cli import main
from pipelines.config import get_job
from pipelines.training import registry_for


def test_predict_names_the_series_without_a_model_and_the_command_that_trains_them(project, capsys):
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    job = get_job("demo_web_metrics")
    # As a region new since the last training: its folder holds no champion.
    (Path(registry_for(job).root) / job.name / "region=apac" / "champion.json").unlink()
    capsys.readouterr()

    assert main(["predict", job.name, "--start", "2024-03-03T00:00:00Z", "--end", "2024-03-04T00:00:00Z"]) == 0

    out, err = capsys.readouterr()
    assert list(json.loads(out)["unscored"]) == ["region=apac"]
    assert err.endswith(
        "not scored, no model yet: region=apac. Train them with `anomaly-pipelines train demo_web_metrics` "
        "(or the demo_web_metrics__train DAG) on a window holding their rows, then score again\n"
    )
