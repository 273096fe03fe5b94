from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import get_args

import pytest
import yaml

from pipelines.config import (
    SOURCE_KINDS,
    Source,
    SqlConnection,
    SqlSource,
    get_job,
    load_job_file,
    load_jobs,
    parse_job,
    resolve_path,
    scan_jobs,
)
from pipelines.durations import parse_duration
from pipelines.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def minimal(**overrides) -> dict:
    job = {
        "name": "web",
        "source": {"kind": "file", "path": "data/x.csv"},
        "timestamp": "ts",
        "frequency": "1h",
        "features": ["value"],
        "model": {"kind": "seasonal_mad"},
    }
    job.update(overrides)
    return job


def test_the_source_kinds_named_in_errors_are_the_source_kinds():
    assert SOURCE_KINDS == tuple(get_args(source.model_fields["kind"].annotation)[0] for source in get_args(get_args(Source)[0]))


def test_every_shipped_job_file_is_valid():
    jobs = load_jobs(REPO / "config" / "jobs")
    assert {"demo_web_metrics", "demo_sensors"} <= set(jobs)
    for job in jobs.values():
        assert job.features and job.schedules.predict


def test_defaults_and_durations():
    job = parse_job(minimal(training_window="14d", frequency="15min"))
    assert job.frequency == timedelta(minutes=15)
    assert job.training_window == timedelta(days=14)
    assert job.threshold.kind == "contamination"
    assert job.columns == ["ts", "value"]


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"bogus": 1}, "bogus", "unknown field"),
        ({"model": {"kind": "prophet2"}}, "model", "unknown model kind 'prophet2'; choose one of auto, context, iforest, level_shift, lstm, mset, prophet, seasonal_mad"),
        ({"model": {"kind": "iforest", "params": {"n_estimators": 3}}}, "model", "params.n_estimators"),
        ({"model": {"kind": "iforest", "params": {"trees": 3}}}, "model", "params.trees: unknown parameter (check its spelling; iforest's parameters are "),
        ({"schedules": {"predict": "every hour"}}, "schedules.predict", "not a valid cron expression"),
        # croniter takes seconds as a sixth field; Airflow's cron has five.
        ({"schedules": {"train": "0 0 * * * *"}}, "schedules.train", "not a valid cron expression (five fields"),
        # Parses, but no February has a 31st: Airflow scheduled no run, logging a traceback.
        ({"schedules": {"predict": "0 0 31 2 *"}}, "schedules.predict", "'0 0 31 2 *' never fires: none of its months has that day"),
        ({"frequency": "hourly"}, "frequency", "is not a duration"),
        ({"features": []}, "features", "at least 1 item"),
        ({"name": "Web-Job"}, "name", "lower-case letter"),
        # `$` of re.match also matched before a final line break: a block scalar's name passed.
        ({"name": "web\n"}, "name", "lower-case letter, hold only a-z, 0-9 and _, and have at most 63 characters"),
        ({"name": "w" * 64}, "name", "at most 63 characters"),
        # Each run then failed: "environment variable ${DB_URL} is not set", or a URL that was never meant.
        ({"source": {"kind": "sql", "connection": {"url_env": "${DB_URL}"}, "query": "x :start :end"}},
         "source.sql.connection.url_env", "names the environment variable itself: write url_env: DB_URL (without $ or braces)"),
        ({"source": {"kind": "sql", "connection": {"url_env": "$DB_URL"}, "query": "x :start :end"}},
         "source.sql.connection.url_env", "write url_env: DB_URL"),
        ({"outputs": {"table": {"connection": {"url_env": "db-url"}, "name": "t"}}},
         "outputs.table.connection.url_env", "must be the name of an environment variable"),
        ({"labels": {"connection": {"url": "${LABELS_DB_URL}"}}},
         "labels.connection.url", "job files are not expanded, so $LABELS_DB_URL would be read as written: give the variable "
                                  "holding the whole URL as url_env: LABELS_DB_URL instead of url"),
        # Nothing expands a job file: these made folders named "${DATA_DIR}" and "~" under the project
        # root (models stored there), or reached s3fs as the credential itself.
        ({"source": {"kind": "file", "path": "${DATA_DIR}/x.csv"}}, "source.file.path",
         "job files are not expanded, so $DATA_DIR would be taken as written, a folder named so: write the path itself"),
        ({"registry": "$MODELS"}, "registry", "job files are not expanded, so $MODELS would be taken as written"),
        ({"outputs": {"parquet": "s3://bucket/${STAGE}/out"}}, "outputs.parquet", "so $STAGE would be taken as written"),
        ({"validation": {"suite": "~/suite.json"}}, "validation.suite",
         "job files are not expanded, so ~ would be a folder of that name under the project root: write the absolute path"),
        ({"outputs": {"storage_options": {"key": "${AWS_ACCESS_KEY_ID}"}}}, "outputs.storage_options",
         "key: job files are not expanded, so $AWS_ACCESS_KEY_ID would be passed as written: remove key, and let the "
         "filesystem read its credentials from the environment"),
        # Each run failed: "The conn_id `${WAREHOUSE}` isn't defined".
        ({"source": {"kind": "sql", "connection": {"conn_id": "${WAREHOUSE}"}, "query": "x :start :end"}},
         "source.sql.connection.conn_id", "job files are not expanded: write the connection's id itself (WAREHOUSE); Airflow finds it"),
        ({"alerts": {"slack": {"webhook_conn_id": "slack hook"}}}, "alerts.slack.webhook_conn_id",
         "an Airflow connection id holds only letters, digits and _ # ! ( ) - . : / \\, e.g. warehouse (got 'slack hook')"),
        # One item written without brackets.
        ({"features": "value"}, "features", "Input should be a valid list (got 'value'): write a list, even of one item: [value]"),
        ({"alerts": {"email": {"to": "oncall@example.com"}}}, "alerts.email.to", "write a list, even of one item: [oncall@example.com]"),
        # A bare number has no unit (and an unquoted 1:30 is YAML's number 90).
        ({"frequency": 3600}, "frequency", "3600 is a number without a unit: write the unit, as in '3600s' (seconds) or '3600min'"),
        ({"training_window": 90}, "training_window", "90 is a number without a unit"),
        # A predict run scores its interval floored to the frequency grid: these held no whole period.
        ({"schedules": {"predict": "*/5 * * * *"}}, "schedules.predict",
         "'*/5 * * * *' gives data intervals shorter than frequency 1h ([2024-01-01T00:05:00+00:00, 2024-01-01T00:10:00+00:00) "
         "holds no whole period of it, counted from 1970-01-01T00:00Z), and such predict runs would fail: use a schedule whose "
         "runs are at least 1h apart, or a shorter frequency"),
        ({"frequency": "5h", "schedules": {"predict": "0 */7 * * *"}}, "schedules.predict", "[2024-01-03T21:00:00+00:00, 2024-01-04T00:00:00+00:00)"),
        ({"dimensions": ["value"]}, "dimensions", "columns used twice among timestamp, dimensions and features: ['value']; "
                                                   "a column is the time, a dimension or a feature: keep it in one place"),
        ({"dimensions": ["feature", "date"]}, "dimensions", "dimensions ['date', 'feature'] share their names with columns of the output"),
        # Databases that fold the case of names (BigQuery, DuckDB, MySQL) took "Timestamp" for "timestamp".
        ({"dimensions": ["Timestamp", "host"]}, "dimensions", "dimensions ['Timestamp'] share their names with columns of the output"),
        ({"threshold": {"kind": "contamination", "value": 0.9}}, "threshold", "contamination must be in (0, 0.5]"),
        # OCI's targetFap is a key of its own: "unknown field" did not say how to write it here.
        ({"threshold": {"false_alarm_probability": 0.01}}, "threshold.false_alarm_probability",
         "the kind of threshold is a value of 'kind', not a key: write threshold: {kind: false_alarm_probability, value: 0.01}"),
        ({"start_date": "yesterday"}, "start_date", "must be an ISO 8601 date or date-time, e.g. 2024-02-01"),
        (
            {"source": {"kind": "sql", "connection": {"url": "sqlite://"}, "query": "SELECT * FROM t"}},
            "source.sql.query",
            "bound parameters :start and :end",
        ),
        (
            {"source": {"kind": "sql", "connection": {"url": "sqlite://", "conn_id": "x"}, "query": "x :start :end"}},
            "source.sql.connection",
            "exactly one of url, url_env, conn_id",
        ),
        ({"source": {"kind": "ftp", "path": "x"}}, "source", "does not match any of the expected tags"),
        # pydantic's own words were "Unable to extract tag using discriminator 'kind'".
        ({"source": {"path": "x.csv"}}, "source", "required field 'kind' is missing: one of file, sql, bigquery, python"),
        # pydantic's lax mode read these as 1, 20 and 1.0: a slip in the job file went unseen.
        ({"validation": {"min_rows": True}}, "validation.min_rows", "valid integer (got True): write a number, not true or false"),
        ({"tune": {"trials": "20"}}, "tune.trials", "valid integer (got '20'): write a number, without quotes"),
        # Optuna's sampler and NumPy refuse such seeds: every tune run failed.
        ({"tune": {"seed": -1}}, "tune.seed", "greater than or equal to 0"),
        ({"tune": {"seed": 2**32}}, "tune.seed", "less than or equal to 4294967295"),
        ({"alerts": {"max_gap": 1.5}}, "alerts.max_gap", "valid integer (got 1.5)"),
        ({"threshold": {"value": True}}, "threshold.value", "valid number (got True): write a number, not true or false"),
        # An empty column matched nothing until extraction; an empty location was the project root.
        ({"features": ["value", ""]}, "features.1", "at least 1 character"),
        ({"timestamp": ""}, "timestamp", "at least 1 character"),
        ({"outputs": {"parquet": ""}}, "outputs.parquet", "at least 1 character"),
        ({"registry": ""}, "registry", "at least 1 character"),
        # Longer delimiters are regular expressions to pandas; a quote or a line break separates nothing.
        ({"source": {"kind": "file", "path": "x.csv", "delimiter": ";;"}}, "source.file.delimiter",
         "must be one character other than a quote or a line break, got ';;'"),
        ({"source": {"kind": "file", "path": "x.csv", "delimiter": ""}}, "source.file.delimiter", "must be one character"),
        ({"source": {"kind": "file", "path": "x.csv", "decimal": '"'}}, "source.file.decimal", "must be one character"),
        ({"source": {"kind": "file", "path": "x.csv", "decimal": ","}}, "source.file",
         "delimiter and decimal are both ',': a number could not be told from two fields"),
        ({"source": {"kind": "file", "path": "x.csv", "thousands": "."}}, "source.file",
         "thousands and decimal are both '.': a number could not be read"),
        ({"source": {"kind": "file", "path": "x.csv", "thousands": ", "}}, "source.file.thousands", "must be one character"),
    ],
)
def test_errors_name_file_field_and_reason(overrides, field, reason):
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(**overrides), source="jobs/web.yaml")
    message = str(info.value)
    assert message.startswith("jobs/web.yaml: invalid job configuration")
    line = next(line for line in message.splitlines() if line.strip().startswith(f"{field}:"))
    assert reason in line


