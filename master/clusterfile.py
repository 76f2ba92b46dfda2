"""framehive.toml: the cluster described once (master, receivers, named cameras, rules), read by the
master and checked whole before anything uses it. Pure apart from reading the file; a source's
`${VAR}` and a camera's password file are left for its publisher, on its own host, to resolve.
Every error names the file, the line, the key and the reason (docs/CONFIG.md lists every key).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.gating import parse_policy
from common.pipeline import normalize_pipeline
from master.alerts.rules import Places, Rule, RulesError, parse_rules
from master.mqtt import config as mqtt_config
from master.tracking.lines import Line
from master.tracking.zones import Zone

CONFIG_ENV = "FRAMEHIVE_CONFIG"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
TRANSPORTS = ("udp", "zmq")
RTSP_TRANSPORTS = ("tcp", "udp")
MAX_CAMERAS = 256

MASTER_KEYS = {"host": str, "port": int, "token_file": str, "state_dir": str, "media_dir": str, "backend": str,
               "redis": str, "rules": str, "media_max_gb": (int, float), "media_keep_days": (int, float),
               "clip_pre_s": (int, float), "clip_post_s": (int, float), "clip_max_s": (int, float),
               "clip_boxes": bool}
RECEIVER_KEYS = {"host": str, "ports": (str, list), "zmq_port": int, "key_file": str, "jobs_port": int,
                 "insecure": bool, "master": str}
CAMERA_KEYS = {"source": (str, int), "fps": (int, float), "quality": int, "max_width": int, "receiver": str,
               "port": int, "transport": str, "pipeline": str, "detect": str, "enabled": bool, "host": str,
               "username": str, "password_file": str, "rtsp_transport": str, "lines": dict, "zones": dict,
               "master": str}
LINE_KEYS = {"a": list, "b": list, "directions": list, "labels": list}
ZONE_KEYS = {"points": list, "labels": list, "inertia": int}


@dataclass(frozen=True)
class ReceiverSpec:
    """One receiver: where it listens and the camera ports it may hand out."""

    name: str
    host: str = "127.0.0.1"
    ports: tuple[int, ...] = ()
    zmq_port: int = 0
    key_file: str = ""
    jobs_port: int = 0
    insecure: bool = False
    master: str = ""  # with several [masters.NAME]: the one it forwards to


@dataclass(frozen=True)
class CameraSpec:
    """One named camera: what its publisher reads and where its frames go."""

    name: str
    source: str
    receiver: str
    port: int
    fps: float = 0.0  # 0: the source's own rate
    quality: int = 80
    max_width: int = 0
    transport: str = "udp"
    pipeline: str = "person"
    detect: str = "every"
    enabled: bool = True
    host: str = ""  # the machine that publishes it ("": any; `framehive up` publishes it locally)
    username: str = ""
    password_file: str = ""  # read by the publisher, never sent in the clear by the master
    rtsp_transport: str = "tcp"
    lines: tuple[Line, ...] = ()  # counting lines across its frame
    zones: tuple[Zone, ...] = ()  # named polygons on its frame
    master: str = ""  # with several [masters.NAME]: the one that owns it (its receiver's)

    def to_wire(self, receiver: ReceiverSpec) -> dict[str, Any]:
        """What a publisher is told: its source and pace, and the receiver address to send to."""
        return {"name": self.name, "source": self.source, "fps": self.fps, "quality": self.quality,
                "max_width": self.max_width, "transport": self.transport, "port": self.port,
                "receiver_host": receiver.host, "receiver": receiver.name, "zmq_port": receiver.zmq_port,
                "enabled": self.enabled, "host": self.host, "username": self.username,
                "password_file": self.password_file, "rtsp_transport": self.rtsp_transport}


@dataclass(frozen=True)
class ClusterFile:
    """A checked framehive.toml."""

    path: str
    master: Mapping[str, Any] = field(default_factory=dict)
    receivers: Mapping[str, ReceiverSpec] = field(default_factory=dict)
    cameras: Mapping[str, CameraSpec] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    mqtt: Mapping[str, Any] = field(default_factory=dict)  # the [mqtt] table, checked (master/mqtt/config.py)
    masters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # [masters.NAME], when several

    def for_master(self, name: str) -> ClusterFile:
        """What master `name` of several runs: its own [masters.NAME] table as [master], its receivers and
        cameras, and the rules that watch any of them (ConfigError for a name the file does not have)."""
        if name not in self.masters:
            raise ConfigError(f"{self.path}: no master named {name!r}" +
                              (f" (masters: {', '.join(self.masters)})" if self.masters else
                               " (this file has one [master] table: run it without a name)"))
        cameras = {n: c for n, c in self.cameras.items() if c.master == name}
        # masters number their cameras apart (two may both have a port 5000): a rule follows camera names
        rules = tuple(dataclasses.replace(r, ports=tuple(sorted(cameras[n].port for n in r.cameras if n in cameras)),
                                          cameras=tuple(n for n in r.cameras if n in cameras)) if r.ports else r
                      for r in self.rules if not r.ports or any(n in cameras for n in r.cameras))
        return ClusterFile(self.path, dict(self.masters[name]),
                           {n: r for n, r in self.receivers.items() if r.master == name}, cameras, rules, self.mqtt,
                           {})

    def master_urls(self) -> dict[str, str]:
        """Each master's URL: the [master] table's as "", or every [masters.NAME]'s."""
        tables = self.masters or {"": self.master}
        return {name: _url(t) for name, t in tables.items()}

    @property
    def master_url(self) -> str:
        """Where a process on the master's host reaches it: its [master] address (loopback when it binds
        every address), in URL form."""
        return _url(self.master)

    def camera_names(self) -> dict[int, str]:
        """Port -> camera name, for every enabled camera."""
        return {c.port: c.name for c in self.cameras.values() if c.enabled}

    def receiver_view(self, name: str) -> dict[str, Any]:
        """What a receiver is told: its address and, per enabled camera port, the name, pipeline and policy."""
        spec = self.receivers[name]
        cams = [c for c in self.cameras.values() if c.receiver == name and c.enabled]
        return {"name": name, "host": spec.host, "zmq_port": spec.zmq_port, "jobs_port": spec.jobs_port,
                "ports": {str(c.port): {"camera": c.name, "pipeline": c.pipeline, "detect": c.detect} for c in cams}}


