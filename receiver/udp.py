"""UDP ingest: one socket per camera port, one thread for all of them (or N, sharing each port),
reassembly, no decoding.

Reassembly runs in the compiled core (common/_datagram.c: recvmmsg batches, no GIL held) when it is
built, else in the pure-Python reference (common/reassembly.py); receiver.ingestcore chooses.

With `threads` N > 1 (compiled core only) every port is a SO_REUSEPORT group of N sockets, one per
ingest thread, and a classic BPF program attached to the group picks the socket by the header's stream
id (stream id mod N) instead of the kernel's 4-tuple hash. So every datagram of a stream reaches one
thread whatever source address it claims: frames are never split across threads, and each thread's
replay windows (keyed by stream id) see every datagram of their streams, as a single socket's would.
"""

from __future__ import annotations

import functools
import logging
import queue
import selectors
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.protocol import MAX_DATAGRAM_BYTES
from common.reassembly import Frame, ReassemblyLimits
from common.runtime import Component
from receiver import ingestcore
from receiver.buffer import FrameBuffer, ReadyFrame

log = logging.getLogger(__name__)

DEFAULT_RCVBUF_BYTES = 8 * 1024 * 1024
EXPIRE_EVERY_S = 0.1
MAX_DRAIN_PER_WAKE = 256  # datagrams read from one socket before looking at the others
MAX_THREADS = 16
# Reported for every port even at 0 (the compiled core keeps only counters that moved; readers index these).
ALWAYS_REPORTED = ("datagrams", "bytes", "frames_complete", "frames_incomplete")


