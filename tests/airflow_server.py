"""A real Airflow for tests that need the whole product: ``airflow standalone`` (API server with
this repo's plugin, scheduler, DAG processor, triggerer; LocalExecutor, SQLite) in a throwaway
home, on a free loopback port, over a private copy of the project's configuration.

Used through the session fixture ``airflow_server`` of ``tests/conftest.py``. Jobs that only
such tests need live in ``tests/airflow_jobs/`` and are copied into the server's project.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.project_copy import copy_project

REPO = Path(__file__).resolve().parent.parent
TEST_JOBS = Path(__file__).resolve().parent / "airflow_jobs"
USERNAME = PASSWORD = "admin"
#: Fixed so tests may mint tokens with Airflow's own generator; this server is throwaway.
# 64 bytes: Airflow signs with HS512, and PyJWT warns (on every token) of a shorter key.
JWT_SECRET = "anomaly-pipelines-test-secret-of-sixty-four-bytes-for-hs512-keys"
FINISHED = {"success", "failed"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(home: Path, project: Path, port: int, database_url: str | None = None) -> dict[str, str]:
    """The environment of the server and of every CLI call against it: one home, one project.

    ``database_url`` is Airflow's metadata database (default: SQLite in the home). A scheduler,
    an api-server and a backfill writing one SQLite file at once hit "database is locked" under
    load, so the fixture gives it PostgreSQL.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "ANOMALY_PIPELINES"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database_url or f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USERNAME}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__API_AUTH__JWT_SECRET=JWT_SECRET,
        # New job files must show up within seconds, not Airflow's default minutes.
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="5",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        ANOMALY_PIPELINES_BASE_DIR=str(project),
        ANOMALY_PIPELINES_HOME=str(project / "var"),
        GX_ANALYTICS_ENABLED="false",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    return env


def make_project(project: Path) -> Path:
    """The repo's config (plus the test-only jobs) and a link to its data, under ``project``."""
    copy_project(project)
    for job in sorted(TEST_JOBS.glob("*.yaml")) if TEST_JOBS.is_dir() else []:
        shutil.copy(job, project / "config" / "jobs" / job.name)
    return project


@dataclass
class AirflowServer:
    home: Path
    project: Path
    port: int
    env: dict[str, str] = field(repr=False)
    process: subprocess.Popen | None = field(default=None, repr=False)
    username: str = USERNAME
    password: str = PASSWORD
    _token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "standalone.log"

    def start(self, timeout: float = 240) -> AirflowServer:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({self.username: self.password}))
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"],
            env=self.env,
            cwd=self.project,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so stop() ends the whole process group
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._healthy():
                return self
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"airflow standalone was not healthy within {timeout:.0f} s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "dag_processor")
        return all(health.get(part, {}).get("status") == "healthy" for part in parts)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def token(self) -> str:
        if self._token is None:
            answer = httpx.post(
                f"{self.url}/auth/token", json={"username": self.username, "password": self.password}, timeout=30
            )
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, json: Any = None, params: dict | None = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}{path}",
            json=json,
            params=params,
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=60,
        )

    def cli(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """The ``airflow`` CLI against this server's home."""
        return self.run("airflow", *args, check=check, timeout=timeout)

    def pipelines_cli(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """The ``anomaly-pipelines`` CLI on this server's project."""
        return self.run("pipelines.cli", *args, check=check, timeout=timeout)

    def run(self, module: str, *args: str, check: bool, timeout: float) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", module, *args],
            env=self.env,
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{module} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api("GET", f"/api/v2/dags/{dag_id}").status_code == 200:
                return
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout:.0f} s:\n{self.log_tail()}")

    def unpause(self, dag_id: str) -> None:
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def runs(self, dag_id: str, run_type: str) -> list[dict]:
        """The runs of ``dag_id`` of one type (scheduled, manual, asset_triggered, backfill)."""
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"run_type": run_type})
        answer.raise_for_status()
        return answer.json()["dag_runs"]

    def wait_for_runs_of_type(self, dag_id: str, run_type: str, timeout: float = 180) -> list[dict]:
        """The runs of that type once there is one (the scheduler creates them), or [] at the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.runs(dag_id, run_type):
                return found
            time.sleep(2)
        return []

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if answer.status_code == 200:
                state = answer.json()["state"]
                if state in FINISHED:
                    return state
            time.sleep(2)
        raise TimeoutError(f"run {run_id} of {dag_id} still {state} after {timeout:.0f} s:\n{self.log_tail()}")


def start_server(base: Path, database_url: str | None = None) -> AirflowServer:
    port = _free_port()
    home = base / "airflow"
    project = make_project(base / "project")
    env = server_env(home, project, port, database_url)
    return AirflowServer(home=home, project=project, port=port, env=env).start()
