"""A receiver started by name takes its cameras from the master's config file, and follows it: when
a reload adds a camera its port opens, when one leaves its port closes, when a pipeline or detect
policy changes the next frame uses it; the other cameras' sockets are never touched."""

from __future__ import annotations

import logging
import xmlrpc.client
from collections.abc import Callable, Mapping
from typing import Any

from common.config import MasterLink
from common.errors import FramehiveError
from common.gating import GatePolicy, parse_policy
from common.pipeline import normalize_pipeline
from common.runtime import Component

log = logging.getLogger(__name__)

WATCH_EVERY_S = 2.0
START_WAIT_S = 60.0  # how long a receiver started by name waits for the master to answer


def fetch(link: MasterLink, name: str, wait_s: float = START_WAIT_S) -> dict[str, Any]:
    """The receiver's view of the config file (ConfigError when the master has no file or no receiver by
    that name), waiting for a master that is still starting."""
    return link.fetch_config("receiver", name, wait_s)


def ports_of(view: Mapping[str, Any]) -> tuple[dict[int, str], dict[int, GatePolicy], dict[int, str]]:
    """Pipelines, detect policies and camera names by port, from a receiver's view of the config."""
    ports = {int(p): v for p, v in view["ports"].items()}
    return ({p: normalize_pipeline(v["pipeline"]) for p, v in ports.items()},
            {p: parse_policy(v["detect"]) for p, v in ports.items()},
            {p: str(v["camera"]) for p, v in ports.items()})


class ConfigWatcher(Component):
    """Asks the master for this receiver's view every few seconds; calls `apply(view)` when its
    generation changes (a reload was applied)."""

    thread_name = "config-watch"

    def __init__(self, link: MasterLink, name: str, generation: int, apply: Callable[[dict[str, Any]], None],
                 every_s: float = WATCH_EVERY_S) -> None:
        super().__init__()
        self.link, self.name, self.generation, self.apply, self.every_s = link, name, generation, apply, every_s
        self.failures = 0

    def run(self) -> None:
        with self.link.client(timeout_s=5.0) as client:
            while not self._stop.wait(self.every_s):
                try:
                    view = client.call("get_config", "receiver", self.name)
                except (FramehiveError, xmlrpc.client.Fault) as e:
                    self.failures += 1
                    if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                        log.warning("cannot read this receiver's config from the master (%d times): %s",
                                    self.failures, e)
                    continue
                if view["generation"] != self.generation:
                    log.info("the master's config changed (generation %d -> %d): %d camera port(s)",
                             self.generation, view["generation"], len(view["ports"]))
                    self.generation = view["generation"]
                    self.apply(view)
