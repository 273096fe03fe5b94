"""Request and response bodies of the scoring API (they are also its OpenAPI schemas)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from pipelines.config import DEFAULT_CHUNK_ROWS, MAX_CHUNK_ROWS

#: OCI Anomaly Detection's limit for synchronous detection: data points = timestamps x signals.
MAX_DETECT_POINTS = 30_000
#: Largest request body accepted at all (30,000 points as JSON records fit in a few MiB).
MAX_BODY_BYTES = 16 * 1024 * 1024
JOB_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"  # pipelines.config.JOB_NAME
RUN_ID_PATTERN = r"^[A-Za-z0-9_.:+~-]{1,250}$"
#: Any text but NUL: dimension values hold '/' ("endpoint=/checkout", "region=eu/west") and such
#: series were refused by every route that names one. Keys reach files only through
#: pipelines.series.series_slug, which percent-encodes '/' and '\\'; see _not_a_path_step for the rest.
SERIES_PATTERN = r"^[^\x00]{1,500}$"


def _not_a_number(value: Any) -> Any:
    # pydantic reads a number (or digits as text, as query strings come) as Unix seconds: a label
    # "start": 0 was stored as 1970-01-01. The API promises ISO 8601 times with their offset.
    text = value.strip() if isinstance(value, str) else None
    if (isinstance(value, (int, float)) and not isinstance(value, bool)) or (text and text.lstrip("+-").replace(".", "", 1).isdigit()):
        raise ValueError(f"give an ISO 8601 time with its offset, e.g. 2024-03-03T14:00:00Z, not the number {value!r}")
    return value


#: An ISO 8601 time whose offset's '+' became a space: a query string reads '+' as a space.
_LOST_PLUS = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)? (\d\d(?::?\d\d)?)")


def _no_lost_plus(value: Any) -> Any:
    # A time copied into a URL as listed (2024-03-03T14:00:00+00:00) reached the route as
    # "2024-03-03T14:00:00 00:00", refused as having "unexpected extra characters".
    if isinstance(value, str) and (lost := _LOST_PLUS.fullmatch(value.strip())):
        encoded = f"{value.strip()[: lost.start(1) - 1]}%2B{lost.group(1)}"
        raise ValueError(
            f"{value!r} has a space where its offset's '+' was ('+' in a URL's query string reads as a space): "
            f"write it %2B ({encoded}, or curl -G --data-urlencode), or give the time in UTC with Z"
        )
    return value


def _not_a_path_step(value: str) -> str:
    # series_slug keeps dots, so "." and ".." named the job's registry folder or the one above it:
    # GET .../tuning?series=.. read the registry of a job named "tuning", whatever the caller's rights.
    # No series key is either (keys are "all" or hold "=").
    if value in (".", ".."):
        raise ValueError(f"{value!r} is not a series key; series keys look like region=eu ('all' for a job without dimensions)")
    return value


#: A series key as the API takes it, e.g. 'region=eu'.
SeriesKey = Annotated[str, Field(pattern=SERIES_PATTERN), AfterValidator(_not_a_path_step)]

#: A time as the API takes it: ISO 8601 with an offset, never a number of seconds.
IsoTime = Annotated[AwareDatetime, BeforeValidator(_not_a_number), BeforeValidator(_no_lost_plus)]

#: Whole numbers a float64 column holds exactly enough (JSON has no limit: 10**400 parsed, then
#: overflowed deep in the scoring as a 500).
BoundedInt = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
Scalar = StrictStr | BoundedInt | StrictFloat | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectRequest(_Body):
    points: Annotated[list[dict[str, Scalar]], Field(min_length=1)] = Field(
        description=(
            "Rows to score, as JSON records with exactly the job's columns: its timestamp column "
            "(ISO 8601 text; naive times are UTC), its dimension columns (text) and its feature "
            "columns (numbers). A call may hold at most 30,000 data points, counted as rows x "
            "features; more is answered 413: use score-file for larger inputs."
        ),
        examples=[[{"timestamp": "2024-03-03T14:00:00Z", "region": "eu", "requests": 2400, "latency_ms": 120.5}]],
    )


class ErrorBody(BaseModel):
    """Every error answer (4xx, 5xx)."""

    detail: str | list[dict[str, Any]] = Field(
        description="What is wrong and what to do; for a body or parameter of the wrong shape, "
        "FastAPI's list of errors, each with its location (loc), message (msg) and type."
    )


class OutputRow(BaseModel):
    """One row of the output schema (pipelines/schema.py), plus the job's dimension columns (text)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": {"type": ["string", "null"]}})

    job: str
    series: str
    timestamp: datetime
    feature: str
    value: float | None
    expected: float | None
    lower: float | None
    upper: float | None
    score: float | None
    feature_score: float | None
    is_anomaly: bool
    model: str
    model_version: str
    run_id: str
    interval_start: datetime
    interval_end: datetime
    scored_at: datetime


