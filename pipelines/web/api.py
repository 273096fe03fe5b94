"""The scoring API: synchronous detection, champion metadata and one-off scoring runs of files.

Routes are thin: the work is done by :mod:`pipelines.web.detect`, the model registry and
Airflow's own REST API (one-off runs are started with the caller's token, so Airflow's
permissions apply to them as to any trigger).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import uuid
import weakref
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from fastapi.routing import APIRoute

from pipelines.paging import PAGE_SERIES, page_of
from pipelines.web.auth import SESSION_COOKIE, CurrentUser, authenticate, job_scan, served_job
from pipelines.web.schemas import (
    JOB_NAME_PATTERN,
    MAX_DETECT_POINTS,
    RUN_ID_PATTERN,
    ChampionInfo,
    DetectRequest,
    DetectResponse,
    ErrorBody,
    EventInfo,
    EventList,
    EventSignal,
    IsoTime,
    LabelAdded,
    LabelInfo,
    LabelList,
    LabelRequest,
    ModelInfo,
    ScoreFileRequest,
    ScoreFileRun,
    SeriesKey,
    SeriesTuning,
    TuningHistory,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable, Iterator

    import pandas as pd

    from pipelines.config import JobConfig
    from pipelines.events import AnomalyEvent
    from pipelines.labels import Label, LabelStore

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: Where Airflow's REST API is, when it is not the server this request came through.
AIRFLOW_URL_ENV = "ANOMALY_PIPELINES_AIRFLOW_URL"
REMOTE_SCHEMES = ("s3://", "gs://")
AIRFLOW_TIMEOUT = 30.0

#: JSON values any body may hold unchecked: parsed, that many cost a few MiB whatever they are.
_CHEAP_VALUES = MAX_DETECT_POINTS
#: A JSON string, or what is counted as a value: a comma (before each one but the first of an array or
#: object) or an opening bracket (an array or object).
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[,{\[]')


def _json_values_over(body: bytes, most: int) -> bool:
    """Whether the JSON text ``body`` holds more than ``most`` values, counted without parsing it:
    commas and opening brackets, first anywhere (C speed), then, when that is too many, only those
    outside strings, token by token up to ``most`` (a regex substitution over millions of strings
    held as many MiB as the parsing it is meant to spare)."""
    if body.count(b",") + body.count(b"{") + body.count(b"[") <= most:
        return False
    count = 0
    for token in _JSON_TOKEN.finditer(body):
        if token.end() - token.start() == 1:  # a string is at least its two quotes
            count += 1
            if count > most:
                return True
    return False


def _detect_values(config: JobConfig) -> int:
    """The values of the largest detect body ``config`` takes: its rows, objects of the job's columns."""
    rows = MAX_DETECT_POINTS // len(config.features)
    return rows * (len(config.columns) + 1) + 2


def _may_be_parsed(request: Request) -> bool:
    """Whether FastAPI may parse the body as JSON: its Content-Type says so, or it has none (a
    route with ``strict_content_type=False`` parses that too)."""
    if not (content_type := request.headers.get("content-type")):
        return True
    kind, _, rest = content_type.partition("/")
    subtype = rest.split(";", 1)[0].strip().lower()
    return kind.strip().lower() == "application" and (subtype == "json" or subtype.endswith("+json"))


