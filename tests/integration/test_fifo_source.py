"""`--source fifo:PATH`: a real ffmpeg writes MJPEG or raw video into a named pipe the publisher opened
first; a writer that goes away and a new one that comes are a drop and a reconnect, not an end."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from cluster.local import free_udp_ports
from receiver.buffer import FrameBuffer
from receiver.udp import UdpIngest
from tests.conftest import wait_until
from tests.integration.test_live_sources import Publisher


def ffmpeg_into(fifo: Path, lavfi: str, frames: int, *out: str) -> subprocess.Popen:
    """ffmpeg writing `frames` frames of a lavfi test source into the pipe in real time."""
    return subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
                             "-f", "lavfi", "-i", lavfi, "-frames:v", str(frames), *out, "-flush_packets", "1",
                             "-y", str(fifo)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(writer: subprocess.Popen) -> None:
    """Wait for a writer that should end by itself; kill it if it does not."""
    try:
        assert writer.wait(30) == 0, writer.stderr.read().decode(errors="replace") if writer.stderr else ""
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(5)


@pytest.fixture
def udp() -> Iterator[tuple[int, UdpIngest, FrameBuffer]]:
    [port] = free_udp_ports(1)
    buf = FrameBuffer(per_port=1000)
    ingest = UdpIngest("127.0.0.1", [port], {port: "noop"}, buf)
    ingest.start()
    yield port, ingest, buf
    ingest.stop()
    assert ingest.join(5)


def received(ingest: UdpIngest, port: int) -> int:
    return ingest.counters()[str(port)].get("frames_complete", 0)


def test_mjpeg_from_ffmpeg_through_a_pipe_opened_before_its_writer_and_a_second_writer(tmp_path, udp):
    port, ingest, buf = udp
    fifo = tmp_path / "cam.mjpeg"
    pub = Publisher(tmp_path / "publisher.log", "--source", f"fifo:{fifo}", "--receiver", f"127.0.0.1:{port}")
    writers: list[subprocess.Popen] = []
    try:
        pub.wait_for("connecting")
        assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_IMODE(os.stat(fifo).st_mode) == 0o600
        for n, want in ((1, 15), (2, 30)):
            writers.append(ffmpeg_into(fifo, "testsrc=size=320x240:rate=10", 20, "-f", "mjpeg", "-q:v", "5"))
            wait_until(lambda want=want: received(ingest, port) >= want, 30)
            finish(writers[-1])
            pub.wait_for("dropped out: the writer closed the pipe" if n == 1 else "online again")
        stats = pub.stop()
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait(5)
        pub.kill()
    assert stats["reconnects"] == 1 and stats["sent"] >= 30 and not stats.get("malformed"), stats
    img = cv2.imdecode(np.frombuffer(buf.take(1, 1.0)[0].data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3) and img.std() > 20  # a test pattern, not a blank frame


def test_raw_video_keeps_its_size_and_colours(tmp_path, udp):
    port, ingest, buf = udp
    fifo = tmp_path / "cam.raw"
    os.mkfifo(fifo, 0o600)  # made by the operator beforehand: the publisher takes it as it is
    pub = Publisher(tmp_path / "publisher.log", "--source", f"fifo:{fifo}?format=rawvideo&size=320x240&pix_fmt=rgb24",
                    "--receiver", f"127.0.0.1:{port}", "--fps", "20")
    writer = ffmpeg_into(fifo, "color=c=red:size=320x240:rate=10", 15, "-f", "rawvideo", "-pix_fmt", "rgb24")
    try:
        wait_until(lambda: received(ingest, port) >= 10, 30)
        finish(writer)
        stats = pub.stop()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(5)
        pub.kill()
    assert stats["sent"] >= 10 and not stats.get("partial_frames"), stats
    img = cv2.imdecode(np.frombuffer(buf.take(1, 1.0)[0].data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3)
    b, g, r = (int(v) for v in img.reshape(-1, 3).mean(axis=0))
    assert r > 230 and b < 25 and g < 25, (b, g, r)  # red stays red: rgb24 was turned into BGR


def test_a_path_that_is_not_a_pipe_is_a_usage_error(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    pub = Publisher(tmp_path / "publisher.log", "--source", f"fifo:{plain}")
    assert pub.popen.wait(60) == 2 and "is not a named pipe" in pub.text()
