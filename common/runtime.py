"""Process plumbing every `python -m <role>` shares: logging set-up and stop signals."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
EXIT_CRASHED = 70  # a part of the process died: the process stops with this, so a supervisor restarts it

_crashed = threading.Event()
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


def guarded(what: str, fn: Callable[[], object]) -> Callable[[], None]:
    """`fn` as a thread target whose escaping exception stops the process (see `fatal`)."""
    def run() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - a thread that must not end ended
            fatal(what, e)
    return run


def exit_code() -> int:
    """What a role's main returns once it has shut down: 0, or EXIT_CRASHED after a `fatal`."""
    return EXIT_CRASHED if _crashed.is_set() else 0


def is_loopback(host: str) -> bool:
    """Whether binding `host` exposes a server only to this machine."""
    return host in ("localhost", "::1") or host.startswith("127.")


class Component:
    """The one shape of a long-running part: a thread running `run()` until `stop()`.

    Subclasses implement `run()` as `while not self._stop.is_set(): ...` with timeouts on every
    blocking call, and may override `_wake()` (unblock a waiting `run`) and `close()` (release
    sockets after the thread has ended).
    """

    thread_name = "component"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run_guarded, name=self.thread_name)
        self._thread.start()

    def _run_guarded(self) -> None:
        """`run`, and if it raises, the process goes down with it (common.runtime.fatal)."""
        try:
            self.run()
        except BaseException as e:  # noqa: BLE001 - any escape from a loop that must not end is fatal
            fatal(f"{type(self).__name__} thread {self.thread_name!r}", e)

    def stop(self) -> None:
        """Ask the thread to finish; returns at once."""
        self._stop.set()
        self._wake()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread, then release resources."""
        if self._thread:
            self._thread.join(timeout)
        self.close()

    def _wake(self) -> None:
        """Unblock a `run` that is waiting on something other than the stop event."""

    def close(self) -> None:
        """Release sockets and other resources once the thread has ended."""

    def __enter__(self) -> Component:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(10)
