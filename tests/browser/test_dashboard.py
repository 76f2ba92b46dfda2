"""The dashboard in a real headless Chromium (Debian's package) against a real cluster on loopback.

Two cameras stream a clip with people on a loop; the page must load with no console errors, show a
frame on every camera card, move its numbers, list the workers and show an event with its snapshot.
Screenshots (desktop and phone widths) are saved under tests/artifacts/.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from cluster.local import ROOT, LocalCluster, free_port, free_udp_ports
from tests.browser.chromium import DESKTOP, PHONE, WAIT_MS, open_page, screenshot
from tests.integration.test_metrics_status import cut_clip


@pytest.fixture(scope="module")
def live(tmp_path_factory, person_clip):
    """A cluster with two cameras streaming people on a loop, two workers and a rule that fires."""
    tmp = tmp_path_factory.mktemp("dashboard")
    ports = free_udp_ports(2)
    clip = cut_clip(person_clip, tmp / "people.mp4", 60, 40)
    rules = tmp / "rules.toml"
    rules.write_text('[[rule]]\nname = "someone-there"\nlabel = "person"\nmin_score = 0.5\nmin_frames = 2\n'
                     'cooldown_s = 5\n')
    with LocalCluster(log_dir=tmp / "logs") as cluster:
        cluster.start_master("--rules", str(rules))
        jobs_port = free_port()
        cluster.start_receiver(ports, "--pipeline", "person", "--jobs-port", str(jobs_port))
        cluster.start_workers(2, "--threads", "1", "--preload", "person")
        done = subprocess.run([sys.executable, "-m", "sender.client", "--port", str(jobs_port), "--video", clip,
                               "--tiles", "2x2", "--filters", "sobel", "--out", str(tmp / "out.mp4")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)  # a finished file job
        assert done.returncode == 0, done.stderr
        for p in ports:
            cluster.start_publisher(p, clip, "--fps", "6", "--loop")
        yield cluster, ports


def stat(page, port: int, name: str) -> str:
    return page.locator(f'.camera[data-port="{port}"] dd[data-stat="{name}"]').inner_text()


def test_dashboard_shows_live_cameras_workers_and_events(live, browser):
    cluster, ports = live
    page = open_page(browser, cluster.master_url + "/", **DESKTOP)
    assert page.title() == "framehive"
    for p in ports:  # every camera card shows a decoded frame
        page.wait_for_function(
            f'() => {{ const i = document.querySelector(\'.camera[data-port="{p}"] img\');'
            ' return i && i.complete && i.naturalWidth > 0; }', timeout=WAIT_MS)
    first = stat(page, ports[0], "out")
    page.wait_for_function(  # the numbers move: results keep coming in
        f'(v) => {{ const d = document.querySelector(\'.camera[data-port="{ports[0]}"] dd[data-stat="out"]\');'
        ' return d && d.textContent !== v; }', arg=first, timeout=WAIT_MS)
    assert int(stat(page, ports[0], "out").replace(",", "")) > int(first.replace(",", ""))
    assert float(stat(page, ports[0], "fps")) > 0
    page.wait_for_function(  # an event with its snapshot
        '() => { const i = document.querySelector("li.event img"); return i && i.complete && i.naturalWidth > 0; }',
        timeout=WAIT_MS)
    assert "someone-there" in page.locator("li.event").first.inner_text()
    workers = page.locator("#workers tbody tr[data-worker]")
    assert sorted(workers.all_inner_texts())[0].startswith("worker0") and workers.count() == 2
    assert "MB" in workers.first.inner_text()  # RAM from the worker's heartbeat
    page.wait_for_function('() => document.querySelectorAll("#chart polyline[data-series=out]")[0]'
                           '.getAttribute("points").split(" ").length >= 2', timeout=WAIT_MS)
    assert page.locator("#status").get_attribute("data-state") == "live"
    job = page.locator("#jobs tbody tr[data-job]")  # the file job, as its receiver reported it
    job.first.wait_for(timeout=WAIT_MS)
    assert "people.mp4" in job.first.inner_text() and "done" in job.first.inner_text()
    assert "100 %" in job.first.inner_text()
    screenshot(page, "dashboard")
    assert page.errors == [], page.errors


def test_dashboard_fits_a_phone_screen(live, browser):
    cluster, ports = live
    page = open_page(browser, cluster.master_url + "/", **PHONE)
    page.wait_for_selector(f'.camera[data-port="{ports[1]}"] img', timeout=WAIT_MS)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    card = page.locator(".camera").first.bounding_box()
    assert card and card["width"] <= 390
    screenshot(page, "dashboard-phone")
    assert page.errors == [], page.errors
