"""Process plumbing every `python -m <role>` shares: logging, stop signals, and the one lifecycle of its
long-running parts (Component) run by a Supervisor."""

from __future__ import annotations

import logging
import os
import signal
import socketserver
import threading
import time
from collections.abc import Callable
from typing import TypeVar

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
EXIT_CRASHED = 70  # a part of the process died: the process stops with this, so a supervisor restarts it
EXIT_CONFIG = 2  # the process cannot work as configured (like a usage error): restarting it will not help
EXIT_STUCK = 75  # a part did not stop in time after a stop signal: the process exits anyway, with this

C = TypeVar("C", bound="Component")
_crashed = threading.Event()
_gave_up: list[int] = []
_stop_events: list[threading.Event] = []


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once, for a process's main()."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=LOG_FORMAT)


def stop_on_signals() -> threading.Event:
    """Return an event set by the first SIGINT/SIGTERM; a second one exits at once."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        logging.getLogger("framehive").info("%s received: stopping (again to exit at once)",
                                            signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    _stop_events.append(stop)
    return stop


def fatal(what: str, exc: BaseException) -> None:
    """A part of this process died: say so loudly and stop the whole process (its main returns
    EXIT_CRASHED), rather than leave a half-alive service that nobody restarts."""
    logging.getLogger("framehive").critical("%s died: %s: %s; stopping the process", what, type(exc).__name__, exc,
                                            exc_info=exc)
    _crashed.set()
    for stop in _stop_events:
        stop.set()


def give_up(message: str, code: int = EXIT_CONFIG) -> None:
    """This process cannot do its job as configured (a wrong token, say): log one clear line and stop
    the process, whose main then returns `code`; restarting it unchanged would not help."""
    logging.getLogger("framehive").error("%s; stopping", message)
    _gave_up.append(code)
    for stop in _stop_events:
        stop.set()


def guarded(what: str, fn: Callable[[], object]) -> Callable[[], None]:
    """`fn` as a thread target whose escaping exception stops the process (see `fatal`)."""
    def run() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - a thread that must not end ended
            fatal(what, e)
    return run


def exit_code() -> int:
    """What a role's main returns once it has shut down: 0, EXIT_CRASHED after a `fatal`, or the code
    of a `give_up`."""
    return EXIT_CRASHED if _crashed.is_set() else (_gave_up[0] if _gave_up else 0)


def is_loopback(host: str) -> bool:
    """Whether binding `host` exposes a server only to this machine."""
    return host in ("localhost", "::1") or host.startswith("127.")


class Component:
    """The one shape of a long-running part: threads running its loops until `stop()`.

    `start()` once (a second start raises), `stop()` asks every loop to finish and returns at once,
    `join(timeout)` waits and says whether every thread ended. Subclasses implement `run()` as
    `while not self._stop.is_set(): ...` with timeouts on every blocking call (or `loops()` for a
    part with several threads), and may override `_wake()` (unblock a waiting loop) and `close()`
    (release sockets once the threads have ended). A loop that raises takes the process down
    (`fatal`): a part that must not end never ends quietly.
    """

    thread_name = "component"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.on_end: Callable[[], None] | None = None  # called when a loop returns by itself (a finite part)

    def run(self) -> None:
        raise NotImplementedError

    def loops(self) -> list[tuple[str, Callable[[], None]]]:
        """(thread name, loop) for every thread of this part: by default one running `run`."""
        return [(self.thread_name, self.run)]

    def start(self) -> None:
        """Start the threads; a part starts once in its life."""
        if self._started:
            raise RuntimeError(f"{type(self).__name__} {self.thread_name!r} was started twice")
        self._started = True
        # daemon: a thread that will not stop must not keep the process alive after main returns
        self._threads = [threading.Thread(target=self._guard(name, loop), name=name, daemon=True)
                         for name, loop in self.loops()]
        for t in self._threads:
            t.start()

    def _guard(self, name: str, loop: Callable[[], None]) -> Callable[[], None]:
        """`loop`, and if it raises, the process goes down with it (common.runtime.fatal)."""
        def run() -> None:
            try:
                loop()
            except BaseException as e:  # noqa: BLE001 - any escape from a loop that must not end is fatal
                fatal(f"{type(self).__name__} thread {name!r}", e)
                return
            if self.on_end is not None:
                self.on_end()
        return run

    def stop(self) -> None:
        """Ask the threads to finish; returns at once."""
        self._stop.set()
        self._wake()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads (at most `timeout` in all), then release resources; True when all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self.close()
        return not any(t.is_alive() for t in self._threads)

    def _wake(self) -> None:
        """Unblock a loop that is waiting on something other than the stop event."""

    def close(self) -> None:
        """Release sockets and other resources once the threads have ended."""

    def __enter__(self) -> Component:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(10)


class Loop(Component):
    """A Component around one function that runs to its own end (a job's pipeline stage, say), told to
    finish by whatever it watches rather than by `stop()`."""

    def __init__(self, name: str, fn: Callable[[], None]) -> None:
        super().__init__()
        self.thread_name = name
        self._fn = fn

    def run(self) -> None:
        self._fn()


class ServerThread(Component):
    """A `socketserver` server (HTTP, XML-RPC) as a Component: serves until stopped, then closes its socket."""

    def __init__(self, server: socketserver.BaseServer, name: str) -> None:
        super().__init__()
        self.server = server
        self.thread_name = name

    def run(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def _wake(self) -> None:
        if any(t.is_alive() for t in self._threads):  # shutdown() waits for a serve_forever that runs
            self.server.shutdown()

    def close(self) -> None:
        self.server.server_close()


class Supervisor:
    """Runs a process's parts: starts them in order, waits for a stop (a signal, or a part that died),
    stops and joins them in reverse order, and says how it went as the process's exit code.

    List consumers before producers (the forwarder before the sockets that feed it): producers are
    stopped first, so what they already took is flushed by the parts after them.
    """

    def __init__(self, role: str, stop: threading.Event, *, join_timeout_s: float = 5.0) -> None:
        self.role = role
        self.stop = stop
        self.join_timeout_s = join_timeout_s
        self.parts: list[tuple[Component, float]] = []
        self._log = logging.getLogger(role)

    def add(self, part: C, *, join_timeout_s: float | None = None, ends_run: bool = False) -> C:
        """Add a part (started after those added before it, stopped before them); returns it. With
        `ends_run`, the part's work is finite (a publisher at the end of its file): when its loop
        returns, the whole process stops as if signalled."""
        if ends_run:
            part.on_end = self.stop.set
        self.parts.append((part, self.join_timeout_s if join_timeout_s is None else join_timeout_s))
        return part

    def run(self, every: tuple[float, Callable[[], None]] | None = None,
            ready: Callable[[], None] | None = None) -> int:
        """Start, call `ready` (say where the process serves), serve until stopped (calling `every`'s function
        every so many seconds), stop. The exit code: 0, EXIT_CRASHED after a part died, EXIT_STUCK when a
        part did not stop in time, 1 when one did not start."""
        started = self._start_all()
        if started is not None:
            if ready is not None:
                ready()
            period, tick = every or (3600.0, lambda: None)
            while not self.stop.wait(period):
                tick()
        stuck = self._stop_all(started or [])
        if started is None:
            return 1
        if stuck:
            self._log.error("%s did not stop within its time: exiting anyway", ", ".join(stuck))
            return EXIT_STUCK
        code = exit_code()
        if code:
            self._log.info("stopped after a failure (exit %d)", code)
        else:
            self._log.info("stopped")
        return code

    def _start_all(self) -> list[tuple[Component, float]] | None:
        started: list[tuple[Component, float]] = []
        self._log.info("starting %s", ", ".join(p.thread_name for p, _ in self.parts))
        for part, timeout in self.parts:
            try:
                part.start()
            except Exception as e:  # noqa: BLE001 - a part that cannot start stops the process, cleanly
                self._log.error("cannot start %s: %s", part.thread_name, e)
                self._stop_all(started)
                return None
            started.append((part, timeout))
        return started

    def _stop_all(self, started: list[tuple[Component, float]]) -> list[str]:
        stuck = []
        if started:
            self._log.info("stopping %s", ", ".join(p.thread_name for p, _ in reversed(started)))
        for part, timeout in reversed(started):
            part.stop()
            if not part.join(timeout):
                stuck.append(part.thread_name)
        return stuck
