"""A camera's zones, lines and live tracks drawn over its frame, and events that open with their clip, in
a real headless Chromium against a real master (MasterService behind its HTTP server, in this process).

The master runs the porch camera of CONFIG: a zone (the steps), a counting line (the gate), a line
whose direction names need escaping, and a dwell rule. The test feeds it frames (drawn here) as a
worker would complete them, so the state the page shows is exactly the one the test set up: the
master's monitor thread is not started, nothing moves between the frames the test sends.
Screenshots go to tests/artifacts/dashboard-scene*.png.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

import cv2
import numpy as np
import pytest

from common.tasks import Detection, Outcome, TaskSpec
from master.api.httpserver import MasterHTTPServer
from master.clusterfile import parse
from master.core.service import MasterService, ServiceConfig
from master.media.clips import ClipConfig
from master.media.events import EventMedia
from tests.browser.chromium import DESKTOP, PHONE, WAIT_MS, open_page, screenshot
from tests.conftest import wait_until

W, H = 640, 480  # 4:3, not the 16:9 of a card without a scene: the card must take the frame's shape
PORCH, YARD = 5000, 5001
FRAME_S = 0.1  # capture time between two frames
ESCAPED = "down & <out>"  # a direction name the page must show as text, never as markup
CONFIG = f'''[receivers.hub]
ports = "{PORCH}-{YARD}"
[cameras.porch]
source = "synthetic"
port = {PORCH}
[cameras.porch.zones.steps]
points = [[0.55, 0.5], [0.95, 0.5], [0.95, 0.95], [0.55, 0.95]]
[cameras.porch.lines.gate]
a = [0.3, 0.1]
b = [0.3, 0.95]
[cameras.porch.lines.fence]
a = [0.55, 0.18]
b = [0.95, 0.18]
directions = ["{ESCAPED}", "up"]
[cameras.yard]
source = "synthetic"
port = {YARD}
[[rule]]
name = "loiter"
label = "person"
kind = "dwell"
zone = "steps"
seconds = 2
'''
COLOURS = {"ann": (60, 90, 200), "bob": (60, 160, 60)}  # BGR


def picture(people: Mapping[str, tuple[float, float]], *, steps: bool = True) -> bytes:
    """A porch: wall, floor, steps (the zone) and people standing with their feet at (x, y) fractions."""
    img = np.full((H, W, 3), (120, 110, 100), np.uint8)
    img[int(H * 0.45):] = (70, 90, 110) if steps else (60, 110, 70)
    for i in range(4 if steps else 0):  # the steps
        y = int(H * (0.5 + 0.11 * i))
        cv2.rectangle(img, (int(W * 0.55), y), (int(W * 0.95), y + 18), (150 - 12 * i, 150 - 12 * i, 150), -1)
    for name, (fx, fy) in people.items():
        x, y, w, h = box(fx, fy)
        cv2.rectangle(img, (x + 8, y + 22), (x + w - 8, y + h), COLOURS[name], -1)
        cv2.circle(img, (x + w // 2, y + 12), 11, (150, 180, 220), -1)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def box(fx: float, fy: float) -> tuple[int, int, int, int]:
    """A person's box (pixels) with its feet at (fx, fy) of the frame."""
    return int(fx * W) - 22, int(fy * H) - 120, 44, 120


class Clock:
    """The master's clock: it moves on as frames come, one frame's time each (they start 10 s ago)."""

    def __init__(self) -> None:
        self.t = time.time() - 10.0

    def __call__(self) -> float:
        return self.t


