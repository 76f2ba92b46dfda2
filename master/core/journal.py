"""What the master keeps across a restart (`python -m master --state-dir DIR`).

Kept: every accepted file-job tile until its result is taken, every finished tile waiting to be
taken (with its image), and the results of every camera port (as many as the results ring holds),
with their cursors, so users' `since` cursors go on working. Not kept: live frames waiting for a
worker (after a restart they are stale; the publishers are already sending newer ones), events,
and the latest annotated frame per camera.

SQLite in WAL mode with synchronous=NORMAL: a change is in the journal before the request that
made it is answered, and survives the master being killed. A power cut may lose the last
transactions (use a battery-backed disk or FULL if that matters; see docs/OPERATIONS.md).

The task store calls the journal inside its own lock, so the journal sees changes in the store's
order. `NullJournal` keeps nothing: the default.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import BadRequest
from common.results import Result
from common.tasks import Task, spec_from_wire, spec_to_wire

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tiles (
    task_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, spec TEXT NOT NULL, payload BLOB NOT NULL,
    queued_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job_results (
    n INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL,
    result TEXT NOT NULL, image BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS job_results_by_job ON job_results (job_id, n);
CREATE TABLE IF NOT EXISTS results (
    port INTEGER NOT NULL, cursor INTEGER NOT NULL, result TEXT NOT NULL, PRIMARY KEY (port, cursor));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
WAL_CHECKPOINT_PAGES = 16384  # 64 MiB of 4 KiB pages
DURABLE_AGAIN_AFTER = 16  # consecutive good writes before a journal that failed is rewritten from memory
RESYNC_EVERY_S = 10.0  # ... or this long after the last attempt, so an idle master recovers too
PRUNE_EVERY = 64  # results written to a port between two deletions of those past its ring


@dataclass(frozen=True)
class Restored:
    """What a journal held: tiles to queue again, finished tiles to hand out, results per port."""

    tiles: list[Task]
    job_results: list[tuple[str, Result, bytes]]  # (job id, result, image), oldest first
    results: dict[int, list[Result]]  # per port, oldest first, each with its cursor


class NullJournal:
    """Keeps nothing (the master without --state-dir)."""

    enabled = False
    durable = True
    write_errors = 0
    last_error = ""

    def tile_added(self, task: Task) -> None:
        pass

    def tile_dropped(self, task_id: str) -> None:
        pass

    def tile_done(self, task_id: str, job_id: str, result: Result, image: bytes) -> None:
        pass

    def result_stored(self, port: int, cursor: int, result: Result, ring_size: int) -> None:
        pass

    def result_updated(self, port: int, cursor: int, result: Result) -> None:
        """A stored result changed (its detections got their track ids)."""

    def job_results_taken(self, task_ids: list[str]) -> None:
        pass

    def job_cancelled(self, job_id: str) -> None:
        pass

    def restore(self) -> Restored:
        return Restored([], [], {})

    def resync_due(self, now: float) -> bool:
        """Whether a journal that could not write should try to catch up with the master's memory now."""
        return False

    def resync(self, tiles: list[Task], job_results: list[tuple[str, Result, bytes]],
               results: dict[int, list[Result]], ring_size: int, now: float) -> bool:
        """Write what the master holds (see SqliteJournal.resync); True when the journal is durable."""
        return True

    def track_ids_reserved(self) -> int:
        """The track ids handed out (or reserved) by earlier lives of the master: the next life starts above."""
        return 0

    def reserve_track_ids(self, up_to: int) -> None:
        """Record that ids up to `up_to` may be in use, before any of them is handed out."""

    def incarnation(self) -> str:
        """Which life of the master's results this is: a new one at every start when nothing is kept."""
        return secrets.token_hex(6)

    def save_state(self, key: str, value: Any) -> None:
        """Keep a JSON-ready value under `key` (e.g. the line counts) for the next life of the master."""

    def load_state(self, key: str) -> Any:
        """The value an earlier life kept under `key`, or None."""
        return None

    def close(self) -> None:
        pass


