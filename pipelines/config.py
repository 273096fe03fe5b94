"""Job configuration: one YAML file per job under ``config/jobs/``, validated with pydantic.

Importing this module is light (pydantic, yaml, croniter): DAG files call :func:`load_jobs`
at every parse.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.detectors.params import MODEL_PARAMS
from pipelines.durations import duration_text, parse_duration, rows_spanned
from pipelines.errors import ConfigError, cut_middle
from pipelines.schema import OUTPUT_COLUMNS

JOB_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Rows per chunk of a one-off scoring input: bounds memory (a few hundred MB per chunk).
DEFAULT_CHUNK_ROWS = 250_000
#: Most rows per chunk any interface accepts: a task reads its chunk whole, and a mistyped
#: 1,000,000,000 read the whole input into one task until the worker ran out of memory.
#: 10,000,000 rows of one feature are about 1.5 GB in a task (docs/BENCHMARKS.md, one-off scoring).
MAX_CHUNK_ROWS = 10_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Counts and other numbers as YAML numbers, never as text or booleans: pydantic's lax mode reads
# `min_rows: true` as 1 and `trials: "20"` as 20, which hides a slip in the job file (detector
# parameters are checked the same way, pipelines.detectors.params).
Count = Annotated[int, Strict()]
Number = Annotated[float, Strict()]
#: A column of the source: an empty name matched no column, and the failure came at extraction.
Column = Annotated[str, Field(min_length=1)]


def _written_out(path: str) -> str:
    """``path`` unless it asks for an expansion that job files do not get (``$VAR``, ``${VAR}``, ``~``)."""
    # Paths are taken as written and relative ones resolve against the project root: registry:
    # ${MODELS} stored models in a folder named "${MODELS}" there, and ~/data/*.csv read nothing.
    # Not a `$name` folder inside a path: one may exist, and one-off input files come here too.
    reference = re.search(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|^\$([A-Za-z_][A-Za-z0-9_]*)", path)
    if reference:
        name = reference.group(1) or reference.group(2)
        raise ValueError(
            f"job files are not expanded, so ${name} would be taken as written, a folder named so: write the path itself "
            "(a relative one resolves against the project root, which ANOMALY_PIPELINES_BASE_DIR sets)"
        )
    if path.startswith("~"):
        raise ValueError(
            "job files are not expanded, so ~ would be a folder of that name under the project root: "
            "write the absolute path (/home/<user>/...) or one relative to the project root"
        )
    return path


def _no_references(options: dict[str, Any]) -> dict[str, Any]:
    """fsspec ``options`` unless a value refers to an environment variable, which nothing expands."""
    # key: ${AWS_ACCESS_KEY_ID} reached s3fs as those very characters: every read was refused as
    # unauthorized, far from the job file. s3fs and gcsfs read their credentials from the environment.
    for name, value in options.items():
        reference = re.search(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|^\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*$", value) if isinstance(value, str) else None
        if reference:
            variable = reference.group(1) or reference.group(2)
            raise ValueError(
                f"{name}: job files are not expanded, so ${variable} would be passed as written: remove {name}, and let "
                "the filesystem read its credentials from the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://)"
            )
    return options


#: Words of an fsspec option's name that make its value a credential: s3fs's secret and token,
#: botocore's aws_secret_access_key, adlfs's sas_token and client_secret, a password, an HTTP
#: file system's Authorization header.
_SECRET_WORDS = {"secret", "password", "passwd", "passphrase", "token", "credential", "credentials", "authorization"}
#: What an option named as a credential may hold that is none: gcsfs's ways to find one.
_NO_CREDENTIAL = {"anon", "google_default", "cache", "cloud", "browser"}


def _is_secret_option(name: str) -> bool:
    """Whether the fsspec option ``name`` holds a credential (``key``, ``aws_access_key_id``, ``SSECustomerKey``)."""
    words = [word.lower() for word in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)]
    joined = "_".join(words)
    # A name ending in "key" is a key (s3fs's key, adlfs's account_key); kms_key_id names one.
    return bool(_SECRET_WORDS & set(words)) or words[-1:] == ["key"] or "access_key" in joined or "connection_string" in joined


def _written_secrets(options: dict[Any, Any], prefix: str = "") -> list[str]:
    """The options (``key``, ``client_kwargs.aws_secret_access_key``) of ``options`` and the mappings
    nested in them that hold a credential written out, not a file's path nor gcsfs's ``anon``."""
    found = []
    for name, value in options.items():
        where = f"{prefix}{name}"
        if isinstance(value, dict) and not _is_secret_option(str(name)):
            found += _written_secrets(value, f"{where}.")
        elif _is_secret_option(str(name)) and value not in (None, "") and not isinstance(value, bool):
            harmless = isinstance(value, str) and (value.startswith(("/", "./", "../")) or value.endswith(".json") or value in _NO_CREDENTIAL)
            if not harmless:
                found.append(where)
    return found


def _no_written_secrets(options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """``options`` unless the job file writes a credential among them (see :class:`SqlConnection`'s url)."""
    # key and secret written in a job file were accepted: the file is kept in git, and the job's
    # settings are shown to whoever reads them. Only a job file (load_job_file's context): code
    # may hand over credentials it holds in memory, as the tests' S3 buckets do.
    if not (isinstance(info.context, dict) and info.context.get("file")):
        return options
    secrets = _written_secrets(options)
    if secrets:
        job = info.context.get("job")
        raise ValueError(
            f"{', '.join(secrets)}: {f'job {job!r} ' if job else 'the job file '}writes {'a credential' if len(secrets) == 1 else 'credentials'} "
            "out, and a job file is kept in version control and shown to whoever reads the job's settings: remove "
            f"{'it' if len(secrets) == 1 else 'them'} and give the worker credentials through the environment, which the "
            "store's own library reads (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, for s3://; "
            "GOOGLE_APPLICATION_CREDENTIALS naming a key file, or token: <the key file's path>, for gs://); "
            "options that are not secrets (endpoint_url, anon, profile, region_name) may stay"
        )
    return options


#: fsspec options of a job file: no reference to an environment variable, no credential written out.
StorageOptions = Annotated[dict[str, Any], AfterValidator(_no_references), AfterValidator(_no_written_secrets)]


def _connection_id(conn_id: str) -> str:
    """``conn_id`` unless Airflow would refuse it as a connection id (its ``RE_SANITIZE_CONN_ID``)."""
    # "${WAREHOUSE}" passed, and each run failed with "The conn_id `${WAREHOUSE}` isn't defined".
    if re.fullmatch(r"[\w#!()\-.:/\\]{1,250}", conn_id):
        return conn_id
    reference = re.fullmatch(r"\s*\$\{?([A-Za-z0-9_.-]+)\}?\s*", conn_id)
    if reference:
        raise ValueError(
            f"job files are not expanded: write the connection's id itself ({reference.group(1)}); Airflow finds it "
            "among its connections, or in an AIRFLOW_CONN_<ID> environment variable"
        )
    raise ValueError("an Airflow connection id holds only letters, digits and _ # ! ( ) - . : / \\, e.g. warehouse")


#: An Airflow connection's id.
ConnId = Annotated[str, AfterValidator(_connection_id)]
#: A folder or URL: an empty one resolved to the project root itself.
Location = Annotated[str, Field(min_length=1), AfterValidator(_written_out)]


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        # As parse_duration refuses "0h" in a job file: the checks that count rows divide by it.
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value
    return parse_duration(value)


class SqlConnection(_Model):
    """Where a database is: exactly one of a URL without secrets, an env var holding the URL,
    or an Airflow connection id (credentials then stay in Airflow)."""

    url: str | None = None
    url_env: str | None = None
    conn_id: ConnId | None = None

    @field_validator("url_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        # Read with os.environ[url_env] at every run: "${DB_URL}" or a URL itself passed here, and
        # each run failed with "environment variable ${DB_URL} is not set".
        if value is None or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            return value
        reference = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value.strip())
        if reference:
            raise ValueError(f"names the environment variable itself: write url_env: {reference.group(1)} (without $ or braces)")
        if "://" in value:
            raise ValueError(
                "is the name of an environment variable holding the URL, not the URL: export it "
                "(export METRICS_DB_URL='dialect://...') and write url_env: METRICS_DB_URL"
            )
        raise ValueError("must be the name of an environment variable: letters, digits and _, e.g. METRICS_DB_URL")

    @field_validator("url")
    @classmethod
    def _is_not_a_reference(cls, value: str | None) -> str | None:
        # Job files are not expanded: "${DB_URL}" was taken as the URL itself, and every run
        # failed on a URL that was never meant, or connected with the words written.
        reference = re.search(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|^\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*$", value or "")
        if reference:
            name = reference.group(1) or reference.group(2)
            if reference.group(0).strip() != (value or "").strip():
                # postgresql://reader:${DB_PASSWORD}@db/x was told to name DB_PASSWORD, a password, as url_env.
                raise ValueError(
                    f"job files are not expanded, so ${name} would be read as written, and a URL is not put together from "
                    "variables: export the whole URL in one (export METRICS_DB_URL='dialect://user:password@host/db') "
                    "and write url_env: METRICS_DB_URL instead of url"
                )
            raise ValueError(
                f"job files are not expanded, so ${name} would be read as written: "
                f"give the variable holding the whole URL as url_env: {name} instead of url"
            )
        return value

    @field_validator("url")
    @classmethod
    def _holds_no_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Only in a job file (parse_job's context): it is kept in git and shown to whoever reads
        # the config, and a password written there was accepted. Code may build a connection from
        # a URL it holds in memory (an environment variable, a test database's fixture).
        if value is None or not isinstance(info.context, dict) or "job" not in info.context:
            return value
        secret = _url_secret(value)
        if secret:
            job = info.context["job"]
            raise ValueError(
                f"{f'job {job!r}: ' if job else ''}the URL holds {secret}, and a job file is kept in version control and "
                "shown to whoever reads the job's settings: export the URL in an environment variable and write "
                "url_env: METRICS_DB_URL (its name) instead of url, or write conn_id: <an Airflow connection's id>; "
                "a URL without a password may stay (postgresql://reader@db/metrics, the password in ~/.pgpass)"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SqlConnection:
        given = [name for name in ("url", "url_env", "conn_id") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of url, url_env, conn_id (got {given or 'none'})")
        return self

    def describe(self) -> str:
        """A name for messages that never shows a password."""
        if self.conn_id:
            return f"Airflow connection {self.conn_id!r}"
        if self.url_env:
            return f"URL from ${self.url_env}"
        # One masking rule for messages and logs (pipelines.db imports this module, hence here).
        from pipelines.db import describe_url

        return describe_url(self.url or "")


#: Driver options of a URL's query whose values are secrets (libpq's sslpassword, a token);
#: libpq's passfile is a path, and stays.
_SECRET_QUERY_OPTION = re.compile(r"password|secret|token", re.IGNORECASE)


def _url_secret(url: str) -> str | None:
    """What secret the database URL ``url`` holds ("a password", "the option sslpassword"), else None."""
    if "@" not in url and "?" not in url:  # no user nor options: nothing to parse (nor sqlalchemy to import)
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # Left to the run, which says how to write the URL; a password may still be in it, so guess
        # from the text: "user:password@" before the host.
        return "a password" if re.match(r"[^:/]+://[^/@]*:[^/@]+@", url) else None
    if parsed.password:
        return "a password"
    options = sorted(key for key in parsed.query if _SECRET_QUERY_OPTION.search(key))
    return f"the option {options[0]}" if options else None


def _no_dates(params: Any) -> Any:
    """Query parameters unless one is a YAML date, empty, a list or a mapping, which no parameter type takes."""
    # YAML reads an unquoted 2024-01-01 as a date: pydantic tried each type of the union and
    # reported four lines (str, int, float, bool), none saying to quote it; so for `region:` (null)
    # and `[a, b]`.
    if isinstance(params, dict):
        dated = sorted(str(name) for name, value in params.items() if isinstance(value, date))
        if dated:
            raise ValueError(
                f"{', '.join(dated)}: YAML reads an unquoted date or date-time as a date, which a query parameter cannot "
                f"be; quote it ({dated[0]}: '{params[dated[0]]}') to bind it as text"
            )
        empty = sorted(str(name) for name, value in params.items() if value is None)
        if empty:
            raise ValueError(
                f"{', '.join(empty)}: no value is given (YAML reads an empty value or null as none), and a query parameter "
                f"is text, a number, true or false; write the value, '' for empty text, or remove the parameter"
            )
        several = sorted(str(name) for name, value in params.items() if isinstance(value, list | dict))
        if several:
            raise ValueError(
                f"{', '.join(several)}: a query parameter is one value (text, a number, true or false), not a "
                f"{'list' if isinstance(params[several[0]], list) else 'mapping'}: give each value its own parameter "
                "(for IN, one per value)"
            )
    return params


def _named_as_bound(params: dict[str, Any], pattern: str, bound_as: str) -> dict[str, Any]:
    """``params`` when each name matches ``pattern``, the form a query refers to a parameter by."""
    bad = sorted(name for name in params if not re.fullmatch(pattern, name))
    if bad:
        raise ValueError(f"parameter names must be letters, digits and _ ({bound_as}), got {bad}")
    return params


def _as_written(params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """``params`` unless the job file wrote one as text that YAML 1.1 reads as another value: an
    unquoted yes, no, on or off (booleans), 012 (octal 10), 1_000 or 12:30 (base 60: 750)."""
    # `region: NO` (Norway) was bound as false, and `code: 0123` as 83: the query compared its text
    # column with them and read no row, and the run blamed the data.
    surprising = info.context.get("surprising_scalars", {}) if isinstance(info.context, dict) else {}
    written = {path[2]: text for path, text in surprising.items() if len(path) == 3 and path[:2] == ("source", "params")}
    misread = [name for name in written if isinstance(params.get(name), bool | int | float)]
    if misread:
        name = misread[0]
        value = params[name]
        shown, kind = (str(value).lower(), "boolean") if isinstance(value, bool) else (repr(value), "number")
        raise ValueError(
            f"{', '.join(misread)}: YAML reads the unquoted {written[name]} as the {kind} {shown}, which the source would be "
            f"given; quote it ({name}: '{written[name]}') to pass the text, or write {shown} for the {kind}"
        )
    return params


def _without_window(params: dict[str, Any], named: str) -> dict[str, Any]:
    """``params`` unless they set the window's own bounds, which the source binds itself."""
    clash = sorted({"start", "end"} & set(params))
    if clash:
        raise ValueError(f"must not set {clash}: {named} are the window; rename those parameters")
    return params


#: What one value of a partition format stands for, by its finest field's strptime letters.
_FORMAT_SPANS = (
    ("fS", timedelta(seconds=1), "a second"),
    ("M", timedelta(minutes=1), "a minute"),
    ("HI", timedelta(hours=1), "an hour"),
    ("dj", timedelta(days=1), "a day"),
    ("mbB", timedelta(days=31), "a month, up to 31 days"),
)


class Partitioning(_Model):
    """How one hive partition key (``date=2024-03-01``) maps to the time its files hold.

    A partition whose value parses to ``t`` holds rows in ``[t, t + granularity)``, UTC.
    """

    column: str = Field(description="The partition key, e.g. date or dt.")
    format: str = Field(description="strptime format of its values, e.g. %Y-%m-%d.")
    granularity: timedelta | None = Field(
        None, description="Time one partition holds; the finest field of format when omitted."
    )

    @field_validator("granularity", mode="before")
    @classmethod
    def _parse_granularity(cls, value: Any) -> timedelta | None:
        return None if value is None else _duration(value)

    @field_validator("format")
    @classmethod
    def _has_a_date(cls, value: str) -> str:
        if "%Y" not in value:
            raise ValueError("the format must hold the year (%Y), e.g. %Y-%m-%d or %Y-%m-%dT%H")
        return value

    @field_validator("granularity")
    @classmethod
    def _holds_a_whole_value(cls, granularity: timedelta | None, info: ValidationInfo) -> timedelta | None:
        # A partition date=2024-03-01 with granularity 1h was taken to hold 00:00 to 01:00 only:
        # every window later that day skipped its files, and their rows were never read, unsaid.
        fmt = info.data.get("format")
        if granularity is None or fmt is None:
            return granularity
        directives = set(re.findall(r"%(.)", fmt))
        # The finest field of the format, as pipelines.sources.file._finest_step (which imports
        # pandas); a month or a year at its longest, as a shorter granularity drops its last days.
        span, named = next(
            ((span, named) for letters, span, named in _FORMAT_SPANS if directives & set(letters)),
            (timedelta(days=366), "a year"),
        )
        if granularity < span:
            raise ValueError(
                f"{duration_text(granularity)} is shorter than what one value of format {fmt!r} stands for ({named}): its "
                f"partitions would be taken to hold their first {duration_text(granularity)} only, and windows after that "
                f"would skip their files; leave granularity out (the format's finest field), or give at least {duration_text(span)}"
            )
        return granularity


class FileSource(_Model):
    kind: Literal["file"]
    path: Annotated[str, AfterValidator(_written_out)] = Field(description="A file, a glob, or a folder; local, s3:// or gs://")
    format: Literal["csv", "jsonl", "json", "parquet", "pickle"] | None = Field(
        None, description="Inferred from the file suffix when omitted."
    )
    encoding: str = Field("utf-8", description="Text encoding of csv, jsonl and json files.")
    delimiter: str = Field(",", description="What separates the fields of csv files (';' and '\\t' are common).")
    decimal: str = Field(".", description="The decimal point of numbers in csv files (',' in many European exports).")
    thousands: str | None = Field(
        None, description="What groups the thousands of numbers in csv files (',' for 1,234.5; '.' for 1.234,5)."
    )
    allow_pickle: bool = Field(False, description="Unpickling runs code: only for files you trust.")
    partitioning: Partitioning | None = Field(
        None, description="Time partition key of hive folders; inferred from year/month/day/hour/date/dt."
    )
    prune_partitions: bool = Field(
        True, description="Skip partitions outside the window; false when partition times are not row times."
    )
    storage_options: StorageOptions = Field(default_factory=dict, description="fsspec options")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None
        return value

    @field_validator("delimiter", "decimal", "thousands")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        # pandas takes a longer delimiter as a regular expression and reads it with its slow
        # Python engine, and a quote or a line break cannot separate fields at all.
        if value is not None and (len(value) != 1 or value in "\r\n\""):
            raise ValueError(
                f"must be one character other than a quote or a line break, got {value!r} "
                "(write a tab in double quotes: \"\\t\")"
            )
        return value

    @model_validator(mode="after")
    def _delimiter_is_not_the_decimal(self) -> FileSource:
        if self.delimiter == self.decimal:
            raise ValueError(
                f"delimiter and decimal are both {self.delimiter!r}: a number could not be told from two fields; "
                "files with decimal commas usually separate fields with ';' (delimiter: ';', decimal: ',')"
            )
        # thousands may equal the delimiter: a comma-separated export quotes "1,234.5", which reads.
        if self.thousands is not None and self.thousands == self.decimal:
            raise ValueError(
                f"thousands and decimal are both {self.thousands!r}: a number could not be read; a file with "
                "1,234.5 has thousands: ',' and decimal: '.', one with 1.234,5 thousands: '.' and decimal: ','"
            )
        return self

    @model_validator(mode="after")
    def _pickle_is_allowed(self) -> FileSource:
        if self.format == "pickle" and not self.allow_pickle:
            raise ValueError(
                "format pickle needs allow_pickle: true, because unpickling runs arbitrary code; "
                "convert the data to Parquet, or set allow_pickle: true only for files you trust"
            )
        return self

    def describe(self) -> str:
        return f"file source {self.path!r}"


class PythonSource(_Model):
    kind: Literal["python"]
    callable: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        description="package.module:function, called as function(start, end, **params).",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the callable.")

    @field_validator("params")
    @classmethod
    def _window_is_not_a_param(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _as_written(_without_window(params, "start and end"), info)

    def describe(self) -> str:
        return f"python source {self.callable!r}"


class SqlSource(_Model):
    kind: Literal["sql"]
    connection: SqlConnection
    query: str = Field(description="SQL with :start and :end bound parameters for the window.")
    params: Annotated[dict[str, str | int | float | bool], BeforeValidator(_no_dates)] = Field(
        default_factory=dict, description="Extra bound parameters of the query."
    )

    @field_validator("query")
    @classmethod
    def _window_is_bound(cls, query: str) -> str:
        # What SQLAlchemy's text() takes for a bound parameter: not after a colon, a word character
        # or a backslash, nor followed by a colon.
        missing = [name for name in ("start", "end") if not re.search(rf"(?<![:\w\\]):{name}\b(?!:)", query)]
        cast = re.search(r"(?<![:\w\\]):(start|end)::(\w+)", query)
        if cast:
            # `:start::timestamptz` (PostgreSQL's, DuckDB's cast) is no parameter to SQLAlchemy:
            # the job loaded, and every run failed with "doesn't define a bound parameter named 'start'".
            raise ValueError(
                f"SQLAlchemy does not read :{cast[1]} followed by :: as a bound parameter; write the cast as "
                f"CAST(:{cast[1]} AS {cast[2]})"
            )
        if missing:
            raise ValueError(
                "the query must bound its window with bound parameters :start and :end "
                f"(e.g. WHERE ts >= :start AND ts < :end); missing {', '.join(':' + m for m in missing)}"
            )
        return query

    @field_validator("params")
    @classmethod
    def _window_is_not_a_param(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Checked here, not when reading: validate-config passed and every run then failed.
        _as_written(_without_window(params, ":start and :end"), info)
        # SQLAlchemy's :name is letters, digits and _: `:my-region` in the query is :my, which no
        # parameter set, and each run failed.
        return _named_as_bound(params, r"\w+", "the query's :name")

    def describe(self) -> str:
        return f"sql source ({self.connection.describe()})"


class BigQuerySource(_Model):
    kind: Literal["bigquery"]
    query: str = Field(description="Standard SQL with @start and @end query parameters.")
    project: str | None = None
    location: str | None = None
    conn_id: ConnId | None = Field(None, description="Airflow google_cloud_platform connection.")
    params: Annotated[dict[str, str | int | float | bool], BeforeValidator(_no_dates)] = Field(
        default_factory=dict, description="Extra query parameters (@name), bound as STRING/INT64/FLOAT64/BOOL."
    )
    api_endpoint: str | None = Field(
        None, description="Another BigQuery REST endpoint (an emulator); used without credentials."
    )

    @field_validator("query")
    @classmethod
    def _window_is_bound(cls, query: str) -> str:
        missing = [name for name in ("start", "end") if not re.search(rf"@{name}\b", query)]
        if missing:
            raise ValueError(
                "the query must bound its window with query parameters @start and @end; "
                f"missing {', '.join('@' + m for m in missing)}"
            )
        return query

    @field_validator("params")
    @classmethod
    def _params_are_names(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        _as_written(_without_window(params, "@start and @end"), info)
        return _named_as_bound(params, r"[A-Za-z_][A-Za-z0-9_]*", "BigQuery @name")

    def describe(self) -> str:
        return f"bigquery source (project {self.project or 'default'})"


Source = Annotated[FileSource | SqlSource | BigQuerySource | PythonSource, Field(discriminator="kind")]
SOURCE_KINDS = ("file", "sql", "bigquery", "python")


class ModelConfig(_Model):
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_kind_and_params(self) -> ModelConfig:
        if self.kind not in MODEL_PARAMS:
            raise ValueError(
                f"unknown model kind {self.kind!r}; choose one of {', '.join(sorted(MODEL_PARAMS))}"
            )
        try:
            MODEL_PARAMS[self.kind](**self.params)
        except ValidationError as exc:
            known = ", ".join(sorted(MODEL_PARAMS[self.kind].model_fields))
            problems = "; ".join(_param_problem(err, self.kind, known) for err in exc.errors())
            raise ValueError(f"invalid parameters for model {self.kind!r}: {problems}") from None
        return self


#: Most characters of a given value that an error shows, and of one line of an error. The error
#: of a job file is stored as Airflow's import error of the DAG file and printed by every command:
#: a list of a million items (or a YAML alias bomb) made a message of megabytes, seconds to build.
_SHOWN_CHARS = 200
_LINE_CHARS = 2000

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 4, _SHOWN_CHARS, _SHOWN_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 10


def _few_values(value: Any, budget: int = _SHOWN_CHARS) -> bool:
    """Whether ``value`` holds few values and little text, so that its whole ``repr`` is cheap;
    the walk stops at the budget, however large (or self-referring) ``value`` is."""
    pending = [value]
    while pending:
        item = pending.pop()
        budget -= 1 + (len(item) if isinstance(item, str | bytes) else 0)
        if budget < 0:
            return False
        if isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            pending += item
    return True


def _shown(value: Any) -> str:
    """``repr(value)``, or when longer than :data:`_SHOWN_CHARS` its start, an ellipsis and its size."""
    text = repr(value) if _few_values(value) else _REPR.repr(value)
    if len(text) <= _SHOWN_CHARS and _few_values(value):
        return text
    if isinstance(value, str | bytes):
        size = f"{len(value):,} characters"
    elif isinstance(value, dict):
        size = f"a mapping of {len(value):,} keys"
    elif isinstance(value, list | tuple | set | frozenset):
        size = f"a list of {len(value):,} item{'' if len(value) == 1 else 's'}"
    else:
        size = type(value).__name__
    return f"{text[:_SHOWN_CHARS]}… ({size})"


def _bounded(line: str) -> str:
    """``line`` cut in the middle when longer than :data:`_LINE_CHARS`: a check's own message may
    quote a given value whole ("... is not a duration: ..."); its end says what to do."""
    return line if len(line) <= _LINE_CHARS else cut_middle(line, _LINE_CHARS // 2, _LINE_CHARS // 4)


def _naming_input(message: str, given: Any) -> str:
    """``message`` with the value it was given, unless it names it already ("'0 25 * * *' is not ...")."""
    shown = _shown(given)
    # A long value is shown cut ("'abc...xyz'… (9,000 characters)"): what comes before the first
    # cut begins its repr, which a message quoting the value whole holds.
    start = re.split(r"\.\.\.|…", shown, maxsplit=1)[0]
    return message if shown in message or (len(start) >= 20 and start in message) else f"{message} (got {shown})"


def _param_problem(err: Any, kind: str, known: str) -> str:
    """One detector-parameter error as ``params.<name>: <what is wrong>``."""
    if err["type"] == "extra_forbidden":
        name = ".".join(str(p) for p in err["loc"])
        # auto's candidates take their own parameters under candidate_params: "check its spelling"
        # sent a correctly spelt holidays_country hunting for a typo.
        candidates = [k for k in MODEL_PARAMS if k != "auto"] if kind == "auto" else []
        takers = sorted(k for k in candidates if name in MODEL_PARAMS[k].model_fields)
        if takers:
            return (
                f"params.{name}: auto takes no parameter {name}; it is a parameter of its "
                f"candidate{'s' if len(takers) > 1 else ''} {', '.join(takers)}: give it as "
                f"{' or '.join(f'candidate_params.{k}.{name}' for k in takers)} "
                "(auto passes candidate_params.<kind> to that candidate)"
            )
        return f"params.{name}: unknown parameter (check its spelling; {kind}'s parameters are {known})"
    message = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a check of the parameters together: its message names them, the input is all of them
        return f"params: {message}"
    return f"params.{'.'.join(str(p) for p in err['loc'])}: {_naming_input(message, err.get('input'))}"


class ThresholdConfig(_Model):
    """How scores become ``is_anomaly``.

    ``contamination``: the share of training points that would be flagged (threshold = the
    ``1 - value`` quantile of training scores). ``score``: a fixed cut on the calibrated score.
    ``false_alarm_probability``: the chance that a normal point is flagged (OCI's ``targetFap``);
    scores being calibrated probabilities, the cut is ``1 - value``.
    """

    kind: Literal["contamination", "score", "false_alarm_probability"] = "contamination"
    value: Number = 0.005

    @model_validator(mode="before")
    @classmethod
    def _kind_as_key(cls, data: Any) -> Any:
        # OCI writes targetFap as a key of its own: {false_alarm_probability: 0.01} was refused as
        # an "unknown field", which did not say how to write it here.
        if isinstance(data, dict):
            named = [key for key in ("contamination", "score", "false_alarm_probability") if key in data]
            if named:
                raise _FieldError(
                    f"threshold.{named[0]}",
                    f"the kind of threshold is a value of 'kind', not a key: write threshold: {{kind: {named[0]}, "
                    f"value: {data[named[0]]}}}" + (" (one kind per job)" if len(named) > 1 else ""),
                )
        return data

    @model_validator(mode="after")
    def _in_range(self) -> ThresholdConfig:
        if self.kind == "score" and "value" not in self.model_fields_set:
            # The default value is a share of points (0.5 %): as a cut on the score it flagged
            # nearly every point, without a word.
            raise _FieldError(
                "threshold.value",
                "a score threshold has no default: write the calibrated score from which a point is an anomaly, "
                "in (0, 1), e.g. threshold: {kind: score, value: 0.99}",
            )
        if self.kind in ("contamination", "false_alarm_probability") and not 0 < self.value <= 0.5:
            name = "contamination" if self.kind == "contamination" else "a false alarm probability"
            raise ValueError(f"{name} must be in (0, 0.5], got {self.value}")
        if self.kind == "score" and not 0 < self.value < 1:
            raise ValueError(f"a score threshold must be in (0, 1), got {self.value}")
        return self


class Schedules(_Model):
    train: str | None = "0 2 * * 0"
    predict: str | None = "0 * * * *"  # under a frequency longer than an hour, default_predict_schedule's
    tune: str | None = None

    @field_validator("train", "predict", "tune")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from croniter import croniter

        # croniter also takes a sixth field (seconds), which Airflow's timetables do not mean.
        if not croniter.is_valid(value) or (not value.startswith("@") and len(value.split()) != 5):
            raise ValueError(
                f"{value!r} is not a valid cron expression (five fields: minute hour day month weekday)"
            )
        # A day no month named has (`0 0 31 2 *`) parses, but Airflow then finds no run to
        # schedule: the DAG never ran, with only a traceback in the DAG processor's log.
        from croniter import CroniterBadDateError

        try:
            croniter(value).get_next()
        except CroniterBadDateError:
            raise ValueError(
                f"{value!r} never fires: none of its months has that day of the month; "
                "check the day and month fields (`null` makes the DAG run only when triggered)"
            ) from None
        return value


class Timeouts(_Model):
    """How long a run of each of the job's DAGs may take before Airflow fails it (``dagrun_timeout``),
    so that a hung run does not hold the job's run slot for ever; unset: the DAG factory's default
    (``dags/anomaly_jobs.py``: train 6 h, tune 12 h, score 24 h, predict three schedule intervals
    kept between 1 h and 12 h)."""

    train: timedelta | None = None
    tune: timedelta | None = None
    predict: timedelta | None = None
    score: timedelta | None = None

    @field_validator("train", "tune", "predict", "score", mode="before")
    @classmethod
    def _parse_durations(cls, value: Any) -> timedelta | None:
        return None if value is None else _duration(value)


def _sql_name(name: str) -> str:
    """``name`` when a table or schema may be named so without quoting in every database written to."""
    # pydantic's pattern error showed a regular expression, which said nothing of a hyphen or a dot.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError(
            f"{name!r} is not a plain SQL name: letters, digits and _, starting with a letter or _, at most 63 characters "
            "(PostgreSQL's limit), e.g. anomalies"
            + ("; a table's schema is not written before it (outputs.table has its own schema setting)" if "." in name else "")
        )
    return name


#: A table's or a schema's name, written into SQL statements as it is.
SqlName = Annotated[str, AfterValidator(_sql_name)]


class TableOutput(_Model):
    connection: SqlConnection
    name: SqlName
    db_schema: SqlName | None = Field(None, alias="schema")


class BigQueryOutput(_Model):
    """A BigQuery table shared by jobs; the window's rows of a job are replaced atomically."""

    table: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$",
        description="project.dataset.table",
    )
    conn_id: ConnId | None = Field(None, description="Airflow google_cloud_platform connection.")
    location: str | None = None
    api_endpoint: str | None = Field(
        None, description="Another BigQuery REST endpoint (an emulator); used without credentials."
    )

    def describe(self) -> str:
        return f"bigquery table {self.table!r}"


class Outputs(_Model):
    parquet: Location = Field("var/outputs", description="Root of the Parquet dataset (local or s3://).")
    table: TableOutput | None = None
    bigquery: BigQueryOutput | None = None
    storage_options: StorageOptions = Field(default_factory=dict)


class ValidationConfig(_Model):
    min_rows: Count = Field(1, ge=0, description="Fewest rows a batch may have.")
    max_null_fraction: Number = Field(
        0.0, ge=0.0, le=1.0, description="Largest share of missing values allowed per feature."
    )
    suite: Annotated[str, AfterValidator(_written_out)] | None = Field(None, description="Great Expectations suite (JSON) applied on top.")


class _FieldError(ValueError):
    """A check of several fields together, reported at the field ``where`` (``model.params.window``)
    rather than at the top level of the job, where pydantic puts the checks of a whole model."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where


class TuneConfig(_Model):
    """The search of ``<job>__tune``: see docs/MODELS.md ("Tuning") and docs/CONFIGURATION.md."""

    detectors: list[str] | None = Field(
        None, min_length=1, description="Detector kinds searched; default the auto candidates for auto, else model.kind."
    )
    trials: Count = Field(20, ge=1, le=10_000, description="Most trials per series.")
    timeout: timedelta = Field(timedelta(minutes=10), description="Most time of the search per series; a running trial finishes (the decision and the final refit come on top).")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="Restricts these parameters to these values; empty means the full search space."
    )
    holdout_fraction: Number = Field(0.25, gt=0, lt=1)
    promotion_margin: Number = Field(0.02, ge=0.0, le=1.0, description="How much the challenger must beat the champion by (mean over the plantings).")
    # 0 to 2**32 - 1: Optuna's sampler and NumPy refuse other seeds, which failed every tune run.
    seed: Count = Field(0, ge=0, le=2**32 - 1, description="Seed of the sampler and of the first planting of anomalies.")
    plantings: Count = Field(
        5, ge=1, le=50, description="Times anomalies are planted in the held-back rows without labels; trials rank by mean event F1."
    )
    stretches: Count = Field(
        3, ge=1, le=10,
        description="Held-back stretches (latest first) a challenger must be clearly better than the champion on, "
        "with planted anomalies; as model: auto's own rule.",
    )

    @field_validator("timeout", mode="before")
    @classmethod
    def _parse_timeout(cls, value: Any) -> timedelta:
        return _duration(value)

    @model_validator(mode="after")
    def _searchable(self) -> TuneConfig:
        from pipelines.detectors.search_spaces import TUNABLE_KINDS, check_tune_settings

        # Without tune.detectors the kinds depend on model.kind: the tune run checks them again.
        try:
            check_tune_settings(self.detectors or list(TUNABLE_KINDS), self.grid if self.detectors else {})
        except ValueError as exc:  # its message starts with the field: report it there, not as "tune: tune.grid.x: ..."
            where, _, message = str(exc).partition(": ")
            raise _FieldError(where, message) from None
        return self


class ResampleConfig(_Model):
    """How each series is put on the job's ``frequency`` grid before training and scoring.

    Rows are bucketed into ``[k * frequency, (k + 1) * frequency)`` counted from the Unix epoch.
    Several rows in one bucket are combined with ``aggregate``; a bucket without rows between the
    series' first and last rows is left missing (the detectors score a missing value 0 and never
    flag it) or, with ``fill: ffill``, takes the last bucket with rows as it is (a value missing
    there stays missing) for at most ``ffill_limit`` buckets in a row (no limit when it is omitted). Every run logs and reports the counts per series.
    """

    aggregate: Literal["mean", "sum", "min", "max", "first", "last", "median"] = "mean"
    fill: Literal["none", "ffill"] = "none"
    ffill_limit: Count | None = Field(None, ge=1, description="Most buckets in a row one value fills.")

    @model_validator(mode="after")
    def _limit_needs_ffill(self) -> ResampleConfig:
        if self.ffill_limit is not None and self.fill != "ffill":
            raise ValueError("ffill_limit only applies with fill: ffill; set fill: ffill or remove ffill_limit")
        return self


class LabelsConfig(_Model):
    """Where people's verdicts on anomaly events (true anomaly / false alarm) are kept.

    One table may hold the labels of many jobs (rows are keyed by job). The default is a SQLite
    file in the project's ``var/``; point ``connection`` at a shared database when the API, the
    CLI and Airflow's workers run on different machines.
    """

    connection: SqlConnection = Field(
        default_factory=lambda: SqlConnection(url="sqlite:///var/labels.db"),
        description="Database of the labels table; relative sqlite:/// paths resolve against the project root.",
    )
    table: SqlName = Field("anomaly_labels", description="Table name.")


class MonitoringConfig(_Model):
    """When a predict run asks for a retrain (see docs/MODELS.md, "Monitoring and retraining").

    Each predict run records, per series and feature, the drift of the scored values against the
    champion's training window, and the anomaly rate. A retrain is due when one feature drifted
    beyond ``drift_threshold`` in each of the last ``sustained_runs`` records of the serving
    champion, or when its anomaly rate was far above the calibrated one in each of them.
    """

    enabled: bool = Field(True, description="Record drift and anomaly rates and request retrains.")
    statistic: Literal["psi", "ks"] = Field("psi", description="Drift statistic that decides (both are recorded).")
    drift_threshold: Number | None = Field(
        None, gt=0.0, description="Drift above this is 'drifted'; default 0.25 for psi, 0.2 for ks."
    )
    sustained_runs: Count = Field(3, ge=1, le=1000, description="Consecutive records that must agree.")
    min_rows: Count = Field(
        100, ge=2, le=100_000, description="Fewest timestamps a statistic is computed on (earlier published rows are added)."
    )
    rate_factor: Number = Field(3.0, gt=1.0, description="Anomaly rate above this many times the calibrated one is far.")
    rate_p_value: Number = Field(
        0.001, gt=0.0, lt=1.0, description="Level of the one-sided binomial test of the anomaly rate."
    )
    repeat_after_runs: Count = Field(
        24, ge=1, description="Predict runs after a retrain request before the same champion is reported again."
    )

    @model_validator(mode="after")
    def _ks_can_pass_the_threshold(self) -> MonitoringConfig:
        # The KS statistic is at most 1: a drift_threshold of 1 or more (a PSI-sized 1.5 kept when
        # switching statistic) never counted a drift, and no retrain was ever asked for.
        if self.statistic == "ks" and self.drift_threshold is not None and self.drift_threshold >= 1:
            raise _FieldError(
                "monitoring.drift_threshold",
                f"the ks statistic is at most 1, so a drift_threshold of {self.drift_threshold:g} would never be passed: "
                "use a value in (0, 1) (default 0.2 for ks), or statistic: psi",
            )
        return self

    @property
    def threshold(self) -> float:
        if self.drift_threshold is not None:
            return self.drift_threshold
        return 0.25 if self.statistic == "psi" else 0.2


#: Fields an e-mail subject may use (values of the event being alerted).
ALERT_SUBJECT_FIELDS = ("job", "series", "start", "end", "peak_score", "peak_timestamp", "direction", "features", "rows")


#: One e-mail address: no display name, no list.
_EMAIL_ADDRESS = r"[^@\s,;]+@[^@\s,;]+"


class EmailChannel(_Model):
    """E-mail through Airflow's SMTP connection (apache-airflow-providers-smtp's SmtpNotifier)."""

    to: list[str] = Field(min_length=1, description="Recipients.")
    from_email: str | None = Field(None, description="Sender; the connection's from_email when omitted.")
    smtp_conn_id: ConnId = Field("smtp_default", description="Airflow SMTP connection.")
    subject: str = Field(
        "[anomaly] {job} {series}: {direction} {start} (score {peak_score:.3f})",
        description="Python format string over the event's fields (see docs/ALERTS.md).",
    )

    @field_validator("to")
    @classmethod
    def _addresses(cls, to: list[str]) -> list[str]:
        bad = [address for address in to if not re.fullmatch(_EMAIL_ADDRESS, address)]
        if bad:
            raise ValueError(f"not e-mail addresses: {bad} (one address per list item, e.g. oncall@example.com)")
        return to

    @field_validator("from_email")
    @classmethod
    def _sender(cls, sender: str | None) -> str | None:
        # `from_email: alerts` passed, and the SMTP server refused every message at send time.
        # A display name is fine: smtplib sends from the address inside the angle brackets.
        if sender is not None and not re.fullmatch(rf"{_EMAIL_ADDRESS}|[^<>@,;]*<{_EMAIL_ADDRESS}>", sender):
            raise ValueError(
                f"{sender!r} is not an e-mail address: write one (anomalies@example.com, or Anomalies <anomalies@example.com>), "
                "or leave from_email out for the SMTP connection's own"
            )
        return sender

    @field_validator("subject")
    @classmethod
    def _known_fields(cls, subject: str) -> str:
        import string

        try:
            names = {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(subject) if name}
        except ValueError as exc:
            raise ValueError(f"not a valid format string: {exc} (write {{field}}, and {{{{ for a brace)") from None
        unknown = sorted(names - set(ALERT_SUBJECT_FIELDS))
        if unknown:
            raise ValueError(f"unknown fields {unknown}; use any of {', '.join(ALERT_SUBJECT_FIELDS)}")
        return subject


class SlackChannel(_Model):
    """Slack through an incoming webhook (SlackWebhookNotifier; the webhook fixes the channel) or,
    with ``channel``, through the Web API (SlackNotifier with a bot token connection)."""

    webhook_conn_id: ConnId | None = Field(None, description="Airflow slackwebhook connection.")
    api_conn_id: ConnId | None = Field(None, description="Airflow slack (API token) connection; needs channel.")
    channel: str | None = Field(None, description="Channel of the Web API message, e.g. #alerts.")

    @model_validator(mode="after")
    def _one_way(self) -> SlackChannel:
        if bool(self.webhook_conn_id) == bool(self.api_conn_id):
            raise ValueError("give exactly one of webhook_conn_id (incoming webhook) or api_conn_id with channel (Web API)")
        if self.webhook_conn_id and self.channel:
            raise ValueError("an incoming webhook posts to the channel it was created for: remove channel, or use api_conn_id")
        if self.api_conn_id and not self.channel:
            raise ValueError("api_conn_id needs channel (e.g. '#alerts')")
        return self


class DigestConfig(_Model):
    hour: Count = Field(8, ge=0, le=23, description="UTC hour: the run whose window passes it sends the past day's events.")


class AlertsConfig(_Model):
    """Who hears of anomaly events, and which ones (see docs/ALERTS.md)."""

    email: EmailChannel | None = None
    slack: SlackChannel | None = None
    series: list[str] = Field(default_factory=list, description="Series keys or glob patterns; empty: all.")
    features: list[str] = Field(default_factory=list, description="Alert on points these features drove; empty: all.")
    min_score: Number = Field(0.0, ge=0.0, le=1.0, description="Least peak score of an alerted event.")
    direction: Literal["both", "rise", "fall"] = "both"
    max_gap: Count = Field(1, ge=0, description="Normal periods allowed inside one event.")
    snooze: Count = Field(0, ge=0, description="Periods of frequency after an alerted event that hold the series' next ones.")
    escalate: bool = Field(
        True, description="Send an event of a snoozed series anyway when its peak score beats the alert that snoozed it."
    )
    immediate: bool = Field(True, description="Send each event when found; false: only the digest.")
    # An outage shared by a job of thousands of series flagged all of them at once and paged
    # thousands of times in one run; past ten pages at once the news is that something shared
    # broke, and one message listing the rest (worst first) says that better than more pages.
    # Those events are not dropped: remembered, snoozing their series, in the digest.
    max_per_run: Count = Field(
        10, ge=1, description="Most alerts a run sends one by one; the events past them go in one summary message."
    )
    digest: DigestConfig | None = Field(None, description="A daily message listing the day's events.")
    dashboard_url: str | None = Field(
        None, description="Airflow's base URL for links; default: Airflow's [api] base_url, else http://localhost:8080."
    )

    @field_validator("dashboard_url")
    @classmethod
    def _is_a_base_url(cls, url: str | None) -> str | None:
        # Alert links are this URL followed by the dashboard's path: `airflow.example.com` made
        # links that no mail client or Slack opened, and nothing said so before an alert was sent.
        if url is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
            raise ValueError(
                "must be Airflow's base URL with its scheme and without a query, e.g. https://airflow.example.com, "
                "which alert links continue with the dashboard's path; leave it out for Airflow's [api] base_url"
            )
        return url

    @model_validator(mode="after")
    def _something_to_send(self) -> AlertsConfig:
        if not (self.email or self.slack):
            raise ValueError("configure at least one channel: email and/or slack")
        if not (self.immediate or self.digest):
            raise ValueError("immediate: false needs a digest (digest: {hour: 8}), or nothing would ever be sent")
        return self


#: Share of the training window's latest rows that training holds back to compare the new model
#: with the serving one, fitting the new model on the rows before them first. The source of truth
#: is ``HOLDOUT_FRACTION`` of pipelines/training.py, which imports pandas (a test checks both agree).
_TRAINING_HOLDOUT = 0.2
#: Fewest training rows of each detector whatever its parameters: ``_MIN_TRAINING_ROWS`` of
#: pipelines/detectors/<kind>.py, the source of truth (see :func:`_fewest_training_rows`).
_FEWEST_ROWS = {
    "auto": 60, "context": 50, "iforest": 20, "level_shift": 20, "lstm": 40, "mset": 30, "prophet": 20, "seasonal_mad": 20,
}
#: Windows of rows the window detectors fit on at least (their ``_require_rows``: "two windows at least").
WINDOWS_FITTED = {"iforest": 2, "lstm": 5}
#: Lags MSET takes with ``lags: auto`` for a lone signal (``_LONE_SIGNAL_LAGS`` of mset.py).
_MSET_LONE_SIGNAL_LAGS = 3
#: Fewest rows of a tune run's fitted head and of its held-back tail, where anomalies are planted
#: (``_MIN_ROWS`` of pipelines/tuning.py, which imports pandas; a test checks both agree).
_TUNE_MIN_ROWS = 10


#: Fires of the predict schedule whose data intervals are checked against the frequency: a
#: cron's gaps repeat within a day (an hourly cron's 24 fires) or less; checked at every DAG parse.
_CRON_FIRES_CHECKED = 48


def _fewest_training_rows(kind: str, params: dict[str, Any], n_features: int) -> tuple[int, str | None, str]:
    """The fewest rows a ``kind`` detector with ``params`` (every parameter, as validated) fits on,
    the parameter that raises them above the detector's own floor (None when none does), and why.

    Duplicated from the ``_require_rows`` calls of each detector's ``fit``, the source of truth:
    those modules import pandas and scikit-learn, which the parse of DAG files must not.
    tests/pipelines/test_config.py fits each detector on one row fewer to check that both agree.
    """
    fewest = _FEWEST_ROWS[kind]
    if kind in WINDOWS_FITTED:
        windows, window = WINDOWS_FITTED[kind], params["window"]
        needed = windows * window
        return max(fewest, needed), "window" if needed > fewest else None, f"{windows} windows of {window} rows"
    if kind == "mset":
        # The first `lags` rows only give lags to the rows after them: they make no state.
        lags = params["lags"] if params["lags"] != "auto" else (_MSET_LONE_SIGNAL_LAGS if n_features == 1 else 0)
        needed = max(fewest + lags, 4 * (lags + 1))
        return needed, "lags" if params["lags"] != "auto" and needed > fewest else None, f"{fewest} states after its {lags} lags"
    return fewest, None, f"{kind}'s least"


def _fitted_rows(rows: int, held_back: float = _TRAINING_HOLDOUT) -> int:
    """Of a training window of ``rows`` rows, the rows training fits the new model on first (a tune
    trial: ``held_back`` is ``tune.holdout_fraction``). The expression of training and tuning."""
    return int(rows * (1 - held_back))


def _least_window(rows: int, needed: int, frequency: timedelta, held_back: float) -> timedelta:
    """The shortest training window (from ``rows`` rows on) whose fitted rows are ``needed``."""
    least_rows = max(rows, math.floor(needed / (1 - held_back)) - 2)  # a few steps below the answer, whatever the share
    while _fitted_rows(least_rows, held_back) < needed:
        least_rows += 1
    least = least_rows * frequency
    if least >= timedelta(days=1):  # a whole number of days reads better, and is still enough
        least = timedelta(days=math.ceil(least / timedelta(days=1)))
    return least


def default_predict_schedule(frequency: timedelta) -> str:
    """The predict schedule of a job file that writes none: hourly, or once a period when the
    ``frequency`` is longer than an hour and its epoch-aligned grid has a cron (whole hours that
    divide a day; a week, whose grid starts on Thursdays, as 1970-01-01 did). Others stay hourly,
    which :meth:`JobConfig._predict_runs_hold_a_period` refuses, asking for a schedule."""
    hours, rest = divmod(frequency, timedelta(hours=1))
    if frequency <= timedelta(hours=1) or rest:
        return "0 * * * *"
    if 24 % hours == 0:
        return "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"
    return "0 0 * * 4" if frequency == timedelta(weeks=1) else "0 * * * *"


#: The strptime directives a ``timestamp_format`` may use: what pandas parses, without zone names.
_TIMESTAMP_DIRECTIVES = "YymbBdHIMSfpzjaA"


class JobConfig(_Model):
    name: str
    description: str = ""
    source: Source
    timestamp: Column = Field(description="Column holding the time of each row.")
    timestamp_format: str | None = Field(
        None,
        description="How the timestamp column's text is written, as a strptime format, e.g. '%d/%m/%Y %H:%M' for day-first "
        "dates; every value must follow it. Unset: ISO 8601 and other forms that read one way only. Values stored "
        "with a date-time type are not affected.",
    )
    frequency: timedelta = Field(description="Spacing of the series, e.g. '1h'.")
    dimensions: list[Column] = Field(default_factory=list, description="One model per group of these.")
    features: list[Column] = Field(min_length=1, description="Numeric columns to watch.")
    model: ModelConfig
    training_window: timedelta = Field(timedelta(days=28))
    threshold: ThresholdConfig = ThresholdConfig()
    schedules: Schedules = Schedules()
    timeouts: Timeouts = Field(
        default_factory=Timeouts,
        description="Longest run of each DAG (train, tune, predict, score) before it is failed, e.g. {train: 10h}; "
        "unset: train 6h, tune 12h, score 24h, predict three schedule intervals within 1h-12h.",
    )
    outputs: Outputs = Outputs()
    validation: ValidationConfig = ValidationConfig()
    tune: TuneConfig = TuneConfig()
    resample: ResampleConfig = ResampleConfig()
    alerts: AlertsConfig | None = None
    labels: LabelsConfig = LabelsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    registry: Location = Field("var/models", description="Model registry root (local or s3://).")
    registry_keep: Count = Field(
        30, ge=1,
        description="Newest model versions kept per series; older ones are removed after each train and tune run, except "
        "the champion, the two earlier champions before those kept, the tuned version and versions of the last hour.",
    )
    start_date: str = Field("2024-01-01", description="First data interval the schedules may run.")

    @field_validator("frequency", "training_window", mode="before")
    @classmethod
    def _parse_durations(cls, value: Any) -> timedelta:
        return _duration(value)

    @field_validator("timestamp_format")
    @classmethod
    def _timestamp_format_reads_a_date(cls, value: str | None) -> str | None:
        if value is None:
            return value
        example = "e.g. '%d/%m/%Y %H:%M' for 13/01/2024 14:30, or '%d.%m.%Y %H:%M:%S%z' with an offset"
        directives = re.findall(r"%(.?)", value.replace("%%", ""))
        unknown = sorted({f"%{letter}" for letter in directives} - {f"%{letter}" for letter in _TIMESTAMP_DIRECTIVES})
        if "%Z" in unknown:
            raise ValueError(f"zone names (%Z) are ambiguous (CST is three zones): write the offsets and read them with %z, {example}")
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} is not a strptime directive that timestamps are read with; use "
                f"{' '.join('%' + letter for letter in _TIMESTAMP_DIRECTIVES)}, {example}"
            )
        lacking = [name for name, letters in (("year (%Y)", "Yy"), ("month (%m)", "mbB"), ("day (%d)", "d")) if not set(letters) & set(directives)]
        if lacking:
            raise ValueError(f"the format must hold the date: it lacks the {' and the '.join(lacking)}, {example}")
        if "I" in directives and "p" not in directives:
            raise ValueError(f"%I (hour 1-12) needs %p (AM/PM), or 14:30 reads as 02:30; use %H for hours 0-23, {example}")
        if "H" in directives and "p" in directives:
            raise ValueError(f"%p (AM/PM) goes with %I (hour 1-12), not %H, {example}")
        return value

    @field_validator("start_date", mode="before")
    @classmethod
    def _start_date_is_a_date(cls, value: Any) -> Any:
        # YAML reads an unquoted 2024-02-01 as a date; the DAG files parse the text, and a text
        # they cannot parse would fail the whole DAG file, so every job would lose its DAGs.
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be an ISO 8601 date or date-time, e.g. 2024-02-01 or 2024-02-01T06:00:00Z") from None
        return value

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, name: str) -> str:
        # fullmatch: `$` also matches before a final line break, and a YAML block scalar (`name: |`)
        # ends with one: "web\n" passed, and made DAG ids and file names with a line break in them.
        if not JOB_NAME.fullmatch(name):
            raise ValueError(
                "must start with a lower-case letter, hold only a-z, 0-9 and _, and have at most 63 characters "
                "(it names DAGs, tables and files), e.g. web_metrics"
            )
        return name

    @model_validator(mode="wrap")
    @classmethod
    def _fields_agree(cls, data: Any, handler: Any) -> JobConfig:
        # Each check of several fields together is run and every problem reported at once: as
        # after-validators, the first to fail hid the others, so a job file with two problems
        # showed one, and the next only once that one was fixed.
        job = handler(data)
        # An hourly predict under a daily frequency failed 23 of its 24 runs ("holds no whole period").
        written = "predict" in job.schedules.model_fields_set
        if not written and job.schedules.predict != default_predict_schedule(job.frequency):
            schedules = job.schedules.model_copy(update={"predict": default_predict_schedule(job.frequency)})
            job = job.model_copy(update={"schedules": schedules})
        problems = []
        for check in job._checks():
            try:
                check()
            except ValueError as exc:
                problems.append(exc)
        if problems:
            raise ValidationError.from_exception_data(
                cls.__name__, [{"type": "value_error", "loc": (), "input": data, "ctx": {"error": exc}} for exc in problems]
            )
        return job

    def _checks(self) -> list[Any]:
        """The checks of several fields together, in the order their problems are reported."""
        checks = [self._columns_are_distinct, self._dimensions_are_not_output_columns, self._training_window_spans_two_periods]
        if self.training_window >= self.frequency * 2:  # else the line above says it: the rows checks would repeat it
            checks.append(self._training_window_holds_enough_rows)
        for where in self._seasons():
            checks.extend([lambda w=where: self._season_spans_two_rows(*w), lambda w=where: self._season_is_learned(*w)])
        checks.append(self._tune_grid_fits_the_model)
        if self._tune_grid_is_known():  # else the line above (or TuneConfig's) names what is wrong with the grid
            if self.training_window >= self.frequency * 2 and self._trains():  # else a line above says the window is short
                checks.append(self._tune_trials_have_rows)
            checks.extend(lambda name=name: self._tune_grid_values_fit(name) for name in self.tune.grid)
        checks.extend([self._alerted_features_exist, self._alerted_series_can_match, self._predict_runs_hold_a_period])
        return checks

    def _columns_are_distinct(self) -> None:
        columns = [self.timestamp, *self.dimensions, *self.features]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            # Reported at the list that repeats one, not at the top level of the job.
            raise _FieldError(
                "dimensions" if set(repeated) & set(self.dimensions) else "features",
                f"columns used twice among timestamp, dimensions and features: {repeated}; "
                "a column is the time, a dimension or a feature: keep it in one place",
            )

    def _dimensions_are_not_output_columns(self) -> None:
        # Dimension columns are copied into the output beside its own columns and the Parquet
        # dataset's date partition: a clash trained, then failed every predict run's write.
        # Compared without case: BigQuery, DuckDB, MySQL and SQL Server fold the case of column
        # names, so a dimension "Timestamp" passed here, then failed every write ("already exists").
        reserved = {name.lower() for name in (*OUTPUT_COLUMNS, "date")}
        taken = sorted(name for name in self.dimensions if name.lower() in reserved)
        if taken:
            raise _FieldError(
                "dimensions",
                f"dimensions {taken} share their names with columns of the output ({', '.join([*OUTPUT_COLUMNS, 'date'])}); "
                "rename them in the source (an alias in a SQL query, a header in a file)",
            )

    def _training_window_spans_two_periods(self) -> None:
        if self.training_window < self.frequency * 2:
            raise _FieldError(
                "training_window",
                f"training_window must span at least two periods of frequency: {duration_text(self.training_window)} holds "
                f"fewer than two periods of {duration_text(self.frequency)}; use a training_window of at least "
                f"{duration_text(2 * self.frequency)} (far more in practice: the model's rows checks then say how many), "
                "or a shorter frequency",
            )

    def _seasons(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The seasons of seasonal detectors the job sets up, as (field of their params, kind, params):
        model.kind's own, and for auto each candidate's season written in candidate_params (a
        candidate found unfit only at training was skipped there, its reason among the trials)."""
        found = []
        if "season" in MODEL_PARAMS[self.model.kind].model_fields:
            found.append(("model.params", self.model.kind, self.model.params))
        if self.model.kind == "auto":
            for kind, params in (self.model.params.get("candidate_params") or {}).items():
                # A default season is not checked: auto skips a candidate it does not fit, as it may.
                if "season" in params and "season" in MODEL_PARAMS[kind].model_fields:
                    found.append((f"model.params.candidate_params.{kind}", kind, params))
        return found

    def _season_spans_two_rows(self, field: str, kind: str, params: dict[str, Any]) -> None:
        # The seasonal detectors refuse, at every fit, a season that the frequency puts in one row.
        written = "season" in params
        default = MODEL_PARAMS[kind].model_fields["season"].default
        season = params["season"] if written else default
        # A whole number is rows (at least 2, checked with the parameters); None is no season.
        if not isinstance(season, str) or rows_spanned(season, self.frequency) >= 2:
            return
        # Not "a whole number of periods": the detector rounds a season up to whole rows (1d at 7min).
        named = f"season {season}" if written else f"the default season {default}"
        instead = (
            f"leave season out (the default {default})"
            if written and rows_spanned(default, self.frequency) >= 2
            else "season: null for no season"
        )
        raise _FieldError(
            f"{field}.season",
            f"{named} is not longer than one period of frequency {duration_text(self.frequency)}, so a season would "
            f"hold one row and a seasonal profile needs two: use at least {duration_text(2 * self.frequency)}, or {instead}",
        )

    def _season_is_learned(self, field: str, kind: str, params: dict[str, Any]) -> None:
        # A seasonal detector fits without its season when its rows hold fewer than two (a new
        # job's fallback, seasonal_mad._learn_season): a training window that never holds two made
        # every training serve a model without the season the job file asks for, with a warning
        # in the task logs only.
        if self.training_window < self.frequency * 2:
            return
        written = "season" in params
        season = params["season"] if written else MODEL_PARAMS[kind].model_fields["season"].default
        if season is None:
            return
        season_rows = season if isinstance(season, int) else rows_spanned(season, self.frequency)
        rows = math.ceil(self.training_window / self.frequency)
        fitted = _fitted_rows(rows)
        if season_rows < 2 or 2 * season_rows <= fitted:  # a season of one row: _season_spans_two_rows says it
            return
        named = f"season {season}" if written else f"the default season {season}"
        least = _least_window(rows, 2 * season_rows, self.frequency, _TRAINING_HOLDOUT)
        raise _FieldError(
            f"{field}.season" if written else "training_window",
            f"{named} needs two seasons of rows to learn a profile ({2 * season_rows} rows of {duration_text(self.frequency)}), "
            f"but {self._window_rows(rows)}, and training fits the new model on the first {fitted} of them (the last "
            f"{_TRAINING_HOLDOUT:.0%} are held back to compare it with the serving model): every training would fit "
            f"{'' if kind == self.model.kind else f'the {kind} candidate '}without a season; use a training_window of at least "
            f"{duration_text(least)}, a shorter season, or season: null for none",
        )

    def _training_window_holds_enough_rows(self) -> None:
        # Each detector refuses too few training rows at every fit; the rows a scheduled training has
        # are known from the job file: at most the training window's periods of frequency, of which
        # the new model is fitted first on all but the held-back share.
        params = MODEL_PARAMS[self.model.kind](**self.model.params)
        needed, param, why = _fewest_training_rows(self.model.kind, dict(params), len(self.features))
        rows = math.ceil(self.training_window / self.frequency)
        fitted = _fitted_rows(rows)
        if fitted >= needed:
            return
        window = (
            f"{self._window_rows(rows)}, and training fits the new model on the first {fitted} of them (the last "
            f"{_TRAINING_HOLDOUT:.0%} are held back to compare it with the serving model)"
        )
        widen = f"a training_window of at least {duration_text(_least_window(rows, needed, self.frequency, _TRAINING_HOLDOUT))}"
        if param is None:
            raise _FieldError("training_window", f"model {self.model.kind} needs at least {needed} training rows, but {window}: use {widen}")
        value = getattr(params, param)
        smaller = next(
            (v for v in range(value - 1, -1, -1)
             if _fewest_training_rows(self.model.kind, {**dict(params), param: v}, len(self.features))[0] <= fitted),
            None,
        )
        if smaller is not None:  # a value the parameter takes (a window of 1 would be refused)
            try:
                MODEL_PARAMS[self.model.kind](**{**self.model.params, param: smaller})
            except ValidationError:
                smaller = None
        raise _FieldError(
            f"model.params.{param}",
            f"{self.model.kind} with {param} {value} needs at least {needed} training rows ({why}), but {window}: "
            + (f"use a {param} of at most {smaller}, or {widen}" if smaller is not None else f"use {widen}"),
        )

    def _trains(self) -> bool:
        """Whether training fits the model on its rows (else :meth:`_training_window_holds_enough_rows` says why)."""
        params = MODEL_PARAMS[self.model.kind](**self.model.params)
        needed, _, _ = _fewest_training_rows(self.model.kind, dict(params), len(self.features))
        return _fitted_rows(math.ceil(self.training_window / self.frequency)) >= needed

    def _tune_grid_fits_the_model(self) -> None:
        # With tune.detectors set, TuneConfig checks the grid alone; without, the kinds searched
        # come from the model, so the grid is checked here, not hours later when a tune run starts.
        if self.tune.detectors is not None or not self.tune.grid:
            return
        from pipelines.detectors.search_spaces import check_tune_settings, default_detectors

        kinds = default_detectors(self.model.kind, self.model.params)
        try:
            check_tune_settings(kinds, self.tune.grid)
        except ValueError as exc:
            where, _, message = str(exc).partition(": ")
            searched = "the candidates of model auto" if self.model.kind == "auto" else f"model.kind {self.model.kind}"
            raise _FieldError(where, f"{message} (tune.detectors is not set, so tuning searches {searched})") from None

    def _tuned_kinds(self) -> list[str]:
        from pipelines.detectors.search_spaces import default_detectors

        return self.tune.detectors or default_detectors(self.model.kind, self.model.params)

    def _tune_grid_is_known(self) -> bool:
        """Whether each parameter of ``tune.grid`` is tuned by a kind searched, with values in its space."""
        from pipelines.detectors.search_spaces import check_tune_settings

        try:
            check_tune_settings(self._tuned_kinds(), self.tune.grid)
        except ValueError:
            return False
        return True

    def _window_rows(self, rows: int) -> str:
        holds = "holds" if rows * self.frequency == self.training_window else "holds at most"
        return f"a training_window of {duration_text(self.training_window)} {holds} {rows} rows of {duration_text(self.frequency)}"

    def _tune_grid_values_fit(self, name: str) -> None:
        # A tune run searches the training window's rows, and each trial fits its candidate on all
        # but the last tune.holdout_fraction of them (pipelines.tuning.prepare_holdout; labels can
        # only move the split earlier). A grid value the detector refuses there, a window needing
        # more rows or a season of one row at this frequency, skipped every trial it was in, and a
        # grid of such values failed the tune run: hours after the job file loaded.
        from pipelines.detectors.search_spaces import SEARCH_SPACES, Choice, IntRange

        rows = math.ceil(self.training_window / self.frequency)
        held_back = self.tune.holdout_fraction
        fitted = _fitted_rows(rows, held_back)
        values = self.tune.grid[name]
        for kind in self._tuned_kinds():
            space = SEARCH_SPACES[kind].get(name)
            if space is None:
                continue
            if name == "season":  # the frequency decides, as for model.params.season
                refused = [v for v in values if isinstance(v, str) and rows_spanned(v, self.frequency) < 2]
                # A season the trial's rows hold fewer than two of is not refused by the detector: it
                # fits without one (a new job's fallback), so each trial judged no season under the
                # season's name, and a winning one became a seasonal model no trial had scored.
                unlearned = [
                    v for v in values if isinstance(v, str) and v not in refused and 2 * rows_spanned(v, self.frequency) > fitted
                ]
                if unlearned and not refused:
                    fitting = [v for v in space.values if not isinstance(v, str) or 2 <= rows_spanned(v, self.frequency) <= fitted // 2]
                    longest = max(unlearned, key=lambda v: rows_spanned(v, self.frequency))
                    most = _least_window(rows, 2 * rows_spanned(longest, self.frequency), self.frequency, held_back)
                    raise _FieldError(
                        f"tune.grid.{name}",
                        f"season {', '.join(unlearned)} needs two seasons of rows to learn a profile "
                        f"({2 * rows_spanned(longest, self.frequency)} rows for {longest}), but {self._window_rows(rows)}, and a tune "
                        f"trial fits on the first {fitted} of them (tune.holdout_fraction holds the last {held_back:.0%} back to score "
                        f"it): every {kind} trial with it would fit without a season, scored under its name; use "
                        + (f"season among {', '.join('null' if v is None else str(v) for v in fitting)}, or " if fitting else "")
                        + f"a training_window of at least {duration_text(most)}",
                    )
                if refused:
                    fitting = [v for v in space.values if not isinstance(v, str) or rows_spanned(v, self.frequency) >= 2]
                    raise _FieldError(
                        f"tune.grid.{name}",
                        f"season {', '.join(refused)} is not longer than one period of frequency {duration_text(self.frequency)}, "
                        f"so a season would hold one row and a seasonal profile needs two: every {kind} trial with it would fail; "
                        f"use seasons of at least {duration_text(2 * self.frequency)}"
                        + (f" (of the search space: {', '.join('null' if v is None else str(v) for v in fitting)})" if fitting else ""),
                    )
                continue
            if self.training_window < self.frequency * 2:  # reported on its own: no line per grid value on that cause
                return
            base = {**MODEL_PARAMS[kind]().model_dump(), **(self.model.params if kind == self.model.kind else {})}

            def needs(value: Any, kind: str = kind, base: dict[str, Any] = base) -> tuple[int, str | None, str] | None:
                try:
                    params = MODEL_PARAMS[kind](**{**base, name: value})
                except ValidationError:  # refused with the job's other parameters: not a question of rows
                    return None
                return _fewest_training_rows(kind, dict(params), len(self.features))

            # Only values that raise the rows needed themselves: a kind's own floor is no fault of the grid.
            need = {v: n for v in values if (n := needs(v)) is not None and n[1] == name and n[0] > fitted}
            if not need:
                continue
            refused = list(need)
            needed, _, why = need[min(refused)]
            most = _least_window(rows, need[max(refused)][0], self.frequency, held_back)
            if isinstance(space, IntRange):
                fits = next((v for v in range(min(refused) - 1, int(space.low) - 1, -1) if (n := needs(v)) and n[0] <= fitted), None)
                instead = f"a {name} of at most {fits}" if fits is not None else None
            else:
                fits_all = [v for v in space.values if (n := needs(v)) and n[0] <= fitted] if isinstance(space, Choice) else []
                instead = f"{name} among {', '.join(map(str, fits_all))}" if fits_all else None
            raise _FieldError(
                f"tune.grid.{name}",
                f"{kind} with {name} {min(refused)} needs at least {needed} training rows ({why}), but {self._window_rows(rows)}, "
                f"and a tune trial fits on the first {fitted} of them (tune.holdout_fraction holds the last {held_back:.0%} "
                f"back to score it): every {kind} trial with {name} {', '.join(map(str, refused))} would fail; use "
                + (f"{instead}, or " if instead else "")
                + f"a training_window of at least {duration_text(most)}",
            )

    def _cheapest_trial(self, kind: str) -> tuple[int, str]:
        """The fewest rows any tune trial of ``kind`` fits on, and why: the parameters that raise
        them at their smallest searched values, the others at the job's (or the detector's) own."""
        from pipelines.detectors.search_spaces import Choice, IntRange, restricted_space

        base = {**MODEL_PARAMS[kind]().model_dump(), **(self.model.params if kind == self.model.kind else {})}
        candidates = [base]
        for name, space in restricted_space(kind, self.tune.grid).items():
            if name in ("window", "lags"):  # the parameters _fewest_training_rows reads
                values = space.values if isinstance(space, Choice) else [int(space.low)] if isinstance(space, IntRange) else []
                candidates = [{**params, name: value} for params in candidates for value in values] or candidates
        needs = []
        for params in candidates:
            try:
                validated = MODEL_PARAMS[kind](**params)
            except ValidationError:  # refused with the job's other parameters: the grid checks say so
                continue
            needs.append(_fewest_training_rows(kind, dict(validated), len(self.features))[::2])
        return min(needs, default=(_FEWEST_ROWS[kind], f"{kind}'s least"))

    def _tune_trials_have_rows(self) -> None:
        # A tune run splits the training window's rows into a fitted head and a held-back tail of
        # tune.holdout_fraction (pipelines.tuning.prepare_holdout), anomalies planted in the tail:
        # a tail or head of fewer than _TUNE_MIN_ROWS rows, or a head fewer than every searched
        # kind fits on, failed the whole tune run, hours after the job file loaded. Checked for a
        # job that tunes (a tune schedule or a tune section), not for one that only trains.
        if self.schedules.tune is None and "tune" not in self.model_fields_set:
            return
        rows = math.ceil(self.training_window / self.frequency)
        held_back = self.tune.holdout_fraction
        fitted = _fitted_rows(rows, held_back)
        kinds = self._tuned_kinds()
        needed, why = min(self._cheapest_trial(kind) for kind in kinds)
        needed = max(needed, _TUNE_MIN_ROWS)
        why = "" if why.endswith("'s least") else f" ({why})"

        def works(rows: int, held_back: float) -> bool:
            return _fitted_rows(rows, held_back) >= needed and rows - _fitted_rows(rows, held_back) >= _TUNE_MIN_ROWS

        if works(rows, held_back):
            return
        if rows - fitted < _TUNE_MIN_ROWS:
            problem = (
                f"{self._window_rows(rows)}, and tune.holdout_fraction {held_back:g} holds back the last {rows - fitted} of them "
                f"to plant anomalies in and score each trial on, which needs at least {_TUNE_MIN_ROWS}: every tune run would fail"
            )
        else:
            searched = f"{kinds[0]} needs" if len(kinds) == 1 else f"the fewest of the kinds searched ({', '.join(kinds)}) is"
            problem = (
                f"{searched} at least {needed} training rows{why}, but {self._window_rows(rows)}, and a tune trial fits on the "
                f"first {fitted} of them (tune.holdout_fraction holds the last {held_back:.0%} back to score it): every trial would fail"
            )
        # Below the answer (a tail holds fewer than rows * share + 1), a few steps: a share of 1e-9 asks 10**10 rows.
        least_rows = max(rows, math.floor(max(needed / (1 - held_back), (_TUNE_MIN_ROWS - 1) / held_back)) - 2)
        while not works(least_rows, held_back):
            least_rows += 1
        least = least_rows * self.frequency
        if least >= timedelta(days=1):  # a whole number of days reads better, and is still enough
            least = timedelta(days=math.ceil(least / timedelta(days=1)))
        fractions = [f / 100 for f in range(1, 100) if works(rows, f / 100)]
        if not fractions:
            raise _FieldError("training_window", f"{problem}; use a training_window of at least {duration_text(least)}")
        better = f"at least {fractions[0]:g}" if fractions[0] > held_back else f"at most {fractions[-1]:g}"
        raise _FieldError(
            "tune.holdout_fraction",
            f"{problem}; use a tune.holdout_fraction of {better}, or a training_window of at least {duration_text(least)}",
        )

    def _predict_runs_hold_a_period(self) -> None:
        # A predict run scores its data interval floored to the epoch-aligned frequency grid
        # (pipelines.extraction.grid_window): an interval holding no grid point, as most of a
        # */5 schedule's are for an hourly job, failed its run ("holds no whole period").
        # The default follows the frequency (default_predict_schedule), except where no cron can.
        if self.schedules.predict is None:
            return
        written = self.schedules.predict != default_predict_schedule(self.frequency) or "predict" in self.schedules.model_fields_set
        from croniter import croniter

        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)

        def floor(moment: datetime) -> datetime:
            return epoch + (moment - epoch) // self.frequency * self.frequency

        # A cron's gaps repeat within a day or a week: the first fires show a short one.
        fires = croniter(self.schedules.predict, self.start_datetime.astimezone(timezone.utc))
        start = fires.get_next(datetime)
        for _ in range(_CRON_FIRES_CHECKED):
            end = fires.get_next(datetime)
            if floor(end) <= floor(start):
                raise _FieldError(
                    "schedules.predict",
                    f"{repr(self.schedules.predict) if written else 'the default, hourly,'} gives data intervals shorter than "
                    f"frequency {duration_text(self.frequency)} "
                    f"([{start.isoformat()}, {end.isoformat()}) holds no whole period of it, counted from 1970-01-01T00:00Z), "
                    f"and such predict runs would fail: use a schedule whose runs are at least {duration_text(self.frequency)} "
                    "apart, or a shorter frequency",
                )
            start = end

    def _alerted_features_exist(self) -> None:
        unknown = sorted(set(self.alerts.features) - set(self.features)) if self.alerts else []
        if unknown:
            # Reported where it is written, not at the top level, where pydantic puts the checks of a whole job.
            them = "it" if len(unknown) == 1 else "them"
            raise _FieldError(
                "alerts.features",
                f"{', '.join(map(repr, unknown))} {'is not a feature' if len(unknown) == 1 else 'are not features'} of job "
                f"{self.name!r}, whose features are {', '.join(self.features)}, so no alert would ever be about {them}: "
                f"correct the spelling, add {them} to features, or remove {them} (an empty alerts.features alerts on every feature)",
            )

    def _alerted_series_can_match(self) -> None:
        # A pattern naming another dimension (host=web* in a job of [region]) or a key of another
        # job (region=eu in a job without dimensions) matched no series: alerts went silent, unsaid.
        from pipelines.series import ALL_SERIES, pattern_may_match, series_key

        patterns = self.alerts.series if self.alerts else []
        never = [(i, pattern) for i, pattern in enumerate(patterns) if not pattern_may_match(pattern, self.dimensions)]
        if not never:
            return
        it = "it" if len(never) == 1 else "them"
        if self.dimensions:
            values = [f"{name[:1] or 'v'}1" for name in self.dimensions]
            glob = series_key(self.dimensions, [*values[:-1], "*"])
            keys = (
                f"whose dimensions are [{', '.join(self.dimensions)}]: each key is "
                f"{series_key(self.dimensions, ['<value>'] * len(self.dimensions))} (e.g. {series_key(self.dimensions, values)!r}; "
                "',', '=' and '%' inside a value are written %2C, %3D and %25)"
            )
            fix = f"correct {it} (e.g. {glob!r} for every {self.dimensions[-1]}" + (f" of {values[-2]})" if len(values) > 1 else ")")
        else:
            keys, fix = f"which has no dimensions: its only series key is {ALL_SERIES!r}", f"correct {it}"
        if len(never) == 1:
            listed = repr(never[0][1])
        else:
            listed = ", ".join(f"alerts.series.{i} {pattern!r}" for i, pattern in never)
        raise _FieldError(
            f"alerts.series.{never[0][0]}" if len(never) == 1 else "alerts.series",
            f"{listed} can never match a series key of job {self.name!r}, {keys}, so no alert would ever be sent for {it}; "
            f"{fix}, or remove {it} (an empty alerts.series alerts on every series)",
        )

    @property
    def columns(self) -> list[str]:
        return [self.timestamp, *self.dimensions, *self.features]

    @property
    def start_datetime(self) -> datetime:
        """``start_date`` as an aware datetime (UTC when it names no offset).

        Parsed by the function that validated it: the DAG file once used pendulum's parser, which
        refuses ISO forms this one takes (``2024-02-01T0600``), so a job that passed
        ``validate-config`` failed the whole DAG file and every job lost its DAGs.
        """
        parsed = datetime.fromisoformat(self.start_date)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def base_dir() -> Path:
    """Folder that relative paths in job files are resolved against."""
    return Path(os.environ.get("ANOMALY_PIPELINES_BASE_DIR", REPO_ROOT)).resolve()


def jobs_dir() -> Path:
    return Path(os.environ.get("ANOMALY_PIPELINES_JOBS_DIR", base_dir() / "config" / "jobs")).resolve()


def resolve_path(path: str) -> str:
    """Absolute local path or URL for ``path`` from a job file."""
    if "://" in path or os.path.isabs(path):
        return path
    return str(base_dir() / path)


#: Where a value sits in a job file: its keys and list positions from the top.
_Path = tuple[str | int, ...]


#: Fields whose given value an error never shows: a database URL (or one written where its
#: variable's name belongs) holds a password, and the error goes to Airflow's UI and every log.
_SECRET_FIELDS = ("url", "url_env")


def _format_errors(exc: ValidationError, surprising: dict[_Path, str] | None = None) -> str:
    """``exc`` as one line per error; ``surprising``: what the job file wrote where YAML read another value."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        blamed = err.get("ctx", {}).get("error")
        if isinstance(blamed, _FieldError):
            where = blamed.where
        message = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check its spelling, or remove it)"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "union_tag_not_found":
            # pydantic says "Unable to extract tag using discriminator 'kind'"; the source is the
            # only union told apart by a field, so name the field and the kinds it takes.
            message = f"required field {err['ctx']['discriminator']} is missing: one of {', '.join(SOURCE_KINDS)}"
        elif err["loc"] and err["loc"][-1] in _SECRET_FIELDS:
            pass  # the value may hold a password: the messages of these fields say what is wrong without it
        elif not isinstance(given, dict):
            message = _naming_input(message, given)
            if err["type"] in ("int_type", "float_type") and isinstance(given, (str, bool)):
                message += ": write a number, without quotes" if isinstance(given, str) else ": write a number, not true or false"
            elif err["type"] == "list_type" and isinstance(given, str | int | float):
                message += f": write a list, even of one item: [{given}]"
            elif err["loc"][:1] == ("schedules",) and isinstance(given, bool):
                # `predict: off` (YAML's false) means no schedule; quoting it, as below, would not.
                message += ": write null for no schedule (the DAG then runs only when triggered)"
            elif err["type"] in ("model_type", "dict_type") and given is False:
                message += ": leave the setting out for its default (none for an optional one), or give its settings as a mapping"
            elif err["type"] == "string_type" and isinstance(given, int | float | date) and not isinstance(given, bool):
                # Quoting what YAML read would be wrong where it read another value: 0123 is 83.
                written = (surprising or {}).get(_written_at(err["loc"]), given)
                message += f": YAML reads {written} unquoted as a {'date' if isinstance(given, date) else 'number'}; quote it ('{written}')"
            elif err["type"] in ("string_type", "literal_error") and isinstance(given, bool):
                # YAML 1.1 (PyYAML) reads unquoted yes/no/on/off as booleans: Norway's code NO
                # among alerts.series was "Input should be a valid string (got False)".
                message += (
                    ": YAML reads an unquoted yes, no, on, off, true or false (also in capitals) as a boolean; "
                    "quote the text (e.g. 'NO', 'off')"
                )
        lines.append(_bounded(f"  {where}: {message}"))
    return "\n".join(lines)


def _written_at(loc: tuple[str | int, ...]) -> _Path:
    """Where in the job file the value at pydantic's ``loc`` is: without the source's kind, which
    pydantic adds to tell the kinds of source apart (``source.sql.query``)."""
    return (loc[0], *loc[2:]) if loc[:1] == ("source",) and len(loc) > 1 and loc[1] in SOURCE_KINDS else tuple(loc)


def parse_job(data: Any, *, source: str = "<job>") -> JobConfig:
    """Validate one job's settings; ``source`` names the file in errors."""
    return _parse_job(data, source, {})


def _parse_job(data: Any, source: str, surprising: dict[_Path, str], from_file: bool = False) -> JobConfig:
    """:func:`parse_job`; ``surprising``: the values whose text a job file's YAML read as another value, by where they are;
    ``from_file``: whether ``data`` was read from a job file (storage_options then hold no credential)."""
    if data is None:  # "got NoneType" said nothing of an empty file, or one of comments only
        raise ConfigError(
            f"{source}: the job file is empty (or holds only comments): write the job's settings, at least "
            "name, source, timestamp, frequency, features and model (see docs/CONFIGURATION.md)"
        )
    if not isinstance(data, dict):
        given = "a list (lines starting with '- ')" if isinstance(data, list) else f"a single {type(data).__name__} value"
        raise ConfigError(
            f"{source}: a job file must hold a mapping of settings (name: web, frequency: 1h, ...), got {given}"
        )
    name = data.get("name")
    try:
        # The context marks settings written in a job file, which some checks hold to more (SqlConnection.url).
        context = {"job": name if isinstance(name, str) else None, "surprising_scalars": surprising, "file": from_file}
        return JobConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid job configuration\n{_format_errors(exc, surprising)}") from None


class _JobFileLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping.

    PyYAML keeps the last of two equal keys without a word: a second `threshold:` lower down
    silently replaced the first. ruamel.yaml refuses them, but reads YAML 1.2, where `no` and
    `off` are text, not false, which would change what existing job files mean.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: keys written beside it override the merged ones, by design
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                first = seen[key].start_mark
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"{key!r} is set twice in one mapping (first on line {first.line + 1}): keep one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        # 2024-02-30 has a date's form but is none: PyYAML's ValueError ("day is out of range for
        # month") escaped every caller, so one such job file failed the DAG file of every job.
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"{node.value!r} is written as a date but is none ({exc}): correct it, or quote it ('{node.value}') for text",
                node.start_mark,
            ) from None

    def construct_document(self, node: yaml.Node) -> Any:
        _check_aliases(node)
        self.surprising_scalars = _surprising_scalars(node)
        return super().construct_document(node)


def _surprising_scalars(root: yaml.Node) -> dict[_Path, str]:
    """The unquoted values whose text YAML 1.1 reads as another value than it shows, as written, by
    where they are: yes, no, on and off (in any case) are booleans, as true and false are; 012 is
    octal (10), 1_000 is 1000, 12:30 is base 60 (750). Only the text tells them apart. Values
    merged in (``<<: *base``) are not looked at."""
    def surprising(node: yaml.ScalarNode) -> bool:
        text, kind = node.value, node.tag.rpartition(":")[2]
        if node.style is not None:  # quoted: text
            return False
        if kind == "bool":
            return text.lower() in ("yes", "no", "on", "off")
        if kind == "int":
            return bool(re.fullmatch(r"[-+]?0[0-7_]+|[-+]?[0-9][0-9_]*:[0-9:]+|[-+]?[0-9]+_[0-9_]*", text))
        return kind == "float" and bool(re.search(r"[_:]", text))

    found: dict[_Path, str] = {}
    pending: list[tuple[_Path, yaml.Node]] = [((), root)]  # not recursive: a job file may nest deeply
    while pending:
        path, node = pending.pop()
        if isinstance(node, yaml.MappingNode):
            pending += [
                ((*path, key.value), value) for key, value in node.value
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge"
            ]
        elif isinstance(node, yaml.SequenceNode):
            pending += [((*path, index), item) for index, item in enumerate(node.value)]
        elif isinstance(node, yaml.ScalarNode) and surprising(node):
            found[path] = node.value
    return found


_JobFileLoader.add_constructor("tag:yaml.org,2002:timestamp", _JobFileLoader.construct_yaml_timestamp)


#: Most values that the aliases (``*name``) of a job file may add to those it writes out. An alias
#: shares its anchor's value when loaded, but validation and its errors walk every use: ten
#: nested lists of ten aliases each (a "billion laughs" of a few hundred bytes) took seconds and
#: made a 70 MB error at every DAG parse, and one level more would time the DAG file out.
ALIAS_VALUES = 10_000


def _check_aliases(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand to more than :data:`ALIAS_VALUES` values, counted
    on the composed nodes (an alias is its anchor's node object: a walk that remembers the count
    of each node costs what the file holds, not what it expands to)."""
    expanded: dict[int, int] = {}
    open_nodes: set[int] = set()
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    while pending:
        node, done = pending.pop()
        children = (
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode)
            else node.value if isinstance(node, yaml.SequenceNode) else []
        )
        if done:
            open_nodes.discard(id(node))
            expanded[id(node)] = 1 + sum(expanded[id(child)] for child in children)
        elif id(node) in open_nodes:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias refers to the value that holds it, which never ends: write the value out", node.start_mark
            )
        elif id(node) not in expanded:
            open_nodes.add(id(node))
            pending += [(node, True), *((child, False) for child in children)]
    added = expanded[id(root)] - len(expanded)
    if added <= ALIAS_VALUES:
        return
    # Name the top-level setting that expands the most, at its line.
    pairs = root.value if isinstance(root, yaml.MappingNode) else [(root, root)]
    key, value = max(pairs, key=lambda pair: expanded[id(pair[1])])
    size = expanded[id(value)]
    named = f"{key.value!r}" if isinstance(key, yaml.ScalarNode) and key is not root else "the document"
    raise yaml.constructor.ConstructorError(
        None, None,
        f"{named} expands through aliases (*name) to {f'{size:,}' if size < 10**15 else f'about 10^{len(str(size)) - 1}'} "
        f"values, and a job file's aliases may add at most {ALIAS_VALUES:,} to what it writes out: "
        "write the values out, or use fewer nested aliases",
        value.start_mark,
    )


def load_job_file(path: str | Path) -> JobConfig:
    path = Path(path)
    loader: _JobFileLoader | None = None
    try:
        loader = _JobFileLoader(path.read_text(encoding="utf-8"))  # what yaml.load does, keeping the loader
        data = loader.get_single_data()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read job file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the job file as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except RecursionError:
        # PyYAML composes nested values recursively: a value nested a thousand deep escaped as a
        # RecursionError, which no caller expects, and failed the DAG file of every job.
        raise ConfigError(
            f"{path}: values are nested too deeply to read ([[[[... or {{a: {{b: ... hundreds deep); "
            "a job file's settings nest a few levels: check the brackets and indentation"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return _parse_job(data, str(path), getattr(loader, "surprising_scalars", {}), from_file=True)


@dataclass(frozen=True)
class JobScan:
    """The job files of a folder: every job that validates, and why the others make no job."""

    jobs: dict[str, JobConfig]  # by name, in name order
    errors: list[str]  # one per file that makes no job: its validation error, or a name already used
    files: dict[str, Path]  # the file of each job, by name


def scan_jobs(directory: str | Path | None = None) -> JobScan:
    """Every job file of ``directory`` (default :func:`jobs_dir`), one bad file not hiding the others.

    Airflow's DAG files, the dashboard and the API serve the jobs that validate, so that one
    broken file does not take every job down with it; of two files with one job name, the first
    in file-name order keeps it. :func:`load_jobs` is the strict reading.
    """
    return scan_job_files(job_files(Path(directory) if directory else jobs_dir()))


def job_files(folder: Path) -> list[Path]:
    """The job files of ``folder`` (``*.yaml`` and ``*.yml``), in file-name order."""
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def scan_job_files(paths: list[Path]) -> JobScan:
    """The jobs of the files ``paths``, in that order: of two files with one job name, the first
    keeps it (what :func:`scan_jobs` does for a folder, and ``validate-config`` for the files named)."""
    jobs: dict[str, JobConfig] = {}
    origin: dict[str, Path] = {}
    errors: list[str] = []
    for path in paths:
        try:
            job = load_job_file(path)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        if job.name in jobs:
            errors.append(f"{path}: job name {job.name!r} is already used by {origin[job.name]}; rename one of them")
            continue
        jobs[job.name], origin[job.name] = job, path
    return JobScan(dict(sorted(jobs.items())), errors, origin)


def load_jobs(directory: str | Path | None = None) -> dict[str, JobConfig]:
    """All jobs of ``directory`` (default :func:`jobs_dir`), keyed by name, in name order;
    :class:`ConfigError` with the error of every file that makes no job."""
    scan = scan_jobs(directory)
    if scan.errors:
        raise ConfigError("\n\n".join(scan.errors))
    return scan.jobs


def get_job(name: str, directory: str | Path | None = None) -> JobConfig:
    """The job named ``name``; another job file that does not validate does not hide it."""
    scan = scan_jobs(directory)
    if name not in scan.jobs:
        raise ConfigError(f"no job named {name!r}; configured jobs: {', '.join(scan.jobs) or 'none'}{broken_files(scan)}")
    return scan.jobs[name]


def broken_files(scan: JobScan) -> str:
    """A sentence to append to "no job named ...": the job may be in a file that does not validate."""
    if not scan.errors:
        return ""
    return f". {len(scan.errors)} job file(s) make no job until fixed:\n" + "\n".join(scan.errors)


def find_job(name_or_path: str) -> JobConfig:
    """The job a user means on a command line: a job file's path (``.yaml``/``.yml``), or a job's name in
    :func:`jobs_dir`. A name that is not found says where jobs are read from and how to point elsewhere."""
    if name_or_path.endswith((".yaml", ".yml")):
        return load_job_file(name_or_path)
    try:
        return get_job(name_or_path)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} (read from {jobs_dir()}; pass a job file's path instead, "
            "or set ANOMALY_PIPELINES_JOBS_DIR to the folder holding your job files)"
        ) from None
