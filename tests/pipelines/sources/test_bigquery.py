from __future__ import annotations

import sys

import pandas as pd
import pytest

from pipelines.errors import MissingDependencyError
from pipelines.sources import read_window


def test_without_the_package_the_error_gives_the_install_command(make_job, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", None)  # as if not installed
    job = make_job({"kind": "bigquery", "query": "SELECT * FROM m WHERE ts >= @start AND ts < @end"})

    with pytest.raises(
        MissingDependencyError,
        match=r"^The bigquery source needs the optional package 'google-cloud-bigquery': "
        r"pip install 'anomaly-pipelines\[bigquery\]' \(or pip install google-cloud-bigquery\)$",
    ):
        read_window(job, pd.Timestamp("2024-01-01", tz="UTC"), None)
