"""The compiled datagram core (common/_datagram.c): that it is built, how the receiver falls back
without it, its batched receive on real sockets, its encoder, and the publisher's segmented sends.
What it shares with the Python reference (every protocol and fuzz test, and a differential fuzzer)
runs from test_protocol*.py and test_fuzz_inputs.py against both cores."""

from __future__ import annotations

import errno
import logging
import socket
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.compiled import datagram_core
from common.protocol import encode_frame, max_chunk_bytes
from common.reassembly import FrameAssembler, ReassemblyLimits
from receiver import ingestcore
from receiver.buffer import FrameBuffer
from receiver.udp import UdpIngest
from sender.transport import UdpTransport
from tests.conftest import wait_until
from tests.cores import BUILT, CORE_NAMES, NOT_BUILT, compiled_assembler

KEY = bytes(range(32))
compiled_only = pytest.mark.skipif(not BUILT, reason=NOT_BUILT)


def test_compiled_core_is_built():
    """`make setup` builds it; without it half of the protocol tests are skipped, so say so here."""
    assert ingestcore.compiled_module() is not None, "run `make setup` (scripts/build_datagram_core.py says why not)"


@pytest.fixture
def no_compiled_core(monkeypatch):
    """This process as if the extension had not been built: importing it fails."""
    monkeypatch.setitem(sys.modules, "common._datagram", None)  # None in sys.modules: ImportError on import
    datagram_core.cache_clear()
    ingestcore._compiled_class.cache_clear()
    yield
    datagram_core.cache_clear()
    ingestcore._compiled_class.cache_clear()


def test_without_the_compiled_core_the_receiver_says_so_once_and_runs_python(no_compiled_core, caplog):
    with caplog.at_level(logging.WARNING, logger="common.compiled"):
        assert [ingestcore.resolve(c) for c in ("auto", "compiled", "python")] == ["python"] * 3
        assert ingestcore.assembler_class("compiled") is FrameAssembler
        ing = UdpIngest("127.0.0.1", [0], {0: "person"}, FrameBuffer(), core="compiled")
        ing.close()
    assert ing.core == "python" and all(type(a) is FrameAssembler for a in ing.assemblers.values())
    warned = [r for r in caplog.records if "not available" in r.getMessage()]
    assert len(warned) == 1 and "make setup" in warned[0].getMessage()


def test_an_unknown_core_name_is_refused():
    with pytest.raises(ValueError, match="auto, compiled, python"):
        ingestcore.resolve("fast")


@compiled_only
def test_compiled_assembler_takes_only_ip_sources():
    asm = compiled_assembler()()
    [g] = encode_frame(b"abc", stream_id=1, seq=1, capture_ns=1)
    assert asm.add(g, ("::1", 5), 0.0).source == ("::1", 5)
    with pytest.raises(ValueError, match="not an IP address"):
        asm.add(g, ("camera-7", 5), 0.0)
    with pytest.raises(TypeError):
        asm.add(g, "127.0.0.1:5", 0.0)


@compiled_only
def test_counters_are_a_snapshot_with_the_reference_names():
    asm = compiled_assembler()(ReassemblyLimits(max_chunks=4))
    asm.add(b"junk", ("127.0.0.1", 1), 0.0)
    c = asm.counters
    c["short"] += 5  # a copy: the core keeps its own
    assert asm.counters == {"datagrams": 1, "bytes": 4, "short": 1} and asm.malformed() == 1
    assert asm.limits.max_chunks == 4 and asm.key is None


@pytest.fixture
def udp_pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    txs = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for tx in txs:
        tx.bind(("127.0.0.1", 0))
    yield rx, txs
    for s in (rx, *txs):
        s.close()


@compiled_only
@pytest.mark.parametrize("key", [None, KEY], ids=["keyless", "keyed"])
def test_recv_drains_batches_from_two_senders_into_whole_frames(udp_pair, key):
    rx, txs = udp_pair
    asm, batch = compiled_assembler()(key=key), ingestcore.recv_batch()
    data = [bytes([i]) * 20_000 for i in range(4)]  # 15 datagrams of 1,400 bytes each
    sent = 0
    for seq, frame in enumerate(data):
        for stream, tx in enumerate(txs):  # interleaved frame by frame: two streams on one port
            for g in encode_frame(frame, stream_id=stream, seq=seq, capture_ns=seq, chunk_bytes=1400, key=key):
                tx.sendto(g, rx.getsockname())
                sent += 1
        rx.sendto(b"not ours", rx.getsockname())
        sent += 1
    frames, read = [], 0
    while read < sent:  # at most 50 per call, in recvmmsg batches of up to 64
        got, n = asm.recv(rx.fileno(), batch, 7.0, 50)
        assert 0 < n <= 50
        frames += got
        read += n
    assert asm.recv(rx.fileno(), batch, 7.0, 50) == ([], 0)  # drained: no error, nothing read
    by_sender = {tx.getsockname(): [f.data for f in frames if f.source == tx.getsockname()] for tx in txs}
    assert list(by_sender.values()) == [data, data]
    assert all(f.first_at == f.completed_at == 7.0 and f.chunks == 15 for f in frames)
    assert asm.counters["bad_magic"] + asm.counters["short"] == 4 and asm.counters["frames_complete"] == 8