class SqliteJournal(NullJournal):
    """The journal in one SQLite file; every method is one transaction.

    A write that fails (a full disk, an I/O error) never fails the master's call: the journal says it
    is not durable (once, loudly, in the log; `durable` false in stats, /metrics and the dashboard),
    the master keeps serving from memory, and every later write tries again, so it is durable again by
    itself once there is room: not after some writes succeed (what was accepted while none could is
    still missing), but once the store has rewritten what it holds into it (`resync`)."""

    enabled = True

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the store calls us under its lock from many threads: one connection, our own lock
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._writes: dict[int, int] = {}
        self._good_writes = 0
        self._resync_tried = 0.0
        with self._lock:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise OSError(f"{self.path}: SQLite would not use WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Tiles are ~100 KB blobs, written, replaced and deleted within seconds: checkpointing the WAL
            # into the main file every 64 MiB instead of every 4 MiB copies a page rewritten in between
            # once instead of several times (bench/journal_cost.py: 1.07 -> 0.76 ms per tile).
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._tx() as db:
                yield db
        except (sqlite3.Error, OSError) as e:
            self.write_errors += 1
            self.last_error = str(e)[:200]
            self._good_writes = 0
            if self.durable:
                self.durable = False
                log.error("journal %s: cannot write (%s): results and file-job tiles are NOT durable until it "
                          "can; the master goes on from memory", self.path, e)
            return
        self._good_writes += 1

    def resync_due(self, now: float) -> bool:
        return not self.durable and (self._good_writes >= DURABLE_AGAIN_AFTER  # not on one lucky delete
                                     or now - self._resync_tried >= RESYNC_EVERY_S)

    def resync(self, tiles: list[Task], job_results: list[tuple[str, Result, bytes]],
               results: dict[int, list[Result]], ring_size: int, now: float) -> bool:
        """Make the journal hold what the master holds, in one transaction, after writes failed: every
        tile queued or leased (and none else), every finished tile waiting for its job server (those
        handed out and not yet acknowledged stay as they are), every result in the rings. Durable again
        when it commits; True then."""
        self._resync_tried = now
        try:
            with self._tx() as db:
                db.execute("DELETE FROM tiles")
                db.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?, ?)",
                               [(t.id, t.spec.job_id, json.dumps(spec_to_wire(t.spec)), t.payload, t.queued_ns)
                                for t in tiles])
                db.executemany("INSERT OR IGNORE INTO job_results (task_id, job_id, result, image) VALUES (?, ?, ?, ?)",
                               [(r.task_id, job, json.dumps(r.to_wire()), image) for job, r, image in job_results])
                for port, kept in results.items():
                    db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                                   [(port, r.cursor, json.dumps(r.to_wire())) for r in kept])
                    if kept:
                        db.execute("DELETE FROM results WHERE port = ? AND cursor <= ?",
                                   (port, kept[-1].cursor - ring_size))
        except (sqlite3.Error, OSError) as e:
            self.write_errors += 1
            self.last_error = str(e)[:200]
            self._good_writes = 0
            return False
        self.durable = True
        log.warning("journal %s: writing again after %d failed write(s): durable again, with the %d tile(s), %d "
                    "finished tile(s) and %d result(s) the master holds rewritten", self.path, self.write_errors,
                    len(tiles), len(job_results), sum(len(v) for v in results.values()))
        return True

    def _tx(self) -> _Tx:
        return _Tx(self._db, self._lock)

    def tile_added(self, task: Task) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?, ?)",
                       (task.id, task.spec.job_id, json.dumps(spec_to_wire(task.spec)), task.payload, task.queued_ns))

    def tile_dropped(self, task_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM tiles WHERE task_id = ?", (task_id,))

    def tile_done(self, task_id: str, job_id: str, result: Result, image: bytes) -> None:
        with self._write() as db:
            db.execute("DELETE FROM tiles WHERE task_id = ?", (task_id,))
            db.execute("INSERT OR REPLACE INTO job_results (task_id, job_id, result, image) VALUES (?, ?, ?, ?)",
                       (task_id, job_id, json.dumps(result.to_wire()), image))

    def result_stored(self, port: int, cursor: int, result: Result, ring_size: int) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (port, cursor, json.dumps(result.to_wire())))
            n = self._writes.get(port, 0) + 1
            self._writes[port] = n
            if n % PRUNE_EVERY == 0:
                db.execute("DELETE FROM results WHERE port = ? AND cursor <= ?", (port, cursor - ring_size))

    def result_updated(self, port: int, cursor: int, result: Result) -> None:
        with self._write() as db:
            db.execute("UPDATE results SET result = ? WHERE port = ? AND cursor = ?",
                       (json.dumps(result.to_wire()), port, cursor))

    def job_results_taken(self, task_ids: list[str]) -> None:
        if task_ids:
            with self._write() as db:
                db.executemany("DELETE FROM job_results WHERE task_id = ?", [(t,) for t in task_ids])

    def job_cancelled(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM tiles WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))

    def incarnation(self) -> str:
        """The results' incarnation, kept in the file: cursors stay valid across restarts with it."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'incarnation'").fetchone()
        if row:
            return str(row[0])
        value = secrets.token_hex(6)
        with self._write() as db:  # a first start on a full disk: this life's results are not durable
            db.execute("INSERT INTO meta (key, value) VALUES ('incarnation', ?)", (value,))
        return value

    def track_ids_reserved(self) -> int:
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'track_ids'").fetchone()
            return int(row[0]) if row else 0

    def reserve_track_ids(self, up_to: int) -> None:
        with self._write() as db:  # on a full disk too: not durable, said once, never a failed start
            db.execute("INSERT INTO meta (key, value) VALUES ('track_ids', ?) ON CONFLICT(key) DO UPDATE SET "
                       "value = excluded.value", (str(up_to),))

    def save_state(self, key: str, value: Any) -> None:
        with self._write() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                       "value = excluded.value", (f"state:{key}", json.dumps(value)))

    def load_state(self, key: str) -> Any:
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (f"state:{key}",)).fetchone()
        try:
            return json.loads(row[0]) if row else None
        except ValueError as e:
            log.warning("journal %s: the kept %s do not read (%s): starting them afresh", self.path, key, e)
            return None

    def restore(self) -> Restored:
        with self._lock:
            tiles = [Task(task_id, spec_from_wire(json.loads(spec)), bytes(payload), queued_ns)
                     for task_id, spec, payload, queued_ns in
                     self._db.execute("SELECT task_id, spec, payload, queued_ns FROM tiles ORDER BY rowid")]
            done = [(job, r, bytes(image)) for job, result, image in
                    self._db.execute("SELECT job_id, result, image FROM job_results ORDER BY n")
                    if (r := self._read(result)) is not None]
            results: dict[int, list[Result]] = {}
            for port, result in self._db.execute("SELECT port, result FROM results ORDER BY port, cursor"):
                if (r := self._read(result)) is not None:
                    results.setdefault(port, []).append(r)
        log.info("journal %s: %d tile(s) to queue again, %d finished tile(s), results of %d camera(s)",
                 self.path, len(tiles), len(done), len(results))
        return Restored(tiles, done, results)

    def _read(self, text: str) -> Result | None:
        """A stored result, or None (logged) when it no longer reads as one: one bad row must not keep
        the master from starting."""
        try:
            return Result.from_wire(json.loads(text))
        except (ValueError, BadRequest) as e:
            log.warning("journal %s: leaving out a stored result that does not read: %s", self.path, e)
            return None

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Tx:
    """BEGIN ... COMMIT under the journal's lock (ROLLBACK on error)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self.db, self.lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        self.db.execute("BEGIN")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                    return
                except sqlite3.Error:  # a full disk fails the COMMIT: leave no transaction open
                    _rollback(self.db)
                    raise
            _rollback(self.db)
        finally:
            self.lock.release()


def _rollback(db: sqlite3.Connection) -> None:
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # nothing was begun, or the failure already ended it


def iter_tables(path: Path) -> Iterator[tuple[str, int]]:
    """Row counts per table of a journal file (for tests and `--state-dir` diagnostics)."""
    db = sqlite3.connect(path)
    try:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"):
            yield name, db.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]  # noqa: S608 - our own names
    finally:
        db.close()
