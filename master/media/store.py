"""The media directory: event clips and snapshots on disk, found by event id, kept by age and total size.

    root/clips/<camera>/<event_id>.mp4
    root/snapshots/<camera>/<event_id>.jpg

Decisions:
- Names are checked against a safe charset (a letter or digit first, then letters, digits, ".",
  "_", "-"; at most 128): no separator, no "..", so no path can leave the root. Anything else is
  a ValueError, a caller's bug.
- Every file is written as `<final>.part` and renamed (os.replace): a reader never sees half a
  file. `.part` files left by a crash are removed by the scan at start-up only (a later rescan
  would race the encoder writing one).
- The index (path -> size, mtime; oldest first) is built by one scan at start, so clips survive a
  master restart, then kept up to date by `add()` and the deletions; `sweep` rescans every
  `rescan_s` to catch files removed (or added) behind our back.
- A full or read-only disk never raises out of here to the caller's results path: failed writes
  and deletions are counted and logged (rate-limited) and return None.

Thread-safety: one lock around the index; file writes happen outside it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.throttle import Throttle

log = logging.getLogger(__name__)

MAX_BYTES = 2 * 2**30  # all media files together
MAX_AGE_S = 7 * 86400.0
RESCAN_S = 3600.0  # sweep() rescans the disk this often
WARN_EVERY_S = 60.0  # at most one warning per this long for failed writes or deletions
PART = ".part"
CLIP_SUFFIX, SNAPSHOT_SUFFIX = ".mp4", ".jpg"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_KINDS = {CLIP_SUFFIX: "clips", SNAPSHOT_SUFFIX: "snapshots"}


def safe_name(name: str, what: str) -> str:
    """`name` if it is safe as one path component; ValueError otherwise."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a safe file name (a letter or digit, then letters, digits, "
                         "'.', '_' or '-'; at most 128)")
    return name


