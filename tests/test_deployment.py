"""Structure of the container deployment: docker-compose.yaml, Dockerfile and .dockerignore.

No Docker engine runs in CI, so the stack is never built or started here; these tests read the
files and check them against each other, against Airflow's configuration reference, and against
the paths the library resolves.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from sqlalchemy.engine import make_url

from pipelines import config as job_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"
DEPLOYMENT_DOC = ROOT / "docs" / "DEPLOYMENT.md"

CONTAINER_HOME = PurePosixPath("/opt/airflow")

# Long-running Airflow services and the command each one runs.
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}
# Environment a service may add on top of the shared anchor (never replacing a shared value).
EXTRA_ENV_ALLOWED = {
    "airflow-worker": {"DUMB_INIT_SETSID"},
    "airflow-init": {"AIRFLOW_UID"},
    "airflow-cli": {"CONNECTION_CHECK_MAX_COUNT"},
}
# Config sections owned by providers that the test venv may not have installed.
PROVIDER_SECTIONS = {"celery"}
# Folders Airflow or the jobs create at run time, so they need not exist in a checkout.
RUNTIME_DIRS = {"logs", "var"}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # safe_load resolves the `<<: *airflow-common` merge keys as Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def common(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["x-airflow-common"]


@pytest.fixture(scope="module")
def airflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services.items() if name.startswith("airflow-")}


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(command)


def _binds(service: dict[str, Any]) -> dict[PurePosixPath, str]:
    """Container path -> host path of the service's bind mounts (``host:container[:mode]``)."""
    result = {}
    for volume in service.get("volumes", []):
        # The default of ${AIRFLOW_PROJ_DIR:-.} holds a colon, so substitute it before splitting.
        host, container, *_mode = volume.replace("${AIRFLOW_PROJ_DIR:-.}", ".").split(":")
        result[PurePosixPath(container)] = host
    return result


def _host_path_for(container_path: str, binds: dict[PurePosixPath, str]) -> Path | None:
    """Where ``container_path`` lives in the repository, if a bind mount covers it."""
    path = PurePosixPath(container_path)
    for target, host in binds.items():
        if path == target or target in path.parents:
            return ROOT / host / path.relative_to(target)
    return None


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends with a dangling line continuation"
    return instructions


def _copy_sources_and_target(args: str) -> tuple[list[str], str]:
    words = [w for w in shlex.split(args) if not w.startswith("--")]
    return words[:-1], words[-1]


def _pip_installs(instructions: list[tuple[str, str]]) -> list[tuple[int, str]]:
    """(index in the Dockerfile, the pip command) for every `pip install` in a RUN."""
    found = []
    for index, (keyword, args) in enumerate(instructions):
        if keyword != "RUN":
            continue
        for part in re.split(r"&&|;", args):
            if re.search(r"\bpip install\b", part):
                found.append((index, part.strip()))
    return found