def test_a_url_written_as_url_env_is_refused_without_showing_its_password():
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(source={"kind": "sql", "connection": {"url_env": "postgresql://reader:hunter2@db/metrics"},
                                  "query": "x :start :end"}), source="jobs/web.yaml")
    message = str(info.value)
    assert "source.sql.connection.url_env: is the name of an environment variable holding the URL, not the URL" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("alerts:\n  email: {to: [oncall@example.com]}\n  series: [NO, SE]\n", "alerts.series.0"),
        ("resample: {fill: off}\n", "resample.fill"),
        ("dimensions: [on]\n", "dimensions.0"),
    ],
)
def test_yaml_booleans_written_for_text_say_to_quote_them(tmp_path, text, field):
    # PyYAML reads YAML 1.1: Norway's NO is false. The error said only "should be a valid string (got False)".
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(minimal(), sort_keys=False) + text)
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    line = next(line for line in str(info.value).splitlines() if line.startswith(f"  {field}:"))
    assert line.endswith("YAML reads an unquoted yes, no, on, off, true or false (also in capitals) as a boolean; "
                         "quote the text (e.g. 'NO', 'off')")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("ts >= :start::timestamptz AND ts < :end", "SQLAlchemy does not read :start followed by :: as a bound parameter; "
         "write the cast as CAST(:start AS timestamptz)"),
        ("ts >= :start AND ts < :end::date", "write the cast as CAST(:end AS date)"),
        (r"ts >= \:start AND ts < :end", "missing :start"),  # escaped: a colon, not a parameter
        ("ts >= :start_date AND ts < :end", "missing :start"),
    ],
)
def test_a_window_bound_that_sqlalchemy_does_not_bind_is_refused(where: str, message: str):
    # `:start::timestamptz` loaded, then every run failed with SQLAlchemy's ArgumentError ("This
    # text() construct doesn't define a bound parameter named 'start'"), naming no job.
    source = {"kind": "sql", "connection": {"url": "sqlite://"}, "query": f"SELECT * FROM t WHERE {where}"}
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(source=source), source="jobs/web.yaml")
    line = str(info.value).splitlines()[1]
    assert line.startswith("  source.sql.query: ") and message in line


@pytest.mark.parametrize(
    ("text", "written"),
    [("start_date: 2024-02-30\n", "2024-02-30"), ("source: {kind: python, callable: 'a:b', params: {since: 2023-02-29}}\n", "2023-02-29")],
)
def test_a_date_that_does_not_exist_is_an_error_of_its_file_only(tmp_path, text, written):
    # PyYAML's ValueError ("day is out of range for month") escaped scan_jobs: the DAG file of
    # every job failed for one mistyped date.
    settings = {key: value for key, value in minimal(name="bad").items() if not text.startswith(f"{key}:")}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(settings) + text)
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(minimal()))
    scan = scan_jobs(tmp_path)
    assert list(scan.jobs) == ["web"]
    assert scan.errors[0].startswith(
        f"{tmp_path / 'bad.yaml'}: not valid YAML: '{written}' is written as a date but is none (day is out of range for month): "
        f"correct it, or quote it ('{written}') for text"
    )
    assert "line " in scan.errors[0]


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        ("dimensions: [0123]\n", "dimensions.0", "YAML reads 0123 unquoted as a number; quote it ('0123')"),
        ("timestamp: 12:30\n", "timestamp", "YAML reads 12:30 unquoted as a number; quote it ('12:30')"),
        ("source: {kind: sql, connection: {url: 'sqlite://'}, query: 0_1}\n", "source.sql.query", "YAML reads 0_1 unquoted as a number; quote it ('0_1')"),
        ("timestamp: 2024\n", "timestamp", "YAML reads 2024 unquoted as a number; quote it ('2024')"),
    ],
)
def test_text_that_yaml_reads_as_another_number_is_quoted_as_written(tmp_path, text, field, hint):
    # The hint quoted what YAML read: a column named 0123 was to be written '83'.
    settings = {key: value for key, value in minimal().items() if not text.startswith(f"{key}:")}
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(settings) + text)
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    line = next(line for line in str(info.value).splitlines() if line.startswith(f"  {field}:"))
    assert line.endswith(hint)


SOURCES_WITH_PARAMS = {
    "sql": "  kind: sql\n  connection: {url: 'sqlite:///var/x.db'}\n  query: SELECT * FROM t WHERE region = :region AND ts >= :start AND ts < :end\n",
    "bigquery": "  kind: bigquery\n  query: SELECT * FROM t WHERE region = @region AND ts >= @start AND ts < @end\n",
    "python": "  kind: python\n  callable: metrics.read:rows\n",
}


@pytest.mark.parametrize("kind", SOURCES_WITH_PARAMS)
@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("NO", "the boolean false"),  # Norway
        ("off", "the boolean false"),
        ("Yes", "the boolean true"),
        ("0123", "the number 83"),  # octal in YAML 1.1
        ("12:30", "the number 750"),  # base 60
        ("1_000", "the number 1000"),
    ],
)
def test_source_params_that_yaml_reads_as_another_value_say_to_quote_them(tmp_path, kind, written, read):
    # `region: NO` was bound as false: the query compared its text column with false and read no rows.
    path = tmp_path / "web.yaml"
    job = {key: value for key, value in minimal().items() if key != "source"}
    path.write_text(f"source:\n{SOURCES_WITH_PARAMS[kind]}  params: {{region: {written}}}\n" + yaml.safe_dump(job))
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    shown = read.rpartition(" ")[2]
    assert str(info.value).splitlines()[1] == (
        f"  source.{kind}.params: region: YAML reads the unquoted {written} as {read}, which the source would be given; "
        f"quote it (region: '{written}') to pass the text, or write {shown} for the {read.split()[1]}"
    )

    path.write_text(path.read_text().replace(f"region: {written}", f"region: '{written}'"))
    assert load_job_file(path).source.params == {"region": written}


def test_sql_param_names_that_the_query_cannot_name_are_refused():
    # `:my-region` in the query is the parameter :my: every run failed with "Set :my in `params`".
    source = {"kind": "sql", "connection": {"url": "sqlite://"}, "query": "SELECT :start, :end, :my-region",
              "params": {"my-region": "eu", "my region": "us", "region_2": "ok"}}
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(source=source))
    assert str(info.value).splitlines()[1] == (
        "  source.sql.params: parameter names must be letters, digits and _ (the query's :name), got ['my region', 'my-region']"
    )


