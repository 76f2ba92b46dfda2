"""`python -m master.cli.results`: print one camera port's results, optionally as they arrive (--follow)."""

from __future__ import annotations

import argparse
import json
import sys
import xmlrpc.client

from common.cli import DefaultsHelpFormatter
from common.config import MasterLink
from common.errors import BadRequest, ConfigError, MasterUnavailable, Unauthorized
from common.masterclient import MasterClient
from common.results import Result, ResultStatus
from common.runtime import stop_on_signals
from master.observe.metrics import camera_ports

POLL_S = 0.5


def describe(r: Result) -> str:
    """One human line per result."""
    found = ", ".join(f"{d.label} {d.score:.2f} @{list(d.box)}" for d in r.detections) or "nothing"
    timings = " ".join(f"{k}={v:.0f}ms" for k, v in r.timings_ms.items())
    state = "" if r.status is ResultStatus.OK else f" [{r.status.value}: {r.error}]"
    return (f"{r.camera or 'port'} {r.port} seq {r.seq:>6}  {r.latency_ms:7.0f} ms  {r.worker:<20} "
            f"{found}  ({timings}){state}")


def known_cameras(client: MasterClient) -> list[int]:
    """The camera ports the master has had frames from (file-job tiles' port left out)."""
    return sorted(int(p) for p in camera_ports(client.get_stats().get("ports", {})))


def check_camera(client: MasterClient, port: int, *, follow: bool) -> bool:
    """Whether to go on reading `port`: a camera the master does not know is an error, unless we
    follow it (it may not have started yet: say so and wait)."""
    known = known_cameras(client)
    if port in known:
        return True
    names = ", ".join(map(str, known)) or "none yet"
    if follow:
        print(f"(no camera {port} on the master yet; known cameras: {names}; waiting for its results)",
              file=sys.stderr)
        return True
    print(f"error: the master has no camera {port}; known cameras: {names}", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m master.cli.results", description=__doc__,
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--master", default="http://127.0.0.1:8000", help="the master's URL")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--port", type=int, help="camera port whose results to print")
    which.add_argument("--camera", help="camera name (from the master's config file) whose results to print")
    p.add_argument("--since", type=int, default=0, help="cursor to start after (0: the oldest kept)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new results until Ctrl-C")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--token-file", default="", help="file holding the master's token (default: $FRAMEHIVE_TOKEN)")
    args = p.parse_args(argv)
    if args.port is not None and not 1 <= args.port <= 65535:
        p.error(f"--port must be a camera port 1..65535, got {args.port}")
    try:
        link = MasterLink.load(args.master, args.token_file)
        if args.camera:
            args.port = link.fetch_config("camera", args.camera, wait_s=5.0)["port"]
    except ConfigError as e:
        p.error(str(e))
    stop = stop_on_signals()
    cursor, incarnation = args.since, ""
    with link.client() as client:
        checked = False
        while True:
            try:
                if not checked and not check_camera(client, args.port, follow=args.follow):
                    return 2
                checked = True
                page = client.get_results(args.port, cursor, 1000, incarnation)
                results = [Result.from_wire(r) for r in page["results"]]
            except MasterUnavailable as e:
                print(f"master unreachable: {e}", file=sys.stderr)
                if not args.follow:
                    return 1
                stop.wait(2.0)
                continue
            except xmlrpc.client.Fault as e:
                print(f"error: {e.faultString}", file=sys.stderr)
                return 2
            except (Unauthorized, BadRequest) as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            if page.get("restarted"):
                print("(the master restarted and kept no results from before: reading from its first)",
                      file=sys.stderr)
            if page["missed"]:
                print(f"({page['missed']} older results were no longer kept)", file=sys.stderr)
            incarnation = page.get("incarnation", "")
            for r in results:
                print(json.dumps(r.to_wire()) if args.json else describe(r), flush=True)
            cursor = page["next"]
            if not args.follow or (not page["results"] and stop.wait(POLL_S)) or stop.is_set():
                return 0


if __name__ == "__main__":
    sys.exit(main())