class Porch:
    """A master serving on 127.0.0.1 with CONFIG applied; `frames` completes frames as a worker would."""

    def __init__(self, media: str) -> None:
        self.clock = Clock()
        self.svc = MasterService(ServiceConfig(), clock=self.clock)
        self.svc.clips = EventMedia(media, self.svc.clip_done, clip=ClipConfig(pre_s=1.0, post_s=1.0))
        self.svc.clips.start()  # its encoder thread: a real clip for a real <video>
        self.svc.apply_cluster(parse(CONFIG))
        self.worker = self.svc.register_worker("worker0")["worker_id"]
        self.server = MasterHTTPServer(("127.0.0.1", 0), self.svc)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-http")
        self._thread.start()
        self.seq = {PORCH: 0, YARD: 0}
        self.people: dict[str, tuple[float, float]] = {}

    def close(self) -> None:
        self.server.shutdown()
        self._thread.join(5)
        self.server.server_close()
        self.svc.clips.stop()
        assert self.svc.clips.join(10)

    def clip_of(self, event: str) -> str:
        """The state of an event's clip."""
        found = self.svc.events.get(event)
        return found.clip if found else ""

    def frames(self, n: int, port: int = PORCH, **moves: tuple[float, float] | None) -> None:
        """n frames, over which each person named in `moves` walks in a straight line to their new spot
        (None: gone from the picture); everyone else stands still."""
        start = dict(self.people)
        for name, to in moves.items():
            if to is None:
                self.people.pop(name, None)
        for i in range(1, n + 1):
            for name, to in moves.items():
                if to is not None:
                    (x0, y0) = start.get(name, to)
                    self.people[name] = (x0 + (to[0] - x0) * i / n, y0 + (to[1] - y0) * i / n)
            people = self.people if port == PORCH else {}
            seq = self.seq[port]
            self.seq[port] += 1
            spec = TaskSpec(port=port, seq=seq, pipeline="person", received_ns=0, captured_ns=int(self.clock.t * 1e9))
            self.svc.add_tasks([(spec, picture(people, steps=port == PORCH))])
            [lease] = self.svc.request_tasks(self.worker, 1)
            dets = tuple(Detection("person", 0.9, box(*p)) for p in people.values())
            self.svc.complete(self.worker, [Outcome(lease.task.id, lease.token, detections=dets)])
            self.clock.t += FRAME_S
            self.svc.monitor_once()  # as the monitor thread does: frames whose predecessors never come go on

    def track_of(self, name: str) -> int:
        """The id of the live track on `name`'s box (the one whose box centre is nearest theirs)."""
        fx, fy = self.people[name]
        x, y, w, h = box(fx, fy)
        tracks = self.svc.scene_view(PORCH)["tracks"]
        return min(tracks, key=lambda t: abs(t["box"][0] + t["box"][2] / 2 - x - w / 2) +
                   abs(t["box"][1] + t["box"][3] / 2 - y - h / 2))["id"]


@pytest.fixture
def porch(tmp_path) -> Iterator[Porch]:
    """Ann walks in from the left, across the gate and onto the steps, where she stays 2.5 s (the dwell
    event starts); Bob stands left of the gate. The yard camera, without zones, sends a few frames."""
    p = Porch(str(tmp_path / "media"))
    try:
        p.frames(12, ann=(0.1, 0.9), bob=(0.16, 0.62))
        p.frames(30, ann=(0.6, 0.86))
        p.frames(15, ann=(0.75, 0.85))  # slowing down: a tracker predicts a steady walk
        p.frames(25)
        p.frames(3, port=YARD)
        yield p
    finally:
        p.close()


def wait_text(page, selector: str, text: str) -> None:
    """Wait until the element at `selector` exists and its text is `text`."""
    page.wait_for_function("([s, t]) => document.querySelector(s)?.textContent === t", arg=[selector, text],
                           timeout=WAIT_MS)


CARD = f'.camera[data-port="{PORCH}"]'


