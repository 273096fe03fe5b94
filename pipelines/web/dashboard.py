"""The Anomalies dashboard: HTML pages and the JSON their charts load, under ``/dashboard``.

Served by the plugin's app (``create_app`` includes :data:`router`) inside Airflow's api-server,
so the pages open same-origin in the Airflow UI's iframes ("Anomalies" in the navigation and the
"Anomalies" tab of DAG runs) and the UI's session cookie authenticates them. Every route depends
on :func:`pipelines.web.auth.require_user`, and a job is shown only to users who may read its
DAGs. Pages are rendered on the server (Jinja2); the charts are drawn by uPlot (vendored in
``static/vendor``, no CDN) from the data endpoints, which aggregate on the server
(:mod:`pipelines.web.dashboard_data`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from pipelines import paging
from pipelines.config import JobConfig
from pipelines.errors import ConfigError, PipelineError, StorageError
from pipelines.web import dashboard_data as data
from pipelines.web.api import _BoundedJsonRoute
from pipelines.web.auth import (
    BaseUser,
    CurrentUser,
    authorize_job,
    is_job_authorized,
    job_scan,
    require_user,
    served_job,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "/dashboard"
HERE = Path(__file__).resolve().parent
#: Charts drawn on the job page when no series is chosen: the series with the most anomalies.
DEFAULT_CHARTS = 4
#: Most series charted at once (each chart is one request).
MAX_CHARTS = 12
#: Anomaly events listed on the job page, strongest first (the data endpoint gives up to 500).
PAGE_EVENTS = 100
#: Rows of the job page's series table, most anomalous first (the selector's search finds the
#: others): a job of 10,000 series made a 4 MB page that took seconds to draw.
PAGE_SERIES = 500
#: Options of the job page's series selector: the chosen series, then the most anomalous others.
#: Its search box finds the rest through the series data endpoint: an option per series made a
#: job of 10,000 series a 1 MB page.
SELECTOR_SERIES = 50
#: Series the series data endpoint answers by default (``?limit=``, at most MAX_SERIES_LIMIT;
#: ``?offset=`` for the next ones): every series at once was megabytes for a job of 10,000.
SERIES_LIMIT = 500
MAX_SERIES_LIMIT = 5_000
#: Series the selector's search box suggests at once.
SEARCH_SERIES = 20

templates = Jinja2Templates(directory=HERE / "templates")
_static = StaticFiles(directory=HERE / "static")

router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_user)], include_in_schema=False)

SeriesParam = Annotated[list[str], Query(description="series keys, e.g. region=eu; repeat for several")]
StartParam = Annotated[str | None, Query(description="ISO 8601 start (inclusive); naive times are UTC")]
EndParam = Annotated[str | None, Query(description="ISO 8601 end (exclusive); naive times are UTC")]
# Text, not a float: a form's empty field sends min_score= , which means no least score (Filters.parse).
ScoreParam = Annotated[str | None, Query(description="least score of the anomalies shown, in [0, 1]")]
FeatureParam = Annotated[list[str], Query(description="features shown, e.g. requests; repeat for several; none: all")]
OnlyAnomaliesParam = Annotated[
    str | None, Query(description="true: only the series with at least one anomaly in the range (true or false)")
]
# Text, not an int: FastAPI's 422 for ?page=abc was JSON, not the error page a person should see.
PageParam = Annotated[str | None, Query(description=f"page of {paging.PAGE_SERIES} series, by key, from 1")]
#: Largest page number taken (a bound, so that no absurd number is multiplied out).
MAX_PAGE = 1_000_000


def _page_number(page: str | None) -> int:
    """The page of ``?page=`` (1 when not given); 400 saying what is allowed when it is no page number."""
    text = (page or "").strip()
    if not text:
        return 1
    # The length first: int() refuses (ValueError) numbers of over 4,300 digits.
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_PAGE)) or not 1 <= int(text) <= MAX_PAGE:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"page must be a whole number from 1 to {MAX_PAGE:,}, got {page!r}"
        )
    return int(text)


def _models_page(job: JobConfig, page: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The models of the series on ``page`` (:func:`pipelines.paging.page_of`), and where it is."""
    shown, where = paging.page_of(_call(f"job {job.name!r}: models", data.model_series, job), page)
    return _call(f"job {job.name!r}: models", data.models, job, shown), where


