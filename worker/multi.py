"""One worker process serving several masters: a pull loop (or a group of them) per master.

`python -m worker --master URL1,URL2` builds, for each master, the same part a single-master worker
would be (a `Worker`, or a `WorkerGroup` with `--loops`), each with its own connection, worker id,
leases and fencing tokens: a master never sees another's tasks, and a master that goes away costs
only its own loop (which retries with backoff while the others go on). Fair across masters by
construction: each has its own loops of equal number, sharing the process's stages (models loaded
once) and cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from common.runtime import Component
from worker.group import WorkerGroup
from worker.loop import Worker, WorkerConfig
from worker.pipeline import StageCache


class MultiMaster(Component):
    """The parts of one worker process, one per master; started, stopped and joined together."""

    thread_name = "multi-master"

    def __init__(self, configs: Sequence[WorkerConfig], *, stages: StageCache | None = None) -> None:
        super().__init__()
        self.stages = stages or StageCache()
        self.parts: list[Worker | WorkerGroup] = [
            WorkerGroup(c, stages=self.stages) if c.loops > 1 else Worker(c, stages=self.stages) for c in configs]

    def loops(self) -> list[tuple[str, Callable[[], None]]]:
        return []  # the parts have their own threads

    def start(self) -> None:
        super().start()
        for part in self.parts:
            part.start()

    def stop(self) -> None:
        """Each part finishes the task in hand and hands back the rest to its own master."""
        for part in self.parts:
            part.stop()
        super().stop()

    def join(self, timeout: float | None = None) -> bool:
        ended = [part.join(timeout) for part in self.parts]
        return super().join(timeout) and all(ended)

    @property
    def done(self) -> int:
        return sum(part.done for part in self.parts)
