"""The Makefile's install and lock recipes: every package the venv gets is pinned by constraints.txt."""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _pins() -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)$", CONSTRAINTS.read_text(encoding="utf-8"), re.MULTILINE))


def _venv_recipe(tmp_path: Path) -> list[list[str]]:
    """The commands `make venv` would run for a fresh venv (a dry run: nothing is installed)."""
    out = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", "venv"],
        check=True, capture_output=True, text=True,
    ).stdout
    return [shlex.split(line) for line in out.splitlines() if "pip install" in line]


def test_build_backend_and_pip_are_pinned_and_satisfy_the_build_requirements() -> None:
    pins = _pins()
    assert "pip" in pins and "setuptools" in pins
    build_requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]
    setuptools = next(Requirement(r) for r in build_requires if Requirement(r).name == "setuptools")
    assert setuptools.specifier.contains(pins["setuptools"])


def test_every_install_of_make_venv_is_pinned(tmp_path: Path) -> None:
    installs = _venv_recipe(tmp_path)
    pins = _pins()
    assert len(installs) == 3
    pip_step, torch_step, project_step = installs
    assert pip_step[-1] == f"pip=={pins['pip']}"
    assert torch_step[-1] == f"torch=={pins['torch']}+cpu" and "--no-deps" in torch_step
    # The project's own build runs in an isolated environment that only --build-constraint pins.
    for option in ("-c", "--build-constraint"):
        assert project_step[project_step.index(option) + 1] == "constraints.txt"


def test_lock_keeps_pip_and_setuptools_and_drops_the_local_torch_label(tmp_path: Path) -> None:
    # A stand-in pip whose freeze prints what the venv's would: the real one would rewrite this
    # repository's lock. It answers as `pip freeze` does, leaving pip and setuptools out without --all.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_pip = bin_dir / "pip"
    fake_pip.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" --all "*) echo "pip==26.3"; echo "setuptools==84.2.1";; esac\n'
        'echo "pandas==3.1.1"\necho "torch==2.13.0+cpu"\necho "-e git+https://example.invalid/x#egg=x"\n',
        encoding="utf-8",
    )
    fake_pip.chmod(fake_pip.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "Makefile", work / "Makefile")
    shutil.copy(CONSTRAINTS, work / "constraints.txt")
    subprocess.run(["make", "-C", str(work), f"BIN={bin_dir}", "lock"], check=True, capture_output=True)
    assert (work / "constraints.txt").read_text(encoding="utf-8").splitlines() == [
        "pip==26.3", "setuptools==84.2.1", "pandas==3.1.1", "torch==2.13.0",
    ]
