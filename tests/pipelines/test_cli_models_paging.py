"""`anomaly-pipelines models <job>` pages its series as GET .../model does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.cli import main
from pipelines.config import get_job
from pipelines.paging import PAGE_SERIES as MODEL_PAGE_SERIES
from pipelines.registry import ModelRegistry
from pipelines.training import registry_for
from tests.project_copy import using_project

#: Series of the job: two pages and a bit (the third holds SERIES - 2 * MODEL_PAGE_SERIES).
SERIES = 2 * MODEL_PAGE_SERIES + 7


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A job of SERIES series with a serving model each: two trained for real (tiny data, a
    seasonal_mad without season), the others registered and promoted with copies of their
    artifacts and metadata, as training would leave them (training 400 series takes a minute).
    Once for the module: the tests only read it."""
    with using_project(tmp_path_factory.mktemp("many")) as project:
        yield _many(project)


def _many(project: Path) -> ModelRegistry:
    times = pd.date_range("2024-02-01", periods=48, freq="1h", tz="UTC")
    frame = pd.DataFrame({
        "timestamp": np.tile(times.strftime("%Y-%m-%dT%H:%M:%SZ"), 2),
        "region": np.repeat(["r000", "r001"], len(times)),
        "requests": np.random.default_rng(0).normal(100, 5, 2 * len(times)).round(2),
    })
    frame.to_csv(project / "many.csv", index=False)
    job = {
        "name": "many", "source": {"kind": "file", "path": "many.csv", "format": "csv"}, "timestamp": "timestamp",
        "frequency": "1h", "dimensions": ["region"], "features": ["requests"],
        "model": {"kind": "seasonal_mad", "params": {"season": None, "level_window": 6}}, "training_window": "2d",
        "threshold": {"kind": "contamination", "value": 0.01},
        "schedules": {"train": "0 2 * * 0", "predict": "0 * * * *"}, "start_date": "2024-02-01",
        "outputs": {"parquet": "var/outputs"}, "validation": {"min_rows": 24}, "registry": "var/models",
    }
    (project / "config" / "jobs" / "many.yaml").write_text(yaml.safe_dump(job))
    assert main(["train", "many", "--end", "2024-02-03T00:00:00Z"]) == 0
    registry = registry_for(get_job("many"))
    trained = registry.champion("many", "region=r000")
    files = registry.load_files("many", "region=r000", trained.version)
    metadata = {k: v for k, v in trained.metadata.items() if k not in ("job", "series", "version", "registered_at")}
    for number in range(2, SERIES):
        key = f"region=r{number:03d}"
        version = registry.register("many", key, files, metadata)
        registry.promote("many", key, version.version)
    return registry


def _models(capsys, *args: str, job: str = "many") -> tuple[int, list[dict], str]:
    status = main(["models", job, *args])
    out, err = capsys.readouterr()
    return status, json.loads(out) if out else [], err


def test_models_lists_one_page_and_says_how_to_get_the_next(many, capsys, monkeypatch):
    read: list[str] = []
    champion = ModelRegistry.champion

    def reading(self, job, series):
        read.append(series)
        return champion(self, job, series)

    capsys.readouterr()
    monkeypatch.setattr(ModelRegistry, "champion", reading)
    status, listed, err = _models(capsys)
    assert status == 0
    expected = [f"region=r{number:03d}" for number in range(MODEL_PAGE_SERIES)]
    assert [m["series"] for m in listed] == expected
    # Only the page's champions were read: every series' was, minutes for a job of 100,000.
    assert read == expected
    assert listed[0]["model"] == "seasonal_mad" and listed[0]["version"] and "metadata" not in listed[0]
    assert f"page 1 of 3 ({SERIES} series); next: anomaly-pipelines models many --page 2" in err

    status, listed, err = _models(capsys, "--page", "2", "--full")
    assert status == 0
    assert [m["series"] for m in listed] == [f"region=r{n:03d}" for n in range(MODEL_PAGE_SERIES, 2 * MODEL_PAGE_SERIES)]
    assert all("metadata" in m for m in listed)
    assert f"page 2 of 3 ({SERIES} series); next: anomaly-pipelines models many --full --page 3" in err

    status, listed, err = _models(capsys, "--page", "3")
    assert status == 0 and len(listed) == SERIES - 2 * MODEL_PAGE_SERIES
    assert listed[-1]["series"] == f"region=r{SERIES - 1:03d}" and "next:" not in err and "no trained model" not in err


def test_a_page_past_the_last_names_the_number_of_pages(many, capsys):
    capsys.readouterr()
    status, listed, err = _models(capsys, "--page", "4")
    assert status == 2 and listed == []
    assert "job many: --page 4 is past the last page: its models fill 3 pages" in err
    assert f"({SERIES} series, {MODEL_PAGE_SERIES} a page); give --page 1 to 3" in err


@pytest.mark.parametrize("page", ["0", "-1", "two", "1.5"])
def test_a_page_that_is_no_page_number_is_an_argument_error(project, capsys, page):
    with pytest.raises(SystemExit) as exited:
        main(["models", "demo_web_metrics", "--page", page])
    assert exited.value.code == 2 and "--page" in capsys.readouterr().err


def test_series_still_lists_one_series_without_paging(many, capsys):
    capsys.readouterr()
    status, listed, err = _models(capsys, "--series", "region=r350")
    assert status == 0 and [m["series"] for m in listed] == ["region=r350"] and "page" not in err
    status, listed, err = _models(capsys, "--series", "region=r350", "--page", "2")
    assert status == 2 and "give --series or --page, not both" in err


def test_a_job_without_models_says_to_train_it(project, capsys):
    status, listed, err = _models(capsys, job="demo_web_metrics")
    assert status == 0 and listed == [] and "run `anomaly-pipelines train demo_web_metrics`" in err and "next:" not in err

