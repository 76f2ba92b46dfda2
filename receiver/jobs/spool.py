"""An upload on disk, readable while it arrives: the decoder reads it as the client sends it."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path
from typing import Any

from common.errors import FramehiveError

log = logging.getLogger(__name__)

class Cancelled(FramehiveError):
    """The job was cancelled (its client went away or the upload was refused)."""


class Spool(io.RawIOBase):
    """A file being uploaded, readable while it grows: reads wait for bytes not yet received."""

    def __init__(self, path: Path, total: int, cancelled: threading.Event) -> None:
        super().__init__()
        self.path, self.total, self._cancelled = path, total, cancelled
        self._received = 0
        self._cond = threading.Condition()
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._pos = 0

    def grew(self, received: int) -> None:
        """The writer side reports how many bytes are on disk."""
        with self._cond:
            self._received = received
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.total}[whence]
        self._pos = max(0, min(self.total, base + offset))
        return self._pos

    def readinto(self, buf: Any) -> int:
        want = min(len(buf), self.total - self._pos)
        if want <= 0:
            return 0
        with self._cond:
            while self._received <= self._pos:
                if self._cancelled.is_set():
                    raise Cancelled("job cancelled")
                self._cond.wait(0.5)
        self._f.seek(self._pos)
        n = self._f.readinto(memoryview(buf)[:min(want, self._received - self._pos)])
        self._pos += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()