@pytest.mark.parametrize("kind", ["sql", "bigquery"])
@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("", "region: no value is given (YAML reads an empty value or null as none), and a query parameter is text, "
             "a number, true or false; write the value, '' for empty text, or remove the parameter"),
        ("null", "region: no value is given"),
        ("[eu, us]", "region: a query parameter is one value (text, a number, true or false), not a list: give each "
                     "value its own parameter (for IN, one per value)"),
        ("{a: 1}", "region: a query parameter is one value (text, a number, true or false), not a mapping"),
    ],
)
def test_query_params_that_are_no_single_value_say_what_to_write(tmp_path, kind, written, message):
    # Each was four lines, one per type tried (str, int, float, bool), none saying what to write.
    path = tmp_path / "web.yaml"
    job = {key: value for key, value in minimal().items() if key != "source"}
    path.write_text(f"source:\n{SOURCES_WITH_PARAMS[kind]}  params: {{region: {written}}}\n" + yaml.safe_dump(job))
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 1 and lines[0].startswith(f"  source.{kind}.params: {message}")


@pytest.mark.parametrize("written", ["true", "False", "7", "-3", "0", "2.5", "0x1F"])
def test_source_params_written_as_they_are_read_stay(tmp_path, written):
    path = tmp_path / "web.yaml"
    job = {key: value for key, value in minimal().items() if key != "source"}
    path.write_text(f"source:\n{SOURCES_WITH_PARAMS['sql']}  params: {{region: {written}}}\n" + yaml.safe_dump(job))
    assert load_job_file(path).source.params == yaml.safe_load(f"region: {written}")


@pytest.mark.parametrize(
    ("frequency", "schedules"),
    [
        ("1h", {"predict": "15 * * * *"}),  # an hourly job at :15 scores the previous whole hour
        ("2h", {"predict": "0 1,2,5,6,9,10,13,14,17,18,21,22 * * *"}),  # 1h and 3h apart: each holds a 2h grid point
        ("2h", {"predict": None}),
        ("2h", {"train": "0 3 * * *"}),  # the default hourly predict is not checked (see _predict_runs_hold_a_period)
    ],
)
def test_predict_schedules_whose_intervals_each_hold_a_period_are_accepted(frequency, schedules):
    parse_job(minimal(frequency=frequency, schedules=schedules))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("dimensions: [2024]\n", "dimensions.0: Input should be a valid string (got 2024): YAML reads 2024 unquoted as a number; quote it ('2024')"),
        ("alerts: {email: {to: [oncall@example.com]}, series: [2024-03-01]}\n",
         "alerts.series.0: Input should be a valid string (got datetime.date(2024, 3, 1)): YAML reads 2024-03-01 unquoted as a date; "
         "quote it ('2024-03-01')"),
        # pydantic reported four lines, one per type of the union (str, int, float, bool), none saying to quote it.
        ("source: {kind: sql, connection: {conn_id: warehouse}, query: 'x :start :end :since', params: {since: 2024-03-01}}\n",
         "source.sql.params: since: YAML reads an unquoted date or date-time as a date, which a query parameter cannot be; "
         "quote it (since: '2024-03-01') to bind it as text"),
    ],
)
def test_yaml_numbers_and_dates_written_for_text_say_to_quote_them(tmp_path, text, line):
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in minimal().items() if k != "source" or "source:" not in text}, sort_keys=False) + text)
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    assert str(info.value).splitlines()[1:] == [f"  {line}"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # `off` meant no schedule: quoting it, as for text, would not have done that.
        ("schedules: {predict: off}\n", "schedules.predict: Input should be a valid string (got False): write null for no schedule"),
        ("alerts: {email: {to: [oncall@example.com]}, digest: off}\n",
         "alerts.digest: Input should be a valid dictionary or instance of DigestConfig (got False): leave the setting out for its "
         "default (none for an optional one), or give its settings as a mapping"),
    ],
)
def test_a_setting_turned_off_with_a_yaml_boolean_says_what_to_write(tmp_path, text, line):
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(minimal(), sort_keys=False) + text)
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    assert f"  {line}" in str(info.value).splitlines()[1]


def test_a_message_that_names_the_value_does_not_repeat_it():
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(schedules={"predict": "0 25 * * *"}, frequency="1 hour", threshold={"value": 0.9}))
    lines = str(info.value).splitlines()[1:]
    # As docs/CONFIGURATION.md shows it, without "(got '0 25 * * *')" after it.
    assert "  schedules.predict: '0 25 * * *' is not a valid cron expression (five fields: minute hour day month weekday)" in lines
    assert any(line.startswith("  frequency: '1 hour' is not a duration") and "got" not in line for line in lines)
    assert any(line.startswith("  threshold: contamination must be in (0, 0.5], got 0.9") for line in lines)


@pytest.mark.parametrize(
    ("params", "line"),
    [
        # A check of the parameters together: no empty field name, no "Value error, ", no dict echoed.
        ({"rest_rows": 150}, "params: 'rest_rows' is now 'rest' (a duration such as '12h', or a number of rows): "
                             "write rest: 150 to keep 150 rows"),
        ({"rest": "abc"}, "params.rest: 'abc' is not a duration: write an integer and a unit, one of s, min, h, d, w "
                          "(e.g. '15min', '1h', '28d')"),
    ],
)
def test_a_detector_parameter_error_names_the_parameter_once(params, line):
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(model={"kind": "context", "params": params}))
    assert str(info.value).splitlines()[1:] == [f"  model: invalid parameters for model 'context': {line}"]


def test_a_detector_parameter_of_the_wrong_type_names_it_and_the_value_once():
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(model={"kind": "context", "params": {"margin": "wide"}}))
    [line] = str(info.value).splitlines()[1:]
    assert line.startswith("  model: invalid parameters for model 'context': params.margin: ") and line.count("'wide'") == 1


def test_load_jobs_rejects_duplicate_names(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump(minimal()))
    with pytest.raises(ConfigError, match=r"b.yaml: job name 'web' is already used by .*a.yaml"):
        load_jobs(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# to do\n", "web.yaml: the job file is empty (or holds only comments): write the job's settings, at least name, source"),
        ("- name: web\n", "web.yaml: a job file must hold a mapping of settings (name: web, frequency: 1h, ...), got a list (lines starting"),
        ("web\n", "got a single str value"),
    ],
)
def test_a_job_file_without_a_mapping_says_what_it_holds(tmp_path, text, message):
    # An empty file was "must hold a mapping of settings, got NoneType".
    (tmp_path / "web.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_job_file(tmp_path / "web.yaml")


def test_unreadable_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_job_file(path)


def test_a_key_set_twice_is_refused_naming_both_lines(tmp_path):
    # PyYAML kept the second threshold without a word.
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(minimal(threshold={"kind": "contamination", "value": 0.01}), sort_keys=False)
                    + "threshold: {kind: score, value: 0.9}\n")
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("threshold:"))
    with pytest.raises(ConfigError, match=rf"web.yaml: not valid YAML: 'threshold' is set twice in one mapping \(first on line {line}\)"):
        load_job_file(path)
    # Equal keys in different mappings, and YAML's merge key, are not repeats.
    path.write_text("base: &base {kind: contamination, value: 0.01}\n" + yaml.safe_dump({k: v for k, v in minimal().items()}, sort_keys=False)
                    + "threshold:\n  <<: *base\n  value: 0.02\n")
    with pytest.raises(ConfigError, match="base: unknown field"):  # parsed: only the job's own check refuses it
        load_job_file(path)


def _alias_bomb(levels: int, used_by: str) -> str:
    """Ten aliases of the level below on each of ``levels`` levels: 10**levels values in a few hundred bytes."""
    anchors = ["_l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    anchors += [f"_l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(anchors) + "\n" + yaml.safe_dump(minimal(), sort_keys=False) + f"{used_by}: *l{levels - 1}\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    # Seven levels took seconds and made a 72 MB error (the value repeated after "got"), stored as
    # Airflow's import error at every parse; one level more would time the DAG file out.
    (tmp_path / "a.yaml").write_text(_alias_bomb(7, "description"))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(minimal(name="costs")))
    started = time.perf_counter()
    scan = scan_jobs(tmp_path)
    assert time.perf_counter() - started < 1
    assert list(scan.jobs) == ["costs"] and len(scan.errors[0]) < 1000
    assert re.search(
        r"a\.yaml: not valid YAML: '_l6' expands through aliases \(\*name\) to 11,111,111 values, and a job file's aliases "
        r"may add at most 10,000 to what it writes out: write the values out.*line 7", scan.errors[0], re.S
    )


