"""``anomaly-pipelines``: the library's steps from a shell, with or without Airflow."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pipelines.errors import ConfigError, PipelineError, SinkError
from pipelines.paging import PAGE_SERIES, page_of  # tiny: --help names the page size

# Only the standard library and the errors at import time: the rest (pydantic, the job models) is
# imported once main() answers Ctrl-C, which a traceback of the imports answered before (see main).
if TYPE_CHECKING:
    from pipelines.config import JobConfig
    from pipelines.scoring import PublishResult

JOB_HELP = "a job's name (a file in config/jobs, or in $ANOMALY_PIPELINES_JOBS_DIR) or a job file's path"

#: detect's --format choices: pipelines.adhoc.FORMATS, written out so that building the parser
#: does not import the scoring stack.
DETECT_FORMATS = ("csv", "jsonl", "json", "parquet")


def _job(name: str) -> JobConfig:
    from pipelines.config import find_job

    return find_job(name)


def _run_id(command: str) -> str:
    from pipelines.workspace import utcnow

    return f"cli__{command}__{utcnow():%Y%m%dT%H%M%S%f}"


def _from_shell(path: str | None) -> str | None:
    """A path typed in a shell, relative to the working directory as a shell user means it (a
    job file's paths resolve against the project root instead); URLs are left as they are."""
    if path is None or "://" in path:
        return path
    absolute = os.path.abspath(os.path.expanduser(path))
    # abspath drops a trailing separator, which says the user meant a folder: keep it, so that an
    # output given as `out/` is refused as a folder instead of becoming a file named `out`.
    return absolute + os.sep if path.endswith(("/", os.sep)) and absolute != os.sep else absolute


def _refuse_overwriting(written: dict[str, str | None], read: dict[str, str | None]) -> None:
    """Fail before any work when a file to write is a file the command reads (or another one it
    writes): the scores replaced the data they came from, and nothing said so."""
    from pipelines.workspace import file_identity

    seen = {file_identity(path): option for option, path in read.items() if path}
    for option, path in written.items():
        if not path:
            continue
        identity = file_identity(path)
        if identity in seen:
            raise ConfigError(f"{option} {path!r} is the {seen[identity]} file: writing it would replace that file; give another path")
        seen[identity] = option


def _check_writable(path: str | None, option: str, what: str = "the output") -> None:
    """Fail before any work when the system would refuse to write ``path`` (a local file): detect
    scored the whole input, then failed with "[Errno 2] No such file or directory: '/proc/o.parquet'",
    which named no option. Folders still to be made are made by the write: their nearest existing
    parent is tried, with a temporary file that is removed at once."""
    if not path or "://" in path:
        return
    folder = os.path.dirname(path.rstrip(os.sep)) or os.sep
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        if not os.path.isdir(folder):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), folder)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        if exc.filename is None:  # the exit status of a refused path (1) goes by the path the system names
            exc.filename = folder
        raise SinkError(f"{option}: cannot write {what} {path}: {exc.strerror or exc} ({folder}); choose a writable path") from exc


def _json_params(text: str | None) -> dict:
    if not text:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON ({exc}): give an object, e.g. '{{\"season\": \"1d\"}}'") from None
    if not isinstance(params, dict):
        raise ConfigError(f"--params must be a JSON object of parameter names and values, got {text!r}")
    return params