def _url(table: Mapping[str, Any]) -> str:
    host = table.get("host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{f'[{host}]' if ':' in host else host}:{table.get('port', 8000)}"


def load(path: str | Path, *, previous: ClusterFile | None = None) -> ClusterFile:
    """Read and check a cluster file. A camera without a `port` keeps the port it had in `previous`
    (a reload never moves a running camera), else takes the lowest free port of its receiver."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{name}: cannot read the config file: {e}") from e
    cluster = parse(text, name, previous=previous)
    base = Path(path).resolve().parent  # a file source is relative to the config file, not to a working directory
    cameras = {n: replace(c, source=str(base / c.source)) if _is_relative_file(c.source) else c
               for n, c in cluster.cameras.items()}
    return replace(cluster, cameras=cameras)


def _is_relative_file(source: str) -> bool:
    return not (source.isdigit() or source.startswith(("synthetic", "fifo:", "/")) or "://" in source)


def parse(text: str, path: str = "framehive.toml", *, previous: ClusterFile | None = None) -> ClusterFile:
    """Check the text of a cluster file (`path` names it in errors)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(f"{path}:{m.group(1) if m else 0}: invalid TOML: {e}") from e
    where = _Where(text, path)
    unknown = sorted(set(doc) - {"master", "masters", "receivers", "cameras", "rule", "mqtt"})
    if unknown:
        raise where.error([unknown[0]], None, "unknown section (expected [master] or [masters.NAME], "
                                              "[receivers.NAME], [cameras.NAME], [mqtt] and [[rule]])")
    master = _table(doc, "master", where)
    _check_keys(master, MASTER_KEYS, ["master"], where)
    masters = _named_tables(doc, "masters", where)
    if masters and master:
        raise where.error(["masters"], None, "give one [master] table, or several [masters.NAME], not both")
    for name, table in masters.items():
        _check_keys(table, MASTER_KEYS, ["masters", name], where)
    mqtt = _mqtt(_table(doc, "mqtt", where), where)
    receivers = {n: _receiver(n, t, where) for n, t in _named_tables(doc, "receivers", where).items()}
    if not receivers:
        receivers = {"local": ReceiverSpec("local", ports=tuple(range(5000, 5000 + 16)))}
    camera_tables = _named_tables(doc, "cameras", where)
    if masters:
        receivers, camera_tables = _assign_masters(masters, receivers, camera_tables, where)
    elif any(r.master for r in receivers.values()) or any("master" in t for t in camera_tables.values()):
        name = next((n for n, t in camera_tables.items() if "master" in t), None)
        path = ["cameras", name] if name else ["receivers", next(n for n, r in receivers.items() if r.master)]
        raise where.error(path, "master", "names a master, but the file has no [masters.NAME] tables")
    cameras = _cameras(camera_tables, receivers, previous, where)
    try:
        places = {c.name: Places(frozenset(z.name for z in c.zones), {ln.name: ln.directions for ln in c.lines})
                  for c in cameras.values()}
        rules = parse_rules(text, path, cameras={c.name: c.port for c in cameras.values()},
                            others=("master", "masters", "receivers", "cameras", "mqtt"), places=places,
                            by_name=bool(masters))
    except RulesError as e:
        raise ConfigError(str(e)) from e
    return ClusterFile(path, dict(master), receivers, cameras, tuple(rules), mqtt,
                       {n: dict(t) for n, t in masters.items()})


def _assign_masters(masters: Mapping[str, Any], receivers: dict[str, ReceiverSpec],
                    cameras: Mapping[str, dict[str, Any]], where: _Where
                    ) -> tuple[dict[str, ReceiverSpec], dict[str, dict[str, Any]]]:
    """Several masters: each receiver forwards to one (its `master`, or the only one); each camera is its
    receiver's master's, its own `master`'s, or, naming neither, goes to a master by a stable hash of
    its name (the same on every host and after every reload) and to that master's first receiver."""
    names = sorted(masters)
    out = {}
    for rname, spec in receivers.items():
        owner = spec.master or (names[0] if len(names) == 1 else "")
        if not owner:
            raise where.error(["receivers", rname], None, f"say which master it forwards to: master = one of "
                                                          f"{', '.join(names)}")
        if owner not in masters:
            raise where.error(["receivers", rname], "master",
                              f"no master named {owner!r} (masters: {', '.join(names)})")
        out[rname] = dataclasses.replace(spec, master=owner)
    tables = {}
    for cname, table in cameras.items():
        table = dict(table)
        wanted = table.get("master")
        if wanted is not None and wanted not in masters:
            raise where.error(["cameras", cname], "master", f"no master named {wanted!r} (masters: {', '.join(names)})")
        receiver = table.get("receiver")
        if receiver is not None and receiver in out:
            if wanted is not None and out[receiver].master != wanted:
                raise where.error(["cameras", cname], "master", f"receiver {receiver!r} forwards to master "
                                                                f"{out[receiver].master!r}, not {wanted!r}")
        elif receiver is None:
            owner = wanted or names[zlib.crc32(cname.encode()) % len(names)]
            theirs = [n for n, r in out.items() if r.master == owner]
            if not theirs:
                raise where.error(["cameras", cname], "master" if wanted else None,
                                  f"master {owner!r} has no receiver: give one a `master = \"{owner}\"`")
            table["receiver"] = theirs[0]
        tables[cname] = table
    return out, tables


def _mqtt(table: Mapping[str, Any], where: _Where) -> dict[str, Any]:
    """[mqtt]: the broker's URL and how to publish (docs/MQTT.md); every value checked here, with its line."""
    _check_keys(table, mqtt_config.FILE_KEYS, ["mqtt"], where)
    if table and "url" not in table:
        raise where.error(["mqtt"], None, "missing required key 'url' (mqtt://HOST[:PORT] or mqtts://HOST[:PORT])")
    for key, value in table.items():
        reason = mqtt_config.problem(key, value)
        if reason:
            raise where.error(["mqtt"], key, reason)
    if bool(table.get("cert_file")) != bool(table.get("key_file")):
        raise where.error(["mqtt"], "cert_file" if table.get("cert_file") else "key_file",
                          "cert_file and key_file go together (a client certificate and its key)")
    if table.get("password_file") and not table.get("username"):
        raise where.error(["mqtt"], "password_file", "needs a username")
    return dict(table)


class _Where:
    """Finds the line of a table or a key in the file's text, for error messages."""

    def __init__(self, text: str, path: str) -> None:
        self.lines, self.path = text.splitlines(), path

    def line(self, table: list[str], key: str | None) -> int:
        header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(
            rf"(?:{re.escape(p)}|\"{re.escape(p)}\")" for p in table) + r"\s*[\].]")
        start = next((i for i, line in enumerate(self.lines) if header.match(line)), None)
        if start is None:
            return 0
        if key is None:
            return start + 1
        for i in range(start + 1, len(self.lines)):
            if re.match(r"^\s*\[", self.lines[i]):
                break
            if re.match(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=", self.lines[i]):
                return i + 1
        return start + 1

    def error(self, table: list[str], key: str | None, reason: str) -> ConfigError:
        what = ".".join(table) + (f".{key}" if key else "")
        return ConfigError(f"{self.path}:{self.line(table, key)}: {what}: {reason}")


def _table(doc: Mapping[str, Any], name: str, where: _Where) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise where.error([name], None, "must be a table")
    return value


def _named_tables(doc: Mapping[str, Any], section: str, where: _Where) -> dict[str, dict[str, Any]]:
    tables = _table(doc, section, where)
    for name, table in tables.items():
        if not NAME_RE.match(name):
            raise where.error([section, name], None, "a name is 1..48 lowercase letters, digits, - and _, "
                                                     "starting with a letter or digit")
        if not isinstance(table, dict):
            raise where.error([section, name], None, "must be a table")
    return tables


def _check_keys(table: Mapping[str, Any], known: Mapping[str, Any], path: list[str], where: _Where) -> None:
    for key, value in table.items():
        if key not in known:
            raise where.error(path, key, f"unknown key (known: {', '.join(known)})")
        kinds = known[key] if isinstance(known[key], tuple) else (known[key],)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            words = {str: "a string", bool: "true or false", list: "a list", dict: "a table"}
            names = " or ".join("a number" if k in (int, float) else words[k] for k in kinds)
            raise where.error(path, key, f"must be {names}, got {value!r:.60}")


def _receiver(name: str, table: Mapping[str, Any], where: _Where) -> ReceiverSpec:
    path = ["receivers", name]
    _check_keys(table, RECEIVER_KEYS, path, where)
    ports = _ports(table.get("ports", "5000-5015"), path, where)
    for key in ("zmq_port", "jobs_port"):
        if not 0 <= table.get(key, 0) <= 65535:
            raise where.error(path, key, "must be 0..65535")
    return ReceiverSpec(name, host=table.get("host", "127.0.0.1"), ports=ports, zmq_port=table.get("zmq_port", 0),
                        key_file=table.get("key_file", ""), jobs_port=table.get("jobs_port", 0),
                        insecure=table.get("insecure", False), master=table.get("master", ""))


def _ports(value: Any, path: list[str], where: _Where) -> tuple[int, ...]:
    """'5000-5011', '5000,5002' or [5000, 5001] -> sorted ports."""
    items = value if isinstance(value, list) else str(value).split(",")
    ports: set[int] = set()
    for item in items:
        lo, _, hi = str(item).strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise where.error(path, "ports", f"bad port {item!r}: use 5000-5011, 5000,5001 or [5000, 5001]")
        a, b = int(lo), int(hi or lo)
        if not 0 < a <= b < 65536 or b - a >= MAX_CAMERAS:
            raise where.error(path, "ports", f"bad port range {item!r}: 1..65535, low to high, at most "
                                             f"{MAX_CAMERAS} ports")
        ports.update(range(a, b + 1))
    if not ports:
        raise where.error(path, "ports", "give at least one port")
    return tuple(sorted(ports))


def _cameras(tables: Mapping[str, dict[str, Any]], receivers: Mapping[str, ReceiverSpec],
             previous: ClusterFile | None, where: _Where) -> dict[str, CameraSpec]:
    """Each camera with its port: a master files results by port, so ports are unique per master (two
    masters may each have a camera on 5000, on their own receivers' hosts)."""
    if len(tables) > MAX_CAMERAS:
        raise where.error(["cameras"], None, f"at most {MAX_CAMERAS} cameras")
    taken: dict[str, dict[int, str]] = {}  # master ("" with one) -> port -> camera

    def receiver_of(table: Mapping[str, Any]) -> ReceiverSpec:
        return receivers[table.get("receiver") or next(iter(receivers))]

    for name, table in tables.items():  # explicit ports first: they are the user's
        _check_camera(name, table, receivers, where)
        if "port" in table:
            port, mine = table["port"], taken.setdefault(receiver_of(table).master, {})
            if port in mine:
                raise where.error(["cameras", name], "port", f"port {port} is taken by camera {mine[port]!r}")
            mine[port] = name
    cameras = {}
    for name, table in tables.items():
        spec = receiver_of(table)
        mine = taken.setdefault(spec.master, {})
        port = table.get("port") or _keep_or_assign(name, spec, previous, mine, where)
        mine[port] = name
        cameras[name] = dataclasses.replace(_camera(name, table, spec.name, port, where), master=spec.master)
    return cameras


def _check_camera(name: str, table: Mapping[str, Any], receivers: Mapping[str, ReceiverSpec], where: _Where) -> None:
    path = ["cameras", name]
    _check_keys(table, CAMERA_KEYS, path, where)
    if "source" not in table:
        raise where.error(path, None, "missing required key 'source' (a camera index, file, rtsp:// or http:// "
                                      "URL, synthetic, or fifo:PATH)")
    receiver = table.get("receiver")
    if receiver is None and len(receivers) > 1:
        raise where.error(path, None, f"say which receiver: {', '.join(receivers)}")
    if receiver is not None and receiver not in receivers:
        raise where.error(path, "receiver", f"no receiver named {receiver!r} (receivers: {', '.join(receivers)})")
    spec = receivers[receiver or next(iter(receivers))]
    if "port" in table and table["port"] not in spec.ports:
        raise where.error(path, "port", f"port {table['port']} is not one of receiver {spec.name!r}'s ports "
                                        f"({spec.ports[0]}-{spec.ports[-1]})")


def _line(camera: str, name: str, table: Any, where: _Where) -> Line:
    """[cameras.NAME.lines.LINE]: a = [x, y], b = [x, y] in frame fractions, directions, labels."""
    path = ["cameras", camera, "lines", name]
    if not NAME_RE.match(name) or not isinstance(table, dict):
        raise where.error(path, None, "a line is a table named with lowercase letters, digits, - and _")
    _check_keys(table, LINE_KEYS, path, where)
    for key in ("a", "b"):
        point = table.get(key)
        if not (isinstance(point, list) and len(point) == 2 and all(isinstance(v, (int, float))
                                                                    and not isinstance(v, bool) for v in point)):
            raise where.error(path, key, "must be a point [x, y] in fractions of the frame (0..1)")
    try:
        return Line(name, tuple(table["a"]), tuple(table["b"]), tuple(table.get("directions", ("in", "out"))),
                    tuple(table.get("labels", ())))
    except (ValueError, TypeError) as e:
        raise where.error(path, None, str(e)) from None


def _zone(camera: str, name: str, table: Any, where: _Where) -> Zone:
    """[cameras.NAME.zones.ZONE]: points = [[x, y], ...] in frame fractions, labels, inertia."""
    path = ["cameras", camera, "zones", name]
    if not NAME_RE.match(name) or not isinstance(table, dict):
        raise where.error(path, None, "a zone is a table named with lowercase letters, digits, - and _")
    _check_keys(table, ZONE_KEYS, path, where)
    points = table.get("points")
    if not (isinstance(points, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in p) for p in points)):
        raise where.error(path, "points", "must be a list of points [x, y] in fractions of the frame (0..1)")
    labels = table.get("labels", [])
    if not all(isinstance(v, str) and v for v in labels):
        raise where.error(path, "labels", "must be a list of labels, e.g. [\"person\", \"car\"]")
    try:
        return Zone(name, tuple((float(x), float(y)) for x, y in points), tuple(labels), table.get("inertia", 3))
    except ValueError as e:
        raise where.error(path, None, str(e)) from None


