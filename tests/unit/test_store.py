"""The task store with an injected clock: leases, expiry, fencing, attempt cap, caps, fairness."""

import itertools
import threading

import pytest

from common.errors import QueueFull, StaleLease, TaskError, UnknownTask
from common.tasks import Detection, Outcome, TaskKind, TaskSpec, TaskState
from master.core.store import StoreConfig, TaskStore

T0 = 1_700_000_000.0


def spec(port=5000, seq=0, kind=TaskKind.FRAME, job="", received=T0):
    return TaskSpec(port=port, seq=seq, pipeline="person", captured_ns=int(received * 1e9),
                    received_ns=int(received * 1e9), kind=kind, job_id=job)


def make(**cfg):
    counter = itertools.count()
    return TaskStore(StoreConfig(**cfg), token_factory=lambda: f"tok{next(counter)}", id_prefix="t")


def ok(lease, label="person"):
    return Outcome(lease.task.id, lease.token, (Detection(label, 0.9, (1, 2, 3, 4)),), {"person": 12.5})


def test_lifecycle_pending_in_progress_completed():
    s = make()
    tid = s.add(spec(seq=7), b"jpeg", T0)
    assert s.state_of(tid) is TaskState.PENDING
    [lease] = s.request("w1", 4, T0)
    assert lease.task.payload == b"jpeg" and lease.attempt == 1
    assert s.state_of(tid) is TaskState.IN_PROGRESS
    r = s.complete(tid, lease.token, ok(lease), "w1", T0 + 0.05)
    assert s.state_of(tid) is None
    assert r.seq == 7 and r.worker == "w1" and r.status == "ok"
    assert r.detections == (Detection("person", 0.9, (1, 2, 3, 4)),)
    assert r.latency_ms == pytest.approx(50.0, abs=0.01)
    page = s.results(5000, 0, 100)
    assert [x.seq for x in page["results"]] == [7] and page["next"] == 1


def test_stale_token_cannot_complete_after_expiry():
    s = make(lease_s=5)
    tid = s.add(spec(), b"x", T0)
    [slow] = s.request("slow", 1, T0)
    assert s.expire(T0 + 4.9) == 0
    assert s.expire(T0 + 5.0) == 1
    [fast] = s.request("fast", 1, T0 + 5.1)
    assert fast.task.id == tid and fast.attempt == 2
    with pytest.raises(StaleLease):
        s.complete(tid, slow.token, ok(slow), "slow", T0 + 6)
    s.complete(tid, fast.token, ok(fast), "fast", T0 + 6)
    with pytest.raises(UnknownTask):  # the slow one tries again later: still no duplicate
        s.complete(tid, slow.token, ok(slow), "slow", T0 + 7)
    assert len(s.results(5000, 0, 100)["results"]) == 1
    assert s.counters["stale_completions"] == 2


def test_attempt_cap_fails_task_with_visible_error():
    s = make(lease_s=1, max_attempts=2)
    tid = s.add(spec(), b"x", T0)
    for i in range(2):
        assert len(s.request("w", 1, T0 + 2 * i)) == 1
        s.expire(T0 + 2 * i + 1.5)
    assert s.state_of(tid) is None
    [r] = s.results(5000, 0, 10)["results"]
    assert r.status == "failed" and "2 attempts" in r.error
    assert s.request("w", 1, T0 + 10) == []


def test_worker_failure_requeues_then_fails():
    s = make(max_attempts=2)
    tid = s.add(spec(), b"x", T0)
    [a] = s.request("w", 1, T0)
    assert s.fail(tid, a.token, "boom", T0) is TaskState.PENDING
    [b] = s.request("w", 1, T0)
    assert s.fail(tid, b.token, "boom", T0) is TaskState.FAILED


def test_release_does_not_use_an_attempt():
    s = make(max_attempts=1)
    tid = s.add(spec(), b"x", T0)
    [a] = s.request("w", 1, T0)
    s.release(tid, a.token)
    [b] = s.request("w2", 1, T0)
    assert b.attempt == 1
    with pytest.raises(StaleLease):
        s.release(tid, a.token)


def test_renew_keeps_a_live_worker_lease_up_to_max_hold():
    s = make(lease_s=5, max_hold_s=12)
    s.add(spec(), b"x", T0)
    s.request("w", 1, T0)
    for t in (4, 8):
        s.renew("w", T0 + t)
        assert s.expire(T0 + t + 3.5) == 0  # past the original deadline, inside the renewed one
    s.renew("w", T0 + 11)  # would reach T0 + 16, capped at max_hold_s
    assert s.expire(T0 + 12.01) == 1