def _finite(value: object) -> object:
    """``value`` with NaN and infinities as null, as the API's pydantic answers give them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _print_json(value: object) -> None:
    # A champion that cannot be loaded is compared at an infinite holdout error, which Python wrote
    # as `Infinity`: not JSON (JSON.parse, Go and serde refuse the whole document).
    value = _finite(value)
    # Series keys hold dimension values as typed (region=zürich): print them so, not as \u escapes,
    # unless stdout cannot hold them (an ASCII or cp1252 console): then escaped, still the same JSON,
    # instead of a UnicodeEncodeError traceback.
    text = json.dumps(value, indent=2, default=str, ensure_ascii=False, allow_nan=False)
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(value, indent=2, default=str, allow_nan=False)
    print(text)


def _fit_summary(job: str, results: list[dict], past: str) -> None:
    # On stderr, so that stdout stays one JSON document: with hundreds of series the JSON scrolls
    # by, and this last line is what a shell user reads.
    promoted = sum(1 for r in results if r.get("promoted"))
    print(f"job {job}: {past} {len(results)} series: {promoted} promoted, {len(results) - promoted} kept the serving model",
          file=sys.stderr)


@contextmanager
def _reporting_partial(job: str, past: str) -> Iterator[None]:
    """When some series failed, print what the others got (stdout's JSON, the summary) before the
    error: their versions were registered, and a script reading stdout found nothing."""
    try:
        yield
    except PipelineError as exc:
        done = getattr(exc, "completed", None)
        if done:
            _print_json(done)
            _fit_summary(job, done, past)
        raise


def _common_folder(paths: list[str]) -> str:
    # commonpath would turn s3://bucket into s3:/bucket.
    return os.path.dirname(os.path.commonprefix(paths)) or "."


def cmd_validate_config(args: argparse.Namespace) -> int:
    from pipelines.config import job_files, jobs_dir, scan_job_files

    if not args.paths and not jobs_dir().is_dir():
        # It was read as one job file: "FAIL /x: cannot read job file: No such file or directory".
        print(f"the job folder {jobs_dir()} does not exist: create it, or point $ANOMALY_PIPELINES_JOBS_DIR "
              "(default: config/jobs under $ANOMALY_PIPELINES_BASE_DIR) at the folder holding the job files", file=sys.stderr)
        return 1
    given = [Path(p) for p in args.paths] or [jobs_dir()]
    # A folder stands for its job files, as config/jobs does by default: it was read as one job
    # file and failed with "Is a directory".
    paths = [file for path in given for file in (job_files(path) if path.is_dir() else [path])]
    unique: dict[Path, Path] = {}
    for path in paths:  # a file named twice (a glob and its name) is checked once
        unique.setdefault(path.resolve(), path)
    paths = list(unique.values())
    if not paths:
        print(f"no job files (*.yaml, *.yml) found in {', '.join(map(str, given))}", file=sys.stderr)
        return 1
    # Job names are unique across the files checked, as Airflow's DAG files require.
    scan = scan_job_files(paths)
    for error in scan.errors:
        print(f"FAIL {error}", file=sys.stderr)
    failed = bool(scan.errors)
    for name, path in sorted(scan.files.items(), key=lambda item: paths.index(item[1])):
        job = scan.jobs[name]
        try:
            _check_suite(job)
        except ConfigError as exc:
            print(f"FAIL {path}: {exc}", file=sys.stderr)
            failed = True
            continue
        print(f"ok   {path}: job {job.name} ({job.model.kind}, {len(job.features)} features)")
    return 1 if failed else 0


def _check_suite(job: JobConfig) -> None:
    if job.validation.suite:  # Great Expectations takes seconds to import: only for a job with a suite
        from pipelines.validation.suite import check_suite

        check_suite(job)


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.runner import run_train
    from pipelines.workspace import training_window, utcnow

    job = _job(args.job)
    window = training_window(job, args.end or utcnow(), start=args.start)
    with _reporting_partial(job.name, "trained"):
        results = run_train(job, window, run_id=_run_id("train"))
    _print_json(results)
    _fit_summary(job.name, results, "trained")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pipelines.runner import run_tune
    from pipelines.workspace import training_window, utcnow

    job = _job(args.job)
    window = training_window(job, args.end or utcnow(), start=args.start)
    with _reporting_partial(job.name, "tuned"):
        results = run_tune(job, window, run_id=_run_id("tune"))
    _print_json(results)
    _fit_summary(job.name, results, "tuned")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipelines.runner import run_predict, run_score_file
    from pipelines.workspace import prediction_window

    job = _job(args.job)
    run_id = _run_id("predict")
    if args.input:
        if args.start or args.end:
            raise ConfigError("--input scores the whole file: leave out --start and --end")
        _refuse_overwriting({"--output": _from_shell(args.output)}, {"--input": _from_shell(args.input)})
        _check_writable(_from_shell(args.output), "--output")
        result = run_score_file(
            job, _from_shell(args.input), run_id=run_id, output=_from_shell(args.output), chunk_rows=args.chunk_rows
        )
    else:
        if args.output:
            raise ConfigError("--output goes with --input (one-off scoring); scheduled windows write the job's outputs")
        if not (args.start and args.end):
            # The library's "a scheduled data interval, or both 'start' and 'end'" names no option.
            raise ConfigError(f"job {job.name}: give the window to score with --start and --end, or a file with --input")
        result = run_predict(job, prediction_window(None, None, start=args.start, end=args.end, job=job), run_id=run_id)
    _print_json(result.to_dict())
    _predict_summary(job.name, result)
    return 0


def _predict_summary(job: str, result: PublishResult) -> None:
    # As detect's line: points are (series, timestamp) pairs, as the JSON's anomalies count them.
    paths = result.parquet_paths
    where = [f"{len(paths)} Parquet files under {_common_folder(paths)}"] if len(paths) > 1 else list(paths)
    where += [f"table {result.table}"] if result.table else []
    unscored = f", {len(result.unscored)} not scored (no model yet)" if result.unscored else ""
    print(f"job {job}: scored {sum(result.rows_per_series.values())} points in {len(result.rows_per_series)} series{unscored}: "
          f"{sum(result.anomalies.values())} anomalous; written to {' and '.join(where) or 'nothing'}", file=sys.stderr)
    if result.unscored:
        # The count alone said neither which groups nor what to do; the JSON's reasons scroll by.
        keys = list(result.unscored)
        shown = ", ".join(keys[:UNSCORED_SHOWN]) + (f" and {len(keys) - UNSCORED_SHOWN} more" if len(keys) > UNSCORED_SHOWN else "")
        print(f"not scored, no model yet: {shown}. Train them with `anomaly-pipelines train {job}` (or the {job}__train DAG) "
              "on a window holding their rows, then score again", file=sys.stderr)


def _check_picture(path: str, option: str) -> None:
    """Fail before any work when the picture cannot be drawn there: detect had scored and written
    its output when the picture failed, and a folder's name (``out/``) became a PNG file of that name."""
    from pipelines.plots import pyplot

    pyplot()  # matplotlib not installed: the install command, before any work
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = PurePosixPath(path).suffix.lower().lstrip(".")
    if suffix and suffix not in FigureCanvasBase.get_supported_filetypes():
        raise ConfigError(f"{option} {path!r}: .{suffix} is not a picture format; name it .png, .svg or .pdf")
    if path.endswith(("/", os.sep)) or ("://" not in path and os.path.isdir(path)):
        raise ConfigError(f"{option} {path!r} is a folder: give the picture's file name, e.g. {os.path.join(path, 'anomalies.png')!r}")


def cmd_detect(args: argparse.Namespace) -> int:
    from pipelines.adhoc import UNSCORED, detect_files

    _refuse_overwriting(
        {"--output": _from_shell(args.output), "--plot": _from_shell(args.plot)},
        {"--train": _from_shell(args.train), "--input": _from_shell(args.input)},
    )
    _check_writable(_from_shell(args.output), "--output")
    if args.plot:
        _check_picture(_from_shell(args.plot), "--plot")
        _check_writable(_from_shell(args.plot), "--plot", "the picture")
    frame = detect_files(
        _from_shell(args.train),
        _from_shell(args.input),
        timestamp=args.timestamp,
        timestamp_format=args.timestamp_format,
        features=[f.strip() for f in args.features.split(",") if f.strip()],
        dimensions=[d.strip() for d in (args.dimensions or "").split(",") if d.strip()],
        model=args.model,
        params=_json_params(args.params),
        contamination=args.contamination,
        output=_from_shell(args.output),
        format=args.format,
        encoding=args.encoding,
        delimiter=_typed_character(args.delimiter),
        decimal=_typed_character(args.decimal),
        thousands=_typed_character(args.thousands) if args.thousands is not None else None,
    )
    axis = "row" if "row" in frame else "timestamp"
    points = frame.drop_duplicates(["series", axis])
    flagged = frame[frame["is_anomaly"]].drop_duplicates(["series", axis])
    features, series = frame["feature"].nunique(), frame["series"].nunique()
    print(
        f"scored {len(points)} points x {features} feature{'s' * (features != 1)} in {series} "
        f"series: {len(flagged)} anomalous; written to {args.output}"
    )
    _unscored_summary(frame.attrs.get(UNSCORED, {}))
    if args.plot:
        from pipelines.plots import plot_outputs

        drawn = plot_outputs(frame, _from_shell(args.plot), title=f"{args.model} on {args.input}")
        print(f"drawn: {_panels(drawn)} in {args.plot}")
    return 0


#: How many unscored series detect explains one by one: thousands of lines would bury the summary.
UNSCORED_SHOWN = 10


def _unscored_summary(unscored: dict[str, str]) -> None:
    """Say on stderr which series of the --input file were not scored, and why (the others were
    written: the exit status is 0, so this is what tells the user the output is not complete)."""
    if not unscored:
        return
    print(f"not scored: {len(unscored)} series without a model (their rows are not in the output):", file=sys.stderr)
    for why in list(unscored.values())[:UNSCORED_SHOWN]:
        print(f"  - {why}", file=sys.stderr)
    if len(unscored) > UNSCORED_SHOWN:
        rest = list(unscored)[UNSCORED_SHOWN:]
        print(f"  - and {len(rest)} more: {', '.join(rest)}", file=sys.stderr)


def _typed_character(value: str) -> str:
    # A tab is hard to type in a shell: '\t' is written as two characters, as a job file writes it.
    return "\t" if value == "\\t" else value


def _panels(drawn: list) -> str:
    # "drawn: 1 panels": detect's own summary already said "1 feature".
    return f"{len(drawn)} panel{'s' * (len(drawn) != 1)} (series x feature)"


def cmd_plot(args: argparse.Namespace) -> int:
    from pipelines.plots import plot_job
    from pipelines.workspace import prediction_window

    job = _job(args.job)
    _check_picture(_from_shell(args.out), "--out")
    _check_writable(_from_shell(args.out), "--out", "the picture")
    window = prediction_window(None, None, start=args.start, end=args.end, job=job)
    drawn = plot_job(job, window.start, window.end, _from_shell(args.out), series=args.series)
    flagged = sum(panel.flagged for panel in drawn)
    print(f"drawn: {_panels(drawn)}, {flagged} flagged row{'s' * (flagged != 1)}, in {args.out}")
    return 0


def _refused_path(exc: PipelineError) -> bool:
    """Whether ``exc`` is a write the system refused on a path (no such folder, permission denied,
    disk full), said in the library's words (``plot --out /proc/x.png``): the exit status of a
    refused path is 1, whether the library or the system said it. The system's error names the
    path; a network or mail server's does not."""
    cause = exc.__cause__
    return isinstance(exc, SinkError) and isinstance(cause, OSError) and cause.filename is not None


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "cli"


def cmd_label(args: argparse.Namespace) -> int:
    from pipelines.labels import label_store

    job = _job(args.job)
    label = label_store(job).add(
        job.name,
        args.series,
        args.start,
        args.end,
        args.verdict == "true",
        feature=args.feature,
        value_min=args.value_min,
        value_max=args.value_max,
        note=args.note,
        author=args.author or _user(),
    )
    _print_json(label.to_dict())
    return 0


def cmd_unlabel(args: argparse.Namespace) -> int:
    from pipelines.labels import LabelError, label_store

    job = _job(args.job)
    removed = label_store(job).remove(job.name, args.series, args.start, args.end, feature=args.feature)
    if removed is None:
        raise LabelError(
            f"job {job.name}, series {args.series!r}{', feature ' + repr(args.feature) if args.feature else ''}: "
            f"no label on [{args.start}, {args.end}]; `anomaly-pipelines labels {job.name}` lists them with their exact start and end"
        )
    _print_json(removed.to_dict())
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from pipelines.labels import LabelError, as_utc, label_store

    job = _job(args.job)
    if args.start and args.end:
        # A reversed window matches no label: say so rather than print an empty list.
        start, end = as_utc(args.start, "--start", f"job {job.name}"), as_utc(args.end, "--end", f"job {job.name}")
        if end < start:
            raise LabelError(f"job {job.name}: --end {args.end} is before --start {args.start}; swap them")
    _print_json([label.to_dict() for label in label_store(job).labels(job.name, args.series, args.start, args.end)])
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import shlex

    from pipelines.training import champion_models, registry_for

    job = _job(args.job)
    page, pages, total = 1, 1, 1
    if args.series is not None:
        if args.page is not None:
            raise ConfigError(f"give --series or --page, not both: series {args.series!r} is one series, on no page of the others")
        champions = champion_models(job, args.series)
    else:
        # It read and printed every series' champion at once, 100,000 for some jobs.
        shown, where = page_of(registry_for(job).series(job.name), args.page or 1)
        page, pages, total = where["page"], where["pages"], where["total"]
        if page > pages:
            raise ConfigError(
                f"job {job.name}: --page {page} is past the last page: its models fill {pages} page{'s' if pages > 1 else ''} "
                f"({total} series, {PAGE_SERIES} a page); give --page 1 to {pages}"
            )
        champions = champion_models(job, keys=shown)
    # No series with a model, or none of the job's series (all on one page) has a champion yet.
    if not total or (not champions and pages == 1):
        print(f"job {job.name} has no trained model yet: run `anomaly-pipelines train {job.name}` (or {job.name}__train)", file=sys.stderr)
    _print_json(champions if args.full else [{k: v for k, v in c.items() if k != "metadata"} for c in champions])
    if page < pages:
        # On stderr: stdout stays one JSON document that a script can parse.
        again = ["anomaly-pipelines", "models", args.job, *(["--full"] if args.full else []), "--page", str(page + 1)]
        print(f"page {page} of {pages} ({total} series); next: {shlex.join(again)}", file=sys.stderr)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from pipelines.registry import Pruned
    from pipelines.training import registry_for

    job = _job(args.job)
    registry, keep = registry_for(job), args.keep or job.registry_keep
    if args.series is not None and not registry.holds(job.name, args.series):
        # It printed an empty result and succeeded: a misspelt key looked like a series with nothing to remove.
        held = registry.series(job.name)
        shown = ", ".join(held[:_SERIES_SHOWN])
        if len(held) > _SERIES_SHOWN:
            shown += f" (the first {_SERIES_SHOWN} of {len(held)})"
        holding = f"series it holds: {shown}" if held else f"no series yet (run `anomaly-pipelines train {job.name}` first)"
        raise ConfigError(f"job {job.name}: the model registry {registry.root} holds no series {args.series!r}; {holding}")
    if args.series is not None:
        pruned = {args.series: registry.prune(job.name, args.series, keep)}
    else:
        pruned = registry.prune_job(job.name, keep)

    def said(done: Pruned) -> dict[str, object]:
        out: dict[str, object] = {"removed": done.removed, "failed": done.failed}
        # Only when there are any: most series have no tuning record to remove.
        if done.records_removed:
            out["tuning_records_removed"] = done.records_removed
        if done.records_failed:
            out["tuning_records_failed"] = done.records_failed
        return out

    _print_json({series: said(done) for series, done in pruned.items()})
    return 1 if any(done.failed or done.records_failed for done in pruned.values()) else 0


#: Series an error of `prune --series` about a series the registry does not hold names.
_SERIES_SHOWN = 10


def cmd_tuning(args: argparse.Namespace) -> int:
    from pipelines.tuning import tuning_runs

    job = _job(args.job)
    runs = tuning_runs(job, args.series, args.limit)
    if not runs:
        print(f"job {job.name} has no tune runs{' for series ' + args.series if args.series else ''} yet: "
              f"run `anomaly-pipelines tune {job.name}` (or {job.name}__tune)", file=sys.stderr)
    _print_json(runs)
    return 0


def cmd_labels_import(args: argparse.Namespace) -> int:
    from pipelines.labels import import_labels

    job = _job(args.job)
    labels = import_labels(job, args.file, author=args.author or "")
    _print_json({"job": job.name, "file": args.file, "imported": len(labels)})
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _date_time(text: str) -> str:
    """A window bound as given, once it parses: argparse then names the option it was given to."""
    from pipelines.workspace import to_utc

    try:
        to_utc(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


#: As the README gives them; shown under every --help, where a script's author looks.
EXIT_STATUS = (
    "exit status: 0 done; 1 an invalid job file (validate-config) or a path the system refuses; 2 any other "
    "error (wrong arguments, a step that failed, even for one series); 130 Ctrl-C; 143 SIGTERM; 141 the reader "
    "of stdout went away"
)


def _command(commands: argparse._SubParsersAction, name: str, *, help: str) -> argparse.ArgumentParser:
    # `anomaly-pipelines detect --help` said nothing of what detect does: argparse shows a
    # command's `help` only in the list of commands.
    return commands.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", epilog=EXIT_STATUS)


def build_parser() -> argparse.ArgumentParser:
    from pipelines.detectors.params import MODEL_PARAMS

    parser = argparse.ArgumentParser(
        prog="anomaly-pipelines", description=(__doc__ or "").replace("``", ""), epilog=EXIT_STATUS  # the docstring is reST
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = _command(commands, "validate-config", help="check job files (default: every file in config/jobs)")
    validate.add_argument("paths", nargs="*", help="job files, or folders of them (default: config/jobs or $ANOMALY_PIPELINES_JOBS_DIR)")
    validate.set_defaults(func=cmd_validate_config)

    for name, func, helptext in (
        ("train", cmd_train, "train every series of a job on its training window"),
        ("tune", cmd_tune, "search detectors and parameters per series (Optuna); promote a winning challenger"),
    ):
        sub = _command(commands, name, help=helptext)
        sub.add_argument("job", help=JOB_HELP)
        sub.add_argument("--end", type=_date_time, help="end of the training window (ISO 8601; default now)")
        sub.add_argument("--start", type=_date_time, help="start of the window (default: end - training_window)")
        sub.set_defaults(func=func)

    predict = _command(commands, "predict", help="score a window with the champion models and write the outputs")
    predict.add_argument("job", help=JOB_HELP)
    predict.add_argument("--start", type=_date_time, help="window start (ISO 8601, inclusive); required without --input")
    predict.add_argument("--end", type=_date_time, help="window end (ISO 8601, exclusive); required without --input")
    predict.add_argument("--input", help="score this whole file instead of the job's source (one-off scoring)")
    predict.add_argument(
        "--output", help="with --input: the Parquet file to write (default: <outputs.parquet>/_one_off/job=<job>/<run id>.parquet)"
    )
    predict.add_argument(
        "--chunk-rows",
        type=_positive,
        # pipelines.config's DEFAULT_CHUNK_ROWS and MAX_CHUNK_ROWS, written out so that building the
        # parser does not import the config (tests hold them equal); run_score_file refuses more.
        default=250_000,
        help="with --input: rows per chunk, up to 10,000,000 (bounds memory; default %(default)s)",
    )
    predict.set_defaults(func=cmd_predict)

    detect = _command(commands, "detect", help="train on one file and score another, no Airflow, no registry")
    detect.add_argument("--train", required=True, help="training data (csv, jsonl, json or parquet)")
    detect.add_argument(
        "--input", required=True, help="data to score; a group without a model (no or too few rows in --train) is named, not scored"
    )
    detect.add_argument(
        "--timestamp", help="time column (default: the row number is the time axis; the output's `row` counts data rows from 1)"
    )
    detect.add_argument(
        "--timestamp-format", help="how the time column's text is written, as a strptime format, e.g. '%%d/%%m/%%Y %%H:%%M' for "
        "day-first dates (default: ISO 8601 and other forms that read one way only)"
    )
    detect.add_argument("--features", required=True, help="comma-separated numeric columns")
    detect.add_argument("--dimensions", help="comma-separated columns: one model per group")
    detect.add_argument("--model", default="seasonal_mad", help=f"detector kind: {', '.join(sorted(MODEL_PARAMS))} (default %(default)s)")
    detect.add_argument("--params", help="detector parameters as JSON")
    detect.add_argument("--contamination", type=float, default=0.005, help="share of training points flagged (default %(default)s)")
    detect.add_argument("--output", required=True, help="Parquet file to write")
    # No pickle: unpickling runs arbitrary code, and a job file's allow_pickle has no option here.
    detect.add_argument(
        "--format", choices=DETECT_FORMATS, help="format of both files (default: from each file's suffix, e.g. .csv, .jsonl.gz)"
    )
    detect.add_argument("--encoding", default="utf-8", help="text encoding of csv and jsonl files (default %(default)s; e.g. latin-1, cp1252)")
    detect.add_argument("--delimiter", default=",", help="what separates the fields of csv files (default '%(default)s'): ';', '\\t' for a tab, '|'")
    detect.add_argument("--decimal", default=".", help="the decimal point of numbers in csv files (default '%(default)s'): ',' for 1,5")
    detect.add_argument("--thousands", help="what groups thousands in numbers of csv files: ',' for 1,234.5, '.' for 1.234,5")
    detect.add_argument("--plot", metavar="PICTURE", help="also draw each series' values, expected band and anomalies here (.png, .svg or .pdf)")
    detect.set_defaults(func=cmd_detect)

    plot = _command(commands, "plot", help="draw a job's published outputs for a window (values, expected band, anomalies)")
    plot.add_argument("job", help=JOB_HELP)
    plot.add_argument("--start", required=True, type=_date_time, help="window start (ISO 8601, inclusive)")
    plot.add_argument("--end", required=True, type=_date_time, help="window end (ISO 8601, exclusive)")
    plot.add_argument("--series", help="one series, e.g. region=eu (default: all, at most a dozen panels)")
    plot.add_argument("--out", required=True, metavar="PICTURE", help="the picture to write (.png, .svg or .pdf)")
    plot.set_defaults(func=cmd_plot)

    label = _command(commands, "label", help="mark an anomaly event as a true anomaly or a false alarm")
    label.add_argument("job", help=JOB_HELP)
    label.add_argument("--series", required=True, help="the event's series, e.g. region=eu ('all' without dimensions)")
    label.add_argument("--start", required=True, help="first anomalous timestamp (ISO 8601 with offset, inclusive)")
    label.add_argument("--end", required=True, help="last anomalous timestamp (ISO 8601 with offset, inclusive)")
    label.add_argument("--verdict", required=True, choices=("true", "false"), help="true: a real anomaly; false: a false alarm")
    label.add_argument("--feature", help="one feature (default: the whole series)")
    label.add_argument("--note", default="", help="why, in a few words")
    label.add_argument("--author", help="who gives the verdict (default: your login name)")
    label.add_argument("--value-min", type=float, help="with --value-max: the event's value range (default: from the outputs)")
    label.add_argument("--value-max", type=float, help="with --value-min: the top of the event's value range")
    label.set_defaults(func=cmd_label)

    unlabel = _command(commands, "unlabel", help="withdraw the verdict on an event (the label given by `label`)")
    unlabel.add_argument("job", help=JOB_HELP)
    unlabel.add_argument("--series", required=True, help="the label's series")
    unlabel.add_argument("--start", required=True, help="the label's start (ISO 8601 with offset)")
    unlabel.add_argument("--end", required=True, help="the label's end (ISO 8601 with offset)")
    unlabel.add_argument("--feature", help="the label's feature (default: the whole-series label)")
    unlabel.set_defaults(func=cmd_unlabel)

    labels = _command(commands, "labels", help="list a job's labels as JSON")
    labels.add_argument("job", help=JOB_HELP)
    labels.add_argument("--series", help="only this series")
    labels.add_argument("--start", help="only labels ending at or after this time (ISO 8601 with offset)")
    labels.add_argument("--end", help="only labels starting at or before this time")
    labels.set_defaults(func=cmd_labels)

    models = _command(commands, 
        "models", help="list a job's serving models as JSON: version, training, threshold, metrics; for auto, the detector chosen and why"
    )
    models.add_argument("job", help=JOB_HELP)
    models.add_argument("--series", help="only this series")
    models.add_argument(
        "--page", type=_positive, help=f"which page of {PAGE_SERIES} series, by key, to list (default 1; not with --series)"
    )
    models.add_argument("--full", action="store_true", help="add each model's whole metadata.json")
    models.set_defaults(func=cmd_models)

    tuning = _command(commands, "tuning", help="list a job's tune runs as JSON: best trial, promoted or not and why, per series")
    tuning.add_argument("job", help=JOB_HELP)
    tuning.add_argument("--series", help="only this series")
    tuning.add_argument("--limit", type=_positive, default=10, help="most runs per series, newest first (default 10)")
    tuning.set_defaults(func=cmd_tuning)

    prune = _command(
        commands, "prune",
        help="remove a job's old model versions and tuning records now, as each train and tune run does for the series it "
        "trained (keeps the champion, earlier champions, the tuned version and the last hour's)",
    )
    prune.add_argument("job", help=JOB_HELP)
    prune.add_argument("--series", help="only this series")
    prune.add_argument(
        "--keep", type=_positive, help="newest versions and tuning records kept per series (default: the job's registry_keep)"
    )
    prune.set_defaults(func=cmd_prune)

    labels_import = _command(commands, "labels-import", help="store the labels of a CSV, JSON or JSONL file of known anomalies")
    labels_import.add_argument("job", help=JOB_HELP)
    labels_import.add_argument(
        "file", help=".csv, .json or .jsonl; columns series, start, end, verdict; optional feature, note, value_min, value_max"
    )
    labels_import.add_argument("--author", help="author of rows without one (default: import:<file name>)")
    labels_import.set_defaults(func=cmd_labels_import)
    for sub in commands.choices.values():
        # `anomaly-pipelines detect ... -v` was refused as an unrecognized argument: -v was only
        # read before the command. SUPPRESS: not given after it, the one given before stands.
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress to stderr")
    return parser


#: A failed validation's report is logged as a warning, then raised as the error: the same lines
#: came twice, the first as a WARNING that looked like another problem. Held until the command
#: ends, and shown then only if the error did not say it.
_HELD_LOGGER = "pipelines.validation"


class _WarnOnce(logging.Filter):
    """Passes each warning the first time only, and counts the repeats: a detector's warning that
    names no series ("season '1d' spans 1440 rows ... training had 250 rows") came once per series,
    2,000 identical lines of a detect over 2,000 groups, burying the summary."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, str], int] = {}
        self.held: list[logging.LogRecord] = []
        self.releasing = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or self.releasing:  # -v's progress lines differ anyway
            return True
        if record.name == _HELD_LOGGER:
            if not any(record is held for held in self.held):  # once, however many handlers ask
                self.held.append(record)
            return False
        key = (record.name, record.getMessage())
        self.seen[key] = self.seen.get(key, 0) + 1
        return self.seen[key] == 1

    def report(self, handlers: list[logging.Handler], error: str | None = None) -> None:
        """Show the held warnings but those ``error`` (the command's error line) says again, then
        the counts of repeated ones."""
        self.releasing = True
        try:
            for record in self.held:
                if error is None or record.getMessage() not in error:
                    for handler in handlers:
                        handler.handle(record)
        finally:
            self.releasing, self.held = False, []
        for (name, message), count in self.seen.items():
            if count > 1:
                first = message.splitlines()[0]
                print(f"(the warning of {name} \"{first[:80]}{'...' if len(first) > 80 else ''}\" came {count} times)",
                      file=sys.stderr)


class _Terminated(SystemExit):
    """SIGTERM, unwinding as SystemExit does (``except Exception`` does not catch it)."""


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM (`kill`, a timeout, a container stopping) ends Python without running `finally`
    # blocks, so a stopped run left its work folder behind (for one-off scoring, a copy of the
    # whole input in chunks). As SystemExit it unwinds like Ctrl-C: the work folder is removed.
    raise _Terminated(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C before the command runs: building the parser imports pydantic and the job and
        # detector models, a few tenths of a second that ended in a traceback of the imports.
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Only on the handler made here: a program calling main() keeps its own handlers as they are.
    once, ours = _WarnOnce(), [handler for handler in root.handlers if handler not in before]
    for handler in ours:
        handler.addFilter(once)
    if args.verbose:
        # Only this library's progress: Great Expectations and alembic log hundreds of INFO lines
        # about their own start-up, which would bury it. Their warnings still show.
        logging.getLogger("pipelines").setLevel(logging.INFO)
    # Signal handlers can only be set in the main thread (main() may be called from others).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main else None
    try:
        error = None
        try:
            status = args.func(args)
        except PipelineError as exc:
            error = str(exc)
            raise
        finally:
            once.report(ours, error)  # before the error line, which stays the last
        sys.stdout.flush()  # a closed pipe shows here, not at exit, where Python would print its traceback
        return status
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if _refused_path(exc) else 2
    except _Terminated as stopped:
        # As Ctrl-C says "interrupted": a run stopped by `kill` or a timeout ended without a word,
        # and its summary missing looked like a run still going or one that printed nothing.
        print("stopped (SIGTERM)", file=sys.stderr)
        return stopped.code
    except KeyboardInterrupt:
        # Ctrl-C: the run's `finally` blocks have removed its work folder; a traceback would only
        # show where it happened to stop.
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`anomaly-pipelines models job | head -1`): stop quietly, as other
        # shell tools do, and point stdout at /dev/null so that Python's flush at exit does not
        # fail on the closed pipe again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a real file (captured)
            pass
        return 141  # 128 + SIGPIPE, as a shell reports a tool stopped by a closed pipe
    except OSError as exc:
        # A path the system refuses (no such folder, permission denied, disk full) outside the
        # library's own checks: the system's message names the path.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:  # None: set outside Python, cannot be put back
            signal.signal(signal.SIGTERM, previous)
        for handler in ours:
            handler.removeFilter(once)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
