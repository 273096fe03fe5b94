"""A local stand-in of the BigQuery REST API (v2) for tests, backed by DuckDB.

BigQuery cannot run here, so the real ``google-cloud-bigquery`` client is pointed at this
server (``client_options={"api_endpoint": standin.url}`` with anonymous credentials). It serves
the endpoints the client calls for the BigQuery source and output:

* query jobs: ``jobs.insert``, ``jobs.get``, ``jobs.getQueryResults`` with paging
  (``maxResults``/``pageToken``/``startIndex``, ``totalRows``), as ``Client.query`` calls them;
* ``tables.get``/``insert``/``delete``, ``datasets.get``/``insert``;
* load jobs from Parquet through the client's multipart and resumable uploads.

Queries are evaluated for real by DuckDB: ``@name`` parameters become DuckDB's ``$name`` and are
bound with the typed values the client sent, and a backtick-quoted ```project.dataset.table```
becomes ``"dataset"."table"`` (a dataset is a DuckDB schema; the project is not modelled; a
backtick-quoted column name becomes a double-quoted one). A script (several statements) runs
statement by statement; ``BEGIN TRANSACTION`` ... ``COMMIT TRANSACTION`` is a DuckDB
transaction, rolled back when a statement fails.

Errors come back as BigQuery reports them: a failed job (query or load) has a job ID and is
``DONE`` with an ``errorResult`` (``invalidQuery``, ``notFound``), which ``jobs.get`` and
``jobs.getQueryResults`` report too; a missing table is an HTTP 404 ``notFound``; ``deny = True``
answers every call with HTTP 403 ``accessDenied``, and ``fail_with`` (an :class:`ApiError`, e.g.
403 ``quotaExceeded``) answers every call with that error. ``fail_loads`` makes load jobs fail
(``invalid``) without touching any table. ``abort_commits`` holds errors (see
:func:`concurrent_update`) that abort the next transactions at ``COMMIT TRANSACTION``, one each:
the statements before it have run, the transaction is rolled back and the job fails, as BigQuery
aborts a transaction that conflicts with another write to its table. Every request is kept in
``requests`` so tests can check what the client sent.

Dry runs (``configuration.dryRun``) are checked, never run: the answer is the job with the
result's schema and no job is kept; an invalid query is an HTTP 400 from ``jobs.insert``, as
BigQuery answers a dry run.

Types: BigQuery's TIMESTAMP is DuckDB's ``TIMESTAMPTZ``, DATETIME is ``TIMESTAMP`` (naive) and
DATE is ``DATE``; query parameters of those types are bound as such. BigQuery converts neither
DATETIME nor DATE to TIMESTAMP (nor back) implicitly, while DuckDB does; so before a statement
runs, its bound plan (DuckDB's ``json_serialize_plan``, parameters inlined as typed literals) is
searched for DuckDB's implicit cast of a DATETIME or DATE to TIMESTAMP, and the statement is
refused as BigQuery refuses it: ``invalidQuery`` "No matching signature for operator >= for
argument types: DATETIME, TIMESTAMP". DATE to DATETIME, which BigQuery does convert, is allowed.
What this check cannot catch:

* the SQL is DuckDB's, not rewritten: BigQuery's ``TIMESTAMP '...'`` literal and
  ``CAST(x AS TIMESTAMP)`` are DATETIME to DuckDB (so comparing them with a TIMESTAMP is refused
  here but not by BigQuery), and BigQuery's ``DATETIME(ts)``/``TIMESTAMP(dt)`` conversions do not
  exist in DuckDB (so a query written with them cannot run here at all);
* BigQuery's message also names the position (`` at [1:38]``) and, for ``BETWEEN``, the operator
  BETWEEN: DuckDB's plan has turned ``BETWEEN`` into ``>=`` and ``<=``, and the message here names
  neither position nor BETWEEN;
* other type rules of BigQuery (e.g. INT64 against STRING, which DuckDB refuses too, or NUMERIC
  against FLOAT64) are DuckDB's, not BigQuery's.

Not modelled: ``jobs.query`` and ``tabledata.list`` (``Client.query(...).result()`` calls
neither), BigQuery's SQL dialect beyond what DuckDB shares with it (``@name`` is rewritten
roughly: a string literal holding ``@word`` would be rewritten too), the Storage Read API (gRPC),
locations, quotas and authentication; a dry run of a script checks each statement on its own.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import pyarrow as pa

#: DuckDB column types as BigQuery reports them (legacy names, as the REST API does).
_BQ_TYPES = (
    ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP"),
    ("TIMESTAMP", "DATETIME"),
    ("DOUBLE", "FLOAT"),
    ("FLOAT", "FLOAT"),
    ("REAL", "FLOAT"),
    ("DECIMAL", "NUMERIC"),
    ("BIGINT", "INTEGER"),
    ("HUGEINT", "INTEGER"),
    ("INTEGER", "INTEGER"),
    ("SMALLINT", "INTEGER"),
    ("TINYINT", "INTEGER"),
    ("VARCHAR", "STRING"),
    ("BOOLEAN", "BOOLEAN"),
    ("DATE", "DATE"),
)
#: Query parameter types the stand-in binds, as DuckDB types.
_PARAMETER_TYPES = {
    "TIMESTAMP": "TIMESTAMPTZ",
    "DATETIME": "TIMESTAMP",
    "DATE": "DATE",
    "INT64": "BIGINT",
    "INTEGER": "BIGINT",
    "FLOAT64": "DOUBLE",
    "FLOAT": "DOUBLE",
    "BOOL": "BOOLEAN",
    "BOOLEAN": "BOOLEAN",
    "STRING": "VARCHAR",
}
#: BigQuery types (legacy and standard names) as DuckDB column types, for tables.insert.
_DUCK_TYPES = {
    "TIMESTAMP": "TIMESTAMPTZ",
    "DATETIME": "TIMESTAMP",
    "FLOAT": "DOUBLE",
    "FLOAT64": "DOUBLE",
    "INTEGER": "BIGINT",
    "INT64": "BIGINT",
    "STRING": "VARCHAR",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "NUMERIC": "DECIMAL(38, 9)",
}


class ApiError(Exception):
    """An error answered in BigQuery's JSON error format."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }
        }

    def error_result(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message}


