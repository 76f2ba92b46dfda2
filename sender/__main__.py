"""`python -m sender`: the publisher. Captures frames, JPEG-encodes each once, and sends them to a
receiver over UDP chunks (default), imagezmq (--transport zmq) or a local socket (--transport unix),
paced to --fps."""

from __future__ import annotations

# isort: off
import common.early  # noqa: F401 - first of all: a SIGTERM while the rest imports exits 0
# isort: on
import argparse
import json
import logging
import os
import random
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.cli import DefaultsHelpFormatter
from common.config import MasterLink, config_or_exit
from common.errors import ConfigError
from common.hostnames import is_this_host, local_names
from common.protocol import DEFAULT_CHUNK_BYTES, KEY_ENV, LOOPBACK_CHUNK_BYTES, key_from, max_chunk_bytes
from common.runtime import Component, Supervisor, is_loopback, setup_logging, stop_on_signals
from sender.credentials import mask_url
from sender.live import RETRY_MAX_S
from sender.sources import FrameSource, open_source
from sender.streams import OPEN_TIMEOUT_S, RTSP_TRANSPORTS
from sender.transport import Transport, UdpTransport, UnixTransport, ZmqTransport, parse_hostport

log = logging.getLogger("publisher")

STATS_EVERY_S = 10.0