def test_an_alias_that_holds_itself_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(minimal(), sort_keys=False) + "description: &d [*d]\n")
    with pytest.raises(ConfigError, match="not valid YAML: an alias refers to the value that holds it"):
        load_job_file(tmp_path / "a.yaml")


def test_aliases_that_add_few_values_are_read(tmp_path):
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump(minimal(), sort_keys=False).replace("features:\n- value\n", "features: &f [a, b, c]\n")
        + "alerts: {features: *f, slack: {webhook_conn_id: hook}}\n"
    )
    assert load_job_file(tmp_path / "a.yaml").alerts.features == ["a", "b", "c"]


def test_values_nested_too_deeply_are_a_config_error_that_hides_no_other_job(tmp_path):
    # PyYAML composes recursively: a RecursionError escaped, failing the DAG file of every job.
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(minimal(), sort_keys=False) + "description: " + "[" * 3000 + "]" * 3000 + "\n")
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(minimal(name="costs")))
    scan = scan_jobs(tmp_path)
    assert list(scan.jobs) == ["costs"] and "a.yaml: values are nested too deeply to read" in scan.errors[0]


@pytest.mark.parametrize(
    ("overrides", "field", "shown"),
    [
        ({"timestamp": ["x"] * 100_000}, "timestamp", "(got ['x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', ...]… (a list of 100,000 items))"),
        ({"model": {"kind": "iforest", "params": {"n_estimators": list(range(100_000))}}}, "model",
         "params.n_estimators: Input should be a valid integer (got [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...]… (a list of 100,000 items))"),
        ({"name": "x" * 100_000}, "name", "… (100,000 characters))"),
        # The check's own message quotes the value whole: cut in the middle, its advice kept.
        ({"frequency": "y" * 100_000}, "frequency", "characters left out) …yyy"),
    ],
    ids=["long-list", "detector-parameter", "long-text", "quoted-by-the-check"],
)
def test_a_large_value_is_shown_cut_with_its_size(overrides, field, shown):
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(**overrides))
    [line] = [line for line in str(info.value).splitlines() if line.startswith(f"  {field}:")]
    assert shown in line and len(line) <= 2000 and line.count("(got ") <= 1
    if field == "frequency":
        assert line.endswith("y' is not a duration: write an integer and a unit, one of s, min, h, d, w (e.g. '15min', '1h', '28d')")


def test_a_job_file_that_is_not_utf8_is_a_config_error_and_hides_no_other_job(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(minimal()))
    (tmp_path / "b.yaml").write_bytes((yaml.safe_dump(minimal(name="costs")) + "description: Kosten für Zürich\n").encode("latin-1"))
    with pytest.raises(ConfigError, match="b.yaml: not UTF-8 text .*; save the job file as UTF-8"):
        load_job_file(tmp_path / "b.yaml")
    scan = scan_jobs(tmp_path)
    assert list(scan.jobs) == ["web"] and "b.yaml: not UTF-8 text" in scan.errors[0]


def test_start_date_is_checked_and_may_be_an_unquoted_yaml_date(tmp_path):
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(minimal()) + "start_date: 2024-02-01\n")  # YAML reads a date, not text
    assert load_job_file(path).start_date == "2024-02-01"
    assert parse_job(minimal(start_date="2024-02-01T06:00:00Z")).start_date == "2024-02-01T06:00:00Z"


def test_get_job_lists_known_jobs(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(minimal()))
    with pytest.raises(ConfigError, match="no job named 'nope'; configured jobs: web"):
        get_job("nope", tmp_path)


def test_one_broken_job_file_does_not_hide_the_others(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(minimal()))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**minimal(), "name": "costs", "threshold": {"kind": "contamination", "value": 7}}))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(minimal()))  # the name of a.yaml again
    scan = scan_jobs(tmp_path)
    assert list(scan.jobs) == ["web"] and scan.jobs["web"] == load_job_file(tmp_path / "a.yaml")
    assert len(scan.errors) == 2
    assert scan.errors[0].startswith(f"{tmp_path / 'b.yaml'}: invalid job configuration") and "got 7" in scan.errors[0]
    assert "c.yaml: job name 'web' is already used by" in scan.errors[1]
    assert get_job("web", tmp_path).name == "web"
    # Asking for the broken job says why it is not there.
    with pytest.raises(ConfigError, match=r"(?s)no job named 'costs'; configured jobs: web\. 2 job file\(s\) make no job.*b.yaml"):
        get_job("costs", tmp_path)
    # The strict reading (validate-config) names every bad file.
    with pytest.raises(ConfigError, match=r"(?s)b.yaml: invalid job configuration.*c.yaml: job name 'web'"):
        load_jobs(tmp_path)


def test_relative_paths_resolve_against_base_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))
    assert resolve_path("data/x.csv") == str(tmp_path / "data" / "x.csv")
    assert resolve_path("s3://bucket/x.csv") == "s3://bucket/x.csv"
    assert resolve_path("/abs/x.csv") == "/abs/x.csv"


def test_paths_holding_a_dollar_or_tilde_that_ask_no_expansion_are_accepted():
    job = parse_job(minimal(source={"kind": "file", "path": "data/$prices/x~1.csv", "storage_options": {"anon": True}},
                            registry="/srv/models", outputs={"parquet": "s3://bucket/out$"}))
    assert job.source.path == "data/$prices/x~1.csv"


def test_connection_description_hides_password():
    # Built in code: a job file may not write the password (test_a_password_written_in_a_url_is_refused).
    source = SqlSource(kind="sql", connection=SqlConnection(url="postgresql://user:s3cret@db/x"),
                       query="select * from t where ts >= :start and ts < :end")
    assert "s3cret" not in source.describe()
    assert "user:***@db" in source.describe()


@pytest.mark.parametrize(
    ("where", "url", "secret"),
    [
        ("source.sql.connection.url", "postgresql://reader:hunter2@db:5432/metrics", "a password"),
        ("source.sql.connection.url", "postgresql://reader:hunter2@db:port/metrics", "a password"),  # does not parse
        ("source.sql.connection.url", "postgresql://reader@db/metrics?sslpassword=hunter2", "the option sslpassword"),
        ("outputs.table.connection.url", "mysql://writer:hunter2@db/out", "a password"),
        ("labels.connection.url", "postgresql://labeler:hunter2@db/labels", "a password"),
    ],
    ids=["password", "unparsable", "secret-option", "output-table", "labels"],
)
def test_a_password_written_in_a_url_is_refused(tmp_path: Path, where: str, url: str, secret: str):
    # It was accepted: kept in git beside the job, and shown to whoever reads the job's settings.
    query = "select * from t where ts >= :start and ts < :end"
    settings = {
        "source.sql.connection.url": {"source": {"kind": "sql", "connection": {"url": url}, "query": query}},
        "outputs.table.connection.url": {"outputs": {"table": {"connection": {"url": url}, "name": "anomalies"}}},
        "labels.connection.url": {"labels": {"connection": {"url": url}}},
    }[where]
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(minimal(**settings)))
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid job configuration\n  {where}: job 'web': the URL holds {secret}, ")
    assert "write url_env: METRICS_DB_URL (its name) instead of url, or write conn_id: " in message
    assert "hunter2" not in message


@pytest.mark.parametrize("url", ["postgresql://reader:${DB_PASSWORD}@db/metrics", "postgresql://${DB_HOST}/metrics"])
def test_a_url_put_together_from_variables_says_to_export_the_whole_url(url: str):
    # It was told to write url_env: DB_PASSWORD, naming a variable that holds a password, not a URL.
    query = "select * from t where ts >= :start and ts < :end"
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(source={"kind": "sql", "connection": {"url": url}, "query": query}))
    name = re.search(r"\$\{(\w+)\}", url)[1]
    assert str(info.value).splitlines()[1] == (
        f"  source.sql.connection.url: job files are not expanded, so ${name} would be read as written, and a URL is not "
        "put together from variables: export the whole URL in one (export METRICS_DB_URL='dialect://user:password@host/db') "
        "and write url_env: METRICS_DB_URL instead of url"
    )


@pytest.mark.parametrize(
    "url",
    ["postgresql://reader@db/metrics?passfile=/etc/pgpass", "postgresql://reader:@db/metrics", "sqlite:///var/x.db", "duckdb:///:memory:"],
)
def test_a_url_without_a_password_stays_in_the_job_file(url: str):
    query = "select * from t where ts >= :start and ts < :end"
    job = parse_job(minimal(source={"kind": "sql", "connection": {"url": url}, "query": query}))
    assert job.source.connection.url == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # The regex read up to the first ":" and "@": an empty user showed the password, an "@" in
        # the password showed what follows it, and secret driver options were shown as written.
        ("postgresql://:s3cret@db/x", "postgresql://:***@db/x"),
        ("postgresql://user:s3@cret@db:5432/x", "postgresql://user:***@db:5432/x"),
        ("postgresql://user@db/x?sslpassword=s3cret&sslmode=require", "postgresql://user@db/x?sslmode=require&sslpassword=***"),
        ("mysql://user:pw@db/x?auth_token=s3cret", "mysql://user:***@db/x?auth_token=***"),
        ("postgresql://user:s3cret@db:port/x", "the URL (hidden: it does not parse"),
    ],
    ids=["empty-user", "at-in-password", "sslpassword", "token", "unparsable"],
)
def test_connection_description_never_shows_a_secret(url: str, shown: str) -> None:
    described = SqlConnection(url=url).describe()
    assert described.startswith(shown)
    assert "s3" not in described and "cret" not in described


