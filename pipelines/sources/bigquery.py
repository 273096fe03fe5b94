"""Google BigQuery: the job's standard-SQL query, with the window as ``@start``/``@end`` TIMESTAMP
query parameters (an unbounded side is bound as the earliest or latest timestamp) and the job's
``params`` as typed scalar parameters (STRING, INT64, FLOAT64, BOOL): values are bound, never
formatted into the SQL.

Credentials: see :mod:`pipelines.gcp` (an Airflow ``google_cloud_platform`` connection, else
Application Default Credentials; anonymous with ``api_endpoint``).

Results are downloaded with the BigQuery Storage Read API (gRPC) when
``google-cloud-bigquery-storage`` is installed and no ``api_endpoint`` is set; otherwise, and for
results that fit in one page, through the REST API's ``getQueryResults`` pages. Emulators and the
test stand-in speak REST only, so ``api_endpoint`` always takes the REST path. Column types map
to pandas as google-cloud-bigquery does: TIMESTAMP to UTC-aware ``datetime64[us, UTC]``, FLOAT64
to ``float64``, INT64 to ``Int64``, BOOL to ``boolean``, STRING to strings.

``google-cloud-bigquery`` is imported only here and only when a read runs.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import pandas as pd

from pipelines import gcp
from pipelines.config import BigQuerySource, JobConfig
from pipelines.errors import ConfigError
from pipelines.sources.base import bounds, describe_window, job_columns, source_error, utc_bound

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import bigquery

log = logging.getLogger(__name__)

PURPOSE = "The bigquery source"


def _scalar_type(value: str | int | float | bool) -> str:
    # bool before int: True is an int to Python but a BOOL to BigQuery.
    for python_type, name in ((bool, "BOOL"), (int, "INT64"), (float, "FLOAT64")):
        if isinstance(value, python_type):
            return name
    return "STRING"


def query_parameters(
    params: dict[str, str | int | float | bool], start: datetime, end: datetime
) -> list[bigquery.ScalarQueryParameter]:
    """``@start``/``@end`` as TIMESTAMP and each of ``params`` as the scalar type of its value."""
    from google.cloud import bigquery

    return [
        bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
        bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
        *(bigquery.ScalarQueryParameter(name, _scalar_type(value), value) for name, value in params.items()),
    ]


class BigQueryReader:
    """Reads a job's :class:`~pipelines.config.BigQuerySource`."""

    def __init__(self, job: JobConfig) -> None:
        if not isinstance(job.source, BigQuerySource):
            raise TypeError(f"BigQueryReader reads bigquery sources, not {job.source.kind!r}")
        self.job = job
        self.config = job.source

    @property
    def uses_storage_api(self) -> bool:
        """Whether large results download over the Storage Read API (see the module docstring)."""
        return gcp.use_storage_api(self.config.api_endpoint)

    def read(self, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        lo, hi = utc_bound(start), utc_bound(end)
        bigquery = gcp.require_bigquery(PURPOSE)
        fail = partial(source_error, self.job, self.config.describe(), lo, hi)
        first, last = bounds(lo, hi)
        job_config = bigquery.QueryJobConfig(query_parameters=query_parameters(self.config.params, first, last))
        client = self._client(lo, hi)
        retry = gcp.call_retry()
        try:
            with client:
                rows = client.query(self.config.query, job_config=job_config, retry=retry, job_retry=None)
                frame = gcp.to_frame(rows.result(retry=retry, job_retry=None), self.config.api_endpoint)
        except gcp.api_errors() as exc:
            raise fail(*gcp.explain(exc, endpoint=self.config.api_endpoint)) from exc
        log.info("job %s: read %d rows from %s", self.job.name, len(frame), self.config.describe())
        return job_columns(frame, self.job).reset_index(drop=True)

    def _client(self, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> bigquery.Client:
        try:
            return gcp.bigquery_client(
                purpose=PURPOSE,
                conn_id=self.config.conn_id,
                project=self.config.project,
                location=self.config.location,
                api_endpoint=self.config.api_endpoint,
            )
        except ConfigError as exc:
            raise ConfigError(
                f"job {self.job.name!r}: cannot read {self.config.describe()} for window "
                f"{describe_window(lo, hi)}: {exc}"
            ) from exc