class _BoundedJsonRoute(APIRoute):
    """A route that refuses (413) a JSON body holding far more values than it takes, before FastAPI parses it.

    Python's JSON reader makes an object of every value and pydantic copies them, all before the
    route can count the points: 16 MiB of empty records (``{}``, 3 bytes each) took ~850 MB of the
    api-server to be answered "too many points", and a few such calls at once could take it down.
    A detect body may hold twice its job's largest call, so that a call a little too large still
    gets the route's own 413, which counts its rows and data points.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        from fastapi.dependencies.utils import get_flat_dependant

        handle = super().get_route_handler()
        # The query parameters the operation takes: fixed by its signature, so listed once here.
        taken = [param.alias for param in get_flat_dependant(self.dependant).query_params]

        async def bounded(request: Request) -> Response:
            self._check_query_names(request, taken)
            if self.body_field is not None and _may_be_parsed(request):
                await self._check_values(request)
                if request.headers.get("content-type"):  # without one FastAPI answers 415 unparsed
                    await self._parse_once(request)
            return await handle(request)

        return bounded

    def _check_query_names(self, request: Request, taken: list[str]) -> None:
        """Refuse (422, as FastAPI refuses a bad value: the app's handler checks the login first) a query
        parameter other than those the operation takes (``taken``): ``?serie=region=eu`` listed the
        events of every series, ``?lmit=5`` all 200 of them, as if the parameter had been read."""
        from fastapi.exceptions import RequestValidationError

        unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in taken]
        if unknown:
            allowed = f"it takes {', '.join(taken)}" if taken else "it takes none"
            raise RequestValidationError(
                [
                    {
                        "type": "extra_forbidden",
                        "loc": ("query", name),
                        "msg": f"unknown query parameter {name[:60]!r} of {request.method} {self.path_format}: {allowed}",
                        "input": request.query_params.get(name, "")[:200],
                    }
                    for name in unknown[:5]
                ]
            )

    async def _parse_once(self, request: Request) -> None:
        """Parse the body, refusing (422) an object that names a key twice, and keep the result for FastAPI.

        Python's JSON reader keeps the last of repeated keys: a point holding two timestamps was
        scored at the second, and the caller never learnt the first was dropped.
        """
        body = await request.body()
        if not body:
            return
        repeated: list[str] = []

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            obj = dict(items)
            if len(obj) < len(items):
                seen: set[str] = set()
                for key, _ in items:
                    if key in seen:
                        repeated.append(key)
                    seen.add(key)
            return obj

        try:
            parsed = json.loads(body, object_pairs_hook=pairs)
        except UnicodeDecodeError as exc:
            # FastAPI answered it 400 "There was an error parsing the body", saying neither where nor what.
            await authenticate(request)
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                detail=f"the request body is not UTF-8 text (byte {exc.start:,} is not): send the JSON encoded as UTF-8",
            ) from None
        except ValueError:  # not JSON: FastAPI's own reading answers it (422 naming where)
            return
        if repeated:
            await authenticate(request)  # an anonymous caller learns only that a login is needed
            names = sorted(set(repeated))
            shown = ", ".join(repr(name[:60]) for name in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"the request body repeats a key within one JSON object: {shown} ({len(repeated):,} repeats in all). "
                "Only one value of a key would be read, and which was meant is unknown: send each key once per object.",
            )
        # Starlette's cache of Request.json(): FastAPI reads the body from it instead of parsing it again.
        request._json = parsed

    async def _check_values(self, request: Request) -> None:
        from pipelines.config import scan_jobs

        body = await request.body()  # kept by the request for FastAPI's own reading
        if not _json_values_over(body, _CHEAP_VALUES):
            return
        job = request.path_params.get("job", "")
        detect = self.name == "detect"
        scan = scan_jobs() if detect else None  # job_scan() would log broken job files a second time
        config = scan.jobs.get(job) if scan is not None else None
        most = 2 * _detect_values(config) if config is not None else _CHEAP_VALUES
        if not _json_values_over(body, most):
            return
        # An anonymous caller, or one who may not use the job, learns no more than the route would tell.
        user = await authenticate(request)
        if detect:
            config = served_job(user, job, "POST", scan)
            allowed = (
                f"{MAX_DETECT_POINTS:,} data points of job {job} are at most {MAX_DETECT_POINTS // len(config.features):,} "
                f"rows of its {len(config.columns)} columns ({_detect_values(config):,} values)"
            )
            advice = (
                "split the points into smaller calls, or score the whole file with a one-off scoring run: "
                f"POST {API_PREFIX}/jobs/{job}/score-file"
            )
        else:
            allowed = "this operation takes a few"
            advice = "send only the documented fields"
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"the request body holds more than {most:,} JSON values; {allowed}: {advice}.",
        )


router = APIRouter(prefix=API_PREFIX, tags=["scoring"], route_class=_BoundedJsonRoute)

JobName = Annotated[str, Path(pattern=JOB_NAME_PATTERN, description="The job's name, as in config/jobs/*.yaml.")]


def _error(code: int, description: str) -> dict[str, Any]:
    # With its schema: an example alone let generated clients and schemathesis take any body.
    return {code: {"model": ErrorBody, "description": description}}


_AUTH_ERRORS = {
    **_error(401, "No valid Airflow token or session."),
    **_error(403, "The user may not use this job's DAGs."),
    **_error(404, "No such job."),
}
#: Operations with a body (pipelines.web.app._unprocessable answers 415; _BoundedJsonRoute and
#: pipelines.web.app._BodyLimit the 400 and 413).
_NOT_JSON = {
    **_error(400, "The body is not UTF-8 text, or its Content-Length is not a number."),
    **_error(413, "The body is larger than 16 MiB, or holds far more JSON values than the operation takes."),
    **_error(415, "The body was not sent as JSON: send it with 'Content-Type: application/json'."),
}
#: Operations that read the model registry.
_STORE_DOWN = _error(503, "The model registry's store (e.g. S3) could not be reached; retry later.")


@router.post(
    "/jobs/{job}/detect",
    summary="Score points with the job's champion models",
    response_model=None,
    responses={
        200: {"model": DetectResponse, "description": "One output row per data point, and a summary."},
        **_AUTH_ERRORS,
        **_error(409, "A series of the points has no champion model yet: train the job first."),
        **_NOT_JSON,
        **_error(413, f"More than {MAX_DETECT_POINTS:,} data points: use score-file."),
        **_error(422, "Points that do not fit the job: columns, types, timestamps, duplicates, the job's checks."),
        **_STORE_DOWN,
    },
)
def detect(job: JobName, body: DetectRequest, user: CurrentUser) -> Response:
    """Synchronous detection (at most 30,000 data points = rows x features per call)."""
    from pipelines.errors import DataValidationError, ModelError
    from pipelines.web.detect import TooManyPoints, detect_points, points_of

    config = served_job(user, job, "POST")
    points = points_of(config, len(body.points))
    if points > MAX_DETECT_POINTS:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=(
                f"job {job}: {len(body.points):,} rows x {len(config.features)} features = {points:,} data points, "
                f"more than the {MAX_DETECT_POINTS:,} one synchronous call may score. Split them into smaller calls, "
                f"or score the whole file with a one-off scoring run: POST {API_PREFIX}/jobs/{job}/score-file "
                f"(a run of the {job}__score DAG with the file as its input)."
            ),
        )
    run_id = f"api__{uuid.uuid4().hex[:16]}"
    try:
        detected = detect_points(config, body.points, run_id=run_id)
    except TooManyPoints as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc)) from exc
    except DataValidationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    except ModelError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    frame = detected.frame
    anomalous = frame.loc[frame["is_anomaly"], ["series", "timestamp"]].drop_duplicates()
    per_series = anomalous["series"].value_counts()
    points_per_series = frame["series"].value_counts()
    head = {
        "job": job,
        "run_id": run_id,
        "points": len(frame),
        "anomalies": len(anomalous),
        "series": [
            {
                "series": key,
                "model_version": version,
                "points": int(points_per_series.get(key, 0)),
                "anomalies": int(per_series.get(key, 0)),
                "resampling": detected.resampling[key],
            }
            for key, version in detected.versions.items()
        ],
    }
    results = _records_json(frame)
    content = json.dumps(head)[:-1] + ', "results": ' + results + "}"
    return Response(content=content, media_type="application/json")


def _records_json(frame: pd.DataFrame) -> str:
    """``frame`` as a JSON array of records, timestamps as ISO 8601 UTC text.

    30,000 rows through pydantic and jsonable_encoder take longer than the scoring itself, and
    pandas' own ISO date formatting is three times slower than NumPy's, so the times are turned
    into text here and each column into Python values, written by ``json`` (the shape is the
    documented DetectResponse). Not pandas' ``to_json``: its ``double_precision`` counts decimal
    places, so 1.5e-15 was sent as 2e-15 and 1.2345678901234567e-07 as 0.000000123456789.
    """
    import numpy as np
    import pandas as pd

    columns = []
    for name in frame.columns:
        values = frame[name]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            text = np.datetime_as_string(values.dt.tz_convert(None).to_numpy(), unit="us").astype(object) + "Z"
            columns.append(np.where(values.isna().to_numpy(), None, text).tolist())
        elif values.dtype.kind == "f":
            numbers = values.to_numpy()
            columns.append(np.where(np.isfinite(numbers), numbers.astype(object), None).tolist())  # JSON has no NaN
        else:
            columns.append(values.astype(object).where(values.notna(), None).tolist() if values.hasnans else values.tolist())
    names = [str(name) for name in frame.columns]
    return json.dumps([dict(zip(names, row)) for row in zip(*columns)], allow_nan=False)


SeriesQuery = Annotated[SeriesKey | None, Query(description="One series, e.g. 'region=eu' ('all' without dimensions).")]

#: Series of ``GET .../model`` at once, by key (``?page=N`` for the others): without a page it read
#: every series' champion, a job of 100,000 series in one answer (as the dashboard's models data did).
#: Largest ``?page=`` taken (a bound, so that no absurd number is multiplied out).
MAX_MODEL_PAGE = 1_000_000


@router.get(
    "/jobs/{job}/model",
    summary="The job's champion models: version, training time, parameters, metrics; for auto, the detector chosen and why",
    response_model=ModelInfo,
    responses={**_AUTH_ERRORS, **_STORE_DOWN, **_error(422, "A page out of range, or a page with a series.")},
)
def model(
    job: JobName,
    user: CurrentUser,
    series: SeriesQuery = None,
    page: Annotated[
        int | None,
        Query(ge=1, le=MAX_MODEL_PAGE, description="Page of the series with models, by key, from 1 (not with series)."),
    ] = None,
) -> ModelInfo:
    """Champion metadata per series, like OCI's model information: one page of series (the first
    without ``page``), or the one ``series``."""
    from pipelines.errors import ModelError
    from pipelines.training import champion_models

    config = served_job(user, job, "GET")
    if series is not None:
        if page is not None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"give series or page, not both: series {series!r} is one series, on no page of another",
            )
        try:
            champions = [ChampionInfo.model_validate(entry) for entry in champion_models(config, series)]
        except ModelError as exc:  # a series without a model
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        if not champions:
            raise _none_yet(job, "champion model", series, "train")
        where = {"page": 1, "pages": 1, "total": 1, "page_size": PAGE_SERIES, "next_page": None}
    else:
        champions, where = _champions_page(config, page or 1)
        # No series with a model, or none of the job's series (all on page 1) has a champion yet.
        if not where["total"] or (not champions and where["pages"] == where["page"] == 1):
            raise _none_yet(job, "champion model", None, "train")
    return ModelInfo(
        job=job, model=config.model.kind, features=config.features, dimensions=config.dimensions, **where, champions=champions
    )


def _champions_page(config: JobConfig, page: int) -> tuple[list[ChampionInfo], dict[str, Any]]:
    """The champions of the series on ``page`` (:func:`pipelines.paging.page_of`), and where it is:
    ``page``, ``pages``, ``total``, ``page_size``, ``next_page``. A page past the end holds none.
    Read by :func:`pipelines.training.champion_models`, for the page's series only: a series whose
    champion cannot be read is left out with a warning."""
    from pipelines.training import champion_models, registry_for

    shown, where = page_of(registry_for(config).series(config.name), page)
    champions = [ChampionInfo.model_validate(entry) for entry in champion_models(config, keys=shown)]
    return champions, {key: value for key, value in where.items() if key != "first"}


@router.get(
    "/jobs/{job}/tuning",
    summary="The job's tune runs per series: the best trial and whether and why it replaced the serving model",
    response_model=TuningHistory,
    responses={**_AUTH_ERRORS, **_STORE_DOWN},
)
def tuning(
    job: JobName,
    user: CurrentUser,
    series: SeriesQuery = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Most runs per series, newest first.")] = 10,
) -> TuningHistory:
    """Every recorded tune run, promoted or not (a run that kept the champion leaves no model
    version, so this is where its reason is kept)."""
    from pipelines.training import registry_for
    from pipelines.tuning import tuning_runs

    config = served_job(user, job, "GET")
    found = [SeriesTuning.model_validate(entry) for entry in tuning_runs(config, series, limit)]
    if not found:
        # A mistyped series was told to run the tune DAG, which would never give it tune runs.
        if series is not None and series not in (keys := registry_for(config).series(job)):
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=f"job {job} has no series {series!r}; series with models: {', '.join(keys) or 'none (train the job first)'}",
            )
        raise _none_yet(job, "tune runs", series, "tune")
    return TuningHistory(job=job, series=found)


def _none_yet(job: str, what: str, series: str | None, step: str) -> HTTPException:
    """404 for a job (or series) that has not run ``step`` yet, saying how to run it."""
    return HTTPException(
        status.HTTP_404_NOT_FOUND,
        detail=f"job {job} has no {what}{' for series ' + repr(series) if series else ''} yet: "
        f"run {job}__{step} (or `anomaly-pipelines {step} {job}`) first",
    )


def _bad_location(what: str, given: str, why: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{what} {given!r} is not allowed: {why}")


def _checked_location(what: str, given: str, *, inside: FilePath, must_exist: bool) -> str:
    """An s3:// or gs:// URL as given, or the absolute local path of ``given`` if it stays in ``inside``.

    The check is lexical (``..`` is resolved, symlinks are not): links the operator placed inside
    the project (such as ``data/``) are trusted, a request can only name paths below it.
    """
    from pipelines.config import base_dir

    if "\x00" in given or any(ch in given for ch in "\r\n"):
        raise _bad_location(what, given, "it holds control characters")
    if "://" in given:
        scheme, _, rest = given.partition("://")
        bucket, _, key = rest.partition("/")
        if f"{scheme}://" not in REMOTE_SCHEMES or not bucket or not key.strip("/") or ".." in rest.split("/"):
            raise _bad_location(what, given, "URLs must be s3://bucket/key or gs://bucket/key")
        return given
    path = FilePath(given)
    absolute = FilePath(os.path.normpath(path if path.is_absolute() else base_dir() / path))
    if not absolute.is_relative_to(inside):
        raise _bad_location(what, given, f"local paths must stay inside {inside} (relative paths start there)")
    if must_exist and not _is_file(absolute):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{what} {given!r}: no such file ({absolute}); check the path"
        )
    return str(absolute)


def _state_folders(jobs: Iterable[JobConfig], caller: str) -> list[str]:
    """Where the pipelines keep state: every job's published dataset and model registry, the other
    jobs' one-off results, the runs' work and quarantine folders, and the job files. Local folders
    come as written and with symbolic links resolved (``var`` or ``config/jobs`` may be links)."""
    from pipelines.config import jobs_dir, resolve_path
    from pipelines.workspace import home

    folders = {str(home() / "work"), str(home() / "quarantine"), str(jobs_dir())}
    for job in jobs:
        outputs = resolve_path(job.outputs.parquet).rstrip("/")
        folders.add(f"{outputs}/job={job.name}")
        if job.name != caller:
            folders.add(f"{outputs}/_one_off/job={job.name}")
        folders.add(resolve_path(job.registry).rstrip("/"))
    return sorted(_spellings(folders))


def _spellings(locations: Iterable[str]) -> set[str]:
    """Each location as written (normalised) and, when local, with its symbolic links resolved."""
    out = set()
    for location in locations:
        if "://" in location:
            out.add(location)
        else:
            out |= {os.path.normpath(location), os.path.realpath(location)}
    return out


def _check_not_state(what: str, location: str, given: str, caller: str, jobs: Iterable[JobConfig]) -> None:
    """Refuse an input or output among the pipelines' state: an output there would replace or join
    it, and an input there would hand any job's scores, models or job files (which may name
    connections) to a caller allowed to score with one job, through that job's output."""
    folders = _state_folders(jobs, caller)
    if any(place == folder or place.startswith(f"{folder}/") for place in _spellings([location]) for folder in folders):
        # Not naming the folder: it may be another job's, which the caller may not know of.
        example = "var/scored/<name>.parquet" if what == "output" else "a data file of your own, e.g. under data/"
        raise _bad_location(
            what,
            given,
            "it lies in a folder the pipelines keep their own state or job files in (a job's published dataset "
            f"or one-off results, a model registry, the runs' work or quarantine folders, the job files); choose {example}",
        )


