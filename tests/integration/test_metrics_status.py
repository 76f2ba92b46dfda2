"""/metrics, /api/v1/dashboard and `python -m master.cli.status` against a real cluster on loopback."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import cv2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.local import ROOT, LocalCluster, free_udp_ports
from common.masterclient import MasterClient
from master.observe.metrics import families
from tests.conftest import wait_until

N = 30
EXPECTED_FAMILIES = {  # the list, by the names a scraper sees
    "framehive_frames_in", "framehive_frames_out", "framehive_frames_dropped", "framehive_queue_depth",
    "framehive_tasks", "framehive_lease_expiries", "framehive_task_retries", "framehive_tasks_failed",
    "framehive_workers", "framehive_events_fired", "framehive_worker_tasks_done", "framehive_receiver_frames",
    "framehive_worker_cpu_ratio", "framehive_worker_resident_memory_bytes", "framehive_uptime_seconds",
    "process_cpu_seconds",
}


def cut_clip(src, dst, start: int, n: int) -> str:
    """Frames start..start+n of a real clip as a clip of its own (the shared clip's first person walks in
    around frame 65)."""
    cap = cv2.VideoCapture(str(src))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    out = None
    for _ in range(n):
        ok, frame = cap.read()
        if not ok:
            break
        if out is None:
            out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), 10, frame.shape[1::-1])
        out.write(frame)
    cap.release()
    assert out is not None, f"could not read {src}"
    out.release()
    return str(dst)


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.getheader("Content-Type", ""), r.read()


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """family name -> {(sample name, sorted labels): value}, parsed by prometheus-client's own parser."""
    status, ctype, body = get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        out[fam.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
    return out


def value(m: dict, family: str, sample: str, **labels: str) -> float:
    """A sample's value; a label with an empty value (a camera with no name) counts as absent, as in Prometheus."""
    want = tuple(sorted(labels.items()))
    return next((v for (name, got), v in m[family].items()
                 if name == sample and tuple(kv for kv in got if kv[1] != "") == want), 0.0)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory, person_clip):
    """A cluster that has carried N frames of the person clip on one camera, with an event rule."""
    tmp = tmp_path_factory.mktemp("metrics")
    [port] = free_udp_ports(1)
    rules = tmp / "rules.toml"
    rules.write_text(f'[[rule]]\nname = "anyone"\nports = [{port}]\nlabel = "person"\nmin_score = 0.3\n'
                     'min_frames = 1\ncooldown_s = 0.5\n')
    with LocalCluster(log_dir=tmp / "logs") as cluster:
        cluster.start_master("--rules", str(rules))
        cluster.start_receiver([port], "--pipeline", "person")
        cluster.start_workers(1, "--threads", "2", "--preload", "person")
        before = scrape(cluster.master_port)
        clip = cut_clip(person_clip, tmp / "people.mp4", 60, N)
        pub = cluster.start_publisher(port, clip, "--fps", "10")
        assert pub.popen.wait(60) == 0, pub.log_text()
        wait_until(lambda: settled(scrape(cluster.master_port), str(port)), 60, 0.3)
        yield cluster, port, before


def dropped(m: dict, stage: str, port: str) -> float:
    return sum(v for (_, labels), v in m.get("framehive_frames_dropped", {}).items()
               if ("stage", stage) in labels and ("port", port) in labels)


def settled(m: dict, p: str) -> bool:
    """Every frame the receiver took is accounted for: reported by the receiver, then queued on the
    master and either answered or dropped (a loaded machine may drop a few frames by design)."""
    rx = value(m, "framehive_receiver_frames", "framehive_receiver_frames_total", source="receiver", port=p)
    forwarded = value(m, "framehive_receiver_frames_forwarded", "framehive_receiver_frames_forwarded_total",
                      source="receiver", port=p)
    got = value(m, "framehive_frames_in", "framehive_frames_in_total", port=p)
    out = value(m, "framehive_frames_out", "framehive_frames_out_total", port=p)
    failed = value(m, "framehive_frames_failed", "framehive_frames_failed_total", port=p)
    return (rx == N and forwarded + dropped(m, "receiver", p) == N and got == forwarded
            and out + failed + dropped(m, "master", p) == got)


def test_metrics_parse_have_the_families_and_count_the_traffic(traffic):
    cluster, port, before = traffic
    p = str(port)
    after = scrape(cluster.master_port)
    assert EXPECTED_FAMILIES <= after.keys(), EXPECTED_FAMILIES - after.keys()
    assert all(name.startswith(("framehive_", "process_", "python_")) for name in after)
    assert "framehive_frames_in" not in before or not before["framehive_frames_in"]  # nothing had come yet
    assert settled(after, p)  # every frame is counted once: answered or dropped with a reason
    out = value(after, "framehive_frames_out", "framehive_frames_out_total", port=p)
    assert out >= N // 2, f"only {out} of {N} frames answered"
    assert value(after, "framehive_tasks_completed", "framehive_tasks_completed_total") == out
    assert value(after, "framehive_tasks_leased", "framehive_tasks_leased_total") >= out
    assert value(after, "framehive_queue_depth", "framehive_queue_depth", port=p) == 0
    workers = {k[1][0][1]: v for k, v in after["framehive_workers"].items()}
    assert workers["busy"] + workers["idle"] == 1 and workers["dead"] == 0
    [done] = after["framehive_worker_tasks_done"].values()
    assert done == out
    [rss] = after["framehive_worker_resident_memory_bytes"].values()
    assert rss > 10 * 2**20  # a worker with a loaded detector holds tens of MB
    stage_s = {dict(labels)["stage"]: v for (_, labels), v in after["framehive_worker_stage_seconds"].items()}
    assert 0 < stage_s["person"] < 5  # measured per frame on the worker, reported in its heartbeat
    fired = value(after, "framehive_events_fired", "framehive_events_fired_total", rule="anyone")
    assert fired >= 1, "the clip's people should fire the rule"
    assert value(after, "framehive_events_retained", "framehive_events_retained") == fired
    assert value(after, "framehive_uptime_seconds", "framehive_uptime_seconds") > value(
        before, "framehive_uptime_seconds", "framehive_uptime_seconds")


