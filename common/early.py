"""Imported first by each role's `__main__`: until the role installs its own handlers (common.runtime.
stop_on_signals), a SIGTERM (or Ctrl-C) exits 0 at once. A role told to stop while it is still importing
OpenCV or onnxruntime has nothing to stop yet; without this, Python's default action killed it with
-15, which supervisors and `framehive up` count as a failure."""

from __future__ import annotations

import os
import signal
import sys

ROLES = ("master", "receiver", "worker", "sender")


def _exit_cleanly(signum: int, _frame: object) -> None:
    sys.exit(0)


# Only in a role's own process (`python -m ROLE` runs ROLE/__main__.py as argv[0]): a test that imports a
# role's __main__ for its parser keeps its own signal handling.
_main = sys.argv[0] if sys.argv else ""
if os.path.basename(_main) == "__main__.py" and os.path.basename(os.path.dirname(_main)) in ROLES:
    signal.signal(signal.SIGTERM, _exit_cleanly)