class SeriesSummary(BaseModel):
    series: str
    model_version: str
    points: int
    anomalies: int = Field(description="Anomalous timestamps of this series.")
    resampling: dict[str, int] = Field(
        description="What putting the series on the job's frequency grid did: rows, buckets, merged_rows, moved_rows, filled, missing."
    )


class DetectResponse(BaseModel):
    job: str
    run_id: str = Field(description="Identifies this call in the results' run_id column and the server logs.")
    points: int = Field(
        description="Data points scored: buckets of the job's grid x features, one result row each (the points sent, when on the grid)."
    )
    anomalies: int = Field(description="Anomalous (series, timestamp) pairs.")
    series: list[SeriesSummary]
    results: list[OutputRow]


class ChampionInfo(BaseModel):
    series: str
    version: str
    trained_at: str | None
    model: str | None
    chosen: str | None = Field(None, description="For model 'auto': the detector it chose for this series.")
    choice_reason: str | None = Field(None, description="For model 'auto': why it chose that detector.")
    training_window: dict[str, str] | None = Field(description="The [start, end) the version was trained on.")
    rows: int | None = Field(description="Training rows.")
    params: dict[str, Any]
    threshold: Any
    metrics: dict[str, Any] = Field(
        description="Hold-out errors (challenger and champion, on the compared rows), `compared_rows`, "
        "`compared_out_of_sample` (the champion was trained on none of them) and the training anomaly rate."
    )
    decision: dict[str, Any] | None = Field(description="Whether and why this version was promoted.")
    features: list[str]
    metadata: dict[str, Any] = Field(description="The whole metadata.json of the version.")


class ModelInfo(BaseModel):
    job: str
    model: str = Field(description="The job's detector kind.")
    features: list[str]
    dimensions: list[str]
    page: int = Field(description="This page of the series with models, by key, from 1 (1 with `series`).")
    pages: int = Field(description="Pages the series with models fill (1 with `series`).")
    total: int = Field(description="Series with models (1 with `series`).")
    page_size: int = Field(description="Series a page holds.")
    next_page: int | None = Field(description="The `page` to ask for next; null after the last page.")
    champions: list[ChampionInfo] = Field(
        description="The champions of this page's series; a series whose champion cannot be read is left out."
    )


class TuningStretch(BaseModel):
    stretch: int = Field(description="1 is the held-back rows, 2 the stretch before them, and so on.")
    held_back_rows: int | None
    held_back_start: str | None
    challenger_objective: float | None
    champion_objective: float | None
    gain: float | None = Field(description="The challenger's mean lead in objective over the plantings.")
    p_value: float | None = Field(description="One-sided paired t-test of the lead; null with one planting (labels).")
    clearly_better: bool | None
    verdict: str | None


class TuningRun(BaseModel):
    tuned_at: str | None
    run_id: str | None
    rows: int | None = Field(description="Rows of the training window tuned on.")
    objective: str | None = Field(description="'unlabeled' (planted anomalies) or 'labeled' (people's verdicts).")
    objective_reason: str | None
    trials: int
    best: dict[str, Any] = Field(description="The challenger: the best trial's kind, params, objective and event F1.")
    promoted: bool
    reason: str | None = Field(description="Why the challenger was or was not promoted.")
    version: str | None = Field(description="The version registered when promoted.")
    stretches: list[TuningStretch] = Field(description="The challenger against the champion on each held-back stretch compared.")
    seconds: float | None


class SeriesTuning(BaseModel):
    series: str
    runs: list[TuningRun] = Field(description="Newest first.")


class TuningHistory(BaseModel):
    job: str
    series: list[SeriesTuning]


class ScoreFileRequest(_Body):
    input: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        description=(
            "The file to score: a path relative to the project folder (no '..' out of it, no absolute "
            "path elsewhere) or an s3:// or gs:// URL."
        ),
        examples=["data/demo/web_metrics.csv"],
    )
    output: Annotated[str, Field(min_length=1, max_length=2048)] | None = Field(
        None,
        description=(
            "Parquet file to write (ending .parquet): a path under the project's var/ folder or an "
            "s3:// or gs:// URL. Default: _one_off/ beside the job's dataset."
        ),
    )
    chunk_rows: Annotated[int, Field(ge=1000, le=MAX_CHUNK_ROWS)] | None = Field(
        None, description=f"Rows per scoring chunk (default {DEFAULT_CHUNK_ROWS:,})."
    )