def test_dashboard_document_describes_camera_workers_and_events(traffic):
    cluster, port, _ = traffic
    status, ctype, body = get(cluster.master_port, "/api/v1/dashboard")
    assert status == 200 and ctype == "application/json"
    d = json.loads(body)
    [cam] = d["cameras"]
    assert cam["port"] == port and cam["frames_in"] > 0 and cam["frames_out"] >= N // 2 and cam["has_frame"]
    assert cam["frames_out"] + cam["dropped"] + cam["failed"] == cam["frames_in"]
    assert cam["latency_ms"] > 0 and cam["last_seq"] is not None
    assert any(x["label"] == "person" for x in cam["detections"])
    [w] = d["workers"]
    assert w["name"] == "worker0" and w["tasks_done"] == cam["frames_out"] and w["rss_mb"] > 10
    assert w["device"] == "cpu" and {"person", "objects", "person-ssd", "face", "canny"} <= set(w["stages"])
    assert 0 < w["stage_ms"]["person"] < 5000
    assert d["events"]["recent"] and d["events"]["recent"][0]["rule"] == "anyone"
    assert get(cluster.master_port, f"/ports/{port}/latest.jpg")[1] == "image/jpeg"


def test_status_command_prints_the_cluster_table(traffic):
    cluster, port, _ = traffic
    out = subprocess.run([sys.executable, "-m", "master.cli.status", "--master", cluster.master_url], cwd=ROOT,
                         capture_output=True, text=True, timeout=30, env={"COLUMNS": "160", "PATH": ""})
    assert out.returncode == 0, out.stderr
    for text in ("cameras", "workers", "events", str(port), "worker0", "anyone", "person"):
        assert text in out.stdout, f"{text!r} missing from:\n{out.stdout}"


def test_status_command_says_clearly_when_the_master_is_unreachable():
    from cluster.local import free_port
    out = subprocess.run([sys.executable, "-m", "master.cli.status", "--master", f"http://127.0.0.1:{free_port()}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "cannot reach the master" in out.stderr, out.stderr


def test_families_label_drops_by_where_and_why():
    stats = {"ports": {"5000": {"added": 10, "completed": 6, "dropped_overflow": 3, "dropped_stale": 1,
                                "camera": "front-door"}},
             "sources": {"rx": {"age_s": 0.5, "ports": {"5000": {"frames_incomplete": 2, "malformed": 1,
                                                                 "skipped_no_motion": 4, "frames_complete": 9}}}},
             "counters": {"added": 10, "brand_new": 7}}
    got = {(f.name, tuple(sorted(s.labels.items()))): s.value for f in families(stats) for s in f.samples}
    drop = "framehive_frames_dropped"  # labelled with the camera's name too
    assert got[drop, (("camera", "front-door"), ("port", "5000"), ("reason", "overflow"), ("stage", "master"))] == 3
    assert got[drop, (("camera", "front-door"), ("port", "5000"), ("reason", "stale"), ("stage", "master"))] == 1
    assert got[drop, (("camera", "front-door"), ("port", "5000"), ("reason", "incomplete"), ("stage", "receiver"))] == 2
    assert got[drop, (("camera", "front-door"), ("port", "5000"), ("reason", "malformed"), ("stage", "receiver"))] == 1
    assert got[drop, (("camera", "front-door"), ("port", "5000"), ("reason", "no_motion"), ("stage", "receiver"))] == 4
    assert got["framehive_task_events", (("event", "brand_new"),)] == 7  # a counter added later is not lost


def test_every_frame_says_where_its_time_went_and_metrics_have_the_histograms(traffic):
    cluster, port, _ = traffic
    p = str(port)
    with MasterClient(cluster.master_url) as c:
        rs = [r for r in c.get_results(port, 0, 1000)["results"] if r["status"] == "ok"]
    assert rs
    for r in rs:
        st = r["stages_ms"]
        assert set(st) == {"network_in", "receiver", "to_master", "queue", "work", "dispatch", "end_to_end"}, st
        assert all(v >= 0 for v in st.values()), st  # one host here: no clock offset to make a span negative
        assert st["work"] >= r["timings_ms"]["person"]
        # the parts add up to the whole, up to rounding and the moments between stamps
        parts = sum(st[k] for k in ("network_in", "receiver", "to_master", "queue", "work", "dispatch"))
        assert abs(parts - st["end_to_end"]) < 5.0, st
    m = scrape(cluster.master_port)
    work = value(m, "framehive_stage_duration_seconds", "framehive_stage_duration_seconds_count", port=p,
                 stage="work", clocks="one-host")
    assert work == len(rs)
    assert value(m, "framehive_stage_duration_seconds", "framehive_stage_duration_seconds_count", port=p,
                 stage="network_in", clocks="cross-host") == len(rs)
    e2e = value(m, "framehive_end_to_end_latency_seconds", "framehive_end_to_end_latency_seconds_count", port=p)
    inf = value(m, "framehive_end_to_end_latency_seconds", "framehive_end_to_end_latency_seconds_bucket", port=p,
                le="+Inf")
    assert e2e == inf == len(rs)
    total = value(m, "framehive_end_to_end_latency_seconds", "framehive_end_to_end_latency_seconds_sum", port=p)
    assert total == pytest.approx(sum(r["stages_ms"]["end_to_end"] for r in rs) / 1000, rel=0.01)
