"""Frames over a local AF_UNIX socket on real sockets: the publisher's transport, the receiver's ingest,
its file's mode and lifetime, and malformed input."""

from __future__ import annotations

import os
import socket
import stat

import cv2
import numpy as np
import pytest

from common.unixproto import encode_header
from receiver.buffer import FrameBuffer
from receiver.unixingest import UnixIngest
from sender.transport import UnixTransport
from tests.conftest import wait_until

PORT = 5010
JPEG = cv2.imencode(".jpg", np.full((24, 32, 3), 128, np.uint8))[1].tobytes()


@pytest.fixture
def ingest(tmp_path):
    path = str(tmp_path / "cam.sock")
    buf = FrameBuffer(per_port=1000)
    ing = UnixIngest({path: PORT}, {PORT: "noop"}, buf)
    ing.start()
    yield ing, buf, path
    ing.stop()
    assert ing.join(5)


def take(buf: FrameBuffer, want: int) -> list:
    got: list = []
    wait_until(lambda: got.extend(buf.take(1000, 0.05)) or len(got) >= want)
    return got


def raw_client(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    return s


def test_frames_arrive_in_order_and_the_socket_file_is_private_and_removed(ingest):
    ing, buf, path = ingest
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(path).st_mode)
    tx = UnixTransport(path)
    assert all(tx.send(JPEG, seq=i, capture_ns=1000 + i) for i in range(20))
    frames = take(buf, 20)
    assert [(f.port, f.seq, f.capture_ns, f.data, f.pipeline) for f in frames] == [
        (PORT, i, 1000 + i, JPEG, "noop") for i in range(20)]
    assert frames[0].meta == {"source": f"unix:{path}", "via": "unix"}
    tx.close()
    ing.stop()
    assert ing.join(5)
    assert not os.path.exists(path)


def test_malformed_input_is_counted_and_dropped_and_good_frames_go_on(ingest):
    ing, buf, path = ingest
    good = UnixTransport(path, camera_port=PORT)
    assert good.send(JPEG, seq=1, capture_ns=1)
    bad = raw_client(path)
    bad.sendall(encode_header(port=PORT + 1, seq=2, capture_ns=2, length=len(JPEG)) + JPEG)  # not its port
    bad.sendall(encode_header(port=0, seq=3, capture_ns=3, length=4) + b"GIF8")  # not a JPEG
    bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not a header: the connection is closed
    assert bad.recv(10) == b""
    bad.close()
    assert good.send(JPEG, seq=4, capture_ns=4)
    assert [f.seq for f in take(buf, 2)] == [1, 4]
    c = wait_until(lambda: (c := ing.counters()[str(PORT)])["malformed"] == 3 and c)
    assert (c["wrong_port"], c["not_jpeg"], c["bad_magic"], c["frames_complete"]) == (1, 1, 1, 2)
    good.close()


def test_a_stale_socket_file_is_replaced_and_a_live_one_or_a_plain_file_refused(tmp_path):
    path = str(tmp_path / "cam.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what a killed receiver leaves
    stale.close()
    buf = FrameBuffer()
    first = UnixIngest({path: PORT}, {PORT: "noop"}, buf)
    with pytest.raises(OSError, match="another process serves"):
        UnixIngest({path: PORT}, {PORT: "noop"}, buf)
    first.close()
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(OSError, match="not a socket"):
        UnixIngest({str(plain): PORT}, {PORT: "noop"}, buf)
    assert plain.read_text() == "x"


def test_the_transport_waits_for_a_receiver_and_reconnects_after_it_restarts(tmp_path):
    path = str(tmp_path / "cam.sock")
    buf = FrameBuffer(per_port=1000)
    tx = UnixTransport(path, retry_s=0.05)
    assert not tx.send(JPEG, seq=0, capture_ns=0) and tx.counters["not_connected"] == 1
    for run in range(2):
        ing = UnixIngest({path: PORT}, {PORT: "noop"}, buf)
        ing.start()
        try:
            wait_until(lambda run=run: tx.send(JPEG, seq=run, capture_ns=run))
            assert [f.seq for f in take(buf, 1)] == [run]
        finally:
            ing.stop()
            assert ing.join(5)
        wait_until(lambda: not tx.send(JPEG, seq=99, capture_ns=0))  # it went away: noticed, not fatal
    assert tx.counters["connects"] == 2
    tx.close()


def test_receiver_flags_give_each_socket_a_camera_port_of_its_own():
    from common.errors import ConfigError
    from receiver.__main__ import from_flags, parse_args

    def config_of(*argv: str):
        return from_flags(parse_args(list(argv)))

    config = config_of("--ports", "none", "--unix-socket", "/run/a.sock=5010", "--unix-socket", "/run/b=x.sock=5011",
                       "--pipeline", "noop", "--pipeline", "5011=face")
    assert config.unix_sockets == {"/run/a.sock": 5010, "/run/b=x.sock": 5011}
    assert config.pipelines == {5010: "noop", 5011: "face"} and config.display_name.endswith(":unix5010")
    for argv, why in [(("--ports", "5000", "--unix-socket", "/a=5000"), "of its own"),
                      (("--unix-socket", "/a=5010", "--unix-socket", "/b=5010"), "of its own"),
                      (("--unix-socket", "/a=0"), "1..65535"),
                      (("--unix-socket", "/a.sock"), "must look like"),
                      (("--unix-socket", "/a=5010", "--unix-socket", "/a=5011"), "given twice")]:
        with pytest.raises((ConfigError, ValueError), match=why):
            config_of(*argv)
