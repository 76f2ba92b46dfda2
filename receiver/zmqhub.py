"""An imagezmq-compatible hub (ZMQ REP): for links where every frame must arrive.

Speaks imagezmq's wire format, so an unmodified `imagezmq.ImageSender` works: a JSON part
{"msg": text} (plus "dtype" and "shape" for a raw array) followed by the image bytes; the
reply is b"OK". framehive publishers put a JSON object in `msg` naming the camera port, the
frame number and the capture time; any other text is kept as the source name and the frame
goes to the hub's own port number.

With a shared key the metadata must also carry `auth` {sid, n, ts, mac} (common.protocol.zmq_mac):
unsigned, forged and replayed requests are refused with `ERR <reason>: ...` and counted.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import zmq

from common.errors import DecodeError, ProtocolError
from common.imageinfo import MAX_IMAGE_PIXELS, check_image
from common.protocol import zmq_mac
from common.runtime import Component
from receiver.buffer import FrameBuffer, ReadyFrame

log = logging.getLogger(__name__)

POLL_MS = 200
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_RAW_PIXELS = 4096 * 4096 * 3
JPEG_QUALITY = 90
MAX_SKEW_S = 60.0  # a signed request's timestamp must be this close to the hub's clock
MAX_SENDERS = 4096  # sender ids whose last counter the hub remembers
_SID_RE = re.compile(r"[0-9a-f]{8,32}")


class Refused(ProtocolError):
    """A request the hub will not take; `reason` is its counter name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason.removeprefix('dropped_')}: {message}", reason)


class ReplayGuard:
    """Per sender id, counters must rise; timestamps must be within `max_skew_s` of the hub's clock."""

    def __init__(self, max_skew_s: float = MAX_SKEW_S, max_senders: int = MAX_SENDERS) -> None:
        self.max_skew_ns, self.max_senders = int(max_skew_s * 1e9), max_senders
        self._last: OrderedDict[str, int] = OrderedDict()

    def check(self, sid: str, n: int, ts: int, now_ns: int) -> str:
        """"" if (sid, n, ts) is fresh (and remember it), else why it is a replay."""
        if abs(now_ns - ts) > self.max_skew_ns:
            return (f"timestamp is {(now_ns - ts) / 1e9:+.1f} s off the hub's clock (limit "
                    f"{self.max_skew_ns / 1e9:.0f} s): a replay, or the hosts' clocks disagree")
        last = self._last.get(sid)
        if last is not None and n <= last:
            return f"counter {n} of sender {sid} is not above {last}, already accepted"
        self._last[sid] = n
        self._last.move_to_end(sid)
        while len(self._last) > self.max_senders:
            self._last.popitem(last=False)
        return ""


