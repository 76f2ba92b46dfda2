"""A connection's reading side with one deadline for a whole stage (a request's head, then its body):
a client sending a byte every few seconds keeps a per-read timeout happy for ever, but holds its
connection slot only until the deadline. Used by the master's HTTP server and the job preview."""

from __future__ import annotations

import socket
import time
from typing import Any


class DeadlineReader(socket.SocketIO):
    """`deadline` (time.monotonic()) bounds every read until it is changed; None: `idle_timeout_s` per read."""

    def __init__(self, sock: socket.socket, idle_timeout_s: float) -> None:
        super().__init__(sock, "rb")
        self.deadline: float | None = None
        self.idle_timeout_s = idle_timeout_s

    def readinto(self, b: Any) -> int | None:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request took too long to arrive")
            self._sock.settimeout(min(left, self.idle_timeout_s))
        try:
            return super().readinto(b)
        finally:
            self._sock.settimeout(self.idle_timeout_s)  # writes keep the plain per-operation timeout
