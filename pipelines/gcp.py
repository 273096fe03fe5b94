"""Google Cloud credentials and BigQuery clients for the BigQuery source and output.

Credentials come, in this order, from:

1. ``api_endpoint`` (an emulator or a local stand-in of the REST API): anonymous credentials,
   since such endpoints accept no Google tokens;
2. the Airflow ``google_cloud_platform`` connection ``conn_id``: its extras ``keyfile_dict``
   (the service-account JSON), ``key_path`` (a file holding it), ``project`` and ``scope``
   (comma-separated), each with or without the ``extra__google_cloud_platform__`` prefix; with
   neither key, Application Default Credentials with the connection's project and scopes;
3. Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, the metadata
   server).

The connection is read with ``airflow.sdk.Connection.get`` and turned into google-auth
credentials here rather than through the Google provider's ``GoogleBaseHook``: the provider
pulls in ray and litellm, far too much for reading four extras.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from pipelines.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from google.auth.credentials import Credentials
    from google.cloud import bigquery

log = logging.getLogger(__name__)

#: What the Google provider asks for when a connection names no scope.
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_PREFIX = "extra__google_cloud_platform__"
#: Extras of the provider's connection that need its machinery (Secret Manager, workload
#: identity federation, impersonation); refused by name instead of silently ignored.
_UNSUPPORTED = ("key_secret_name", "credential_config_file", "impersonation_chain")


def _extra(extras: dict[str, Any], name: str) -> Any:
    value = extras.get(name)
    if value in (None, ""):
        value = extras.get(_PREFIX + name)
    return None if value == "" else value


def _scopes(extras: dict[str, Any]) -> tuple[str, ...]:
    scope = _extra(extras, "scope")
    if not scope:
        return DEFAULT_SCOPES
    return tuple(part.strip() for part in str(scope).split(",") if part.strip())


def connection_credentials(conn_id: str) -> tuple[Credentials, str | None]:
    """Credentials and project of the Airflow ``google_cloud_platform`` connection ``conn_id``."""
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError as exc:
        raise MissingDependencyError("apache-airflow", "airflow", f"Airflow connection {conn_id!r}") from exc
    try:
        extras = Connection.get(conn_id).extra_dejson
    except AirflowNotFoundException as exc:
        raise ConfigError(
            f"Airflow connection {conn_id!r} does not exist: create it (airflow connections add {conn_id} "
            f"--conn-type google_cloud_platform --conn-extra '{{\"key_path\": ...}}') or set "
            f"AIRFLOW_CONN_{conn_id.upper()}"
        ) from exc
    unsupported = [name for name in _UNSUPPORTED if _extra(extras, name)]
    if unsupported:
        raise ConfigError(
            f"Airflow connection {conn_id!r}: extras {unsupported} are not supported here; give the "
            "service account as keyfile_dict or key_path, or leave both out to use Application Default Credentials"
        )
    scopes = _scopes(extras)
    project = _extra(extras, "project")
    keyfile, key_path = _extra(extras, "keyfile_dict"), _extra(extras, "key_path")
    if keyfile and key_path:
        raise ConfigError(f"Airflow connection {conn_id!r}: give keyfile_dict or key_path, not both")
    if keyfile is None and key_path is None:
        credentials, default_project = default_credentials(scopes)
        return credentials, project or default_project
    info = _keyfile(conn_id, keyfile, key_path)
    from google.oauth2 import service_account

    try:
        credentials = service_account.Credentials.from_service_account_info(info, scopes=scopes)
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"Airflow connection {conn_id!r}: the service-account key is not valid ({exc}); "
            "download a new JSON key of the service account and store it in keyfile_dict or key_path"
        ) from exc
    return credentials, project or info.get("project_id")


def _keyfile(conn_id: str, keyfile: Any, key_path: Any) -> dict[str, Any]:
    if key_path is not None:
        try:
            with open(str(key_path), encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigError(
                f"Airflow connection {conn_id!r}: cannot read key_path {str(key_path)!r} ({exc.strerror}); "
                "put the service-account JSON there or use keyfile_dict"
            ) from exc
        where = f"key_path {str(key_path)!r}"
    elif isinstance(keyfile, dict):
        return keyfile
    else:
        text, where = str(keyfile), "keyfile_dict"
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"Airflow connection {conn_id!r}: {where} is not JSON ({exc}); it must hold the service-account key file"
        ) from exc
    if not isinstance(info, dict):
        raise ConfigError(f"Airflow connection {conn_id!r}: {where} must hold a JSON object (a service-account key)")
    return info


def default_credentials(scopes: tuple[str, ...] = DEFAULT_SCOPES) -> tuple[Credentials, str | None]:
    """Application Default Credentials and their project."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return google.auth.default(scopes=list(scopes))
    except DefaultCredentialsError as exc:
        raise ConfigError(
            f"no Google credentials found ({exc}); set conn_id to an Airflow google_cloud_platform connection, "
            "point GOOGLE_APPLICATION_CREDENTIALS at a service-account key, or run "
            "`gcloud auth application-default login`"
        ) from exc