def _status(exc: PipelineError) -> int:
    if isinstance(exc, ConfigError):
        return status.HTTP_400_BAD_REQUEST
    # A store that does not answer is worth a retry, as the API says of it (pipelines.web.app).
    if isinstance(exc, StorageError):
        return status.HTTP_503_SERVICE_UNAVAILABLE
    return status.HTTP_500_INTERNAL_SERVER_ERROR


def _jobs() -> dict[str, JobConfig]:
    # The valid jobs: one broken job file does not hide the others (job_scan logs its error, once).
    return job_scan().jobs


def _job(name: str, user: BaseUser) -> JobConfig:
    return served_job(user, name, "GET")


def _filters(
    series: list[str],
    start: str | None,
    end: str | None,
    min_score: str | None,
    features: list[str] | None = None,
    only_anomalies: str | None = None,
    job: JobConfig | None = None,
) -> data.Filters:
    """Filters from query parameters (400 naming the bad value and what is allowed); with ``job``,
    checked against it too (its features): only after the user was allowed to see the job."""
    try:
        filters = data.Filters.parse(series, start or None, end or None, min_score, features or (), only_anomalies)
    except ConfigError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
    return filters if job is None else _for_job(filters, job)


def _for_job(filters: data.Filters, job: JobConfig) -> data.Filters:
    try:
        return filters.for_job(job)
    except ConfigError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc


def _query_filters(
    series: SeriesParam = [],  # noqa: B006 - FastAPI copies query defaults
    start: StartParam = None,
    end: EndParam = None,
    min_score: ScoreParam = None,
    feature: FeatureParam = [],  # noqa: B006
    only_anomalies: OnlyAnomaliesParam = None,
) -> data.Filters:
    """The filters of a page or data request, from its query string (400 when one is invalid).

    The features are checked against the job by the route (:func:`_for_job`), after its permission check.
    """
    return _filters(series, start, end, min_score, feature, only_anomalies)


QueryFilters = Annotated[data.Filters, Depends(_query_filters)]


def _call(what: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args)``, with the library's errors turned into HTTP errors that say what to do."""
    try:
        return func(*args, **kwargs)
    except PipelineError as exc:
        log.warning("dashboard: %s failed: %s", what, exc)
        raise HTTPException(_status(exc), detail=f"{what}: {exc}") from exc


def _base(request: Request) -> str:
    # Inside Airflow the app is mounted under the plugin's url_prefix (the ASGI root_path).
    return request.scope.get("root_path", "").rstrip("/") + PREFIX


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"base": _base(request), **context})


def _error_page(request: Request, exc: HTTPException) -> HTMLResponse:
    response = _page(request, "error.html", status_code=exc.status_code, detail=exc.detail)
    response.status_code = exc.status_code
    return response


# -- static files ---------------------------------------------------------------------------------


@router.get("/static/{path:path}", name="dashboard_static")
async def static(path: str, request: Request) -> Response:
    """The dashboard's CSS, JS and vendored libraries (Starlette's StaticFiles resolves the path safely)."""
    return await _static.get_response(path, request.scope)


# -- pages ----------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request, user: CurrentUser) -> HTMLResponse:
    """All jobs at a glance."""
    try:
        jobs = [job for name, job in _jobs().items() if is_job_authorized(user, name, "GET")]
        rows = _call("the jobs overview", data.overview, jobs)
    except HTTPException as exc:
        return _error_page(request, exc)
    return _page(request, "jobs.html", rows=rows)


@router.get("/jobs/{job_name}", response_class=HTMLResponse)
def job_page(
    request: Request,
    job_name: str,
    user: CurrentUser,
    series: SeriesParam = [],  # noqa: B006 - FastAPI copies query defaults
    start: StartParam = None,
    end: EndParam = None,
    min_score: ScoreParam = None,
    feature: FeatureParam = [],  # noqa: B006
    only_anomalies: OnlyAnomaliesParam = None,
) -> HTMLResponse:
    """One job: its series, a chart per series and feature, the anomaly events; filters on top."""
    # Parsed here, not by the QueryFilters dependency: a bad filter is shown as a page, not JSON.
    try:
        job = _job(job_name, user)
        filters = _filters(series, start, end, min_score, feature, only_anomalies, job=job)
        return _job_view(request, job, filters)
    except HTTPException as exc:
        return _error_page(request, exc)


