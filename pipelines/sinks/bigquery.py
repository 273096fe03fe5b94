"""Labeled anomalies in a BigQuery table shared by all jobs (``outputs.bigquery``).

A write replaces the rows of a job in a window, atomically:

1. the rows are loaded, as Parquet in the output schema, into a new staging table next to the
   target (expiring after a day, so a crash leaves nothing behind for long);
2. the target is created if missing (partitioned by day on ``timestamp``, clustered by ``job``,
   so the window's delete reads little), or given the dimension columns it lacks;
3. one multi-statement query, ``BEGIN TRANSACTION; DELETE`` the job's rows in ``[start, end)``;
   ``INSERT`` the staging rows; ``COMMIT TRANSACTION``, swaps the window: BigQuery rolls the
   transaction back when a statement fails, so the table holds the old rows or the new ones;
4. the staging table is dropped.

A failed load (step 1) never touches the target. Re-running a window replaces its rows, so a
retry adds no duplicates. When another write to the table conflicts with the transaction, BigQuery
aborts it ("... due to concurrent update") and rolls it back; since it replaces the window from the
staging table, which is still there, it simply runs again, up to :data:`CONFLICT_ATTEMPTS` times
with growing pauses (as does adding a column, ``ADD COLUMN IF NOT EXISTS``). Errors name the
BigQuery job that failed. Credentials: see :mod:`pipelines.gcp`.
"""

from __future__ import annotations

import io
import logging
import random
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines import gcp, schema
from pipelines.config import BigQueryOutput
from pipelines.errors import ConfigError, SinkError
from pipelines.sinks.base import as_output, checked_batch, utc

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import bigquery

log = logging.getLogger(__name__)

