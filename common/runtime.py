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
