"""Many logical workers in one process: K pull loops, each registered as its own worker, one heartbeat.

A stage that waits rather than computes (`sleep:MS`, a remote accelerator, an external service) needs
concurrency, not cores: K processes would cost K interpreters and K model copies for nothing. Each
member is a whole `Worker` (its own connection, worker id, leases, fencing tokens, early reports and
hand-back on stop), so the master cannot tell them from K processes; they share the process's stages
and capability report, and one heartbeat request a period (/api/v1/heartbeats) that renews every
member's leases at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable

from common.errors import MasterUnavailable
from common.masterclient import MasterClient
from common.runtime import Component
from worker.capability import Capabilities
from worker.execute import process_stats
from worker.loop import Worker, WorkerConfig
from worker.pipeline import StageCache

log = logging.getLogger(__name__)


class WorkerGroup(Component):
    """`config.loops` pull loops in one process; a Component like a single Worker (start, stop, join)."""

    thread_name = "worker-group"

    def __init__(self, config: WorkerConfig, *, stages: StageCache | None = None) -> None:
        super().__init__()
        single = dataclasses.replace(config, loops=1)
        self.stages = stages or StageCache()
        self.capabilities = Capabilities(self.stages.env)
        self.name = config.name or f"{socket.gethostname()}-{os.getpid()}"
        self.members = [Worker(dataclasses.replace(single, name=f"{self.name}-{i}"), stages=self.stages,
                               capabilities=self.capabilities) for i in range(config.loops)]

    def loops(self) -> list[tuple[str, Callable[[], None]]]:
        return [*((f"pull-{i}", m.run) for i, m in enumerate(self.members)), ("heartbeat", self._heartbeats)]

    def stop(self) -> None:
        """Every member finishes the task in hand and hands back the rest; the heartbeat ends."""
        for m in self.members:
            m.stop()
        super().stop()

    @property
    def done(self) -> int:
        """Tasks the members have had accepted."""
        return sum(m.done for m in self.members)

    def _heartbeats(self) -> None:
        """Every member's heartbeat in one request a period, over one connection of its own: the
        process's figures (CPU, memory, capabilities) once, each member's counts and tasks in hand."""
        client = self.members[0].heartbeat_client()
        try:
            while not self._stop.wait(self.members[0].heartbeat_s):
                self.heartbeat_once(client)
        finally:
            client.close()

    def heartbeat_once(self, client: MasterClient) -> None:
        members = [m for m in self.members if m.worker_id]
        if not members:
            return
        beats = [(m.worker_id, {"tasks_done": m.done, "tasks_failed": m.failed, "busy": int(m.busy)}, m.held)
                 for m in members]
        try:
            replies = client.heartbeats(beats, process_stats(0, 0, False, self.capabilities))
        except (MasterUnavailable, OSError):
            return  # the pull loops report the outage
        except Exception:
            log.exception("worker group %s: heartbeat failed", self.name)
            return
        for m, reply in zip(members, replies):
            m.heartbeat_reply(reply)
