"""The master's one configuration: frozen, checked once, built from flags (and, later, a config file)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import auth
from common.celeryconf import DEFAULT_VISIBILITY_S, redis_url
from common.config import build, require_secret
from common.errors import ConfigError
from master.alerts.rules import load_rules
from master.api.httpserver import DEFAULT_MAX_CONNECTIONS_PER_HOST, DEFAULT_MAX_REQUEST_BYTES
from master.clusterfile import CONFIG_ENV
from master.clusterfile import load as load_file
from master.core.service import ServiceConfig
from master.core.store import StoreConfig
from master.media.clips import ClipConfig
from master.mqtt import config as mqtt_config
from master.mqtt.config import MqttSettings

BACKENDS = ("builtin", "celery")


@dataclass(frozen=True)
class MasterConfig:
    """Everything `python -m master` runs with."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # every client must present it; None: no authentication (loopback only)
    allowed_hosts: tuple[str, ...] = ()
    insecure: bool = False
    service: ServiceConfig = field(default_factory=ServiceConfig)
    rules_path: str = ""
    state_dir: Path | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_connections_per_host: int = DEFAULT_MAX_CONNECTIONS_PER_HOST
    backend: str = "builtin"
    redis_url: str = ""  # with the celery backend
    celery_in_flight: int = 16
    visibility_s: float = DEFAULT_VISIBILITY_S
    log_level: str = "INFO"
    config_path: str = ""  # framehive.toml: cameras, receivers and rules, reloaded on SIGHUP
    name: str = ""  # which of the file's [masters.NAME] this is ("": its one [master])
    media_dir: Path | None = None  # event clips and snapshots (default: STATE_DIR/media with a state dir)
    media_max_bytes: int = 2 * 2**30
    media_keep_s: float = 7 * 86400.0
    clip: ClipConfig = field(default_factory=ClipConfig)
    mqtt: MqttSettings | None = None  # publish to an MQTT broker ([mqtt] or --mqtt); None: no MQTT at all

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not 1 <= self.celery_in_flight <= 1024:
            raise ConfigError(f"celery_in_flight must be 1..1024, got {self.celery_in_flight}")
        if self.visibility_s <= 0:
            raise ConfigError(f"visibility_s must be > 0, got {self.visibility_s}")
        if self.backend == "builtin" and self.redis_url:
            raise ConfigError("redis is only used with the celery backend")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"redis must be a redis:// rediss:// or unix:// URL, got {self.redis_url!r}")
        if self.media_max_bytes < 0 or self.media_keep_s <= 0:
            raise ConfigError("media_max_gb must be >= 0 and media_keep_days > 0")
        if self.max_request_bytes < 1024 or self.max_connections_per_host < 1:
            raise ConfigError("max_request_mb must allow 1 KiB and max_connections_per_host must be >= 1")
        require_secret(self.host, self.token is not None, self.insecure,
                       f"refusing to bind {self.host} without a token: anyone who reaches it could queue work and "
                       f"read results. Put a token in a file (chmod 600) and pass --token-file, or set "
                       f"${auth.TOKEN_ENV}; or pass --insecure on a network you trust")


def service_config(values: Mapping[str, Any]) -> ServiceConfig:
    """The service's timings and limits from setting names (lease_s, max_attempts, worker_timeout_s,
    rules, ...); ValueError or ConfigError names the bad one."""
    store = StoreConfig(lease_s=values["lease_s"], max_attempts=values["max_attempts"],
                        max_worker_deaths=values["max_worker_deaths"],
                        max_pending_per_port=values["max_pending_per_port"],
                        max_frame_age_s=values["max_frame_age_s"], results_per_port=values["results_per_port"],
                        max_bytes=int(values["max_queued_mb"] * 2**20))
    for name in ("worker_timeout_s", "job_idle_s"):
        if values[name] <= 0:
            raise ValueError(f"{name} must be > 0")
    if values["max_image_pixels"] < 1:
        raise ValueError("max_image_pixels must be >= 1")
    rules = tuple(load_rules(values["rules"])) if values["rules"] else ()
    return ServiceConfig(store=store, worker_timeout_s=values["worker_timeout_s"], rules=rules,
                         max_image_pixels=values["max_image_pixels"], job_idle_s=values["job_idle_s"])


