"""What the documentation promises about job files and the CLI holds for the code.

Every YAML example in README.md and docs/*.md validates as a job (a fragment such as
``alerts: ...`` on top of the demo web job), every ``anomaly-pipelines`` and ``airflow`` command
line the docs show parses with the real argument parser, and the field and parameter tables of
docs/CONFIGURATION.md (and the settings tables of docs/ALERTS.md and docs/MODELS.md) name
settings that exist, with the defaults the code has. Links and anchors resolve; every CLI
command, environment variable and API route is documented; the API's request examples are
bodies it takes; the quoted configuration error is the loader's; the label file example imports
after the demo's runs.
"""

from __future__ import annotations

import re
import shlex
from datetime import timedelta
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from pipelines.cli import build_parser
from pipelines.config import BigQuerySource, JobConfig, parse_job
from pipelines.detectors.params import MODEL_PARAMS
from pipelines.durations import parse_duration

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGURATION = ROOT / "docs" / "CONFIGURATION.md"
#: Fragments are laid over this job, so they may name its columns (region, requests, latency_ms).
BASE_JOB = ROOT / "config" / "jobs" / "demo_web_metrics.yaml"


def _fenced(language: str) -> list[tuple[str, str]]:
    """(``file:line``, text) of every fenced block in ``language`` of the docs."""
    blocks = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(rf"^```{language}\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
            blocks.append((f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}", match.group(1)))
    return blocks


def _documents(block: str) -> list[str]:
    """A block cut where a top-level key repeats (a list of alternatives, e.g. four ``source:``)."""
    documents, lines, keys = [], [], set()
    for line in block.splitlines():
        key = re.match(r"^([A-Za-z_]\w*):", line)
        if key and key.group(1) in keys:
            documents.append("\n".join(lines))
            lines, keys = [], set()
        if key:
            keys.add(key.group(1))
        lines.append(line)
    return [*documents, "\n".join(lines)]


YAML_EXAMPLES = [
    pytest.param(document, id=f"{where}#{n}")
    for where, block in _fenced("ya?ml")
    for n, document in enumerate(_documents(block))
]


@pytest.mark.parametrize("document", YAML_EXAMPLES)
def test_every_yaml_example_of_the_docs_is_a_valid_job(document: str) -> None:
    data = yaml.safe_load(document)
    assert isinstance(data, dict), "a YAML example should be a mapping of job settings"
    if not {"name", "source"} <= set(data):
        data = {**yaml.safe_load(BASE_JOB.read_text(encoding="utf-8")), **data}
    parse_job(data, source="example")  # raises ConfigError naming the field


def _command_lines() -> list[Any]:
    lines = []
    for where, block in _fenced("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("anomaly-pipelines "):
                lines.append(pytest.param(line, id=f"{where}:{line[18:60]}"))
    return lines


@pytest.mark.parametrize("line", _command_lines())
def test_every_documented_cli_command_parses(line: str) -> None:
    build_parser().parse_args(shlex.split(line)[1:])  # argparse exits on an unknown command or flag


def test_the_docs_show_cli_commands_and_yaml_examples() -> None:
    # Guards the extraction itself: a change of fence style must not make the tests above vacuous.
    assert len(YAML_EXAMPLES) >= 15 and len(_command_lines()) >= 10


# -- docs/CONFIGURATION.md's tables ------------------------------------------------------------


def _tables(header: str, path: Path = CONFIGURATION) -> list[tuple[str, list[list[str]]]]:
    """(the nearest ``#`` heading or `kind` paragraph above, rows) of each table with ``header``."""
    tables, above, rows, inside = [], "", [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if inside and line.startswith("|"):
            if not line.startswith("| ---"):
                rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
            continue
        if inside:
            tables.append((above, rows))
            inside, rows = False, []
        if line.strip() == header:
            inside = True
        elif line.startswith("#") or re.match(r"^`\w+` — ", line):
            above = line
    if inside:
        tables.append((above, rows))
    return tables


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X | None``, a discriminated union's first)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, type(int | None)) or get_args(annotation):
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _field(root: type[BaseModel], path: str):
    model, parts = root, path.split(".")
    for part in parts[:-1]:
        assert part in model.model_fields, f"{path}: {model.__name__} has no field {part!r}"
        model = _model_of(model.model_fields[part].annotation)
        assert model is not None, f"{path}: {part!r} holds no settings"
    by_alias = {f.alias or name: f for name, f in model.model_fields.items()}
    assert parts[-1] in by_alias, f"{path}: {model.__name__} has no field {parts[-1]!r}"
    return by_alias[parts[-1]]


def _same(documented: str, default: Any) -> bool:
    if isinstance(default, timedelta):
        return parse_duration(documented) == default
    if isinstance(default, str):
        return documented in (default, repr(default), f'"{default}"')  # `""` is the empty text
    value = yaml.safe_load(documented)
    if isinstance(default, float) and isinstance(value, str):
        value = float(value)  # YAML 1.1 reads 1e-9 as text
    return value == default


def _under(section: str, row: list[str]) -> list[str]:
    """``row`` with its names given as fields of the job's ``section`` (`email.to` -> `alerts.email.to`)."""
    return [re.sub(r"`([^`]+)`", rf"`{section}.\1`", row[0]), *row[1:]]


FIELD_ROWS = [
    *(
        pytest.param(row, BigQuerySource if above == "### BigQuery" else JobConfig, id=row[0])
        for above, rows in _tables("| field | default | meaning |")
        for row in rows
    ),
    # docs/ALERTS.md's settings and docs/MODELS.md's monitoring defaults name the fields of one section.
    *(
        pytest.param(_under("alerts", row), JobConfig, id=f"ALERTS.md:{row[0]}")
        for _, rows in _tables("| field | default | meaning |", ROOT / "docs" / "ALERTS.md")
        for row in rows
    ),
    *(
        pytest.param(_under("monitoring", row), JobConfig, id=f"MODELS.md:{row[0]}")
        for _, rows in _tables("| setting | default | reason |", ROOT / "docs" / "MODELS.md")
        for row in rows
    ),
]


@pytest.mark.parametrize(("row", "root"), FIELD_ROWS)
def test_documented_job_fields_exist_with_their_defaults(row: list[str], root: type[BaseModel]) -> None:
    names = _names(row[0])
    # "`schedules.train` / `predict`": a bare name after a dotted path is its sibling.
    parent = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
    paths = [names[0], *(name if "." in name else parent + name for name in names[1:])]
    fields = [_field(root, path) for path in paths]
    defaults = _names(row[1])
    # Only a default cell of exactly one value per field, with nothing else, is checked literally.
    if len(defaults) == len(fields) and re.fullmatch(r"(`[^`]+`)( / `[^`]+`|, `[^`]+`)*", row[1]):
        for path, field, documented in zip(paths, fields, defaults, strict=True):
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel | dict | list) or default is None:
                continue  # a whole section or an empty container: documented in words
            assert _same(documented, default), f"{path}: documented default {documented}, the code's is {default!r}"


def _kind(paragraph: str) -> str:
    """``iforest`` of "`iforest` — scikit-learn Isolation Forest ...", the paragraph above a table."""
    return re.match(r"^`(\w+)`", paragraph).group(1)


PARAM_ROWS = [
    pytest.param(_kind(above), row, id=f"{_kind(above)}:{row[0]}")
    for above, rows in _tables("| param | default | meaning |")
    for row in rows
]


@pytest.mark.parametrize(("kind", "row"), PARAM_ROWS)
def test_documented_detector_parameters_exist_with_their_defaults(kind: str, row: list[str]) -> None:
    fields = MODEL_PARAMS[kind].model_fields
    names, defaults = _names(row[0]), _names(row[1])
    for name in names:
        assert name in fields, f"{kind} has no parameter {name!r}; it has {', '.join(fields)}"
    if len(defaults) == len(names):
        for name, documented in zip(names, defaults, strict=True):
            assert _same(documented, fields[name].default), f"{kind}.{name}: documented {documented}, code {fields[name].default!r}"


@pytest.mark.parametrize("kind", sorted(MODEL_PARAMS))
def test_every_detector_parameter_is_documented(kind: str) -> None:
    documented = {name for k, row in ((p.values[0], p.values[1]) for p in PARAM_ROWS) if k == kind for name in _names(row[0])}
    # level_shift's table lists only what it adds to seasonal_mad's ("those of seasonal_mad plus").
    inherited = set(MODEL_PARAMS["seasonal_mad"].model_fields) if kind == "level_shift" else set()
    missing = set(MODEL_PARAMS[kind].model_fields) - documented - inherited
    assert not missing, f"docs/CONFIGURATION.md documents no {sorted(missing)} of {kind}"


@pytest.mark.parametrize(
    ("field", "allowed"),
    [
        ("model.kind", sorted(MODEL_PARAMS)),
        ("threshold", sorted(get_args(JobConfig.model_fields["threshold"].annotation.model_fields["kind"].annotation))),
    ],
)
def test_the_field_table_names_every_allowed_kind(field: str, allowed: list[str]) -> None:
    row = next(row for _, rows in _tables("| field | default | meaning |") for row in rows if _names(row[0]) == [field])
    assert set(allowed) <= set(_names(row[2])), f"docs/CONFIGURATION.md's {field} row misses {sorted(set(allowed) - set(_names(row[2])))}"


def test_the_search_space_table_is_the_search_spaces() -> None:
    # docs/MODELS.md ("Tuning") lists every tuned parameter and its range; nothing checked it.
    from pipelines.detectors.search_spaces import SEARCH_SPACES, Choice, IntRange

    def described(space: Any) -> str:
        if isinstance(space, Choice):
            return "one of " + ", ".join("none" if v is None else f"`{v}`" if isinstance(v, str) else str(v) for v in space.values)
        return f"{'integer ' if isinstance(space, IntRange) else ''}{space.low:g}–{space.high:g}{' (log)' if space.log else ''}"

    text = (ROOT / "docs" / "MODELS.md").read_text(encoding="utf-8")
    table = text.split("| kind | parameter | range |\n| --- | --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    documented: dict[str, dict[str, str]] = {}
    kind = ""
    for line in table.splitlines():
        kind_cell, names, documented_range = (cell.strip() for cell in line.strip("|").split(" | "))
        kind = _names(kind_cell)[0] if kind_cell else kind
        for name in _names(names):
            documented.setdefault(kind, {})[name] = documented_range
    assert set(documented) == set(SEARCH_SPACES)
    for kind, space in SEARCH_SPACES.items():
        assert set(documented[kind]) == set(space), f"docs/MODELS.md's search spaces of {kind}: {sorted(documented[kind])}"
        for name, dist in space.items():
            row = documented[kind][name]
            assert row.startswith("as ") or row.startswith(described(dist)), f"{kind}.{name}: documented {row}, code {described(dist)}"


# -- what a reader follows: links, commands, settings, API examples ----------------------------


def _slugs(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path`` (``## Windows and resampling`` ->
    ``windows-and-resampling``; a repeated heading gets ``-1``, ``-2``...)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    slugs: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = sum(1 for s in slugs if s == slug or re.fullmatch(rf"{re.escape(slug)}-\d+", s))
        slugs.add(slug if n == 0 else f"{slug}-{n}")
    return slugs


def test_every_internal_link_and_anchor_resolves() -> None:
    broken = []
    for path in DOCS:
        text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # https://, mailto:
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _slugs(linked):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def _all_docs_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCS)


def test_every_cli_command_is_documented() -> None:
    import argparse

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    text = _all_docs_text()
    missing = [name for name in commands if not re.search(rf"anomaly-pipelines {re.escape(name)}\b(?!-)", text)]
    assert not missing, f"no doc shows `anomaly-pipelines {missing[0]}`"


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    code = "\n".join(p.read_text(encoding="utf-8") for folder in ("pipelines", "plugins", "dags") for p in (ROOT / folder).rglob("*.py"))
    text = _all_docs_text()
    missing = sorted(name for name in set(re.findall(r"\bANOMALY_PIPELINES_[A-Z_]+\b", code)) if name not in text)
    assert not missing, f"the code reads {missing}, which no doc names"


def test_every_python_m_command_names_a_module() -> None:
    import importlib.util

    modules = set(re.findall(r"python -m ([\w.]+)", _all_docs_text()))
    assert modules, "the docs show no `python -m` command"
    assert not [m for m in modules if importlib.util.find_spec(m) is None]


def test_the_api_table_lists_every_route() -> None:
    from pipelines.web.api import router

    text = (ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    documented = {
        (method, path.split("?")[0])
        for method, path in re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) /anomaly-pipelines(/api/\S+?)`", text, re.MULTILINE)
    }
    served = {(method, route.path) for route in router.routes for method in route.methods}
    assert documented == served, f"only in docs/API.md: {documented - served}; undocumented: {served - documented}"


def test_the_api_request_examples_are_valid_bodies() -> None:
    import json

    from pipelines.web.schemas import DetectRequest, LabelRequest, ScoreFileRequest

    models = {"points": DetectRequest, "input": ScoreFileRequest, "verdict": LabelRequest}
    checked = 0
    for where, block in _fenced("json"):
        if "…" in block:
            continue  # an answer, shortened
        body = json.loads(block)
        model = next((m for key, m in models.items() if key in body), None)
        assert model is not None, f"{where}: a JSON example that is no request body the API takes"
        model.model_validate(body)
        checked += 1
    assert checked >= len(models)


def test_the_label_file_example_imports_after_the_demo(project: Path) -> None:
    # The example once named 2024-03-10, after the demo's data end: following the docs after
    # `make demo`, labels-import refused it ("no published output rows").
    from pipelines.config import get_job
    from pipelines.labels import import_labels
    from pipelines.runner import run_predict, run_train
    from pipelines.workspace import Window, to_utc

    (block,) = [block for _, block in _fenced("csv")]
    job = get_job("demo_web_metrics")
    run_train(job, Window(to_utc("2024-02-02T00:00:00Z"), to_utc("2024-03-01T00:00:00Z")), run_id="docs-train")
    run_predict(job, Window(to_utc("2024-03-01T00:00:00Z"), to_utc("2024-03-08T00:00:00Z")), run_id="docs-predict")
    (project / "known.csv").write_text(block, encoding="utf-8")
    assert len(import_labels(job, project / "known.csv")) == block.count("\n") - 1


def test_the_quoted_configuration_error_is_the_loaders(tmp_path: Path) -> None:
    # docs/CONFIGURATION.md opens with an error of a job file holding three mistakes.
    from pipelines.config import load_job_file
    from pipelines.errors import ConfigError

    quoted = CONFIGURATION.read_text(encoding="utf-8").split("```\nconfig/jobs/web.yaml: ", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(BASE_JOB.read_text(encoding="utf-8"))
    data["model"] = {"kind": "iforest", "params": {"n_estimators": 3}}
    data["schedules"]["predict"] = "0 25 * * *"
    data["outputz"] = {}
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_job_file(path)
    assert str(raised.value) == f"{path}: {quoted.rstrip()}"


def _airflow_command_lines() -> list[Any]:
    lines = []
    for where, block in _fenced("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("airflow "):
                lines.append(pytest.param(line, id=f"{where}:{line[8:50]}"))
    return lines


@pytest.mark.parametrize("line", _airflow_command_lines())
def test_every_documented_airflow_command_parses(line: str) -> None:
    from airflow.cli.cli_parser import get_parser

    get_parser().parse_args(shlex.split(line)[1:])  # argparse exits on an unknown command or flag


def test_every_cli_command_named_in_the_text_has_those_options() -> None:
    # Prose shows synopses (`anomaly-pipelines label <job> --series S ... [--feature F]`) that
    # do not parse as they stand; their command and option names must still be real.
    import argparse

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    wrong = []
    for path in DOCS:
        for synopsis in re.findall(r"`(anomaly-pipelines [^`]+)`", path.read_text(encoding="utf-8")):
            words = synopsis.split()[1:]
            command = next((w for w in words if not w.startswith("-")), "")
            if command == "<command>":
                continue
            if command not in commands:
                wrong.append(f"{path.name}: {synopsis}: no command {command!r}")
                continue
            options = {o for action in commands[command]._actions for o in action.option_strings} | {"-v", "--verbose"}
            wrong += [f"{path.name}: {synopsis}: no option {w}" for w in (w.strip("[]") for w in words) if w.startswith("-") and w not in options]
    assert not wrong, wrong


def test_every_extra_the_docs_name_exists() -> None:
    import tomllib

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"])
    text = _all_docs_text()
    named = {name for group in re.findall(r"\.\[([a-z0-9_,-]+)\]", text) for name in group.split(",")}
    named |= set(re.findall(r"`([a-z0-9_-]+)` extra", text))
    assert named and named <= extras, f"no such extra: {sorted(named - extras)}"


#: What docs/CONFIGURATION.md says a job file's SQL source refuses: the field, the value as a job
#: file writes it, the way the docs say to write it instead (None: they give none to check), and
#: the words of the docs that name the case.
SQL_REFUSALS = [
    ("connection", "{url: 'postgresql://reader:secret@db/metrics'}", "{url: 'postgresql://reader@db/metrics'}", "holding a password"),
    ("connection", "{url: 'postgresql://reader@db/metrics?sslpassword=x'}", None, "(`sslpassword`"),
    ("params", "{region: NO}", "{region: 'NO'}", "(`region: 'NO'`)"),
    ("params", "{code: 0123}", "{code: '0123'}", "`0123` (octal, 83)"),
    ("params", "{n: 1_000}", "{n: 1000}", "`1_000` (1000)"),
    ("params", "{t: 12:30}", "{t: '12:30'}", "`12:30` (base 60, 750)"),
    ("params", "{region: }", "{region: ''}", "(`region:`, null)"),
    ("params", "{region: [a, b]}", None, "a list or mapping"),
    ("params", "{my-region: a}", None, "`:my-region` would be `:my`"),
    ("query", "SELECT ts, cpu FROM m WHERE ts >= :start::timestamptz AND ts < :end",
     "SELECT ts, cpu FROM m WHERE ts >= CAST(:start AS timestamptz) AND ts < :end", "Write `CAST(:start AS timestamptz)`"),
]


@pytest.mark.parametrize(("field", "refused", "accepted", "words"), SQL_REFUSALS)
def test_the_documented_sql_source_refusals_are_the_loaders(
    tmp_path: Path, field: str, refused: str, accepted: str | None, words: str
) -> None:
    # YAML 1.1 misreads show only in the text of a file, so these go through load_job_file.
    from pipelines.config import load_job_file
    from pipelines.errors import ConfigError

    assert words in " ".join(CONFIGURATION.read_text(encoding="utf-8").split()), f"docs/CONFIGURATION.md changed: update {words!r}"
    source = {
        "connection": "{url: 'sqlite:///var/x.db'}",
        "query": "SELECT ts, cpu FROM m WHERE ts >= :start AND ts < :end",
        "params": "{}",
    }

    def job(**given: str) -> Path:
        path = tmp_path / "web.yaml"
        path.write_text(
            "name: web\ntimestamp: ts\nfrequency: 1h\nfeatures: [cpu]\nmodel: {kind: seasonal_mad}\nsource:\n  kind: sql\n"
            + "".join(f"  {key}: {value}\n" for key, value in {**source, **given}.items()),
            encoding="utf-8",
        )
        return path

    with pytest.raises(ConfigError, match=f"source.sql.{field}"):
        load_job_file(job(**{field: refused}))
    if accepted is not None:
        load_job_file(job(**{field: accepted}))


def test_the_dashboards_series_paging_is_the_codes() -> None:
    from pipelines.web import dashboard

    text = " ".join((ROOT / "docs" / "DASHBOARD.md").read_text(encoding="utf-8").split())
    assert f"`limit` (default {dashboard.SERIES_LIMIT}, at most {dashboard.MAX_SERIES_LIMIT:,})" in text
    assert f"{dashboard.SELECTOR_SERIES} in all; past {dashboard.SELECTOR_SERIES}" in text
    assert f"with `q`, {dashboard.SEARCH_SERIES} at a time" in text
    answer = text.split("`/series` lists", 1)[1].split("Every series at once", 1)[0]
    for key in ("total", "offset", "limit", "q", "next_offset", "series"):
        assert f"`{key}`" in answer, key


def _words(name: str) -> str:
    return " ".join((ROOT / name).read_text(encoding="utf-8").split())


def test_the_documented_write_lock_journal_and_quarantine_are_the_codes() -> None:
    from pipelines import runner
    from pipelines.sinks import parquet
    from pipelines.workspace import Workspace

    architecture = _words("docs/ARCHITECTURE.md")
    assert f"a lease object `job=<job>/{parquet.LOCK}`" in architecture
    assert f"up to {parquet.LEASE_SECONDS:.0f} s (`parquet.LEASE_SECONDS`)" in architecture
    assert f"waits (up to {parquet.WRITE_LOCK_TIMEOUT_SECONDS / 60:.0f} minutes)" in architecture
    assert f"a journal in `job=<job>/{parquet.PENDING}/`" in architecture
    assert f"`job=<job>/{parquet.LOCK}`" in _words("docs/CONFIGURATION.md")
    assert f"`job=<job>/{parquet.PENDING}/`" in _words("docs/DASHBOARD.md")
    # A one-off chunk's rejected rows are inside its run's quarantine folder, as documented.
    one_off = Workspace("web", "run1", "score")
    assert one_off.quarantine + one_off.chunk_part(3) == str(Path(one_off.quarantine) / "chunk3")
    workspace = Workspace("web", "run1", "predict")
    # Work and quarantine folders are per purpose: a train and a predict due at one instant share a run id.
    assert Path(workspace.root).parts[-4:] == ("work", "web", "predict", "run1")
    assert Path(workspace.quarantine).parts[-4:] == ("quarantine", "web", "predict", "run1")
    for name in ("docs/ARCHITECTURE.md", "docs/CONFIGURATION.md"):
        assert "`chunk<N>/`" in _words(name) or "`var/quarantine/<job>/score/<run>/chunk<N>/`" in _words(name), name
        assert "`var/quarantine/<job>/<purpose>/<run>/`" in _words(name), name
        assert f"`{runner.SUPERSEDED}`" in _words(name), name


def test_the_documented_detector_and_reader_limits_are_the_codes() -> None:
    from pipelines.detectors import level_shift, mset, sequential
    from pipelines.detectors.params import MAX_MSET_BANDWIDTH
    from pipelines.sources import file

    configuration = _words("docs/CONFIGURATION.md")
    assert f"a number in (0, {MAX_MSET_BANDWIDTH:.0e}]".replace("e+0", "e") in configuration
    assert mset._OUTSIDE_UNITS == 1.0 and "more than one standard unit outside the memory's range" in configuration
    assert f"capped at ±{sequential._RESIDUAL_CAP:.0e}".replace("e+0", "e") in configuration
    assert f"clipped at {level_shift._STEP_CAP:.0f} scales" in configuration
    assert f"parsed {file.JSONL_ROWS:,} lines at a time" in configuration
