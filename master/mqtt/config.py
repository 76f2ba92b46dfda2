"""The master's MQTT settings: the [mqtt] table of framehive.toml or the --mqtt flags, checked once.

`problem(key, value)` checks one setting and says what is wrong with it, so the config file's parser
can name the line (master/clusterfile.py) and the flags get the same words. The password is read
from a file when the settings are built: it never appears on a command line, in a log line or in a
repr.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.errors import ConfigError
from master.mqtt.outbox import BACKOFF_CAP_S, MAX_MESSAGES
from master.mqtt.topics import check_prefix, default_node_id, segment

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
NUMBER = (int, float)
# [mqtt] key -> the TOML types it takes
FILE_KEYS: dict[str, Any] = {
    "url": str, "client_id": str, "node_id": str, "prefix": str, "discovery": bool, "discovery_prefix": str,
    "username": str, "password_file": str, "ca_file": str, "cert_file": str, "key_file": str, "qos": int,
    "retain": bool, "commands": bool, "stats_interval_s": NUMBER, "keepalive_s": int, "max_queued": int,
    "max_queued_mb": NUMBER,
}
PATH_KEYS = ("password_file", "ca_file", "cert_file", "key_file")


@dataclass(frozen=True)
class MqttSettings:
    """How the master talks to its MQTT broker (docs/MQTT.md)."""

    url: str  # mqtt://host[:1883] or mqtts://host[:8883]
    client_id: str = ""  # "": framehive-<node_id>; kept across restarts so the broker keeps the session
    node_id: str = ""  # "": from the master's address and port; the cluster's part of every unique id
    prefix: str = "framehive"
    discovery: bool = True  # Home Assistant discovery configs
    discovery_prefix: str = "homeassistant"
    username: str = ""
    password: str = field(default="", repr=False)  # read from password_file
    password_file: str = ""
    ca_file: str = ""  # TLS: the CA that signed the broker's certificate ("" with mqtts: the system's CAs)
    cert_file: str = ""  # TLS client certificate and its key, for brokers that ask for one
    key_file: str = ""
    qos: int = 1  # of state, stats and discovery messages (events are always QoS 1)
    retain: bool = True  # state topics retained (discovery configs and availability always are)
    commands: bool = False  # subscribe to detect/set and reload/set
    stats_interval_s: float = 10.0
    keepalive_s: int = 30
    max_queued: int = MAX_MESSAGES  # events waiting for the broker; beyond, the oldest are dropped
    max_queued_mb: float = 32.0
    reconnect_max_s: float = BACKOFF_CAP_S

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in FILE_KEYS:
                reason = problem(f.name, getattr(self, f.name))
                if reason:
                    raise ConfigError(f"mqtt {f.name}: {reason}")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("mqtt cert_file and key_file go together (a client certificate and its key)")
        if self.password and not self.username:
            raise ConfigError("mqtt password_file needs a username")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or SCHEMES[parts.scheme]

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts" or bool(self.ca_file or self.cert_file)

    @property
    def where(self) -> str:
        """host:port, for log lines."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def problem(key: str, value: Any) -> str:
    """What is wrong with one [mqtt] setting ("" when nothing is)."""
    if key == "url":
        return _url_problem(value)
    if key in ("prefix", "discovery_prefix"):
        try:
            check_prefix(value, key)
        except ValueError as e:
            return str(e).removeprefix(f"{key} ")
        return ""
    if key == "qos" and value not in (0, 1):
        return "must be 0 or 1 (events are always sent with QoS 1)"
    if key == "client_id" and (len(value.encode()) > 128 or any(c in value for c in "+#/\x00")):
        return "must be at most 128 bytes without '+', '#', '/' or NUL"
    if key == "node_id" and value and segment(value) != value:
        return "must be lowercase letters, digits, - and _"
    if key == "stats_interval_s" and not (math.isfinite(value) and 1 <= value <= 3600):
        return "must be 1..3600 seconds"
    if key == "keepalive_s" and not 5 <= value <= 3600:
        return "must be 5..3600 seconds"
    if key == "max_queued" and not 1 <= value <= 1_000_000:
        return "must be 1..1000000 messages"
    if key == "max_queued_mb" and not (math.isfinite(value) and 0.01 <= value <= 4096):
        return "must be 0.01..4096 MiB"
    return ""


def _url_problem(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"not a URL: {e}"
    if parts.scheme not in SCHEMES or not parts.hostname:
        return f"must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}"
    if parts.username or parts.password:
        return "put the user in `username` and the password in a file named by `password_file`, not in the URL"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"must be mqtt://HOST[:PORT] (no path or query), got {url!r}"
    if port == 0:
        return "port must be 1..65535"
    return ""


def read_password(path: str) -> str:
    """The password in `path` (one line; surrounding whitespace dropped); ConfigError when unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"mqtt password_file {path}: cannot read it: {getattr(e, 'strerror', None) or e}") from e
    if not text or "\n" in text:
        raise ConfigError(f"mqtt password_file {path}: must hold the password on one line")
    return text


def settings(values: Mapping[str, Any], *, master_host: str, master_port: int,
             base: Path | None = None) -> MqttSettings:
    """Settings from [mqtt] keys and flags already merged (`values`, with a url); file paths relative
    to `base` (the config file's folder) when given, the password read, node and client ids
    defaulted from the master's address."""
    values = {k: v for k, v in values.items() if v is not None}
    for key in PATH_KEYS:
        if values.get(key) and base is not None and not Path(values[key]).is_absolute():
            values[key] = str(base / values[key])
    for key in ("ca_file", "cert_file", "key_file"):
        if values.get(key) and not Path(values[key]).is_file():
            raise ConfigError(f"mqtt {key}: no such file {values[key]}")
    if values.get("password_file"):
        values["password"] = read_password(values["password_file"])
    for key, value in values.items():
        reason = problem(key, value) if key in FILE_KEYS else ""
        if reason:
            raise ConfigError(f"mqtt {key}: {reason}")
    node = values.get("node_id") or default_node_id(master_host, master_port)
    values["node_id"] = node
    values["client_id"] = values.get("client_id") or f"framehive-{node}"
    try:
        return MqttSettings(**values)
    except TypeError as e:
        raise ConfigError(f"mqtt: {e}") from e
