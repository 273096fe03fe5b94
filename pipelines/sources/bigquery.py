"""Google BigQuery: the job's standard-SQL query, with the window as ``@start``/``@end`` TIMESTAMP
query parameters (an unbounded side is bound as the earliest or latest timestamp).

Credentials come from the Airflow ``google_cloud_platform`` connection ``conn_id`` when set,
else from Application Default Credentials. ``google-cloud-bigquery`` is imported only here and
only when a read runs.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from pipelines.config import BigQuerySource, JobConfig
from pipelines.errors import MissingDependencyError
from pipelines.sources.base import bounds, job_columns, source_error, utc_bound

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import bigquery

log = logging.getLogger(__name__)


class BigQueryReader:
    """Reads a job's :class:`~pipelines.config.BigQuerySource`."""

    def __init__(self, job: JobConfig) -> None:
        if not isinstance(job.source, BigQuerySource):
            raise TypeError(f"BigQueryReader reads bigquery sources, not {job.source.kind!r}")
        self.job = job
        self.config = job.source

    def read(self, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        lo, hi = utc_bound(start), utc_bound(end)
        try:
            from google.api_core.exceptions import GoogleAPIError
            from google.auth.exceptions import GoogleAuthError
            from google.cloud import bigquery
        except ImportError as exc:
            raise MissingDependencyError("google-cloud-bigquery", "bigquery", "The bigquery source") from exc
        first, last = bounds(lo, hi)
        parameters = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("start", "TIMESTAMP", first),
                bigquery.ScalarQueryParameter("end", "TIMESTAMP", last),
            ]
        )
        try:
            client = self._client()
            frame = client.query(self.config.query, job_config=parameters).to_dataframe()
        except (GoogleAPIError, GoogleAuthError) as exc:
            raise source_error(
                self.job,
                self.config.describe(),
                lo,
                hi,
                f"the query failed ({exc})",
                "Check the query, that its project and tables exist, and that the credentials may run "
                "query jobs and read those tables.",
            ) from exc
        log.info("job %s: read %d rows from %s", self.job.name, len(frame), self.config.describe())
        return job_columns(frame, self.job).reset_index(drop=True)

    def _client(self) -> bigquery.Client:
        from google.cloud import bigquery

        if not self.config.conn_id:
            return bigquery.Client(project=self.config.project, location=self.config.location)
        try:
            from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
        except ImportError as exc:
            raise MissingDependencyError(
                "apache-airflow-providers-google", "bigquery", f"Airflow connection {self.config.conn_id!r}"
            ) from exc
        hook = GoogleBaseHook(gcp_conn_id=self.config.conn_id)
        credentials, project = hook.get_credentials_and_project_id()
        return bigquery.Client(
            project=self.config.project or project, credentials=credentials, location=self.config.location
        )
