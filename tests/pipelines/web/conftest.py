"""The plugin's FastAPI app over a project with trained demo models, and Airflow tokens.

Tokens are minted by Airflow's own JWT generator with the secret of the lead's test server
(``tests/airflow_server.JWT_SECRET``), so the same tokens are valid for the in-process app and
for the real api-server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.airflow_server import JWT_SECRET
from tests.project_copy import using_project

# Before any token is signed or checked (Airflow caches its signer and validator).
os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = JWT_SECRET

REPO = Path(__file__).resolve().parents[3]
TRAIN_START, TRAIN_END = "2024-02-02T00:00:00Z", "2024-03-01T00:00:00Z"
#: The day of the eu traffic spike (14:00-17:00) in data/demo/web_metrics.csv.
SPIKE_DAY = "2024-03-03"


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model registry of demo_web_metrics trained once for the session (real models)."""
    from pipelines.config import get_job
    from pipelines.runner import run_train
    from pipelines.workspace import Window, to_utc

    base = tmp_path_factory.mktemp("trained")
    with using_project(base):
        run_train(get_job("demo_web_metrics"), Window(to_utc(TRAIN_START), to_utc(TRAIN_END)), run_id="web-train")
    return base / "var" / "models"


@pytest.fixture
def web_project(project: Path, trained_models: Path) -> Path:
    """The ``project`` copy with demo_web_metrics' trained registry (demo_sensors untrained)."""
    shutil.copytree(trained_models, project / "var" / "models")
    return project


@pytest.fixture
def tuned(web_project: Path) -> dict[str, dict]:
    """``web_project`` after one tune run of demo_web_metrics (3 trials per series): its results by series."""
    from pipelines.config import TuneConfig, get_job
    from pipelines.runner import run_tune
    from pipelines.workspace import Window, to_utc

    job = get_job("demo_web_metrics").model_copy(update={"tune": TuneConfig(trials=3)})
    return {r["series"]: r for r in run_tune(job, Window(to_utc(TRAIN_START), to_utc(TRAIN_END)), run_id="tune-web")}


@pytest.fixture
def app(web_project: Path, airflow_db: Path):
    """The real app; Airflow's metadata DB is needed because token revocation is checked there."""
    from pipelines.web.app import create_app

    return create_app()


@pytest.fixture
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def mint(airflow_db: Path) -> Callable[..., str]:
    """``mint(role, username=..., expires_in=...)``: a JWT for a SimpleAuthManager user."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from pipelines.web.auth import auth_manager

    def _mint(role: str = "admin", *, username: str | None = None, expires_in: int = 3600) -> str:
        user = SimpleAuthManagerUser(username=username or role, role=role)
        return auth_manager().generate_jwt(user, expiration_time_in_seconds=expires_in)

    return _mint


@pytest.fixture
def headers(mint) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint('admin')}"}


@pytest.fixture(scope="session")
def demo_rows() -> list[dict]:
    """data/demo/web_metrics.csv as JSON records (timestamps as text, numbers as numbers)."""
    import pandas as pd

    frame = pd.read_csv(REPO / "data" / "demo" / "web_metrics.csv")
    return frame.to_dict(orient="records")


@pytest.fixture
def spike_points(demo_rows: list[dict]) -> list[dict]:
    """The 72 rows (3 regions x 24 hours) of the spike day: 144 data points."""
    return [dict(row) for row in demo_rows if row["timestamp"].startswith(SPIKE_DAY)]