def credentials_and_project(conn_id: str | None, *, api_endpoint: str | None = None) -> tuple[Credentials, str | None]:
    """The credentials to use (see the module docstring for the order) and their project, if any."""
    if api_endpoint:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials(), None
    if conn_id:
        return connection_credentials(conn_id)
    return default_credentials()


def require_bigquery(purpose: str) -> Any:
    """The ``google.cloud.bigquery`` module; ``purpose`` (e.g. "The bigquery source") begins the
    error that gives the install command when it is missing."""
    import importlib

    try:
        return importlib.import_module("google.cloud.bigquery")
    except ImportError as exc:
        raise MissingDependencyError("google-cloud-bigquery", "bigquery", purpose) from exc


def bigquery_client(
    *,
    purpose: str,
    conn_id: str | None = None,
    project: str | None = None,
    location: str | None = None,
    api_endpoint: str | None = None,
) -> bigquery.Client:
    """A BigQuery client; ``purpose`` (e.g. "The bigquery source") begins the error of a missing package."""
    bigquery = require_bigquery(purpose)
    credentials, found = credentials_and_project(conn_id, api_endpoint=api_endpoint)
    project = project or found
    if not project:
        raise ConfigError(
            f"{purpose}: no Google Cloud project is known; set project in the job file "
            "(or the connection's project extra)"
        )
    options = {"api_endpoint": api_endpoint} if api_endpoint else None
    log.debug("BigQuery client for project %s%s", project, f" at {api_endpoint}" if api_endpoint else "")
    return bigquery.Client(project=project, credentials=credentials, location=location, client_options=options)


def use_storage_api(api_endpoint: str | None) -> bool:
    """Whether query results should download over the BigQuery Storage Read API (gRPC).

    Only when google-cloud-bigquery-storage is installed and no ``api_endpoint`` is set:
    emulators and stand-ins of the REST API do not speak the Storage API's gRPC protocol.
    """
    import importlib.util

    if api_endpoint:
        return False
    try:
        return importlib.util.find_spec("google.cloud.bigquery_storage") is not None
    except ImportError:
        return False


#: Seconds the client keeps retrying a call that failed in a way worth retrying (connection
#: refused, 5xx, rate limits) before giving up; after that the Airflow task's retries take over.
RETRY_TIMEOUT = 120.0


def call_retry() -> Any:
    """google-cloud-bigquery's retry of single API calls, bounded by :data:`RETRY_TIMEOUT`.

    Pass it with ``job_retry=None`` to ``Client.query`` and ``QueryJob.result``: the client's
    job-level retry wraps jobs.insert in a private retry with a fixed ten-minute deadline
    (``google.cloud.bigquery.retry._DEFAULT_QUERY_JOB_INSERT_RETRY``), so an unreachable endpoint
    would hang a task for ten minutes; restarting a failed job is left to the task's retries.
    """
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(RETRY_TIMEOUT)


def api_errors() -> tuple[type[BaseException], ...]:
    """What a BigQuery call raises when it fails (API answers, auth, transport, timeouts);
    :func:`explain` turns each into a message."""
    import concurrent.futures

    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    return (GoogleAPIError, GoogleAuthError, requests.RequestException, concurrent.futures.TimeoutError)


def _reason(exc: BaseException) -> str | None:
    errors = getattr(exc, "errors", None) or []
    return errors[0].get("reason") if errors and isinstance(errors[0], dict) else None


def error_text(exc: BaseException) -> str:
    """BigQuery's own message in ``exc`` (its first error), whole; else the exception's text."""
    errors = getattr(exc, "errors", None) or []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    return str(first.get("message") or getattr(exc, "message", None) or str(exc) or type(exc).__name__)


def _message(exc: BaseException) -> str:
    text = " ".join(error_text(exc).split())
    return text if len(text) <= 400 else text[:400] + "..."


def wait(job: Any, *, retry: Any) -> Any:
    """``job.result(retry=retry)`` for a job other than a query (a load): its failure carries the job,
    as google-cloud-bigquery attaches a failed query's job (``query_job``), for :func:`failed_job`."""
    from google.api_core.exceptions import GoogleAPIError

    try:
        return job.result(retry=retry)
    except GoogleAPIError as exc:
        if getattr(exc, "query_job", None) is None:
            exc.bigquery_job = job  # type: ignore[attr-defined]
        raise


def failed_job(exc: BaseException) -> Any | None:
    """The BigQuery job whose failure ``exc`` reports, to be looked up in the console; None when
    there is none to look up: the request was refused before BigQuery answered with a job (the
    client names a job ID it made up), or the job was a dry run, which BigQuery does not keep."""
    job = getattr(exc, "query_job", None) or getattr(exc, "bigquery_job", None)
    if job is None or getattr(job, "state", None) is None or getattr(job, "dry_run", False):
        return None
    return job


