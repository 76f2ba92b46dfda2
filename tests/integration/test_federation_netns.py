"""Past one coordinator, across a real network stack: three masters, each on its own host (a network
namespace, cluster/netns.py) with its receiver; two worker hosts whose workers serve all three masters
(`--master A,B,C`); a camera host publishing one camera per master; the federated view on an operator's
host. Master b is SIGKILLed mid-run: the view says so and which camera that costs, the workers go on
serving a and c, whose cameras lose no result; b restarted on its host is served again by the same
workers, without anyone restarting them.

Every server binds a non-loopback address, so every role gets the cluster's token as $FRAMEHIVE_TOKEN
and the receivers' UDP ports run with --insecure (no datagram key in this test).
"""

from __future__ import annotations

import json
import signal
import time

CAMERAS = {"a": "porch", "b": "yard", "c": "shop"}
MASTER_PORT, UDP_PORT, VIEW_PORT = 8000, 5000, 8100  # each host has its own stack: fixed ports are free


# run on the operator's host: the federated dashboard, and each live master's results for its camera
VIEW = """
import http.client, json, os
from common.errors import MasterUnavailable
from common.masterclient import MasterClient
token = os.environ["FRAMEHIVE_TOKEN"]
conn = http.client.HTTPConnection({view!r}, {port}, timeout=10)
conn.request("GET", "/api/v1/dashboard", headers={{"Authorization": "Bearer " + token}})
r = conn.getresponse()
out = {{"status": r.status, "view": json.loads(r.read()), "seqs": {{}}}}
for name, url in {urls!r}.items():
    seqs, cursor = [], 0
    try:
        with MasterClient(url, token=token, timeout_s=5) as c:
            while True:
                page = c.get_results({udp}, cursor, 1000)
                if not page["results"]:
                    break
                seqs += [[x["seq"], x["worker"], x["status"]] for x in page["results"]]
                cursor = page["next"]
    except MasterUnavailable:
        seqs = None
    out["seqs"][name] = seqs
print(json.dumps(out))
"""

RESULTS_BY_CAMERA = """
import http.client, json, os
conn = http.client.HTTPConnection({view!r}, {port}, timeout=10)
conn.request("GET", "/api/v1/results?camera={camera}&limit=5",
             headers={{"Authorization": "Bearer " + os.environ["FRAMEHIVE_TOKEN"]}})
r = conn.getresponse()
print(json.dumps([r.status, r.getheader("X-Framehive-Master"), r.read().decode(errors="replace")]))
"""


