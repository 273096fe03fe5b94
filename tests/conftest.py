"""Real servers for the tests: a throwaway PostgreSQL cluster and an S3 endpoint (moto server mode).

PostgreSQL comes from Debian's package (``make test`` installs it when missing); each test
session makes its own cluster in a temporary folder, listening on a free loopback port.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.project_copy import copy_project

REPO = Path(__file__).resolve().parent.parent

# Airflow reads its configuration when first imported: point it at a private, throwaway home
# before any test imports it (the developer's own var/airflow is never touched).
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="anomaly-pipelines-airflow-"))
# Removed when the test process exits (after every session fixture's teardown has stopped the
# servers using it): each run left its ~1.3 MB home behind in /tmp.
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    AIRFLOW_HOME=str(_AIRFLOW_HOME),
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
    AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__EXECUTOR="LocalExecutor",
    GX_ANALYTICS_ENABLED="false",
)

@pytest.fixture(autouse=True)
def _library_logging_as_configured() -> None:
    """Each test starts with the library's loggers as a fresh process has them: entry points
    called in-process (``benchmarks.__main__.main`` quiets ``pipelines`` to WARNING; Airflow's
    logging set-up may disable loggers that existed before it) must not blind later tests
    that read log records."""
    import logging

    logging.disable(logging.NOTSET)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in ("pipelines", "benchmarks"):
            logger.disabled = False
            logger.setLevel(logging.NOTSET)


PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    pytest.fail(
        "PostgreSQL is not installed: run `make test` (it installs Debian's postgresql package) "
        "or `apt-get install -y postgresql`"
    )


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root, developers may not.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database, valid for the whole test session."""
    bin_dir = _pg_bin()
    # Not under pytest's temp folder: a second pytest session resets its modes to 0700 and the
    # postgres user would lose its way to the cluster mid-run.
    base = Path(tempfile.mkdtemp(prefix="anomaly-pipelines-pg-"))
    data = base / "data"
    sock = base / "sock"
    data.mkdir()
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
        shutil.chown(sock, "postgres")
        os.chmod(base, 0o755)
        for parent in base.parents:  # the postgres user must be able to reach the folder
            if parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    port = _free_port()
    subprocess.run(
        _as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    log = base / "server.log"
    subprocess.run(
        _as_postgres_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-o",
                f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "anomalies"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/anomalies"
    finally:
        subprocess.run(
            _as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3 API on loopback (moto in server mode), with fake credentials in the environment."""
    port = _free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto server did not start within 30 s")
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[tuple[str, dict]]:
    """A new empty bucket; yields (bucket name, fsspec storage_options for s3fs)."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    yield name, {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}


@pytest.fixture
def s3_without_credentials(s3_bucket: tuple[str, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict]:
    """``s3_bucket`` reached with no credentials anywhere botocore looks; yields (bucket name,
    storage_options naming only the endpoint)."""
    bucket, options = s3_bucket
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no wait for an instance role
    # A new S3 file system: a cached one would still hold the credentials of earlier tests.
    return bucket, {"endpoint_url": options["endpoint_url"], "skip_instance_cache": True}


@pytest.fixture
def unreachable_s3_options() -> dict:
    """storage_options for an S3 endpoint on a local port nothing listens on, tried once (botocore
    would otherwise retry with back-off for seconds)."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    return {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "key": "testing",
        "secret": "testing",
        "skip_instance_cache": True,
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database (SQLite) in the throwaway AIRFLOW_HOME."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return _AIRFLOW_HOME


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's configuration in ``tmp_path``: the demo jobs read the shipped
    data but write their models, outputs and SQLite tables under ``tmp_path``."""
    copy_project(tmp_path)
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    return tmp_path


@pytest.fixture(scope="session")
def airflow_server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str):
    """``airflow standalone`` with this repo's DAGs and plugin over a private project copy
    (see tests/airflow_server.py), its metadata in a database of the PostgreSQL test server;
    one per test session, stopped at its end."""
    import sqlalchemy as sa

    from tests.airflow_server import start_server

    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text("CREATE DATABASE airflow_server"))
    admin.dispose()
    url = sa.make_url(postgres_url).set(database="airflow_server").render_as_string(hide_password=False)
    server = start_server(tmp_path_factory.mktemp("airflow-server"), database_url=url)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """URL of a fresh MariaDB database (Debian's ``mariadb-server``), valid for the whole session.

    The server runs in a temporary datadir on a free loopback port, its time zone at +09:00 so
    that tests notice a bound read in the server's zone instead of UTC. The URL's user ``reader``
    has a password (so wrong credentials fail for real) and every right on the database
    ``anomalies``; the fixture sets them up as root, who has no password, through the socket.
    """
    install_db, server = shutil.which("mariadb-install-db"), shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    if not install_db or not Path(server).exists():
        pytest.fail("MariaDB is not installed: run `make test` or `apt-get install -y mariadb-server`")
    import pymysql

    # Not under pytest's basetemp: every pytest session resets pytest-of-<user> to mode 0700,
    # which would lock the mysql user out of a server that another session is still using.
    base = Path(tempfile.mkdtemp(prefix="anomaly-pipelines-mariadb-"))
    data, sock = base / "data", base / "mysqld.sock"
    data.mkdir()
    as_root = os.geteuid() == 0
    if as_root:  # mariadbd drops to the mysql user, which must own the datadir
        shutil.chown(base, "mysql")
        shutil.chown(data, "mysql")
    user = ["--user=mysql"] if as_root else []
    installed = subprocess.run(
        [install_db, "--no-defaults", *user, f"--datadir={data}", "--auth-root-authentication-method=normal",
         "--skip-test-db"],
        capture_output=True,
        text=True,
    )
    if installed.returncode:
        pytest.fail(f"mariadb-install-db failed:\n{installed.stdout[-2000:]}{installed.stderr[-2000:]}")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--no-defaults", *user, f"--datadir={data}", f"--socket={sock}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--pid-file={base / 'mysqld.pid'}", f"--log-error={base / 'server.log'}",
         "--default-time-zone=+09:00", "--innodb-flush-log-at-trx-commit=0", "--innodb-buffer-pool-size=16M"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                admin = pymysql.connect(unix_socket=str(sock), user="root", autocommit=True)
                break
            except pymysql.err.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = base / "server.log"
                    pytest.fail(f"MariaDB did not start:\n{log.read_text()[-2000:] if log.exists() else ''}")
                time.sleep(0.2)
        with admin, admin.cursor() as cursor:
            cursor.execute("CREATE DATABASE anomalies")
            cursor.execute("CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY 'Rd-pass-4-tests'")
            cursor.execute("GRANT ALL ON anomalies.* TO 'reader'@'127.0.0.1'")
        yield f"mysql+pymysql://reader:Rd-pass-4-tests@127.0.0.1:{port}/anomalies"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)