def _verdicts(job: JobConfig, events: list[dict[str, Any]]) -> dict[tuple[str, str], bool]:
    """The verdict people gave on each listed anomalous point, by the rule alerts and training read
    labels with (:func:`pipelines.labels.label_verdicts`: the most specific label, then the latest):
    a true anomaly when a label decides True on one of the point's signals (its anomalous features
    listed), else a false alarm when one decides False, as :func:`pipelines.labels.label_of` shows
    an event's.

    A page without verdicts is still useful: a labels database that cannot be read is logged,
    not shown as an error page.
    """
    from pipelines.labels import label_store, label_verdicts
    from pipelines.workspace import to_utc

    if not events:
        return {}
    times = {(event["series"], event["timestamp"]): to_utc(event["timestamp"]) for event in events}
    try:
        labels = label_store(job).labels(job.name, None, min(times.values()), max(times.values()))
    except PipelineError as exc:
        log.warning("dashboard: job %r: cannot read its labels: %s", job.name, exc)
        return {}
    found: dict[tuple[str, str], bool] = {}
    for series in {event["series"] for event in events}:
        own = [label for label in labels if label.series == series]
        if not own:
            continue
        points = [event for event in events if event["series"] == series]
        features = sorted({signal["feature"] for event in points for signal in event["signals"]})
        index = pd.DatetimeIndex([times[(series, event["timestamp"])] for event in points])
        values = label_verdicts(index, features, own).values
        for row, event in enumerate(points):
            shown = values[row, [features.index(signal["feature"]) for signal in event["signals"]]]
            if (shown == 1.0).any():
                found[(series, event["timestamp"])] = True
            elif (shown == 0.0).any():
                found[(series, event["timestamp"])] = False
    return found


def _listed(shown: list[dict[str, Any]], chosen: set[str]) -> list[dict[str, Any]]:
    """The rows of the series table, in ``shown``'s order: the chosen series, then as many of the others
    as fit in PAGE_SERIES. A series chosen in the filters, as the page tells people to do to see one
    past the first PAGE_SERIES, was still left out of the table."""
    picked = [row for row in shown if row["series"] in chosen][:PAGE_SERIES]
    others = [row for row in shown if row["series"] not in chosen][: PAGE_SERIES - len(picked)]
    kept = {row["series"] for row in picked + others}
    return [row for row in shown if row["series"] in kept]


def _choices(summary: list[dict[str, Any]], chosen: tuple[str, ...]) -> list[dict[str, Any]]:
    """The options of the series selector, most anomalous first: the chosen series (kept selected
    when the form is applied again), then as many others as fit in SELECTOR_SERIES."""
    picked = [row for row in summary if row["series"] in chosen]
    others = [row for row in summary if row["series"] not in chosen][: max(0, SELECTOR_SERIES - len(picked))]
    kept = {row["series"] for row in picked + others}
    return [row for row in summary if row["series"] in kept]


def _form_time(moment: datetime | None, seconds: bool) -> tuple[str, str | None]:
    """A UTC time as the value of a ``datetime-local`` input, and the input's ``step``.

    Minutes only (the input's default step of 60 s) unless the job's points are less than a minute
    apart (``seconds``) or the time has seconds: a URL's ``start=...T14:00:30`` was cut to 14:00,
    so applying the form moved the filter. A fraction keeps its milliseconds (the input's finest).
    """
    if moment is None:
        return "", None
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23], "0.001"
    if seconds or moment.second:
        return moment.strftime("%Y-%m-%dT%H:%M:%S"), "1"
    return moment.strftime("%Y-%m-%dT%H:%M"), None