def job_reference(job: Any) -> str:
    """``project:location.job_id``, the full ID the BigQuery console shows and searches for."""
    location = f"{job.location}." if job.location else ""
    return f"{job.project}:{location}{job.job_id}"


_CONCURRENT_UPDATE = re.compile(r"due to concurrent update|could not serialize access", re.IGNORECASE)


def is_concurrent_update(exc: BaseException) -> bool:
    """Whether BigQuery aborted a statement because another write changed the same table meanwhile.

    BigQuery says so with reason ``aborted``, or (for years, and still for DML statements) with
    reason ``invalidQuery`` and HTTP 400: "Could not serialize access to table ... due to concurrent
    update", or for a multi-statement transaction "Transaction is aborted due to concurrent update
    against table ...". The aborted statement or transaction changed nothing; one that replaces
    what it writes can run again.
    """
    from google.api_core import exceptions as api

    if isinstance(exc, api.RetryError) and exc.cause is not None:
        exc = exc.cause
    return _reason(exc) == "aborted" or bool(_CONCURRENT_UPDATE.search(error_text(exc)))


def explain(exc: BaseException, *, endpoint: str | None = None) -> tuple[str, str]:
    """What went wrong in a BigQuery call and what to do, for a message naming job and window;
    when BigQuery ran a job, the problem names it (``project:location.job_id``) and the advice says
    where to look it up."""
    from google.api_core import exceptions as api

    if isinstance(exc, api.RetryError) and exc.cause is not None:
        exc = exc.cause
    problem, todo = _explain(exc, endpoint=endpoint)
    job = failed_job(exc)
    if job is None:
        return problem, todo
    location = f" --location={job.location}" if job.location else ""
    return (
        f"{problem} in BigQuery job {job_reference(job)}",
        f"{todo} The job's details: BigQuery console > Job history, or bq show -j{location} {job.project}:{job.job_id}.",
    )


def _explain(exc: BaseException, *, endpoint: str | None) -> tuple[str, str]:
    from google.api_core import exceptions as api
    from google.auth.exceptions import GoogleAuthError

    where = endpoint or "the BigQuery API"
    if is_concurrent_update(exc):
        return (
            f"another write to the same table ran at the same time and BigQuery aborted this one ({_message(exc)})",
            "Nothing was changed (BigQuery rolled the statement back). Let the task's retries run it again; if it "
            "keeps happening, keep other jobs or runs from writing the same table at the same time.",
        )
    # BigQuery answers an exceeded quota or rate limit with 403 Forbidden (reason quotaExceeded
    # or rateLimitExceeded), not only 429: the reason, not the status, tells it from a denial.
    if isinstance(exc, api.TooManyRequests) or _reason(exc) in ("quotaExceeded", "rateLimitExceeded"):
        return (
            f"a BigQuery quota or rate limit was exceeded ({_message(exc)})",
            "Wait and let the task's retries try again; if it keeps failing, raise the quota named in the "
            "message (IAM & Admin > Quotas) or spread the jobs out.",
        )
    if isinstance(exc, api.NotFound):
        return (
            f"a table, dataset or project was not found ({_message(exc)})",
            "Check the project, dataset and table names, and the location of the dataset.",
        )
    if isinstance(exc, api.Forbidden | api.Unauthorized | GoogleAuthError):
        return (
            f"permission denied or credentials rejected ({_message(exc)})",
            "Check the credentials (conn_id or Application Default Credentials): their account needs "
            "roles/bigquery.jobUser on the project and read (source) or write (output) access to the tables.",
        )
    if isinstance(exc, api.BadRequest):
        return (
            f"BigQuery rejected the request ({_message(exc)})",
            "Fix the query or the table (try it in the BigQuery console with the same parameters).",
        )
    return (
        f"cannot reach {where} or it failed ({_message(exc)})",
        "Check the network access to BigQuery (and api_endpoint if set); the task's retries will try again.",
    )


def to_frame(rows: Any, api_endpoint: str | None) -> Any:
    """The rows of a finished query as a pandas frame: INT64 as ``Int64`` and BOOL as ``boolean``
    (nullable, so a NULL stays missing), TIMESTAMP as ``datetime64[us, UTC]``, FLOAT64 as float64.

    Through Arrow rather than ``RowIterator.to_dataframe``, which google-cloud-bigquery deprecates
    in favour of pandas-gbq; the Arrow path is the one both use underneath. The Arrow table is
    freed column by column while it converts (``self_destruct``), so a large result is not held
    twice in memory.
    """
    import pandas as pd
    import pyarrow as pa

    nullable = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    table = rows.to_arrow(create_bqstorage_client=use_storage_api(api_endpoint))
    # Nothing else refers to the table: self_destruct makes it unusable after this call.
    return table.to_pandas(types_mapper=nullable.get, split_blocks=True, self_destruct=True)