def _is_file(path: FilePath) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name the file system cannot hold (too long) names no file either
        return False


def _airflow_url(request: Request) -> str:
    """Airflow's REST API root: $ANOMALY_PIPELINES_AIRFLOW_URL, else Airflow's ``[api] base_url``,
    else the api-server's own port on the loopback address.

    Never the request's Host header: the caller chooses it, and the caller's token is sent to
    this address (a forged Host sent the token to any server named there).
    """
    from airflow.configuration import conf

    from pipelines.web import URL_PREFIX

    if configured := os.environ.get(AIRFLOW_URL_ENV):
        return configured.rstrip("/")
    if base := conf.get("api", "base_url", fallback=None):
        return base.rstrip("/")
    # Mounted in the api-server, root_path is Airflow's own root followed by our mount point;
    # it is set by the server, not by the request.
    root = request.scope.get("root_path", "").rstrip("/").removesuffix(URL_PREFIX)
    return f"http://127.0.0.1:{conf.getint('api', 'port', fallback=8080)}{root}"


def _caller_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.cookies.get(SESSION_COOKIE, "")


async def _airflow(
    request: Request, method: str, path: str, *, json_body: dict[str, Any] | None = None, params: dict[str, Any] | None = None
) -> Any:
    """Call Airflow's REST API as the caller; its refusals come back as the same HTTP errors."""
    import httpx

    url = f"{_airflow_url(request)}/api/v2{path}"
    try:
        async with httpx.AsyncClient(timeout=AIRFLOW_TIMEOUT) as client:
            answer = await client.request(
                method, url, json=json_body, params=params, headers={"Authorization": f"Bearer {_caller_token(request)}"}
            )
    except httpx.HTTPError as exc:
        log.error("cannot reach Airflow's REST API at %s: %s", url, exc)
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY,
            detail=f"cannot reach Airflow's REST API at {url} ({exc.__class__.__name__}); "
            f"check that the api-server runs, or set {AIRFLOW_URL_ENV}",
        ) from exc
    try:
        body = answer.json()
    except ValueError:
        body = None
    if answer.is_success:
        if not isinstance(body, dict):
            # e.g. a proxy's HTML login page in front of the api-server.
            log.error("Airflow's REST API at %s answered %s %s with a body that is not a JSON object: %.200s", url, method, path, answer.text)
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY,
                detail=f"{url} answered {answer.status_code} with something other than Airflow's JSON; "
                f"set {AIRFLOW_URL_ENV} to the api-server's own address",
            )
        return body
    detail = body.get("detail", answer.text) if isinstance(body, dict) else answer.text
    log.warning("Airflow answered %s %s with %d: %s", method, url, answer.status_code, detail)
    code = answer.status_code if answer.status_code in (401, 403, 404, 409) else status.HTTP_502_BAD_GATEWAY
    raise HTTPException(code, detail=f"Airflow refused {method} {path}: {detail}")


