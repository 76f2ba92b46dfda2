"""How a publisher sends an encoded frame: UDP datagrams, imagezmq REQ/REP with timeouts, or frames over
a local AF_UNIX socket to a receiver on the same host."""

from __future__ import annotations

import errno
import json
import logging
import secrets
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import zmq

from common.compiled import datagram_core
from common.protocol import HEADER_BYTES, MAC_BYTES, encode_frame, zmq_mac
from common.unixproto import MAX_FRAME_BYTES, encode_header

log = logging.getLogger(__name__)


class Transport(Protocol):
    """Sends one encoded frame; returns True if it left (UDP) or was acknowledged (ZMQ)."""

    counters: Counter

    def send(self, jpeg: bytes, *, seq: int, capture_ns: int) -> bool: ...

    def close(self) -> None: ...


def parse_hostport(text: str) -> tuple[str, int]:
    """'host:port' or '[v6addr]:port' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


# UDP segmentation offload (Linux >= 4.18): one sendmsg carries a frame's datagrams back to back and the
# kernel (or the NIC) cuts them apart, so the wire sees the same MTU-sized datagrams for one system call.
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
SEGMENTS_PER_SEND = 64  # the kernel takes at most 64 (older) or 128 segments per send
BYTES_PER_SEND = 65_000  # and at most one IP packet's worth of payload
GSO_UNSUPPORTED = (errno.EINVAL, errno.EMSGSIZE, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EIO)


class UdpTransport:
    """Frames as protocol datagrams to one receiver port (signed when given the shared key).

    With `batch` (the default) a frame's datagrams leave in one segmented send (UDP_SEGMENT) instead of
    one sendto each; where the kernel or the route refuses that, it falls back for good, logged once.
    """

    def __init__(self, host: str, port: int, *, stream_id: int, chunk_bytes: int, key: bytes | None = None,
                 batch: bool = True) -> None:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.sock = socket.socket(info[0], socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self.addr = info[4]
        self.stream_id, self.chunk_bytes, self.key = stream_id, chunk_bytes, key
        self.batch = batch
        self.counters: Counter[str] = Counter()

    def send(self, jpeg: bytes, *, seq: int, capture_ns: int) -> bool:
        blob, size = self._encode(jpeg, seq, capture_ns)
        view = memoryview(blob)
        try:
            if self.batch and len(blob) > size and 2 * size <= BYTES_PER_SEND and self._send_segmented(view, size):
                return True
            for at in range(0, len(blob), size):
                self.sock.sendto(view[at:at + size], self.addr)
                self.counters["datagrams"] += 1
        except OSError as e:  # e.g. ECONNREFUSED from an earlier ICMP, ENOBUFS: count and go on
            self.counters["send_errors"] += 1
            log.debug("send failed: %s", e)
            return False
        return True

    def _encode(self, jpeg: bytes, seq: int, capture_ns: int) -> tuple[bytes, int]:
        """The frame's datagrams back to back (compiled when built: the same bytes), and the size of
        every datagram but the last."""
        core = datagram_core()
        if core is not None:
            blob = core.encode_frame(jpeg, self.stream_id, seq, capture_ns, self.chunk_bytes, self.key)
        else:
            blob = b"".join(encode_frame(jpeg, stream_id=self.stream_id, seq=seq, capture_ns=capture_ns,
                                         chunk_bytes=self.chunk_bytes, key=self.key))
        return blob, min(len(blob), HEADER_BYTES + self.chunk_bytes + (MAC_BYTES if self.key else 0))

    def _send_segmented(self, blob: memoryview, size: int) -> bool:
        """Send datagrams of `size` bytes (the last may be shorter) in segmented sends; False, with
        batching switched off, when this kernel or route cannot segment (nothing was sent then)."""
        per_send = max(1, min(SEGMENTS_PER_SEND, BYTES_PER_SEND // size)) * size
        cmsg = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        for at in range(0, len(blob), per_send):
            part = blob[at:at + per_send]
            try:
                self.sock.sendmsg([part], cmsg, 0, self.addr)
            except OSError as e:
                if at or e.errno not in GSO_UNSUPPORTED:
                    raise
                log.warning("UDP segmentation offload refused (%s): sending one datagram per system call", e)
                self.batch = False
                return False
            self.counters["datagrams"] += -(-len(part) // size)
            self.counters["segmented_sends"] += 1
        return True

    def close(self) -> None:
        self.sock.close()


class ZmqTransport:
    """imagezmq-compatible REQ with send/receive timeouts and reconnect (stock imagezmq has neither)."""

    def __init__(self, host: str, port: int, *, camera_port: int, name: str, timeout_s: float = 2.0,
                 retries: int = 3, key: bytes | None = None) -> None:
        self.endpoint = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
        self.camera_port, self.name = camera_port, name
        self.timeout_ms, self.retries = int(timeout_s * 1000), retries
        self.ctx = zmq.Context.instance()
        self.counters: Counter[str] = Counter()
        self.key, self.sid, self.n = key, secrets.token_hex(8), 0
        self.sock = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.REQ)
        for opt, val in ((zmq.LINGER, 0), (zmq.SNDTIMEO, self.timeout_ms), (zmq.RCVTIMEO, self.timeout_ms),
                         (zmq.IPV6, 1)):
            sock.setsockopt(opt, val)
        sock.connect(self.endpoint)
        return sock

    def send(self, jpeg: bytes, *, seq: int, capture_ns: int) -> bool:
        msg = json.dumps({"port": self.camera_port, "seq": seq, "capture_ns": capture_ns, "name": self.name})
        for _ in range(self.retries + 1):
            md = self._metadata(msg, jpeg)  # signed afresh on every attempt: the hub refuses a repeat
            try:
                self.sock.send_multipart([md, jpeg], copy=False)
                reply = self.sock.recv()
            except zmq.Again:  # no answer in time: a REQ socket is stuck now, so start a new one
                self.counters["timeouts"] += 1
                self.sock.close(0)
                self.sock = self._connect()
                continue
            if reply != b"OK":
                self.counters["refused"] += 1
                log.warning("hub refused frame %d: %s", seq, reply[:200].decode("utf-8", "replace"))
                return False
            return True
        self.counters["given_up"] += 1
        return False

    def _metadata(self, msg: str, jpeg: bytes) -> bytes:
        """imagezmq's metadata part; with a key it also carries auth {sid, n, ts, mac} (docs/PROTOCOL.md)."""
        md: dict = {"msg": msg}
        if self.key is not None:
            self.n += 1
            auth = {"sid": self.sid, "n": self.n, "ts": time.time_ns()}
            md["auth"] = {**auth, "mac": zmq_mac(self.key, **auth, msg=msg, dtype="", shape=[], body=jpeg)}
        return json.dumps(md).encode()

    def close(self) -> None:
        self.sock.close(0)


