"""``timestamp_format``: how a job's timestamp text is written, checked when the job file loads."""

from __future__ import annotations

import pytest
import yaml

from pipelines.config import load_job_file
from pipelines.errors import ConfigError


def job_file(tmp_path, form: str):
    path = tmp_path / "web.yaml"
    job = {
        "name": "web",
        "source": {"kind": "file", "path": "data/x.csv"},
        "timestamp": "ts",
        "timestamp_format": form,
        "frequency": "1h",
        "features": ["value"],
        "model": {"kind": "seasonal_mad"},
    }
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


@pytest.mark.parametrize("form", ["%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M:%S%z", "%Y%m%d%H%M", "%d %b %Y %I:%M %p", "%d/%m/%y"])
def test_a_timestamp_format_of_a_date_loads(tmp_path, form: str) -> None:
    assert load_job_file(job_file(tmp_path, form)).timestamp_format == form


def test_no_timestamp_format_by_default(tmp_path) -> None:
    path = job_file(tmp_path, "%d/%m/%Y")
    path.write_text(path.read_text().replace("timestamp_format: '%d/%m/%Y'\n", ""))
    assert load_job_file(path).timestamp_format is None


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ("%d/%m %H:%M", "the format must hold the date: it lacks the year (%Y)"),
        ("%H:%M", "it lacks the year (%Y) and the month (%m) and the day (%d)"),
        ("%d/%m/%Y %H:%M %Z", "zone names (%Z) are ambiguous (CST is three zones): write the offsets and read them with %z"),
        ("%d/%m/%Y %I:%M", "%I (hour 1-12) needs %p (AM/PM), or 14:30 reads as 02:30"),
        ("%d/%m/%Y %H:%M %p", "%p (AM/PM) goes with %I (hour 1-12), not %H"),
        ("%d/%m/%Y %Q", "%Q is not a strptime directive that timestamps are read with"),
    ],
)
def test_a_timestamp_format_that_cannot_read_a_date_names_the_field_and_why(tmp_path, form: str, reason: str) -> None:
    path = job_file(tmp_path, form)
    with pytest.raises(ConfigError) as caught:
        load_job_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid job configuration")
    line = next(line for line in message.splitlines() if line.startswith("  timestamp_format:"))
    assert reason in line
    assert "e.g. '%d/%m/%Y %H:%M' for 13/01/2024 14:30" in line
    assert line.endswith(f"(got {form!r})")
