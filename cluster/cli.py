"""`framehive`: the cluster from its config file. `framehive check FILE` validates it without starting
anything; `framehive up FILE` runs this host's share of it, supervised; `framehive reload FILE` has the
running master re-read it (as SIGHUP does); `framehive grid FILE CAMERA` draws a grid of frame
fractions on the camera's latest frame, for drawing zones and lines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cluster.up import Up, default_workers, path_arg
from common.cli import DefaultsHelpFormatter
from common.config import MasterLink
from common.errors import ConfigError, FramehiveError
from common.runtime import setup_logging, stop_on_signals
from master.clusterfile import load


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="framehive", description=__doc__, formatter_class=DefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a config file: every mistake with its line", description=None)
    check.add_argument("config", type=path_arg, help="the cluster file (framehive.toml)")
    up = sub.add_parser("up", help="run this host's share of the cluster, supervised, until Ctrl-C")
    up.add_argument("config", type=path_arg, help="the cluster file (framehive.toml)")
    up.add_argument("--workers", type=int, default=default_workers(), help="worker processes on this host")
    up.add_argument("--master", default="", help="with several [masters.NAME]: run this master's share here "
                                                 "(default: every master, on this one host)")
    up.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                    help="how much the supervisor logs (each role logs on its own)")
    reload = sub.add_parser("reload", help="have the running master re-read its config file")
    reload.add_argument("config", type=path_arg, help="the cluster file (its [master] table says where the master is)")
    grid = sub.add_parser("grid", help="a camera's latest frame with a grid of frame fractions, its zones and "
                                       "lines drawn: read points for zones and lines off it")
    grid.add_argument("config", type=path_arg, help="the cluster file (framehive.toml)")
    grid.add_argument("camera", help="the camera's name in the file")
    grid.add_argument("-o", "--out", default="", help="the PNG to write (default: CAMERA-grid.png)")
    grid.add_argument("--image", default="", help="draw on this picture instead of asking the running master")
    args = p.parse_args(argv)
    if args.command == "up" and not 0 <= args.workers <= 64:
        p.error("--workers must be 0..64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "check":
            return check(args.config)
        if args.command == "reload":
            return reload(args.config)
        if args.command == "grid":
            from cluster.grid import grid  # OpenCV only for this command

            out = grid(load(args.config), args.camera, Path(args.out or f"{args.camera}-grid.png"),
                       Path(args.image) if args.image else None)
            print(f"wrote {out}")
            return 0
        setup_logging(args.log_level)
        return Up(args.config, args.workers, args.master).run(stop_on_signals())
    except ConfigError as e:
        print(f"framehive: error: {e}", file=sys.stderr)
        return 2
    except FramehiveError as e:  # e.g. no master answers a reload
        print(f"framehive: {e}", file=sys.stderr)
        return 1


def check(path: str) -> int:
    cluster = load(path)
    enabled = [c for c in cluster.cameras.values() if c.enabled]
    print(f"{path}: ok: {len(cluster.receivers)} receiver(s), {len(enabled)} camera(s) enabled "
          f"({len(cluster.cameras) - len(enabled)} disabled), {len(cluster.rules)} rule(s)")
    for name, url in cluster.master_urls().items() if cluster.masters else ():
        theirs = ", ".join(r.name for r in cluster.receivers.values() if r.master == name)
        print(f"  master {name:<13} {url}: receivers {theirs}")
    for c in cluster.cameras.values():
        owner = f" (master {c.master})" if c.master else ""
        print(f"  {c.name:<20} port {c.port:<5} on {c.receiver:<12} {c.pipeline:<16} {c.source}{owner}"
              + ("" if c.enabled else "  (disabled)"))
    if cluster.mqtt:
        m = cluster.mqtt
        print(f"  mqtt: {m['url']} prefix {m.get('prefix', 'framehive')}, Home Assistant discovery "
              f"{'on' if m.get('discovery', True) else 'off'}, commands {'on' if m.get('commands') else 'off'}")
    return 0


def reload(path: str) -> int:
    cluster = load(path)
    with MasterLink.load(cluster.master_url, cluster.master.get("token_file", "")).client() as client:
        reply = client.call("reload_config")
    print(json.dumps(reply))
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
