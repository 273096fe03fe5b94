"""Authentication and per-job authorization for the plugin's pages and API.

Airflow does not protect the FastAPI apps that plugins mount, so every route of this package
depends on :func:`require_user`. Credentials are the ones Airflow itself issues: the JWT of
``POST /auth/token`` sent as ``Authorization: Bearer``, or the UI session (Airflow 3 keeps the same
JWT in the ``_token`` cookie). They are verified by the configured auth manager
(``get_user_from_token``: signature, expiry, audience, revocation), never decoded by hand, and
permissions come from its ``is_authorized_dag``, so the plugin follows whatever auth manager and
roles the deployment uses.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Annotated, Literal

# A small module without side effects; FastAPI needs the type at runtime for ``CurrentUser``.
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

    from pipelines.config import JobConfig, JobScan

log = logging.getLogger(__name__)

# Airflow 3's UI stores its JWT in this cookie (base_auth_manager.COOKIE_NAME_JWT_TOKEN); kept as a
# literal so importing this module (the plugin is imported by every Airflow process) stays cheap.
SESSION_COOKIE = "_token"

JobAccess = Literal["GET", "POST"]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AirflowToken",
    description="An Airflow API token: the `access_token` returned by Airflow's `POST /auth/token`.",
)
_session = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="AirflowSession",
    description="The Airflow UI session (set when logging in to the Airflow UI).",
)
_init_lock = threading.Lock()

_NOT_AUTHENTICATED = (
    "not authenticated: send an Airflow API token as 'Authorization: Bearer <token>' "
    "(get one from Airflow's POST /auth/token) or log in to the Airflow UI"
)


def auth_manager() -> BaseAuthManager:
    """The auth manager of the running api-server, or a new one when the app runs on its own.

    Inside ``airflow api-server`` the auth manager is initialised after plugins are imported, so
    it is looked up per request, not at import. Standalone (tests, benchmarks, ``uvicorn``) it is
    initialised once here from the same ``[core] auth_manager`` setting.
    """
    from airflow.api_fastapi.app import get_auth_manager, init_auth_manager

    try:
        return get_auth_manager()
    except RuntimeError:
        with _init_lock:
            try:
                return get_auth_manager()
            except RuntimeError:
                log.info("initialising Airflow's auth manager for the standalone anomaly-pipelines app")
                return init_auth_manager()


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def require_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session_token: Annotated[str | None, Depends(_session)],
) -> BaseUser:
    """FastAPI dependency: the Airflow user making the request; 401 without valid credentials.

    An explicit bearer token wins over the session cookie, as in Airflow's own API.
    """
    from jwt import ExpiredSignatureError, InvalidTokenError

    if bearer is not None:
        token: str | None = bearer.credentials
    else:
        # Airflow's JWTRefreshMiddleware may already have validated (and refreshed) the cookie;
        # it marks the user with a sentinel only trusted in-tree code sets.
        from airflow.api_fastapi.core_api.security import USER_INJECTED_BY_TRUSTED_MIDDLEWARE

        user = getattr(request.state, "user", None)
        if user is not None and getattr(request.state, "user_authenticated_via", None) is USER_INJECTED_BY_TRUSTED_MIDDLEWARE:
            return user
        token = session_token
    if not token:
        raise _unauthorized(_NOT_AUTHENTICATED)
    try:
        return await auth_manager().get_user_from_token(token)
    except ExpiredSignatureError:
        raise _unauthorized("the Airflow token has expired: get a new one from POST /auth/token or log in again") from None
    except InvalidTokenError:
        raise _unauthorized(
            "the Airflow token is not valid (bad signature, revoked or malformed): "
            "get a new one from POST /auth/token or log in again"
        ) from None


CurrentUser = Annotated[BaseUser, Depends(require_user)]


async def authenticate(request: Request) -> BaseUser:
    """:func:`require_user` outside dependency injection; 401 (HTTPException) without valid credentials.

    FastAPI parses a request's body before it runs the route's dependencies, so a malformed body
    reaches the validation-error handler without the user having been checked: the handler calls
    this first, so that an anonymous caller learns nothing about the route but that it needs a login.
    """
    return await require_user(request, await _bearer(request), await _session(request))


def job_dag_ids(job_name: str) -> list[str]:
    """The DAGs ``dags/anomaly_jobs.py`` makes for a job."""
    return [f"{job_name}__{kind}" for kind in ("train", "predict", "tune", "score")]


def job_run_dag_ids(job_name: str) -> list[str]:
    """The DAGs whose runs a user who runs the job starts: scheduled scoring and one-off scoring of a file."""
    return [f"{job_name}__{kind}" for kind in ("predict", "score")]


def _team_name(dag_id: str) -> str | None:
    from airflow.configuration import conf

    if not conf.getboolean("core", "multi_team", fallback=False):
        return None
    from airflow.models.dag import DagModel

    return DagModel.get_team_name(dag_id)


def is_job_authorized(user: BaseUser, job_name: str, method: JobAccess) -> bool:
    """Whether ``user`` may read (``GET``) or run (``POST``) ``job_name``.

    Reading needs read access to every DAG of the job (its models come from ``__train``, its
    scores from ``__predict``, its one-off runs from ``__score``); running, i.e. scoring with its
    models or starting a scoring run, needs the right to trigger ``<job>__predict`` and
    ``<job>__score``, as Airflow's ``POST /dags/{dag_id}/dagRuns``.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    manager = auth_manager()
    try:
        if method == "GET":
            return all(
                manager.is_authorized_dag(method="GET", details=DagDetails(id=dag_id, team_name=_team_name(dag_id)), user=user)
                for dag_id in job_dag_ids(job_name)
            )
        return all(
            manager.is_authorized_dag(
                method="POST",
                access_entity=DagAccessEntity.RUN,
                details=DagDetails(id=dag_id, team_name=_team_name(dag_id)),
                user=user,
            )
            for dag_id in job_run_dag_ids(job_name)
        )
    except KeyError as exc:
        # SimpleAuthManager looks the token's role up in its own table and raises KeyError for a
        # role it does not know (a token signed before the role was removed): no access, not a 500.
        log.warning("user %r holds a role the auth manager does not know (%s): access to job %r refused", user.get_name(), exc, job_name)
        return False


