"""Google credentials from Airflow connections and Application Default Credentials.

The service-account keys are generated here (a fresh RSA key, never a real account); building
credentials from them needs no network, so nothing here talks to Google.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from google.oauth2 import service_account

from pipelines import gcp
from pipelines.errors import ConfigError, MissingDependencyError


@pytest.fixture(scope="module")
def keyfile() -> dict[str, Any]:
    """A service-account key file (JSON) of project ``key-project`` with a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "key-project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "anomalies@key-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.fixture(autouse=True)
def _no_ambient_google_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ADC must see only what a test sets: no developer key, gcloud config or project variable."""
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # nothing listens: no metadata server
    monkeypatch.setenv("NO_GCE_CHECK", "True")


@pytest.fixture
def adc_keyfile(monkeypatch: pytest.MonkeyPatch, keyfile: dict[str, Any], tmp_path: Path) -> None:
    """Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS names the service-account key."""
    path = tmp_path / "adc.json"
    path.write_text(json.dumps(keyfile))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, extra: dict[str, Any]) -> None:
    connection = {"conn_type": "google_cloud_platform", "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


@pytest.mark.parametrize(
    ("extra", "project"),
    [
        (lambda key: {"keyfile_dict": json.dumps(key), "project": "conn-project"}, "conn-project"),
        (lambda key: {"keyfile_dict": key}, "key-project"),
        (lambda key: {"extra__google_cloud_platform__keyfile_dict": json.dumps(key)}, "key-project"),
        (
            lambda key: {
                "extra__google_cloud_platform__keyfile_dict": json.dumps(key),
                "extra__google_cloud_platform__project": "prefixed-project",
                "extra__google_cloud_platform__scope": "https://www.googleapis.com/auth/bigquery, "
                "https://www.googleapis.com/auth/drive",
            },
            "prefixed-project",
        ),
    ],
    ids=["keyfile_dict as text", "keyfile_dict as object", "prefixed extra", "prefixed project and scope"],
)
def test_a_connection_with_a_key_gives_service_account_credentials(
    monkeypatch: pytest.MonkeyPatch, keyfile: dict[str, Any], extra: Any, project: str
) -> None:
    given = extra(keyfile)
    set_connection(monkeypatch, "gcp_test", given)

    credentials, found = gcp.connection_credentials("gcp_test")

    assert isinstance(credentials, service_account.Credentials)
    assert credentials.service_account_email == "anomalies@key-project.iam.gserviceaccount.com"
    assert credentials.project_id == "key-project"
    assert found == project
    scope = given.get("extra__google_cloud_platform__scope")
    expected = [s.strip() for s in scope.split(",")] if scope else list(gcp.DEFAULT_SCOPES)
    assert list(credentials.scopes) == expected


def test_a_connection_with_a_key_path_reads_the_file(
    monkeypatch: pytest.MonkeyPatch, keyfile: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(keyfile))
    set_connection(monkeypatch, "gcp_path", {"key_path": str(path)})

    credentials, project = gcp.connection_credentials("gcp_path")

    assert isinstance(credentials, service_account.Credentials)
    assert (credentials.service_account_email, project) == ("anomalies@key-project.iam.gserviceaccount.com", "key-project")


@pytest.mark.usefixtures("adc_keyfile")
def test_a_connection_without_a_key_uses_adc_with_its_project(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "gcp_adc", {"project": "conn-project"})

    credentials, project = gcp.connection_credentials("gcp_adc")

    assert isinstance(credentials, service_account.Credentials)
    assert project == "conn-project"


@pytest.mark.usefixtures("adc_keyfile")
def test_without_a_connection_application_default_credentials_are_used() -> None:
    client = gcp.bigquery_client(purpose="The bigquery source")

    assert isinstance(client._credentials, service_account.Credentials)
    assert client._credentials.service_account_email == "anomalies@key-project.iam.gserviceaccount.com"
    assert client.project == "key-project"


def test_the_client_gets_the_connections_credentials_and_project(
    monkeypatch: pytest.MonkeyPatch, keyfile: dict[str, Any]
) -> None:
    set_connection(monkeypatch, "gcp_client", {"keyfile_dict": keyfile, "project": "conn-project"})

    client = gcp.bigquery_client(purpose="The bigquery output", conn_id="gcp_client", location="EU")

    assert isinstance(client._credentials, service_account.Credentials)
    assert (client.project, client.location) == ("conn-project", "EU")
    assert client._connection.API_BASE_URL == "https://bigquery.googleapis.com"


def test_an_api_endpoint_uses_anonymous_credentials_at_that_address() -> None:
    client = gcp.bigquery_client(purpose="The bigquery source", project="p", api_endpoint="http://127.0.0.1:9050")

    assert isinstance(client._credentials, AnonymousCredentials)
    assert client._connection.API_BASE_URL == "http://127.0.0.1:9050"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"keyfile_dict": "{not json"}, r"'gcp_bad': keyfile_dict is not JSON .*service-account key file"),
        ({"keyfile_dict": "[1, 2]"}, r"'gcp_bad': keyfile_dict must hold a JSON object"),
        ({"keyfile_dict": {"type": "service_account"}}, r"'gcp_bad': the service-account key is not valid"),
        ({"key_path": "/nonexistent/key.json"}, r"'gcp_bad': cannot read key_path '/nonexistent/key.json'"),
        ({"key_secret_name": "s"}, r"'gcp_bad': extras \['key_secret_name'\] are not supported here"),
    ],
)
def test_a_bad_connection_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], message: str
) -> None:
    set_connection(monkeypatch, "gcp_bad", extra)

    with pytest.raises(ConfigError, match=f"^Airflow connection {message}"):
        gcp.connection_credentials("gcp_bad")


def test_a_missing_connection_says_how_to_create_it() -> None:
    with pytest.raises(ConfigError, match=r"connection 'gcp_nowhere' does not exist.*AIRFLOW_CONN_GCP_NOWHERE"):
        gcp.connection_credentials("gcp_nowhere")


def test_without_any_credentials_the_error_says_where_they_may_come_from() -> None:
    with pytest.raises(ConfigError, match=r"^no Google credentials found .*GOOGLE_APPLICATION_CREDENTIALS"):
        gcp.bigquery_client(purpose="The bigquery source", project="p")


def test_without_the_client_the_error_names_the_bigquery_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", None)  # as if not installed

    with pytest.raises(
        MissingDependencyError,
        match=r"^The bigquery output needs the optional package 'google-cloud-bigquery': "
        r"pip install -c constraints.txt -e '\.\[bigquery\]' in the anomaly-pipelines repository",
    ):
        gcp.bigquery_client(purpose="The bigquery output", project="p")


def test_a_large_result_is_not_held_twice_in_memory(tmp_path: Path) -> None:
    # In a child process: its peak resident memory is the measure, and it must start fresh.
    script = tmp_path / "peak.py"
    script.write_text(
        "import resource\n"
        "import numpy as np, pyarrow as pa\n"
        "from pipelines import gcp\n"
        "class Rows:  # what QueryJob.result() gives, with a 256 MB result\n"
        "    def to_arrow(self, create_bqstorage_client):\n"
        "        return pa.table({f'c{i}': np.arange(8_000_000, dtype='float64') for i in range(4)})\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "frame = gcp.to_frame(Rows(), 'http://localhost:9050')\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024\n"
        "print(grown / frame.memory_usage().sum())\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)

    assert float(done.stdout.split()[-1]) < 1.5  # Arrow table and frame together would be 2


@pytest.mark.parametrize(
    ("code", "reason", "message", "conflict"),
    [
        (400, "invalidQuery", "Could not serialize access to table p:d.t due to concurrent update", True),
        (400, "invalidQuery", "Query error: Transaction is aborted due to concurrent update against table p:d.t.", True),
        (409, "aborted", "Transaction is aborted due to concurrent update against table p:d.t.", True),
        (500, "aborted", "", True),  # what the client makes of a job whose errorResult reason is aborted
        (409, "duplicate", "Already Exists: Table p:d.t", False),
        (400, "invalidQuery", "Unrecognized name: x at [1:8]", False),
        (403, "rateLimitExceeded", "Exceeded rate limits: too many table update operations for this table", False),
    ],
)
def test_a_concurrent_update_is_told_from_other_errors(code: int, reason: str, message: str, conflict: bool) -> None:
    from google.api_core.exceptions import from_http_status

    error = from_http_status(code, message, errors=[{"reason": reason, "message": message}])

    assert gcp.is_concurrent_update(error) is conflict
    problem, todo = gcp.explain(error)
    assert problem.startswith("another write to the same table ran at the same time") is conflict
    assert ("Fix the query" in todo) is (not conflict and code == 400)
