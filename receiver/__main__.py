"""`python -m receiver`: the ingest hub. One UDP port per camera (plus an optional imagezmq hub);
reassembles frames and queues them on the master, untouched, in batches."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from common import auth
from common.errors import ConfigError
from common.imageinfo import MAX_IMAGE_PIXELS
from common.masterclient import parse_master_url
from common.pipeline import normalize_pipeline
from common.protocol import KEY_ENV, key_from
from common.runtime import exit_code, is_loopback, setup_logging, stop_on_signals
from receiver.buffer import FrameBuffer
from receiver.forward import Forwarder
from receiver.motion import GatePolicy, parse_policy
from receiver.udp import DEFAULT_RCVBUF_BYTES, UdpIngest

log = logging.getLogger("receiver")
T = TypeVar("T")

MAX_PORTS = 256
STATS_EVERY_S = 10.0


def parse_ports(text: str) -> list[int]:
    """'5000,5001' or '5000-5003' (or both, comma separated) -> sorted unique ports."""
    ports: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"bad port {part!r}: use numbers like 5000,5001 or a range 5000-5003") from None
        if not (0 < a <= b < 65536):
            raise ValueError(f"bad port range {part!r}: ports are 1..65535, low to high")
        ports.update(range(a, b + 1))
    if not ports or len(ports) > MAX_PORTS:
        raise ValueError(f"give 1..{MAX_PORTS} ports")
    return sorted(ports)


def parse_per_port(flag: str, items: list[str], ports: list[int], default: T,
                   parse: Callable[[str], T]) -> tuple[T, dict[int, T]]:
    """A default and per-port overrides from repeated `--flag VALUE` / `--flag PORT=VALUE`."""
    per_port: dict[int, T] = {}
    for item in items:
        if "=" in item:
            port_text, value = item.split("=", 1)
            if not port_text.strip().isdigit():
                raise ValueError(f"per-port {flag} must look like 5001=VALUE, got {item!r}")
            per_port[int(port_text)] = parse(value)
        else:
            default = parse(item)
    unknown = sorted(set(per_port) - set(ports))
    if unknown:
        raise ValueError(f"{flag} names port(s) {unknown} that are not in --ports")
    return default, {p: per_port.get(p, default) for p in ports}


def parse_pipelines(items: list[str], ports: list[int]) -> tuple[str, dict[int, str]]:
    """The default pipeline and per-port overrides from repeated --pipeline values."""
    return parse_per_port("--pipeline", items, ports, "person", normalize_pipeline)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m receiver", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ports", default="5000-5003", help="UDP ports, one per camera: 5000,5001 or 5000-5003")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (:: for every address)")
    p.add_argument("--insecure", action="store_true",
                   help="allow listening on a non-loopback address without a datagram key")
    p.add_argument("--key-file", default="",
                   help=f"file holding the shared datagram/imagezmq key as hex (else ${KEY_ENV}); with a key, "
                        "unsigned, forged and replayed datagrams and imagezmq requests are dropped and counted")
    p.add_argument("--master", default="http://127.0.0.1:8000", help="master URL")
    p.add_argument("--token-file", default="", help="file holding the master's token (default: $FRAMEHIVE_TOKEN)")
    p.add_argument("--pipeline", action="append", default=[],
                   help="what workers run on these cameras, e.g. person or person,face; PORT=SPEC "
                        "overrides one port (repeatable). Default: person")
    p.add_argument("--detect", action="append", default=[],
                   help="when frames go to the detector: every (default), motion (only frames with motion, "
                        "plus 2 s after it and one a second), motion:AREA (moving fraction, default 0.003), "
                        "or rate:N (at most N per second); PORT=POLICY for one port. Skipped frames still "
                        "appear in results as status 'skipped'")
    p.add_argument("--zmq-port", type=int, default=0,
                   help="also open an imagezmq hub (REQ/REP) on this TCP port; 0: off")
    p.add_argument("--jobs-port", type=int, default=0,
                   help="also serve file jobs (upload a video, get a processed H.264 MP4) on this TCP port; 0: off")
    p.add_argument("--jobs-host", default="localhost",
                   help="file-job address: localhost (127.0.0.1 and ::1), or :: for every IPv6 and IPv4 address")
    p.add_argument("--jobs-http-port", type=int, default=0,
                   help="HTTP preview of file jobs (pages, /progress.json, /frame/<n>, /gif) on this port; 0: off")
    p.add_argument("--jobs-max", type=int, default=8, help="file jobs at once; more are told 'busy'")
    p.add_argument("--jobs-max-spool-gb", type=float, default=8.0,
                   help="bytes of running uploads the job server spools at once (each at most 4 GiB)")
    p.add_argument("--jobs-root", default="",
                   help="folder whose files clients may name with --protocol file (default: none allowed)")
    p.add_argument("--backlog", type=int, default=4, help="frames buffered per camera while the master is busy")
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                   help="frames claiming more pixels (read from their JPEG header) are refused and counted")
    p.add_argument("--rcvbuf-kb", type=int, default=DEFAULT_RCVBUF_BYTES // 1024, help="UDP receive buffer asked for")
    p.add_argument("--name", default="", help="receiver name in the master's stats (default receiver@host)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = p.parse_args(argv)
    try:
        args.port_list = parse_ports(args.ports)
        args.default_pipeline, args.pipelines = parse_pipelines(args.pipeline, args.port_list)
        _, args.policies = parse_per_port("--detect", args.detect, args.port_list, GatePolicy(), parse_policy)
        parse_master_url(args.master)
        args.token = auth.configure(args.token_file)
    except (ValueError, ConfigError) as e:
        p.error(str(e))
    args.key = read_key(p, args.key_file)
    if not 0 <= args.zmq_port < 65536 or args.backlog < 1 or args.rcvbuf_kb < 64:
        p.error("--zmq-port must be 0..65535, --backlog >= 1, --rcvbuf-kb >= 64")
    if not 0 <= args.jobs_port < 65536 or not 0 <= args.jobs_http_port < 65536:
        p.error("--jobs-port and --jobs-http-port must be 0..65535")
    if args.jobs_max < 1 or args.jobs_max_spool_gb <= 0:
        p.error("--jobs-max must be >= 1 and --jobs-max-spool-gb > 0")
    if args.jobs_http_port and not args.jobs_port:
        p.error("--jobs-http-port needs --jobs-port")
    if (args.jobs_port and args.jobs_host != "localhost" and not is_loopback(args.jobs_host) and not args.insecure
            and args.token is None):
        p.error(f"refusing to serve file jobs on {args.jobs_host} without a token: anyone could upload work and "
                f"read results; give --token-file (or ${auth.TOKEN_ENV}), use localhost, or pass --insecure on a "
                "network you trust")
    if not is_loopback(args.host) and not args.insecure and args.key is None:
        p.error(f"refusing to listen on {args.host} without a datagram key: anyone on the network could inject "
                f"frames; give --key-file (or ${KEY_ENV}), listen on 127.0.0.1, or pass --insecure on a network "
                "you trust")
    return args


def read_key(p: argparse.ArgumentParser, key_file: str) -> bytes | None:
    """The shared key from --key-file, else from the environment; exits with a clear message if unusable."""
    try:
        text = Path(key_file).read_text() if key_file else None
        return key_from(text, key_file, os.environ.get(KEY_ENV))
    except (OSError, UnicodeDecodeError) as e:
        p.error(f"cannot read the key file: {e}")
    except ValueError as e:
        p.error(str(e))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    stop = stop_on_signals()
    buffer = FrameBuffer(args.backlog)
    try:
        ingest = UdpIngest(args.host, args.port_list, args.pipelines, buffer, rcvbuf=args.rcvbuf_kb * 1024,
                           key=args.key)
        hub = None
        if args.zmq_port:
            from receiver.zmqhub import ZmqHub

            hub = ZmqHub(args.host, args.zmq_port, buffer, pipelines=args.pipelines,
                         default_pipeline=args.default_pipeline, key=args.key, ports=set(args.port_list))
    except OSError as e:
        print(f"python -m receiver: error: cannot listen: {e}", file=sys.stderr)
        return 1

    def counters() -> dict:
        out = ingest.counters()
        if hub is not None:
            out["zmq"] = {k: int(v) for k, v in dict(hub.counters).items()}
        return out

    jobs = preview = None
    if args.jobs_port:
        from receiver.jobs import JobConfig, JobServerThread

        jobs = JobServerThread(args.jobs_host, args.jobs_port, JobConfig(
            master_url=args.master, root=Path(args.jobs_root) if args.jobs_root else None, token=args.token,
            max_jobs=args.jobs_max, max_spool_bytes=int(args.jobs_max_spool_gb * 1024**3)))
        jobs.start()
        jobs.ready.wait(10)
        if jobs.error is not None:
            print(f"python -m receiver: error: cannot serve file jobs: {jobs.error}", file=sys.stderr)
            ingest.close()
            return 1
        log.info("serving file jobs on %s port %d", args.jobs_host, jobs.server.port)
        if args.jobs_http_port:
            from receiver.jobpreview import PreviewServer

            host = "127.0.0.1" if args.jobs_host == "localhost" else args.jobs_host
            preview = PreviewServer((host, args.jobs_http_port), jobs.server)
            preview.start()
            log.info("file-job preview at http://%s:%d/", host, args.jobs_http_port)
    name = args.name or f"receiver@{socket.gethostname()}"
    report_jobs = (lambda: {"jobs": jobs.server.report()}) if jobs else None  # file jobs on the master's dashboard
    forwarder = Forwarder(buffer, args.master, name=name, counters=counters, policies=args.policies,
                          report_extra=report_jobs, max_image_pixels=args.max_image_pixels)
    producers = [ingest] + ([hub] if hub else []) + ([jobs] if jobs else []) + ([preview] if preview else [])
    for part in [forwarder, ingest, *([hub] if hub else [])]:  # the job server and preview run already
        part.start()
    log.info("receiving UDP on %s ports %s%s; queueing on %s; %s", args.host, args.ports,
             f", imagezmq on {args.zmq_port}" if hub else "", args.master,
             "only signed datagrams and requests are taken" if args.key else "no key: nothing is authenticated")
    while not stop.wait(STATS_EVERY_S):
        for port, c in forwarder.counters().items():
            log.info("port %s: %s", port, " ".join(f"{k}={v}" for k, v in sorted(c.items()) if v))
    log.info("stopping: closing the ingest sockets, then flushing to the master")
    for part in producers:
        part.stop()
    for part in producers:
        part.join(5)
    forwarder.stop()
    forwarder.join(10)
    log.info("stopped")
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
