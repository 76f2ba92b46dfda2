"""The receiver's ingest on real sockets: UDP reassembly under garbage, the imagezmq hub, the publisher."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time

import cv2
import imagezmq
import numpy as np
import pytest

from cluster.local import ROOT, free_port, free_udp_ports
from common.protocol import encode_frame
from receiver.buffer import FrameBuffer
from receiver.udp import UdpIngest
from receiver.zmqhub import ZmqHub
from sender.transport import ZmqTransport
from tests.conftest import wait_until


def jpeg(frame: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


@pytest.fixture
def ingest():
    ports = free_udp_ports(2)
    buf = FrameBuffer(per_port=1000)
    ing = UdpIngest("127.0.0.1", ports, {p: "person" for p in ports}, buf)
    ing.start()
    yield ing, buf, ports
    ing.stop()
    ing.join(5)


def drain(buf: FrameBuffer, want: int, timeout: float = 10.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += buf.take(1000, 0.1)
    return got


def test_real_frames_survive_interleaved_garbage(ingest, person_frames):
    ing, buf, (p1, p2) = ingest
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(7)
    images = [jpeg(f) for f in person_frames[:20]]
    for seq, data in enumerate(images):
        for port in (p1, p2):
            for g in encode_frame(data, stream_id=port, seq=seq, capture_ns=seq + 1):
                tx.sendto(g, ("127.0.0.1", port))
                if rng.random() < 0.3:
                    tx.sendto(rng.randbytes(rng.randrange(0, 1500)), ("127.0.0.1", port))
        time.sleep(0.002)  # paced like a camera
    got = drain(buf, 40)
    tx.close()
    by_port = {p: [f.data for f in got if f.port == p] for p in (p1, p2)}
    assert by_port[p1] == images and by_port[p2] == images  # every frame, intact, in order
    counters = wait_until(lambda: (c := ing.counters())[str(p1)]["malformed"] and c)
    assert counters[str(p1)]["frames_complete"] == 20 and counters[str(p1)]["malformed"] > 0
    assert all(f.received_ns >= f.capture_ns for f in got)


def test_hub_takes_unmodified_imagezmq_senders():
    buf = FrameBuffer(per_port=100)
    port = free_port()
    hub = ZmqHub("127.0.0.1", port, buf, pipelines={}, default_pipeline="face")
    hub.start()
    try:
        sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
        img = np.zeros((48, 64, 3), np.uint8)
        img[10:20, 10:20] = 255
        assert sender.send_jpg("cam-a", jpeg(img)) == b"OK"
        assert sender.send_image("cam-b", img) == b"OK"
        assert sender.send_image("bad", np.zeros((4, 4), np.float32)).startswith(b"ERR")
        sender.close()
        ours = ZmqTransport("127.0.0.1", port, camera_port=5005, name="ours")
        assert ours.send(jpeg(img), seq=9, capture_ns=123)
        ours.close()
        frames = sorted(drain(buf, 3), key=lambda f: f.meta["source"])  # buffers take round-robin by port
        assert [(f.port, f.meta["source"], f.pipeline) for f in frames] == [
            (port, "cam-a", "face"), (port, "cam-b", "face"), (5005, "ours", "face")]
        assert frames[2].seq == 9 and frames[2].capture_ns == 123
        decoded = cv2.imdecode(np.frombuffer(frames[1].data, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == img.shape
        assert hub.counters["malformed"] == 1
    finally:
        hub.stop()
        hub.join(5)


def test_zmq_sender_gives_up_in_bounded_time_when_no_hub():
    t = ZmqTransport("127.0.0.1", free_port(), camera_port=1, name="x", timeout_s=0.2, retries=2)
    t0 = time.monotonic()
    assert t.send(b"\xff\xd8x", seq=0, capture_ns=0) is False
    assert time.monotonic() - t0 < 2.0 and t.counters["timeouts"] == 3 and t.counters["given_up"] == 1
    t.close()


def test_publisher_sends_a_file_paced_and_reassembles(ingest, person_clip):
    ing, buf, (p1, _) = ingest
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "sender", "--source", str(person_clip), "--receiver",
                          f"127.0.0.1:{p1}", "--fps", "50", "--max-frames", "25"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 25 and summary["sent"] == 25
    frames = drain(buf, 25)
    assert [f.seq for f in frames] == list(range(25))
    assert elapsed >= 0.45  # 25 frames at 50 fps take half a second: it paced itself
    img = cv2.imdecode(np.frombuffer(frames[0].data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] > 100


def test_publisher_synthetic_source_over_zmq():
    buf = FrameBuffer(per_port=100)
    port = free_port()
    hub = ZmqHub("127.0.0.1", port, buf, pipelines={7000: "face"}, default_pipeline="person")
    hub.start()
    try:
        out = subprocess.run([sys.executable, "-m", "sender", "--source", "synthetic:320x240", "--transport", "zmq",
                              "--receiver", f"127.0.0.1:{port}", "--camera-port", "7000", "--max-frames", "5",
                              "--fps", "100"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        frames = drain(buf, 5)
        assert [(f.port, f.seq, f.pipeline) for f in frames] == [(7000, i, "face") for i in range(5)]
    finally:
        hub.stop()
        hub.join(5)