@compiled_only
def test_udp_ingest_runs_the_compiled_core_end_to_end(udp_pair):
    _, [tx, _] = udp_pair
    buf = FrameBuffer(per_port=100)
    ing = UdpIngest("127.0.0.1", [0], {0: "person"}, buf, core="compiled")
    [port] = ing.sockets
    ing.start()
    try:
        for seq in range(5):
            for g in encode_frame(bytes([seq]) * 10_000, stream_id=9, seq=seq, capture_ns=seq + 1):
                tx.sendto(g, ("127.0.0.1", port))
        frames = []
        wait_until(lambda: frames.extend(buf.take(10, 0.05)) or len(frames) == 5)
    finally:
        ing.stop()
        ing.join(5)
        ing.close()
    assert [(f.seq, f.data) for f in frames] == [(s, bytes([s]) * 10_000) for s in range(5)]
    assert frames[0].meta["source"] == "{}:{}".format(*tx.getsockname())
    assert ing.counters()[str(port)]["frames_complete"] == 5


@compiled_only
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 1500), seq=st.integers(-5, 2**32 + 5),
       stream=st.integers(0, 2**32 - 1), cap=st.integers(0, 2**64 - 1), signed=st.booleans())
@settings(max_examples=150, deadline=None)
def test_compiled_encoder_writes_the_reference_bytes(data, chunk, seq, stream, cap, signed):
    key = KEY if signed else None
    want = b"".join(encode_frame(data, stream_id=stream, seq=seq, capture_ns=cap, chunk_bytes=chunk, key=key))
    assert datagram_core().encode_frame(data, stream, seq, cap, chunk, key) == want


@compiled_only
def test_compiled_encoder_refuses_what_the_reference_refuses():
    enc = datagram_core().encode_frame
    for chunk in (0, max_chunk_bytes(True) + 1):
        with pytest.raises(ValueError):
            enc(b"x", 1, 1, 1, chunk, KEY)
    with pytest.raises(ValueError, match="max 65535"):
        enc(b"x" * 70_000, 1, 1, 1, 1)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_publisher_sends_a_frame_in_segmented_sends_that_arrive_as_separate_datagrams(udp_pair, signed):
    rx, _ = udp_pair
    key = KEY if signed else None
    tx = UdpTransport("127.0.0.1", rx.getsockname()[1], stream_id=3, chunk_bytes=1400, key=key)
    data = bytes(range(256)) * 400  # 102,400 bytes: 74 datagrams, more than one send's worth
    assert tx.send(data, seq=9, capture_ns=5)
    want = list(encode_frame(data, stream_id=3, seq=9, capture_ns=5, chunk_bytes=1400, key=key))
    got = [rx.recv(65536) for _ in want]
    tx.close()
    assert got == want  # each datagram on its own, as sent one by one
    assert tx.counters["datagrams"] == 74 and tx.counters["segmented_sends"] == 2


