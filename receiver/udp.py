"""UDP ingest: one socket per camera port, one thread for all of them, reassembly, no decoding.

Reassembly runs in the compiled core (common/_datagram.c: recvmmsg batches, no GIL held) when it is
built, else in the pure-Python reference (common/reassembly.py); receiver.ingestcore chooses."""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping

from common.protocol import MAX_DATAGRAM_BYTES
from common.reassembly import Frame, ReassemblyLimits
from common.runtime import Component
from receiver import ingestcore
from receiver.buffer import FrameBuffer, ReadyFrame

log = logging.getLogger(__name__)

DEFAULT_RCVBUF_BYTES = 8 * 1024 * 1024
EXPIRE_EVERY_S = 0.1
MAX_DRAIN_PER_WAKE = 256  # datagrams read from one socket before looking at the others


def open_udp_socket(host: str, port: int, rcvbuf: int) -> socket.socket:
    """Bind a non-blocking UDP socket and ask for a large receive buffer (the kernel may cap it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:  # as root (CAP_NET_ADMIN) the size we ask for is not capped by net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((host, port))
    sock.setblocking(False)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < rcvbuf:
        log.warning("port %d: asked for a %d KB receive buffer, the kernel gave %d KB (raise "
                    "net.core.rmem_max to avoid losing bursts)", sock.getsockname()[1], rcvbuf // 1024, got // 1024)
    return sock


class UdpIngest(Component):
    """Receives every camera port, reassembles frames and hands them to a FrameBuffer."""

    thread_name = "udp-ingest"

    def __init__(self, host: str, ports: list[int], pipelines: Mapping[int, str], out: FrameBuffer, *,
                 limits: ReassemblyLimits | None = None, rcvbuf: int = DEFAULT_RCVBUF_BYTES,
                 clock: Callable[[], float] = time.monotonic, key: bytes | None = None, core: str = "auto") -> None:
        super().__init__()
        self.out = out
        self.clock = clock
        self.core = ingestcore.resolve(core)  # 'compiled' or 'python'
        self._assembler = ingestcore.assembler_class(self.core)
        self._batch = ingestcore.recv_batch() if self.core == "compiled" else None
        opened = [(asked, open_udp_socket(host, asked, rcvbuf)) for asked in ports]
        # Everything below is keyed by the port actually bound (asking for 0 lets the OS pick).
        self.sockets = {s.getsockname()[1]: s for _, s in opened}
        self.pipelines = {s.getsockname()[1]: pipelines[asked] for asked, s in opened}
        self.assemblers = {port: self._assembler(limits, key) for port in self.sockets}
        self._selector = selectors.DefaultSelector()
        for port, s in self.sockets.items():
            self._selector.register(s, selectors.EVENT_READ, port)
        self._buf = bytearray(MAX_DATAGRAM_BYTES + 1)
        self.host, self.rcvbuf, self.limits, self.key = host, rcvbuf, limits, key
        log.info("udp ingest: %s reassembly core%s", self.core,
                 " (recvmmsg batches)" if self.core == "compiled" else " (pure Python)")
        self._changes: queue.SimpleQueue[dict[int, str]] = queue.SimpleQueue()

    def reconfigure(self, pipelines: Mapping[int, str]) -> None:
        """Serve exactly these ports with these pipelines from now on: new ports are opened, gone ones
        closed, the rest keep their sockets and frames in flight. Applied by the ingest thread."""
        self._changes.put(dict(pipelines))

    def _apply_changes(self) -> None:
        while not self._changes.empty():
            wanted = self._changes.get()
            for port in [p for p in self.sockets if p not in wanted]:
                sock = self.sockets.pop(port)
                self._selector.unregister(sock)
                sock.close()
                self.assemblers.pop(port, None)
                log.info("port %d: closed (its camera left the config)", port)
            for port, pipeline in wanted.items():
                if port not in self.sockets:
                    self._open(port)
                self.pipelines[port] = pipeline

    def _open(self, port: int) -> None:
        try:
            sock = open_udp_socket(self.host, port, self.rcvbuf)
        except OSError as e:  # e.g. the port is taken: say so, keep serving the others
            log.error("port %d: cannot listen: %s", port, e)
            return
        self.assemblers[port] = self._assembler(self.limits, self.key)
        self.sockets[port] = sock
        self._selector.register(sock, selectors.EVENT_READ, port)
        log.info("port %d: listening (a camera joined the config)", port)

    def close(self) -> None:
        self._selector.close()
        for s in self.sockets.values():
            s.close()

    def run(self) -> None:
        """Receive until stopped."""
        next_expire = 0.0
        while not self._stop.is_set():
            try:
                for key, _ in self._selector.select(timeout=EXPIRE_EVERY_S):
                    self._drain(key.fileobj, key.data)
            except Exception:  # ingest must outlive any one bad datagram or bug
                log.exception("udp ingest: unexpected error; still receiving")
                self._stop.wait(0.1)
            self._apply_changes()
            now = self.clock()
            if now >= next_expire:
                for asm in self.assemblers.values():
                    asm.expire(now)
                next_expire = now + EXPIRE_EVERY_S

    def drain(self, port: int) -> int:
        """Read what `port`'s socket holds now (at most MAX_DRAIN_PER_WAKE datagrams), as the ingest
        thread does when the socket is readable; the datagrams read. For benchmarks and tests."""
        return self._drain(self.sockets[port], port)

    def _drain(self, sock: socket.socket, port: int) -> int:
        if self._batch is not None:
            frames, read = self.assemblers[port].recv(sock.fileno(), self._batch, self.clock(), MAX_DRAIN_PER_WAKE)
            for frame in frames:
                self._deliver(port, frame)
            return read
        asm, view = self.assemblers[port], memoryview(self._buf)
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
        host, sport = frame.source  # type: ignore[misc]  # (host, port) of the datagram that completed it
        self.out.put(ReadyFrame(port, frame.seq, frame.capture_ns, time.time_ns(), frame.data, self.pipelines[port],
                                {"source": f"{host}:{sport}"}))

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-port counters: frames complete/incomplete, malformed (total and by reason), dropped
        (stale, and with a key dropped_unsigned/forged/replayed)."""
        out = {}
        for port, asm in list(self.assemblers.items()):  # the ingest thread may add or remove ports
            c = Counter(dict(asm.counters))  # dict() copies atomically under the GIL
            c["malformed"] = asm.malformed()
            c["dropped_stale"] = self.out.dropped[port]
            out[str(port)] = {k: int(v) for k, v in c.items()}
        return out
