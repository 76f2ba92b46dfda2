"""`python -m receiver`: the ingest hub. One UDP port per camera (plus an optional imagezmq hub);
reassembles frames and queues them on the master, untouched, in batches."""

from __future__ import annotations

# isort: off
import common.early  # noqa: F401 - first of all: a SIGTERM while the rest imports exits 0
# isort: on
import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from common.cli import DefaultsHelpFormatter
from common.config import MasterLink, build, config_or_exit, load_key
from common.errors import ConfigError
from common.gating import GatePolicy, parse_policy
from common.imageinfo import MAX_IMAGE_PIXELS
from common.pipeline import normalize_pipeline
from common.protocol import KEY_ENV
from common.runtime import Component, ServerThread, Supervisor, setup_logging, stop_on_signals
from receiver.buffer import FrameBuffer
from receiver.config import MAX_PORTS, JobSettings, ReceiverConfig
from receiver.forward import Forwarder
from receiver.ingestcore import CORE_CHOICES, CORE_ENV
from receiver.udp import DEFAULT_RCVBUF_BYTES, UdpIngest
from receiver.unixingest import UnixIngest, parse_unix_sockets
from receiver.watch import ConfigWatcher, fetch, ports_of

log = logging.getLogger("receiver")
T = TypeVar("T")

STATS_EVERY_S = 10.0
DEFAULT_HOST = "127.0.0.1"


