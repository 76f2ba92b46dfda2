"""A part of a process that dies takes the process down with a clear line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from common.runtime import EXIT_CRASHED

ROOT = Path(__file__).resolve().parents[2]


def test_a_component_that_raises_stops_the_process_with_exit_70():
    script = textwrap.dedent("""
        import sys, threading
        from common.runtime import Component, exit_code, setup_logging, stop_on_signals
        class Boom(Component):
            thread_name = "boom"
            def run(self):
                raise OverflowError("cannot convert float infinity to integer")
        setup_logging()
        stop = stop_on_signals()
        part = Boom()
        part.start()
        stopped = stop.wait(30)
        part.join(5)
        sys.exit(exit_code() if stopped else 3)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == EXIT_CRASHED, out.stderr
    assert "Boom thread 'boom' died: OverflowError" in out.stderr and "stopping the process" in out.stderr