def _status_url(request: Request, run_id: str) -> str:
    """The GET address of a one-off run, from the address this request came to (POST .../score-file
    or GET .../score-file/<run_id>). Not ``url_for``: mounted in Airflow's api-server, the app's
    route names are not the ones the outer router resolves."""
    collection = request.url.path.rstrip("/")
    if request.method != "POST":
        collection = collection.rsplit("/", 1)[0]
    return str(request.url.replace(path=f"{collection}/{quote(run_id, safe='')}", query=None))


def _run_view(
    config: JobConfig,
    run: dict[str, Any],
    request: Request,
    warning: str | None = None,
    failure: tuple[list[str], str] | None = None,
) -> ScoreFileRun:
    from pipelines.workspace import one_off_output

    conf = run.get("conf") or {}
    missing = [key for key in ("dag_id", "dag_run_id") if key not in run] + ([] if "input" in conf else ["conf.input"])
    if missing:
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY, detail=f"Airflow's answer about the run lacks {', '.join(missing)}: is {AIRFLOW_URL_ENV} Airflow's api-server?"
        )
    return ScoreFileRun(
        job=config.name,
        dag_id=run["dag_id"],
        run_id=run["dag_run_id"],
        state=run.get("state") or "queued",
        input=conf["input"],
        output=conf.get("output") or one_off_output(config, run["dag_run_id"]),
        start_date=run.get("start_date"),
        end_date=run.get("end_date"),
        warning=warning,
        failed_tasks=failure[0] if failure else [],
        error=failure[1] if failure else None,
        status_url=_status_url(request, run["dag_run_id"]),
    )


