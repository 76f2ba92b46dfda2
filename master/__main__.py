"""`python -m master`: the coordinator (XML-RPC + binary task API + status on one HTTP port)."""

from __future__ import annotations

# isort: off
import common.early  # noqa: F401 - first of all: a SIGTERM while the rest imports exits 0
# isort: on
import argparse
import logging
import signal
import sqlite3
import sys
import threading

from common.celeryconf import DEFAULT_REDIS, DEFAULT_VISIBILITY_S
from common.cli import DefaultsHelpFormatter
from common.config import config_or_exit
from common.errors import ConfigError
from common.imageinfo import MAX_IMAGE_PIXELS
from common.runtime import ServerThread, Supervisor, setup_logging, stop_on_signals
from master.api.httpserver import DEFAULT_MAX_CONNECTIONS_PER_HOST, DEFAULT_MAX_REQUEST_BYTES, MasterHTTPServer
from master.backends.celery import CeleryDispatcher
from master.clusterfile import CONFIG_ENV
from master.config import from_flags
from master.core.cameras import Cameras
from master.core.journal import SqliteJournal
from master.core.service import MasterService, ServiceConfig
from master.core.store import StoreConfig, TaskStore
from master.media.clips import ClipConfig
from master.media.events import EventMedia
from master.mqtt import bridge as mqtt_bridge

log = logging.getLogger("master")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m master", description=__doc__,
                                formatter_class=DefaultsHelpFormatter)
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
    p.add_argument("--name", default="",
                   help="with a config file of several [masters.NAME]: which this is (it runs that master's "
                        "receivers' cameras)")
    p.add_argument("--media-dir", default="",
                   help="where event clips (H.264 MP4) and snapshots are kept (default: STATE_DIR/media with "
                        "--state-dir; without either, events have snapshots but no clips)")
    p.add_argument("--media-max-gb", type=float, default=2.0,
                   help="the media directory's size limit: the oldest clips go first beyond it")
    p.add_argument("--media-keep-days", type=float, default=7.0, help="clips and snapshots older than this go")
    p.add_argument("--clip-pre-s", type=float, default=ClipConfig.pre_s, help="seconds of video before an event")
    p.add_argument("--clip-post-s", type=float, default=ClipConfig.post_s, help="seconds of video after it ends")
    p.add_argument("--clip-max-s", type=float, default=ClipConfig.max_s, help="the longest clip, pre-roll included")
    p.add_argument("--clip-boxes", action=argparse.BooleanOptionalAction, default=True,
                   help="draw boxes and track ids on clips")
    _mqtt_flags(p)
    p.add_argument("--config", default="",
                   help=f"the cluster file (framehive.toml): named cameras, receivers, rules; its [master] table "
                        f"sets what no flag gives; SIGHUP re-reads it (default: ${CONFIG_ENV})")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="how much to log")
    return p.parse_args(argv)

def _mqtt_flags(p: argparse.ArgumentParser) -> None:
    """--mqtt and friends: each fills in its [mqtt] key of the config file (a flag given wins); docs/MQTT.md."""
    g = p.add_argument_group("MQTT (docs/MQTT.md; or the [mqtt] table of --config)")
    g.add_argument("--mqtt", metavar="URL", help="publish events, counts and health to this broker: "
                                                 "mqtt://HOST[:1883] or mqtts://HOST[:8883]")
    g.add_argument("--mqtt-prefix", metavar="PREFIX", help="first topic level(s), default framehive")
    g.add_argument("--mqtt-client-id", metavar="ID", help="default framehive-<node id>; keep it stable: the broker "
                                                         "keeps a session per client id")
    g.add_argument("--mqtt-node-id", metavar="ID", help="the cluster's part of Home Assistant unique ids, default "
                                                       "from --host and --port")
    g.add_argument("--mqtt-username", metavar="USER")
    g.add_argument("--mqtt-password-file", metavar="FILE", help="file holding the broker password (never a flag)")
    g.add_argument("--mqtt-ca-file", metavar="FILE", help="TLS: the CA of the broker's certificate")
    g.add_argument("--mqtt-cert-file", metavar="FILE", help="TLS: client certificate")
    g.add_argument("--mqtt-key-file", metavar="FILE", help="TLS: client certificate's key")
    g.add_argument("--mqtt-qos", type=int, choices=[0, 1], help="QoS of state and stats messages, default 1 "
                                                                "(events are always QoS 1)")
    g.add_argument("--mqtt-retain", action=argparse.BooleanOptionalAction, help="retain state topics, default on")
    g.add_argument("--mqtt-discovery", action=argparse.BooleanOptionalAction,
                   help="Home Assistant discovery configs, default on")
    g.add_argument("--mqtt-discovery-prefix", metavar="PREFIX", help="default homeassistant")
    g.add_argument("--mqtt-commands", action=argparse.BooleanOptionalAction,
                   help="obey detect/set and reload/set commands, default off (restrict them with broker ACLs)")
    g.add_argument("--mqtt-stats-interval-s", type=float, metavar="S", help="health JSON period, default 10")
    g.add_argument("--mqtt-keepalive-s", type=int, metavar="S", help="MQTT keepalive, default 30")
    g.add_argument("--mqtt-max-queued", type=int, metavar="N",
                   help="events waiting for the broker, default 10000; beyond, the oldest are dropped")
    g.add_argument("--mqtt-max-queued-mb", type=float, metavar="MB", help="their bytes, default 32")