# -- checks of several fields together: what failed every training, hours after the job file loaded --


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        # The seasonal detectors refuse a season of one row at every fit.
        ({"model": {"kind": "seasonal_mad", "params": {"season": "30m"}}},
         "model.params.season: season 30m is not longer than one period of frequency 1h, so a season would hold one row "
         "and a seasonal profile needs two: use at least 2h, or leave season out (the default 1d)"),
        ({"model": {"kind": "level_shift", "params": {"season": "1h"}}}, "model.params.season: season 1h is not longer"),
        # A daily job with the default season: leaving it out is no way out.
        ({"frequency": "1d", "training_window": "365d"},
         "model.params.season: the default season 1d is not longer than one period of frequency 1d, so a season would hold "
         "one row and a seasonal profile needs two: use at least 2d, or season: null for no season"),
        ({"frequency": "1d", "training_window": "365d", "model": {"kind": "level_shift", "params": {"season": "1d"}}},
         "model.params.season: season 1d is not longer than one period of frequency 1d, so a season would hold one row "
         "and a seasonal profile needs two: use at least 2d, or season: null for no season"),
        # Training fits the new model on the first 80 % of a window's rows before comparing it.
        ({"model": {"kind": "iforest", "params": {"window": 1000}}},
         "model.params.window: iforest with window 1000 needs at least 2000 training rows (2 windows of 1000 rows), but a "
         "training_window of 28d holds 672 rows of 1h, and training fits the new model on the first 537 of them (the last 20% "
         "are held back to compare it with the serving model): use a window of at most 268, or a training_window of at least 105d"),
        ({"model": {"kind": "iforest", "params": {"window": 300}}}, "model.params.window: iforest with window 300 needs at least 600"),
        ({"model": {"kind": "lstm", "params": {"window": 200}}},
         "model.params.window: lstm with window 200 needs at least 1000 training rows (5 windows of 200 rows), but"),
        ({"model": {"kind": "mset", "params": {"lags": 48}}, "training_window": "7d"},
         "model.params.lags: mset with lags 48 needs at least 196 training rows (30 states after its 48 lags), but a "
         "training_window of 7d holds 168 rows of 1h, and training fits the new model on the first 134 of them"),
        ({"model": {"kind": "context"}, "training_window": "2d"},
         "training_window: model context needs at least 50 training rows, but a training_window of 2d holds 48 rows of 1h, "
         "and training fits the new model on the first 38 of them (the last 20% are held back to compare it with the "
         "serving model): use a training_window of at least 3d"),
        ({"model": {"kind": "auto"}, "training_window": "74h"}, "training_window: model auto needs at least 60 training rows"),
        ({"model": {"kind": "iforest", "params": {"window": 1000}}, "training_window": "10d", "frequency": "7min"},
         "model.params.window: iforest with window 1000 needs at least 2000 training rows (2 windows of 1000 rows), but a "
         "training_window of 10d holds at most 2058 rows of 7min, and training fits the new model on the first 1646 of them"),
        # tune.grid without tune.detectors: checked against the kinds the model makes tuning search.
        ({"tune": {"grid": {"windw": [3]}}},
         "tune.grid.windw: no searched detector (seasonal_mad) tunes 'windw'; tunable parameters: level_window, season "
         "(tune.detectors is not set, so tuning searches model.kind seasonal_mad)"),
        ({"model": {"kind": "iforest"}, "tune": {"grid": {"window": [1]}}},
         "tune.grid.window: [1] outside the search space of 'iforest' (integer 6–168 (log)); use values in that range"),
        ({"model": {"kind": "iforest"}, "tune": {"grid": {"window": []}}}, "tune.grid.window: give at least one value"),
        ({"model": {"kind": "auto", "params": {"candidates": ["context", "mset"]}}, "tune": {"grid": {"level_window": [6]}}},
         "tune.grid.level_window: no searched detector (context, mset) tunes 'level_window'"),
        # Too short a window: that line alone, not the rows check's on the same cause.
        ({"training_window": "1h"}, "training_window: training_window must span at least two periods of frequency: 1h holds "
                                    "fewer than two periods of 1h; use a training_window of at least 2h"),
        # Grid values every tune trial would fail with: a trial fits on all but tune.holdout_fraction of the rows.
        ({"frequency": "1d", "training_window": "365d", "model": {"kind": "seasonal_mad", "params": {"season": "1w"}},
          "tune": {"grid": {"season": ["1d", "1w"]}}},
         "tune.grid.season: season 1d is not longer than one period of frequency 1d, so a season would hold one row and a "
         "seasonal profile needs two: every seasonal_mad trial with it would fail; use seasons of at least 2d (of the search "
         "space: 1w, null)"),
        ({"training_window": "14d", "model": {"kind": "lstm", "params": {"window": 12}}, "tune": {"grid": {"window": [24, 96, 60]}}},
         "tune.grid.window: lstm with window 60 needs at least 300 training rows (5 windows of 60 rows), but a training_window "
         "of 14d holds 336 rows of 1h, and a tune trial fits on the first 252 of them (tune.holdout_fraction holds the last 25% "
         "back to score it): every lstm trial with window 96, 60 would fail; use a window of at most 50, or a training_window "
         "of at least 27d"),
        # With tune.detectors, at the grid's field once ("tune: tune.grid.window: ..." before).
        ({"model": {"kind": "iforest"}, "tune": {"detectors": ["iforest", "seasonal_mad"], "grid": {"window": [253]}}},
         "tune.grid.window: [253] outside the search space of 'iforest' (integer 6–168 (log)); use values in that range"),
        ({"model": {"kind": "iforest"}, "tune": {"holdout_fraction": 0.6, "grid": {"window": [6, 168]}}},
         "tune.grid.window: iforest with window 168 needs at least 336 training rows (2 windows of 168 rows), but a "
         "training_window of 28d holds 672 rows of 1h, and a tune trial fits on the first 268 of them (tune.holdout_fraction "
         "holds the last 60% back to score it): every iforest trial with window 168 would fail; use a window of at most 134, "
         "or a training_window of at least 35d"),
        # A season the trial's rows hold fewer than two of: each trial fitted without one, under its name.
        ({"training_window": "14d", "tune": {"grid": {"season": ["1d", "1w"]}}},
         "tune.grid.season: season 1w needs two seasons of rows to learn a profile (336 rows for 1w), but a training_window "
         "of 14d holds 336 rows of 1h, and a tune trial fits on the first 252 of them (tune.holdout_fraction holds the last "
         "25% back to score it): every seasonal_mad trial with it would fit without a season, scored under its name; use "
         "season among 1d, null, or a training_window of at least 19d"),
        # Rows every tune run needs, in a job that tunes: it failed at its first tune run, not at load.
        ({"frequency": "1d", "training_window": "30d", "model": {"kind": "seasonal_mad", "params": {"season": None}},
          "schedules": {"tune": "0 3 * * 0"}},
         "tune.holdout_fraction: a training_window of 30d holds 30 rows of 1d, and tune.holdout_fraction 0.25 holds back the "
         "last 8 of them to plant anomalies in and score each trial on, which needs at least 10: every tune run would fail; "
         "use a tune.holdout_fraction of at least 0.31, or a training_window of at least 37d"),
        ({"training_window": "7d", "tune": {"holdout_fraction": 0.04}},
         "tune.holdout_fraction: a training_window of 7d holds 168 rows of 1h, and tune.holdout_fraction 0.04 holds back the "
         "last 7 of them"),
        ({"model": {"kind": "context"}, "training_window": "63h", "tune": {}},
         "tune.holdout_fraction: context needs at least 50 training rows, but a training_window of 63h holds 63 rows of 1h, "
         "and a tune trial fits on the first 47 of them (tune.holdout_fraction holds the last 25% back to score it): every "
         "trial would fail; use a tune.holdout_fraction of at most 0.2, or a training_window of at least 3d"),
        ({"model": {"kind": "iforest"}, "training_window": "62h", "tune": {"grid": {"n_estimators": [100]}}},
         "tune.holdout_fraction: iforest needs at least 48 training rows (2 windows of 24 rows), but"),
        ({"frequency": "1d", "training_window": "26d", "model": {"kind": "seasonal_mad", "params": {"season": None}},
          "tune": {"trials": 5}},
         "training_window: a training_window of 26d holds 26 rows of 1d, and tune.holdout_fraction 0.25 holds back the last 7 "
         "of them to plant anomalies in and score each trial on, which needs at least 10: every tune run would fail; use a "
         "training_window of at least 37d"),
        # Fewer than two seasons of rows: every training fitted without the season, warning only in the task log.
        ({"training_window": "7d", "model": {"kind": "seasonal_mad", "params": {"season": "1w"}}},
         "model.params.season: season 1w needs two seasons of rows to learn a profile (336 rows of 1h), but a training_window "
         "of 7d holds 168 rows of 1h, and training fits the new model on the first 134 of them (the last 20% are held back to "
         "compare it with the serving model): every training would fit without a season; use a training_window of at least "
         "18d, a shorter season, or season: null for none"),
        ({"training_window": "2d", "model": {"kind": "level_shift"}},
         "training_window: the default season 1d needs two seasons of rows to learn a profile (48 rows of 1h), but a "
         "training_window of 2d holds 48 rows of 1h"),
        ({"frequency": "1d", "training_window": "365d", "model": {"kind": "seasonal_mad", "params": {"season": 200}}},
         "model.params.season: season 200 needs two seasons of rows to learn a profile (400 rows of 1d)"),
    ],
)
def test_settings_that_fail_every_training_together_are_refused_at_the_field(overrides, line):
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(**overrides), source="jobs/web.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "jobs/web.yaml: invalid job configuration"
    assert len(lines) == 2 and lines[1].startswith(f"  {line}")


