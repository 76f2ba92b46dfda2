"""The federated view's port meets the same hostile requests as a master's: DNS rebinding against a
tokenless loopback view, XML entity declarations in any encoding, oversized bodies; each is refused
and the view goes on serving."""

from __future__ import annotations

import http.client
import threading
import xmlrpc.client
from collections.abc import Iterator

import pytest

from cluster.local import free_port
from master.federation.server import MAX_BODY_BYTES, Federation, FederationServer

ENTITIES = ('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            '<methodCall><methodName>get_results</methodName><params><param><value><string>&b;&b;</string>'
            '</value></param></params></methodCall>')


def serve(token: str | None) -> Iterator[FederationServer]:
    # one master that nobody runs: the view answers from what it knows (nothing), as when a master is down
    federation = Federation([("a", f"http://127.0.0.1:{free_port()}")], token)
    server = FederationServer(("127.0.0.1", free_port()), federation, token=token, allowed_hosts=["ops.lan"])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def view() -> Iterator[FederationServer]:
    yield from serve(None)


def request(server: FederationServer, method: str, path: str, *, host: str = "localhost", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def test_a_tokenless_loopback_view_answers_only_to_its_own_names(view):
    port = view.server_address[1]
    for host in ("attacker.example", f"127.0.0.1.nip.io:{port}", "127.attacker.example"):
        status, body = request(view, "GET", "/api/v1/dashboard", host=host)
        assert status == 421 and b"localhost only" in body, host
        call = xmlrpc.client.dumps((), "list_masters").encode()
        assert request(view, "POST", "/RPC2", host=host, body=call)[0] == 421
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "ops.lan"):
        assert request(view, "GET", "/api/v1/dashboard", host=host)[0] == 200, host
    assert request(view, "GET", "/healthz", host="attacker.example")[0] == 200


def test_with_a_token_every_name_may_ask_but_only_with_the_token():
    for server in serve("a-token-long-enough-for-the-view"):
        assert request(server, "GET", "/api/v1/dashboard", host="ops.example.org")[0] == 401
        status, _ = request(server, "GET", "/api/v1/dashboard", host="ops.example.org",
                            headers={"Authorization": "Bearer a-token-long-enough-for-the-view"})
        assert status == 200


@pytest.mark.parametrize("body", [ENTITIES.encode(), ENTITIES.encode("utf-16")], ids=["utf-8", "utf-16"])
def test_xml_entity_declarations_are_refused(view, body):
    status, reply = request(view, "POST", "/RPC2", body=body, headers={"Content-Type": "text/xml"})
    assert status == 200
    with pytest.raises(xmlrpc.client.Fault, match="must not declare a DOCTYPE or entities"):
        xmlrpc.client.loads(reply)
    (masters,), _ = xmlrpc.client.loads(request(view, "POST", "/RPC2",
                                                body=xmlrpc.client.dumps((), "list_masters").encode())[1])
    # and the view goes on (a master never seen: what XML-RPC cannot carry, None, is made to fit)
    assert [(m["name"], m["state"], m["last_seen_s"]) for m in masters] == [("a", "down", "")]


def test_oversized_or_unmeasured_bodies_are_refused_unread(view):
    status, reply = request(view, "POST", "/RPC2", body=b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413 and b"Content-Length" in reply
    # a body announced as huge is refused before a byte of it is read
    status, _ = request(view, "POST", "/RPC2", headers={"Content-Length": str(2**40)}, body=b"")
    assert status == 413
    assert request(view, "GET", "/api/v1/dashboard")[0] == 200