def test_a_camera_card_draws_its_zones_lines_and_tracks_over_the_frame_and_shows_the_counts(porch, browser):
    ann, bob = porch.track_of("ann"), porch.track_of("bob")
    assert ann != bob
    page = open_page(browser, porch.url, **DESKTOP)
    page.wait_for_function(f'() => {{ const i = document.querySelector(\'{CARD} img\');'
                           ' return i && i.complete && i.naturalWidth > 0; }', timeout=WAIT_MS)
    overlay = f"{CARD} svg.overlay"
    wait_text(page, f'{overlay} .track[data-track="{ann}"] text', f"#{ann} person")
    wait_text(page, f'{overlay} .track[data-track="{bob}"] text', f"#{bob} person")
    assert page.get_attribute(overlay, "viewBox") == f"0 0 {W} {H}"
    assert page.get_attribute(f'{overlay} .zone[data-zone="steps"] polygon', "points") == \
        "352.0,240.0 608.0,240.0 608.0,456.0 352.0,456.0"
    assert page.text_content(f'{overlay} .zone[data-zone="steps"] text') == "steps · 1"
    gate = page.locator(f'{overlay} .line[data-line="gate"] line').nth(1)
    assert [gate.get_attribute(k) for k in ("x1", "y1", "x2", "y2")] == ["192", "48", "192", "456"]  # pixels
    # drawn where the picture is: frame pixels map onto the shown image, its corners and the zone's alike
    img = page.locator(f"{CARD} img").bounding_box()
    for x, y in ((0, 0), (W, H), (0.55 * W, 0.5 * H)):
        sx, sy = page.evaluate("([s, x, y]) => { const m = document.querySelector(s).getScreenCTM();"
                               " const p = new DOMPoint(x, y).matrixTransform(m); return [p.x, p.y]; }",
                               [overlay, x, y])
        assert abs(sx - (img["x"] + x / W * img["width"])) < 1 and abs(sy - (img["y"] + y / H * img["height"])) < 1
    assert abs(img["width"] / img["height"] - W / H) < 0.01  # the frame box takes the picture's shape
    # the counts: on the picture, by each direction's arrow, and below it
    assert page.text_content(f'{overlay} .line[data-line="gate"] [data-dir="out"] text') == "out 1"
    assert page.text_content(f'{overlay} .line[data-line="gate"] [data-dir="in"] text') == "in 0"
    counts = f"{CARD} .scene"
    assert page.inner_text(f'{counts} [data-line="gate"] [data-dir="out"]') == "out 1"
    assert page.inner_text(f'{counts} [data-line="gate"] [data-dir="in"]') == "in 0"
    assert page.inner_text(f'{counts} [data-zone="steps"] [data-count="now"]') == "now 1 person"
    assert page.inner_text(f'{counts} [data-zone="steps"] [data-count="peak"]') == "peak 1 person"
    assert page.inner_text(f'{counts} [data-zone="steps"] [data-count="entered"]') == "entered 1 person"
    # names from the config file are text, never markup
    fence = page.locator(f'{counts} [data-line="fence"]').inner_text()
    assert f"{ESCAPED} 0" in fence and page.locator(f"{CARD} out").count() == 0
    assert page.locator(f"{overlay} text", has_text=f"{ESCAPED} 0").count() == 1
    # the yard has no zones or lines: its card is as it always was
    yard = f'.camera[data-port="{YARD}"]'
    page.wait_for_selector(f"{yard} img", timeout=WAIT_MS)
    assert page.locator(f"{yard} svg.overlay").count() == 0 and page.locator(f"{yard} .scene").is_hidden()
    screenshot(page, "dashboard-scene")
    # a reload of the config file renames the yard: its open card takes the new name
    wait_text(page, f"{yard} h3 .title", f"yard ({YARD})")
    porch.svc.apply_cluster(parse(CONFIG.replace("[cameras.yard]", "[cameras.garden]")))
    porch.frames(2, port=YARD)
    wait_text(page, f"{yard} h3 .title", f"garden ({YARD})")
    assert page.errors == [], page.errors


def test_the_scene_stays_legible_on_a_phone(porch, browser):
    ann = porch.track_of("ann")
    page = open_page(browser, porch.url, **PHONE)
    tag = f'{CARD} svg.overlay .track[data-track="{ann}"] text'
    wait_text(page, tag, f"#{ann} person")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    height = page.locator(tag).bounding_box()["height"]
    assert height >= 10, f"a track's tag is {height:.1f} px high on a phone"
    screenshot(page, "dashboard-scene-phone")
    assert page.errors == [], page.errors


