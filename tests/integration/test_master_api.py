"""The master over real loopback sockets: verbs, the binary API, bad input, long polls."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import xmlrpc.client

import pytest

from common import batch
from common.errors import BadRequest
from common.masterclient import MasterClient
from common.tasks import Outcome, TaskSpec
from tests.conftest import RunningMaster

NOW_NS = time.time_ns()


def frame_task(port=5000, seq=0, payload=b"\xff\xd8fake"):
    return {"port": port, "seq": seq, "pipeline": "person", "captured_ns": str(NOW_NS),
            "payload": xmlrpc.client.Binary(payload)}


def proxy(m: RunningMaster) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(f"{m.url}/RPC2")


def test_seed_verbs_round_trip(master):
    p = proxy(master)
    w = p.register_worker("seed-worker")
    assert p.request_task(w["worker_id"]) == {}
    task_id = p.add_task(frame_task(seq=41, payload=b"JPEGBYTES"))
    t = p.request_task(w["worker_id"])
    assert t["id"] == task_id and t["payload"].data == b"JPEGBYTES" and t["seq"] == 41
    done = {"task_id": t["id"], "token": t["token"],
            "detections": [{"label": "person", "score": 0.7, "box": [10, 20, 30, 40]}], "timings_ms": {"person": 9}}
    assert p.complete_task(w["worker_id"], done) is True
    page = p.get_results(5000, 0)
    [r] = page["results"]
    assert r["seq"] == 41 and r["detections"][0]["box"] == [10, 20, 30, 40] and r["worker"] == w["worker_id"]
    assert page["next"] == 1 and p.get_results(5000, 1)["results"] == []


def test_batch_verbs_and_fencing(master):
    p = proxy(master)
    w = p.register_worker("w")["worker_id"]
    ids = p.add_tasks([frame_task(seq=i) for i in range(3)])
    assert len(set(ids)) == 3
    leases = p.request_tasks(w, 5)
    assert sorted(x["id"] for x in leases) == sorted(ids)
    out = p.complete_tasks(w, [{"task_id": x["id"], "token": x["token"]} for x in leases])
    assert sorted(out["accepted"]) == sorted(ids) and out["rejected"] == []
    again = p.complete_tasks(w, [{"task_id": leases[0]["id"], "token": leases[0]["token"]}])
    assert again["accepted"] == [] and len(again["rejected"]) == 1
    with pytest.raises(xmlrpc.client.Fault) as e:
        p.complete_task(w, {"task_id": leases[0]["id"], "token": leases[0]["token"]})
    assert e.value.faultCode == 4
    assert len(p.get_results(5000, 0)["results"]) == 3


@pytest.mark.parametrize("call,code,words", [
    (lambda p: p.no_such_verb(), 1, "unknown verb"),
    (lambda p: p._dispatch("get_stats", ()), 1, "unknown verb"),
    (lambda p: p.get_results("5000"), 2, "port must be an integer"),
    (lambda p: p.request_tasks(), 2, "missing a required argument"),
    (lambda p: p.get_results(1, 2, 3, "", 5), 2, "too many"),
    (lambda p: p.get_results(1, 2, 3, 4), 2, "incarnation must be the string"),
    (lambda p: p.add_task({"port": 1}), 2, "seq"),
    (lambda p: p.add_task({**frame_task(), "pipeline": "cat"}), 2, "unknown stage 'cat'"),
    (lambda p: p.add_task({**frame_task(), "payload": "not binary"}), 2, "payload"),
    (lambda p: p.add_tasks("nope"), 2, "must be an array"),
    (lambda p: p.request_tasks("nobody#1", 1), 7, "register_worker first"),
    (lambda p: p.complete_task("w", {"task_id": "x", "token": "y", "detections": [{"box": 1}]}), 2, "box"),
])
def test_bad_calls_get_clear_faults_and_server_keeps_serving(master, call, code, words):
    p = proxy(master)
    with pytest.raises(xmlrpc.client.Fault) as e:
        call(p)
    assert e.value.faultCode == code and words in e.value.faultString
    assert p.get_stats()["rejected_requests"]  # counted
    assert isinstance(p.add_task(frame_task()), str)  # and still serving


def raw_post(m: RunningMaster, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=5)
    conn.request("POST", path, body, headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_oversized_body_is_refused_before_reading():
    m = RunningMaster(max_request_bytes=1024).start()
    try:
        with socket.create_connection(("127.0.0.1", m.port), timeout=5) as s:
            s.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999\r\n\r\n")
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413") and b"over the limit" in reply
        assert proxy(m).get_stats()["rejected_requests"]["too_large"] == 1
    finally:
        m.stop()


def test_garbage_bodies(master):
    status, body = raw_post(master, "/RPC2", b"<<<not xml", {"Content-Type": "text/xml"})
    assert status == 200 and b"<fault>" in body  # XML-RPC reports errors as a Fault
    for path in ("/api/v1/tasks", "/api/v1/complete", "/api/v1/lease"):
        status, body = raw_post(master, path, b"\x00garbage")
        assert status == 400 and json.loads(body)["error"]
    status, _ = raw_post(master, "/api/v1/nope", b"")
    assert status == 404
    with socket.create_connection(("127.0.0.1", master.port), timeout=5) as s:
        s.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 411")
    assert proxy(master).get_stats()["pending"] == 0


def test_truncated_upload_does_not_block_others(master):
    s = socket.create_connection(("127.0.0.1", master.port), timeout=5)
    s.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nonly a little")
    try:
        assert proxy(master).get_stats()["pending"] == 0  # another client is served meanwhile
    finally:
        s.close()


def test_binary_api_round_trip_and_per_item_errors(master):
    with MasterClient(master.url) as c:
        w = c.register_worker("bin")["worker_id"]
        now = time.time_ns()  # frames older than the master's max age would be dropped as stale
        specs = [(TaskSpec(port=6000, seq=i, pipeline="face", captured_ns=now, received_ns=now), bytes([i]) * 48_000)
                 for i in range(5)]
        reply = c.add_tasks(specs, source="rx", counters={"ports": {"6000": {"frames_complete": 5}}})
        assert all(reply["ids"]) and reply["errors"] == []
        leases = c.lease(w, 10)
        assert [x.task.payload[:1] for x in leases] == [bytes([i]) for i in range(5)]
        out, again = c.complete(w, [Outcome(x.task.id, x.token) for x in leases[:3]],
                                failed=[(leases[3].task.id, leases[3].token, "boom")],
                                released=[(leases[4].task.id, leases[4].token)], lease_max=5)
        assert len(out["accepted"]) == 3 and out["failed"] == ["PENDING"] and out["released"] == 1
        # the same request leased the next batch: the two handed back tasks
        assert sorted(x.task.id for x in again) == sorted(x.task.id for x in leases[3:])
        assert c.get_stats()["sources"]["rx"]["ports"]["6000"]["frames_complete"] == 5
        meta = {"tasks": [{"port": 1, "seq": 1, "pipeline": "person", "captured_ns": "1"},
                          {"port": 1, "seq": "x", "pipeline": "person", "captured_ns": "1"}]}
        status, body = raw_post(master, "/api/v1/tasks", batch.pack(meta, [b"a", b"b"]))
        reply = json.loads(body)
        assert status == 200 and reply["ids"][0] and reply["ids"][1] == "" and reply["errors"][0]["index"] == 1
        with pytest.raises(BadRequest, match="register_worker"):
            c.lease("ghost#9", 1)


def test_long_poll_returns_as_soon_as_work_arrives(master):
    with MasterClient(master.url) as c:
        w = c.register_worker("poller")["worker_id"]
        t0 = time.monotonic()
        assert c.lease(w, 1, wait_s=0.3) == []
        assert 0.25 <= time.monotonic() - t0 < 2.0
        now = time.time_ns()
        task = TaskSpec(port=1, seq=1, pipeline="person", captured_ns=now, received_ns=now)
        timer = threading.Timer(0.3, lambda: MasterClient(master.url).add_tasks([(task, b"x")]))
        timer.start()
        t0 = time.monotonic()
        leases = c.lease(w, 1, wait_s=4.0)
        waited = time.monotonic() - t0
        timer.join()
        assert len(leases) == 1 and waited < 2.0


def test_http_results_endpoint_and_health(master):
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=5)
    for path, status in (("/healthz", 200), ("/api/v1/results?port=5000", 200), ("/api/v1/results", 400),
                         ("/api/v1/results?port=99999", 400), ("/nope", 404)):
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == status, path


def test_deeply_nested_xmlrpc_gets_a_fault_and_the_server_keeps_serving(master):
    depth = 100_000  # ~2.6 MB of <array><data><value>: under the size limit, far past any real call
    body = (b"<?xml version='1.0'?><methodCall><methodName>add_tasks</methodName><params><param><value>"
            + b"<array><data><value>" * depth + b"<int>1</int>" + b"</value></data></array>" * depth
            + b"</value></param></params></methodCall>")
    status, reply = raw_post(master, "/RPC2", body, {"Content-Type": "text/xml"})
    assert status == 200
    with pytest.raises(xmlrpc.client.Fault) as e:
        xmlrpc.client.loads(reply)
    assert e.value.faultCode == 2, e.value.faultString
    p = proxy(master)
    assert p.get_stats()["rejected_requests"]
    assert isinstance(p.add_task(frame_task()), str)  # still serving


def test_one_request_beats_for_many_workers(master):
    """/api/v1/heartbeats: the loops of one worker process in one request; each beat is answered on its
    own (an unknown worker is told to register), shared stats reach every worker under its own counts,
    and a worker's held list renews what it holds and hands back what it no longer lists."""
    now = time.time_ns()
    with MasterClient(master.url) as c:
        a, b = (c.register_worker(n)["worker_id"] for n in ("loop-0", "loop-1"))
        c.add_tasks([(TaskSpec(port=5000 + i, seq=i, pipeline="noop", captured_ns=now, received_ns=now), b"x")
                     for i in range(3)])
        held_a = [x.task.id for x in c.lease(a, 2)]
        [lost] = [x.task.id for x in c.lease(b, 1)]
        master.service.store._tasks[lost].leased_at -= 60  # long enough ago that no reply can be on its way
        replies = c.heartbeats([(a, {"tasks_done": 4, "busy": 1}, held_a), (b, {"tasks_done": 2}, []),
                                ("nobody#x1", {}, None)], {"rss_mb": 33.5, "tasks_done": 0})
    assert replies == [{"known": True, "renewed": 2, "reclaimed": 0}, {"known": True, "renewed": 0, "reclaimed": 1},
                       {"known": False, "renewed": 0}]
    workers = {w["name"]: w["stats"] for w in master.service.stats()["workers"]}
    assert workers["loop-0"] == {"rss_mb": 33.5, "tasks_done": 4, "busy": 1}
    assert workers["loop-1"] == {"rss_mb": 33.5, "tasks_done": 2}
    assert master.service.stats()["pending"] == 1  # b's lost lease is queued again


@pytest.mark.parametrize("body", [b"[]", b'{"beats": [1]}', b'{"beats": [{"worker": ""}]}',
                                  b'{"stats": 3, "beats": []}', b'{"beats": [{"worker": "w", "held": "abc"}]}'])
def test_malformed_heartbeats_are_refused(master, body):
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=5)
    conn.request("POST", "/api/v1/heartbeats", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 400 and "error" in json.loads(resp.read())
    conn.close()
