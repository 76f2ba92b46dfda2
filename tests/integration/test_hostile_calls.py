"""Calls that used to blind or bloat the master: poisoned heartbeats and receiver reports, XML entity
expansion, DNS rebinding, poisoned task metadata, unbounded multicalls and registrations. Each is refused
with a clear Fault (or HTTP status) and counted, and every read-out stays valid afterwards."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from master.api.rpc import FAULT_BAD_ARGS
from master.core.workers import MAX_WORKERS

ROOT = Path(__file__).resolve().parents[2]


def rpc(master) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(f"{master.url}/RPC2", allow_none=False)


def get(master, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{master.port}"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def read_outs_are_valid(master) -> dict:
    """Every read-out parses: /api/v1/stats and the dashboard as strict JSON, /metrics as Prometheus
    text, get_stats over XML-RPC, and the terminal status command prints its table."""
    status, body = get(master, "/api/v1/stats")
    assert status == 200, body[:300]
    stats = json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in /api/v1/stats"))
    status, body = get(master, "/api/v1/dashboard")
    assert status == 200 and json.loads(body, parse_constant=lambda c: pytest.fail(c))
    status, body = get(master, "/metrics")
    assert status == 200 and list(text_string_to_metric_families(body.decode()))
    assert rpc(master).get_stats()["uptime_s"] >= 0
    out = subprocess.run([sys.executable, "-m", "master.cli.status", "--master", master.url], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "workers" in out.stdout, out.stderr[-2000:]
    return stats


def deep(n: int) -> dict:
    node: dict = {"x": 1}
    for _ in range(n):
        node = {"a": node}
    return node


def deep_xml(verb: str, first: str, n: int) -> bytes:
    """An XML-RPC call whose second argument is a struct nested n deep (too deep for xmlrpc.client to
    write, so written here), first argument a string."""
    value = "<value><int>1</int></value>"
    for _ in range(n):
        value = f"<value><struct><member><name>a</name>{value}</member></struct></value>"
    return (f"<?xml version='1.0'?><methodCall><methodName>{verb}</methodName><params>"
            f"<param><value><string>{first}</string></value></param><param>{value}</param>"
            "</params></methodCall>").encode()


def post_rpc(master, body: bytes) -> object:
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=30)
    try:
        conn.request("POST", "/RPC2", body=body, headers={"Content-Type": "text/xml"})
        (result,), _ = xmlrpc.client.loads(conn.getresponse().read())
        return result
    finally:
        conn.close()


POISON = [
    {"cpu_percent": float("nan")},
    {"cpu_percent": float("inf")},
    {"when": xmlrpc.client.DateTime("20260101T00:00:00")},
    deep(300),
    {"name": "x" * 10_000},
]


@pytest.mark.parametrize("stats", POISON, ids=["nan", "inf", "datetime", "deep", "long-string"])
def test_a_poisoned_heartbeat_is_refused_and_read_outs_stay_valid(master, stats):
    proxy = rpc(master)
    wid = proxy.register_worker("w")["worker_id"]
    with pytest.raises(xmlrpc.client.Fault) as e:
        proxy.heartbeat(wid, stats)
    assert e.value.faultCode == FAULT_BAD_ARGS and "heartbeat: stats" in e.value.faultString  # names the path
    proxy.heartbeat(wid, {"cpu_percent": "high", "rss_mb": 10})  # wrong type, but well formed: kept
    read_outs_are_valid(master)


@pytest.mark.parametrize("counters", [{"ports": {"5000": {"frames": float("nan")}}},
                                      {"ports": {"5000": {"frames": "many"}}},
                                      {"ports": [1, 2]}, deep(300),
                                      {"jobs": {"jobs": [{"started_at": xmlrpc.client.DateTime()}]}}])
def test_a_poisoned_receiver_report_is_refused(master, counters):
    with pytest.raises(xmlrpc.client.Fault):
        rpc(master).report_source("receiver", counters)
    read_outs_are_valid(master)


@pytest.mark.parametrize("jobs", [{"counters": "x"}, {"counters": [1]}, {"jobs": True}, {"jobs": -1},
                                  {"jobs": [{"started_at": "x"}]}, {"jobs": [{"started_at": [1]}]},
                                  {"jobs": [{"state": "running", "job_id": ["j"], "frames_in": "many"}]}])
def test_a_well_formed_but_odd_file_job_report_leaves_every_read_out_valid(master, jobs):
    """What a report's `jobs` section holds is the receiver's word: a string where the read-outs expect a
    struct, a bool where they expect a list, text where they expect a time. Taken (it is well formed),
    it must show as nothing or 0, never break /metrics, the dashboard or the status command."""
    rpc(master).report_source("odd", {"ports": {"5000": {"frames_complete": 1}}, "jobs": jobs})
    read_outs_are_valid(master)


def test_nesting_3000_deep_is_refused(master):
    wid = rpc(master).register_worker("w")["worker_id"]
    for verb, first in (("heartbeat", wid), ("report_source", "receiver")):
        with pytest.raises(xmlrpc.client.Fault, match="nested deeper than"):
            post_rpc(master, deep_xml(verb, first, 3000))
    read_outs_are_valid(master)


def test_a_flood_of_new_source_names_cannot_push_out_a_settled_receiver(master):
    """A receiver reports once a second; between two of its reports a client invents hundreds of names.
    The made-up names displace only each other; when 64 settled sources fill every slot, a new name is
    left out and counted."""
    proxy = rpc(master)
    for _ in range(3):
        proxy.report_source("real", {"ports": {"5000": {"frames_complete": 3}}})
    for i in range(500):
        proxy.report_source(f"bogus-{i}", {"ports": {}})
        if i % 50 == 0:
            assert "real" in proxy.get_stats()["sources"], f"pushed out after {i} made-up names"
    stats = read_outs_are_valid(master)
    assert "real" in stats["sources"] and len(stats["sources"]) <= 64
    assert stats["sources"]["real"]["ports"]["5000"]["frames_complete"] == 3
    # 64 settled sources: a 65th name is refused, the settled ones stay
    for i in range(63):
        for _ in range(3):
            proxy.report_source(f"rx-{i}", {"ports": {}})
    proxy.report_source("late", {"ports": {}})
    stats = proxy.get_stats()
    assert "late" not in stats["sources"] and "real" in stats["sources"] and len(stats["sources"]) == 64
    assert stats["rejected_requests"]["sources_full"] == 1


def test_bogus_source_names_cannot_hide_a_real_receiver(master):
    proxy = rpc(master)
    for i in range(200):
        proxy.report_source(f"bogus-{i}", {"ports": {}})
    proxy.report_source("real", {"ports": {"5000": {"frames_complete": 3}}})
    stats = read_outs_are_valid(master)
    assert "real" in stats["sources"] and len(stats["sources"]) <= 64


ENTITIES = ('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            '<methodCall><methodName>report_source</methodName><params><param><value><string>&b;&b;</string>'
            '</value></param><param><value><struct></struct></value></param></params></methodCall>')


@pytest.mark.parametrize("body", [ENTITIES.encode(), ENTITIES.encode("utf-16"),
                                  "\ufeff".encode("utf-16-be") + ENTITIES.replace('<?xml version="1.0"?>', "")
                                  .encode("utf-16-be")], ids=["utf-8", "utf-16", "utf-16-be-no-declaration"])
def test_xml_entity_declarations_are_refused_before_parsing(master, body):
    """expat reads UTF-16 (told by a byte-order mark) as well as UTF-8: a declaration is refused whatever
    the encoding, before any entity is expanded (the entity here would name a source 100 a's long)."""
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=10)
    conn.request("POST", "/RPC2", body=body, headers={"Content-Type": "text/xml"})
    reply = conn.getresponse().read()
    conn.close()
    with pytest.raises(xmlrpc.client.Fault, match="must not declare a DOCTYPE or entities"):
        xmlrpc.client.loads(reply)
    assert rpc(master).get_stats()["rejected_requests"]["xml_declaration"] == 1