def test_an_event_is_one_row_that_opens_with_its_snapshot_and_its_clip_once_recorded(porch, browser):
    [event] = {e["id"] for e in porch.svc.get_events(0, 100)["events"]}  # Ann's dwell on the steps, ongoing
    ann, bob = porch.track_of("ann"), porch.track_of("bob")
    page = open_page(browser, porch.url, **DESKTOP)
    row = f'li.event[data-event="{event}"]'
    page.wait_for_selector(f'{row}[data-state="ongoing"]', timeout=WAIT_MS)
    text = page.inner_text(row)
    for want in ("loiter", "dwell", "porch · steps", f"#{ann} person 90%", "ongoing"):
        assert want in text, f"{want!r} not in the event's row: {text!r}"
    page.click(f"{row} button")
    snapshot = "#event-dialog[open] img.snapshot"
    page.wait_for_function(f'() => {{ const i = document.querySelector("{snapshot}");'
                           ' return i && i.complete && i.naturalWidth > 0; }', timeout=WAIT_MS)
    assert page.get_attribute(snapshot, "src").startswith(f"/events/{event}/snapshot.jpg")
    assert page.inner_text("#event-title") == "loiter · dwell"
    assert page.inner_text('#event-facts [data-fact="place"]') == "steps"
    assert page.inner_text('#event-facts [data-fact="object"]') == f"#{ann} person 90%"
    assert page.inner_text('#event-facts [data-fact="state"]') == "ongoing"
    # the clip is being recorded while she stays; the open dialog says so
    wait_text(page, "#event-clip", "Recording the clip… it plays here when it is ready.")
    assert "clip recording" in page.inner_text(row)
    screenshot(page, "dashboard-scene-event-recording", full_page=False)
    # Ann walks off the steps: her event ends, its clip is written after the post-roll, and the open
    # dialog shows it playing by itself (autoplay, muted)
    porch.frames(25, ann=(0.45, 0.85))
    porch.frames(15)
    wait_until(lambda: porch.clip_of(event) == "ready", 30)
    video = "#event-dialog[open] #event-video video"
    page.wait_for_function(f'() => {{ const v = document.querySelector("{video}");'
                           ' return v && v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0; }',
                           timeout=WAIT_MS)
    assert page.get_attribute(video, "src") == f"/events/{event}/clip.mp4"
    facts = page.evaluate(f'() => {{ const v = document.querySelector("{video}"); return [v.muted, v.controls,'
                          ' v.autoplay, v.hasAttribute("playsinline"), v.videoWidth]; }')
    assert facts == [True, True, True, True, W], facts
    assert page.inner_text("#event-clip") == ""
    screenshot(page, "dashboard-scene-event-clip", full_page=False)
    page.click("#event-dialog .close")
    page.wait_for_function('() => !document.querySelector("#event-dialog").open'
                           ' && !document.querySelector("#event-dialog video")', timeout=WAIT_MS)  # the clip stops
    # her event ended: still one row; Bob is no longer seen: his track is lost
    porch.frames(3, bob=None)
    page.wait_for_selector(f'{row}[data-state="ended"]', timeout=WAIT_MS)
    assert page.locator(row).count() == 1 and "ended" in page.inner_text(row)
    lost = f'.camera[data-port="{PORCH}"] svg.overlay .track[data-track="{bob}"][data-state="lost"]'
    page.wait_for_selector(lost, timeout=WAIT_MS)
    assert page.eval_on_selector(f"{lost} .box", "b => getComputedStyle(b).strokeDasharray") != "none"
    wait_text(page, f'.camera[data-port="{PORCH}"] .scene [data-zone="steps"] [data-count="now"]', "now 0")
    screenshot(page, "dashboard-scene-ended")
    assert page.errors == [], page.errors


def test_the_event_dialog_fits_a_phone(porch, browser):
    [event] = {e["id"] for e in porch.svc.get_events(0, 100)["events"]}
    porch.frames(25, ann=(0.45, 0.85))
    porch.frames(15)
    wait_until(lambda: porch.clip_of(event) == "ready", 30)
    page = open_page(browser, porch.url, **PHONE)
    page.click(f'li.event[data-event="{event}"] button', timeout=WAIT_MS)
    page.wait_for_function('() => { const v = document.querySelector("#event-dialog[open] video");'
                           ' return v && v.readyState >= 2 && v.videoWidth > 0; }', timeout=WAIT_MS)
    dialog = page.locator("#event-dialog").bounding_box()
    assert dialog["x"] >= 0 and dialog["x"] + dialog["width"] <= 390, dialog
    screenshot(page, "dashboard-scene-event-phone", full_page=False)
    assert page.errors == [], page.errors
