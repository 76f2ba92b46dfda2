"""Behaviours end to end, on a clip whose truth is exact: one person walks in, stands in a zone for 6 s,
leaves to the right across a line, and later walks back to the left across it without stopping.

Streamed over UDP through a receiver to one and to two workers, the master must count one crossing
each way, raise exactly one dwell event (start, then end) with its webhooks, and write a clip of it
that decodes, shows the person, and plays in Chromium.
"""

from __future__ import annotations

import http.client
import json

import av
import numpy as np
import pytest

from cluster.local import LocalCluster, free_udp_ports, wait_for_log
from cluster.testdata import walkway_camera, walkway_clip
from tests.browser.chromium import CHROMIUM_ARGS, chromium
from tests.conftest import wait_until
from tests.integration.test_events import Hook, webhook  # noqa: F401 - the fixture

DWELL_S = 3


def config(port: int, clip: str, hook: str) -> str:
    return f"[receivers.hub]\nports = [{port}]\n" + walkway_camera(port, clip, dwell_s=DWELL_S, webhook=hook)


def drained(client, port: int):
    """A condition: the camera's frames on the master are all done, and no new one came for a second."""
    last = {"added": -1}

    def done() -> bool:
        c = client.get_stats()["ports"].get(str(port), {})
        still = c.get("added", 0) == last["added"]
        last["added"] = c.get("added", 0)
        return still and c.get("added", 0) > 0 and not c.get("pending", 0) and not c.get("in_progress", 0)
    return done


def ended(events: list[dict]) -> list[dict] | None:
    """The loiter rule's entries, once one of them is an end."""
    mine = [e for e in events if e["rule"] == "loiter"]
    return mine if any(e["phase"] == "end" for e in mine) else None


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("walkway") / "walkway.mp4"
    truth = walkway_clip(path)
    return str(path), truth


@pytest.mark.parametrize("workers", [1, 2])
def test_counts_a_dwell_event_and_its_clip_match_the_truth(tmp_path, clip, webhook, workers):  # noqa: F811
    path, truth = clip
    [port] = free_udp_ports(1)
    cfg = tmp_path / "framehive.toml"
    cfg.write_text(config(port, path, webhook))
    with LocalCluster(log_dir=tmp_path / "logs") as cluster:
        cluster.start_master("--config", str(cfg), "--media-dir", str(tmp_path / "media"))
        rx = cluster.spawn("hub", "receiver", "--name", "hub", "--master", cluster.master_url)
        wait_for_log(rx, "receiving UDP", 30)
        cluster.start_workers(workers, "--threads", "1", "--preload", "person")
        # the file once, at its own pace (the camera's config would loop it)
        pub = cluster.start_publisher(port, path, "--fps", "10")
        wait_until(lambda: pub.popen.poll() is not None, 120)
        with cluster.client() as c:
            # every frame the receiver passed on is finished or dropped (a loaded machine drops stale ones)
            wait_until(drained(c, port), 90, interval=1.0)
            # the second walk's crossing needs the track to be confirmed and clear of the line: settle
            wait_until(lambda: sum(c.call("get_counts")["walkway"]["lines"]["exit"].get("in", {}).values()) >= 1, 30)
            counts = c.call("get_counts")["walkway"]
            events = wait_until(lambda: ended(c.call("get_events", 0, 100)["events"]), 30)
        right, left = truth["crossings"]["right"], truth["crossings"]["left"]
        assert counts["lines"]["exit"] == {"out": {"person": right}, "in": {"person": left}}
        zones = counts["zones"]["middle"]
        assert [(e["phase"], e["kind"]) for e in events] == [("start", "dwell"), ("end", "dwell")], events
        start, end = events
        assert start["id"] == end["id"] and start["track_id"] > 0 and start["camera"] == "walkway"
        # the event lasts from DWELL_S into her stay in the zone to its end (by capture time, within the inertia)
        assert end["ended_at"] - start["first_at"] == pytest.approx(truth["in_zone_s"] - DWELL_S, abs=0.6)
        assert zones["entered"] == {"person": 2} and zones["peak"] == {"person": 1} and zones["now"] == {}
        phases = wait_until(lambda: [h["event"]["phase"] for h in Hook.received] if len(Hook.received) >= 2 else None,
                            15)
        assert phases == ["start", "end"]

        # the clip: written in the background, served with byte ranges, decodes, shows the person
        wait_until(lambda: json.loads(http_get(cluster.master_port, f"/api/v1/events/{start['id']}")[2])["clip"]
                   == "ready", 60)
        status, headers, mp4 = http_get(cluster.master_port, f"/events/{start['id']}/clip.mp4")
        assert status == 200 and headers["content-type"] == "video/mp4" and headers["accept-ranges"] == "bytes"
        status, headers, part = http_get(cluster.master_port, f"/events/{start['id']}/clip.mp4",
                                         {"Range": "bytes=100-199"})
        assert status == 206 and part == mp4[100:200] and headers["content-range"] == f"bytes 100-199/{len(mp4)}"
        assert mp4.find(b"moov") < mp4.find(b"mdat"), "moov first: it plays before it has all arrived"
        clip_file = tmp_path / "clip.mp4"
        clip_file.write_bytes(mp4)
        frames = [f.to_ndarray(format="bgr24") for f in av.open(str(clip_file)).decode(video=0)]
        with av.open(str(clip_file)) as container:
            stream = container.streams.video[0]
            seconds = float(stream.duration * stream.time_base)
            assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (768, 432)
        # pre-roll 5 s (from the event's start at 3 s into the stay) + the rest of the stay + 5 s post-roll
        assert 8.0 <= seconds <= 16.0, seconds
        assert shows_a_person(frames[len(frames) // 4])

        assert plays_in_chromium(cluster.master_url, start["id"])


def shows_a_person(frame: np.ndarray) -> bool:
    from worker.detectors.nanodet import NanoDet, thresholds_for, to_detections
    from worker.models.store import ModelStore

    net = NanoDet(ModelStore().ensure(fetch=False), device="cpu", threads=1)
    return any(d.label == "person" for d in to_detections(net.find(frame, thresholds_for({"person": 0.5}), "auto")))


def plays_in_chromium(master_url: str, event_id: str) -> bool:
    """A real Chromium loads the clip in a <video>, decodes a picture and plays on."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{master_url}/healthz")  # same origin as the clip
            page.set_content(f'<video id="v" muted playsinline src="{master_url}/events/{event_id}/clip.mp4"></video>')
            page.wait_for_function("document.getElementById('v').readyState >= 2", timeout=20_000)
            size = page.evaluate("[document.getElementById('v').videoWidth, document.getElementById('v').videoHeight]")
            assert size == [768, 432], size
            page.evaluate("document.getElementById('v').play()")
            page.wait_for_function("document.getElementById('v').currentTime > 0.5", timeout=20_000)
            return True
        finally:
            browser.close()