def _airflow_source(relative: str) -> Path:
    """A file of the installed Airflow, found without importing airflow (importing it writes
    $AIRFLOW_HOME/airflow.cfg)."""
    spec = importlib.util.find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("apache-airflow is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


#: The extras the image installs: Prophet is one of the platform's detectors, plots are cheap;
#: torch (lstm) and the other warehouses' drivers are left to deployments that need them.
IMAGE_EXTRAS = ("s3", "postgres", "alerts", "prophet", "plot")
BASE_IMAGE = re.compile(r"^apache/airflow:(?P<airflow>3\.3\.\d+)-python(?P<python>3\.11)$")


# --------------------------------------------------------------------------- compose: services


def test_compose_has_every_service_of_the_stack(services: dict[str, Any]) -> None:
    required = {"postgres", "redis", "airflow-init", *AIRFLOW_COMMANDS}
    assert required <= set(services), f"missing services: {sorted(required - set(services))}"


@pytest.mark.parametrize(("name", "command"), sorted(AIRFLOW_COMMANDS.items()))
def test_airflow_service_runs_its_component(services: dict[str, Any], name: str, command: str) -> None:
    assert _command(services[name]) == command


def test_every_airflow_service_builds_the_project_image(
    common: dict[str, Any], airflow_services: dict[str, Any]
) -> None:
    assert common["build"] == "."
    assert (ROOT / common["build"] / "Dockerfile").is_file()
    for name, service in airflow_services.items():
        assert service.get("build") == common["build"], name
        assert "image" not in service, f"{name} would run a stock image instead of the project's"


def test_common_environment_configures_celery_and_postgres(common: dict[str, Any]) -> None:
    env = common["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"

    metadata = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (metadata.drivername, metadata.host, metadata.database) == ("postgresql+psycopg2", "postgres", "airflow")
    results = make_url(env["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+"))
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert (results.host, results.database) == ("postgres", "airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@redis:6379/0"
    assert "AIRFLOW__CORE__FERNET_KEY" in env


def test_every_airflow_service_shares_the_common_environment(
    common: dict[str, Any], airflow_services: dict[str, Any]
) -> None:
    shared = common["environment"]
    for name, service in airflow_services.items():
        env = service["environment"]
        changed = {key for key in shared if env.get(key) != shared[key]}
        assert not changed, f"{name} drops or overrides shared settings {sorted(changed)}"
        extra = set(env) - set(shared)
        assert extra <= EXTRA_ENV_ALLOWED.get(name, set()), f"{name} adds unexpected settings {sorted(extra)}"


def test_airflow_setting_names_exist_in_airflow(common: dict[str, Any]) -> None:
    """A misspelt AIRFLOW__SECTION__KEY is silently ignored by Airflow, so check each name."""
    reference = _airflow_source("config_templates/config.yml").read_text(encoding="utf-8")
    described = yaml.safe_load(reference)
    for variable in common["environment"]:
        if not variable.startswith("AIRFLOW__"):
            continue
        section, key = variable.removeprefix("AIRFLOW__").lower().split("__")
        if section not in described:
            assert section in PROVIDER_SECTIONS, f"{variable}: Airflow has no [{section}] section"
            continue
        assert key in described[section]["options"], f"{variable}: Airflow has no option [{section}] {key}"


def test_simple_auth_manager_has_a_documented_admin(
    common: dict[str, Any], airflow_services: dict[str, Any]
) -> None:
    env = common["environment"]
    module_name, _, class_name = env["AIRFLOW__CORE__AUTH_MANAGER"].rpartition(".")
    assert class_name == "SimpleAuthManager"
    module_file = _airflow_source(module_name.removeprefix("airflow.").replace(".", "/") + ".py")
    assert f"class {class_name}(" in module_file.read_text(encoding="utf-8")

    users = dict(pair.split(":") for pair in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","))
    assert users.get("admin") == "admin"
    assert set(users.values()) <= {"viewer", "user", "op", "admin"}

    # The api-server must see a password for every user, or it invents one at start-up.
    binds = _binds(airflow_services["airflow-apiserver"])
    passwords_file = _host_path_for(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"], binds)
    assert passwords_file is not None, "the passwords file is not on a mounted folder"
    passwords = json.loads(passwords_file.read_text(encoding="utf-8"))
    assert set(users) <= set(passwords)
    # The documented login is the one configured.
    assert "**admin** / **admin**" in DEPLOYMENT_DOC.read_text(encoding="utf-8")
    assert passwords["admin"] == "admin"


def test_user_is_the_configurable_airflow_uid(common: dict[str, Any], airflow_services: dict[str, Any]) -> None:
    assert common["user"] == "${AIRFLOW_UID:-50000}:0"
    for name, service in airflow_services.items():
        expected = "0:0" if name == "airflow-init" else common["user"]
        assert service["user"] == expected, name


# --------------------------------------------------------------------------- compose: health and order


def test_postgres_is_version_16_with_a_readiness_check(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert postgres["environment"]["POSTGRES_DB"] == "airflow"


def test_redis_has_a_ping_healthcheck(services: dict[str, Any]) -> None:
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_apiserver_publishes_8080_and_checks_the_version_endpoint(services: dict[str, Any]) -> None:
    apiserver = services["airflow-apiserver"]
    assert "8080:8080" in apiserver["ports"]
    test = apiserver["healthcheck"]["test"]
    assert test[:3] == ["CMD", "curl", "--fail"]
    assert test[-1] == "http://localhost:8080/api/v2/version"


def test_scheduler_healthcheck_server_is_enabled(common: dict[str, Any], services: dict[str, Any]) -> None:
    assert common["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert services["airflow-scheduler"]["healthcheck"]["test"][-1] == "http://localhost:8974/health"


def test_airflow_init_migrates_the_metadata_database(services: dict[str, Any]) -> None:
    init = services["airflow-init"]
    script = _command(init)
    assert "/entrypoint airflow db migrate" in script
    # The folders the services write to are created and handed to the airflow user first.
    assert script.index("chown") < script.index("db migrate")
    assert "var/outputs" in script and "var/models" in script


@pytest.mark.parametrize("name", sorted(AIRFLOW_COMMANDS))
def test_components_start_after_init_and_healthy_backends(services: dict[str, Any], name: str) -> None:
    depends_on = services[name]["depends_on"]
    assert depends_on["airflow-init"] == {"condition": "service_completed_successfully"}
    assert depends_on["postgres"] == {"condition": "service_healthy"}
    assert depends_on["redis"] == {"condition": "service_healthy"}


def test_init_waits_for_healthy_backends(services: dict[str, Any]) -> None:
    assert services["airflow-init"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def test_worker_waits_for_the_execution_api(services: dict[str, Any]) -> None:
    # Celery workers run tasks through the api-server's execution API.
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}


def test_every_depends_on_names_a_defined_service(services: dict[str, Any]) -> None:
    for name, service in services.items():
        unknown = set(service.get("depends_on", {})) - set(services)
        assert not unknown, f"{name} depends on undefined services {sorted(unknown)}"


# --------------------------------------------------------------------------- compose: volumes and paths


@pytest.mark.parametrize("folder", ["dags", "plugins", "config", "logs", "var"])
def test_airflow_services_mount_the_project_folders(airflow_services: dict[str, Any], folder: str) -> None:
    for name, service in airflow_services.items():
        assert _binds(service).get(CONTAINER_HOME / folder) == f"./{folder}", name


def test_bind_mounted_host_paths_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for host in _binds(service).values():
            if not host.startswith("./"):
                continue  # a named volume
            if PurePosixPath(host).parts[0] in RUNTIME_DIRS:
                continue
            assert (ROOT / host).exists(), f"{name} mounts {host}, which is not in the repository"


def test_job_paths_resolve_onto_mounted_folders(
    common: dict[str, Any], airflow_services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the containers' base dir, a job's default output, registry and jobs folder land on mounts."""
    base = common["environment"]["ANOMALY_PIPELINES_BASE_DIR"]
    assert base == str(CONTAINER_HOME)
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", base)
    monkeypatch.delenv("ANOMALY_PIPELINES_JOBS_DIR", raising=False)
    defaults = job_config.JobConfig.model_fields
    resolved = {
        "outputs": job_config.resolve_path(job_config.Outputs().parquet),
        "registry": job_config.resolve_path(defaults["registry"].default),
        "jobs": str(job_config.jobs_dir()),
    }
    assert resolved == {
        "outputs": "/opt/airflow/var/outputs",
        "registry": "/opt/airflow/var/models",
        "jobs": "/opt/airflow/config/jobs",
    }
    for name, service in airflow_services.items():
        binds = _binds(service)
        for what, path in resolved.items():
            assert _host_path_for(path, binds) is not None, f"{name}: {what} at {path} is not on a mounted folder"


# --------------------------------------------------------------------------- compose: results database


def test_results_database_is_created_in_postgres(common: dict[str, Any], services: dict[str, Any]) -> None:
    url = make_url(common["environment"]["ANOMALIES_DB_URL"])
    postgres = services["postgres"]
    assert url.host == "postgres"
    assert (url.username, url.password) == (
        postgres["environment"]["POSTGRES_USER"],
        postgres["environment"]["POSTGRES_PASSWORD"],
    )
    assert url.database != postgres["environment"]["POSTGRES_DB"], "results must not share Airflow's database"

    init_scripts = [
        ROOT / host
        for target, host in _binds(postgres).items()
        if target.parent == PurePosixPath("/docker-entrypoint-initdb.d")
    ]
    assert init_scripts, "postgres mounts no script into /docker-entrypoint-initdb.d"
    sql = "\n".join(path.read_text(encoding="utf-8") for path in init_scripts)
    created = re.findall(r"^\s*CREATE DATABASE\s+(\w+)", sql, flags=re.IGNORECASE | re.MULTILINE)
    assert created == [url.database]


def test_documented_outputs_example_is_a_valid_job_setting() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DEPLOYMENT_DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    examples = [yaml.safe_load(block) for block in blocks]
    outputs = [example["outputs"] for example in examples if isinstance(example, dict) and "outputs" in example]
    assert len(outputs) == 1
    parsed = job_config.Outputs.model_validate(outputs[0])
    assert parsed.table is not None
    assert parsed.table.connection.url_env == "ANOMALIES_DB_URL"


# --------------------------------------------------------------------------- Dockerfile


def test_base_image_is_airflow_3_3_on_python_3_11() -> None:
    froms = [args for keyword, args in _dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) == 1
    match = BASE_IMAGE.match(froms[0])
    assert match, f"base image {froms[0]!r} is not apache/airflow:3.3.<patch>-python3.11"
    project = _pyproject()["project"]
    airflow_range = next(
        req for req in project["optional-dependencies"]["airflow"] if req.startswith("apache-airflow")
    )
    assert SpecifierSet(airflow_range.removeprefix("apache-airflow")).contains(match["airflow"])
    assert SpecifierSet(project["requires-python"]).contains(f"{match['python']}.0")


def test_base_image_matches_the_airflow_pinned_in_constraints() -> None:
    if not CONSTRAINTS.exists():
        pytest.skip("constraints.txt (the lock file) is not generated yet; the lead creates it from pip freeze")
    pins = re.findall(r"^apache-airflow==(\S+)\s*$", CONSTRAINTS.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert len(pins) == 1, "constraints.txt must pin apache-airflow exactly once"
    froms = [args for keyword, args in _dockerfile_instructions() if keyword == "FROM"]
    match = BASE_IMAGE.match(froms[0])
    assert match
    assert match["airflow"] == pins[0]


def test_constraints_pin_everything_the_image_installs() -> None:
    """Every requirement of `.[s3,postgres,alerts]` has an exact pin, so two builds install the same versions."""
    if not CONSTRAINTS.exists():
        pytest.skip("constraints.txt (the lock file) is not generated yet; the lead creates it from pip freeze")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned = {
        canonicalize_name(name)
        for name in re.findall(r"^([A-Za-z0-9._-]+)==\S+", CONSTRAINTS.read_text(encoding="utf-8"), re.MULTILINE)
    }
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = [Requirement(r).name for r in [*project["dependencies"], *extras["s3"], *extras["postgres"], *extras["alerts"]]]
    unpinned = sorted({canonicalize_name(name) for name in wanted} - pinned)
    assert not unpinned, f"constraints.txt does not pin {unpinned}"


def test_project_is_installed_with_the_lock_as_the_airflow_user() -> None:
    instructions = _dockerfile_instructions()
    installs = _pip_installs(instructions)
    assert installs, "the Dockerfile installs nothing with pip"
    for index, command in installs:
        words = shlex.split(command)
        assert words[words.index("-c") + 1] == "constraints.txt", f"unpinned install: {command}"
        assert "--no-cache-dir" in words, command
        users = [args for keyword, args in instructions[:index] if keyword == "USER"]
        # The base image runs as airflow by default, and its pip refuses to install as root.
        assert not users or users[-1] == "airflow", f"{command} runs as {users[-1]}"

    project_installs = [command for _, command in installs if f'".[{",".join(IMAGE_EXTRAS)}]"' in command]
    assert len(project_installs) == 1
    extras = _pyproject()["project"]["optional-dependencies"]
    assert set(IMAGE_EXTRAS) <= set(extras)


def test_the_dependency_layer_installs_the_extras_the_project_layer_does() -> None:
    """The dependency layer's requirements (built from pyproject.toml) and the project install name
    the same extras, so the project layer installs nothing the lock has not pinned already."""
    [listed] = [args for keyword, args in _dockerfile_instructions() if keyword == "RUN" and "requirements.txt" in args]
    assert re.search(r"for name in \(([^)]*)\)", listed).group(1) == ", ".join(repr(name) for name in IMAGE_EXTRAS), listed


def test_pip_and_the_build_backend_come_from_the_lock() -> None:
    """pip is brought to its pinned version before anything else, and the project's own build
    (run by pip in an isolated environment that `-c` does not reach) is pinned by --build-constraint."""
    installs = [shlex.split(command) for _, command in _pip_installs(_dockerfile_instructions())]
    first = [word for word in installs[0] if not word.startswith("-") and word not in ("pip", "install", "constraints.txt")]
    assert installs[0][:2] == ["pip", "install"] and "pip" in installs[0][2:] and not first, installs[0]
    assert re.search(r"^pip==\S+$", CONSTRAINTS.read_text(encoding="utf-8"), re.MULTILINE), "constraints.txt must pin pip"
    project = next(words for words in installs if f".[{','.join(IMAGE_EXTRAS)}]" in words)
    assert project[project.index("--build-constraint") + 1] == "constraints.txt", project


def test_files_are_copied_before_the_installs_that_need_them() -> None:
    instructions = _dockerfile_instructions()
    installs = [index for index, _ in _pip_installs(instructions)]
    copied_before: dict[int, set[str]] = {}
    seen: set[str] = set()
    for index, (keyword, args) in enumerate(instructions):
        if keyword == "COPY":
            sources, _target = _copy_sources_and_target(args)
            seen |= {source.rstrip("/") for source in sources}
        copied_before[index] = set(seen)
    readme = _pyproject()["project"]["readme"]
    for index in installs:
        assert {"constraints.txt", "pyproject.toml", readme} <= copied_before[index]
    # Cache-friendly: dependencies install before the code is copied, so a code edit reuses them.
    assert "pipelines" not in copied_before[installs[0]]
    assert "pipelines" in copied_before[installs[-1]]


@pytest.mark.parametrize("folder", ["dags", "plugins", "config"])
def test_airflow_folders_are_copied_into_the_image(folder: str) -> None:
    targets = {}
    for keyword, args in _dockerfile_instructions():
        if keyword == "COPY":
            sources, target = _copy_sources_and_target(args)
            for source in sources:
                targets[source.rstrip("/")] = target.rstrip("/")
    assert targets.get(folder) == f"/opt/airflow/{folder}"


def test_image_sets_the_same_base_dir_as_compose(common: dict[str, Any]) -> None:
    envs = [args for keyword, args in _dockerfile_instructions() if keyword == "ENV"]
    values = dict(arg.split("=", 1) for env in envs for arg in shlex.split(env))
    assert values["ANOMALY_PIPELINES_BASE_DIR"] == "/opt/airflow"
    assert values["ANOMALY_PIPELINES_BASE_DIR"] == common["environment"]["ANOMALY_PIPELINES_BASE_DIR"]


# --------------------------------------------------------------------------- .dockerignore


def _ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("path", [".venv", "var", ".git", "__pycache__", "pipelines/__pycache__", ".pytest_cache"])
def test_dockerignore_excludes_local_state(path: str) -> None:
    patterns = _ignore_patterns()
    assert any(
        fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.removeprefix("**/")) for pattern in patterns
    ), f"{path} would be sent to the Docker build"


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    patterns = _ignore_patterns()
    for keyword, args in _dockerfile_instructions():
        if keyword != "COPY":
            continue
        for source in _copy_sources_and_target(args)[0]:
            name = source.rstrip("/")
            hidden = [p for p in patterns if fnmatch.fnmatch(name, p)]
            assert not hidden, f"COPY {source} is excluded by .dockerignore pattern(s) {hidden}"


def test_every_copied_path_exists_in_the_repository() -> None:
    missing = []
    for keyword, args in _dockerfile_instructions():
        if keyword != "COPY":
            continue
        for source in _copy_sources_and_target(args)[0]:
            if source == CONSTRAINTS.name and not CONSTRAINTS.exists():
                continue  # reported by the skip in test_base_image_matches_the_airflow_pinned_in_constraints
            if not (ROOT / source).exists():
                missing.append(source)
    assert not missing, f"docker build would fail: {missing} not in the build context"