def test_a_utf16_call_without_declarations_is_served(master):
    body = xmlrpc.client.dumps(("real", {"ports": {}}), "report_source").replace("<?xml version='1.0'?>", "")
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=10)
    conn.request("POST", "/RPC2", body=body.encode("utf-16"), headers={"Content-Type": "text/xml"})
    (ok,), _ = xmlrpc.client.loads(conn.getresponse().read())
    conn.close()
    assert ok is True and "real" in rpc(master).get_stats()["sources"]


def test_a_tokenless_loopback_master_answers_only_to_its_own_names(master):
    assert get(master, "/api/v1/stats", host="attacker.example")[0] == 421
    assert get(master, "/api/v1/stats", host=f"attacker.example:{master.port}")[0] == 421
    # names that merely start like a loopback address are an attacker's too (127.0.0.1.nip.io resolves
    # to 127.0.0.1, and a rebinding domain may be called anything)
    for host in ("127.attacker.example", f"127.0.0.1.nip.io:{master.port}", "127.0.0.1.attacker.example"):
        assert get(master, "/api/v1/stats", host=host)[0] == 421, host
    for host in (f"localhost:{master.port}", f"127.0.0.1:{master.port}", f"[::1]:{master.port}", "localhost",
                 "127.0.0.2"):
        assert get(master, "/api/v1/stats", host=host)[0] == 200, host
    assert get(master, "/healthz", host="attacker.example")[0] == 200  # health checks stay open


def task(**meta) -> dict:
    now = str(time.time_ns())
    return {"port": 5000, "seq": 1, "pipeline": "noop", "captured_ns": now, "meta": meta,
            "payload": xmlrpc.client.Binary(b"\xff\xd8jpeg")}


@pytest.mark.parametrize("meta", [{"when": xmlrpc.client.DateTime()}, {"forwarded_ns": 1e400},
                                  {"regions": deep(10)}, {"note": "x" * 1000}])
def test_poisoned_task_metadata_is_refused_at_the_door(master, meta):
    with pytest.raises(xmlrpc.client.Fault, match="meta"):
        rpc(master).add_task(task(**meta))
    assert rpc(master).get_stats()["pending"] == 0


