"""Across hosts: master, receiver, workers and publishers each in their own network namespace, joined
by veth pairs and a bridge (cluster/netns.py), one camera's link losing 5 % of its packets (netem).

Every server binds a non-loopback address here, so the master runs with a token (every role gets it
as $FRAMEHIVE_TOKEN) and the receiver's UDP ports with --insecure (no datagram key in this test).
"""

from __future__ import annotations

import json
import time

from cluster import netns
from cluster.local import free_port

N = 60  # frames per camera
RX_PORTS = (5000, 5001)  # 5000: a clean link; 5001: a publisher whose link loses 5 % of its packets


QUERY = """
import json
from common.config import MasterLink
with MasterLink.load({url!r}).client() as c:  # the token comes from $FRAMEHIVE_TOKEN
    out = {{"stats": c.get_stats(), "results": {{}}}}
    for port in {ports!r}:
        rs, cursor = [], 0
        while True:
            page = c.get_results(port, cursor, 1000)
            if not page["results"]:
                break
            rs += page["results"]
            cursor = page["next"]
        out["results"][str(port)] = rs
print(json.dumps(out))
"""


def test_cluster_across_namespaces_with_a_lossy_camera_link(lab, person_clip):
    t0 = time.monotonic()
    master, receiver = lab.host("mst"), lab.host("rcv")
    workers = [lab.host("wk1"), lab.host("wk2")]
    cam, lossy = lab.host("cam"), lab.host("lossy")
    lossy_to = f"{receiver.ip}:{RX_PORTS[1]}"
    if netns.netem_missing() is None:
        lab.netem(lossy, "loss", "5%")
    else:  # this kernel has no sch_netem: the lossy host's datagrams cross a relay that drops 5 %
        relay_port = 6001
        lab.lossy_relay(lossy, relay_port, lossy_to, 0.05)
        lossy_to = f"127.0.0.1:{relay_port}"
    mport = free_port()
    url = f"http://{master.ip}:{mport}"

    m = master.spawn("master", "master", "--host", master.ip, "--port", str(mport))
    ready = ("import json; from common.masterclient import wait_for_master\n"
             f"print(json.dumps(wait_for_master({url!r}, 20)))")
    assert receiver.python(ready) is True, m.log_text()
    # without the token the master answers nothing but /healthz, even to its own host
    refused = ("import json; from common.masterclient import MasterClient\n"
               f"try:\n    MasterClient({url!r}, token=None).get_stats(); print(json.dumps('served'))\n"
               "except Exception as e:\n    print(json.dumps(type(e).__name__ + ': ' + str(e)))")
    answer = master.python(refused.replace("token=None", "token=''"))
    assert answer != "served" and ("401" in answer or "token" in answer.lower()), answer

    rx = receiver.spawn("receiver", "receiver", "--host", receiver.ip, "--insecure", "--master", url,
                        "--ports", ",".join(map(str, RX_PORTS)), "--pipeline", "noop", "--name", "receiver")
    lab.wait_log(rx, "receiving UDP", 20)
    for i, w in enumerate(workers):
        w.spawn(f"worker{i}", "worker", "--master", url, "--name", f"worker{i}", "--threads", "1")
    query = QUERY.format(url=url, ports=list(RX_PORTS))

    deadline = time.monotonic() + 30
    while sum(w["alive"] for w in receiver.python(query)["stats"]["workers"]) < 2:
        assert time.monotonic() < deadline, [p.log_text()[-1500:] for p in lab.procs]
        time.sleep(0.5)

    # --chunk-size 1400 on both (the default off loopback): ~22 datagrams per frame of this clip
    pubs = [h.spawn(f"publisher{port}", "sender", "--source", str(person_clip), "--receiver", to,
                    "--fps", "10", "--max-frames", str(N), "--chunk-size", "1400")
            for h, port, to in ((cam, RX_PORTS[0], f"{receiver.ip}:{RX_PORTS[0]}"), (lossy, RX_PORTS[1], lossy_to))]
    for p in pubs:
        assert p.popen.wait(60) == 0, p.log_text()
    sent = {port: json.loads(p.log_text().strip().splitlines()[-1]) for p, port in zip(pubs, RX_PORTS)}

    def settled() -> dict | None:
        out = receiver.python(query)
        s = out["stats"]
        rxc = s["sources"].get("receiver", {}).get("ports", {})
        done = all(str(p) in rxc and rxc[str(p)]["forwarded"] == s["ports"].get(str(p), {}).get("completed", -1)
                   for p in RX_PORTS)
        return out if done and s["pending"] == s["in_progress"] == 0 else None

    deadline = time.monotonic() + 30
    while not (out := settled()):
        assert time.monotonic() < deadline, f"results did not settle: {receiver.python(query)['stats']}"
        time.sleep(1)
    stats, results = out["stats"], out["results"]
    rxc = stats["sources"]["receiver"]["ports"]
    report = {"elapsed_s": round(time.monotonic() - t0, 1), "sent": sent, "no_token": answer,
              "results": {p: len(r) for p, r in results.items()}, "receiver": rxc, "master": stats["ports"]}
    print(json.dumps(report))

    clean, bad = str(RX_PORTS[0]), str(RX_PORTS[1])
    for port in (clean, bad):
        seqs = [r["seq"] for r in results[port]]
        assert len(seqs) == len(set(seqs)), f"duplicated results on {port}"
        # done by the workers in their own namespaces
        assert all(r["status"] == "ok" and r["worker"].split("#")[0] in ("worker0", "worker1")
                   for r in results[port]), results[port][:2]
        # every frame the receiver completed became a result: nothing vanished between hosts
        assert len(seqs) == rxc[port]["frames_complete"] == rxc[port]["forwarded"], report
        assert rxc[port]["malformed"] == 0, report
    assert sent[RX_PORTS[0]]["sent"] == sent[RX_PORTS[1]]["sent"] == N, report
    assert rxc[clean]["datagrams"] == sent[RX_PORTS[0]]["datagrams"], report
    assert rxc[bad]["datagrams"] < sent[RX_PORTS[1]]["datagrams"], report
    # the clean link delivers everything across the bridge
    assert len(results[clean]) == N and rxc[clean]["frames_incomplete"] == 0, report
    # the lossy one: frames of ~22 datagrams lose one often; the receiver counts them as incomplete
    assert rxc[bad]["frames_incomplete"] > 0 and len(results[bad]) < N, report
    assert rxc[bad]["frames_complete"] + rxc[bad]["frames_incomplete"] <= N, report