PURPOSE = "The bigquery output"
_TYPES = {"string": "STRING", "double": "FLOAT64", "bool": "BOOL"}
_KEYS = ("job", "series", "timestamp", "feature")
#: The legacy type names tables.get answers with, as the standard names of :data:`_TYPES`.
_STANDARD = {"FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "INTEGER": "INT64"}
#: How long a staging table outlives a write that crashed before dropping it.
STAGING_EXPIRY = timedelta(days=1)
#: How many times a statement that replaces what it writes runs when a concurrent update of the
#: table aborts it; then the error goes to the task (whose retries rerun the whole write).
CONFLICT_ATTEMPTS = 3
#: Seconds before the second attempt, doubled before each further one, with jitter (so writers
#: that collided do not collide again).
CONFLICT_BACKOFF = 2.0


def _fields(dimensions: list[str], *, required_keys: bool) -> list[bigquery.SchemaField]:
    from google.cloud import bigquery

    fields = [
        bigquery.SchemaField(
            name,
            "TIMESTAMP" if kind.startswith("timestamp") else _TYPES[kind],
            mode="REQUIRED" if required_keys and name in _KEYS else "NULLABLE",
        )
        for name, kind in schema.OUTPUT_COLUMNS.items()
    ]
    return fields + [bigquery.SchemaField(dim, "STRING") for dim in dimensions]


def _quoted(name: str) -> str:
    return f"`{name}`"


class BigQuerySink:
    """Writes a job's output window into the BigQuery table of ``output`` (see the module docstring)."""

    def __init__(self, output: BigQueryOutput) -> None:
        self.output = output
        self.table = output.table
        self.project, self.dataset, self.table_id = output.table.rsplit(".", 2)

    def _client(self) -> bigquery.Client:
        return gcp.bigquery_client(
            purpose=PURPOSE,
            conn_id=self.output.conn_id,
            project=self.project,
            location=self.output.location,
            api_endpoint=self.output.api_endpoint,
        )

    def write(self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: datetime, end: datetime) -> int:
        """Replace the rows of ``job`` in ``[start, end)`` by ``frame``; returns the rows written."""
        frame, start, end = checked_batch(frame, job=job, dimensions=dimensions, start=start, end=end)
        bigquery = gcp.require_bigquery(PURPOSE)
        staging = f"{self.project}.{self.dataset}._staging_{self.table_id}_{uuid.uuid4().hex[:12]}"
        retry = gcp.call_retry()
        try:
            client = self._client()
        except ConfigError as exc:
            raise ConfigError(f"job {job!r}: {self.output.describe()}: {exc}") from exc
        try:
            with client:
                try:
                    self._load(client, frame, dimensions, staging, retry)
                    where = f"could not write {len(frame)} rows of job {job!r} for [{start}, {end}) to {self.output.describe()}"
                    self._prepare(client, dimensions, retry, where)
                    columns = ", ".join(_quoted(c) for c in schema.output_columns(dimensions))
                    script = (
                        "BEGIN TRANSACTION;\n"
                        f"DELETE FROM {_quoted(self.table)} "
                        "WHERE `job` = @job AND `timestamp` >= @start AND `timestamp` < @end;\n"
                        f"INSERT INTO {_quoted(self.table)} ({columns}) SELECT {columns} FROM {_quoted(staging)};\n"
                        "COMMIT TRANSACTION;"
                    )
                    parameters = bigquery.QueryJobConfig(
                        query_parameters=[
                            bigquery.ScalarQueryParameter("job", "STRING", job),
                            bigquery.ScalarQueryParameter("start", "TIMESTAMP", start.to_pydatetime()),
                            bigquery.ScalarQueryParameter("end", "TIMESTAMP", end.to_pydatetime()),
                        ]
                    )
                    self._run_again_on_conflict(client, script, parameters, retry)
                finally:
                    self._drop(client, staging, retry)
        except gcp.api_errors() as exc:
            problem, todo = gcp.explain(exc, endpoint=self.output.api_endpoint)
            raise SinkError(
                f"could not write {len(frame)} rows of job {job!r} for [{start}, {end}) to {self.output.describe()}: "
                f"{problem}; the table keeps its previous rows. {todo} Then rerun: the write replaces "
                "the window, so a rerun adds no duplicates"
            ) from exc
        log.info("replaced the rows of job %s for [%s, %s) by %d in %s", job, start, end, len(frame), self.table)
        return len(frame)

    def _load(self, client: bigquery.Client, frame: pd.DataFrame, dimensions: list[str], staging: str, retry: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from google.cloud import bigquery

        table = bigquery.Table(staging, schema=_fields(dimensions, required_keys=False))
        table.expires = pd.Timestamp.now(tz="UTC").to_pydatetime() + STAGING_EXPIRY
        client.create_table(table, retry=retry)
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, schema=schema.arrow_schema(dimensions), preserve_index=False), buffer)
        size = buffer.tell()
        buffer.seek(0)
        # Into the empty table made just above (WRITE_EMPTY: never onto rows it did not load), so
        # the staging table keeps its schema and its expiry.
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=table.schema,
            write_disposition=bigquery.WriteDisposition.WRITE_EMPTY,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        )
        gcp.wait(client.load_table_from_file(buffer, staging, size=size, job_config=config), retry=retry)

    def _run_again_on_conflict(
        self, client: bigquery.Client, sql: str, config: bigquery.QueryJobConfig | None, retry: Any
    ) -> None:
        """Run ``sql``, again when a concurrent update of the table aborted it (see the module
        docstring): only for a statement that BigQuery rolls back whole when aborted and that
        replaces what it writes (the window's transaction, ``ADD COLUMN IF NOT EXISTS``)."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                client.query(sql, job_config=config, retry=retry, job_retry=None).result(retry=retry, job_retry=None)
                return
            except gcp.api_errors() as exc:
                if attempt == CONFLICT_ATTEMPTS or not gcp.is_concurrent_update(exc):
                    raise
                pause = CONFLICT_BACKOFF * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                failed = gcp.failed_job(exc)
                log.warning(
                    "a concurrent update of BigQuery table %s aborted job %s (attempt %d of %d); running it again in %.1f s",
                    self.table,
                    gcp.job_reference(failed) if failed is not None else "(no job)",
                    attempt,
                    CONFLICT_ATTEMPTS,
                    pause,
                )
                time.sleep(pause)

    def _prepare(self, client: bigquery.Client, dimensions: list[str], retry: Any, where: str) -> None:
        """Create the target table, or add the dimension columns it lacks (other jobs have other ones);
        an output column missing or of another type is refused before the window's rows are touched."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        try:
            existing = client.get_table(self.table, retry=retry)
        except NotFound:
            table = bigquery.Table(self.table, schema=_fields(dimensions, required_keys=True))
            table.time_partitioning = bigquery.TimePartitioning(field="timestamp")
            table.clustering_fields = ["job"]
            # Another job's first write may have created it since get_table, with its own
            # dimensions: exists_ok returns that table, which may still lack ours.
            existing = client.create_table(table, exists_ok=True, retry=retry)
            log.info("created BigQuery table %s", self.table)
        # BigQuery column names ignore case: a job's "region" is another job's "Region" column.
        present = {field.name.lower(): field for field in existing.schema}
        # The INSERT failed on such a column with BigQuery's words alone, and "Fix the query".
        wrong = []
        for field in _fields(dimensions, required_keys=False):
            found = present.get(field.name.lower())
            if found is None:
                if field.name in schema.OUTPUT_COLUMNS:  # dimension columns are added below
                    wrong.append(f"{field.name} ({field.field_type}) is missing")
            elif _STANDARD.get(found.field_type, found.field_type) != field.field_type:
                wrong.append(f"{found.name} is {found.field_type}, not {field.field_type}")
        if wrong:
            raise SinkError(
                f"{where}: the table's columns do not match the output's: {'; '.join(wrong)}; the table keeps its "
                "previous rows. Change or add those columns (ALTER TABLE ... ALTER COLUMN ... SET DATA TYPE, where "
                "BigQuery allows it; ADD COLUMN) or set outputs.bigquery.table to a new table, which the next run creates"
            )
        for dim in (d for d in dimensions if d.lower() not in present):
            sql = f"ALTER TABLE {_quoted(self.table)} ADD COLUMN IF NOT EXISTS {_quoted(dim)} STRING"
            self._run_again_on_conflict(client, sql, None, retry)
            log.info("added dimension column %s to BigQuery table %s", dim, self.table)

    def _drop(self, client: bigquery.Client, staging: str, retry: Any) -> None:
        try:
            client.delete_table(staging, not_found_ok=True, retry=retry)
        except gcp.api_errors() as exc:
            # The write itself is done (or already failed); the staging table expires on its own.
            log.warning("could not drop staging table %s (it expires within %s): %s", staging, STAGING_EXPIRY, exc)

    def read(self, *, job: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Rows of ``job`` in ``[start, end)`` with UTC-aware times, in the output schema."""
        bigquery = gcp.require_bigquery(PURPOSE)
        parameters = [bigquery.ScalarQueryParameter("job", "STRING", job)]
        query = f"SELECT * FROM {_quoted(self.table)} WHERE `job` = @job"
        for name, moment, comparison in (("start", start, ">="), ("end", end, "<")):
            if moment is not None:
                parameters.append(bigquery.ScalarQueryParameter(name, "TIMESTAMP", utc(moment).to_pydatetime()))
                query += f" AND `timestamp` {comparison} @{name}"
        retry = gcp.call_retry()
        try:
            with self._client() as client:
                rows = client.query(
                    query, job_config=bigquery.QueryJobConfig(query_parameters=parameters), retry=retry, job_retry=None
                ).result(retry=retry, job_retry=None)
                frame = gcp.to_frame(rows, self.output.api_endpoint)
        except gcp.api_errors() as exc:
            problem, todo = gcp.explain(exc, endpoint=self.output.api_endpoint)
            raise SinkError(f"could not read job {job!r} from {self.output.describe()}: {problem}. {todo}") from exc
        # The table holds the dimension columns of every job; those of other jobs are empty here.
        other = [c for c in frame.columns if c not in schema.OUTPUT_COLUMNS and frame[c].isna().all()]
        return as_output(_as_spelled_by_the_job(frame.drop(columns=other)))


def _as_spelled_by_the_job(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its dimension columns named as the job's series keys name them: BigQuery
    column names ignore case, so a job's "region" is stored in, and read back from, the "Region"
    column another job created."""
    from urllib.parse import unquote

    spelled: dict[str, str] = {}
    for key in frame["series"].dropna().unique():
        for part in str(key).split(","):
            name, equals, _ = part.partition("=")
            if equals:
                spelled[unquote(name).lower()] = unquote(name)
    renamed = {c: spelled[c.lower()] for c in frame.columns if c not in schema.OUTPUT_COLUMNS and c.lower() in spelled}
    return frame.rename(columns=renamed)
