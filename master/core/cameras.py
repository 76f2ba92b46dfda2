"""The cluster file the master runs with: loaded once, swapped whole on a reload, read by every role
that starts from the master's address (a receiver by its name, a publisher by its camera's)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from common.errors import BadRequest, ConfigError
from master.clusterfile import ClusterFile, load

log = logging.getLogger(__name__)


class Cameras:
    """The current cluster file and its generation (bumped by every applied reload); thread-safe.
    `on_change(file)` is called with each file that takes effect, the first included."""

    def __init__(self, path: str, on_change: Callable[[ClusterFile], None], *, master: str = "") -> None:
        self.path, self.master = path, master  # master: which [masters.NAME] of the file this is
        self._on_change = on_change
        self._lock = threading.Lock()
        self._whole: ClusterFile | None = None  # the whole file last applied (ports are kept across all of it)
        self.current = self._load()  # ConfigError at start: the master does not start with a broken file
        self.generation = 1
        self.reloads = {"applied": 0, "refused": 0}
        self.last_error = ""
        on_change(self.current)

    def reload(self) -> dict[str, Any]:
        """Read the file again; apply it whole if it is valid, else keep the running one. Says what changed."""
        with self._lock:
            old = self.current
            try:
                new = self._load()
            except ConfigError as e:
                self.reloads["refused"] += 1
                self.last_error = str(e)
                log.error("config reload refused, still running generation %d: %s", self.generation, e)
                return {"ok": False, "generation": self.generation, "error": str(e)}
            self.current, self.generation = new, self.generation + 1
            self.reloads["applied"] += 1
            self.last_error = ""
            diff = _diff(old, new)
            self._on_change(new)
        log.info("config reloaded from %s (generation %d): %s", self.path, self.generation,
                 "; ".join(f"{k} {', '.join(v)}" for k, v in diff.items() if v) or "nothing changed")
        return {"ok": True, "generation": self.generation, "error": "", **diff}

    def _load(self) -> ClusterFile:
        """The file (this master's share of it), read again; ConfigError leaves the last one in force."""
        whole = load(self.path, previous=self._whole)
        mine = whole.for_master(self.master) if self.master else whole
        self._whole = whole
        return mine

    def receiver(self, name: str) -> dict[str, Any]:
        """What receiver `name` serves (BadRequest naming the receivers when the file has none by that name)."""
        current = self.current
        if name not in current.receivers:
            raise BadRequest(f"the config file has no receiver named {name!r} (receivers: "
                             f"{', '.join(current.receivers) or 'none'})")
        return {"generation": self.generation, **current.receiver_view(name)}

    def camera(self, name: str) -> dict[str, Any]:
        """What a publisher of camera `name` needs (BadRequest naming the cameras when there is none)."""
        current = self.current
        cam = current.cameras.get(name)
        if cam is None:
            raise BadRequest(f"the config file has no camera named {name!r} (cameras: "
                             f"{', '.join(current.cameras) or 'none'})")
        return {"generation": self.generation, **cam.to_wire(current.receivers[cam.receiver])}

    def list(self, host: str = "") -> dict[str, Any]:
        """Every camera (or those published by `host`), enabled or not, with its port and receiver."""
        current = self.current
        cams = [c.to_wire(current.receivers[c.receiver]) for c in current.cameras.values()
                if not host or c.host in ("", host)]
        return {"generation": self.generation, "cameras": cams, "receivers": list(current.receivers)}

    def stats(self) -> dict[str, Any]:
        return {"path": self.path, "generation": self.generation, "cameras": len(self.current.cameras),
                "last_error": self.last_error, **self.reloads}


def _diff(old: ClusterFile, new: ClusterFile) -> dict[str, list[str]]:
    """Cameras added, removed and changed between two files."""
    return {"added": sorted(set(new.cameras) - set(old.cameras)),
            "removed": sorted(set(old.cameras) - set(new.cameras)),
            "changed": sorted(n for n in set(old.cameras) & set(new.cameras) if old.cameras[n] != new.cameras[n])}
