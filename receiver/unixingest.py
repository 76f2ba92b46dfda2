"""Local ingest: publishers on the receiver's host hand frames over AF_UNIX stream sockets, one socket
per camera port (docs/PROTOCOL.md section 6). One selector thread serves every socket and connection;
frames go to the FrameBuffer untouched, as UDP ones do."""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.runtime import Component
from common.unixproto import MAX_FRAME_BYTES, FrameDecoder, UnixFrame
from receiver.buffer import FrameBuffer, ReadyFrame

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 4  # per socket: one publisher, and room for a restarted one while the old one goes
RECV_BYTES = 256 * 1024
SELECT_S = 0.2
SOCKET_MODE = 0o600  # only the receiver's user (and root) may connect: the file's mode is the access control


def parse_unix_sockets(items: list[str]) -> dict[str, int]:
    """Repeated --unix-socket PATH=PORT -> {path: port}."""
    out: dict[str, int] = {}
    for item in items:
        path, sep, port = item.rpartition("=")
        if not sep or not path or not port.strip().isdigit():
            raise ValueError(f"--unix-socket must look like /run/framehive/cam0.sock=5010, got {item!r}")
        if path in out:
            raise ValueError(f"--unix-socket {path} is given twice")
        out[path] = int(port)
    return out


def bind_unix(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket at `path` with mode 0600, and the (device, inode) of its file. A socket file a
    crashed receiver left is replaced; a live one (another receiver) or any other file is an OSError."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
            raise OSError(errno.EADDRINUSE, f"{path}: another process serves this socket")
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # nobody listens: left by a receiver that did not stop cleanly
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, SOCKET_MODE)  # before listen(): until then every connect is refused
        sock.listen(MAX_CONNECTIONS)
        st = os.stat(path)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock, (st.st_dev, st.st_ino)


@dataclass(eq=False)
class _Listener:
    path: str
    port: int
    sock: socket.socket
    inode: tuple[int, int]


@dataclass(eq=False)
class _Connection:
    listener: _Listener
    sock: socket.socket
    decoder: FrameDecoder = field(default_factory=FrameDecoder)


class UnixIngest(Component):
    """Listens on each `sockets` path (path -> camera port) and puts every frame into `out`. Malformed
    input is counted per port and dropped: a bad frame alone, a header that breaks the stream with its
    connection. The socket files are removed when it stops."""

    thread_name = "unix-ingest"

    def __init__(self, sockets: Mapping[str, int], pipelines: Mapping[int, str], out: FrameBuffer, *,
                 max_frame_bytes: int = MAX_FRAME_BYTES, max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__()
        self.out, self.pipelines = out, pipelines
        self.max_frame_bytes, self.max_connections = max_frame_bytes, max_connections
        self.stats: dict[int, Counter[str]] = {port: Counter() for port in sockets.values()}
        self._listeners: list[_Listener] = []
        self._connections: dict[socket.socket, _Connection] = {}
        self._selector = selectors.DefaultSelector()
        try:
            for path, port in sockets.items():
                sock, inode = bind_unix(path)
                self._listeners.append(_Listener(path, port, sock, inode))
                self._selector.register(sock, selectors.EVENT_READ, self._listeners[-1])
        except OSError:
            self.close()
            raise

    def run(self) -> None:
        """Accept and receive until stopped."""
        while not self._stop.is_set():
            try:
                for key, _ in self._selector.select(timeout=SELECT_S):
                    if isinstance(key.data, _Listener):
                        self._accept(key.data)
                    else:
                        self._receive(key.data)
            except Exception:  # ingest must outlive any one bad connection or bug
                log.exception("unix ingest: unexpected error; still receiving")
                self._stop.wait(0.1)

    def _accept(self, listener: _Listener) -> None:
        try:
            sock, _ = listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        stats = self.stats[listener.port]
        if sum(c.listener is listener for c in self._connections.values()) >= self.max_connections:
            stats["refused_connections"] += 1
            sock.close()
            return
        sock.setblocking(False)
        conn = _Connection(listener, sock, FrameDecoder(self.max_frame_bytes))
        self._connections[sock] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)
        stats["connections"] += 1
        log.info("port %d: a publisher connected on %s", listener.port, listener.path)

    def _receive(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._drop(conn, f"receive failed: {e.strerror or e}")
            return
        if not data:
            self._drop(conn, "it closed the connection")
            return
        for frame in conn.decoder.feed(data):
            self._put(conn, frame)
        error = conn.decoder.error
        if error is not None:
            self._malformed(conn.listener.port, error.reason)
            self._drop(conn, f"malformed input ({error}): connection closed")

    def _put(self, conn: _Connection, frame: UnixFrame) -> None:
        port = conn.listener.port
        if frame.port not in (0, port):
            self._malformed(port, "wrong_port")
        elif not frame.data.startswith(b"\xff\xd8"):
            self._malformed(port, "not_jpeg")
        else:
            self.out.put(ReadyFrame(port, frame.seq, frame.capture_ns, time.time_ns(), frame.data,
                                    self.pipelines[port], {"source": f"unix:{conn.listener.path}", "via": "unix"}))
            self.stats[port]["frames_complete"] += 1

    def _malformed(self, port: int, reason: str) -> None:
        stats = self.stats[port]
        stats[reason] += 1
        stats["malformed"] += 1
        if stats["malformed"] in (1, 10, 100) or stats["malformed"] % 1000 == 0:
            log.warning("port %d: malformed input on its unix socket (%s; %d so far)", port, reason,
                        stats["malformed"])

    def _drop(self, conn: _Connection, why: str) -> None:
        port = conn.listener.port
        if conn.decoder.pending:
            self.stats[port]["frames_incomplete"] += 1
        log.info("port %d: a publisher left %s: %s", port, conn.listener.path, why)
        self._selector.unregister(conn.sock)
        conn.sock.close()
        del self._connections[conn.sock]

    def close(self) -> None:
        """Close every connection and listener and remove the socket files (if still ours)."""
        for sock in list(self._connections):
            sock.close()
        self._connections.clear()
        for listener in self._listeners:
            listener.sock.close()
            try:
                st = os.stat(listener.path)
                if (st.st_dev, st.st_ino) == listener.inode:
                    os.unlink(listener.path)
            except FileNotFoundError:
                pass
        self._listeners.clear()
        self._selector.close()

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-port counters: frames_complete, malformed (total and by reason), connections, dropped_stale."""
        out = {}
        for port, stats in self.stats.items():
            c = Counter(dict(stats))
            c["malformed"] += 0
            c["dropped_stale"] = self.out.dropped[port]
            out[str(port)] = {k: int(v) for k, v in c.items()}
        return out
