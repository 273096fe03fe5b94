"""One hierarchy for every error the library raises on purpose.

Each message says what failed (job, source, column, rows or window) and what to do.
"""

from __future__ import annotations


def cut_middle(text: str, head: int, tail: int) -> str:
    """``text`` with all but its first ``head`` and last ``tail`` characters replaced by how many
    were left out, when that shortens it: how a message quotes a value that may be megabytes (the
    end tells apart long values that begin alike, and often says what to do)."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}… ({len(text) - head - tail:,} characters left out) …{text[len(text) - tail:]}"


class PipelineError(Exception):
    """Base class: anything the library raises deliberately."""


class ConfigError(PipelineError):
    """A job file or a parameter is invalid."""


class UntimedDuration(ConfigError):
    """A detector parameter given as a duration for data without timestamps: ``parameter`` and
    ``value`` let a caller whose user sets it otherwise (a CLI option) say how to there."""

    def __init__(self, parameter: str, value: str, advice: str) -> None:
        self.parameter, self.value = parameter, value
        super().__init__(f"parameter {parameter!r} is the duration {value!r} but the data has no timestamps; {advice}")


class SourceError(PipelineError):
    """Data could not be read: missing file, bad format, SQL error, empty window..."""


class DataValidationError(PipelineError):
    """A batch failed validation; ``summary`` lists what failed and ``report`` is the full result."""

    def __init__(self, message: str, *, report: dict | None = None, quarantine_path: str | None = None):
        super().__init__(message)
        self.report = report or {}
        self.quarantine_path = quarantine_path


class SourceDataError(SourceError, DataValidationError):
    """The source was read, but what it holds cannot be used (e.g. timestamps with and without a
    time zone): reading it again gives the same rows, so a retry cannot fix it. A source error for
    whoever catches those, and bad data for Airflow's tasks, which fail at once instead of retrying."""


class SourceConfigError(SourceError, ConfigError):
    """The source cannot be read as configured (a URL scheme no installed file system knows, a
    format its files do not tell): a retry reads nothing more. A source error for whoever catches
    those, and bad configuration for Airflow's tasks, which fail at once instead of retrying."""


class EmptyWindowError(SourceError):
    """The window holds no rows. A scheduled run retries (the data may land later); a run whose
    window a person gave fails at once (see the DAGs' ``extract``): it was retried for minutes."""


class StorageError(PipelineError):
    """A file or object store could not be reached: no credentials, an endpoint that does not
    answer. Neither bad data nor bad configuration: credentials that appear later (a refreshed
    role, a mounted secret) or a store back up make a retry succeed, so Airflow's tasks retry it."""


class ModelError(PipelineError):
    """Training, loading or scoring a model failed, or no model is serving."""


class SinkError(PipelineError):
    """Results could not be written."""


def install_hint(package: str, extra: str) -> str:
    """The command that installs ``extra``: anomaly-pipelines is installed from its repository
    (``make`` runs ``pip install -e``), not from PyPI, where ``pip install 'anomaly-pipelines[extra]'``
    finds no such project; ``-c constraints.txt`` keeps the versions the lock pins."""
    if package == "torch":
        # PyPI's Linux torch wheel is a CUDA build pulling GBs of nvidia-* packages: the CPU build
        # comes from PyTorch's own index, as the Makefile installs it.
        return (
            "pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt -e '.[lstm]' "
            "in the anomaly-pipelines repository (the CPU-only build; plain pip install torch takes a CUDA build on Linux)"
        )
    return f"pip install -c constraints.txt -e '.[{extra}]' in the anomaly-pipelines repository (or pip install {package})"


class MissingDependencyError(PipelineError):
    """An optional package is needed; the message gives the install command."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(f"{purpose} needs the optional package {package!r}: {install_hint(package, extra)}")
        # Kept so that a caller can say the same for its own purpose (which job, series and model).
        self.package, self.extra = package, extra
