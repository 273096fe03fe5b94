"""One-off scoring (predict --input, the predict DAG's `input`) of a file holding a group with no
model: the groups with one are scored and written, the others named with the command that trains them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.config import get_job
from pipelines.errors import ModelError
from pipelines.runner import run_score_file

DATA = Path(__file__).resolve().parents[2] / "data" / "demo" / "web_metrics.csv"


@pytest.fixture
def trained(project):
    # The shipped suite allows only the three demo regions: a new one would fail validation first.
    job_file = project / "config" / "jobs" / "demo_web_metrics.yaml"
    job_file.write_text(job_file.read_text().replace("  suite: config/expectations/demo_web_metrics.json\n", ""))
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    return get_job("demo_web_metrics")


def _with_new_region(path: Path, *, only_new: bool = False) -> str:
    data = pd.read_csv(DATA)
    new = data[data["region"] == "eu"].assign(region="latam")
    (new if only_new else pd.concat([data, new]).sort_values("timestamp", kind="stable")).to_csv(path, index=False)
    return str(path)


def test_a_group_without_a_model_is_named_and_the_others_written(trained, tmp_path, capsys):
    output = tmp_path / "scored.parquet"
    capsys.readouterr()

    # Small chunks: the new group is in every one of them.
    assert main(["predict", trained.name, "--input", _with_new_region(tmp_path / "in.csv"), "--output", str(output),
                 "--chunk-rows", "1000"]) == 0

    out, err = capsys.readouterr()
    result = json.loads(out)
    assert list(result["unscored"]) == ["region=latam"]
    assert "`anomaly-pipelines train demo_web_metrics`" in result["unscored"]["region=latam"]
    assert set(pd.read_parquet(output)["series"]) == {"region=eu", "region=us", "region=apac"}
    assert "not scored, no model yet: region=latam. Train them with `anomaly-pipelines train demo_web_metrics`" in err


def test_a_file_of_only_groups_without_a_model_fails_and_writes_nothing(trained, tmp_path):
    output = tmp_path / "scored.parquet"
    with pytest.raises(ModelError, match=r"no champion model is serving for any series of the input \(region=latam\); "
                       r"nothing was scored and .* was not written. Run the train DAG \(demo_web_metrics__train\)"):
        run_score_file(trained, _with_new_region(tmp_path / "in.csv", only_new=True), run_id="one-off", output=str(output))
    assert not output.exists()