def _run_output(config: JobConfig, run: dict[str, Any]) -> str | None:
    """Where a one-off run of ``config``'s score DAG writes (None: not a one-off run)."""
    from pipelines.workspace import one_off_output

    conf = run.get("conf") or {}
    if not conf.get("input"):
        return None
    return conf.get("output") or one_off_output(config, str(run.get("dag_run_id")))


#: Per event loop (one per api-server worker; tests run several): asyncio locks belong to one.
_OUTPUT_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _output_lock() -> asyncio.Lock:
    """Held by score-file from its check for a run writing the output until its own run is started.

    Airflow has no lock to take, so calls reaching different api-server workers (``airflow
    api-server --workers``) in the same instant can still both start a run.
    """
    return _OUTPUT_LOCKS.setdefault(asyncio.get_running_loop(), asyncio.Lock())


async def _run_writing(request: Request, config: JobConfig, output: str) -> dict[str, Any] | None:
    """A queued or running one-off scoring run (of any ``__score`` DAG the caller may read) writing ``output``.

    Two runs given one output both succeeded and both answered it as their result, which held
    the scores of whichever finished last. Finished runs are no conflict: a later run replaces
    their file, as re-running an interval replaces its rows. Called under :func:`_output_lock`.
    """
    from pipelines.workspace import file_identity

    wanted = file_identity(output)
    offset = 0
    while True:
        page = await _airflow(
            request, "GET", "/dags/~/dagRuns", params={"state": ["queued", "running"], "limit": 100, "offset": offset}
        )
        runs = page.get("dag_runs") or []
        for run in runs:
            dag_id = str(run.get("dag_id", ""))
            conf = run.get("conf") or {}
            if not dag_id.endswith("__score") or not conf.get("input"):
                continue
            # A run without output writes its default file, known for the caller's own job only.
            written = _run_output(config, run) if dag_id == f"{config.name}__score" else conf.get("output")
            if written and file_identity(written) == wanted:
                return run
        offset += len(runs)
        if not runs or offset >= int(page.get("total_entries") or 0):
            return None


#: Failed tasks whose Airflow log is read for the exception (a run of many chunks may fail in each).
_LOGS_READ = 3
_ERROR_CHARS = 2000
#: Failed tasks named in a failed run's error (``failed_tasks`` holds them all).
_TASKS_NAMED = 10
#: Task instances asked for per page: Airflow answers 50 unless asked for more, and at most its
#: ``[api] maximum_page_limit`` (100 by default) whatever is asked.
_PAGE = 100


def _task_name(task: dict[str, Any]) -> str:
    index = task.get("map_index", -1)
    return f"{task.get('task_id')}[{index}]" if isinstance(index, int) and index >= 0 else str(task.get("task_id"))


def _logged_error(content: Any) -> str | None:
    """The last exception (type: message) in a task log as Airflow's REST API returns it, else its last error line."""
    events = [event for event in content if isinstance(event, dict)] if isinstance(content, list) else []
    for event in reversed(events):
        for key in ("error_detail", "exception"):
            details = event.get(key)
            if isinstance(details, list) and details and isinstance(details[-1], dict):
                last = details[-1]
                return f"{last.get('exc_type', 'error')}: {last.get('exc_value', '')}".strip()
    errors = [event for event in events if str(event.get("level", "")).lower() in ("error", "critical")]
    return str(errors[-1].get("event")) if errors else None


