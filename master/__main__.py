"""`python -m master`: the coordinator (XML-RPC + binary task API + status on one HTTP port)."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path

from common import auth
from common.celeryconf import DEFAULT_REDIS, DEFAULT_VISIBILITY_S, redis_url
from common.errors import ConfigError
from common.imageinfo import MAX_IMAGE_PIXELS
from common.runtime import ServerThread, Supervisor, is_loopback, setup_logging, stop_on_signals
from master.celerybackend import CeleryDispatcher
from master.httpserver import DEFAULT_MAX_CONNECTIONS_PER_HOST, DEFAULT_MAX_REQUEST_BYTES, MasterHTTPServer
from master.journal import SqliteJournal
from master.rules import load_rules
from master.service import MasterService, ServiceConfig
from master.store import StoreConfig, TaskStore

log = logging.getLogger("master")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m master", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (:: for every IPv6 and IPv4 address)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (XML-RPC at /RPC2)")
    p.add_argument("--token-file", default="",
                   help="file holding the shared token every client must present (default: $FRAMEHIVE_TOKEN; "
                        "none: no authentication, loopback only)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="without a token, requests must name this machine in their Host header (localhost, "
                        "127.x, ::1); add another name you reach the master by (repeatable)")
    p.add_argument("--insecure", action="store_true",
                   help="allow binding a non-loopback address without a token")
    p.add_argument("--lease-s", type=float, default=StoreConfig.lease_s, help="task lease before requeue")
    p.add_argument("--max-attempts", type=int, default=StoreConfig.max_attempts, help="leases per task")
    p.add_argument("--max-worker-deaths", type=int, default=StoreConfig.max_worker_deaths,
                   help="a task whose workers died holding it this many times is failed (quarantined), not retried")
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                   help="frames claiming more pixels (read from their header) are never decoded by the master")
    p.add_argument("--max-pending-per-port", type=int, default=StoreConfig.max_pending_per_port,
                   help="live frames waiting per camera; older ones are dropped")
    p.add_argument("--max-frame-age-s", type=float, default=StoreConfig.max_frame_age_s,
                   help="live frames older than this are dropped, never processed")
    p.add_argument("--max-queued-mb", type=float, default=StoreConfig.max_bytes / 2**20,
                   help="payload bytes the master holds for waiting and running tasks: beyond it the oldest live "
                        "frames are dropped (dropped_bytes) and file-job tiles wait")
    p.add_argument("--results-per-port", type=int, default=StoreConfig.results_per_port,
                   help="results kept per camera for get_results")
    p.add_argument("--worker-timeout-s", type=float, default=ServiceConfig.worker_timeout_s,
                   help="a worker silent this long is dead and its tasks requeued")
    p.add_argument("--max-connections-per-host", type=int, default=DEFAULT_MAX_CONNECTIONS_PER_HOST,
                   help="connections one client address may hold open at once (of 256)")
    p.add_argument("--job-idle-s", type=float, default=ServiceConfig.job_idle_s,
                   help="a file job no job server has added to or taken from for this long is cancelled "
                        "(its receiver died): its tiles are freed")
    p.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
                   help="largest request body accepted")
    p.add_argument("--state-dir", default="",
                   help="keep accepted file-job tiles and stored results here (SQLite) so a restart loses none")
    p.add_argument("--rules", default="", help="alert rules file (TOML), e.g. examples/rules.toml")
    p.add_argument("--backend", choices=["builtin", "celery"], default="builtin",
                   help="who runs the tasks: pull workers (`python -m worker`) or Celery workers through Redis")
    p.add_argument("--redis", default="",
                   help="Redis URL for --backend celery (default: $FRAMEHIVE_REDIS, else "
                        f"{DEFAULT_REDIS}); put a password in $FRAMEHIVE_REDIS, not here, where ps shows it")
    p.add_argument("--celery-in-flight", type=int, default=16,
                   help="most tasks handed to Celery at once (bounds frame bytes in Redis and live latency)")
    p.add_argument("--visibility-s", type=float, default=DEFAULT_VISIBILITY_S,
                   help="Celery: a task whose worker died goes to another after this; use the workers' value")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be 0..65535, got {args.port}")
    if not 1 <= args.celery_in_flight <= 1024:
        p.error(f"--celery-in-flight must be 1..1024, got {args.celery_in_flight}")
    if args.visibility_s <= 0:
        p.error(f"--visibility-s must be > 0, got {args.visibility_s}")
    if args.backend == "builtin" and args.redis:
        p.error("--redis is only used with --backend celery")
    try:
        args.token = auth.load_token(args.token_file)
    except ConfigError as e:
        p.error(str(e))
    if not is_loopback(args.host) and args.token is None and not args.insecure:
        p.error(f"refusing to bind {args.host} without a token: anyone who reaches it could queue work and "
                f"read results. Put a token in a file (chmod 600) and pass --token-file, or set "
                f"${auth.TOKEN_ENV}; or pass --insecure on a network you trust")
    return args


def build_config(args: argparse.Namespace) -> ServiceConfig:
    """Turn flags into a validated ServiceConfig (ValueError names the bad setting)."""
    store = StoreConfig(lease_s=args.lease_s, max_attempts=args.max_attempts, max_worker_deaths=args.max_worker_deaths,
                        max_pending_per_port=args.max_pending_per_port, max_frame_age_s=args.max_frame_age_s,
                        results_per_port=args.results_per_port, max_bytes=int(args.max_queued_mb * 2**20))
    if args.worker_timeout_s <= 0:
        raise ValueError("worker_timeout_s must be > 0")
    rules = tuple(load_rules(args.rules)) if args.rules else ()
    if args.max_image_pixels < 1:
        raise ValueError("max_image_pixels must be >= 1")
    if args.job_idle_s <= 0:
        raise ValueError("job_idle_s must be > 0")
    return ServiceConfig(store=store, worker_timeout_s=args.worker_timeout_s, rules=rules,
                         max_image_pixels=args.max_image_pixels, job_idle_s=args.job_idle_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = build_config(args)
        redis = (args.redis or redis_url()) if args.backend == "celery" else ""
        if redis and not redis.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--redis must be a redis:// rediss:// or unix:// URL, got {redis!r}")
    except (ValueError, ConfigError, OSError) as e:
        print(f"python -m master: error: {e}", file=sys.stderr)
        return 2
    journal = None
    if args.state_dir:
        try:
            journal = SqliteJournal(Path(args.state_dir) / "master.sqlite3")
        except (OSError, sqlite3.Error) as e:
            print(f"python -m master: error: cannot use --state-dir {args.state_dir}: {e}", file=sys.stderr)
            return 2
    stop = stop_on_signals()
    service = MasterService(config, store=TaskStore(config.store, journal=journal))
    try:
        server = MasterHTTPServer((args.host, args.port), service,
                                  max_request_bytes=int(args.max_request_mb * 2**20), token=args.token,
                                  allowed_hosts=args.allowed_host,
                                  max_connections_per_host=args.max_connections_per_host)
    except OSError as e:
        print(f"python -m master: error: cannot listen on {args.host}:{args.port}: {e.strerror}", file=sys.stderr)
        return 1
    supervisor = Supervisor("master", stop)
    supervisor.add(service)  # the lease monitor (and webhooks): stopped last, after nothing can call it
    if args.backend == "celery":
        service.backend = supervisor.add(CeleryDispatcher(service, redis, in_flight=args.celery_in_flight,
                                                          visibility_s=args.visibility_s))
    supervisor.add(ServerThread(server, "http"))  # stopped first: no new requests while the rest winds down

    def ready() -> None:
        if config.rules:
            log.info("%d alert rule(s) loaded from %s", len(config.rules), args.rules)
        host, port = server.server_address[:2]
        log.info("master listening on http://%s:%d (XML-RPC at /RPC2), %s", host if ":" not in host else f"[{host}]",
                 port, "token required" if args.token else "no authentication")
    code = supervisor.run(ready=ready)
    if journal is not None:
        journal.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
