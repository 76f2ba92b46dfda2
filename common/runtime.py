"""Process plumbing every `python -m <role>` shares: logging set-up and stop signals."""

from __future__ import annotations

import logging
import os
import signal
import threading

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


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
    return stop


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
        self._thread = threading.Thread(target=self.run, name=self.thread_name)
        self._thread.start()

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