async def _failed_tasks(request: Request, path: str) -> list[dict[str, Any]]:
    """Every failed task instance of a run (``path``: its taskInstances), page by page: asked once,
    Airflow answered its first 50, and a run with more failed chunks was said to fail in those only."""
    failed: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await _airflow(request, "GET", path, params={"state": ["failed"], "limit": _PAGE, "offset": offset})
        tasks = page.get("task_instances") or []
        failed += [task for task in tasks if task.get("state") == "failed"]
        offset += len(tasks)
        if not tasks or offset >= int(page.get("total_entries") or 0):
            return failed


async def _failure(request: Request, dag_id: str, run_id: str, output: str) -> tuple[list[str], str]:
    """The failed tasks of a failed one-off run and, from their logs, why it failed.

    Airflow's run state alone said "failed", next to the output location where an earlier run's
    file may well lie: the caller had no reason and could take that file for this run's result.
    Best effort: a log that cannot be read leaves the reason to Airflow's UI, never fails the answer.
    """
    path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
    wrote_nothing = f"it wrote nothing to {output} (a file there is another run's)"
    try:
        failed = await _failed_tasks(request, path)
    except HTTPException as exc:
        log.warning("cannot list the failed tasks of run %s of %s: %s", run_id, dag_id, exc.detail)
        return [], f"run {run_id} of {dag_id} failed; {wrote_nothing}. Its task logs in Airflow say why."
    names = [_task_name(task) for task in failed]
    reasons = []
    for task in failed[:_LOGS_READ]:
        try:
            logged = await _airflow(
                request,
                "GET",
                f"{path}/{quote(str(task.get('task_id')), safe='')}/logs/{task.get('try_number') or 1}",
                params={"map_index": task.get("map_index", -1)},
            )
        except HTTPException as exc:
            log.warning("cannot read the log of task %s of run %s of %s: %s", _task_name(task), run_id, dag_id, exc.detail)
            continue
        if reason := _logged_error(logged.get("content")):
            reasons.append(f"{_task_name(task)}: {reason[:_ERROR_CHARS].rstrip('.')}")
    if len(names) > 1:  # a run of many chunks may fail in hundreds: name a few, count them all
        more = f" and {len(names) - _TASKS_NAMED} more" if len(names) > _TASKS_NAMED else ""
        where = f"in {len(names)} tasks: {', '.join(names[:_TASKS_NAMED])}{more}"
    else:
        where = f"in task {names[0]}" if names else "(no task of it is marked failed: was it stopped?)"
    unread = " Their logs in Airflow say why." if len(names) > 1 else " The task's log in Airflow says why."
    why = f" {'; '.join(reasons)}." if reasons else unread
    return names, f"run {run_id} of {dag_id} failed {where}; {wrote_nothing}.{why}"


@router.post(
    "/jobs/{job}/score-file",
    summary="Start a one-off scoring run of a whole file",
    response_model=ScoreFileRun,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **_AUTH_ERRORS,
        **_error(409, "Another queued or running one-off run writes the same output, or Airflow refused the run (conflict)."),
        **_NOT_JSON,
        **_error(422, "Input or output not allowed, or no such file."),
        **_error(502, "Airflow's REST API could not be reached or failed."),
    },
)
async def score_file(
    job: JobName, body: ScoreFileRequest, request: Request, response: Response, user: CurrentUser
) -> ScoreFileRun:
    """Trigger ``<job>__score`` with ``input`` (and ``output``, ``chunk_rows``); poll the returned run id."""
    from pipelines.config import base_dir
    from pipelines.workspace import file_identity, home

    scan = job_scan()
    config = served_job(user, job, "POST", scan)
    conf: dict[str, Any] = {"input": _checked_location("input", body.input, inside=base_dir(), must_exist=True)}
    _check_not_state("input", conf["input"], body.input, config.name, scan.jobs.values())
    if body.output is not None:
        if not body.output.endswith(".parquet"):
            raise _bad_location("output", body.output, "the output is a Parquet file: its name must end with .parquet")
        conf["output"] = _checked_location("output", body.output, inside=home(), must_exist=False)
        _check_not_state("output", conf["output"], body.output, config.name, scan.jobs.values())
        if file_identity(conf["output"]) == file_identity(conf["input"]):
            # The run would replace the data it reads with its scores.
            raise _bad_location("output", body.output, "it is the input file: scoring would replace the data it reads; give another path")
    if body.chunk_rows is not None:
        conf["chunk_rows"] = body.chunk_rows
    dag_id = f"{job}__score"
    # Checking for a run writing the output and starting this one are one step (in this process):
    # two calls in the same instant both found no run writing it, and both started one.
    async with _output_lock() if body.output is not None else contextlib.nullcontext():
        if body.output is not None and (busy := await _run_writing(request, config, conf["output"])) is not None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"output {body.output!r} is being written by run {busy.get('dag_run_id')} of {busy.get('dag_id')} "
                f"({busy.get('state')}): two runs would both answer it as their result, holding the scores of whichever "
                "finished last. Wait for that run to finish, or give another output",
            )
        run = await _airflow(request, "POST", f"/dags/{dag_id}/dagRuns", json_body={"logical_date": None, "conf": conf})
    log.info("user %r started one-off scoring run %s of %s for %s", user.get_name(), run.get("dag_run_id"), dag_id, conf["input"])
    dag = await _airflow(request, "GET", f"/dags/{dag_id}")
    warning = f"{dag_id} is paused: the run waits until it is unpaused" if dag.get("is_paused") else None
    view = _run_view(config, run, request, warning)
    response.headers["Location"] = view.status_url
    return view


