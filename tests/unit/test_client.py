"""sender/client.py end to end against a fake asyncio job server that speaks docs/PROTOCOL.md section 4."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from cluster.local import packaged_clip
from common.jobproto import (
    data_header,
    data_size,
    encode,
    error_message,
    parse_handshake,
    read_data,
    read_message,
)
from sender import client

METRICS = {"frames": 10, "fps_in": 30.0, "fps_out": 25.0, "tiles_per_s": 225.0, "p50_tile_ms": 4.0,
           "p95_tile_ms": 9.5, "retries": 0, "fallback_tiles": 0}
START_TIMEOUT_S = 5.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class FakeJobServer:
    """A one-job-at-a-time server on its own event-loop thread; `mode` picks how it answers.

    Modes: "ok" (returns `mp4`), "error" (refuses the handshake), "corrupt" (flips a byte of the
    output but announces the true SHA-256), "not_h264" (returns bytes that are not a video),
    "garbage" (answers the handshake with a non-JSON body), "stall" (never answers after `eof`;
    sets `uploaded`, then `client_closed` when the client hangs up).
    """

    def __init__(self, host: str, mp4: bytes, mode: str = "ok") -> None:
        self.host, self.mp4, self.mode = host, mp4, mode
        self.port = 0
        self.handshake: dict = {}
        self.upload_sha256 = ""
        self.failures: list[BaseException] = []
        self.uploaded, self.client_closed = threading.Event(), threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="fake-job-server")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> FakeJobServer:
        self._thread.start()
        assert self._ready.wait(START_TIMEOUT_S), "fake server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)
        assert not self._thread.is_alive()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except Exception as e:  # recorded so that each test can assert the fake saw no surprise
            self.failures.append(e)
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshake = await read_message(reader)
        hs = parse_handshake(self.handshake)
        if self.mode == "error":
            writer.write(encode(error_message("unknown_filter", "no filter called 'sharpen' here")))
            return
        if self.mode == "garbage":
            writer.write(b"\0\0\0\x08not json")
            return
        writer.write(encode({"type": "accepted", "job_id": "job-1"}))
        digest = await self._read_upload(reader)
        if hs.protocol == "file":
            digest = sha256(Path(hs.path).read_bytes())
        self.upload_sha256 = digest
        if self.mode == "stall":
            self.uploaded.set()
            if await reader.read(1) == b"":
                self.client_closed.set()
            return
        for done in (5, 10):
            writer.write(encode({"type": "progress", "bytes_in": 1, "frames_in": done, "frames_out": done,
                                 "tiles_done": 9 * done}))
        await self._send_output(writer)
        await writer.drain()

    async def _read_upload(self, reader: asyncio.StreamReader) -> str:
        h = hashlib.sha256()
        while (msg := await read_message(reader))["type"] != "eof":
            h.update(await read_data(reader, data_size(msg)))
        return h.hexdigest()

    async def _send_output(self, writer: asyncio.StreamWriter) -> None:
        body = self.mp4
        if self.mode == "corrupt":
            body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
        elif self.mode == "not_h264":
            body = b"\0" * 4096
        output = {"name": "out.mp4", "size": len(body), "sha256": sha256(body)}
        if self.mode == "corrupt":
            output["sha256"] = sha256(self.mp4)
        writer.write(encode({"type": "result", "ok": True, "metrics": METRICS, "output": output}))
        half = len(body) // 2  # two data messages: the client must join chunks
        for chunk in (body[:half], body[half:]):
            writer.write(data_header(len(chunk)) + chunk)


@pytest.fixture(scope="module")
def h264_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real 10-frame 64x64 H.264 MP4."""
    path = tmp_path_factory.mktemp("mp4") / "small.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(10):
            img = np.full((64, 64, 3), i * 20, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path.read_bytes()


@pytest.fixture(scope="module")
def clip() -> Path:
    return packaged_clip("carphone_pristine.mp4")


HOSTS = [pytest.param("127.0.0.1", "--ipv4", id="ipv4"),
         pytest.param("::1", "--ipv6", id="ipv6",
                      marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback"))]


def args(server: FakeJobServer, clip: Path, out: Path, *extra: str) -> list[str]:
    return ["--host", server.host, "--port", str(server.port), "--video", str(clip), "--tiles", "3x3",
            "--filters", "canny,blur:3", "--out", str(out), "--timeout-s", "10", *extra]


@pytest.mark.parametrize(("host", "family_flag"), HOSTS)
def test_stream_job_round_trip(host: str, family_flag: str, h264_mp4: bytes, clip: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out, metrics = tmp_path / "out.mp4", tmp_path / "metrics.json"
    with FakeJobServer(host, h264_mp4) as server:
        code = client.main(args(server, clip, out, family_flag, "--metrics", str(metrics)))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert server.failures == []
    assert server.upload_sha256 == sha256(clip.read_bytes())
    hs = server.handshake
    assert (hs["protocol"], hs["tiles"], hs["filters"], hs["codec"], hs["name"], hs["size"]) == (
        "stream", "3x3", "canny,blur", "h264", clip.name, clip.stat().st_size)
    assert out.read_bytes() == h264_mp4
    summary = json.loads(captured.out)
    assert summary["metrics"] == METRICS
    assert summary["output"]["frames"] == 10 and summary["output"]["codec"] == "h264"
    assert json.loads(metrics.read_text()) == summary
    assert "upload 100.0%" in captured.err and "processing: 10 frames in" in captured.err
    assert sorted(tmp_path.iterdir()) == sorted([out, metrics])  # no temp file left behind


def test_file_protocol_sends_only_the_path(h264_mp4: bytes, clip: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mp4"
    with FakeJobServer("127.0.0.1", h264_mp4) as server:
        code = client.main(args(server, clip, out, "--protocol", "file", "--preview"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "upload" not in captured.err
    assert server.handshake["path"] == str(clip.absolute())
    assert server.handshake["preview"] is True
    assert "size" not in server.handshake and "sha256" not in server.handshake
    assert server.upload_sha256 == sha256(clip.read_bytes())
    assert out.read_bytes() == h264_mp4


def test_server_error_exits_1_with_its_message(h264_mp4: bytes, clip: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mp4"
    with FakeJobServer("127.0.0.1", h264_mp4, mode="error") as server:
        code = client.main(args(server, clip, out))
    captured = capsys.readouterr()
    assert code == 1
    assert "unknown_filter" in captured.err and "no filter called 'sharpen' here" in captured.err
    assert captured.out == ""
    assert not out.exists()


@pytest.mark.parametrize(("mode", "code_name"), [("corrupt", "checksum"), ("not_h264", "not_video")])
def test_bad_output_exits_1_and_writes_nothing(mode: str, code_name: str, h264_mp4: bytes, clip: Path,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mp4"
    with FakeJobServer("127.0.0.1", h264_mp4, mode=mode) as server:
        code = client.main(args(server, clip, out))
    captured = capsys.readouterr()
    assert code == 1
    assert code_name in captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temp file


def test_connection_refused_exits_1(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = client.main(["--host", "127.0.0.1", "--port", str(port), "--video", str(clip),
                        "--filters", "canny", "--out", str(tmp_path / "o.mp4")])
    assert code == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "needle"), [
    (["--video", "/nonexistent/in.mp4"], "no such file"),
    (["--tiles", "0x3"], "bad tile grid"),
    (["--filters", "sharpen"], "unknown stage"),
    (["--codec", "vp9"], "invalid choice"),
    (["--ipv4", "--ipv6"], "not allowed"),
    (["--port", "70000"], "65535"),
])
def test_bad_flags_exit_2(extra: list[str], needle: str, clip: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--video", str(clip), "--filters", "canny", "--out", str(tmp_path / "o.mp4")]
    with pytest.raises(SystemExit) as exc:
        client.main(base + extra)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_upload_progress_line_format() -> None:
    assert client.format_upload(5_000_000, 10_000_000, 2.0) == "upload  50.0%  5.0/10.0 MB  2.5 MB/s"
    assert client.format_upload(0, 0, 0.0) == "upload 100.0%  0.0/0.0 MB  0.0 MB/s"


def test_garbage_from_the_server_exits_1(h264_mp4: bytes, clip: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with FakeJobServer("127.0.0.1", h264_mp4, mode="garbage") as server:
        code = client.main(args(server, clip, tmp_path / "o.mp4"))
    assert code == 1
    assert "not UTF-8 JSON" in capsys.readouterr().err


def run_cli(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sender.client", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_module_entry_point_refuses_a_missing_video(tmp_path: Path) -> None:
    proc = run_cli("--video", str(tmp_path / "missing.mp4"), "--filters", "canny", "--out", str(tmp_path / "o"))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "missing.mp4: no such file" in err


def test_ctrl_c_closes_the_connection(h264_mp4: bytes, clip: Path, tmp_path: Path) -> None:
    with FakeJobServer("127.0.0.1", h264_mp4, mode="stall") as server:
        proc = run_cli(*args(server, clip, tmp_path / "o.mp4"))
        try:
            assert server.uploaded.wait(30), "the client never finished its upload"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
        assert server.client_closed.wait(5)
    assert proc.returncode == 130
    assert "interrupted" in err
    assert list(tmp_path.iterdir()) == []
