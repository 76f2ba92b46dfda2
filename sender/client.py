"""`python -m sender.client`: submit a video as a file job (docs/PROTOCOL.md section 4) and fetch the result.

Uploads the video (or, with --protocol file, names a path the server reads), shows upload and
processing progress on stderr, writes the returned H.264 MP4 to --out after checking its size,
SHA-256 and codec, and prints the result JSON on stdout. Exit codes: 0 ok, 1 the server refused
the job or the output failed verification, 2 bad command-line flags, 130 interrupted (Ctrl-C
closes the connection, which cancels the job on the server).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import av
import av.error

from common import auth
from common.cli import DefaultsHelpFormatter
from common.errors import ConfigError, FramehiveError, PipelineSpecError
from common.jobproto import (
    DEFAULT_PORT,
    TILE_FORMATS,
    VERSION,
    JobProtocolError,
    data_size,
    parse_handshake,
    parse_tiles,
    recv_exact,
    recv_message,
    send_data,
    send_message,
)
from common.pipeline import normalize_pipeline
from common.runtime import setup_logging

log = logging.getLogger("client")

CHUNK_BYTES = 1024 * 1024  # upload data chunk and file-hashing block
PROGRESS_EVERY_S = 0.1  # stderr redraw interval
TIMEOUT_S = 60.0
DEFAULT_FILTERS = "copy"  # no filter: the job re-encodes the video through the cluster as it is
ERROR_READ_TIMEOUT_S = 2.0  # wait for the server's error message after it cut an upload short
MB = 1_000_000


class JobError(FramehiveError):
    """The server refused or failed the job, or its output did not verify; `code` names why."""

    def __init__(self, message: str, code: str = "internal") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Options:
    """Validated command-line options."""

    host: str
    port: int
    family: int  # socket.AF_UNSPEC, AF_INET or AF_INET6
    video: Path
    out: Path
    tiles: str
    filters: str
    codec: str
    protocol: str
    preview: bool
    metrics: Path | None
    timeout_s: float
    log_level: str = "WARNING"
    tile_format: str = "raw"
    token: str | None = None  # the cluster's token, sent in the handshake when the server wants one


class ProgressLine:
    """One status line on a text stream, redrawn in place with \\r at most every PROGRESS_EVERY_S."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last_s = float("-inf")
        self._width = 0
        self._pending = ""  # the newest text, not drawn yet because of the rate limit

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_s < PROGRESS_EVERY_S:
            self._pending = text
            return
        self._last_s = now
        self._draw(text)

    def _draw(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)
        self._pending = ""

    def done(self) -> None:
        """Draw the newest state and end the line (only if something was shown)."""
        if self._pending:
            self._draw(self._pending)
        if self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
            self._last_s = float("-inf")


def format_upload(sent: int, total: int, elapsed_s: float) -> str:
    """'upload  42.0%  4.2/10.0 MB  3.1 MB/s'."""
    pct = 100.0 * sent / total if total else 100.0
    rate = sent / MB / elapsed_s if elapsed_s > 0 else 0.0
    return f"upload {pct:5.1f}%  {sent / MB:.1f}/{total / MB:.1f} MB  {rate:.1f} MB/s"


def format_progress(msg: dict, elapsed_s: float) -> str:
    """'processing: 120 frames in, 100 out (25.0 fps), 900 tiles'."""
    frames_out = _count(msg, "frames_out")
    fps = frames_out / elapsed_s if elapsed_s > 0 else 0.0
    line = (f"processing: {_count(msg, 'frames_in')} frames in, {frames_out} out ({fps:.1f} fps), "
            f"{_count(msg, 'tiles_done')} tiles")
    note = msg.get("grid_note")
    return f"{line}; grid {msg.get('grid')}, {note}" if isinstance(note, str) and note else line


