"""Values the raw batch keeps as written, so validation judges what the source held."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import FileSource, PythonSource, get_job
from pipelines.errors import DataValidationError, SourceDataError
from pipelines.extraction import extract, extract_chunks, validate
from pipelines.workspace import Window, to_utc

DAY = Window(to_utc("2024-03-03T00:00:00Z"), to_utc("2024-03-04T00:00:00Z"))


@pytest.mark.parametrize("flag", [True, False])
def test_true_or_false_among_numbers_of_a_feature_is_named_by_validation_not_stored_as_a_number(project: Path, flag: bool) -> None:
    times = pd.date_range(DAY.start, periods=24, freq="h").strftime("%Y-%m-%dT%H:%M:%SZ")
    records = [{"timestamp": t, "region": "eu", "requests": flag if i == 5 else 10.5 + i, "latency_ms": 1.5} for i, t in enumerate(times)]
    path = project / "metrics.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    job = get_job("demo_web_metrics")
    job = job.model_copy(
        update={"source": FileSource(kind="file", path=str(path), format="jsonl"), "validation": job.validation.model_copy(update={"suite": None})}
    )
    extracted = extract(job, DAY, run_id="flags")

    with pytest.raises(DataValidationError, match=rf"expect_column_values_to_be_in_type_list on requests, 1 unexpected, sample values \[\"{flag}\"\], at rows \[6\]"):
        validate(job, DAY, run_id="flags", purpose="predict", raw_path=extracted.paths[0])



def decimal_devices(start: object, end: object) -> pd.DataFrame:
    """What a NUMERIC(20) device id gives (Decimal objects): two ids that one float64 cannot tell apart."""
    times = pd.date_range(DAY.start, periods=24, freq="h")
    devices = [Decimal("9007199254740992"), Decimal("9007199254740993"), Decimal("7")]
    return pd.DataFrame(
        [(t, device, 10.0 + i, 1.5) for i, t in enumerate(times) for device in devices],
        columns=["timestamp", "device", "requests", "latency_ms"],
    )


def test_a_decimal_dimension_keeps_each_id_as_written(project: Path) -> None:
    job = get_job("demo_web_metrics")
    job = job.model_copy(
        update={
            "dimensions": ["device"],
            "source": PythonSource(kind="python", callable="tests.pipelines.test_extraction_values:decimal_devices"),
            "validation": job.validation.model_copy(update={"suite": None}),
        }
    )
    extracted = extract(job, DAY, run_id="decimal")

    keys = validate(job, DAY, run_id="decimal", purpose="predict", raw_path=extracted.paths[0])

    assert keys == ["device=7", "device=9007199254740992", "device=9007199254740993"]


def test_a_one_off_input_too_short_names_the_job_and_what_to_do(project: Path) -> None:
    path = project / "input.csv"
    path.write_text("timestamp,region,requests,latency_ms\n2024-03-03T00:00:00Z,eu,1,1.5\n")

    with pytest.raises(SourceDataError) as info:
        extract_chunks(get_job("demo_web_metrics"), run_id="short", input_path=str(path), chunk_rows=10)

    assert str(info.value) == (
        f"job 'demo_web_metrics': input file {str(path)!r} holds 1 rows; the job needs at least 24 (validation.min_rows): "
        "score a longer input (or lower the job's validation.min_rows), then re-run. Nothing was scored or written."
    )