def part_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place."""
    return path.with_name(path.name + PART)


class MediaDir:
    """Clips and snapshots under `root`, indexed by event id, within `max_bytes` and `max_age_s`."""

    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES, max_age_s: float = MAX_AGE_S,
                 rescan_s: float = RESCAN_S, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 0 or max_age_s <= 0 or rescan_s <= 0:
            raise ValueError("max_bytes must be >= 0, max_age_s and rescan_s > 0")
        self.root = Path(root)
        self.max_bytes, self.max_age_s, self.rescan_s = max_bytes, max_age_s, rescan_s
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._files: OrderedDict[Path, tuple[float, int]] = OrderedDict()  # path -> (mtime, bytes), oldest first
        self._by_event: dict[tuple[str, str], Path] = {}  # (suffix, event id) -> path
        self._total = 0
        self._scanned_at: float | None = None
        self._warnings = Throttle(WARN_EVERY_S, clock)
        self.scan(start=True)

    # ----- paths ---------------------------------------------------------------------------------

    def clip_path(self, camera: str, event_id: str) -> Path:
        """root/clips/<camera>/<event_id>.mp4 (ValueError for an unsafe name)."""
        return self._path(CLIP_SUFFIX, camera, event_id)

    def snapshot_path(self, camera: str, event_id: str) -> Path:
        """root/snapshots/<camera>/<event_id>.jpg (ValueError for an unsafe name)."""
        return self._path(SNAPSHOT_SUFFIX, camera, event_id)

    def _path(self, suffix: str, camera: str, event_id: str) -> Path:
        name = safe_name(event_id, "event id") + suffix
        return self.root / _KINDS[suffix] / safe_name(camera, "camera") / name

    # ----- lookups -------------------------------------------------------------------------------

    def find(self, event_id: str) -> Path | None:
        """The clip of `event_id` on disk, or None."""
        with self._lock:
            return self._by_event.get((CLIP_SUFFIX, event_id))

    def find_snapshot(self, event_id: str) -> Path | None:
        """The snapshot of `event_id` on disk, or None."""
        with self._lock:
            return self._by_event.get((SNAPSHOT_SUFFIX, event_id))

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._total

    def stats(self) -> dict[str, Any]:
        """Files, bytes and counters, JSON-safe."""
        with self._lock:
            clips = sum(1 for suffix, _ in self._by_event if suffix == CLIP_SUFFIX)
            return {"root": str(self.root), "files": len(self._files), "clips": clips,
                    "snapshots": len(self._by_event) - clips, "bytes": self._total, "max_bytes": self.max_bytes,
                    "max_age_s": self.max_age_s, "counters": dict(self.counters)}

    # ----- writes --------------------------------------------------------------------------------

    def write_snapshot(self, camera: str, event_id: str, jpeg: bytes) -> Path | None:
        """Write an event's JPEG atomically; its path, or None when the disk refused it (counted, logged)."""
        path = self.snapshot_path(camera, event_id)
        part = part_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            part.write_bytes(jpeg)
            os.replace(part, path)
        except OSError as e:
            unlink_quietly(part)
            self.failed("snapshot_write_failed", f"cannot write {path}: {e}")
            return None
        self.add(path)
        return path

    def add(self, path: Path) -> None:
        """Count a file just written under root (a clip the encoder renamed into place) into the index."""
        try:
            st = path.stat()
        except OSError as e:
            self.failed("stat_failed", f"cannot stat {path}: {e}")
            return
        with self._lock:
            self._forget(path)
            self._remember(path, st.st_mtime, st.st_size)
            self.counters["files_added"] += 1

    def failed(self, counter: str, message: str) -> None:
        """Count a failure and log it, at most once per WARN_EVERY_S (saying how many were not logged)."""
        with self._lock:
            self.counters[counter] += 1
        unwarned = self._warnings.ready()
        if unwarned is None:
            return
        more = f" ({unwarned} more failures since the last warning)" if unwarned else ""
        log.warning("media %s: %s%s", self.root, message, more)

    # ----- retention -----------------------------------------------------------------------------

    def sweep(self, now: float) -> list[Path]:
        """Delete files older than max_age_s (by mtime; `now` in Unix seconds), then the oldest until the
        total is within max_bytes; the paths removed. Rescans the disk first every `rescan_s`."""
        if self._scanned_at is None or now - self._scanned_at >= self.rescan_s:
            self.scan(now=now)
        removed = []
        while True:
            with self._lock:
                if not self._files:
                    break
                path, (mtime, size) = next(iter(self._files.items()))
                if mtime > now - self.max_age_s and self._total <= self.max_bytes:
                    break
                self._forget(path)
            if self._delete(path):
                removed.append(path)
        return removed

    def scan(self, *, start: bool = False, now: float | None = None) -> None:
        """Rebuild the index from the disk; at `start`, also remove `.part` files a crash left behind."""
        found: list[tuple[float, Path, int]] = []
        for kind in _KINDS.values():
            for path in _walk(self.root / kind):
                if path.name.endswith(PART):
                    if start and self._delete(path):
                        self._count("parts_removed")
                    continue
                if path.suffix not in _KINDS:
                    continue
                try:
                    st = path.stat()
                except OSError:  # gone between listing and stat
                    continue
                found.append((st.st_mtime, path, st.st_size))
        found.sort()
        with self._lock:
            listed = {path for _, path, _ in found}
            # a file add()ed while we listed is in the old index but not in the listing: keep it
            kept = [(mtime, path, size) for path, (mtime, size) in self._files.items()
                    if path not in listed and path.exists()]
            self._files.clear()
            self._by_event.clear()
            self._total = 0
            for mtime, path, size in found + kept:
                self._remember(path, mtime, size)
            self._scanned_at = now if now is not None else self._scanned_at
            self.counters["scans"] += 1

    def _remember(self, path: Path, mtime: float, size: int) -> None:
        self._files[path] = (mtime, size)  # a new file is the newest: appended last
        self._by_event[(path.suffix, path.stem)] = path
        self._total += size

    def _forget(self, path: Path) -> None:
        entry = self._files.pop(path, None)
        if entry is not None:
            self._total -= entry[1]
            if self._by_event.get((path.suffix, path.stem)) == path:
                del self._by_event[(path.suffix, path.stem)]

    def _delete(self, path: Path) -> bool:
        """Remove a file; False when the disk refused. Camera directories stay, even empty: removing one
        would race the encoder about to write into it."""
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            self.failed("delete_failed", f"cannot delete {path}: {e}")
            return False
        self._count("files_removed")
        return True

    def _count(self, counter: str) -> None:
        with self._lock:
            self.counters[counter] += 1


def _walk(top: Path) -> list[Path]:
    """Files under `top` (camera directories one level down); [] if it does not exist or cannot be read."""
    out: list[Path] = []
    try:
        cameras = list(os.scandir(top))
    except OSError:
        return out
    for cam in cameras:
        try:
            if cam.is_dir(follow_symlinks=False):
                out.extend(Path(e.path) for e in os.scandir(cam.path) if e.is_file(follow_symlinks=False))
        except OSError:
            continue
    return out


def unlink_quietly(path: Path) -> None:
    """Remove `path` if it is there; a refusal is ignored (the caller is already handling a failure)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
