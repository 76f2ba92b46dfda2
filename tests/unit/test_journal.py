"""The master's journal: what a restarted store takes back (real SQLite files)."""

from __future__ import annotations

import sqlite3

from common.tasks import Outcome, TaskKind, TaskSpec
from master.core.journal import SqliteJournal, iter_tables
from master.core.store import StoreConfig, TaskStore

NOW = 1_800_000_000.0


def spec(port: int = 5000, seq: int = 0, *, job: str = "") -> TaskSpec:
    kind = TaskKind.TILE if job else TaskKind.FRAME
    return TaskSpec(port=port, seq=seq, pipeline="noop", captured_ns=int(NOW * 1e9), received_ns=int(NOW * 1e9),
                    kind=kind, job_id=job, meta={"tile": seq} if job else {})


def finish(store: TaskStore, n: int, image: bytes = b"") -> list[str]:
    done = []
    for lease in store.request("w", n, NOW):
        store.complete(lease.task.id, lease.token, Outcome(lease.task.id, lease.token, image=image), "w", NOW)
        done.append(lease.task.id)
    return done


def test_a_restarted_store_keeps_tiles_finished_tiles_and_results_with_their_cursors(tmp_path):
    path = tmp_path / "m.sqlite3"
    config = StoreConfig(results_per_port=5)
    store = TaskStore(config, journal=SqliteJournal(path))
    for i in range(7):
        store.add(spec(seq=i), b"jpeg", NOW)  # live frames: their results are kept, the frames are not
    tiles = [store.add(spec(port=0, seq=i, job="j1"), f"tile{i}".encode(), NOW) for i in range(6)]
    finish(store, 13, image=b"out")  # 7 frames and the 6 tiles, round robin
    assert [r.task_id for r, _ in store.take_job_results("j1", 2)] == tiles[:2]
    store.ack_job_results(tiles[:2])  # taken and acknowledged: gone for good
    assert [r.task_id for r, _ in store.take_job_results("j1", 1)] == tiles[2:3]  # taken, never acknowledged
    more = [store.add(spec(port=0, seq=10 + i, job="j1"), b"late", NOW) for i in range(3)]
    store.add(spec(seq=99), b"pending frame", NOW)  # a live frame still queued: stale after a restart
    store.journal.close()

    again = TaskStore(config, journal=SqliteJournal(path))
    leases = again.request("w2", 10, NOW)
    assert sorted(x.task.id for x in leases) == sorted(more), "exactly the unfinished tiles come back"
    assert {x.task.payload for x in leases} == {b"late"} and all(x.task.spec.job_id == "j1" for x in leases)
    waiting = again.take_job_results("j1", 10)
    # the unacknowledged tile comes back too: its reply may have died with the old master
    assert [r.task_id for r, _ in waiting] == tiles[2:] and {img for _, img in waiting} == {b"out"}
    page = again.results(5000, 3, 10)  # a user's cursor from before the restart still works
    assert [r.seq for r in page["results"]] == [3, 4, 5, 6] and page["next"] == 7
    assert again.results(5000, 0, 10)["missed"] == 2, "the ring holds 5; older ones are gone as before"
    again.add(spec(seq=7), b"jpeg", NOW)
    finish(again, 10)
    assert again.results(5000, 7, 10)["results"][0].cursor == 8, "cursors keep growing"


def test_a_cancelled_job_leaves_nothing_in_the_journal(tmp_path):
    path = tmp_path / "m.sqlite3"
    store = TaskStore(journal=SqliteJournal(path))
    for i in range(4):
        store.add(spec(port=0, seq=i, job="gone"), b"t", NOW)
    finish(store, 2)
    store.cancel_job("gone")
    store.journal.close()
    counts = dict(iter_tables(path))
    assert counts["tiles"] == 0 and counts["job_results"] == 0


def test_results_are_pruned_to_the_ring_size(tmp_path):
    path = tmp_path / "m.sqlite3"
    store = TaskStore(StoreConfig(results_per_port=10), journal=SqliteJournal(path))
    for i in range(300):
        store.add(spec(seq=i), b"j", NOW)
        finish(store, 1)
    store.journal.close()
    assert dict(iter_tables(path))["results"] <= 10 + 64, "pruned every 64 writes"


def test_the_incarnation_is_kept_with_the_results(tmp_path):
    from master.core.journal import NullJournal, SqliteJournal

    first = SqliteJournal(tmp_path / "m.sqlite3")
    value = first.incarnation()
    first.close()
    again = SqliteJournal(tmp_path / "m.sqlite3")
    assert again.incarnation() == value == again.incarnation()
    again.close()
    assert NullJournal().incarnation() != NullJournal().incarnation()


class FullDisk:
    """A journal connection on a full disk: every transaction fails at COMMIT, as SQLite's WAL file
    cannot grow (the real thing is in tests/integration/test_full_disk.py); `room()` frees the disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.full, self.wrote = db, True, False

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql in ("BEGIN", "ROLLBACK"):
            self.wrote = False
        elif sql == "COMMIT" and self.full and self.wrote:  # a transaction that only read commits
            raise sqlite3.OperationalError("database or disk is full")
        elif not sql.lstrip().upper().startswith(("SELECT", "PRAGMA")):
            self.wrote = True
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
        self.wrote = True
        return self.db.executemany(sql, rows)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)

    def room(self) -> None:
        self.full = False


def full_journal(path) -> tuple[SqliteJournal, FullDisk]:
    journal = SqliteJournal(path)
    disk = journal._db = FullDisk(journal._db)  # noqa: SLF001 - the fault under test
    return journal, disk


def test_a_master_starts_on_a_full_disk_not_durable(tmp_path):
    """A master restarted (by its supervisor) while --state-dir is full reserves its track ids like any
    other write: it starts, says it is not durable, and goes on from memory."""
    from master.core.service import MasterService

    path = tmp_path / "m.sqlite3"
    earlier = SqliteJournal(path)  # an earlier life
    earlier.incarnation()
    earlier.close()
    journal, _ = full_journal(path)
    service = MasterService(store=TaskStore(journal=journal))
    assert not journal.durable and journal.write_errors >= 1
    assert service.stats()["journal"]["durable"] is False
    fresh, _ = full_journal(tmp_path / "new.sqlite3")  # a first start on a full disk, too
    assert TaskStore(journal=fresh).incarnation and not fresh.durable



def test_durable_again_holds_what_was_accepted_while_the_disk_was_full(tmp_path):
    """When writes work again the journal is durable only once it holds what the master accepted in the
    meantime: the tiles queued and the results stored while nothing could be written."""
    from master.core.service import MasterService

    path = tmp_path / "m.sqlite3"
    journal, disk = full_journal(path)
    service = MasterService(store=TaskStore(journal=journal))
    store = service.store
    store.add(spec(seq=1), b"jpeg", NOW)
    assert len(finish(store, 1)) == 1  # a frame's result stored while the disk is full
    tiles = [store.add(spec(port=0, seq=i, job="j1"), b"tile", NOW) for i in range(2)]
    disk.room()
    for i in range(20):  # plenty of good writes once the disk has room again
        journal.save_state("probe", i)
    service.monitor_once()
    assert journal.durable, "durable again by itself"
    journal.close()
    again = TaskStore(journal=SqliteJournal(path))
    restored = {lease.task.id for lease in again.request("w2", 10, NOW)}
    assert set(tiles) <= restored, "a tile accepted while the disk was full survives a restart once durable"
    assert again.results(5000, 0, 10)["results"][0].seq == 1, "so does a result stored then"