def open_udp_socket(host: str, port: int, rcvbuf: int, *, reuseport: bool = False) -> socket.socket:
    """Bind a non-blocking UDP socket and ask for a large receive buffer (the kernel may cap it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:  # as root (CAP_NET_ADMIN) the size we ask for is not capped by net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < rcvbuf:
        log.warning("port %d: asked for a %d KB receive buffer, the kernel gave %d KB (raise "
                    "net.core.rmem_max to avoid losing bursts)", sock.getsockname()[1], rcvbuf // 1024, got // 1024)
    return sock


def open_port_group(host: str, port: int, rcvbuf: int, n: int) -> list[socket.socket]:
    """One socket for `port`, or with n > 1 a SO_REUSEPORT group of n sockets steered by stream id
    (socket i takes the stream ids equal to i mod n). Asking for port 0 lets the OS pick one for all."""
    if n == 1:
        return [open_udp_socket(host, port, rcvbuf)]
    core = ingestcore.compiled_module()
    if core is None:
        raise RuntimeError("several ingest threads need the compiled datagram core")
    if port:  # a group admits any socket with SO_REUSEPORT of the same user, a second receiver too: first
        open_udp_socket(host, port, 4096).close()  # a plain bind, which fails (EADDRINUSE) if anyone holds the port
    group: list[socket.socket] = []
    try:
        for _ in range(n):
            group.append(open_udp_socket(host, group[0].getsockname()[1] if group else port, rcvbuf, reuseport=True))
        core.steer_by_stream_id(group[0].fileno(), n)
    except OSError:
        for sock in group:
            sock.close()
        raise
    return group


@dataclass
class Lane:
    """One ingest thread's share of the ports: a socket of each port's group, its assemblers and its
    receive buffers. Only its own thread changes it (through `ops`)."""

    index: int
    batch: Any  # common._datagram.RecvBatch, or None on the Python core
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    sockets: dict[int, socket.socket] = field(default_factory=dict)
    assemblers: dict[int, Any] = field(default_factory=dict)
    ops: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # (port, socket or None: close it)

    def add(self, port: int, sock: socket.socket, assembler: Any) -> None:
        self.sockets[port], self.assemblers[port] = sock, assembler
        self.selector.register(sock, selectors.EVENT_READ, port)

    def remove(self, port: int) -> None:
        sock = self.sockets.pop(port, None)
        if sock is not None:
            self.selector.unregister(sock)
            sock.close()
        self.assemblers.pop(port, None)

    def close(self) -> None:
        self.selector.close()
        for sock in self.sockets.values():
            sock.close()


class UdpIngest(Component):
    """Receives every camera port, reassembles frames and hands them to a FrameBuffer."""

    thread_name = "udp-ingest"

    def __init__(self, host: str, ports: list[int], pipelines: Mapping[int, str], out: FrameBuffer, *,
                 limits: ReassemblyLimits | None = None, rcvbuf: int = DEFAULT_RCVBUF_BYTES,
                 clock: Callable[[], float] = time.monotonic, key: bytes | None = None, core: str = "auto",
                 threads: int = 1) -> None:
        super().__init__()
        if not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads must be 1..{MAX_THREADS}")
        self.out = out
        self.clock = clock
        self.core = ingestcore.resolve(core)  # 'compiled' or 'python'
        if threads > 1 and self.core != "compiled":
            log.warning("udp ingest: %d threads need the compiled core; running 1 (the Python core holds the GIL)",
                        threads)
            threads = 1
        self.threads = threads
        self._assembler = ingestcore.assembler_class(self.core)
        self.host, self.rcvbuf, self.limits, self.key = host, rcvbuf, limits, key
        self.lanes = [Lane(i, ingestcore.recv_batch() if self.core == "compiled" else None) for i in range(threads)]
        self.pipelines: dict[int, str] = {}
        try:
            for asked in ports:  # keyed by the port actually bound (asking for 0 lets the OS pick)
                self.pipelines[self._open_group(asked)] = pipelines[asked]
        except OSError:
            self.close()
            raise
        self._buf = bytearray(MAX_DATAGRAM_BYTES + 1)
        log.info("udp ingest: %s reassembly core%s, %d thread%s", self.core,
                 " (recvmmsg batches)" if self.core == "compiled" else " (pure Python)", threads,
                 "s (SO_REUSEPORT groups steered by stream id)" if threads > 1 else "")
        self._changes: queue.SimpleQueue[dict[int, str]] = queue.SimpleQueue()

    @property
    def sockets(self) -> dict[int, socket.socket]:
        """The first thread's socket of every port (with one thread: every socket)."""
        return self.lanes[0].sockets

    @property
    def assemblers(self) -> dict[int, Any]:
        """The first thread's assembler of every port (with one thread: every assembler)."""
        return self.lanes[0].assemblers

    def _open_group(self, port: int) -> int:
        """Open `port` on every lane (each gets its own assembler); the port bound."""
        group = open_port_group(self.host, port, self.rcvbuf, self.threads)
        for lane, sock in zip(self.lanes, group):
            lane.add(sock.getsockname()[1], sock, self._assembler(self.limits, self.key))
        return group[0].getsockname()[1]

    def reconfigure(self, pipelines: Mapping[int, str]) -> None:
        """Serve exactly these ports with these pipelines from now on: new ports are opened, gone ones
        closed, the rest keep their sockets and frames in flight. Applied by the ingest thread(s)."""
        self._changes.put(dict(pipelines))

    def _apply_changes(self) -> None:
        """The first thread opens and closes ports for every lane; each lane's thread applies its part."""
        while not self._changes.empty():
            wanted = self._changes.get()
            for port in [p for p in self.pipelines if p not in wanted]:
                del self.pipelines[port]
                self.lanes[0].remove(port)  # this thread's own socket at once: the port can be opened again
                for lane in self.lanes[1:]:
                    lane.ops.put((port, None))
                log.info("port %d: closed (its camera left the config)", port)
            for port, pipeline in wanted.items():
                if port not in self.pipelines and not self._open(port):
                    continue
                self.pipelines[port] = pipeline

    def _open(self, port: int) -> bool:
        try:
            group = open_port_group(self.host, port, self.rcvbuf, self.threads)
        except OSError as e:  # e.g. the port is taken: say so, keep serving the others
            log.error("port %d: cannot listen: %s", port, e)
            return False
        for lane, sock in zip(self.lanes, group):
            lane.ops.put((port, sock))
        log.info("port %d: listening (a camera joined the config)", port)
        return True

    def _apply_ops(self, lane: Lane) -> None:
        while not lane.ops.empty():
            port, sock = lane.ops.get()
            if sock is None:
                lane.remove(port)
            else:
                lane.add(port, sock, self._assembler(self.limits, self.key))

    def close(self) -> None:
        for lane in self.lanes:
            self._apply_ops(lane)  # sockets opened for a lane whose thread never took them
            lane.close()

    def loops(self) -> list[tuple[str, Callable[[], None]]]:
        if self.threads == 1:
            return [(self.thread_name, functools.partial(self._run_lane, self.lanes[0]))]
        return [(f"{self.thread_name}-{lane.index}", functools.partial(self._run_lane, lane)) for lane in self.lanes]

    def _run_lane(self, lane: Lane) -> None:
        """Receive this lane's sockets until stopped."""
        next_expire = 0.0
        while not self._stop.is_set():
            try:
                for key, _ in lane.selector.select(timeout=EXPIRE_EVERY_S):
                    self._drain(lane, key.fileobj, key.data)
            except Exception:  # ingest must outlive any one bad datagram or bug
                log.exception("udp ingest: unexpected error; still receiving")
                self._stop.wait(0.1)
            if lane.index == 0:
                self._apply_changes()
            self._apply_ops(lane)
            now = self.clock()
            if now >= next_expire:
                for asm in lane.assemblers.values():
                    asm.expire(now)
                next_expire = now + EXPIRE_EVERY_S

    def drain(self, port: int, lane: int = 0) -> int:
        """Read what `port`'s socket (of that lane) holds now, at most MAX_DRAIN_PER_WAKE datagrams, as
        the ingest thread does when the socket is readable; the datagrams read. For benchmarks and tests."""
        return self._drain(self.lanes[lane], self.lanes[lane].sockets[port], port)

    def _drain(self, lane: Lane, sock: socket.socket, port: int) -> int:
        asm = lane.assemblers[port]
        if lane.batch is not None:
            frames, read = asm.recv(sock.fileno(), lane.batch, self.clock(), MAX_DRAIN_PER_WAKE)
            for frame in frames:
                self._deliver(port, frame)
            return read
        view = memoryview(self._buf)
        for read in range(MAX_DRAIN_PER_WAKE):
            try:
                n, source = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return read
            except OSError as e:  # e.g. ICMP errors surfacing on the socket: count, keep serving
                asm.counters["socket_errors"] += 1
                log.debug("port %d: %s", port, e)
                return read
            frame = asm.add(view[:n], source[:2], self.clock())
            if frame is not None:
                self._deliver(port, frame)
        return MAX_DRAIN_PER_WAKE

    def _deliver(self, port: int, frame: Frame) -> None:
        pipeline = self.pipelines.get(port)
        if pipeline is None:  # the port left the config; its lane closes the socket next
            return
        host, sport = frame.source  # type: ignore[misc]  # (host, port) of the datagram that completed it
        self.out.put(ReadyFrame(port, frame.seq, frame.capture_ns, time.time_ns(), frame.data, pipeline,
                                {"source": f"{host}:{sport}"}))

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-port counters, summed over the threads: frames complete/incomplete, malformed (total and
        by reason), dropped (stale, and with a key dropped_unsigned/forged/replayed)."""
        out: dict[str, dict[str, int]] = {}
        for lane in self.lanes:
            for port, asm in list(lane.assemblers.items()):  # the ingest threads may add or remove ports
                c = Counter(dict.fromkeys(ALWAYS_REPORTED, 0))
                c.update(dict(asm.counters))  # dict() copies atomically under the GIL
                c["malformed"] = asm.malformed()
                c.update(out.get(str(port), {}))
                c["dropped_stale"] = self.out.dropped[port]
                out[str(port)] = {k: int(v) for k, v in c.items()}
        return out
