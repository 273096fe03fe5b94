"""How the command ends when it is stopped: a word on stderr and the status the README gives."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, signal, sys
from pipelines import cli

def stop(args):
    os.kill(os.getpid(), signal.SIGTERM)
    return 0

cli.cmd_models = stop  # read by build_parser: the command `models` runs this
sys.exit(cli.main(["models", "any_job"]))
"""


def test_sigterm_says_stopped_and_exits_143():
    # Ctrl-C said "interrupted"; `kill` or a timeout ended the run without a word.
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr, done.stdout) == (143, "stopped (SIGTERM)\n", "")