def test_three_masters_on_three_hosts_one_killed(lab, tmp_path):
    masters = {n: lab.host(f"m{n}") for n in CAMERAS}
    workers = [lab.host("wk1"), lab.host("wk2")]
    cam, ops = lab.host("cam"), lab.host("ops")
    cfg = tmp_path / "framehive.toml"
    cfg.write_text(
        "".join(f'[masters.{n}]\nhost = "{h.ip}"\nport = {MASTER_PORT}\n' for n, h in masters.items())
        + "".join(f'[receivers.rx-{n}]\nmaster = "{n}"\nhost = "{h.ip}"\nports = [{UDP_PORT}]\n'
                  for n, h in masters.items())
        + "".join(f'[cameras.{c}]\nsource = "synthetic:160x120"\nreceiver = "rx-{n}"\nfps = 10\npipeline = "noop"\n'
                  for n, c in CAMERAS.items()))
    urls = {n: f"http://{h.ip}:{MASTER_PORT}" for n, h in masters.items()}
    query = VIEW.format(view=ops.ip, port=VIEW_PORT, urls=urls, udp=UDP_PORT)

    procs = {}
    for n, h in masters.items():  # what `framehive up --master n` starts on each master's host
        procs[n] = h.spawn(f"master-{n}", "master", "--config", str(cfg), "--name", n)
        ready = ("import json; from common.masterclient import wait_for_master\n"
                 f"print(json.dumps(wait_for_master({urls[n]!r}, 30)))")
        assert ops.python(ready, timeout_s=60) is True, procs[n].log_text()
        rx = h.spawn(f"rx-{n}", "receiver", "--name", f"rx-{n}", "--master", urls[n], "--insecure")
        lab.wait_log(rx, "receiving UDP", 30)
    for i, w in enumerate(workers):  # each worker process serves the three masters
        w.spawn(f"worker{i}", "worker", "--master", ",".join(urls.values()), "--name", f"wk{i}", "--threads", "1")
    for n, camera in CAMERAS.items():
        cam.spawn(f"pub-{n}", "sender", "--master", urls[n], "--camera", camera)
    fed = ops.spawn("federation", "master.federation", "--config", str(cfg), "--host", ops.ip,
                    "--port", str(VIEW_PORT), "--poll-s", "0.5")
    lab.wait_log(fed, "federation of 3 master(s)", 30)

    def look() -> dict:
        out = ops.python(query, timeout_s=60)
        assert out["status"] == 200, out
        return out

    def wait(pred, timeout_s: float, what: str) -> None:
        """Poll `pred` (each call runs a query on the operator's host) until it holds."""
        deadline = time.monotonic() + timeout_s
        while not pred():
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}\n{p.log_text()[-1500:]}" for p in lab.procs)
                raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{logs}")
            time.sleep(0.5)

    def serving(out: dict, n: str, since: int = 0) -> bool:
        """Master n has results from both worker hosts, after seq `since`."""
        rows = out["seqs"][n] or []
        return {w.split("@")[0] for s, w, _ in rows if s > since} >= {"wk0", "wk1"}

    wait(lambda: all(serving(look(), n) for n in CAMERAS), 90, "every master served by both worker hosts")
    d = look()["view"]
    assert [m["state"] for m in d["masters"]] == ["up", "up", "up"], d["masters"]
    assert {c["name"]: c["master"] for c in d["cameras"]} == {"porch": "a", "yard": "b", "shop": "c"}
    for n, camera in CAMERAS.items():  # each camera's results only on its own master, read by name
        status, owner, body = ops.python(RESULTS_BY_CAMERA.format(view=ops.ip, port=VIEW_PORT, camera=camera))
        assert status == 200 and owner == n and json.loads(body)["results"][0]["camera"] == camera, body

    # master b's host loses its master: SIGKILL, no goodbye
    before = look()["seqs"]
    last = {n: max(s for s, _, _ in before[n]) for n in ("a", "c")}
    procs["b"].popen.send_signal(signal.SIGKILL)
    procs["b"].popen.wait(10)
    lab.procs.remove(procs["b"])
    wait(lambda: look()["view"]["masters"][1]["state"] == "down", 30, "the view marks b down")
    d = look()["view"]
    yard = next(c for c in d["cameras"] if c["name"] == "yard")
    assert yard["unreachable"] and d["masters"][1]["cameras"] == ["yard"], d["masters"]
    assert [m["state"] for m in d["masters"]] == ["up", "down", "up"]
    status, _, body = ops.python(RESULTS_BY_CAMERA.format(view=ops.ip, port=VIEW_PORT, camera="yard"))
    assert status == 502 and "does not answer" in body, body

    # a's and c's cameras go on, served by the same two workers, with no result lost
    wait(lambda: all(serving(out, n, last[n] + 30) for out in [look()] for n in ("a", "c")), 90,
         "a and c served on by both workers")
    after = look()["seqs"]
    for n in ("a", "c"):
        got = sorted(s for s, _, _ in after[n])
        assert len(got) == len(set(got)), f"duplicated results on master {n}"
        missing = sorted(set(range(got[0], got[-1] + 1)) - set(got))
        assert not missing, f"camera {CAMERAS[n]} on master {n} lost results: {missing[:10]}"
        assert all(st == "ok" for _, _, st in after[n])
    assert after["b"] is None

    # b back on its host (no state dir: a fresh master): the workers find it by themselves
    procs["b"] = masters["b"].spawn("master-b2", "master", "--config", str(cfg), "--name", "b")
    wait(lambda: look()["view"]["masters"][1]["state"] == "up", 60, "the view marks b up again")
    wait(lambda: serving(look(), "b"), 90, "the restarted b served by both workers")
    d = look()["view"]
    assert not next(c for c in d["cameras"] if c["name"] == "yard")["unreachable"]
    for p in lab.procs:
        assert p.alive(), f"{p.name} exited: {p.log_text()[-1500:]}"
    print(json.dumps({"results": {n: len(s or []) for n, s in look()["seqs"].items()}}))