def main(argv: list[str] | None = None) -> int:
    config = config_or_exit("python -m master", lambda: from_flags(parse_args(argv), defaults=vars(parse_args([]))))
    setup_logging(config.log_level)
    journal = None
    if config.state_dir is not None:
        try:
            journal = SqliteJournal(config.state_dir / "master.sqlite3")
        except (OSError, sqlite3.Error) as e:
            print(f"python -m master: error: cannot use --state-dir {config.state_dir}: {e}", file=sys.stderr)
            return 2
    stop = stop_on_signals()
    service = MasterService(config.service, store=TaskStore(config.service.store, journal=journal))
    if config.media_dir is not None:
        service.clips = EventMedia(config.media_dir, service.clip_done, clip=config.clip,
                                   max_bytes=config.media_max_bytes, max_age_s=config.media_keep_s,
                                   max_pixels=config.service.max_image_pixels)
    try:
        server = MasterHTTPServer((config.host, config.port), service, max_request_bytes=config.max_request_bytes,
                                  token=config.token, allowed_hosts=list(config.allowed_hosts),
                                  max_connections_per_host=config.max_connections_per_host)
    except OSError as e:
        print(f"python -m master: error: cannot listen on {config.host}:{config.port}: {e.strerror}",
              file=sys.stderr)
        return 1
    if config.config_path:
        try:
            service.cameras = Cameras(config.config_path, service.apply_cluster, master=config.name)
        except ConfigError as e:
            print(f"python -m master: error: {e}", file=sys.stderr)
            return 2
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=service.cameras.reload, name="reload").start())
    supervisor = Supervisor("master", stop)
    supervisor.add(service)  # the lease monitor (and webhooks): stopped last, after nothing can call it
    if config.backend == "celery":
        service.backend = supervisor.add(CeleryDispatcher(service, config.redis_url, in_flight=config.celery_in_flight,
                                                          visibility_s=config.visibility_s))
    if config.mqtt is not None:  # the connection, then the bridge: the bridge stops first, its last messages go out
        client, bridge = mqtt_bridge.build(service, config.mqtt)
        service.stats_providers["mqtt"] = client.stats  # in get_stats, /api/v1/stats and the dashboard's source
        for part in (client, bridge):
            supervisor.add(part, join_timeout_s=8.0)
    supervisor.add(ServerThread(server, "http"))  # stopped first: no new requests while the rest winds down

    def ready() -> None:
        if config.service.rules:
            log.info("%d alert rule(s) loaded from %s", len(config.service.rules), config.rules_path)
        host, port = server.server_address[:2]
        log.info("master listening on http://%s:%d (XML-RPC at /RPC2), %s", host if ":" not in host else f"[{host}]",
                 port, "token required" if config.token else "no authentication")
    code = supervisor.run(ready=ready)
    if journal is not None:
        journal.close()
    return code

if __name__ == "__main__":
    sys.exit(main())
