"""The worker registry and the receiver's newest-frame-wins buffer."""

import threading

from master.core.workers import WorkerRegistry
from receiver.buffer import FrameBuffer, ReadyFrame


def test_registry_declares_a_silent_worker_dead_once():
    reg = WorkerRegistry(timeout_s=5)
    a, b = reg.register("w", 0.0), reg.register("w", 0.0)
    assert a != b  # same name, distinct ids
    assert reg.seen(a, 4.0, {"cpu_percent": 12.5, "nested": {"x": 1}})
    assert reg.newly_dead(6.0) == [b]
    assert reg.newly_dead(7.0) == []
    assert reg.newly_dead(9.5) == [a]
    assert not reg.seen("ghost#1", 10.0)
    assert reg.seen(a, 10.0)  # a worker that comes back is alive again
    snap = {w["worker_id"]: w for w in reg.snapshot(10.0)}
    assert snap[a]["alive"] and not snap[b]["alive"] and snap[a]["stats"] == {"cpu_percent": 12.5}


def frame(port, seq):
    return ReadyFrame(port, seq, 0, 0, b"x", "person", {})


def test_buffer_keeps_the_newest_per_port_and_serves_ports_in_turn():
    buf = FrameBuffer(per_port=3)
    for i in range(10):
        buf.put(frame(1, i))
    buf.put(frame(2, 0))
    assert buf.dropped[1] == 7 and len(buf) == 4
    assert [(f.port, f.seq) for f in buf.take(10, 0)] == [(1, 7), (2, 0), (1, 8), (1, 9)]
    assert buf.take(10, 0.01) == []


def test_buffer_take_wakes_when_a_frame_arrives():
    buf = FrameBuffer()
    threading.Timer(0.05, lambda: buf.put(frame(1, 1))).start()
    assert [f.seq for f in buf.take(5, 5.0)] == [1]


def test_forwarded_batches_are_split_under_the_request_limit():
    from receiver.buffer import ReadyFrame
    from receiver.forward import split_by_bytes

    def frame(n: int) -> ReadyFrame:
        return ReadyFrame(5000, 0, 0, 0, b"x" * n, "person", {})

    sizes = [[len(f.data) for f in g] for g in split_by_bytes([frame(6), frame(5), frame(1), frame(12), frame(3)], 10)]
    assert sizes == [[6], [5, 1], [12], [3]]
    assert split_by_bytes([], 10) == []