FILE_KEYS = {"host": "host", "port": "port", "token_file": "token_file", "state_dir": "state_dir",
             "backend": "backend", "redis": "redis", "rules": "rules", "media_dir": "media_dir",
             "media_max_gb": "media_max_gb", "media_keep_days": "media_keep_days", "clip_pre_s": "clip_pre_s",
             "clip_post_s": "clip_post_s", "clip_max_s": "clip_max_s", "clip_boxes": "clip_boxes"}  # key -> dest


# [mqtt] key -> the flag's dest (`--mqtt URL`, `--mqtt-prefix`, ...)
MQTT_FLAGS = {key: "mqtt" if key == "url" else f"mqtt_{key}" for key in mqtt_config.FILE_KEYS}


def mqtt_from(args: Any, table: Mapping[str, Any], base: Path | None) -> MqttSettings | None:
    """The MQTT settings from the --mqtt flags (each defaults to None: a flag given wins) and the [mqtt]
    table (paths relative to the config file's folder); None when neither names a broker."""
    values: dict[str, Any] = {}
    for key, dest in MQTT_FLAGS.items():
        flag = getattr(args, dest, None)
        if flag is not None:
            values[key] = flag
        elif key in table:
            value = table[key]
            if key in mqtt_config.PATH_KEYS and value and base is not None and not Path(value).is_absolute():
                value = str(base / value)
            values[key] = value
    if not values.get("url"):
        return None
    return mqtt_config.settings(values, master_host=args.host, master_port=args.port)


def from_flags(args: Any, env: Mapping[str, str] = os.environ,
               defaults: Mapping[str, Any] | None = None) -> MasterConfig:
    """The master's config from parsed flags, the config file's [master] table (a flag given on the
    command line wins) and the environment (the token file or $FRAMEHIVE_TOKEN, $FRAMEHIVE_REDIS for
    the celery backend); ConfigError says what is wrong."""
    path = args.config or env.get(CONFIG_ENV, "")
    name = getattr(args, "name", "") or ""
    mqtt_table: Mapping[str, Any] = {}
    if path:
        cluster = load_file(path)
        if cluster.masters and not name:
            raise ConfigError(f"{path} has several masters ({', '.join(cluster.masters)}): say which this is "
                              f"with --name")
        table = cluster.for_master(name).master if name else cluster.master
        mqtt_table = cluster.mqtt
        for key, dest in FILE_KEYS.items():
            if key in table and (defaults is None or getattr(args, dest) == defaults.get(dest)):
                setattr(args, dest, table[key])
    a = vars(args)
    try:
        service = service_config(a)
    except (ValueError, OSError) as e:
        raise ConfigError(str(e)) from e
    redis = (args.redis or redis_url(env)) if args.backend == "celery" else args.redis
    try:
        clip = ClipConfig(pre_s=args.clip_pre_s, post_s=args.clip_post_s, max_s=args.clip_max_s, draw=args.clip_boxes)
    except ValueError as e:
        raise ConfigError(f"clip lengths: {e}") from e
    media = args.media_dir or (str(Path(args.state_dir) / "media") if args.state_dir else "")
    return build(MasterConfig, {
        "host": args.host, "port": args.port, "token": auth.load_token(args.token_file or None, env),
        "allowed_hosts": tuple(args.allowed_host), "insecure": args.insecure, "service": service,
        "rules_path": args.rules, "state_dir": Path(args.state_dir) if args.state_dir else None,
        "max_request_bytes": int(args.max_request_mb * 2**20),
        "max_connections_per_host": args.max_connections_per_host, "backend": args.backend, "redis_url": redis,
        "celery_in_flight": args.celery_in_flight, "visibility_s": args.visibility_s, "log_level": args.log_level,
        "config_path": path, "name": name, "media_dir": Path(media) if media else None,
        "media_max_bytes": int(args.media_max_gb * 2**30), "media_keep_s": args.media_keep_days * 86400.0,
        "clip": clip,
        "mqtt": mqtt_from(args, mqtt_table, Path(path).resolve().parent if path else None),
    })