@router.get(
    "/jobs/{job}/score-file/{run_id}",
    summary="State and output location of a one-off scoring run",
    response_model=ScoreFileRun,
    responses={**_AUTH_ERRORS, **_error(502, "Airflow's REST API could not be reached or failed.")},
)
async def score_file_run(
    job: JobName,
    run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN, description="The run id score-file returned.")],
    request: Request,
    user: CurrentUser,
) -> ScoreFileRun:
    config = served_job(user, job, "GET")
    dag_id = f"{job}__score"
    if not run_id.strip("."):
        # "." and ".." are path steps, not run ids: sent on, they named another Airflow resource
        # (GET /dags/<job>__score/dagRuns/.. is GET /dags/<job>__score).
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{run_id!r} is not a run id of {dag_id}")
    run = await _airflow(request, "GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
    output = _run_output(config, run)
    if output is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"run {run_id} of {dag_id} has no input file in its conf: not a one-off scoring run"
        )
    failure = await _failure(request, dag_id, run_id, output) if run.get("state") == "failed" else None
    return _run_view(config, run, request, failure=failure)


_LABEL_ERRORS = {
    **_error(422, "A label that does not fit the job: series, feature, window, values, time zones."),
    **_error(503, "The labels database could not be reached or written."),
}
StartQuery = Annotated[IsoTime | None, Query(description="From this time (ISO 8601 with offset).")]
EndQuery = Annotated[IsoTime | None, Query(description="Up to this time (ISO 8601 with offset).")]


def _check_range(job: str, start: Any, end: Any, *, end_inclusive: bool) -> None:
    """422 for a window that holds nothing: an end before the start (or at it, when the end is
    exclusive) answered an empty list, as if nothing had happened in it."""
    if start is None or end is None or end > start or (end_inclusive and end == start):
        return
    before = "before" if end < start else "at"
    raise HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=f"job {job}: end {end.isoformat()} is {before} start {start.isoformat()}, a window holding nothing: "
        "give an end after the start (or leave either out)",
    )


@contextlib.contextmanager
def _label_failures() -> Iterator[None]:
    """Bad labels are the caller's 422; an unreachable labels database is a 503 worth retrying."""
    from pipelines.errors import SinkError
    from pipelines.labels import LabelError

    try:
        yield
    except LabelError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    except SinkError as exc:
        log.error("labels database failed: %s", exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc


def _label_info(label: Label) -> LabelInfo:
    return LabelInfo.model_validate(label.to_dict())


@router.post(
    "/jobs/{job}/labels",
    summary="Mark an anomaly event as a true anomaly or a false alarm",
    response_model=LabelAdded,
    status_code=status.HTTP_201_CREATED,
    responses={**_AUTH_ERRORS, **_NOT_JSON, **_LABEL_ERRORS},
)
def add_label(job: JobName, body: LabelRequest, user: CurrentUser) -> LabelAdded:
    """Store a verdict on an event; the same (series, feature, start, end) replaces the earlier verdict.

    Without value_min and value_max, the range of the event's actual values is read from the
    published output. The author is the Airflow user. Needs the right to trigger the job's runs.
    The answer names the stored labels that outrank it where they say otherwise (``overruled_by``).
    """
    from pipelines.labels import label_store

    config = served_job(user, job, "POST")
    with _label_failures():
        store = label_store(config)
        label = store.add(
            job,
            body.series,
            body.start,
            body.end,
            body.verdict,
            feature=body.feature,
            value_min=body.value_min,
            value_max=body.value_max,
            note=body.note,
            author=user.get_name(),
        )
    return LabelAdded(**_label_info(label).model_dump(), overruled_by=_overruling(store, label, config.features))


def _overruling(store: LabelStore, label: Label, features: Iterable[str]) -> list[LabelInfo] | None:
    """The stored labels whose other verdict holds somewhere in ``label``'s span, on a feature it judges.

    A feature's own label outranks a whole-series verdict (:func:`pipelines.labels.label_verdicts`),
    which then changes nothing where that label says otherwise: answered as if it held, the
    dashboard showed a click that a reload took back. None when the labels cannot be read back:
    the verdict is stored, and a 503 would have the caller believe it was not.
    """
    from pipelines.errors import SinkError
    from pipelines.labels import deciding_labels

    try:
        overlapping = store.labels(label.job, label.series, label.start, label.end)
    except SinkError as exc:
        log.warning("labels database failed reading back the labels over a new one: %s", exc)
        return None
    judged = list(features) if label.feature is None else [label.feature]
    deciding = deciding_labels(overlapping, label.start, label.end, judged)
    return [_label_info(other) for other in deciding if other.verdict != label.verdict]


@router.get(
    "/jobs/{job}/labels",
    summary="Verdicts on the job's anomaly events",
    response_model=LabelList,
    responses={
        **_AUTH_ERRORS,
        **_error(404, "No such job, or the job has no model for the series: the job's model lists its series."),
        **_LABEL_ERRORS,
    },
)
def list_labels(job: JobName, user: CurrentUser, series: SeriesQuery = None, start: StartQuery = None, end: EndQuery = None) -> LabelList:
    """Labels overlapping [start, end] (both inclusive; unbounded where omitted), by series and start."""
    from pipelines.labels import label_store

    config = served_job(user, job, "GET")
    _check_range(job, start, end, end_inclusive=True)
    with _label_failures():
        labels = label_store(config).labels(job, series, start, end)
        if series is not None and not labels:
            _check_known_series(config, series)
    return LabelList(job=job, labels=[_label_info(label) for label in labels])


#: Labels near a missing one named in the 404 (a feature's label, or one of a slightly different span).
_LABELS_NAMED = 3


@router.delete(
    "/jobs/{job}/labels",
    summary="Withdraw the verdict on an event (the label's series, start, end and feature)",
    response_model=LabelInfo,
    responses={
        **_AUTH_ERRORS,
        **_error(404, "No such job, or no label with that series, start, end and feature: GET the labels to see them."),
        **_LABEL_ERRORS,
    },
)
def remove_label(
    job: JobName,
    user: CurrentUser,
    series: Annotated[SeriesKey, Query(description="The label's series, e.g. 'region=eu'.")],
    start: Annotated[IsoTime, Query(description="The label's start (ISO 8601 with offset), as GET labels lists it.")],
    end: Annotated[IsoTime, Query(description="The label's end (ISO 8601 with offset).")],
    feature: Annotated[
        str | None, Query(min_length=1, max_length=128, description="The label's feature; omitted: the whole-series label.")
    ] = None,
) -> LabelInfo:
    """Withdraw a verdict given by mistake and answer it (POST it again to restore it): giving the
    opposite verdict instead still counts (a false alarm silences alerts, a true anomaly is what
    tuning scores against). Needs the right to trigger the job's runs, as giving a verdict does.
    """
    from pipelines.labels import label_store

    config = served_job(user, job, "POST")
    with _label_failures():
        store = label_store(config)
        removed = store.remove(job, series, start, end, feature=feature)
        # Reads only when nothing was removed: labels of the series the key may have been meant for.
        near = [] if removed is not None else store.labels(job, series, start, end)[:_LABELS_NAMED]
    if removed is None:
        what = f"job {job}, series {series!r}{', feature ' + repr(feature) if feature else ''}"
        listing = f"GET {API_PREFIX}/jobs/{job}/labels?series={quote(series, safe='=')}"
        hint = ""
        if near:
            keys = "; ".join(
                f"[{label.start.isoformat()}, {label.end.isoformat()}]"
                + (f" feature {label.feature!r}" if label.feature else " whole series")
                for label in near
            )
            hint = f" (labels of the series overlapping it: {keys})"
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"{what}: no label on [{start.isoformat()}, {end.isoformat()}]{hint}; "
            f"{listing} lists them with their exact start, end and feature",
        )
    log.info("user %r withdrew the verdict on job %s, series %r [%s, %s]", user.get_name(), job, series, start, end)
    return _label_info(removed)


