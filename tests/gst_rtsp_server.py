"""A real RTSP server on loopback for the publisher's tests: GStreamer's RTSP server serving a test pattern.

Run with Debian's /usr/bin/python3 (it imports the system's `gi`, which the project's venv cannot):

    /usr/bin/python3 tests/gst_rtsp_server.py --port 0 --path /cam [--codec h264|jpeg]

It prints `ready PORT` on stdout once it listens, and exits 0 on SIGTERM or SIGINT. With
$RTSP_TEST_USER and $RTSP_TEST_PASSWORD set, clients must log in with HTTP Basic credentials.
This file imports nothing from framehive.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINES = {
    "h264": "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate={fps}/1 "
            "! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
            "! rtph264pay name=pay0 pt=96 config-interval=1",
    "jpeg": "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate={fps}/1 "
            "! videoconvert ! jpegenc ! rtpjpegpay name=pay0 pt=26",
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0, help="TCP port to listen on (0: any free one)")
    p.add_argument("--path", default="/cam", help="mount point of the stream")
    p.add_argument("--codec", choices=sorted(PIPELINES), default="h264")
    p.add_argument("--fps", type=int, default=10)
    args = p.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {PIPELINES[args.codec].format(fps=args.fps)} )")
    factory.set_shared(True)
    user, password = os.environ.get("RTSP_TEST_USER"), os.environ.get("RTSP_TEST_PASSWORD")
    if user and password:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        factory.add_role_from_structure(Gst.Structure.from_string(
            "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    print(f"ready {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