def _keep_or_assign(name: str, receiver: ReceiverSpec, previous: ClusterFile | None, taken: Mapping[int, str],
                    where: _Where) -> int:
    old = previous.cameras.get(name) if previous else None
    if old is not None and old.receiver == receiver.name and old.port not in taken:
        return old.port
    held = {c.port for c in previous.cameras.values() if c.name != name and c.master == receiver.master} \
        if previous else set()
    free = [p for p in receiver.ports if p not in taken and p not in held] or \
        [p for p in receiver.ports if p not in taken]
    if not free:
        raise where.error(["cameras", name], None, f"receiver {receiver.name!r} has no free port left "
                                                   f"({len(receiver.ports)} ports)")
    return free[0]


def _camera(name: str, table: Mapping[str, Any], receiver: str, port: int, where: _Where) -> CameraSpec:
    path = ["cameras", name]
    fps = table.get("fps", 0.0)
    if not (math.isfinite(fps) and 0 <= fps <= 120):
        raise where.error(path, "fps", f"must be 0..120 (0: the source's own rate), got {fps!r}")
    if not 1 <= table.get("quality", 80) <= 100:
        raise where.error(path, "quality", "must be 1..100")
    if not 0 <= table.get("max_width", 0) <= 8192:
        raise where.error(path, "max_width", "must be 0..8192 (0: never downscale)")
    for key, allowed in (("transport", TRANSPORTS), ("rtsp_transport", RTSP_TRANSPORTS)):
        if table.get(key, allowed[0]) not in allowed:
            raise where.error(path, key, f"must be one of {', '.join(allowed)}, got {table[key]!r}")
    try:
        pipeline = normalize_pipeline(table.get("pipeline", "person"))
    except ConfigError as e:
        raise where.error(path, "pipeline", str(e)) from None
    try:
        parse_policy(table.get("detect", "every"))
    except ConfigError as e:
        raise where.error(path, "detect", str(e)) from None
    lines = tuple(_line(name, n, t, where) for n, t in table.get("lines", {}).items())
    zones = tuple(_zone(name, n, t, where) for n, t in table.get("zones", {}).items())
    return CameraSpec(name, source=str(table["source"]), lines=lines, zones=zones,
                      receiver=receiver, port=port, fps=float(fps), quality=table.get("quality", 80),
                      max_width=table.get("max_width", 0), transport=table.get("transport", "udp"),
                      pipeline=pipeline, detect=table.get("detect", "every"), enabled=table.get("enabled", True),
                      host=table.get("host", ""), username=table.get("username", ""),
                      password_file=table.get("password_file", ""),
                      rtsp_transport=table.get("rtsp_transport", "tcp"))
