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


# As the `anomaly-pipelines` script starts, with a real Ctrl-C (SIGINT) the moment the job models
# start to load: pydantic and the job and detector models take a few tenths of a second, when a
# user who typed the wrong command presses Ctrl-C.
EARLY_CTRL_C = """
import os, signal, sys

# As in a terminal: a process started in the background by a non-interactive shell (as a CI
# script may start the tests) inherits SIGINT ignored, and Python then installs no handler.
signal.signal(signal.SIGINT, signal.default_int_handler)

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "pipelines.config":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
from pipelines.cli import main
sys.exit(main(["models", "any_job"]))
"""


def test_ctrl_c_while_starting_says_interrupted_and_exits_130():
    # It showed a traceback of the imports (and the exit of a process killed by SIGINT).
    done = subprocess.run([sys.executable, "-c", EARLY_CTRL_C], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", "")