def authorize_job(user: BaseUser, job_name: str, method: JobAccess) -> None:
    """Raise 403 unless ``user`` may read (``GET``) or run (``POST``) ``job_name``."""
    if is_job_authorized(user, job_name, method):
        return
    action = "read" if method == "GET" else "trigger runs of"
    dags = ", ".join(job_dag_ids(job_name) if method == "GET" else job_run_dag_ids(job_name))
    log.info("user %r refused %s access to job %r", user.get_name(), method, job_name)
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        detail=f"user {user.get_name()!r} may not {action} job {job_name!r} (DAGs {dags}): ask an Airflow admin for access",
    )


def job_scan() -> JobScan:
    """The job files for one request: the jobs that validate, and the errors of the files that make
    no job, logged here (:func:`pipelines.config.scan_jobs`).

    The one place the web app logs broken job files: a request scans once (a route that needs the
    whole list and :func:`served_job` passes its scan on), so it logs them once.
    """
    from pipelines.config import scan_jobs

    scan = scan_jobs()
    _log_broken(scan)
    return scan


def _log_broken(scan: JobScan) -> None:
    if scan.errors:
        log.error("job files that make no job: %s", scan.errors)


def served_job(user: BaseUser, name: str, method: JobAccess, scan: JobScan | None = None) -> JobConfig:
    """The job ``name`` if ``user`` may use it (403 otherwise, whether or not it exists); 404 naming
    only the jobs the user may read when it does not exist.

    Job files that do not validate leave the other jobs served (:func:`pipelines.config.scan_jobs`);
    their errors go to the log (:func:`job_scan`; ``scan``: the request's, already logged), not to
    the caller, as they show other jobs' settings.
    """
    from pipelines.config import scan_jobs

    authorize_job(user, name, method)
    scanned_here = scan is None
    scan = scan_jobs() if scan is None else scan
    if name in scan.jobs:
        return scan.jobs[name]
    if scanned_here:  # logged only when they may be why the job is missing
        _log_broken(scan)
    readable = [job for job in scan.jobs if is_job_authorized(user, job, "GET")]
    broken = ""
    if scan.errors:
        broken = (
            f"; {len(scan.errors)} job file(s) make no job until fixed (the server log and "
            "`anomaly-pipelines validate-config` say why)"
        )
    raise HTTPException(
        status.HTTP_404_NOT_FOUND,
        detail=f"no job named {name!r}; jobs you may read: {', '.join(readable) or 'none (add a file to config/jobs)'}{broken}",
    )