def test_multicall_is_bounded(master):
    proxy = rpc(master)
    many = xmlrpc.client.MultiCall(proxy)
    for _ in range(33):
        many.get_stats()
    with pytest.raises(xmlrpc.client.Fault, match="at most 32 calls"):
        many()
    waits = xmlrpc.client.MultiCall(proxy)
    waits.request_tasks("w", 1, 5.0)
    with pytest.raises(xmlrpc.client.Fault, match="request_tasks cannot be called inside"):
        waits()
    adds = xmlrpc.client.MultiCall(proxy)
    for _ in range(20):
        adds.add_tasks([task() for _ in range(60)])
    with pytest.raises(xmlrpc.client.Fault, match="1200 items in all"):
        adds()
    ok = xmlrpc.client.MultiCall(proxy)
    ok.get_stats()
    ok.add_task(task())
    assert len(list(ok())) == 2


def test_a_multicall_counts_the_items_of_every_list_it_carries(master):
    """The 1,024-item cap holds for a request whatever argument carries the lists: 32 complete_tasks of
    1,024 completions each (their list is the second argument) are 32,768 items, not 32."""
    wid = rpc(master).register_worker("w")["worker_id"]
    done = [{"task_id": f"t{i}", "token": "x", "detections": [], "timings_ms": {}, "error": ""} for i in range(1024)]
    many = xmlrpc.client.MultiCall(rpc(master))
    for _ in range(32):
        many.complete_tasks(wid, done)
    with pytest.raises(xmlrpc.client.Fault, match="32768 items in all"):
        many()
    beats = xmlrpc.client.MultiCall(rpc(master))
    for _ in range(2):
        beats.heartbeat(wid, {}, [f"t{i}" for i in range(1000)])
    with pytest.raises(xmlrpc.client.Fault, match="2000 items in all"):
        beats()


def test_a_multicall_stops_calling_when_its_time_is_spent(master, monkeypatch):
    """No verb in a multicall can wait, but some take long (get_stats of a master with 64 receivers
    reporting every port: ~1 s each, and 32 of them made one request of 40 s and a 1 GB reply). Past
    the budget, the calls left are answered with a Fault without being run."""
    import master.api.rpc as rpc_module

    monkeypatch.setattr(rpc_module, "MULTICALL_BUDGET_S", 0.0)
    many = xmlrpc.client.MultiCall(rpc(master))
    for _ in range(5):
        many.get_stats()
    replies = many().results
    assert "uptime_s" in replies[0][0]  # the first call always runs
    assert all(r["faultCode"] == FAULT_BAD_ARGS and "time" in r["faultString"] for r in replies[1:]), replies[1:]
    assert rpc(master).get_stats()["rejected_requests"]["multicall_over_time"] == 4


def test_a_multicall_budget_counts_the_time_its_replies_take_to_write(master, monkeypatch):
    """A call's reply is written after the calls ran (XML is several times a stats dict's size): the
    budget counts each reply's writing too, or 15 get_stats of a big master fit in 2 s and the reply
    was 460 MiB."""
    import master.api.rpc as rpc_module

    big = {"ports": {str(i): {f"c{j}": j for j in range(60)} for i in range(130)}}
    for i in range(16):
        master.service.report_source(f"fat{i}", big)
    monkeypatch.setattr(rpc_module, "MULTICALL_BUDGET_S", 0.5)
    started = time.monotonic()  # what one get_stats costs the master: the call and its reply's XML
    written = xmlrpc.client.dumps((rpc_module.xmlrpc_safe(master.service.stats()),), allow_none=False)
    one_s = time.monotonic() - started
    assert len(written) > 4 * 2**20
    many = xmlrpc.client.MultiCall(rpc(master))
    for _ in range(32):
        many.get_stats()
    ran = sum(isinstance(r, list) for r in many().results)
    assert 1 <= ran <= int(0.5 / one_s) + 2 and ran < 32, (ran, one_s)


def test_registrations_are_capped(master):
    proxy = rpc(master)
    for i in range(MAX_WORKERS):
        proxy.register_worker(f"w{i}")
    with pytest.raises(xmlrpc.client.Fault, match="workers are registered and alive"):
        proxy.register_worker("one-too-many")
    assert len(proxy.get_stats()["workers"]) == MAX_WORKERS


@pytest.mark.parametrize("path", ["/api/v1/lease", "/api/v1/complete"])
def test_json_nested_too_deep_for_the_parser_is_a_400_not_a_500(master, path):
    """A JSON body (lease) or batch metadata (complete) nested 100,000 deep: json.loads runs out of
    recursion; that is the client's error, said as such, and the master goes on."""
    from common import batch

    nested = b"[" * 100_000 + b"]" * 100_000
    body = nested if path == "/api/v1/lease" else \
        batch.MAGIC + len(nested).to_bytes(4, "big") + nested
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream", "Host": "localhost"})
    reply = conn.getresponse()
    text = reply.read()
    conn.close()
    assert reply.status == 400 and b"nested too deeply" in text, (reply.status, text[:200])
    read_outs_are_valid(master)
