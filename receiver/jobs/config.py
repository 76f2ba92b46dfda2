"""How a job server is set up: its limits, where it spools, which master it feeds."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class JobConfig:
    """Limits and places of the job server."""

    master_url: str = "http://127.0.0.1:8000"
    root: Path | None = None  # `file` protocol: paths must lie under this folder (None: refused)
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    max_upload_bytes: int = 4 * 1024**3  # one job's upload
    max_spool_bytes: int = 8 * 1024**3  # all running uploads together (what their handshakes announced)
    max_jobs: int = 8  # jobs at once; a further handshake is answered "busy"
    window_tiles: int = 64  # tiles of frames decoded and not yet written, per job: backpressure on decoding
    window_frames: int = 16  # and at most this many such frames (whole-frame jobs hold big frames)
    tile_timeout_s: float = 60.0  # a tile not back by then is replaced by the original
    progress_every_s: float = 0.5
    token: str | None = None  # with a token, a handshake must carry it ("token"), as must preview requests
