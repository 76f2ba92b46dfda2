"""A part of a process that dies takes the process down with a clear line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from common.runtime import EXIT_CRASHED, EXIT_STUCK, Component, Supervisor

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


class Recorder(Component):
    """A part that records its life in a shared list; `hang` makes it ignore stop."""

    def __init__(self, name: str, log: list[str], *, hang: threading.Event | None = None,
                 fail_start: bool = False) -> None:
        super().__init__()
        self.thread_name, self.log, self.hang, self.fail_start = name, log, hang, fail_start

    def start(self) -> None:
        if self.fail_start:
            raise OSError("port taken")
        super().start()
        self.log.append(f"start {self.thread_name}")

    def run(self) -> None:
        self._stop.wait()
        if self.hang is not None:
            self.hang.wait(30)
        self.log.append(f"end {self.thread_name}")


def test_a_component_starts_once():
    part = Recorder("a", [])
    part.start()
    with pytest.raises(RuntimeError, match="started twice"):
        part.start()
    part.stop()
    assert part.join(5)


def test_the_supervisor_starts_in_order_and_stops_producers_first():
    log: list[str] = []
    stop = threading.Event()
    sup = Supervisor("test", stop)
    for name in ("forwarder", "ingest", "preview"):
        sup.add(Recorder(name, log))
    stop.set()  # already asked to stop: it starts everything, then stops at once
    assert sup.run(ready=lambda: log.append("ready")) == 0
    assert log == ["start forwarder", "start ingest", "start preview", "ready",
                   "end preview", "end ingest", "end forwarder"]


def test_a_part_that_does_not_stop_in_time_makes_the_exit_code_non_zero():
    release = threading.Event()
    stop = threading.Event()
    sup = Supervisor("test", stop)
    sup.add(Recorder("stubborn", [], hang=release), join_timeout_s=0.2)
    stop.set()
    try:
        assert sup.run() == EXIT_STUCK
    finally:
        release.set()


def test_a_part_that_cannot_start_stops_those_started_and_exits_1():
    log: list[str] = []
    sup = Supervisor("test", threading.Event())
    sup.add(Recorder("first", log))
    sup.add(Recorder("second", log, fail_start=True))
    assert sup.run() == 1
    assert log == ["start first", "end first"]


def test_give_up_stops_the_process_with_its_code():
    script = textwrap.dedent("""
        import sys, threading
        from common.runtime import Component, Supervisor, give_up, setup_logging, stop_on_signals
        class Refused(Component):
            thread_name = "pull"
            def run(self):
                give_up("the master refused this worker's token")
        setup_logging()
        sup = Supervisor("worker", stop_on_signals())
        sup.add(Refused())
        sys.exit(sup.run())
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "the master refused this worker's token; stopping" in out.stderr


def test_a_finite_part_that_ends_stops_the_run():
    class Finite(Component):
        thread_name = "publisher"

        def run(self):  # a file's last frame: the loop returns by itself
            pass

    stop = threading.Event()
    sup = Supervisor("publisher", stop)
    sup.add(Finite(), ends_run=True)
    assert sup.run() == 0 and stop.is_set()