class UnixTransport:
    """Frames over a local AF_UNIX stream socket (docs/PROTOCOL.md section 6). Not connected yet, or the
    receiver gone: the frame is not sent (counted), and connecting is tried again at most every
    `retry_s`, so a publisher keeps its pace while its receiver restarts."""

    def __init__(self, path: str, *, camera_port: int = 0, timeout_s: float = 2.0, retry_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.camera_port = path, camera_port
        self.timeout_s, self.retry_s, self.clock = timeout_s, retry_s, clock
        self.counters: Counter[str] = Counter()
        self.sock: socket.socket | None = None
        self._next_try = 0.0
        self._down = ""  # why the last attempt failed, to log each change once

    def send(self, jpeg: bytes, *, seq: int, capture_ns: int) -> bool:
        if len(jpeg) > MAX_FRAME_BYTES:
            self.counters["too_big"] += 1
            return False
        sock = self.sock or self._connect()
        if sock is None:
            self.counters["not_connected"] += 1
            return False
        header = encode_header(port=self.camera_port, seq=seq, capture_ns=capture_ns, length=len(jpeg))
        try:
            sock.sendall(header + jpeg)
        except OSError as e:  # the receiver went away, or stopped reading for timeout_s: half a frame may be out
            self.counters["send_errors"] += 1
            self._lost(f"send failed: {e.strerror or e}")
            return False
        return True

    def _connect(self) -> socket.socket | None:
        now = self.clock()
        if now < self._next_try:
            return None
        self._next_try = now + self.retry_s
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            why = f"cannot connect: {e.strerror or e}"
            if why != self._down:
                log.warning("unix socket %s: %s; trying again every %.0f s", self.path, why, self.retry_s)
                self._down = why
            return None
        log.info("unix socket %s: connected", self.path)
        self.counters["connects"] += 1
        self.sock, self._down = sock, ""
        return sock

    def _lost(self, why: str) -> None:
        log.warning("unix socket %s: %s; reconnecting", self.path, why)
        self._down = why
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
