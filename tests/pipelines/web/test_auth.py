"""Every route needs a valid Airflow token or UI session, and the user's rights on the job's DAGs."""

from __future__ import annotations

import pytest

DETECT = "/api/v1/jobs/demo_web_metrics/detect"
MODEL = "/api/v1/jobs/demo_web_metrics/model"
SCORE_FILE = "/api/v1/jobs/demo_web_metrics/score-file"
LABELS = "/api/v1/jobs/demo_web_metrics/labels"

ROUTES = [
    ("POST", DETECT, {"points": [{"timestamp": "2024-03-03T00:00:00Z", "region": "eu", "requests": 1, "latency_ms": 1}]}),
    ("GET", MODEL, None),
    ("POST", SCORE_FILE, {"input": "data/demo/web_metrics.csv"}),
    ("GET", SCORE_FILE + "/manual__2024-01-01T00:00:00+00:00", None),
    ("POST", LABELS, {"series": "region=eu", "start": "2024-03-03T00:00:00Z", "end": "2024-03-03T01:00:00Z", "verdict": False}),
    ("GET", LABELS, None),
    ("GET", "/api/v1/jobs/demo_web_metrics/events", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_needs_credentials(client, method, path, body):
    answer = client.request(method, path, json=body)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "POST /auth/token" in answer.json()["detail"]


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"points": "none"}', b'{"points": [{"timestamp": NaN}]}'], ids=["malformed", "wrong-type", "nan"]
)
def test_a_bad_body_without_credentials_is_401_not_a_description_of_the_route(client, headers, body):
    plain = {"Content-Type": "application/json"}
    anonymous = client.post(DETECT, content=body, headers=plain)
    assert anonymous.status_code == 401
    assert "POST /auth/token" in anonymous.json()["detail"]
    assert client.post(DETECT, content=body, headers={**plain, "Authorization": "Bearer not.a.jwt"}).status_code == 401
    # With a login the same body is the usual 422 naming what is wrong.
    answer = client.post(DETECT, content=body, headers={**plain, **headers})
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_token_signed_with_another_secret_is_refused(client, method, path, body):
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    forged = JWTGenerator(secret_key="not-the-server-secret-" + "x" * 64, valid_for=3600, audience="apache-airflow").generate(
        {"sub": "admin", "role": "admin"}
    )
    answer = client.request(method, path, json=body, headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401
    assert "not valid" in answer.json()["detail"]


def test_an_expired_token_is_refused(client, mint):
    answer = client.get(MODEL, headers={"Authorization": f"Bearer {mint('admin', expires_in=-3600)}"})
    assert answer.status_code == 401
    assert "expired" in answer.json()["detail"]


@pytest.mark.parametrize("header", ["Bearer", "Bearer not.a.jwt", "Basic YWRtaW46YWRtaW4="])
def test_malformed_credentials_are_refused(client, header):
    assert client.get(MODEL, headers={"Authorization": header}).status_code == 401


def test_a_revoked_token_is_refused(client, mint):
    from pipelines.web.auth import auth_manager

    token = mint("admin")
    assert client.get(MODEL, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    auth_manager().revoke_token(token)  # what Airflow's logout does
    assert client.get(MODEL, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_the_ui_session_cookie_is_accepted(client, mint):
    client.cookies.set("_token", mint("viewer"))
    try:
        answer = client.get(MODEL)
    finally:
        client.cookies.clear()
    assert answer.status_code == 200
    assert answer.json()["job"] == "demo_web_metrics"


def test_an_explicit_bearer_token_wins_over_the_cookie(client, mint):
    client.cookies.set("_token", mint("admin"))
    try:
        answer = client.get(MODEL, headers={"Authorization": "Bearer not.a.jwt"})
    finally:
        client.cookies.clear()
    assert answer.status_code == 401


def test_a_browser_without_session_is_sent_to_airflows_login(client):
    answer = client.get("/docs", headers={"Accept": "text/html"}, follow_redirects=False)
    assert answer.status_code == 303
    assert "/auth/login" in answer.headers["location"] and "next=" in answer.headers["location"]


def test_a_viewer_may_read_but_not_score(client, mint, spike_points):
    viewer = {"Authorization": f"Bearer {mint('viewer')}"}
    assert client.get(MODEL, headers=viewer).status_code == 200
    answer = client.post(DETECT, json={"points": spike_points}, headers=viewer)
    assert answer.status_code == 403
    assert answer.json()["detail"] == (
        "user 'viewer' may not trigger runs of job 'demo_web_metrics' (DAGs demo_web_metrics__predict, demo_web_metrics__score): "
        "ask an Airflow admin for access"
    )
    answer = client.post(SCORE_FILE, json={"input": "data/demo/web_metrics.csv"}, headers=viewer)
    assert answer.status_code == 403


def test_a_user_role_may_score(client, mint, spike_points):
    answer = client.post(DETECT, json={"points": spike_points}, headers={"Authorization": f"Bearer {mint('user')}"})
    assert answer.status_code == 200


def test_authorization_goes_through_the_auth_manager(mint):
    """The decision is the auth manager's is_authorized_dag, per DAG of the job."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from pipelines.web.auth import is_job_authorized

    viewer = SimpleAuthManagerUser(username="v", role="viewer")
    op = SimpleAuthManagerUser(username="o", role="op")
    nobody = SimpleAuthManagerUser(username="n", role=None)
    assert is_job_authorized(viewer, "demo_web_metrics", "GET")
    assert not is_job_authorized(viewer, "demo_web_metrics", "POST")
    assert is_job_authorized(op, "demo_web_metrics", "POST")
    assert not is_job_authorized(nobody, "demo_web_metrics", "GET")


class _RefusingOneDag:
    """The real auth manager, except that it refuses one DAG (as per-DAG permissions in FAB can)."""

    def __init__(self, manager, dag_id: str, method: str):
        self._manager, self._dag_id, self._method = manager, dag_id, method

    def is_authorized_dag(self, *, method, details=None, **kwargs):
        if method == self._method and details is not None and details.id == self._dag_id:
            return False
        return self._manager.is_authorized_dag(method=method, details=details, **kwargs)

    def __getattr__(self, name):
        return getattr(self._manager, name)


def test_starting_a_scoring_run_needs_the_right_to_trigger_the_score_dag(client, mint, monkeypatch):
    """One-off scoring runs are runs of <job>__score: the right to trigger __predict alone is not enough."""
    from pipelines.web import auth

    real = auth.auth_manager()
    monkeypatch.setattr(auth, "auth_manager", lambda: _RefusingOneDag(real, "demo_web_metrics__score", "POST"))
    answer = client.post(SCORE_FILE, json={"input": "data/demo/web_metrics.csv"}, headers={"Authorization": f"Bearer {mint('op')}"})
    assert answer.status_code == 403, answer.text
    assert "(DAGs demo_web_metrics__predict, demo_web_metrics__score)" in answer.json()["detail"]


def test_reading_a_job_needs_read_access_to_its_score_dag(client, mint, monkeypatch):
    """GET score-file/<run_id> reads a __score run: a user who may not read that DAG may not read the job."""
    from pipelines.web import auth

    real = auth.auth_manager()
    monkeypatch.setattr(auth, "auth_manager", lambda: _RefusingOneDag(real, "demo_web_metrics__score", "GET"))
    answer = client.get(SCORE_FILE + "/manual__1", headers={"Authorization": f"Bearer {mint('viewer')}"})
    assert answer.status_code == 403, answer.text
    assert "demo_web_metrics__tune, demo_web_metrics__score" in answer.json()["detail"]


def test_a_token_with_a_role_the_auth_manager_does_not_know_is_403(client, mint):
    # Signed by the server, for a role since removed from its configuration: refused, not a 500.
    answer = client.get(MODEL, headers={"Authorization": f"Bearer {mint('nosuchrole')}"})
    assert answer.status_code == 403
    assert "may not read job 'demo_web_metrics'" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/jobs/demo_web_metrics/nothing", 404),
        ("GET", "/dashboard/data/jobs/demo_web_metrics/nothing", 404),
        ("GET", "/nothing", 404),
        ("GET", DETECT, 405),
        ("DELETE", MODEL, 405),
        ("HEAD", "/dashboard/", 405),
    ],
)
def test_a_path_or_method_without_a_route_is_401_without_credentials(client, headers, method, path, status):
    """No route's dependency runs for Starlette's own 404 and 405: an anonymous caller could map the
    routes (401 for a route, 404 for none) and learn which methods each takes."""
    anonymous = client.request(method, path, headers={"Accept": "application/json"})
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == "Bearer"
    if method != "HEAD":
        assert "POST /auth/token" in anonymous.json()["detail"]
    page = client.request(method, path, headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and "login" in page.headers["location"]
    assert client.request(method, path, headers=headers).status_code == status
