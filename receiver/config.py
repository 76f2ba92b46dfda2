"""The receiver's one configuration: frozen, checked once, built from flags (and, later, a config file)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from common import auth
from common.config import MasterLink, require_secret
from common.errors import ConfigError
from common.gating import GatePolicy
from common.imageinfo import MAX_IMAGE_PIXELS
from common.protocol import KEY_ENV
from common.runtime import is_loopback
from receiver.ingestcore import CORE_CHOICES
from receiver.udp import DEFAULT_RCVBUF_BYTES
from receiver.udp import MAX_THREADS as MAX_INGEST_THREADS

MAX_PORTS = 256


@dataclass(frozen=True)
class JobSettings:
    """The file-job server a receiver may run beside its cameras."""

    port: int
    host: str = "localhost"  # 127.0.0.1 and ::1; or :: for every address
    http_port: int = 0  # the preview; 0: off
    max_jobs: int = 8
    max_spool_bytes: int = 8 * 1024**3
    root: str = ""  # folder whose files clients may name (protocol file); "": none

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536 or not 0 <= self.http_port < 65536:
            raise ConfigError("jobs_port must be 1..65535 and jobs_http_port 0..65535")
        if self.max_jobs < 1 or self.max_spool_bytes <= 0:
            raise ConfigError("jobs_max must be >= 1 and jobs_max_spool_gb > 0")

    @property
    def preview_host(self) -> str:
        return "127.0.0.1" if self.host == "localhost" else self.host


@dataclass(frozen=True)
class ReceiverConfig:
    """Everything `python -m receiver` runs with."""

    master: MasterLink = field(default_factory=MasterLink)
    host: str = "127.0.0.1"
    ports: tuple[int, ...] = ()
    ports_text: str = ""  # as the user wrote them (5000-5003), for names and logs
    key: bytes | None = None  # datagrams and imagezmq requests must be signed with it
    insecure: bool = False
    default_pipeline: str = "person"
    pipelines: Mapping[int, str] = field(default_factory=dict)  # per port
    policies: Mapping[int, GatePolicy] = field(default_factory=dict)  # per port
    zmq_port: int = 0
    unix_sockets: Mapping[str, int] = field(default_factory=dict)  # socket path -> its camera port
    jobs: JobSettings | None = None
    backlog: int = 4
    max_image_pixels: int = MAX_IMAGE_PIXELS
    rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES
    ingest_core: str = "auto"  # UDP reassembly: auto (compiled when built), compiled, python (receiver.ingestcore)
    ingest_threads: int = 1  # UDP ingest threads, each with a socket of every port's SO_REUSEPORT group
    name: str = ""  # "": receiver@HOST:PORTS
    log_level: str = "INFO"
    watch: int = 0  # the config generation its ports came from (started by --name from the master's file); 0: flags

    def __post_init__(self) -> None:
        if len(self.ports) > MAX_PORTS or not all(0 < p < 65536 for p in self.ports):
            raise ConfigError(f"give at most {MAX_PORTS} ports, each 1..65535")
        if not self.ports and not self.zmq_port and not self.unix_sockets and self.jobs is None:
            raise ConfigError("--ports none leaves nothing to serve: add --zmq-port, --unix-socket or --jobs-port")
        unix_ports = list(self.unix_sockets.values())
        if len(set(unix_ports)) < len(unix_ports) or set(unix_ports) & set(self.ports):
            raise ConfigError("each --unix-socket needs a camera port of its own: not one in --ports, nor another's")
        if not all(0 < p < 65536 for p in unix_ports) or not all(self.unix_sockets):
            raise ConfigError("--unix-socket takes PATH=PORT with a port 1..65535")
        if not 0 <= self.zmq_port < 65536 or self.backlog < 1 or self.rcvbuf_bytes < 64 * 1024:
            raise ConfigError("--zmq-port must be 0..65535, --backlog >= 1, --rcvbuf-kb >= 64")
        if self.ingest_core not in CORE_CHOICES:
            raise ConfigError(f"--ingest-core must be one of {', '.join(CORE_CHOICES)}")
        if not 1 <= self.ingest_threads <= MAX_INGEST_THREADS:
            raise ConfigError(f"--ingest-threads must be 1..{MAX_INGEST_THREADS}")
        if self.max_image_pixels < 1:
            raise ConfigError("max_image_pixels must be >= 1")
        if len(self.name) > 64:
            raise ConfigError("a receiver name is at most 64 characters")
        jobs = self.jobs
        if (jobs is not None and jobs.host != "localhost" and not is_loopback(jobs.host) and not self.insecure
                and self.master.token is None):
            raise ConfigError(f"refusing to serve file jobs on {jobs.host} without a token: anyone could upload "
                              f"work and read results; give --token-file (or ${auth.TOKEN_ENV}), use localhost, or "
                              "pass --insecure on a network you trust")
        require_secret(self.host, self.key is not None, self.insecure,
                       f"refusing to listen on {self.host} without a datagram key: anyone on the network could "
                       f"inject frames; give --key-file (or ${KEY_ENV}), listen on 127.0.0.1, or pass --insecure "
                       "on a network you trust")

    @property
    def display_name(self) -> str:
        """The name reported to the master: --name, else receiver@HOST:PORTS (unique per host and ports)."""
        if self.name:
            return self.name
        ports = self.ports_text if self.ports else "-".join(
            f"{k}{v}" for k, v in (("zmq", self.zmq_port), ("unix", min(self.unix_sockets.values(), default=0)),
                                   ("jobs", self.jobs.port if self.jobs else 0)) if v)
        return f"receiver@{socket.gethostname()}:{ports}"[:64]
