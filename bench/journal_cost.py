"""What `--state-dir` costs the master per file-job tile, in one process, with and without the journal.

Each tile goes the whole way through the task store as a file job drives it: added with its payload,
leased, completed with its output image, taken by the job server and acknowledged by its next take.
Figure: tiles/s with the SQLite journal (WAL, synchronous=NORMAL) on a temporary directory.
Baseline, same run and process: the same loop with no journal. The two alternate in rounds, so the
ratio holds when the machine's speed drifts. Payload and image sizes are those of a 3x3 raw tile of
a 768x432 frame (about 110 KB each).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402
from common.tasks import Outcome, TaskKind, TaskSpec  # noqa: E402
from master.core.journal import SqliteJournal  # noqa: E402
from master.core.store import StoreConfig, TaskStore  # noqa: E402

TILE_BYTES = 256 * 144 * 3  # one ninth of a 768x432 BGR frame


def run(store: TaskStore, tiles: int, batch: int = 16) -> float:
    """Tiles per second through add -> lease -> complete -> take -> ack."""
    payload, image = b"p" * TILE_BYTES, b"i" * TILE_BYTES
    ids = itertools.count()
    job = f"job-{next(ids)}-{time.monotonic_ns()}"
    unacked: list[str] = []
    start = time.perf_counter()
    for n in range(0, tiles, batch):
        now = time.time()
        for i in range(batch):
            spec = TaskSpec(port=0, seq=n + i, pipeline="blur:3", captured_ns=int(now * 1e9),
                            received_ns=int(now * 1e9), kind=TaskKind.TILE, job_id=job,
                            meta={"frame": n + i, "tile": 0})
            store.add(spec, payload, now)
        for lease in store.request("w", batch, now):
            store.complete(lease.task.id, lease.token, Outcome(lease.task.id, lease.token, image=image), "w", now)
        store.ack_job_results(unacked)
        unacked = [r.task_id for r, _ in store.take_job_results(job, batch, now)]
    store.ack_job_results(unacked)
    store.cancel_job(job)
    return tiles / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--tiles", type=int, default=800)
    args = p.parse_args(argv)
    benchlib.setup_logging("WARNING")
    machine = benchlib.machine()
    rounds = 3 if args.quick else 7
    with tempfile.TemporaryDirectory(prefix="framehive-journal-") as tmp:
        durable = TaskStore(StoreConfig(max_bytes=2**31), journal=SqliteJournal(Path(tmp) / "m.sqlite3"))
        memory = TaskStore(StoreConfig(max_bytes=2**31))
        run(durable, 64), run(memory, 64)  # warm up
        pairs = [(run(durable, args.tiles), run(memory, args.tiles)) for _ in range(rounds)]
        durable.journal.close()
    with_j = statistics.median(a for a, _ in pairs)
    without = statistics.median(b for _, b in pairs)
    result: dict[str, Any] = {
        "bench": "journal_cost",
        "figure": {"tiles_per_s": round(with_j, 1), "ms_per_tile": round(1000 / with_j, 3)},
        "baseline": {"tiles_per_s": round(without, 1), "ms_per_tile": round(1000 / without, 3)},
        "ratio": benchlib.ratio(with_j, without),
        "ratio_of": "tiles/s with the journal / without (median of alternating rounds)",
        "params": {"tiles_per_round": args.tiles, "rounds": rounds, "tile_bytes": TILE_BYTES},
        "machine": benchlib.finish_machine(machine),
    }
    benchlib.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
