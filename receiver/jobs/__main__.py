"""`python -m receiver.jobs`: a file-job server on its own (no cameras): clients upload a video with
`python -m sender.client`, workers process its tiles through the master, an H.264 MP4 comes back."""

from __future__ import annotations

import argparse
import sys

from common.cli import DefaultsHelpFormatter
from common.config import MasterLink, build, config_or_exit
from receiver.__main__ import run
from receiver.config import JobSettings, ReceiverConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m receiver.jobs", description=__doc__,
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--port", type=int, default=9000, help="TCP port clients upload to")
    p.add_argument("--host", default="localhost",
                   help="address: localhost (127.0.0.1 and ::1), or :: for every IPv6 and IPv4 address")
    p.add_argument("--http-port", type=int, default=0,
                   help="HTTP preview of running jobs (pages, /progress.json, GIFs) on this port; 0: off")
    p.add_argument("--master", default="http://127.0.0.1:8000", help="the master's URL")
    p.add_argument("--token-file", default="",
                   help="file holding the cluster's token, which clients must present too (default: $FRAMEHIVE_TOKEN)")
    p.add_argument("--max", type=int, default=8, help="jobs at once; more are told 'busy'")
    p.add_argument("--max-spool-gb", type=float, default=8.0, help="bytes of running uploads spooled at once")
    p.add_argument("--root", default="",
                   help="folder whose files clients may name instead of uploading (default: none allowed)")
    p.add_argument("--insecure", action="store_true",
                   help="allow serving beyond this machine without a token, on a network you trust")
    p.add_argument("--name", default="", help="name in the master's stats (default: receiver@HOST:jobsPORT)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="how much to log")
    return p.parse_args(argv)


def from_flags(args: argparse.Namespace) -> ReceiverConfig:
    """A receiver config with no cameras and this job server."""
    jobs = JobSettings(port=args.port, host=args.host, http_port=args.http_port, max_jobs=args.max,
                       max_spool_bytes=int(args.max_spool_gb * 1024**3), root=args.root)
    return build(ReceiverConfig, {"master": MasterLink.load(args.master, args.token_file), "jobs": jobs,
                                  "insecure": args.insecure, "name": args.name, "log_level": args.log_level})


def main(argv: list[str] | None = None) -> int:
    config = config_or_exit("python -m receiver.jobs", lambda: from_flags(parse_args(argv)))
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