def _auto(**params) -> dict:
    return {"kind": "auto", "params": params}


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        # Only model.kind's own season was checked: a candidate's was found at training, where
        # that candidate was skipped (or fitted without its season), its reason among the trials.
        ({"model": _auto(candidate_params={"seasonal_mad": {"season": "30m"}})},
         "model.params.candidate_params.seasonal_mad.season: season 30m is not longer than one period of frequency 1h, so a "
         "season would hold one row and a seasonal profile needs two: use at least 2h, or leave season out (the default 1d)"),
        ({"frequency": "1d", "training_window": "365d",
          "model": _auto(
              candidates=["level_shift", "iforest"], prefer="iforest", candidate_params={"level_shift": {"season": "1d"}}
          )},
         "model.params.candidate_params.level_shift.season: season 1d is not longer than one period of frequency 1d"),
        ({"training_window": "7d",
          "model": _auto(candidate_params={"prophet": {"holidays_country": "US"}, "level_shift": {"season": "1w"}})},
         "model.params.candidate_params.level_shift.season: season 1w needs two seasons of rows to learn a profile (336 rows of "
         "1h), but a training_window of 7d holds 168 rows of 1h, and training fits the new model on the first 134 of them (the "
         "last 20% are held back to compare it with the serving model): every training would fit the level_shift candidate "
         "without a season; use a training_window of at least 18d, a shorter season, or season: null for none"),
    ],
)
def test_a_candidates_season_is_checked_like_the_models(overrides, line):
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(**overrides), source="jobs/web.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"  {line}")


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": _auto(candidate_params={"seasonal_mad": {"season": "1w"}, "prophet": {"holidays_country": "US"}})},
        {"model": _auto(candidate_params={"seasonal_mad": {"season": None}, "level_shift": {"season": 24}})},
        # A candidate's default season that does not fit is not the job file's: auto skips that candidate.
        {"frequency": "1d", "training_window": "365d", "model": _auto()},
        {"frequency": "1d", "training_window": "365d", "model": _auto(candidate_params={"seasonal_mad": {"level_window": 7}})},
    ],
)
def test_a_candidates_season_that_fits_is_taken(overrides):
    assert parse_job(minimal(**overrides)).model.kind == "auto"


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"holidays_country": "US"},
         "params.holidays_country: auto takes no parameter holidays_country; it is a parameter of its candidate prophet: give "
         "it as candidate_params.prophet.holidays_country (auto passes candidate_params.<kind> to that candidate)"),
        ({"season": "1w"},
         "params.season: auto takes no parameter season; it is a parameter of its candidates level_shift, seasonal_mad: give it "
         "as candidate_params.level_shift.season or candidate_params.seasonal_mad.season"),
    ],
)
def test_auto_given_a_candidates_parameter_is_told_where_it_goes(params, problem):
    """It was told "unknown parameter (check its spelling ...)" of a parameter spelt right."""
    with pytest.raises(ConfigError, match=re.escape(f"invalid parameters for model 'auto': {problem}")):
        parse_job(minimal(model=_auto(**params)))
    with pytest.raises(ConfigError, match=re.escape("params.holiday_country: unknown parameter (check its spelling; auto's")):
        parse_job(minimal(model=_auto(holiday_country="US")))  # a parameter of no candidate


@pytest.mark.parametrize(
    "overrides",
    [
        # Not a whole number of periods: the detector rounds a season up to whole rows.
        {"frequency": "7min", "training_window": "14d"},
        {"model": {"kind": "seasonal_mad", "params": {"season": "90m"}}},
        {"model": {"kind": "level_shift", "params": {"season": "2h"}}},
        {"frequency": "1d", "training_window": "365d", "model": {"kind": "seasonal_mad", "params": {"season": None}}},
        {"frequency": "1d", "training_window": "365d", "model": {"kind": "seasonal_mad", "params": {"season": 7}}},
        {"frequency": "1d", "training_window": "365d", "model": {"kind": "iforest"}},  # no season parameter
        # At the limit: 537 fitted rows of 672.
        {"model": {"kind": "iforest", "params": {"window": 268}}},
        {"model": {"kind": "lstm", "params": {"window": 107}}},
        {"model": {"kind": "mset", "params": {"lags": 48}}},
        {"model": {"kind": "context"}, "training_window": "63h"},
        {"model": {"kind": "iforest"}, "tune": {"grid": {"window": [6, 168]}}},
        {"model": {"kind": "iforest"}, "tune": {"detectors": ["seasonal_mad"], "grid": {"level_window": [6]}}},
        # A trial fits on 252 of 336 rows: five lstm windows of 50, two iforest windows of 126.
        {"training_window": "14d", "model": {"kind": "lstm", "params": {"window": 12}}, "tune": {"grid": {"window": [12, 50]}}},
        {"training_window": "14d", "model": {"kind": "iforest"}, "tune": {"grid": {"window": [126]}}},
        {"frequency": "1d", "training_window": "365d", "model": {"kind": "seasonal_mad", "params": {"season": None}},
         "tune": {"grid": {"season": ["1w", None]}}},
        # Two weeks of a trial's rows: 1w is learned. A job that only trains is not held to tuning's rows.
        {"training_window": "19d", "tune": {"grid": {"season": ["1d", "1w"]}}},
        {"frequency": "1d", "training_window": "30d", "model": {"kind": "seasonal_mad", "params": {"season": None}}},
        {"frequency": "1d", "training_window": "30d", "model": {"kind": "seasonal_mad", "params": {"season": None}},
         "tune": {"holdout_fraction": 0.31}},
        # The search space's smallest window fits a trial where the job's own would not.
        {"model": {"kind": "iforest"}, "training_window": "62h", "tune": {}},
    ],
)
def test_settings_that_train_together_are_accepted(overrides):
    parse_job(minimal(**overrides))


def test_every_check_of_fields_together_is_reported_at_once():
    # Each failing check hid those after it: the user fixed one line, loaded again, and saw the next.
    job = minimal(
        dimensions=["Score"], model={"kind": "iforest", "params": {"window": 1000}},
        tune={"grid": {"windw": [3]}},
    )
    with pytest.raises(ConfigError) as info:
        parse_job(job, source="jobs/web.yaml")
    assert [line.split(":")[0] for line in str(info.value).splitlines()] == [
        "jobs/web.yaml", "  dimensions", "  model.params.window", "  tune.grid.windw",
    ]
    assert "dimensions ['Score'] share their names with columns of the output" in str(info.value)
    job = minimal(
        frequency="1d", training_window="365d", model={"kind": "level_shift", "params": {"season": "1d"}},
        tune={"holdout_fraction": 0.9, "grid": {"season": ["1d"], "shift_window": [96, 4]}},
    )
    with pytest.raises(ConfigError) as info:
        parse_job(job, source="jobs/web.yaml")
    assert [line.split(":")[0] for line in str(info.value).splitlines()[1:]] == [
        "  model.params.season", "  tune.grid.season",
    ]


