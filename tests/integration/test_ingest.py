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
from tests.cores import CORE_NAMES


def jpeg(frame: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


@pytest.fixture(params=CORE_NAMES)
def ingest(request):
    ports = free_udp_ports(2)
    buf = FrameBuffer(per_port=1000)
    ing = UdpIngest("127.0.0.1", ports, {p: "person" for p in ports}, buf, core=request.param)
    assert ing.core == request.param
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


KEY = bytes(range(64, 96))


def raw_request(port: int, parts: list[bytes]) -> bytes:
    """Send one multipart request on a plain REQ socket (what an attacker on the network can do)."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send_multipart(parts)
        return sock.recv()
    finally:
        sock.close(0)


def signed_parts(key: bytes, body: bytes, *, n: int, ts: int, sid: str = "0123abcd", msg: str = "cam") -> list[bytes]:
    from common.protocol import zmq_mac

    auth = {"sid": sid, "n": n, "ts": ts}
    mac = zmq_mac(key, **auth, msg=msg, dtype="", shape=[], body=body)
    return [json.dumps({"msg": msg, "auth": {**auth, "mac": mac}}).encode(), body]


def test_keyed_hub_takes_signed_frames_and_refuses_unsigned_forged_and_replayed():
    buf = FrameBuffer(per_port=100)
    port = free_port()
    hub = ZmqHub("127.0.0.1", port, buf, pipelines={}, default_pipeline="person", key=KEY)
    hub.start()
    img = jpeg(np.full((32, 32, 3), 128, np.uint8))
    try:
        ours = ZmqTransport("127.0.0.1", port, camera_port=5005, name="ours", key=KEY)
        assert ours.send(img, seq=1, capture_ns=1) and ours.send(img, seq=2, capture_ns=2)
        ours.close()
        stock = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
        reply = stock.send_jpg("cam-a", img)
        stock.close()
        assert reply.startswith(b"ERR unsigned:") and b"key" in reply
        wrong = ZmqTransport("127.0.0.1", port, camera_port=5005, name="wrong", key=bytes(32), retries=0)
        assert wrong.send(img, seq=3, capture_ns=3) is False and wrong.counters["refused"] == 1
        wrong.close()
        now = time.time_ns()
        first = signed_parts(KEY, img, n=1, ts=now)
        assert raw_request(port, first) == b"OK"
        assert raw_request(port, first).startswith(b"ERR replayed:")  # the same request captured and re-sent
        assert raw_request(port, signed_parts(KEY, img, n=2, ts=now - 300 * 10**9)).startswith(b"ERR replayed:")
        tampered = signed_parts(KEY, img, n=3, ts=now)
        assert raw_request(port, [tampered[0], img + b"\x00"]).startswith(b"ERR forged:")
        assert raw_request(port, signed_parts(KEY, img, n=4, ts=now)) == b"OK"  # the sender goes on
        frames = drain(buf, 4)
        assert sorted((f.port, f.seq) for f in frames if f.port == 5005) == [(5005, 1), (5005, 2)]
        assert len(frames) == 4
        c = hub.counters
        assert (c["dropped_unsigned"], c["dropped_forged"], c["dropped_replayed"], c["frames_complete"]) == (1, 2, 2, 4)
        assert c["malformed"] == 0
    finally:
        hub.stop()
        hub.join(5)


def test_keyless_hub_accepts_signed_requests_and_counts_them():
    buf = FrameBuffer(per_port=100)
    port = free_port()
    hub = ZmqHub("127.0.0.1", port, buf, pipelines={}, default_pipeline="person")
    hub.start()
    try:
        ours = ZmqTransport("127.0.0.1", port, camera_port=5006, name="ours", key=KEY)
        assert ours.send(jpeg(np.zeros((16, 16, 3), np.uint8)), seq=4, capture_ns=4)
        ours.close()
        assert [(f.port, f.seq) for f in drain(buf, 1)] == [(5006, 4)]
        assert hub.counters["signed_unverified"] == 1 and hub.counters["frames_complete"] == 1
    finally:
        hub.stop()
        hub.join(5)


@pytest.mark.parametrize("core", CORE_NAMES)
def test_keyed_udp_ingest_takes_a_signed_publisher_and_drops_an_unsigned_one(person_clip, tmp_path, core):
    ports = free_udp_ports(1)
    buf = FrameBuffer(per_port=1000)
    ing = UdpIngest("127.0.0.1", ports, {ports[0]: "person"}, buf, key=KEY, core=core)
    ing.start()
    try:
        (tmp_path / "key").write_text(KEY.hex())
        base = [sys.executable, "-m", "sender", "--source", str(person_clip), "--receiver", f"127.0.0.1:{ports[0]}",
                "--fps", "100", "--max-frames", "10"]
        for extra in (["--key-file", str(tmp_path / "key")], []):
            out = subprocess.run(base + extra, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
        frames = drain(buf, 10)
        assert [f.seq for f in frames] == list(range(10))
        c = wait_until(lambda: (c := ing.counters()[str(ports[0])]).get("dropped_unsigned", 0) >= 10 and c)
        assert c["frames_complete"] == 10 and c["dropped_unsigned"] == 10 and c["malformed"] == 0
    finally:
        ing.stop()
        ing.join(5)


def test_key_options_refuse_bad_keys_and_never_take_a_key_on_the_command_line(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("not-hex")
    for module in ("receiver", "sender"):
        out = subprocess.run([sys.executable, "-m", module, "--key-file", str(bad)], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "hex digits" in out.stderr
        out = subprocess.run([sys.executable, "-m", module, "--key-file", str(tmp_path / "missing")], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "cannot read the key file" in out.stderr
        out = subprocess.run([sys.executable, "-m", module, "--key", KEY.hex()], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2  # there is no option that puts the key where `ps` shows it


def test_receiver_listens_beyond_loopback_with_a_key_and_refuses_without(tmp_path, monkeypatch):
    from common.errors import ConfigError
    from common.protocol import KEY_ENV
    from receiver.__main__ import from_flags, parse_args

    monkeypatch.delenv(KEY_ENV, raising=False)
    (tmp_path / "key").write_text(KEY.hex())
    config = from_flags(parse_args(["--host", "0.0.0.0", "--key-file", str(tmp_path / "key")]))
    assert config.key == KEY
    with pytest.raises(ConfigError, match="without a datagram key"):
        from_flags(parse_args(["--host", "0.0.0.0"]))


def test_hub_answers_hostile_numbers_and_unknown_ports_and_keeps_serving():
    """`seq: 1e400` used to raise OverflowError out of the hub thread and silence every zmq camera."""
    buf = FrameBuffer(per_port=100)
    port = free_port()
    hub = ZmqHub("127.0.0.1", port, buf, pipelines={7000: "face"}, default_pipeline="person", ports={7000})
    hub.start()
    jpg = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes()

    def ask(**fields) -> bytes:
        msg = json.dumps({"port": 7000, "seq": 1, "capture_ns": 1, **fields})
        return raw_request(port, [json.dumps({"msg": msg}).encode(), jpg])

    try:
        for bad in ({"seq": 1e400}, {"port": 1e400}, {"capture_ns": float("nan")}, {"seq": -1}, {"port": "7000"},
                    {"seq": True}, {"port": 7000.5}):
            assert ask(**bad).startswith(b"ERR "), bad
        assert b"port 7001 is not served by this receiver" in ask(port=7001)
        assert ask(seq=2) == b"OK" and ask(seq=3.0) == b"OK"
        assert [(f.port, f.seq) for f in drain(buf, 2)] == [(7000, 2), (7000, 3)]
        assert hub.counters["malformed"] == 7 and hub.counters["refused_port"] == 1
    finally:
        hub.stop()
        hub.join(5)


def test_hub_refuses_a_bomb_or_a_non_image_instead_of_answering_ok():
    """imagezmq is the reliable transport: an OK tells the sender its frame is delivered, so a picture
    the forwarder would refuse (20000x20000 claimed in a few hundred bytes, or not an image at all) is
    refused in the reply, and the next frame is taken as usual."""
    from cluster.testdata import jpeg_claiming

    buf = FrameBuffer(per_port=100)
    port = free_port()
    hub = ZmqHub("127.0.0.1", port, buf, pipelines={}, default_pipeline="person", ports={7000},
                 max_image_pixels=4096 * 4096)
    hub.start()
    good = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes()

    def send(seq: int, image: bytes) -> bytes:
        msg = json.dumps({"port": 7000, "seq": seq, "capture_ns": 1})
        return raw_request(port, [json.dumps({"msg": msg}).encode(), image])

    try:
        assert send(1, jpeg_claiming(20000, 20000)).startswith(b"ERR refused_image")
        assert send(2, b"GIF89a not a jpeg").startswith(b"ERR refused_image")
        assert send(3, good) == b"OK"
        assert [f.seq for f in drain(buf, 1)] == [3]
        assert hub.counters["refused_image"] == 2 and hub.counters["frames_complete"] == 1
    finally:
        hub.stop()
        hub.join(5)