def _job_view(request: Request, job: JobConfig, filters: data.Filters, run: dict[str, Any] | None = None) -> HTMLResponse:
    # Every series, for the series selector; the table and the charts show what the filters keep.
    summary = _call(
        f"job {job.name!r}: series summary", data.series_summary, job, replace(filters, series=(), only_anomalies=False)
    )
    shown = data.shown_series(summary, filters)
    events = _call(f"job {job.name!r}: anomaly events", data.anomaly_events, job, filters, PAGE_EVENTS)
    verdicts = _verdicts(job, events["events"])
    known = {row["series"] for row in summary}
    unknown = [s for s in filters.series if s not in known]
    chartable = [row["series"] for row in shown]
    if filters.series:
        charted = [s for s in filters.series if s in chartable][:MAX_CHARTS]
    else:
        charted = chartable[:DEFAULT_CHARTS]

    def link(**changes: Any) -> str:
        """The query string of this page with some filters changed (for links in the tables)."""
        params: dict[str, Any] = {
            "series": list(filters.series),
            "start": "" if run else (filters.start.isoformat() if filters.start else ""),
            "end": "" if run else (filters.end.isoformat() if filters.end else ""),
            "min_score": filters.min_score or "",
            "feature": list(filters.features),
            "only_anomalies": "true" if filters.only_anomalies else "",
            **changes,
        }
        pairs = [(k, v) for k, values in params.items() for v in (values if isinstance(values, list) else [values]) if v != ""]
        return urlencode(pairs)

    return _page(
        request,
        "job.html",
        job=job,
        filters=filters,
        summary=summary,
        shown=shown,
        listed=_listed(shown, set(filters.series)),
        choices=_choices(summary, filters.series),
        search_url=f"{_base(request)}/data/jobs/{job.name}/series?"
        + urlencode(
            # The range of the page (a run's window too): the series found are those the selector would list.
            [(k, moment.isoformat()) for k, moment in (("start", filters.start), ("end", filters.end)) if moment]
            + [("min_score", filters.min_score)]
            + [("feature", f) for f in filters.features]
            + [("limit", SEARCH_SERIES)]
        ),
        selected=set(filters.series),
        charted=charted,
        unknown=unknown,
        events=events,
        verdicts=verdicts,
        labels_url=f"{request.scope.get('root_path', '').rstrip('/')}/api/v1/jobs/{job.name}/labels",
        run=run,
        multivariate=len(job.features) > 1,
        link=link,
        # Points less than a minute apart: times show their seconds (two anomalies 30 s apart
        # showed the same minute).
        seconds=job.frequency < timedelta(minutes=1),
        form_time=_form_time,
    )


@router.get("/jobs/{job_name}/models", response_class=HTMLResponse)
def models_page(request: Request, job_name: str, user: CurrentUser, page: PageParam = None) -> HTMLResponse:
    """The model versions of the series, a page (paging.PAGE_SERIES) at a time, their metrics, the champion marked."""
    try:
        job = _job(job_name, user)
        models, where = _models_page(job, _page_number(page))
        return _page(request, "models.html", job=job, models=models, **where)
    except HTTPException as exc:
        return _error_page(request, exc)


@router.get("/jobs/{job_name}/validation", response_class=HTMLResponse)
def validation_page(request: Request, job_name: str, user: CurrentUser) -> HTMLResponse:
    """The last validation results, failures explained."""
    try:
        job = _job(job_name, user)
        results = _call(f"job {job_name!r}: validation results", data.validation_results, job)
        return _page(request, "validation.html", job=job, results=results)
    except HTTPException as exc:
        return _error_page(request, exc)


@router.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    dag_id: str,
    run_id: str,
    user: CurrentUser,
    series: SeriesParam = [],  # noqa: B006 - FastAPI copies query defaults
    min_score: ScoreParam = None,
    feature: FeatureParam = [],  # noqa: B006
    only_anomalies: OnlyAnomaliesParam = None,
) -> HTMLResponse:
    """The "Anomalies" tab of a DAG run: what a predict run scored and found."""
    try:
        name, _, kind = dag_id.rpartition("__")
        if name and kind in data.DAG_KINDS:
            # Before the job is looked up, as for the other pages: a job's existence is not told.
            authorize_job(user, name, "GET")
        found = data.job_dag_kind(dag_id, _jobs())
        if found is None:
            return _page(request, "run.html", dag_id=dag_id, run_id=run_id, job=None, kind=None, run=None)
        job, kind = found
        if kind != "predict":
            return _page(request, "run.html", dag_id=dag_id, run_id=run_id, job=job, kind=kind, run=None)
        run = _call(f"job {job.name!r}: run {run_id}", data.run_summary, job, run_id)
        if run is None:
            return _page(request, "run.html", dag_id=dag_id, run_id=run_id, job=job, kind=kind, run=None)
        filters = _filters(series, run["window"]["start"], run["window"]["end"], min_score, feature, only_anomalies, job=job)
        return _job_view(request, job, filters, run={**run, "dag_id": dag_id})
    except HTTPException as exc:
        return _error_page(request, exc)


# -- data -----------------------------------------------------------------------------------------