class ScoreFileRun(BaseModel):
    job: str
    dag_id: str
    run_id: str
    state: str = Field(description="Airflow's state of the DAG run: queued, running, success or failed.")
    input: str
    output: str = Field(description="Where the scored Parquet file is (or will be) written.")
    start_date: datetime | None = None
    end_date: datetime | None = None
    warning: str | None = Field(None, description="Something the caller should know, e.g. the DAG is paused.")
    failed_tasks: list[str] = Field(
        [], description="A failed run's failed tasks, e.g. 'score[0]' (the first chunk's scoring); empty otherwise."
    )
    error: str | None = Field(
        None,
        description="Why a failed run failed (the exception its failed task logged, when Airflow's log holds it), "
        "and that it wrote nothing to `output`: a file there is another run's. null unless the run failed.",
    )
    status_url: str = Field(description="Where to ask for the run's state (GET; the 202's Location header too).")


LabelValue = Annotated[StrictFloat, Field(allow_inf_nan=False)] | BoundedInt


class LabelRequest(_Body):
    series: SeriesKey = Field(
        description="The series of the event, e.g. 'region=eu' ('all' for a job without dimensions).", examples=["region=eu"]
    )
    start: IsoTime = Field(description="First anomalous timestamp of the event (ISO 8601 with offset; inclusive).")
    end: IsoTime = Field(description="Last anomalous timestamp of the event (inclusive).")
    verdict: StrictBool = Field(description="true: a real anomaly; false: a false alarm.")
    feature: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None, description="One feature of the series; omitted: the verdict is on the whole series."
    )
    note: Annotated[str, Field(max_length=2000)] = Field("", description="Why, in a few words.")
    value_min: LabelValue | None = Field(
        None, description="Least actual value of the event's rows; with value_max, when the output does not hold the event."
    )
    value_max: LabelValue | None = Field(None, description="Greatest actual value of the event's rows.")


class LabelInfo(BaseModel):
    """A stored verdict (pipelines.labels.Label)."""

    job: str
    series: str
    feature: str | None = Field(description="null: the verdict is on the whole series.")
    start: datetime
    end: datetime
    verdict: bool = Field(description="true: a real anomaly; false: a false alarm.")
    value_min: float | None = Field(description="Range of the actual values of the event's rows (over all features).")
    value_max: float | None
    value_ranges: dict[str, list[float]] | None = Field(
        None,
        description=(
            "Whole-series verdicts: the range [min, max] of each feature's values in the event (a feature "
            "without flagged rows there has none); a repeat is matched against its feature's range. null "
            "on a feature's verdict and on whole-series verdicts stored before ranges were kept per feature."
        ),
    )
    note: str
    author: str = Field(description="The Airflow user who gave the verdict (or the importer).")
    created_at: datetime = Field(description="When this verdict was given (a later one on the same event replaces it).")


class LabelAdded(LabelInfo):
    """The verdict just stored (the answer of POST labels), and the labels that outrank it."""

    overruled_by: list[LabelInfo] | None = Field(
        description=(
            "Stored labels with the other verdict that still hold somewhere in this one's span, on a feature it "
            "judges, by the one rule training, tuning and alerts read labels with (a feature's label outranks a "
            "whole-series one, then the later written wins): there this verdict changed nothing. Empty: it holds "
            "over its whole span. To make it hold there, post it again with that label's feature (it is then the "
            "later word), or withdraw that label. null: the labels could not be read back (the verdict is stored)."
        ),
    )


class LabelList(BaseModel):
    job: str
    labels: list[LabelInfo]


class EventSignal(BaseModel):
    """One feature of the series at the event's peak."""

    feature: str
    actual: float | None
    expected: float | None
    lower: float | None
    upper: float | None
    feature_score: float | None
    is_anomaly: bool


class EventInfo(BaseModel):
    """An anomaly event of the published output (pipelines.events.AnomalyEvent) and its current label."""

    series: str
    start: datetime = Field(description="First anomalous timestamp (inclusive).")
    end: datetime = Field(description="Last anomalous timestamp (inclusive).")
    rows: int = Field(description="Anomalous timestamps in the event.")
    peak_score: float
    peak_timestamp: datetime
    direction: str = Field(description="rise (actual above expected) or fall.")
    model_version: str
    top_features: list[str] = Field(description="Features by their contribution to the event.")
    at_peak: list[EventSignal]
    cut_at_start: bool = Field(
        description="The event goes on before `start`, further back than the listing reads beyond its window (10,000 periods)."
    )
    cut_at_end: bool = Field(description="The event goes on after `end`, further than the listing reads beyond its window.")
    label: LabelInfo | None = Field(description="The verdict on this event (same span, else the latest overlapping one), or null.")


class EventList(BaseModel):
    job: str
    total: int = Field(description="Events in the window; at most `limit` of them, newest first, are listed.")
    events: list[EventInfo]