#: The shapes of BigQuery's error for a write aborted by a concurrent update of its table: the
#: ``invalidQuery``/400 of a conflicting DML statement (BigQuery's answer for years), the same
#: reason with the wording of an aborted multi-statement transaction, and reason ``aborted``/409.
CONCURRENT_UPDATE_SHAPES = ("serialize", "transaction", "aborted")


def concurrent_update(table: str, shape: str = "serialize") -> ApiError:
    """BigQuery's error for a write to ``table`` (``project:dataset.table``) that another write to it
    aborted, in one of :data:`CONCURRENT_UPDATE_SHAPES`."""
    if shape == "serialize":
        return ApiError(400, "invalidQuery", f"Could not serialize access to table {table} due to concurrent update")
    message = (
        f"Transaction is aborted due to concurrent update against table {table}. "
        "Transaction ID: 65f1d0a2-0000-2c3e-a6c4-14223bb1e6a0"
    )
    if shape == "transaction":
        return ApiError(400, "invalidQuery", f"Query error: {message}")
    if shape == "aborted":
        return ApiError(409, "aborted", message)
    raise ValueError(f"shape must be one of {CONCURRENT_UPDATE_SHAPES}, not {shape!r}")


@dataclass
class Request:
    """One call the client made: ``body`` is the JSON it sent (the metadata of an upload)."""

    method: str
    path: str
    params: dict[str, str]
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    data: bytes = field(default=b"", repr=False)

    @property
    def content_type(self) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")


@dataclass
class _Result:
    """What a job produced: rows and schema of a query, or nothing (DML, DDL, loads)."""

    fields: list[dict[str, str]] | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    dml_rows: int | None = None


def _bq_type(duck_type: str) -> str:
    text = duck_type.upper()
    for prefix, name in _BQ_TYPES:
        if text.startswith(prefix):
            return name
    raise ApiError(400, "invalidQuery", f"the stand-in cannot return columns of type {duck_type}")


