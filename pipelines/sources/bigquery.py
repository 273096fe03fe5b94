"""Google BigQuery: the job's standard-SQL query, with the window as ``@start``/``@end`` query
parameters (an unbounded side is bound as the earliest or latest time) and the job's ``params`` as
typed scalar parameters (STRING, INT64, FLOAT64, BOOL): values are bound, never formatted into the
SQL.

The window is bound as the type of the column it is compared with, since BigQuery converts none
of TIMESTAMP, DATETIME and DATE to another implicitly (except DATE to DATETIME), and refuses
``dt >= @start`` for a DATETIME ``dt`` and a TIMESTAMP ``@start``: "No matching signature for
operator >= for argument types: DATETIME, TIMESTAMP". A dry run of the query (free; BigQuery keeps
no job) with TIMESTAMP parameters tells: if BigQuery refuses it with that error, naming DATETIME or
DATE beside TIMESTAMP, and a dry run with parameters of the type named passes, the query runs with
those: DATETIME as the UTC wall time, DATE as the first day whose midnight (UTC) is not before the
bound (so a day ``d`` is read exactly when its midnight lies in ``[start, end)``). Otherwise the
parameters are TIMESTAMP and the query itself reports any error, with its job ID. A query that
compares the window with columns of different types (a DATETIME and a TIMESTAMP) must convert
explicitly, e.g. ``dt >= DATETIME(@start)``; the message says so.

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
import re
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

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


#: The types the window can be bound as (see the module docstring).
WINDOW_TYPES = ("TIMESTAMP", "DATETIME", "DATE")


def _first_day_from(moment: datetime) -> date:
    """The first date whose midnight (UTC) is not before ``moment``; the last date for a later one."""
    moment = moment.astimezone(UTC)
    if moment.time() == time(0) or moment.date() == date.max:
        return moment.date()
    return moment.date() + timedelta(days=1)


def window_value(bound: datetime, kind: str) -> datetime | date | str:
    """An aware window bound as a parameter value of ``kind`` (one of :data:`WINDOW_TYPES`)."""
    if kind == "TIMESTAMP":
        return bound
    if kind == "DATETIME":
        # As text: the client formats a datetime with strftime, which writes year 1 (the earliest
        # bound) as "1-01-01", a DATETIME BigQuery refuses.
        return bound.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    if kind == "DATE":
        return _first_day_from(bound)
    raise ValueError(f"the window is bound as one of {WINDOW_TYPES}, not {kind!r}")


def query_parameters(
    params: dict[str, str | int | float | bool], start: datetime, end: datetime, window_type: str = "TIMESTAMP"
) -> list[bigquery.ScalarQueryParameter]:
    """``@start``/``@end`` as ``window_type`` and each of ``params`` as the scalar type of its value."""
    from google.cloud import bigquery

    return [
        bigquery.ScalarQueryParameter("start", window_type, window_value(start, window_type)),
        bigquery.ScalarQueryParameter("end", window_type, window_value(end, window_type)),
        *(bigquery.ScalarQueryParameter(name, _scalar_type(value), value) for name, value in params.items()),
    ]


_NO_MATCHING_SIGNATURE = re.compile(r"No matching signature for (?:operator|function) .+? for argument types: ([^.\n]*)")


def compared_type(exc: BaseException) -> str | None:
    """DATETIME or DATE when BigQuery refused to compare one with a TIMESTAMP ("No matching
    signature for operator >= for argument types: DATETIME, TIMESTAMP"), else None. DATE beside
    DATETIME gives DATETIME, which BigQuery compares with both."""
    match = _NO_MATCHING_SIGNATURE.search(gcp.error_text(exc))
    if match is None:
        return None
    named = set(re.findall(r"\b(?:TIMESTAMP|DATETIME|DATE)\b", match.group(1)))
    if "TIMESTAMP" not in named or len(named) < 2:
        return None
    return "DATE" if named == {"TIMESTAMP", "DATE"} else "DATETIME"


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
        client = self._client(lo, hi)
        retry = gcp.call_retry()
        try:
            with client:
                window_type = self._window_type(client, first, last, retry)
                job_config = bigquery.QueryJobConfig(
                    query_parameters=query_parameters(self.config.params, first, last, window_type)
                )
                rows = client.query(self.config.query, job_config=job_config, retry=retry, job_retry=None)
                frame = gcp.to_frame(rows.result(retry=retry, job_retry=None), self.config.api_endpoint)
        except gcp.api_errors() as exc:
            problem, todo = gcp.explain(exc, endpoint=self.config.api_endpoint)
            if compared_type(exc) is not None:
                todo = (
                    "BigQuery converts none of TIMESTAMP, DATETIME and DATE to another implicitly, and no one "
                    "type of @start and @end suits this query: convert explicitly where the types differ, e.g. "
                    f"dt >= DATETIME(@start) AND dt < DATETIME(@end) (UTC) or TIMESTAMP(dt) >= @start. {todo}"
                )
            raise fail(problem, todo) from exc
        log.info("job %s: read %d rows from %s", self.job.name, len(frame), self.config.describe())
        return job_columns(frame, self.job).reset_index(drop=True)

    def _dry_run(self, client: bigquery.Client, first: datetime, last: datetime, window_type: str, retry: Any) -> None:
        from google.cloud import bigquery

        parameters = query_parameters(self.config.params, first, last, window_type)
        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, query_parameters=parameters)
        client.query(self.config.query, job_config=config, retry=retry, job_retry=None)

    def _window_type(self, client: bigquery.Client, first: datetime, last: datetime, retry: Any) -> str:
        """The type to bind the window as, learnt from dry runs (see the module docstring)."""
        from google.api_core.exceptions import GoogleAPICallError

        try:
            self._dry_run(client, first, last, "TIMESTAMP", retry)
            return "TIMESTAMP"
        except GoogleAPICallError as exc:
            named = compared_type(exc)
        if named is None:  # any other answer: the query fails alike and reports it, with its job ID
            return "TIMESTAMP"
        try:
            self._dry_run(client, first, last, named, retry)
        except GoogleAPICallError:
            return "TIMESTAMP"  # compared with more than one type: the query reports BigQuery's error
        log.info("job %s: the window is compared with a %s column: @start and @end bound as such", self.job.name, named)
        return named

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
