"""A timestamp that pandas dates by the clock ("now", "today", a time without a date) is kept for
validation to name, not dated the day of the run and dropped outside the window unseen."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import FileSource, get_job
from pipelines.errors import DataValidationError
from pipelines.extraction import extract, read_parquet, validate
from pipelines.workspace import Window, to_utc

DAY = Window(to_utc("2024-03-03T00:00:00Z"), to_utc("2024-03-04T00:00:00Z"))


@pytest.mark.parametrize("written", ["now", "today", "10:30", "23:59:59"])
def test_a_timestamp_dated_by_the_clock_reaches_validation_which_names_its_row(project: Path, written: str) -> None:
    times = pd.date_range(DAY.start, periods=24, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    rows = [(time, "eu", 10.0, 1.5) for time in times] + [(written, "eu", 99.0, 1.5)]
    path = project / "metrics.csv"
    pd.DataFrame(rows, columns=["timestamp", "region", "requests", "latency_ms"]).to_csv(path, index=False)
    job = get_job("demo_web_metrics")
    job = job.model_copy(
        update={"source": FileSource(kind="file", path=str(path), format="csv"), "validation": job.validation.model_copy(update={"suite": None})}
    )

    extracted = extract(job, DAY, run_id="clock")
    assert len(read_parquet(extracted.paths[0])) == 25
    with pytest.raises(DataValidationError, match=rf"sample values \[\"{written}\"\], at rows \[25\]"):
        validate(job, DAY, run_id="clock", purpose="predict", raw_path=extracted.paths[0])