def _encode(value: Any, kind: str, int64_timestamp: bool) -> Any:
    """One cell as the REST API writes it: text, or ``None`` for NULL."""
    if value is None:
        return None
    if kind == "TIMESTAMP":  # microseconds since the epoch, see _rows
        return str(value) if int64_timestamp else repr(value / 1e6)
    if kind == "BOOLEAN":
        return "true" if value else "false"
    if kind == "FLOAT":
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(float(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _parameter(spec: dict[str, Any]) -> tuple[str, Any]:
    """A named query parameter as a Python value of its BigQuery type."""
    kind = spec["parameterType"]["type"]
    raw = (spec.get("parameterValue") or {}).get("value")
    if kind not in _PARAMETER_TYPES:
        raise ApiError(400, "invalidQuery", f"the stand-in does not bind parameters of type {kind}")
    if raw is None:
        return spec["name"], None
    try:
        return spec["name"], _parameter_value(kind, raw)
    except ValueError:  # e.g. a year written without its four digits
        raise ApiError(400, "invalidQuery", f"Invalid {kind} value for query parameter {spec['name']}: {raw}") from None


def _parameter_value(kind: str, raw: Any) -> Any:
    if kind == "TIMESTAMP":
        value: Any = datetime.fromisoformat(raw.replace(" UTC", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
    elif kind == "DATETIME":  # naive: a DuckDB TIMESTAMP
        value = datetime.fromisoformat(raw)
        if value.tzinfo is not None:
            raise ValueError("a DATETIME has no time zone")
    elif kind == "DATE":
        value = date.fromisoformat(raw)
    elif kind in ("INT64", "INTEGER"):
        value = int(raw)
    elif kind in ("FLOAT64", "FLOAT"):
        value = float(raw)
    elif kind in ("BOOL", "BOOLEAN"):
        value = raw.lower() == "true"
    else:
        value = raw
    return value


def _literal(kind: str, value: Any) -> str:
    """A parameter's value as a DuckDB literal of its type, for :func:`type_error`'s plan."""
    if value is None:
        text = "NULL"
    elif isinstance(value, datetime | date):
        text = f"'{value.isoformat()}'"
    elif isinstance(value, bool):
        text = "'true'" if value else "'false'"
    else:
        text = "'" + (repr(value) if isinstance(value, float) else str(value)).replace("'", "''") + "'"
    return f"CAST({text} AS {_PARAMETER_TYPES[kind]})"


#: DuckDB types of BigQuery's DATETIME and DATE, which BigQuery never converts to TIMESTAMP (DuckDB's
#: TIMESTAMPTZ) implicitly.
_ZONELESS = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")
_ZONED = "TIMESTAMP WITH TIME ZONE"


def _type_of(node: dict[str, Any]) -> str:
    """The DuckDB type of an expression of a serialized plan (a constant keeps it in its value)."""
    if "return_type" in node:
        return node["return_type"]["id"]
    return ((node.get("value") or {}).get("type") or {}).get("id", "")


def _standard_name(duck_type: str) -> str:
    try:
        name = _bq_type(duck_type)
    except ApiError:
        return duck_type
    return {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}.get(name, name)


def _zone_coercion(node: dict[str, Any]) -> dict[str, Any] | None:
    """The operand of ``node`` if ``node`` casts a DATETIME or DATE to TIMESTAMP: in BigQuery SQL
    run here such a cast is DuckDB's implicit one (BigQuery SQL has no TIMESTAMPTZ to cast to)."""
    if node.get("type") != "OPERATOR_CAST" or _type_of(node) != _ZONED:
        return None
    operands = [child for child in node.get("children", []) if isinstance(child, dict)]
    return operands[0] if len(operands) == 1 and _type_of(operands[0]) in _ZONELESS else None


def _operands(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The sub-expressions of an expression of a serialized plan (``CASE`` keeps them in pairs)."""
    found = []
    for value in node.values():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict):
                continue
            if "expression_class" in item:
                found.append(item)
            else:  # a CASE's {when_expr, then_expr}
                found.extend(v for v in item.values() if isinstance(v, dict) and "expression_class" in v)
    return found


def _mismatch(node: dict[str, Any] | None, operands: list[dict[str, Any]]) -> ApiError:
    """BigQuery's error for ``node`` applied to ``operands``, one of them a DATETIME or DATE that
    DuckDB cast to TIMESTAMP."""
    types = ", ".join(_standard_name(_type_of(_zone_coercion(o) or o)) for o in operands)
    if node is None:
        return ApiError(400, "invalidQuery", f"Query has incompatible types: {types}")
    name = ((node.get("qname") or {}).get("path") or [""])[-1]
    kind = node.get("type", "")
    if kind.startswith("COMPARE_") and name:
        message = f"No matching signature for operator {name} for argument types: {types}. Supported signature: ANY {name} ANY"
    elif kind == "COMPARE_IN":
        message = f"No matching signature for operator IN for argument types: {types}"
    elif node.get("expression_class") == "BOUND_FUNCTION" and name:
        message = f"No matching signature for function {name.upper()} for argument types: {types}"
    else:
        message = f"No matching signature for operator {kind} for argument types: {types}"
    return ApiError(400, "invalidQuery", message)


def type_error(plan: Any, parent: dict[str, Any] | None = None) -> ApiError | None:
    """BigQuery's error for the first DATETIME or DATE that DuckDB converts to TIMESTAMP in
    ``plan`` (the JSON of ``json_serialize_plan``), or None when BigQuery would take the types."""
    if isinstance(plan, list):
        return next((e for e in (type_error(item, parent) for item in plan) if e is not None), None)
    if not isinstance(plan, dict):
        return None
    if "expression_class" not in plan:
        return type_error(list(plan.values()))
    operands = _operands(plan)
    if any(_zone_coercion(operand) is not None for operand in operands):
        return _mismatch(plan, operands)
    if parent is None and (operand := _zone_coercion(plan)) is not None:  # e.g. a UNION's column
        return _mismatch(None, [operand, {"return_type": {"id": _ZONED}}])
    return type_error(operands, plan)


def _identifier(quoted: str) -> str:
    """A backtick-quoted name as DuckDB's: ``dataset.table`` (the project dropped), or a column."""
    parts = quoted.replace(":", ".").split(".")
    return ".".join(f'"{part}"' for part in parts[-2:])


def translate(sql: str) -> str:
    """BigQuery SQL as DuckDB SQL: backtick-quoted names and ``@name`` parameters rewritten."""
    sql = re.sub(r"`([^`]+)`", lambda match: _identifier(match.group(1)), sql)
    return re.sub(r"(?<![\w@])@([A-Za-z_]\w*)", r"$\1", sql)


class BigQueryStandIn:
    """The server; use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(self, project: str = "standin-project", *, page_size: int = 100) -> None:
        self.project = project
        self.page_size = page_size
        self.deny = False
        self.fail_with: ApiError | None = None
        self.fail_loads = False
        self.abort_commits: list[ApiError] = []
        self.requests: list[Request] = []
        self._db = duckdb.connect()
        self._db.execute("SET TimeZone = 'UTC'")
        self._lock = threading.RLock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._errors: dict[str, ApiError] = {}
        self._results: dict[str, _Result] = {}
        self._uploads: dict[str, dict[str, Any]] = {}
        self._scratch = tempfile.TemporaryDirectory(prefix="bigquery-standin-")
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> BigQueryStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
                pass  # quiet: tests read `requests` instead

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = standin._dispatch(self.command, self.path, dict(self.headers), body)
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._db.close()
        self._scratch.cleanup()

    def __enter__(self) -> BigQueryStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- helpers for tests -------------------------------------------------------------------

    def execute(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run DuckDB SQL directly (set-up and inspection), bypassing the API."""
        with self._lock:
            result = self._db.execute(sql, parameters or {})
            return result.fetchall() if result.description else []

    def create_dataset(self, dataset: str) -> None:
        self.execute(f'CREATE SCHEMA IF NOT EXISTS "{dataset}"')

    def query_jobs(self, *, dry_run: bool = False) -> list[dict[str, Any]]:
        """The ``configuration.query`` of every query job the client sent, in order: the jobs that
        ran, or with ``dry_run`` the dry runs."""
        sent = []
        for request in self.requests:
            if request.method == "POST" and isinstance(request.body, dict):
                configuration = request.body.get("configuration", {})
                query = configuration.get("query")
                if query is not None and bool(configuration.get("dryRun")) == dry_run:
                    sent.append(query)
        return sent

    def failed_jobs(self) -> list[dict[str, Any]]:
        """Every job that failed (``status.errorResult``), in order."""
        with self._lock:
            return [job for job in self._jobs.values() if "errorResult" in job["status"]]

    def calls(self, method: str, pattern: str) -> list[Request]:
        """Requests of ``method`` whose path matches the regular expression ``pattern``."""
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        request = Request(method, parts.path, params, headers=headers, data=body)
        if body and request.content_type.startswith("application/json"):
            request.body = json.loads(body)
        with self._lock:
            self.requests.append(request)
            try:
                if self.fail_with is not None:
                    raise self.fail_with
                if self.deny:
                    raise ApiError(
                        403, "accessDenied", f"Access Denied: Project {self.project}: User does not have permission"
                    )
                return self._route(request)
            except ApiError as exc:
                return exc.code, {}, exc.body()

    def _route(self, request: Request) -> tuple[int, dict[str, str], Any]:
        method, path, params = request.method, request.path, request.params
        if path.startswith("/upload/bigquery/v2/projects/") and path.endswith("/jobs"):
            return self._upload(request)
        match = re.fullmatch(r"/bigquery/v2/projects/([^/]+)(/.*)", path)
        if not match:
            raise ApiError(404, "notFound", f"Not found: URL {path}")
        project, rest = match.groups()
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"/jobs", lambda: self._insert_job(project, request.body)),
            ("GET", r"/jobs/([^/]+)", lambda job: self._get_job(job)),
            ("GET", r"/queries/([^/]+)", lambda job: self._query_results(job, params)),
            ("GET", r"/datasets/([^/]+)", lambda d: self._get_dataset(project, d)),
            ("POST", r"/datasets", lambda: self._insert_dataset(project, request.body)),
            ("GET", r"/datasets/([^/]+)/tables/([^/]+)", lambda d, t: self._get_table(project, d, t)),
            ("DELETE", r"/datasets/([^/]+)/tables/([^/]+)", lambda d, t: self._delete_table(project, d, t)),
            ("POST", r"/datasets/([^/]+)/tables", lambda d: self._insert_table(project, d, request.body)),
        ]
        for verb, pattern, handler in routes:
            found = re.fullmatch(pattern, rest)
            if verb == method and found:
                result = handler(*found.groups())
                return (204, {}, None) if result is None else (200, {}, result)
        raise ApiError(404, "notFound", f"Not found: {method} {path} is not served by the stand-in")

    # -- datasets and tables -----------------------------------------------------------------

    def _dataset_exists(self, dataset: str) -> bool:
        return bool(self._db.execute("SELECT 1 FROM duckdb_schemas() WHERE schema_name = ?", [dataset]).fetchall())

    def _get_dataset(self, project: str, dataset: str) -> dict[str, Any]:
        if not self._dataset_exists(dataset):
            raise ApiError(404, "notFound", f"Not found: Dataset {project}:{dataset}")
        return {
            "kind": "bigquery#dataset",
            "id": f"{project}:{dataset}",
            "datasetReference": {"projectId": project, "datasetId": dataset},
            "location": "US",
        }

    def _insert_dataset(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        dataset = body["datasetReference"]["datasetId"]
        if self._dataset_exists(dataset):
            raise ApiError(409, "duplicate", f"Already Exists: Dataset {project}:{dataset}")
        self.create_dataset(dataset)
        return self._get_dataset(project, dataset)

    def _columns(self, project: str, dataset: str, table: str) -> list[tuple[str, str]]:
        columns = self._db.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
            "ORDER BY column_index",
            [dataset, table],
        ).fetchall()
        if not columns:
            raise ApiError(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
        return columns

    def _get_table(self, project: str, dataset: str, table: str) -> dict[str, Any]:
        columns = self._columns(project, dataset, table)
        (rows,) = self._db.execute(f'SELECT count(*) FROM "{dataset}"."{table}"').fetchone() or (0,)
        return {
            "kind": "bigquery#table",
            "id": f"{project}:{dataset}.{table}",
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "schema": {"fields": [{"name": n, "type": _bq_type(t), "mode": "NULLABLE"} for n, t in columns]},
            "numRows": str(rows),
            "type": "TABLE",
            "location": "US",
        }

    def _insert_table(self, project: str, dataset: str, body: dict[str, Any]) -> dict[str, Any]:
        table = body["tableReference"]["tableId"]
        if not self._dataset_exists(dataset):
            raise ApiError(404, "notFound", f"Not found: Dataset {project}:{dataset}")
        if self._db.execute(
            "SELECT 1 FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?", [dataset, table]
        ).fetchall():
            raise ApiError(409, "duplicate", f"Already Exists: Table {project}:{dataset}.{table}")
        fields = body.get("schema", {}).get("fields", [])
        if not fields:
            raise ApiError(400, "invalid", "the stand-in needs a schema to create a table")
        columns = ", ".join(
            f'"{f["name"]}" {_DUCK_TYPES[f["type"]]}{" NOT NULL" if f.get("mode") == "REQUIRED" else ""}'
            for f in fields
        )
        self._db.execute(f'CREATE TABLE "{dataset}"."{table}" ({columns})')
        return self._get_table(project, dataset, table)

    def _delete_table(self, project: str, dataset: str, table: str) -> None:
        self._columns(project, dataset, table)  # 404 when missing
        self._db.execute(f'DROP TABLE "{dataset}"."{table}"')

    # -- jobs ----------------------------------------------------------------------------------

    def _job_resource(
        self, project: str, body: dict[str, Any], error: ApiError | None, *, keep: bool = True
    ) -> dict[str, Any]:
        reference = dict(body.get("jobReference") or {})
        reference.setdefault("jobId", uuid.uuid4().hex)
        reference["projectId"] = reference.get("projectId") or project
        reference.setdefault("location", "US")
        status: dict[str, Any] = {"state": "DONE"}
        if error is not None:
            status["errorResult"] = error.error_result()
            status["errors"] = [error.error_result()]
        now = str(int(datetime.now(UTC).timestamp() * 1000))
        job = {
            "kind": "bigquery#job",
            "id": f"{reference['projectId']}:{reference['location']}.{reference['jobId']}",
            "jobReference": reference,
            "configuration": body.get("configuration", {}),
            "status": status,
            "statistics": {"creationTime": now, "startTime": now, "endTime": now},
        }
        if keep:  # BigQuery keeps no dry run
            self._jobs[reference["jobId"]] = job
            if error is not None:
                self._errors[reference["jobId"]] = error
        return job

    def _insert_job(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        configuration = body.get("configuration", {})
        if "query" not in configuration:
            raise ApiError(400, "invalid", "the stand-in runs query jobs here; load jobs come through uploads")
        if configuration.get("dryRun"):  # an invalid query is the HTTP error of jobs.insert itself
            checked = self._run_query(configuration["query"], dry_run=True)
            job = self._job_resource(project, body, None, keep=False)
            statistics = {"totalBytesProcessed": "0", "schema": {"fields": checked.fields or []}}
            job["statistics"].update(totalBytesProcessed="0", query=statistics)
            return job
        error = None
        try:
            result = self._run_query(configuration["query"])
        except ApiError as exc:
            error, result = exc, None
        job = self._job_resource(project, body, error)
        if result is not None:
            self._results[job["jobReference"]["jobId"]] = result
            if result.dml_rows is not None:
                job["statistics"]["query"] = {"numDmlAffectedRows": str(result.dml_rows)}
        return job

    def _get_job(self, job_id: str) -> dict[str, Any]:
        if job_id not in self._jobs:
            raise ApiError(404, "notFound", f"Not found: Job {self.project}:{job_id}")
        return self._jobs[job_id]

    def _query_results(self, job_id: str, params: dict[str, str]) -> dict[str, Any]:
        job = self._get_job(job_id)
        if job_id in self._errors:
            raise self._errors[job_id]
        result = self._results.get(job_id, _Result())
        response: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": job["jobReference"],
            "jobComplete": True,
            "cacheHit": False,
        }
        if result.dml_rows is not None:
            response["numDmlAffectedRows"] = str(result.dml_rows)
        if result.fields is not None:
            response.update(self._page(result, params))
        return response

    def _page(self, result: _Result, params: dict[str, str]) -> dict[str, Any]:
        """One page of rows: from ``pageToken`` (or ``startIndex``), at most ``maxResults`` rows."""
        first = int(params.get("pageToken") or params.get("startIndex") or 0)
        size = int(params["maxResults"]) if "maxResults" in params else self.page_size
        int64 = params.get("formatOptions.useInt64Timestamp", "").lower() == "true"
        fields = result.fields or []
        chunk = result.rows[first : first + size]
        page: dict[str, Any] = {
            "schema": {"fields": fields},
            "totalRows": str(len(result.rows)),
            "rows": [
                {"f": [{"v": _encode(value, f["type"], int64)} for value, f in zip(row, fields, strict=True)]}
                for row in chunk
            ],
        }
        if not page["rows"]:
            del page["rows"]
        if first + len(chunk) < len(result.rows) and size > 0:
            page["pageToken"] = str(first + len(chunk))
        return page

    # -- SQL -------------------------------------------------------------------------------------

    def _run_query(self, query: dict[str, Any], *, dry_run: bool = False) -> _Result:
        if query.get("useLegacySql", True) is not False and "useLegacySql" in query:
            raise ApiError(400, "invalidQuery", "the stand-in speaks standard SQL only")
        specs = query.get("queryParameters", [])
        parameters = dict(_parameter(spec) for spec in specs)
        literals = {spec["name"]: _literal(spec["parameterType"]["type"], parameters[spec["name"]]) for spec in specs}
        return self._run(translate(query["query"]), parameters, literals, dry_run=dry_run)

    def _check_types(self, text: str, literals: dict[str, str]) -> dict[str, Any] | None:
        """Refuse ``text`` as BigQuery would if it mixes DATETIME or DATE with TIMESTAMP (see the
        module docstring); returns DuckDB's error for a statement it cannot plan, else None."""
        probe = re.sub(r"\$([A-Za-z_]\w*)", lambda m: literals.get(m.group(1), m.group(0)), text)
        ((serialized,),) = self._db.execute("SELECT json_serialize_plan(?)", [probe]).fetchall()
        plan = json.loads(serialized)
        if plan.get("error"):  # DuckDB reports it, not raises: running the statement raises it
            return plan
        error = type_error(plan.get("plans", []))
        if error is not None:
            raise error
        return None

    def _run(self, sql: str, parameters: dict[str, Any], literals: dict[str, str], *, dry_run: bool = False) -> _Result:
        """Run ``sql`` statement by statement; the last statement's rows are the result. A dry run
        checks each statement and answers the schema of the last query, running nothing."""
        try:
            statements = self._db.extract_statements(sql)
        except duckdb.Error as exc:
            raise ApiError(400, "invalidQuery", f"Syntax error: {exc}") from None
        result = _Result()
        in_transaction = False
        try:
            for statement in statements:
                text = statement.query.strip().rstrip(";").strip()
                words = text.upper().split()
                if dry_run and (words[:1] in (["BEGIN"], ["COMMIT"], ["ROLLBACK"])):
                    continue
                if words[:2] == ["BEGIN", "TRANSACTION"] or words == ["BEGIN"]:
                    in_transaction = True
                elif words[:1] == ["COMMIT"] and in_transaction and self.abort_commits:
                    raise self.abort_commits.pop(0)  # rolled back below, as BigQuery aborts it
                elif words[:1] in (["COMMIT"], ["ROLLBACK"]):
                    in_transaction = False
                bound = {name: parameters[name] for name in statement.named_parameters if name in parameters}
                missing = sorted(set(statement.named_parameters) - set(bound))
                if missing:
                    raise ApiError(400, "invalidQuery", f"Query parameter '{missing[0]}' not found")
                unplanned = self._check_types(text, literals)
                if dry_run and statement.type != duckdb.StatementType.SELECT:
                    if unplanned is not None and unplanned.get("error_type") == "catalog":
                        raise ApiError(404, "notFound", f"Not found: {unplanned.get('error_message')}")
                    if unplanned is not None:
                        raise ApiError(400, "invalidQuery", str(unplanned.get("error_message")))
                    continue
                if statement.type == duckdb.StatementType.SELECT and dry_run:
                    columns = self._db.execute(f"DESCRIBE {text}", bound).fetchall()
                    fields = [{"name": name, "type": _bq_type(kind), "mode": "NULLABLE"} for name, kind, *_ in columns]
                    result = _Result(fields=fields)
                    continue
                if statement.type == duckdb.StatementType.SELECT:
                    relation = self._db.sql(text, params=bound)
                    fields = [
                        {"name": name, "type": _bq_type(str(kind)), "mode": "NULLABLE"}
                        for name, kind in zip(relation.columns, relation.types, strict=True)
                    ]
                    result = _Result(fields=fields, rows=_rows(relation.to_arrow_table()))
                    continue
                cursor = self._db.execute(text, bound)
                if statement.type in (duckdb.StatementType.INSERT, duckdb.StatementType.DELETE, duckdb.StatementType.UPDATE):
                    (count,) = cursor.fetchone() or (0,)
                    result = _Result(dml_rows=int(count))
        except duckdb.CatalogException as exc:
            self._rollback(in_transaction)
            raise ApiError(404, "notFound", f"Not found: {exc}") from None
        except duckdb.Error as exc:
            self._rollback(in_transaction)
            raise ApiError(400, "invalidQuery", str(exc)) from None
        except ApiError:
            self._rollback(in_transaction)
            raise
        return result

    def _rollback(self, in_transaction: bool) -> None:
        if in_transaction:
            self._db.execute("ROLLBACK")

    # -- load jobs -------------------------------------------------------------------------------

    def _upload(self, request: Request) -> tuple[int, dict[str, str], Any]:
        method, params, body = request.method, request.params, request.data
        kind = params.get("uploadType")
        if kind == "multipart" and method == "POST":
            metadata, data = _multipart(request.content_type, body)
            request.body = metadata
            return 200, {}, self._load(metadata, data)
        if kind == "resumable" and method == "POST" and "upload_id" not in params:
            upload_id = uuid.uuid4().hex
            metadata = json.loads(body)
            request.body = metadata
            self._uploads[upload_id] = {"metadata": metadata, "data": bytearray()}
            location = f"{self.url}{request.path}?uploadType=resumable&upload_id={upload_id}"
            return 200, {"Location": location}, None
        if kind == "resumable" and method == "PUT" and params.get("upload_id") in self._uploads:
            upload = self._uploads[params["upload_id"]]
            upload["data"] += body
            total = _content_range_total(request.headers)
            if total is None or len(upload["data"]) < total:
                return 308, {"Range": f"bytes=0-{len(upload['data']) - 1}"}, None
            del self._uploads[params["upload_id"]]
            return 200, {}, self._load(upload["metadata"], bytes(upload["data"]))
        raise ApiError(400, "invalid", f"the stand-in does not take {method} uploads of type {kind!r}")

    def _load(self, metadata: dict[str, Any], data: bytes) -> dict[str, Any]:
        """Run a load job from Parquet; the job is ``DONE`` with an ``errorResult`` when it fails."""
        load = metadata.get("configuration", {}).get("load", {})
        destination = load.get("destinationTable", {})
        project = destination.get("projectId", self.project)
        dataset, table = destination.get("datasetId", ""), destination.get("tableId", "")
        error = None
        try:
            if self.fail_loads:
                raise ApiError(400, "invalid", "Error while reading data, error message: the stand-in fails loads")
            if load.get("sourceFormat") != "PARQUET":
                raise ApiError(400, "invalid", f"the stand-in loads PARQUET only, not {load.get('sourceFormat')}")
            if not self._dataset_exists(dataset):
                raise ApiError(404, "notFound", f"Not found: Dataset {project}:{dataset}")
            path = Path(self._scratch.name) / f"{uuid.uuid4().hex}.parquet"
            path.write_bytes(data)
            name = f'"{dataset}"."{table}"'
            exists = bool(
                self._db.execute(
                    "SELECT 1 FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?", [dataset, table]
                ).fetchall()
            )
            disposition = load.get("writeDisposition", "WRITE_APPEND")
            source = f"read_parquet('{path}')"
            if not exists and load.get("createDisposition") == "CREATE_NEVER":
                raise ApiError(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
            if not exists or disposition == "WRITE_TRUNCATE":
                self._db.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {source}")
            elif disposition == "WRITE_EMPTY" and self._db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]:
                raise ApiError(400, "duplicate", f"Already Exists: Table {project}:{dataset}.{table} is not empty")
            else:
                self._db.execute(f"INSERT INTO {name} BY NAME SELECT * FROM {source}")
            path.unlink()
        except ApiError as exc:
            error = exc
        except duckdb.Error as exc:
            error = ApiError(400, "invalid", f"Error while reading data: {exc}")
        return self._job_resource(project, metadata, error)


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows as Python values, TIMESTAMP columns as microseconds since the epoch (what the API sends)."""
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
        columns.append(column.to_pylist())
    return list(zip(*columns, strict=True))


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON metadata and the data of a ``multipart/related`` upload."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ApiError(400, "invalid", "multipart upload without a boundary")
    delimiter = b"--" + match.group(1).encode()
    parts = [part for part in body.split(delimiter)[1:] if not part.startswith(b"--")]
    contents = []
    for part in parts:
        _, _, content = part.partition(b"\r\n\r\n")
        contents.append(content[:-2] if content.endswith(b"\r\n") else content)
    if len(contents) != 2:
        raise ApiError(400, "invalid", f"multipart upload with {len(contents)} parts, expected metadata and data")
    return json.loads(contents[0]), contents[1]


def _content_range_total(headers: dict[str, str]) -> int | None:
    value = next((v for k, v in headers.items() if k.lower() == "content-range"), "")
    total = value.rpartition("/")[2]
    return int(total) if total.isdigit() else None