def test_dead_worker_leases_are_requeued_at_once():
    s = make(lease_s=60)
    s.add(spec(seq=1), b"x", T0)
    s.add(spec(seq=2), b"x", T0)
    s.request("dead", 1, T0)
    s.request("alive", 1, T0)
    assert s.expire(T0 + 1, worker="dead") == 1
    [again] = s.request("alive", 5, T0 + 1)
    assert again.task.spec.seq == 1


def test_per_port_cap_drops_oldest_frames():
    s = make(max_pending_per_port=3)
    for i in range(10):
        s.add(spec(seq=i), b"x", T0)
    assert [x.task.spec.seq for x in s.request("w", 10, T0)] == [7, 8, 9]
    assert s.port_counters[5000]["dropped_overflow"] == 7


def test_tiles_are_never_dropped_but_capacity_is_bounded():
    s = make(max_pending_per_port=2, max_tasks=5)
    for i in range(5):
        s.add(spec(seq=i, kind=TaskKind.TILE, job="j1"), b"x", T0)
    with pytest.raises(QueueFull):
        s.add(spec(seq=5, kind=TaskKind.TILE, job="j1"), b"x", T0)
    assert len(s.request("w", 10, T0 + 1000)) == 5  # never stale


def test_stale_frames_are_not_handed_out():
    s = make(max_frame_age_s=2)
    s.add(spec(seq=1, received=T0), b"x", T0)
    s.add(spec(seq=2, received=T0 + 2), b"x", T0 + 2)
    assert [x.task.spec.seq for x in s.request("w", 5, T0 + 3)] == [2]
    assert s.port_counters[5000]["dropped_stale"] == 1


def test_fair_across_ports():
    s = make(max_pending_per_port=100)
    for i in range(50):
        s.add(spec(port=5000, seq=i), b"x", T0)
    for i in range(3):
        s.add(spec(port=5001, seq=i), b"x", T0)
    first = [x.task.spec.port for x in s.request("w", 6, T0)]
    assert first == [5000, 5001] * 3


def test_result_cursor_ring_and_missed_count():
    s = make(results_per_port=3)
    for i in range(5):
        s.add(spec(seq=i), b"x", T0)
        [lease] = s.request("w", 1, T0)
        s.complete(lease.task.id, lease.token, ok(lease), "w", T0)
    page = s.results(5000, 0, 10)
    assert [r.seq for r in page["results"]] == [2, 3, 4] and page["missed"] == 2 and page["next"] == 5
    assert s.results(5000, 5, 10) == {"results": [], "next": 5, "missed": 0, "incarnation": s.incarnation}
    page = s.results(5000, 3, 1)
    assert [r.cursor for r in page["results"]] == [4] and page["next"] == 4
    # a cursor from before a master restart reads from the oldest kept result
    assert [r.cursor for r in s.results(5000, 999, 10)["results"]] == [3, 4, 5]
    assert s.results(6000, 0, 10) == {"results": [], "next": 0, "missed": 0, "incarnation": s.incarnation}


def test_too_many_ports_refused():
    s = make(max_ports=2)
    s.add(spec(port=1), b"", T0)
    s.add(spec(port=2), b"", T0)
    with pytest.raises(QueueFull):
        s.add(spec(port=3), b"", T0)