# The JSON the pages load, read by scripts too: a query parameter an endpoint does not take is
# refused (422 naming it and those it takes), as by the API: ?serie=region=eu answered every series
# and ?lmit=5 all of them, as if the parameter had been read. (Not the pages: what a person's URL
# or Airflow's iframe adds must not make them an error.)
_data = APIRouter(prefix="/data", route_class=_BoundedJsonRoute, include_in_schema=False)


@_data.get("/jobs")
def jobs_data(user: CurrentUser) -> JSONResponse:
    jobs = [job for name, job in _jobs().items() if is_job_authorized(user, name, "GET")]
    return JSONResponse(_call("the jobs overview", data.overview, jobs))


@_data.get("/jobs/{job_name}/series")
def series_data(
    job_name: str,
    user: CurrentUser,
    filters: QueryFilters,
    limit: Annotated[
        int,
        Query(
            ge=1, le=MAX_SERIES_LIMIT, description=f"most series answered (default {SERIES_LIMIT}, at most {MAX_SERIES_LIMIT})"
        ),
    ] = SERIES_LIMIT,
    offset: Annotated[
        int, Query(ge=0, le=10**9, description="series skipped, in the answer's order: next_offset of the last answer")
    ] = 0,
    q: Annotated[str, Query(max_length=500, description="only the series whose key holds this text (any case)")] = "",
) -> JSONResponse:
    """The series summary, most anomalous first, ``limit`` at a time from ``offset``: ``total`` says how
    many match, ``next_offset`` where the next ones start (null after the last)."""
    job = _job(job_name, user)
    filters = _for_job(filters, job)
    rows = _call(f"job {job_name!r}: series summary", data.series_summary, job, filters)
    if needle := q.strip().casefold():
        rows = [row for row in rows if needle in row["series"].casefold()]
    page = rows[offset : offset + limit]
    after = offset + len(page)
    return JSONResponse(
        {
            "job": job_name,
            "filters": filters.to_dict(),
            "q": q.strip(),
            "total": len(rows),
            "offset": offset,
            "limit": limit,
            "next_offset": after if after < len(rows) else None,
            "series": page,
        }
    )


@_data.get("/jobs/{job_name}/chart")
def chart_data(
    job_name: str,
    user: CurrentUser,
    series: Annotated[str, Query(description="the series key, e.g. region=eu")],
    start: StartParam = None,
    end: EndParam = None,
    min_score: ScoreParam = None,
    feature: FeatureParam = [],  # noqa: B006
    buckets: Annotated[int, Query(ge=1, le=data.MAX_BUCKETS)] = data.DEFAULT_BUCKETS,
) -> JSONResponse:
    # No only_anomalies: which series are charted is the page's choice (the series endpoint's
    # rule); a chart shows the series asked for, zoomed into any range.
    job = _job(job_name, user)
    filters = _filters([series], start, end, min_score, feature, job=job)
    return JSONResponse(_call(f"job {job_name!r}, series {series!r}: chart", data.chart, job, series, filters, buckets))


@_data.get("/jobs/{job_name}/anomalies")
def anomalies_data(
    job_name: str,
    user: CurrentUser,
    filters: QueryFilters,
    limit: Annotated[int, Query(ge=1, le=data.MAX_EVENTS)] = data.MAX_EVENTS,
) -> JSONResponse:
    job = _job(job_name, user)
    filters = _for_job(filters, job)
    return JSONResponse(_call(f"job {job_name!r}: anomaly events", data.anomaly_events, job, filters, limit))


@_data.get("/jobs/{job_name}/models")
def models_data(job_name: str, user: CurrentUser, page: PageParam = None) -> JSONResponse:
    """The models of one page of series as on the models page (the first without ``page``), where
    it is (``page``, ``pages``, ``total``, ``page_size``) and ``next_page`` (null after the last)."""
    # Without ?page it read every series: a job of 100,000 trained series, every version and tune
    # record of each, in one answer.
    job = _job(job_name, user)
    models, where = _models_page(job, _page_number(page))
    return JSONResponse({"job": job_name, **{k: v for k, v in where.items() if k != "first"}, "series": models})


@_data.get("/jobs/{job_name}/validation")
def validation_data(job_name: str, user: CurrentUser) -> JSONResponse:
    job = _job(job_name, user)
    return JSONResponse({"job": job_name, "results": _call(f"job {job_name!r}: validation", data.validation_results, job)})


router.include_router(_data)  # after its routes: including copies them