def _wire_int(v: object, name: str, lo: int, hi: int) -> int:
    """A whole number in lo..hi from JSON (an int, or a float with no fraction: never 1e400 or NaN)."""
    if isinstance(v, float) and v.is_integer() and lo <= v <= hi:
        return int(v)
    if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi:
        return v
    raise ValueError(f"{name} must be a whole number in {lo}..{hi}, got {str(v)[:40]}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _signed_fields(md: dict[str, Any]) -> tuple[str, int, int, str, str, list[int]]:
    """(sid, n, ts, mac, dtype, shape) of a signed request's metadata; Refused when absent or ill-typed."""
    auth = md.get("auth")
    if auth is None:
        raise Refused("dropped_unsigned", "this hub needs signed requests (metadata 'auth'); is the sender "
                      "running with the hub's key?")
    if not (isinstance(auth, dict) and _is_int(auth.get("n")) and _is_int(auth.get("ts"))
            and isinstance(auth.get("sid"), str) and _SID_RE.fullmatch(auth["sid"])
            and isinstance(auth.get("mac"), str)):
        raise Refused("dropped_forged", "'auth' must be {sid: 8-32 hex digits, n: int, ts: int, mac: hex}")
    dtype, shape = md.get("dtype", ""), md.get("shape", [])
    if not isinstance(dtype, str) or not isinstance(shape, list) or not all(_is_int(v) for v in shape):
        raise Refused("dropped_forged", "dtype must be a string and shape a list of integers")
    return auth["sid"], auth["n"], auth["ts"], auth["mac"], dtype, shape


class ZmqHub(Component):
    """One REP socket; each request is a frame, answered as soon as it is buffered."""

    thread_name = "zmq-hub"

    def __init__(self, host: str, port: int, buffer: FrameBuffer, *, pipelines: dict[int, str],
                 default_pipeline: str, ports: set[int] | None = None, key: bytes | None = None,
                 wall_clock: Callable[[], int] = time.time_ns, max_image_pixels: int = MAX_IMAGE_PIXELS) -> None:
        super().__init__()
        self.max_image_pixels = max_image_pixels
        self.key, self.wall_clock = key, wall_clock
        self.replay = ReplayGuard()
        self.buffer = buffer
        self.pipelines = pipelines
        self.default_pipeline = default_pipeline
        self.allowed_ports = ports  # None: any port a sender names
        self.counters: Counter[str] = Counter()
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        addr = f"tcp://[{host}]" if ":" in host else f"tcp://{host}"
        if ":" in host:
            self._sock.setsockopt(zmq.IPV6, 1)
        if port:
            self._sock.bind(f"{addr}:{port}")
            self.port = port
        else:
            self.port = self._sock.bind_to_random_port(addr)
        self._seq = 0

    def close(self) -> None:
        self._sock.close(0)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            parts = self._sock.recv_multipart(copy=True)
            reply = self.handle(parts)
            self._sock.send(reply)

    def handle(self, parts: list[bytes]) -> bytes:
        """Turn one request into a buffered frame; the reply says OK or what was wrong. No request,
        however malformed, gets past this method: every one is answered and counted."""
        try:
            frame = self._frame(parts)
            image_problem = self._image_problem(frame)
        except Refused as e:
            self.counters[e.reason] += 1
            log.debug("zmq hub: %s", e)
            return f"ERR {e}".encode()
        except ValueError as e:
            self.counters["malformed"] += 1
            log.debug("zmq hub: %s", e)
            return f"ERR {e}".encode()
        except Exception as e:  # a request we failed to foresee: refuse it, count it, serve the next
            self.counters["errors"] += 1
            if self.counters["errors"] in (1, 10, 100) or self.counters["errors"] % 1000 == 0:
                log.exception("zmq hub: request %d that could not be handled", self.counters["errors"])
            return f"ERR could not handle the request ({type(e).__name__})".encode()
        if image_problem:  # refused here, not after an OK: a sender told OK takes the frame as delivered
            self.counters["refused_image"] += 1
            log.debug("zmq hub: %s", image_problem)
            return f"ERR refused_image: {image_problem}".encode()
        self.buffer.put(frame)
        self.counters["frames_complete"] += 1
        return b"OK"

    def _image_problem(self, frame: ReadyFrame) -> str:
        """Why a frame's picture is refused before any decode (not a JPEG or PNG, or more pixels than
        allowed, read from its header), or "" when it is fine."""
        try:
            check_image(frame.data, self.max_image_pixels)
        except DecodeError as e:
            return str(e)
        return ""

    def _frame(self, parts: list[bytes]) -> ReadyFrame:
        if len(parts) != 2:
            raise ValueError(f"expected 2 message parts (metadata, image), got {len(parts)}")
        try:
            md = json.loads(parts[0])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"metadata is not JSON: {e}") from e
        if not isinstance(md, dict):
            raise ValueError("metadata must be a JSON object")
        self._authenticate(md, parts[1])
        data = self._jpeg(md, parts[1])
        port, seq, capture_ns, source = self._identity(md.get("msg", ""))
        return ReadyFrame(port, seq, capture_ns, time.time_ns(), data,
                          self.pipelines.get(port, self.default_pipeline), {"source": source, "via": "zmq"})

    def _authenticate(self, md: dict[str, Any], body: bytes) -> None:
        """Refused unless the request is signed with our key and fresh; keyless hubs take everything."""
        if self.key is None:
            if "auth" in md:
                self.counters["signed_unverified"] += 1
            return
        sid, n, ts, mac, dtype, shape = _signed_fields(md)
        msg = md.get("msg", "")
        if not isinstance(msg, str):
            raise Refused("dropped_forged", "msg must be a string")
        want = zmq_mac(self.key, sid=sid, n=n, ts=ts, msg=msg, dtype=dtype, shape=shape, body=body)
        if not hmac.compare_digest(want.encode(), mac.encode("ascii", "replace")):
            raise Refused("dropped_forged", "the MAC does not match: wrong key, or the request was altered")
        why = self.replay.check(sid, n, ts, self.wall_clock())
        if why:
            raise Refused("dropped_replayed", why)

    @staticmethod
    def _jpeg(md: dict[str, Any], body: bytes) -> bytes:
        if "dtype" not in md:  # send_jpg: bytes go through untouched
            if not body:
                raise ValueError("empty image")
            return body
        shape = md.get("shape")
        if md["dtype"] != "uint8" or not isinstance(shape, list) or len(shape) not in (2, 3):
            raise ValueError(f"raw images must be uint8 HxW or HxWxC, got {md.get('dtype')} {shape}")
        if not all(isinstance(v, int) and v > 0 for v in shape) or int(np.prod(shape)) > MAX_RAW_PIXELS:
            raise ValueError(f"bad raw image shape {shape}")
        if int(np.prod(shape)) != len(body):
            raise ValueError(f"shape {shape} needs {int(np.prod(shape))} bytes, got {len(body)}")
        ok, enc = cv2.imencode(".jpg", np.frombuffer(body, np.uint8).reshape(shape),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("could not encode the raw image as JPEG")
        return enc.tobytes()

    def _identity(self, msg: Any) -> tuple[int, int, int, str]:
        """(port, seq, capture_ns, source name) from a framehive msg, or defaults for plain text."""
        if isinstance(msg, str) and msg.startswith("{"):
            try:
                d = json.loads(msg)
                port, seq = _wire_int(d["port"], "port", 1, 65535), _wire_int(d["seq"], "seq", 0, 2**63 - 1)
                cap = _wire_int(d["capture_ns"], "capture_ns", 0, 2**63 - 1)
                name = str(d.get("name", ""))[:64]
            except (ValueError, KeyError, TypeError, RecursionError) as e:
                raise ValueError(f"framehive metadata is incomplete or out of range: {e}") from e
            if self.allowed_ports is not None and port not in self.allowed_ports:
                raise Refused("refused_port", f"port {port} is not served by this receiver")
            return port, seq & 0x7FFFFFFF, cap, name
        self._seq += 1
        return self.port, self._seq & 0x7FFFFFFF, time.time_ns(), str(msg)[:64]
