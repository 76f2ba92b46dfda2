"""`python -m master.federation`: one dashboard, counts and results by camera name over several masters.

Read-only: it polls each master's dashboard and counts every second, serves them merged, and passes
pictures, snapshots and clips through. A master that stops answering loses only its own cameras,
which the page marks as unreachable; the others go on. Run one anywhere that reaches the masters.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from common import auth
from common.cli import DefaultsHelpFormatter
from common.config import config_or_exit, require_secret
from common.errors import ConfigError
from common.masterclient import parse_master_url
from common.runtime import ServerThread, Supervisor, setup_logging, stop_on_signals
from master.federation.server import Federation, FederationServer

log = logging.getLogger(__name__)
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m master.federation", description=__doc__,
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--masters", default="",
                   help="the masters, NAME=URL separated by commas, e.g. a=http://10.0.0.1:8000,b=http://10.0.0.2:8000")
    p.add_argument("--config", default="",
                   help="or the cluster file: its [masters.NAME] tables say where each master is")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8100, help="HTTP port (XML-RPC at /RPC2)")
    p.add_argument("--token-file", default="",
                   help=f"the cluster's token: presented to the masters, and asked of this server's clients "
                        f"(default: ${auth.TOKEN_ENV})")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="without a token, requests must name this machine in their Host header (localhost, "
                        "127.x, ::1); add another name you reach the view by (repeatable)")
    p.add_argument("--insecure", action="store_true", help="bind beyond loopback without a token")
    p.add_argument("--poll-s", type=float, default=1.0, help="how often each master is asked")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="how much to log")
    return p.parse_args(argv)


def masters_arg(text: str) -> list[tuple[str, str]]:
    """NAME=URL,NAME=URL -> [(name, url)]; ConfigError says which part is wrong."""
    out: list[tuple[str, str]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, url = part.partition("=")
        if not sep or not NAME.match(name):
            raise ConfigError(f"--masters: {part!r} is not NAME=URL (a name of lowercase letters, digits, - and _)")
        try:
            parse_master_url(url)
        except ValueError as e:
            raise ConfigError(f"--masters: master {name}: {e}") from None
        if name in dict(out):
            raise ConfigError(f"--masters: the name {name!r} is given twice")
        out.append((name, url))
    if not out:
        raise ConfigError("--masters: give at least one NAME=URL")
    return out


def masters_of(path: str) -> list[tuple[str, str]]:
    """The masters a cluster file names, with their URLs."""
    from master.clusterfile import load

    cluster = load(path)
    if not cluster.masters:
        raise ConfigError(f"{path} has one [master] table: a federation needs [masters.NAME] tables, or --masters")
    return sorted(cluster.master_urls().items())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def configure() -> tuple[list[tuple[str, str]], str | None]:
        if bool(args.masters) == bool(args.config):
            raise ConfigError("give --masters NAME=URL,... or --config FILE (one of the two)")
        masters = masters_arg(args.masters) if args.masters else masters_of(args.config)
        if not 0 <= args.port <= 65535 or not 0.1 <= args.poll_s <= 60:
            raise ConfigError("--port must be 0..65535 and --poll-s 0.1..60")
        token = auth.load_token(args.token_file or None)
        require_secret(args.host, token is not None, args.insecure,
                       f"refusing to bind {args.host} without a token: give --token-file (or ${auth.TOKEN_ENV}), "
                       "or --insecure on a network you trust")
        return masters, token

    masters, token = config_or_exit("python -m master.federation", configure)
    setup_logging(args.log_level)
    stop = stop_on_signals()
    federation = Federation(masters, token, poll_s=args.poll_s)
    try:
        server = FederationServer((args.host, args.port), federation, token=token, allowed_hosts=args.allowed_host)
    except OSError as e:
        print(f"python -m master.federation: error: cannot listen on {args.host}:{args.port}: {e.strerror}",
              file=sys.stderr)
        return 1
    supervisor = Supervisor("federation", stop)
    supervisor.add(federation)
    supervisor.add(ServerThread(server, "http"))

    def ready() -> None:
        host, port = server.server_address[:2]
        log.info("federation of %d master(s) (%s) on http://%s:%d", len(masters), ", ".join(n for n, _ in masters),
                 host, port)
    return supervisor.run(ready=ready)


if __name__ == "__main__":
    sys.exit(main())
