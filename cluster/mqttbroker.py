"""A real mosquitto broker on a free loopback port, for the MQTT tests, bench and trying things out.

Its mosquitto.conf is written into its own folder: one listener on 127.0.0.1 (plain, or TLS with a
CA, a server certificate and, when asked, client certificates required), persistence on in that
folder (saved every second as well as at exit, so even a SIGKILL loses at most a second of session
state), and optionally a password file (made with `mosquitto_passwd -b`) and an ACL file. It can be
stopped (SIGTERM), killed (SIGKILL) and started again on the same port with the same persistence.
`make_certificates()` makes a CA and server and client certificates with the `openssl` command.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cluster import childserver
from cluster.local import free_port

SBIN = ("/usr/sbin", "/usr/local/sbin")


def _binary(name: str) -> str:
    found = shutil.which(name) or next((str(Path(d) / name) for d in SBIN if (Path(d) / name).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: run `make setup` (it installs Debian's mosquitto), "
                                f"or `apt-get install mosquitto`")
    return found


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and certificates it signed: the broker's (for 127.0.0.1 and localhost) and a client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(folder: Path, days: int = 2) -> TlsFiles:
    """Make a CA, a server certificate for 127.0.0.1/localhost and a client certificate in `folder`
    (P-256 keys, with the `openssl` command)."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl = _binary("openssl")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=30)

    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
        "-subj", "/CN=framehive test CA")
    for name, usage, alt in (("server", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
                             ("client", "clientAuth", "")):
        (folder / f"{name}.ext").write_text(f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                                            f"extendedKeyUsage={usage}\n{alt}")
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=framehive test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", str(days), "-extfile", f"{name}.ext")
    return TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "client.crt",
                    folder / "client.key")


class MosquittoBroker:
    """`mosquitto` bound to 127.0.0.1 on its own port; a context manager."""

    def __init__(self, port: int = 0, *, folder: Path | None = None, users: Mapping[str, str] | None = None,
                 acl: str = "", tls: TlsFiles | None = None, require_certificate: bool = False) -> None:
        self.binary = _binary("mosquitto")
        self.port = port or free_port()
        self.folder = Path(folder or tempfile.mkdtemp(prefix="framehive-mosquitto-"))
        self.users, self.acl, self.tls, self.require_certificate = dict(users or {}), acl, tls, require_certificate
        self.proc: subprocess.Popen | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "mosquitto.log"

    def _write_config(self) -> None:
        (self.folder / "db").mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "persistence true",
                 f"persistence_location {self.folder / 'db'}/", "autosave_interval 1",
                 "max_queued_messages 100000", "log_dest stdout", "log_type error", "log_type warning",
                 "log_type notice", "log_type information", "connection_messages true",
                 f"user {getpass.getuser()}"]  # as root, mosquitto would otherwise become `mosquitto`
        if self.users:
            passwd = self.folder / "passwd"
            passwd.write_text("")
            for user, password in self.users.items():
                subprocess.run([_binary("mosquitto_passwd"), "-b", str(passwd), user, password], check=True,
                               capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl:
            (self.folder / "acl").write_text(self.acl)
            lines.append(f"acl_file {self.folder / 'acl'}")
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}", f"keyfile {self.tls.server_key}",
                      f"require_certificate {'true' if self.require_certificate else 'false'}"]
        (self.folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        self.proc = childserver.start("mosquitto", [self.binary, "-c", str(self.folder / "mosquitto.conf")],
                                      self.log_path, self.accepts, timeout_s=timeout_s, log_tail=self.log_text)

    def accepts(self) -> bool:
        return childserver.accepts(self.port)

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence and exits), SIGKILL if it will not."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the broker dies at once, as in a crash (persistence as of its last autosave)."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        childserver.end(self.proc, sig)
        self.proc = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port with the same persistence."""
        self.kill() if kill else self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


def _main() -> None:  # pragma: no cover - for trying things by hand: python -m cluster.mqttbroker
    with MosquittoBroker() as broker:
        print(broker.url, flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    _main()
