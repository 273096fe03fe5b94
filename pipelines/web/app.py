"""The FastAPI application of the Airflow plugin: the scoring API and the dashboard pages.

Every route, including the OpenAPI document and its Swagger page, requires an Airflow login
(:func:`pipelines.web.auth.require_user`): Airflow mounts plugin apps without any protection.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines import __version__
from pipelines.errors import StorageError
from pipelines.web import URL_PREFIX
from pipelines.web.auth import auth_manager, authenticate, require_user
from pipelines.web.schemas import MAX_BODY_BYTES, MAX_DETECT_POINTS

log = logging.getLogger(__name__)

__all__ = ["URL_PREFIX", "create_app"]

#: Errors a 422 lists (then how many more): a detect body of 15,000 points each with a value of the
#: wrong type was answered with every error, four a value (one per type it may have): 17 MB in 12 s.
MAX_LISTED_ERRORS = 20
OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"


def _dashboard_router() -> APIRouter | None:
    """The dashboard pages (``pipelines.web.dashboard.router``), when that module is installed."""
    try:
        from pipelines.web.dashboard import router
    except ModuleNotFoundError as exc:
        if exc.name != "pipelines.web.dashboard":
            raise  # the dashboard exists but one of its imports is missing: say so, loudly
        return None
    return router


def _routers() -> list[APIRouter]:
    from pipelines.web.api import router as api_router

    routers = [api_router]
    if (dashboard := _dashboard_router()) is not None:
        routers.append(dashboard)
    return routers


class _BodyLimit:
    """Refuse request bodies over ``MAX_BODY_BYTES`` before they are read into memory.

    Starlette has no body limit of its own; a declared Content-Length is checked at once, a
    chunked body while it streams in.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await JSONResponse({"detail": f"Content-Length {declared.decode('latin-1')!r} is not a number of bytes"}, status_code=400)(
                scope, receive, send
            )
            return
        if declared is not None and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                # An HTTPException, so FastAPI's body parsing passes it on instead of answering 400.
                raise HTTPException(413, detail=self._detail())
            return message

        await self.app(scope, limited, send)

    def _detail(self) -> str:
        return (
            f"the request body is larger than {self.limit // 2**20} MiB; a detect call holds at most "
            f"{MAX_DETECT_POINTS:,} data points: score larger inputs with a one-off run (score-file)"
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": self._detail()}, status_code=413)(scope, receive, send)


async def _unprocessable(request: Request, exc: RequestValidationError) -> Response:
    try:
        await authenticate(request)
    except HTTPException as refused:
        return await _login_redirect_or_error(request, refused)
    if _body_not_json(request, exc):
        # FastAPI reads a body as JSON only when the request says it is: `curl -d @points.json`
        # (form-encoded) got "Input should be a valid dictionary", with the whole body echoed back.
        given = request.headers.get("content-type")
        sent = f"its Content-Type is {given!r}" if given else "it has no Content-Type"
        detail = f"the request body must be JSON, sent with 'Content-Type: application/json'; {sent}"
        return JSONResponse({"detail": detail}, status_code=415)
    # FastAPI's own handler echoes each refused value back; a NaN or an Infinity in the body
    # (Python's JSON reader accepts both) then made the answer itself fail, a 500 for a 422.
    from pipelines.json_values import json_safe  # pandas: not at import, which every Airflow process does

    errors = exc.errors()
    listed = json_safe(jsonable_encoder(errors[:MAX_LISTED_ERRORS]))
    if len(errors) > MAX_LISTED_ERRORS:
        listed.append(
            {
                "type": "too_many_errors",
                "loc": [],
                "msg": f"{len(errors) - MAX_LISTED_ERRORS:,} more errors not listed ({len(errors):,} in all): "
                "fix those listed (often the same mistake in every point) and send the request again",
            }
        )
    return JSONResponse({"detail": listed}, status_code=422)


def _body_not_json(request: Request, exc: RequestValidationError) -> bool:
    """Whether the body was refused because the request did not say it is JSON (FastAPI's own test)."""
    content_type = request.headers.get("content-type", "")
    kind, _, rest = content_type.partition("/")
    subtype = rest.split(";", 1)[0].strip().lower()
    if kind.strip().lower() == "application" and (subtype == "json" or subtype.endswith("+json")):
        return False
    return any(tuple(error.get("loc", ())) == ("body",) for error in exc.errors())


async def _login_redirect_or_error(request: Request, exc: HTTPException) -> Response:
    # A person opening a page without a session is sent to Airflow's login page and back;
    # API clients (no text/html in Accept, or an explicit Authorization header) get the 401.
    wants_html = "text/html" in request.headers.get("accept", "")
    if exc.status_code == 401 and wants_html and "authorization" not in request.headers:
        try:
            return RedirectResponse(auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        except Exception:  # noqa: BLE001 - a broken login URL must not hide the 401 itself
            log.exception("cannot build Airflow's login URL; answering 401")
    return await http_exception_handler(request, exc)


async def _unrouted(request: Request, exc: StarletteHTTPException) -> Response:
    # Starlette's own 404 (no route) and 405 (not with this method) come before any dependency ran:
    # anonymous callers could map the routes (401 here, 404 there) and tell a page from a typo.
    try:
        await authenticate(request)
    except HTTPException as refused:
        return await _login_redirect_or_error(request, refused)
    return await http_exception_handler(request, exc)


async def _store_unreachable(request: Request, exc: Exception) -> Response:
    # A registry or output store that does not answer (the library's StorageError, e.g. S3 down)
    # is a 503 worth retrying, with the library's message naming the location and what to check,
    # on every route that reads it: it was a bare 500 "Internal Server Error".
    log.error("store unreachable: %s", exc)
    return await http_exception_handler(request, HTTPException(503, detail=str(exc)))


def create_app() -> FastAPI:
    """The plugin's FastAPI app: API routes under ``/api/v1``, dashboard pages (if installed) under ``/``."""
    app = FastAPI(
        title="Anomaly Pipelines",
        version=__version__,
        description=(
            "Scoring API of the anomaly-pipelines Airflow plugin: score points with a job's champion "
            "models, read their metadata, and start one-off scoring runs of whole files. Every "
            "operation needs an Airflow login: an API token from Airflow's `POST /auth/token` sent as "
            "`Authorization: Bearer <token>`, or the Airflow UI session cookie. See docs/API.md."
        ),
        openapi_url=None,  # served below, behind authentication
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(require_user)],
    )
    for router in _routers():
        app.include_router(router)
    app.add_exception_handler(HTTPException, _login_redirect_or_error)  # type: ignore[arg-type]  # Starlette types handlers loosely
    app.add_exception_handler(StarletteHTTPException, _unrouted)  # type: ignore[arg-type]  # FastAPI's HTTPException is handled above
    app.add_exception_handler(RequestValidationError, _unprocessable)  # type: ignore[arg-type]
    app.add_exception_handler(StorageError, _store_unreachable)
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)

    @app.get(OPENAPI_PATH, include_in_schema=False, dependencies=[Depends(require_user)])
    async def openapi(request: Request) -> JSONResponse:
        spec = app.openapi()
        # Mounted in the api-server, the paths are below Airflow's mount point: without a server
        # naming it, Swagger UI's "Try it out" and generated clients called /api/v1/... at the
        # server's root, Airflow's 404 (FastAPI's own openapi route adds it; this one replaces that).
        if root := request.scope.get("root_path", "").rstrip("/"):
            spec = {**spec, "servers": [{"url": root}]}
        return JSONResponse(spec)

    @app.get(DOCS_PATH, include_in_schema=False, dependencies=[Depends(require_user)])
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}{OPENAPI_PATH}", title="Anomaly Pipelines API")

    return app


class LazyApp:
    """An ASGI app that builds :func:`create_app` on its first request.

    Airflow imports plugins in every process that loads them (scheduler, DAG processor, task
    runners), while only the api-server serves this app: building it there, on first use, keeps
    pandas and pyarrow (the dashboard's data layer) out of the others' start-up.
    """

    def __init__(self) -> None:
        self._app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:  # one event loop per api-server worker: no lock needed
            self._app = create_app()
        await self._app(scope, receive, send)