#: Series keys a 404 for an unknown one names: a job may have thousands.
_SERIES_NAMED = 5


def _check_known_series(config: JobConfig, series: str) -> None:
    """404 naming ``series`` and where the known ones are listed, when ``config`` has no model for it:
    an empty answer for a typo read as "no events" (a known series without any stays ``[]``)."""
    import difflib

    from pipelines.config import resolve_path
    from pipelines.errors import PipelineError
    from pipelines.registry import ModelRegistry

    try:
        known = ModelRegistry(resolve_path(config.registry), config.outputs.storage_options).series(config.name)
    except PipelineError as exc:
        log.error("job %s: cannot list the series of its registry: %s", config.name, exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"job {config.name}: {exc}") from exc
    if series in known:
        return
    listing = f"GET {API_PREFIX}/jobs/{config.name}/model lists them"
    if not known:
        has = "has no trained series yet: train it, then run its predict DAG"
    else:
        near = difflib.get_close_matches(series, known, n=_SERIES_NAMED) or known[:_SERIES_NAMED]
        has = f"has models for {len(known):,} series, e.g. {', '.join(near)} ({listing})"
    raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {config.name} has no series {series!r}: it {has}")


def _event_info(event: AnomalyEvent, label: Label | None) -> EventInfo:
    return EventInfo(
        series=event.series,
        start=event.start,
        end=event.end,
        rows=event.rows,
        peak_score=event.peak_score,
        peak_timestamp=event.peak_timestamp,
        direction=event.direction,
        model_version=event.model_version,
        top_features=list(event.top_features),
        at_peak=[EventSignal.model_validate(signal, from_attributes=True) for signal in event.at_peak],
        cut_at_start=event.cut_at_start,
        cut_at_end=event.cut_at_end,
        label=_label_info(label) if label is not None else None,
    )


@router.get(
    "/jobs/{job}/events",
    summary="Anomaly events of the published output, each with its current label",
    response_model=EventList,
    responses={
        **_AUTH_ERRORS,
        **_error(404, "No such job, or the job has no model for the series: the job's model lists its series."),
        **_LABEL_ERRORS,
    },
)
def list_events(
    job: JobName,
    user: CurrentUser,
    series: SeriesQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most events listed, newest first.")] = 200,
) -> EventList:
    """Consecutive anomalous timestamps of a series, grouped as alerts group them (``alerts.max_gap``,
    from the points ``alerts.features`` drove), in [start, end). A series the job has no model for is 404."""
    from pipelines.events import published_events
    from pipelines.labels import as_utc, label_of, label_store

    config = served_job(user, job, "GET")
    _check_range(job, start, end, end_inclusive=False)
    with _label_failures():
        where = f"job {job!r}"
        low = as_utc(start, "start", where) if start is not None else None
        high = as_utc(end, "end", where) if end is not None else None
        found = published_events(config, series=series, start=low, end=high)
        if series is not None and not found:
            _check_known_series(config, series)
        events = sorted(found, key=lambda e: (e.start, e.series), reverse=True)
        shown = events[:limit]
        labels = (
            label_store(config).labels(job, series, min(e.start for e in shown), max(e.end for e in shown)) if shown else []
        )
    return EventList(job=job, total=len(events), events=[_event_info(event, label_of(event, labels)) for event in shown])