def _count(msg: dict, key: str) -> int:
    value = msg.get(key, 0)
    return value if isinstance(value, int) else 0


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex) of a file, read in CHUNK_BYTES blocks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def connect(host: str, port: int, *, family: int, timeout_s: float) -> socket.socket:
    """A TCP connection to the first address of `host` that answers, in getaddrinfo's order."""
    addrs = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    last: OSError | None = None
    for fam, kind, proto, _name, addr in addrs:
        sock = socket.socket(fam, kind, proto)
        sock.settimeout(timeout_s)
        try:
            sock.connect(addr)
        except OSError as e:
            sock.close()
            last = e
            continue
        log.debug("connected to %s", addr)
        return sock
    raise last or OSError(f"no address for {host!r}")


def build_handshake(opts: Options) -> dict:
    """The handshake message, checked with the same rules the server applies."""
    msg = {"type": "handshake", "version": VERSION, "protocol": opts.protocol, "tiles": opts.tiles,
           "filters": opts.filters, "codec": opts.codec, "name": opts.video.name[:255] or "upload",
           "preview": opts.preview, "tile_format": opts.tile_format}
    if opts.token:
        msg["token"] = opts.token
    if opts.protocol == "stream":
        msg["size"], msg["sha256"] = file_digest(opts.video)
    else:
        msg["path"] = str(opts.video.absolute())
    parse_handshake(msg)
    return msg


def _raise_if_error(msg: dict) -> None:
    if msg["type"] == "error":
        raise JobError(str(msg.get("message", "(no message)")), str(msg.get("code", "internal")))


def await_accepted(sock: socket.socket) -> dict:
    """The `accepted` message (job id, and where its preview is); JobError carrying the server's
    message on `error`."""
    msg = recv_message(sock)
    _raise_if_error(msg)
    if msg["type"] != "accepted":
        raise JobError(f"server answered the handshake with {msg['type']!r}", "bad_handshake")
    return msg


def preview_urls(accepted: dict, host: str) -> dict[str, str]:
    """Absolute URLs of a job's preview page and GIF from the `accepted` message ({} when the server
    names no preview server). `host` (the one we connected to) stands in when the preview server
    listens on every address."""
    where = accepted.get("preview")
    if not isinstance(where, dict) or not isinstance(where.get("port"), int) or not 0 < where["port"] < 65536:
        return {}
    name = where.get("host") if isinstance(where.get("host"), str) and where.get("host") else host
    base = f"http://[{name}]:{where['port']}" if ":" in name else f"http://{name}:{where['port']}"
    return {key: base + str(where[key]) for key in ("page", "gif") if isinstance(where.get(key), str)
            and str(where[key]).startswith("/")}


def announce_preview(urls: dict[str, str], stream: TextIO) -> None:
    """Tell the user where to watch the job (or that the server shows no preview)."""
    if "page" in urls:
        print(f"preview: {urls['page']} (the GIF, once the job is done: {urls.get('gif', 'on that page')})",
              file=stream, flush=True)
    else:
        print("preview: the job server shows none (its receiver runs without --jobs-http-port)",
              file=stream, flush=True)


def upload(sock: socket.socket, video: Path, total: int, progress: ProgressLine) -> None:
    """Send the file in CHUNK_BYTES data messages; a server that hangs up mid-way gets its error read."""
    start = time.monotonic()
    sent = 0
    try:
        with video.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                send_data(sock, chunk)
                sent += len(chunk)
                progress.show(format_upload(sent, total, time.monotonic() - start), force=sent == total)
    except (BrokenPipeError, ConnectionResetError):
        progress.done()
        _read_pending_error(sock)
        raise
    progress.done()


def _read_pending_error(sock: socket.socket) -> None:
    """After a failed send: raise the server's `error` if it managed to send one."""
    try:
        sock.settimeout(ERROR_READ_TIMEOUT_S)
        msg = recv_message(sock)
    except (OSError, JobProtocolError):
        return
    _raise_if_error(msg)