def parse_ports(text: str) -> list[int]:
    """'5000,5001' or '5000-5003' (or both, comma separated) -> sorted unique ports; 'none' -> []."""
    if text.strip().lower() == "none":
        return []
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
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--ports", default=None,
                   help="UDP ports, one per camera: 5000,5001 or 5000-5003. Left out with --name: the master's "
                        "config file says, and a reload changes them live; else 5000-5003. none: no UDP cameras "
                        "(a receiver "
                        "serving only imagezmq cameras or file jobs)")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (:: for every address)")
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
                   help="when frames go to the detector: every (the default), motion (only frames with motion, "
                        "plus 2 s after it and one a second), motion:AREA (the moving fraction, 0.003 if not given), "
                        "or rate:N (at most N per second); PORT=POLICY for one port. Skipped frames still "
                        "appear in results as status 'skipped'")
    p.add_argument("--zmq-port", type=int, default=0,
                   help="also open an imagezmq hub (REQ/REP) on this TCP port; 0: off")
    p.add_argument("--unix-socket", action="append", default=[], metavar="PATH=PORT",
                   help="also take frames from publishers on this host over an AF_UNIX socket at PATH (mode 0600, "
                        "removed on stop), filed under camera PORT (not one of --ports); repeatable")
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
    p.add_argument("--ingest-core", choices=CORE_CHOICES, default=None,
                   help=f"UDP reassembly: compiled (recvmmsg batches, C; built by `make setup`), python (the "
                        f"reference), auto (compiled when built, else python) (default: ${CORE_ENV}, else auto)")
    p.add_argument("--ingest-threads", type=int, default=1,
                   help="UDP ingest threads (compiled core): each port becomes a SO_REUSEPORT group of this many "
                        "sockets, one per thread, datagrams spread by stream id; for links faster than one core")
    p.add_argument("--name", default="",
                   help="receiver name in the master's stats; each receiver needs its own (default: "
                        "receiver@HOST:PORTS, e.g. receiver@cam-hub:5000-5003)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="how much to log")
    return p.parse_args(argv)


def from_flags(args: argparse.Namespace) -> ReceiverConfig:
    """The receiver's config from parsed flags and the environment (token, key); ValueError or
    ConfigError says which flag is wrong."""
    link = MasterLink.load(args.master, args.token_file)
    view = from_master(link, args) if args.ports is None and args.name else None
    unix_sockets = parse_unix_sockets(args.unix_socket)
    if view is not None:
        pipelines, policies, _ = ports_of(view)
        ports, default_pipeline = sorted(pipelines), "person"
        args.ports = ",".join(map(str, ports)) or "none"
        args.host = view["host"] if args.host == DEFAULT_HOST else args.host
        args.zmq_port = args.zmq_port or view["zmq_port"]
        args.jobs_port = args.jobs_port or view["jobs_port"]
    else:
        ports = parse_ports(args.ports or "5000-5003")
        cameras = ports + sorted(set(unix_sockets.values()) - set(ports))
        default_pipeline, pipelines = parse_pipelines(args.pipeline, cameras)
        _, policies = parse_per_port("--detect", args.detect, cameras, GatePolicy(), parse_policy)
    if args.jobs_http_port and not args.jobs_port:
        raise ConfigError("--jobs-http-port needs --jobs-port")
    jobs = JobSettings(port=args.jobs_port, host=args.jobs_host, http_port=args.jobs_http_port,
                       max_jobs=args.jobs_max, max_spool_bytes=int(args.jobs_max_spool_gb * 1024**3),
                       root=args.jobs_root) if args.jobs_port else None
    return build(ReceiverConfig, {
        "master": link, "host": args.host, "ports": tuple(ports), "watch": view["generation"] if view else 0,
        "ports_text": args.ports or "5000-5003", "key": load_key(args.key_file), "insecure": args.insecure,
        "default_pipeline": default_pipeline, "pipelines": pipelines, "policies": policies,
        "zmq_port": args.zmq_port, "jobs": jobs, "backlog": args.backlog, "max_image_pixels": args.max_image_pixels,
        "rcvbuf_bytes": args.rcvbuf_kb * 1024, "name": args.name, "log_level": args.log_level,
        "ingest_core": args.ingest_core or os.environ.get(CORE_ENV, "") or "auto",
        "ingest_threads": args.ingest_threads,
        "unix_sockets": unix_sockets})


def from_master(link: MasterLink, args: argparse.Namespace) -> dict | None:
    """This receiver's cameras from the master's config file, or None when the master runs without one."""
    if args.pipeline or args.detect:
        raise ConfigError("--pipeline and --detect come from the master's config file when --ports is left out")
    try:
        return fetch(link, args.name)
    except ConfigError as e:
        if "without a config file" not in str(e):
            raise
        log.info("the master has no config file: serving the default ports 5000-5003")
        return None


def main(argv: list[str] | None = None) -> int:
    config = config_or_exit("python -m receiver", lambda: from_flags(parse_args(argv)))
    return run(config)


def run(config: ReceiverConfig) -> int:
    """Serve as `config` says until SIGINT/SIGTERM; the process's exit code."""
    setup_logging(config.log_level)
    stop = stop_on_signals()
    buffer = FrameBuffer(config.backlog)
    supervisor = Supervisor("receiver", stop, join_timeout_s=5)
    sockets: list[Component] = []
    try:
        if config.ports:
            sockets.append(UdpIngest(config.host, list(config.ports), dict(config.pipelines), buffer,
                                     rcvbuf=config.rcvbuf_bytes, key=config.key, core=config.ingest_core,
                                     threads=config.ingest_threads))
        if config.zmq_port:
            from receiver.zmqhub import ZmqHub

            sockets.append(ZmqHub(config.host, config.zmq_port, buffer, pipelines=dict(config.pipelines),
                                  default_pipeline=config.default_pipeline, key=config.key,
                                  ports=set(config.ports) or None,  # no UDP ports: any camera port
                                  max_image_pixels=config.max_image_pixels))
        if config.unix_sockets:
            sockets.append(UnixIngest(config.unix_sockets, dict(config.pipelines), buffer))
        jobs, preview = job_parts(config)
    except OSError as e:
        for part in sockets:
            part.close()
        print(f"python -m receiver: error: cannot listen: {e}", file=sys.stderr)
        return 1
    forwarder = Forwarder(buffer, config.master, name=config.display_name, counters=counters_of(sockets),
                          policies=dict(config.policies), max_image_pixels=config.max_image_pixels,
                          report_extra=(lambda: {"jobs": jobs.server.report()}) if jobs else None)
    supervisor.add(forwarder, join_timeout_s=10)  # stopped last: it flushes what the sockets took
    if config.watch:
        ingest = next((p for p in sockets if isinstance(p, UdpIngest)), None)
        supervisor.add(ConfigWatcher(config.master, config.name, config.watch,
                                     lambda view: follow(view, ingest, forwarder)))
    for part in [*sockets, *([jobs] if jobs else []), *([preview] if preview else [])]:
        supervisor.add(part)

    def ready() -> None:
        if config.ports or config.zmq_port or config.unix_sockets:
            log.info("receiving %s%s%s; queueing on %s as %s; %s",
                     f"UDP on {config.host} ports {config.ports_text}" if config.ports else "no UDP",
                     f", imagezmq on {config.zmq_port}" if config.zmq_port else "",
                     "".join(f", unix socket {path} for port {port}" for path, port in config.unix_sockets.items()),
                     config.master.url,
                     forwarder.name, "only signed datagrams and requests are taken" if config.key
                     else "no key: nothing is authenticated")
        if config.jobs:
            log.info("serving file jobs on %s port %d%s", config.jobs.host, config.jobs.port,
                     f"; preview at http://{config.jobs.preview_host}:{config.jobs.http_port}/" if preview else "")
    return supervisor.run(every=(STATS_EVERY_S, lambda: log_counters(forwarder)), ready=ready)


def follow(view: dict, ingest: UdpIngest | None, forwarder: Forwarder) -> None:
    """Apply a reload of the master's config: ports open and close, pipelines and policies change."""
    pipelines, policies, names = ports_of(view)
    if ingest is not None:
        ingest.reconfigure(pipelines)
    forwarder.set_policies(policies)
    log.info("cameras now: %s", ", ".join(f"{names[p]}={p}" for p in sorted(names)) or "none")


def counters_of(sockets: list[Component]) -> Callable[[], dict]:
    """What the forwarder reports: the UDP and unix-socket ingests' per-port counters, and the imagezmq hub's."""
    def counters() -> dict:
        out: dict = {}
        for part in sockets:
            if isinstance(part, (UdpIngest, UnixIngest)):
                out.update(part.counters())
            else:
                out["zmq"] = {k: int(v) for k, v in dict(part.counters).items()}
        return out
    return counters


def job_parts(config: ReceiverConfig) -> tuple[Component | None, Component | None]:
    """The file-job server and its HTTP preview, when asked for."""
    if config.jobs is None:
        return None, None
    from receiver.jobs import JobConfig, JobServerThread

    settings = config.jobs
    jobs = JobServerThread(settings.host, settings.port, JobConfig(
        master_url=config.master.url, root=Path(settings.root) if settings.root else None, token=config.master.token,
        max_jobs=settings.max_jobs, max_spool_bytes=settings.max_spool_bytes))
    if not settings.http_port:
        return jobs, None
    from receiver.jobs.preview import PreviewServer

    return jobs, ServerThread(PreviewServer((settings.preview_host, settings.http_port), jobs.server), "preview")


def log_counters(forwarder: Forwarder) -> None:
    """One line per port that counted anything; nothing for an idle port."""
    for port, c in forwarder.counters().items():
        busy = " ".join(f"{k}={v}" for k, v in sorted(c.items()) if v)
        if busy:
            log.info("port %s: %s", port, busy)

if __name__ == "__main__":
    sys.exit(main())