def test_a_tune_trial_fits_on_the_rows_the_job_file_check_counts(monkeypatch):
    # The grid check counts the rows of pipelines.tuning's split, fewer than training's: a window
    # that trains (2 x 126 <= 268 of 336) but needs more than a trial's 252 failed every trial.
    import numpy as np
    import pandas as pd

    from pipelines import tuning
    from pipelines.detectors.iforest import IsolationForestDetector
    from pipelines.errors import ModelError

    job = parse_job(minimal(model={"kind": "iforest"}, training_window="14d", tune={"grid": {"window": [126]}}))
    with pytest.raises(ConfigError, match="tune.grid.window: iforest with window 127 needs at least 254 training rows"):
        parse_job(minimal(model={"kind": "iforest"}, training_window="14d", tune={"grid": {"window": [127]}}))
    monkeypatch.setattr(tuning, "_series_labels", lambda *args: [])  # no label store: the unlabeled split
    index = pd.date_range("2024-01-01", periods=336, freq="1h", tz="UTC")
    data = pd.DataFrame({"value": np.random.default_rng(0).normal(size=336)}, index=index)
    head = tuning.prepare_holdout(job, "all", data).head
    IsolationForestDetector(window=126, n_estimators=10).fit(head)
    with pytest.raises(ModelError, match="needs at least 254 training rows"):
        IsolationForestDetector(window=127, n_estimators=10).fit(head)


def test_a_tune_run_has_the_rows_the_job_file_check_counts(monkeypatch):
    # At the limit the split of pipelines.tuning succeeds; one day fewer, the job file is refused
    # and the split fails as every tune run of it did.
    import numpy as np
    import pandas as pd

    from pipelines import tuning
    from pipelines.errors import ModelError

    monkeypatch.setattr(tuning, "_series_labels", lambda *args: [])
    daily = {"frequency": "1d", "model": {"kind": "seasonal_mad", "params": {"season": None}}, "tune": {}}
    job = parse_job(minimal(training_window="37d", **daily))
    with pytest.raises(ConfigError, match="tune.holdout_fraction 0.25 holds back the last 9"):
        parse_job(minimal(training_window="36d", **daily))
    for rows in (37, 36):
        index = pd.date_range("2024-01-01", periods=rows, freq="1D", tz="UTC")
        data = pd.DataFrame({"value": np.random.default_rng(0).normal(size=rows)}, index=index)
        if rows == 37:
            assert len(tuning.prepare_holdout(job, "all", data).clean) == 10
        else:
            with pytest.raises(ModelError, match="too few to tune"):
                tuning.prepare_holdout(job, "all", data)


def _one_row_fewer_than(kind: str, params: dict, features: int = 1):
    """The detector's own error when fitted on one row fewer than the job file check asks for."""
    import numpy as np
    import pandas as pd

    from pipelines.config import _fewest_training_rows
    from pipelines.detectors import make_detector
    from pipelines.detectors.params import MODEL_PARAMS
    from pipelines.errors import ModelError

    needed, _, _ = _fewest_training_rows(kind, dict(MODEL_PARAMS[kind](**params)), features)
    index = pd.date_range("2024-01-01", periods=needed - 1, freq="1h", tz="UTC")
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(needed - 1, features)), index=index,
                         columns=[f"f{i}" for i in range(features)])
    with pytest.raises(ModelError) as info:
        make_detector(kind, params).fit(frame)
    return needed, str(info.value)


@pytest.mark.parametrize(
    ("kind", "params", "features"),
    [
        ("seasonal_mad", {}, 1), ("level_shift", {}, 1), ("context", {}, 1), ("auto", {}, 1), ("prophet", {}, 1),
        ("iforest", {"window": 5}, 1), ("iforest", {"window": 40}, 2),
        ("lstm", {"window": 4}, 1), ("lstm", {"window": 30}, 1),
        ("mset", {}, 1), ("mset", {}, 2), ("mset", {"lags": 2}, 2), ("mset", {"lags": 48}, 1),
    ],
)
def test_the_rows_the_job_file_check_asks_for_are_the_detectors_own(kind, params, features):
    # The check duplicates the detectors' minimums (their modules are too heavy for the DAG parse).
    if kind in ("lstm", "prophet"):
        pytest.importorskip("torch" if kind == "lstm" else "prophet")
    needed, message = _one_row_fewer_than(kind, params, features)
    assert f"needs at least {needed} training rows" in message


@pytest.mark.parametrize("frequency", [timedelta(0), timedelta(hours=-1)])
def test_a_frequency_given_as_a_timedelta_must_be_positive(frequency):
    # The checks that count rows divide by it: a zero frequency raised a raw ZeroDivisionError.
    with pytest.raises(ConfigError, match="frequency: must be a positive duration"):
        parse_job(minimal(frequency=frequency))


def test_the_duplicated_constants_are_the_sources():
    from pipelines import config, training, tuning
    from pipelines.detectors import mset

    assert config._TRAINING_HOLDOUT == training.HOLDOUT_FRACTION
    assert config._MSET_LONE_SIGNAL_LAGS == mset._LONE_SIGNAL_LAGS
    assert config._TUNE_MIN_ROWS == tuning._MIN_ROWS


@pytest.mark.parametrize(("season", "frequency"), [("30m", "1h"), ("1h", "1h"), ("90m", "1h"), ("2h", "1h"), ("1d", "7min"), ("1d", "1d")])
def test_the_season_check_refuses_what_the_detector_refuses(season, frequency):
    import numpy as np
    import pandas as pd

    from pipelines.detectors.seasonal_mad import SeasonalMADDetector

    index = pd.date_range("2024-01-01", periods=400, freq=parse_duration(frequency), tz="UTC")
    try:
        SeasonalMADDetector(season=season).fit(pd.DataFrame({"value": np.random.default_rng(0).normal(size=400)}, index=index))
        fits = True
    except ConfigError as exc:
        assert "must span at least two rows" in str(exc)
        fits = False
    try:
        parse_job(minimal(frequency=frequency, training_window="400d", model={"kind": "seasonal_mad", "params": {"season": season}}))
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == fits


def test_the_checks_of_fields_together_import_nothing_heavy():
    # Job files are validated at every DAG parse: the detectors' own modules stay unimported.
    import subprocess
    import sys

    code = (
        "import sys; from pipelines.config import parse_job; "
        "parse_job({'name': 'w', 'source': {'kind': 'file', 'path': 'x.csv'}, 'timestamp': 'ts', 'frequency': '1h', "
        "'features': ['v'], 'model': {'kind': 'lstm', 'params': {'window': 50}}, 'tune': {'grid': {'window': [12]}}}); "
        "print(sorted({'numpy', 'pandas', 'sklearn', 'torch', 'prophet', 'optuna'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("frequency", "schedule"),
    [("15min", "0 * * * *"), ("1h", "0 * * * *"), ("6h", "0 */6 * * *"), ("1d", "0 0 * * *"), ("1w", "0 0 * * 4")],
)
def test_the_default_predict_schedule_runs_once_a_period_of_a_longer_frequency(frequency, schedule):
    # Hourly under a daily frequency: 23 of every 24 predict runs held no whole day and failed.
    job = parse_job(minimal(frequency=frequency, training_window="800d", model={"kind": "iforest"}))
    assert job.schedules.predict == schedule
    assert parse_job(minimal(frequency=frequency, training_window="800d", model={"kind": "iforest"},
                             schedules={"predict": "0 0 * * 0"})).schedules.predict == "0 0 * * 0"  # written: kept


def test_a_frequency_no_cron_follows_needs_a_written_predict_schedule():
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(frequency="5h", training_window="400d", model={"kind": "iforest"}), source="jobs/web.yaml")
    assert "schedules.predict: the default, hourly, gives data intervals shorter than frequency 5h" in str(info.value)
    assert parse_job(minimal(frequency="5h", training_window="400d", model={"kind": "iforest"},
                             schedules={"predict": "0 0 * * *"})).schedules.predict == "0 0 * * *"