class Publisher(Component):
    """Reads, encodes and sends frames at a steady pace until the source ends or it is stopped."""

    thread_name = "publisher"

    def __init__(self, source: FrameSource, transport: Transport, *, fps: float, quality: int,
                 max_frames: int = 0, max_width: int = 0) -> None:
        super().__init__()
        self.source, self.transport = source, transport
        self.fps = fps  # 0: the source's own rate
        self.params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        self.max_frames, self.max_width = max_frames, max_width
        self.counters: Counter[str] = Counter()
        self.seq = 0

    def run(self, stop: threading.Event | None = None) -> None:
        """Publish until the source is exhausted, max_frames are sent, or `stop` (by default this part's
        own stop) is set."""
        stop = stop or self._stop
        next_at = time.monotonic()
        last_stats = next_at
        while not stop.is_set() and not (self.max_frames and self.seq >= self.max_frames):
            frame = self.source.read(stop)
            if frame is None:
                break
            self.publish(frame)
            # without --fps: a file's own rate; a live source's each frame as it comes (read waits for it)
            period = 1.0 / self.fps if self.fps else 0.0 if self.source.live else 1.0 / self.source.fps
            next_at += period
            now = time.monotonic()
            if period and next_at < now - period:  # fell behind (slow source or encoder): do not burst to catch up
                self.counters["late"] += 1
                next_at = now
            stop.wait(max(0.0, next_at - now))
            if now - last_stats >= STATS_EVERY_S:
                log.info("sent %d frames %s %s", self.seq, dict(self.transport.counters), self.source.stats())
                last_stats = now

    def publish(self, frame: np.ndarray) -> bool:
        """Encode once and send; returns whether the transport took it."""
        capture_ns = time.time_ns()
        if self.max_width and frame.shape[1] > self.max_width:
            scale = self.max_width / frame.shape[1]
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", frame, self.params)
        if not ok:
            self.counters["encode_errors"] += 1
            return False
        sent = self.transport.send(jpeg.tobytes(), seq=self.seq, capture_ns=capture_ns)
        self.counters["sent" if sent else "not_sent"] += 1
        self.counters["bytes"] += len(jpeg) if sent else 0
        self.seq += 1
        return sent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sender", description=__doc__,
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--source", default="synthetic",
                   help="camera index (0), video file, rtsp:// or http(s):// URL (${VAR} in it is taken from the "
                        "environment), fifo:PATH[?format=rawvideo&size=WxH&pix_fmt=bgr24] (a named pipe an "
                        "ffmpeg writes into; docs/OPERATIONS.md), or synthetic[:WxH]. Cameras, URLs and pipes that "
                        "are down are retried forever")
    p.add_argument("--username", default="", help="user to log in to an rtsp:// or http(s):// source as")
    p.add_argument("--password-file", default="",
                   help="file holding the source's password (read at start; never give it on the command line)")
    p.add_argument("--rtsp-transport", choices=RTSP_TRANSPORTS, default="tcp",
                   help="how an rtsp:// source sends its packets: tcp (one connection, no loss) or udp")
    p.add_argument("--retry-max-s", type=float, default=RETRY_MAX_S,
                   help="longest wait between attempts to reach a camera, stream or pipe that is down")
    p.add_argument("--receiver", default="127.0.0.1:5000",
                   help="HOST:PORT of the receiver's UDP port for this camera "
                        "(its imagezmq hub with --transport zmq)")
    p.add_argument("--transport", choices=["udp", "zmq", "unix"], default="udp",
                   help="udp: chunked datagrams, newest frame wins; zmq: imagezmq REQ/REP, every frame acknowledged; "
                        "unix: a receiver on this host, over its --unix-socket")
    p.add_argument("--unix-socket", default="", help="with --transport unix: the receiver's socket path")
    p.add_argument("--camera-port", type=int, default=0,
                   help="with --transport zmq: the camera port results are filed under (default: the hub's port); "
                        "with unix: 0 or the socket's port")
    p.add_argument("--fps", type=float, default=0.0, help="frames per second (0: the source's own rate)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: no limit)")
    p.add_argument("--loop", action="store_true", help="restart a video file when it ends")
    p.add_argument("--quality", type=int, default=80, help="JPEG quality 1..100")
    p.add_argument("--max-width", type=int, default=0, help="downscale wider frames to this width (0: never)")
    p.add_argument("--chunk-size", type=int, default=0,
                   help=f"payload bytes per UDP datagram; 0: {LOOPBACK_CHUNK_BYTES} to a loopback receiver, "
                        f"else {DEFAULT_CHUNK_BYTES} (fits a 1500-byte MTU)")
    p.add_argument("--stream-id", type=int, default=-1, help="stream id in each datagram (default: random)")
    p.add_argument("--name", default="", help="camera name (zmq metadata)")
    p.add_argument("--key-file", default="",
                   help=f"file holding the shared key as hex (else ${KEY_ENV}): every datagram or imagezmq "
                        "request is signed with it")
    p.add_argument("--camera", default="",
                   help="publish this camera of the master's config file: its source, rate, quality and receiver "
                        "come from the master (--master); flags given here are ignored for it")
    p.add_argument("--all", action="store_true",
                   help="publish every enabled camera of the master's config file whose host is this machine (or "
                        "any host), one thread each")
    p.add_argument("--master", default="http://127.0.0.1:8000", help="the master's URL, with --camera or --all")
    p.add_argument("--token-file", default="",
                   help="file holding the master's token, with --camera (default: $FRAMEHIVE_TOKEN)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="how much to log on stderr")
    args = p.parse_args(argv)
    args.parser = p  # a camera from the master is checked once its flags are filled
    if args.all and args.camera:
        p.error("give --camera NAME or --all, not both")
    if not args.camera and not args.all:
        check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit 2) for flags that cannot work: an unknown receiver host, a bad key, ranges."""
    try:
        args.host, args.port = parse_hostport(args.receiver)
        socket.getaddrinfo(args.host, args.port, type=socket.SOCK_DGRAM)
    except ValueError as e:
        p.error(str(e))
    except OSError as e:  # socket.gaierror: a host name nobody knows
        p.error(f"cannot resolve the receiver's host {args.host!r}: {e.strerror or e}")
    try:
        args.key = key_from(Path(args.key_file).read_text() if args.key_file else None, args.key_file,
                            os.environ.get(KEY_ENV))
    except (OSError, UnicodeDecodeError) as e:
        p.error(f"cannot read the key file: {e}")
    except ValueError as e:
        p.error(str(e))
    try:
        args.password = (Path(args.password_file).read_text().splitlines() or [""])[0] if args.password_file else ""
    except (OSError, UnicodeDecodeError) as e:
        p.error(f"cannot read the password file: {getattr(e, 'strerror', None) or e}")
    max_chunk = max_chunk_bytes(args.key is not None)
    checks = [(0 <= args.fps <= 1000, "--fps must be 0..1000"), (1 <= args.quality <= 100, "--quality must be 1..100"),
              (args.max_frames >= 0, "--max-frames must be >= 0"), (args.max_width >= 0, "--max-width must be >= 0"),
              (0 <= args.chunk_size <= max_chunk,
               f"--chunk-size must be 0..{max_chunk}" + (" with a key (the MAC takes 16 bytes)" if args.key else "")),
              (-1 <= args.stream_id < 2**32, "--stream-id must be 0..4294967295"),
              (0 <= args.camera_port < 65536, "--camera-port must be 0..65535"),
              (0.5 <= args.retry_max_s <= 3600, "--retry-max-s must be 0.5..3600"),
              ((args.transport == "unix") == bool(args.unix_socket), "--transport unix and --unix-socket go together")]
    for ok, message in checks:
        if not ok:
            p.error(message)


def from_master(args: argparse.Namespace) -> None:
    """Fill the flags of camera `args.camera` from the master's config file (waiting for the master)."""
    cam = MasterLink.load(args.master, args.token_file).fetch_config("camera", args.camera)
    if not cam["enabled"]:
        raise ConfigError(f"camera {args.camera!r} is disabled in the master's config file")
    port = cam["zmq_port"] if cam["transport"] == "zmq" else cam["port"]
    if not port:
        raise ConfigError(f"camera {args.camera!r} uses imagezmq but its receiver {cam['receiver']!r} has no zmq_port")
    host = cam["receiver_host"]
    args.receiver = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    args.source, args.fps, args.quality, args.max_width = cam["source"], cam["fps"], cam["quality"], cam["max_width"]
    args.transport, args.camera_port, args.name = cam["transport"], cam["port"], cam["name"]
    args.loop = args.loop or os.path.isfile(cam["source"])  # a file in a camera's place plays on
    # the password stays in its file on this host; only the file's name comes from the master
    args.username, args.password_file = cam["username"], cam["password_file"]
    args.rtsp_transport = cam["rtsp_transport"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cameras = [args]
    if args.all:
        cameras = config_or_exit("python -m sender", lambda: this_hosts_cameras(args))
    for cam in cameras:
        if cam.camera:
            config_or_exit("python -m sender", lambda cam=cam: from_master(cam))
            check_flags(cam.parser, cam)
    setup_logging(args.log_level)
    try:
        parts = [build(cam) for cam in cameras]
    except (ValueError, OSError, ConfigError) as e:
        print(f"python -m sender: error: {e}", file=sys.stderr)
        return 2
    supervisor = Supervisor("publisher", stop_on_signals())
    for source, _, pub in parts:
        if isinstance(source, Component):  # a live source reads on its own thread: stopped after the publisher
            supervisor.add(source, join_timeout_s=2 * OPEN_TIMEOUT_S)
        supervisor.add(pub, ends_run=len(parts) == 1)  # the end of a file (or --max-frames) ends the process
    try:
        code = supervisor.run()
    finally:
        for source, transport, _ in parts:
            source.close()
            transport.close()
    for (source, transport, pub), cam in zip(parts, cameras):
        print(json.dumps({**({"camera": cam.camera} if cam.camera else {}), "frames": pub.seq, **pub.counters,
                          **source.stats(), **transport.counters}))
    return code


def this_hosts_cameras(args: argparse.Namespace) -> list[argparse.Namespace]:
    """--all: one set of flags per enabled camera the master's file gives this host (or any host)."""
    host, mine = socket.gethostname(), local_names()
    with MasterLink.load(args.master, args.token_file).client(timeout_s=10.0) as client:
        listed = client.call("list_cameras", "")["cameras"]  # every camera: this host may be named many ways
    names = [c["name"] for c in listed if c["enabled"] and (not c.get("host") or is_this_host(c["host"], mine))]
    if not names:
        raise ConfigError(f"the master's config file has no enabled camera for this host ({host})")
    return [argparse.Namespace(**{**vars(args), "camera": name}) for name in names]


def build(args: argparse.Namespace) -> tuple[Any, Transport, Publisher]:
    """The source, transport and publisher one camera's flags describe."""
    source = open_source(args.source, loop=args.loop, username=args.username, password=args.password,
                         env=os.environ, rtsp_transport=args.rtsp_transport, retry_max_s=args.retry_max_s)
    fps = args.fps or source.fps
    shown = mask_url(args.source)
    stream_id = args.stream_id if args.stream_id >= 0 else random.getrandbits(32)
    if args.transport == "udp":
        chunk = args.chunk_size or (LOOPBACK_CHUNK_BYTES if is_loopback(args.host) else DEFAULT_CHUNK_BYTES)
        transport: Transport = UdpTransport(args.host, args.port, stream_id=stream_id, chunk_bytes=chunk,
                                            key=args.key)
    elif args.transport == "unix":
        transport = UnixTransport(args.unix_socket, camera_port=args.camera_port)
    else:
        transport = ZmqTransport(args.host, args.port, camera_port=args.camera_port or args.port,
                                 name=args.name or shown, key=args.key)
    pub = Publisher(source, transport, fps=args.fps, quality=args.quality, max_frames=args.max_frames,
                    max_width=args.max_width)
    log.info("publishing %s%s to %s over %s at %s%s", f"{args.camera}: " if args.camera else "", shown,
             args.unix_socket if args.transport == "unix" else f"{args.host}:{args.port}", args.transport,
             f"{fps:.1f} fps" if args.fps or not source.live else "the source's rate", ", signed" if args.key else "")
    return source, transport, pub


if __name__ == "__main__":
    sys.exit(main())
