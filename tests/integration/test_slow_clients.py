"""Slow and greedy clients against the master's connection slots: a request head that trickles in is
cut at its deadline, and one address cannot hold more than its share of the slots."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

from master.api.httpserver import EVICT_AFTER_S
from tests.conftest import RunningMaster, wait_until


@pytest.fixture
def small_master():
    m = RunningMaster(max_connections=32, max_connections_per_host=8)
    m.server.head_timeout_s = 1.0
    m.start()
    yield m
    m.stop()


def connect(master, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", master.port))
    return s


def closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        s.setblocking(True)


def test_a_trickled_request_head_is_cut_at_its_deadline(small_master):
    """A byte every 0.2 s keeps a per-read timeout happy for ever (the whole head here would take
    50 s); the head deadline (1 s here) ends it long before."""
    s = connect(small_master)
    started, cut_after = time.monotonic(), None
    try:
        for b in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200:
            if closed_by_peer(s):
                cut_after = time.monotonic() - started
                break
            s.send(bytes([b]))
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        cut_after = time.monotonic() - started
    finally:
        s.close()
    assert cut_after is not None and cut_after < 20, cut_after


def test_one_address_cannot_take_every_slot(small_master):
    hogs = [connect(small_master) for _ in range(8)]  # idle connections from 127.0.0.1
    try:
        extra = connect(small_master)
        extra.settimeout(5)
        assert extra.recv(1) == b""  # the ninth from the same address is closed at once
        extra.close()
        other = connect(small_master, "127.0.0.2")  # another client is served meanwhile
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert other.recv(1024).startswith(b"HTTP/1.1 200")
        other.close()
        assert small_master.service.errors["too_many_connections_per_host"] >= 1
    finally:
        for h in hogs:
            h.close()
    # the hogs' slots come back: the same address is served again (once the master has seen them close;
    # until then it still refuses this address, closing the connection)

    def served() -> bool:
        try:
            return urllib.request.urlopen(f"{small_master.url}/healthz", timeout=5).status == 200
        except OSError:
            return False

    wait_until(served, 10)


def test_when_every_slot_is_held_a_client_with_the_token_still_gets_in(tmp_path):
    """Idle sockets (no token needed to open one) hold every slot; a reserve slot still serves one
    request of a client that knows the token, and a trickler gets it for 2 s at most."""
    token = "s3cret-token-for-the-test"
    m = RunningMaster(max_connections=4, max_connections_per_host=64, token=token)
    m.start()
    hogs = [connect(m) for _ in range(4)]
    try:
        wait_until(lambda: m.server._slots._value == 0, 10)  # noqa: SLF001 - every slot taken
        ok = connect(m)
        ok.sendall(f"GET /api/v1/stats HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        assert ok.recv(1024).startswith(b"HTTP/1.1 200")
        ok.close()
        anon = connect(m)
        anon.sendall(b"GET /api/v1/stats HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert anon.recv(1024).startswith(b"HTTP/1.1 401")
        anon.close()
        slow = connect(m)
        started = time.monotonic()
        slow.sendall(b"GET /heal")
        slow.settimeout(10)
        assert slow.recv(1024) == b"" and time.monotonic() - started < 8  # cut at the reserve's 2 s
        slow.close()
        assert m.service.errors["served_from_reserve"] >= 3
    finally:
        for h in hogs:
            h.close()
        m.stop()


def test_idle_sockets_from_many_addresses_give_way_to_a_newcomer():
    """Every slot held by idle sockets from many addresses, each under the per-address cap (and no
    reserve slot left: here there is none): a new client still gets in, in the slot of the socket that
    has waited longest for a request head."""
    m = RunningMaster(max_connections=4, max_connections_per_host=2, reserve_slots=0)
    m.start()
    hogs = [connect(m, f"127.0.0.{10 + i // 2}") for i in range(4)]  # two per address, within the cap
    newcomers: list[socket.socket] = []
    try:
        wait_until(lambda: m.server.idle_connections(older_than_s=EVICT_AFTER_S) == 4, 10)
        for n in range(1, 4):  # each newcomer is served at once, in the slot of the longest-idle hog
            new = connect(m, f"127.0.0.{30 + n}")
            newcomers.append(new)  # kept open: the slots stay full for the next one
            new.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert new.recv(1024).startswith(b"HTTP/1.1 200"), n
            assert m.service.errors["evicted_idle"] == n
        wait_until(lambda: sum(closed_by_peer(h) for h in hogs) == 3, 10)  # the oldest idle ones gave way
        assert m.service.errors["too_many_connections"] == 0
        # slots are counted right through the hand-overs: once everyone leaves, all 4 are free again
        for s in hogs + newcomers:
            s.close()
        wait_until(lambda: m.server._slots._value == 4, 10)  # noqa: SLF001
    finally:
        for s in hogs + newcomers:
            s.close()
        m.stop()