def test_concurrent_workers_never_get_the_same_task_or_double_complete():
    s = make(max_pending_per_port=10_000, max_tasks=10_000)
    for i in range(2000):
        s.add(spec(port=5000 + i % 4, seq=i), b"x", T0)
    seen, lock = [], threading.Lock()

    def work(name):
        while leases := s.request(name, 3, T0):
            for lease in leases:
                s.complete(lease.task.id, lease.token, ok(lease), name, T0)
                with lock:
                    seen.append(lease.task.id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == len(set(seen)) == 2000
    assert s.snapshot()["pending"] == 0


def test_leases_a_worker_never_received_are_reclaimed_after_a_grace_period():
    s = make(lease_s=60)
    a = s.add(spec(seq=1), b"x", T0)
    b = s.add(spec(seq=2), b"x", T0)
    s.request("w", 2, T0)  # imagine the reply carrying task b was lost on the way
    assert s.reclaim("w", {a}, T0 + 1, grace_s=3) == 0  # b may still be in flight
    assert s.renew("w", T0 + 1, held={a}) == 1
    assert s.reclaim("w", {a}, T0 + 4, grace_s=3) == 1
    assert s.state_of(b) is TaskState.PENDING and s.state_of(a) is TaskState.IN_PROGRESS
    [again] = s.request("w2", 5, T0 + 4)
    assert again.task.id == b and again.attempt == 1  # losing a reply is not the task's fault


def test_failed_tiles_back_off_exponentially_before_a_retry_while_frames_retry_at_once():
    import random

    s = TaskStore(StoreConfig(max_attempts=4, retry_backoff_s=1.0), rng=random.Random(1), id_prefix="t")
    tile = s.add(spec(kind=TaskKind.TILE, job="j"), b"x", T0)
    other = s.add(spec(seq=1, kind=TaskKind.TILE, job="j"), b"x", T0)
    frame = s.add(spec(port=7), b"x", T0)
    leases = {x.task.id: x for x in s.request("w", 3, T0)}
    s.fail(tile, leases[tile].token, "boom", T0)
    s.fail(frame, leases[frame].token, "boom", T0)
    s.release(other, leases[other].token)
    assert {x.task.id for x in s.request("w", 3, T0 + 0.01)} == {frame, other}  # the tile waits
    assert s.request("w", 3, T0 + 0.49) == []
    [again] = s.request("w", 3, T0 + 1.0)  # backoff 0.5..1 s after the first failure
    assert again.task.id == tile
    s.fail(tile, again.token, "boom", T0 + 1.0)
    assert s.request("w", 1, T0 + 1.99) == []  # 1..2 s after the second
    assert [x.task.id for x in s.request("w", 1, T0 + 3.0)] == [tile]


def test_a_task_whose_workers_die_runs_last_then_is_quarantined():
    """A task held by a worker that died goes to the back of its lane (not the front, where it would
    kill the next worker at once); a second death while holding it fails it visibly, not retried."""
    s = make(max_pending_per_port=16)
    poison = s.add(spec(seq=0), b"crasher", T0)
    other = s.add(spec(seq=1), b"fine", T0)
    [first] = s.request("w1", 1, T0)
    assert first.task.id == poison
    assert s.expire(T0 + 1, worker="w1", died=True) == 1
    [next_up] = s.request("w2", 1, T0 + 1)
    assert next_up.task.id == other  # the suspect waits behind the lane's other work
    s.complete(other, next_up.token, ok(next_up), "w2", T0 + 1.1)
    [again] = s.request("w2", 1, T0 + 1.2)
    assert again.task.id == poison and again.attempt == 2
    assert s.expire(T0 + 2, worker="w2", died=True) == 1
    assert s.state_of(poison) is None and s.request("w3", 1, T0 + 2.1) == []
    [r] = [x for x in s.results(5000, 0, 10)["results"] if x.seq == 0]
    assert r.status == "failed" and "quarantined" in r.error and "2 workers died" in r.error
    assert s.counters["quarantined"] == 1 and s.port_counters[5000]["failed"] == 1


def test_an_expired_lease_of_a_living_worker_is_not_a_death():
    s = make(lease_s=5, max_attempts=5)
    tid = s.add(spec(), b"x", T0)
    for i in range(3):  # slow, not dead: plain retries up to the attempt cap, never quarantine
        s.request(f"w{i}", 1, T0 + 10 * i)
        assert s.expire(T0 + 10 * i + 5) == 1
    assert s.state_of(tid) is TaskState.PENDING and s.counters["quarantined"] == 0


def test_a_cursor_from_another_incarnation_reads_from_the_start():
    """A master restarted without --state-dir numbers results from 1 again: a reader that names the
    incarnation of its cursor 76 gets the new master's results from the first, told it restarted."""
    old = make()
    for i in range(3):
        tid = old.add(spec(seq=i), b"x", T0)
        [lease] = old.request("w", 1, T0)
        old.complete(tid, lease.token, ok(lease), "w", T0)
    page = old.results(5000, 0, 100)
    assert page["next"] == 3 and "restarted" not in page
    new = make()
    assert new.incarnation != old.incarnation
    for i in range(2):
        tid = new.add(spec(seq=10 + i), b"x", T0)
        [lease] = new.request("w", 1, T0)
        new.complete(tid, lease.token, ok(lease), "w", T0)
    stale = new.results(5000, 76, 100, incarnation=page["incarnation"])
    assert stale["restarted"] is True and [r.seq for r in stale["results"]] == [10, 11]
    same = new.results(5000, 1, 100, incarnation=new.incarnation)
    assert "restarted" not in same and [r.seq for r in same["results"]] == [11]


def test_payload_bytes_are_bounded_frames_give_way_tiles_wait():
    s = make(max_bytes=1000, max_pending_per_port=100)
    a = [s.add(spec(port=5000, seq=i), b"f" * 100, T0 + i) for i in range(5)]   # 500 bytes
    b = [s.add(spec(port=6000, seq=i), b"g" * 100, T0 + 10 + i) for i in range(5)]  # 1000: full
    assert s.snapshot()["payload_bytes"] == 1000
    s.add(spec(port=6000, seq=9), b"h" * 250, T0 + 20)  # the 3 oldest frames (port 5000) give way
    assert [s.state_of(t) for t in a] == [None, None, None, TaskState.PENDING, TaskState.PENDING]
    assert s.port_counters[5000]["dropped_bytes"] == 3 and s.snapshot()["payload_bytes"] == 950
    with pytest.raises(QueueFull, match="MiB of payloads"):
        s.add(spec(port=7000, kind=TaskKind.TILE, job="j"), b"t" * 100, T0 + 21)  # tiles never push frames out
    assert all(s.state_of(t) is TaskState.PENDING for t in b)
    [lease] = s.request("w", 1, T0 + 22)
    s.complete(lease.task.id, lease.token, ok(lease), "w", T0 + 23)
    assert s.snapshot()["payload_bytes"] == 850
    s.add(spec(port=7000, kind=TaskKind.TILE, job="j"), b"t" * 100, T0 + 24)  # room again
    assert s.counters["rejected_bytes"] == 1


def test_a_file_job_nobody_touches_expires():
    """A receiver killed mid-job leaves tiles queued and finished on the master: after the idle time
    with no tile added or taken, the job is cancelled and its memory returned."""
    s = make()
    s.add(spec(port=0, kind=TaskKind.TILE, job="dead"), b"t" * 100, T0)
    tid = s.add(spec(port=0, seq=1, kind=TaskKind.TILE, job="dead"), b"t" * 100, T0)
    s.add(spec(port=0, kind=TaskKind.TILE, job="alive"), b"t" * 100, T0)
    [lease] = s.request("w", 1, T0 + 1)
    assert lease.task.spec.job_id == "dead"
    s.complete(lease.task.id, lease.token, ok(lease), "w", T0 + 2)
    assert s.expire_jobs(T0 + 100, idle_s=300) == []
    s.take_job_results("alive", 10, now=T0 + 250)
    s.add(spec(port=0, seq=2, kind=TaskKind.TILE, job="alive"), b"t" * 100, T0 + 290)
    assert s.expire_jobs(T0 + 301, idle_s=300) == [("dead", 1)]
    assert s.state_of(tid) is None and s.counters["jobs_expired"] == 1
    assert s.take_job_results("dead", 10) == [] and s.snapshot()["payload_bytes"] == 200


def test_the_per_worker_lease_index_follows_every_way_a_lease_ends():
    """Heartbeats renew, reclaim and expire a worker's leases through an index, not a scan of every
    task: after any sequence of leases, completions, failures, hand-backs, reclaims, expiries, deaths
    and drops, the index holds exactly the in-progress tasks of each worker."""
    import random as _random

    rng = _random.Random(5)
    store = TaskStore(StoreConfig(max_pending_per_port=4, lease_s=2.0, max_attempts=3))
    workers = ["a", "b", "c"]
    held: dict[str, list] = {w: [] for w in workers}
    now = 1000.0
    for step in range(3000):
        now += rng.uniform(0.0, 0.3)
        op = rng.random()
        w = rng.choice(workers)
        if op < 0.3:
            store.add(TaskSpec(port=5000 + rng.randrange(6), seq=step, pipeline="noop", captured_ns=int(now * 1e9),
                               received_ns=int(now * 1e9)), b"x", now)
        elif op < 0.5:
            held[w] += store.request(w, rng.randint(1, 3), now)
        elif op < 0.8 and held[w]:
            lease = held[w].pop(rng.randrange(len(held[w])))
            try:
                action = rng.choice(("complete", "fail", "release"))
                if action == "complete":
                    store.complete(lease.task.id, lease.token, Outcome(lease.task.id, lease.token), w, now)
                elif action == "fail":
                    store.fail(lease.task.id, lease.token, "boom", now)
                else:
                    store.release(lease.task.id, lease.token)
            except TaskError:
                pass  # requeued or dropped meanwhile: a stale lease
        elif op < 0.87:
            store.renew(w, now, {x.task.id for x in held[w][::2]})
        elif op < 0.92:
            store.reclaim(w, {x.task.id for x in held[w][1:]}, now, grace_s=0.5)
        elif op < 0.97:
            store.expire(now)
        else:
            store.expire(now, worker=w, died=True)
        in_progress: dict[str, set] = {}
        for rec in store._tasks.values():
            if rec.state is TaskState.IN_PROGRESS:
                in_progress.setdefault(rec.worker, set()).add(rec.task.id)
        assert {k: set(v) for k, v in store._leased_by.items()} == in_progress, step
        assert store.waiting() == sum(r.state is TaskState.PENDING for r in store._tasks.values()), step
        assert store.renew("a", now) == len(in_progress.get("a", ()))