class RefusingSegmentation:
    """A UDP socket on a kernel or route without segmentation offload: sendmsg with UDP_SEGMENT fails."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def sendmsg(self, *args) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def test_publisher_falls_back_to_one_send_per_datagram_when_segmentation_is_refused(udp_pair, caplog):
    rx, _ = udp_pair
    tx = UdpTransport("127.0.0.1", rx.getsockname()[1], stream_id=3, chunk_bytes=1000)
    tx.sock = RefusingSegmentation(tx.sock)
    with caplog.at_level(logging.WARNING, logger="sender.transport"):
        assert tx.send(b"a" * 2500, seq=1, capture_ns=1) and tx.send(b"b" * 2500, seq=2, capture_ns=2)
    assert [len(rx.recv(65536)) for _ in range(6)] == [1034, 1034, 534] * 2
    assert not tx.batch and tx.counters["datagrams"] == 6 and "segmented_sends" not in tx.counters
    assert sum("segmentation offload refused" in r.getMessage() for r in caplog.records) == 1
    tx.close()


def send_frames(tx: socket.socket, port: int, *, stream: int, seqs: range, size: int = 5000, key=KEY) -> None:
    for seq in seqs:
        for g in encode_frame(bytes([stream]) * size, stream_id=stream, seq=seq, capture_ns=seq + 1,
                              chunk_bytes=1000, key=key):
            tx.sendto(g, ("127.0.0.1", port))


@pytest.fixture
def two_lane_ingest():
    buf = FrameBuffer(per_port=100)
    ing = UdpIngest("127.0.0.1", [0], {0: "person"}, buf, core="compiled", threads=2, key=KEY)
    ing.start()
    yield ing, buf
    ing.stop()
    ing.join(5)
    ing.close()


@compiled_only
def test_two_ingest_threads_share_a_port_by_stream_id_and_replays_from_other_addresses_are_refused(two_lane_ingest):
    ing, buf = two_lane_ingest
    [port] = ing.sockets
    assert [set(lane.sockets) for lane in ing.lanes] == [{port}, {port}] and ing.threads == 2
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(12)]
    try:
        for stream, tx in enumerate(senders[:4]):  # stream ids 0-3: even ones to the first thread, odd to the second
            send_frames(tx, port, stream=stream, seqs=range(3))
        frames = []
        wait_until(lambda: frames.extend(buf.take(100, 0.05)) or len(frames) == 12)
        assert sorted((f.data[0], f.seq) for f in frames) == [(s, q) for s in range(4) for q in range(3)]
        per_lane = [lane.assemblers[port].counters["frames_complete"] for lane in ing.lanes]
        assert per_lane == [6, 6]
        # stream 1's datagrams captured and sent again from 8 other source addresses: whichever socket
        # the 4-tuple hash would pick, they reach the thread whose replay window knows stream 1
        for tx in senders[4:]:
            send_frames(tx, port, stream=1, seqs=range(2, 3))
        wait_until(lambda: ing.counters()[str(port)].get("dropped_replayed", 0) == 8 * 5)
        assert ing.counters()[str(port)]["frames_complete"] == 12 and not buf.take(10, 0.1)
    finally:
        for tx in senders:
            tx.close()


@compiled_only
def test_two_ingest_threads_follow_a_config_change(two_lane_ingest):
    ing, buf = two_lane_ingest
    [old] = ing.sockets
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        new = probe.getsockname()[1]
    ing.reconfigure({new: "face"})
    wait_until(lambda: [set(lane.sockets) for lane in ing.lanes] == [{new}, {new}])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for stream in (4, 5):
            send_frames(tx, new, stream=stream, seqs=range(1))
        frames = []
        wait_until(lambda: frames.extend(buf.take(10, 0.05)) or len(frames) == 2)
    assert {(f.port, f.pipeline) for f in frames} == {(new, "face")} and old not in ing.pipelines


def test_the_python_core_runs_one_thread_whatever_is_asked(caplog):
    with caplog.at_level(logging.WARNING, logger="receiver.udp"):
        ing = UdpIngest("127.0.0.1", [0], {0: "person"}, FrameBuffer(), core="python", threads=4)
        ing.close()
    assert ing.threads == 1 and len(ing.lanes) == 1 and "need the compiled core" in caplog.text


@pytest.mark.parametrize("core", CORE_NAMES)
def test_every_port_reports_the_same_counter_names_on_either_core(core):
    ing = UdpIngest("127.0.0.1", [0], {0: "person"}, FrameBuffer(), core=core)
    [port] = ing.sockets
    ing.close()
    assert ing.counters()[str(port)] == {"datagrams": 0, "bytes": 0, "frames_complete": 0, "frames_incomplete": 0,
                                         "malformed": 0, "dropped_stale": 0}


def test_datagrams_too_big_to_pair_in_one_send_go_one_per_sendto(udp_pair):
    rx, _ = udp_pair
    tx = UdpTransport("127.0.0.1", rx.getsockname()[1], stream_id=3, chunk_bytes=40_000)
    assert tx.send(b"z" * 70_000, seq=1, capture_ns=1)
    assert [len(rx.recv(65536)) for _ in range(2)] == [40_034, 30_034]
    assert tx.counters == {"datagrams": 2}
    tx.close()


@pytest.mark.parametrize("core", CORE_NAMES)
def test_a_port_dropped_and_taken_back_in_two_quick_reloads_is_served_again(core):
    buf = FrameBuffer(per_port=10)
    ing = UdpIngest("127.0.0.1", [0], {0: "person"}, buf, core=core)
    [port] = ing.sockets
    ing.reconfigure({})
    ing.reconfigure({port: "face"})  # both applied in one pass of the ingest thread
    ing.start()
    try:
        wait_until(lambda: ing.pipelines == {port: "face"} and port in ing.sockets)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            send_frames(tx, port, stream=1, seqs=range(1), key=None)
        frames = []
        wait_until(lambda: frames.extend(buf.take(10, 0.05)) or frames)
    finally:
        ing.stop()
        ing.join(5)
        ing.close()
    assert [(f.port, f.pipeline) for f in frames] == [(port, "face")]


@compiled_only
def test_a_second_receiver_cannot_join_a_ports_ingest_group(two_lane_ingest):
    """SO_REUSEPORT admits any socket of the same user that sets it: a second receiver started on the
    same ports with --ingest-threads would have taken half of every camera's streams, silently. It is
    refused like any bind to a port in use, with one thread or several."""
    ing, _ = two_lane_ingest
    [port] = ing.sockets
    for threads in (2, 1):
        with pytest.raises(OSError) as e:
            UdpIngest("127.0.0.1", [port], {port: "person"}, FrameBuffer(per_port=10), core="compiled",
                      threads=threads)
        assert e.value.errno == errno.EADDRINUSE