@pytest.mark.parametrize(
    ("overrides", "field", "keys"),
    [
        ({"source": {"kind": "file", "path": "s3://bucket/x.csv", "storage_options": {"key": "AKIAEXAMPLE", "secret": "wJalrXUtnFEMI"}}},
         "source.file.storage_options", "key, secret"),
        ({"outputs": {"parquet": "s3://bucket/out", "storage_options": {"endpoint_url": "http://minio:9000", "token": "FwoGZXIvYXdzEXAMPLE"}}},
         "outputs.storage_options", "token"),
        ({"outputs": {"storage_options": {"client_kwargs": {"aws_access_key_id": "AKIAEXAMPLE", "region_name": "eu-west-1"}}}},
         "outputs.storage_options", "client_kwargs.aws_access_key_id"),
        ({"outputs": {"storage_options": {"s3_additional_kwargs": {"SSECustomerKey": "c2VjcmV0EXAMPLE"}}}},
         "outputs.storage_options", "s3_additional_kwargs.SSECustomerKey"),
        ({"outputs": {"storage_options": {"account_name": "acct", "account_key": "EXAMPLEkey=="}}}, "outputs.storage_options", "account_key"),
        ({"outputs": {"storage_options": {"client_secret": "EXAMPLE", "password": "EXAMPLE"}}}, "outputs.storage_options",
         "client_secret, password"),
        ({"source": {"kind": "file", "path": "https://example.com/x.csv", "storage_options": {"headers": {"Authorization": "Bearer EXAMPLE"}}}},
         "source.file.storage_options", "headers.Authorization"),
        # gcsfs takes a service account's key as a mapping, private key and all.
        ({"source": {"kind": "file", "path": "gs://bucket/x.csv", "storage_options": {"token": {"private_key": "EXAMPLE"}}}},
         "source.file.storage_options", "token"),
    ],
)
def test_credentials_written_in_storage_options_are_refused(tmp_path, overrides, field, keys):
    # They were accepted: a job file is kept in git and its settings are shown to whoever reads them.
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(minimal(**overrides)))
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid job configuration")
    line = next(line for line in message.splitlines() if line.startswith(f"  {field}:"))
    assert line.startswith(f"  {field}: {keys}: job 'web' writes ")
    assert "give the worker credentials through the environment, which the store's own library reads (AWS_ACCESS_KEY_ID" in line
    assert "EXAMPLE" not in message


@pytest.mark.parametrize(
    "options",
    [
        {"endpoint_url": "http://minio:9000", "anon": True, "profile": "analytics", "client_kwargs": {"region_name": "eu-west-1"}},
        {"token": "anon"},
        {"token": "google_default"},
        {"token": "/run/secrets/gcs-key.json"},  # a key file's path, which the file does not show
        {"s3_additional_kwargs": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/metrics"}},
        {"key": None, "secret": ""},
    ],
)
def test_storage_options_that_hold_no_credential_load(tmp_path, options):
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(minimal(source={"kind": "file", "path": "s3://bucket/x.csv", "storage_options": options},
                                           outputs={"storage_options": options})))
    job = load_job_file(path)
    assert job.source.storage_options == options and job.outputs.storage_options == options


def test_code_may_hand_credentials_it_holds_to_storage_options():
    # Not a job file: the credentials come from memory (the tests' S3 buckets, a secrets manager).
    job = parse_job(minimal(outputs={"storage_options": {"key": "testing", "secret": "testing"}}))
    assert job.outputs.storage_options == {"key": "testing", "secret": "testing"}


def test_unknown_alerted_features_are_reported_at_alerts_features():
    # Reported at "(top level)", far from the setting to correct.
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(features=["value", "latency"], alerts={"email": {"to": ["oncall@example.com"]}, "features": ["valeu", "cpu"]}),
                  source="jobs/web.yaml")
    line = next(line for line in str(info.value).splitlines() if "not feature" in line)
    assert line == (
        "  alerts.features: 'cpu', 'valeu' are not features of job 'web', whose features are value, latency, so no alert would "
        "ever be about them: correct the spelling, add them to features, or remove them (an empty alerts.features alerts on every feature)"
    )


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        # The default 0.005 is a share of points: as a cut on the score it flagged nearly every point.
        ({"threshold": {"kind": "score"}}, "threshold.value",
         "a score threshold has no default: write the calibrated score from which a point is an anomaly, in (0, 1), "
         "e.g. threshold: {kind: score, value: 0.99}"),
        # KS is at most 1: no drift was ever counted, no retrain ever asked for.
        ({"monitoring": {"statistic": "ks", "drift_threshold": 1.5}}, "monitoring.drift_threshold",
         "the ks statistic is at most 1, so a drift_threshold of 1.5 would never be passed: use a value in (0, 1)"),
        # Alert links are this URL and the dashboard's path: no mail client opened them.
        ({"alerts": {"email": {"to": ["oncall@example.com"]}, "dashboard_url": "airflow.example.com"}}, "alerts.dashboard_url",
         "must be Airflow's base URL with its scheme and without a query, e.g. https://airflow.example.com, which alert links "
         "continue with the dashboard's path; leave it out for Airflow's [api] base_url (got 'airflow.example.com')"),
        # The SMTP server refused every message at send time.
        ({"alerts": {"email": {"to": ["oncall@example.com"], "from_email": "anomalies"}}}, "alerts.email.from_email",
         "'anomalies' is not an e-mail address: write one (anomalies@example.com, or Anomalies <anomalies@example.com>), "
         "or leave from_email out for the SMTP connection's own"),
    ],
)
def test_settings_that_would_quietly_do_another_thing_are_refused(overrides, field, reason):
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(**overrides), source="jobs/web.yaml")
    line = next(line for line in str(info.value).splitlines() if line.startswith(f"  {field}:"))
    assert reason in line


def test_settings_close_to_the_refused_ones_load():
    job = parse_job(minimal(
        threshold={"kind": "score", "value": 0.99},
        monitoring={"statistic": "ks", "drift_threshold": 0.3},
        alerts={"email": {"to": ["oncall@example.com"], "from_email": "Anomalies <anomalies@example.com>"},
                "dashboard_url": "https://airflow.example.com/base/"},
    ))
    assert job.threshold.value == 0.99 and job.monitoring.threshold == 0.3
    assert job.alerts.email.from_email == "Anomalies <anomalies@example.com>"
    assert parse_job(minimal(monitoring={"drift_threshold": 1.5})).monitoring.threshold == 1.5  # psi has no bound


@pytest.mark.parametrize(
    ("fmt", "granularity", "reason"),
    [
        ("%Y-%m-%d", "1h", "1h is shorter than what one value of format '%Y-%m-%d' stands for (a day): its partitions would be "
                           "taken to hold their first 1h only, and windows after that would skip their files; leave granularity "
                           "out (the format's finest field), or give at least 1d"),
        ("%Y-%m", "30d", "(a month, up to 31 days)"),
        ("%Y-%m-%dT%H", "30min", "or give at least 1h"),
    ],
)
def test_a_partition_granularity_shorter_than_its_format_is_refused(fmt, granularity, reason):
    # date=2024-03-01 with granularity 1h held 00:00 to 01:00 only: the rest of the day's rows were never read.
    source = {"kind": "file", "path": "data", "partitioning": {"column": "date", "format": fmt, "granularity": granularity}}
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(source=source), source="jobs/web.yaml")
    line = next(line for line in str(info.value).splitlines() if line.startswith("  source.file.partitioning.granularity:"))
    assert reason in line


@pytest.mark.parametrize(("fmt", "granularity"), [("%Y-%m-%d", "1d"), ("%Y-%m-%d", "7d"), ("%Y-%m-%dT%H-%M", "1d"), ("%Y-%m", "31d")])
def test_a_partition_granularity_of_its_format_or_longer_loads(fmt, granularity):
    source = {"kind": "file", "path": "data", "partitioning": {"column": "date", "format": fmt, "granularity": granularity}}
    assert parse_job(minimal(source=source)).source.partitioning.granularity == parse_duration(granularity)


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"outputs": {"table": {"connection": {"url": "sqlite://"}, "name": "anomaly-rows"}}}, "outputs.table.name",
         "'anomaly-rows' is not a plain SQL name: letters, digits and _, starting with a letter or _, at most 63 characters "
         "(PostgreSQL's limit), e.g. anomalies"),
        ({"outputs": {"table": {"connection": {"url": "sqlite://"}, "name": "metrics.anomalies"}}}, "outputs.table.name",
         "a table's schema is not written before it (outputs.table has its own schema setting)"),
        ({"outputs": {"table": {"connection": {"url": "sqlite://"}, "name": "t", "schema": "1st"}}}, "outputs.table.schema",
         "'1st' is not a plain SQL name"),
        ({"labels": {"table": "labels table"}}, "labels.table", "'labels table' is not a plain SQL name"),
    ],
)
def test_table_names_are_refused_in_words(overrides, field, reason):
    # pydantic's own error showed the regular expression ^[A-Za-z_][A-Za-z0-9_]{0,62}$ and nothing else.
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(**overrides), source="jobs/web.yaml")
    line = next(line for line in str(info.value).splitlines() if line.startswith(f"  {field}:"))
    assert reason in line and "should match pattern" not in line


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"features": ["value", "value"]}, "features"), ({"features": ["ts"]}, "features"), ({"dimensions": ["ts", "host"]}, "dimensions")],
)
def test_a_column_used_twice_is_reported_at_the_list_repeating_it(overrides, field):
    with pytest.raises(ConfigError) as info:
        parse_job(minimal(**overrides), source="jobs/web.yaml")
    assert str(info.value).splitlines()[1].startswith(f"  {field}: columns used twice among timestamp, dimensions and features")