def await_result(sock: socket.socket, progress: ProgressLine) -> dict:
    """Show `progress` messages until `result`; JobError on `error` or a failed result."""
    start = time.monotonic()
    while True:
        msg = recv_message(sock)
        _raise_if_error(msg)
        if msg["type"] == "progress":
            progress.show(format_progress(msg, time.monotonic() - start))
        elif msg["type"] == "result":
            progress.done()
            break
        else:
            log.debug("ignoring a %r message", msg["type"])
    if not msg.get("ok"):
        raise JobError(str(msg.get("message", "the server reported a failed job")))
    return msg


def _expected_output(result: dict) -> tuple[int, str]:
    output = result.get("output")
    size = output.get("size") if isinstance(output, dict) else None
    digest = output.get("sha256") if isinstance(output, dict) else None
    if not isinstance(size, int) or size < 0 or not isinstance(digest, str):
        raise JobError("result.output must carry an integer size and a sha256")
    return size, digest.lower()


def receive_output(sock: socket.socket, size: int, digest: str, out: Path) -> dict:
    """Stream `size` bytes of data messages to `out` (via a temp file); verify SHA-256 and H.264."""
    tmp = out.parent / f".{out.name}.{secrets.token_hex(8)}.part"
    # "x": a new file, created like any other (0666 less the umask); mkstemp's 0600 would follow the
    # rename and leave the video unreadable to everyone else
    f = open(tmp, "xb")  # noqa: SIM115 - closed by the with below; opened first so a clash is never unlinked
    try:
        with f:
            got = _receive_into(sock, f, size)
        if got != digest:
            raise JobError(f"output SHA-256 {got} does not match the announced {digest}", "checksum")
        info = verify_h264(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return info


def _receive_into(sock: socket.socket, f: BinaryIO, size: int) -> str:
    """Copy `size` bytes of data messages into file `f`; return their SHA-256 hex."""
    h = hashlib.sha256()
    left = size
    while left:
        msg = recv_message(sock)
        _raise_if_error(msg)
        n = data_size(msg)
        if n > left:
            raise JobError(f"server sent {n} bytes with only {left} of the output left", "checksum")
        chunk = recv_exact(sock, n)
        h.update(chunk)
        f.write(chunk)
        left -= n
    return h.hexdigest()


def verify_h264(path: Path) -> dict:
    """{"codec", "frames"} of the file's video stream; JobError unless it is H.264 with frames."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise JobError("output has no video stream", "not_video")
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            frames = sum(1 for p in container.demux(stream) if p.size)
    except av.error.FFmpegError as e:
        raise JobError(f"output is not a readable video: {e}", "not_video") from e
    if codec != "h264" or frames == 0:
        raise JobError(f"output is {codec} with {frames} frames, expected H.264 video", "not_video")
    return {"codec": codec, "frames": frames}


def run_job(opts: Options, *, progress: ProgressLine) -> dict:
    """Run one job end to end; return the summary printed on stdout."""
    handshake = build_handshake(opts)
    with connect(opts.host, opts.port, family=opts.family, timeout_s=opts.timeout_s) as sock:
        send_message(sock, handshake)
        accepted = await_accepted(sock)
        job_id = str(accepted.get("job_id", ""))
        log.info("job %s accepted by %s:%d", job_id, opts.host, opts.port)
        urls = preview_urls(accepted, opts.host) if opts.preview else {}
        if opts.preview:
            announce_preview(urls, progress.stream)
        if opts.protocol == "stream":
            upload(sock, opts.video, handshake["size"], progress)
        send_message(sock, {"type": "eof"})
        result = await_result(sock, progress)
        size, digest = _expected_output(result)
        verified = receive_output(sock, size, digest, opts.out)
    output = {**result["output"], **verified, "path": str(opts.out)}
    summary = {"job_id": job_id, "ok": True, "metrics": result.get("metrics", {}), "output": output}
    if isinstance(result.get("preview"), dict):
        summary["preview"] = {**result["preview"], **{f"{k}_url": v for k, v in urls.items()}}
    return summary


def _tiles_arg(text: str) -> str:
    try:
        cols, rows = parse_tiles(text)
    except JobProtocolError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return f"{cols}x{rows}"


def _filters_arg(text: str) -> str:
    try:
        return normalize_pipeline(text)
    except PipelineSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _port_arg(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {port}")
    return port


def _positive_arg(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sender.client", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--host", default="localhost", help="job server host name or address")
    p.add_argument("--port", type=_port_arg, default=DEFAULT_PORT, help="job server TCP port (receiver --jobs-port)")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("--ipv4", dest="family", action="store_const", const=socket.AF_INET,
                     help="resolve --host to IPv4 only")
    fam.add_argument("--ipv6", dest="family", action="store_const", const=socket.AF_INET6,
                     help="resolve --host to IPv6 only")
    p.add_argument("--video", type=Path, required=True, help="input video")
    p.add_argument("--out", type=Path, required=True, help="where to write the processed MP4")
    p.add_argument("--tiles", type=_tiles_arg, default="1x1", help="COLSxROWS grid, 1x1..16x16")
    p.add_argument("--filters", type=_filters_arg, default=DEFAULT_FILTERS,
                   help="pipeline run on every tile, e.g. canny,blur:3 or person; copy: none, the video is only "
                        "re-encoded")
    p.add_argument("--codec", choices=("h264",), default="h264", help="codec of the returned MP4")
    p.add_argument("--protocol", choices=("stream", "file"), default="stream",
                   help="stream: upload the bytes; file: send only the path (the server must read it)")
    p.add_argument("--preview", action="store_true",
                   help="ask for thumbnails and a GIF: the preview page's URL is printed on stderr when the job "
                        "starts (the receiver serves it with --jobs-http-port)")
    p.add_argument("--tile-format", choices=TILE_FORMATS, default="raw",
                   help="how tiles travel to the workers: raw (least CPU) or png (fewer bytes on a slow LAN)")
    p.add_argument("--metrics", type=Path, help="also save the result JSON here")
    p.add_argument("--token-file", default="",
                   help="file holding the cluster's token, if the job server wants one (default: $FRAMEHIVE_TOKEN)")
    p.add_argument("--timeout-s", type=_positive_arg, default=TIMEOUT_S, help="socket timeout (s)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="how much to log on stderr")
    return p


def parse_options(argv: list[str] | None) -> Options:
    """Parse and check flags; argparse exits 2 on anything wrong."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.protocol == "stream":
        if not a.video.is_file():
            parser.error(f"--video {a.video}: no such file")
        if a.video.stat().st_size == 0:
            parser.error(f"--video {a.video}: the file is empty")
    if not a.out.parent.is_dir():
        parser.error(f"--out {a.out}: directory {a.out.parent} does not exist")
    try:
        token = auth.load_token(a.token_file)
    except ConfigError as e:
        parser.error(str(e))
    return Options(host=a.host, port=a.port, family=a.family or socket.AF_UNSPEC, video=a.video, out=a.out,
                   tiles=a.tiles, filters=a.filters, codec=a.codec, protocol=a.protocol, preview=a.preview,
                   metrics=a.metrics, timeout_s=a.timeout_s, log_level=a.log_level, tile_format=a.tile_format,
                   token=token)


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    setup_logging(opts.log_level)
    progress = ProgressLine(sys.stderr)
    try:
        summary = run_job(opts, progress=progress)
    except JobError as e:
        progress.done()
        print(f"error [{e.code}]: {e}", file=sys.stderr)
        return 1
    except (OSError, JobProtocolError) as e:
        progress.done()
        print(f"error: {opts.host}:{opts.port}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.done()
        print("interrupted: connection closed, the server cancels the job", file=sys.stderr)
        return 130
    text = json.dumps(summary, indent=2)
    if opts.metrics:
        opts.metrics.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
