"""File jobs end to end: upload over IPv6 and IPv4, tiles through real workers, H.264 back, no seams."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from cluster.local import ROOT, LocalCluster, free_port, packaged_clip
from cluster.testdata import clip_with_sound
from common import jobproto
from common.masterclient import MasterClient
from tests.conftest import wait_until
from worker.pipeline import StageCache, run_pipeline

FRAMES = 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """The first frames of a real package-shipped clip, re-encoded (so the upload is small)."""
    path = tmp_path_factory.mktemp("clip") / "in.mp4"
    cap = cv2.VideoCapture(str(packaged_clip("bikes.mp4")))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 272))
    for _ in range(FRAMES):
        ok, frame = cap.read()
        assert ok
        out.write(frame)
    out.release()
    return str(path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, clip):
    with LocalCluster(log_dir=tmp_path_factory.mktemp("logs")) as c:
        c.start_master()
        c.jobs_port = free_port()
        c.preview_port = free_port()
        c.start_receiver([free_port(socket.SOCK_DGRAM)], "--jobs-port", str(c.jobs_port),
                         "--jobs-root", str(Path(clip).parent), "--jobs-http-port", str(c.preview_port))
        c.start_workers(2, "--threads", "1")
        yield c


def frames_of(path: str) -> list[np.ndarray]:
    with av.open(path) as f:
        return [fr.to_ndarray(format="bgr24") for fr in f.decode(video=0)]


def upload(cluster, clip, host: str, family: str, filters: str, tmp_path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / f"out-{family}.mp4"
    done = subprocess.run([sys.executable, "-m", "sender.client", "--host", host, "--port", str(cluster.jobs_port),
                           f"--{family}", "--video", clip, "--tiles", "3x3", "--filters", filters,
                           "--out", str(out), *extra], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr + cluster.procs[1].log_text()[-3000:]
    return json.loads(done.stdout), str(out)


@pytest.mark.parametrize("host,family,filters,tile_format", [("::1", "ipv6", "gaussian:5,sobel", "raw"),
                                                             ("127.0.0.1", "ipv4", "canny,blur:3", "raw"),
                                                             ("127.0.0.1", "ipv4", "blur:3,motion", "png")])
def test_upload_tiles_and_get_h264_back(cluster, clip, tmp_path, host, family, filters, tile_format):
    result, out = upload(cluster, clip, host, family, filters, tmp_path, "--tile-format", tile_format)
    with av.open(out) as f:
        stream = f.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    got, src = frames_of(out), frames_of(clip)
    assert len(got) == len(src) == FRAMES
    m = result["metrics"]
    assert m["frames"] == FRAMES and m["fallback_tiles"] == 0 and m["tiles"] == 9 * FRAMES
    assert (m["grid"], m["grid_requested"], m["grid_note"], m["tile_format"]) == ("3x3", "3x3", "", tile_format)
    assert m["tile_channels"] == (1 if filters.startswith("canny") else 3)  # canny looks at gray only
    assert m["audio"] == "none"  # the clip has no sound track
    for key in ("fps_in", "fps_out", "tiles_per_s", "tile_latency_p50_ms", "tile_latency_p95_ms", "retries", "server"):
        assert key in m
    stages = StageCache()
    for i in (0, FRAMES // 2, FRAMES - 1):  # no seams: the tiled result is the whole-frame result (+ H.264 loss)
        want = run_pipeline(filters, src[i], stages, previous=src[max(0, i - 1)]).image
        diff = np.abs(got[i].astype(np.int16) - want.astype(np.int16))
        assert diff.mean() < 6.0, (i, diff.mean())


def test_a_detector_pipeline_travels_as_whole_frames_whatever_the_tiles_asked(cluster, clip, tmp_path):
    result, out = upload(cluster, clip, "127.0.0.1", "ipv4", "face", tmp_path)
    m = result["metrics"]
    assert (m["grid"], m["grid_requested"], m["tiles"], m["frames"]) == ("1x1", "3x3", FRAMES, FRAMES)
    assert "detector (face)" in m["grid_note"] and m["fallback_tiles"] == 0
    assert len(frames_of(out)) == FRAMES


def test_an_upload_cut_off_halfway_leaves_the_server_healthy(cluster, clip, tmp_path):
    data = open(clip, "rb").read()
    hs = {"type": "handshake", "version": 1, "protocol": "stream", "tiles": "2x2", "filters": "blur:3",
          "codec": "h264", "name": "cut.mp4", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with socket.create_connection(("127.0.0.1", cluster.jobs_port), timeout=10) as s:
        jobproto.send_message(s, hs)
        assert jobproto.recv_message(s)["type"] == "accepted"
        jobproto.send_data(s, data[: len(data) // 2])
    with MasterClient(cluster.master_url) as c:  # the job's tiles are cancelled on the master
        wait_until(lambda: c.get_stats()["pending"] == 0 and c.get_stats()["in_progress"] == 0, 30)
    with socket.create_connection(("127.0.0.1", cluster.jobs_port), timeout=10) as s:
        jobproto.send_message(s, {"type": "handshake", "version": 1, "protocol": "stream", "tiles": "99x1",
                                  "filters": "blur:3", "size": 1, "sha256": "0" * 64})
        reply = jobproto.recv_message(s)
        assert reply["type"] == "error" and reply["code"] == "bad_tiles"
    result, _ = upload(cluster, clip, "127.0.0.1", "ipv4", "sobel", tmp_path)  # still serving
    assert result["metrics"]["frames"] == FRAMES


def test_file_protocol_reads_a_path_under_the_jobs_root_only(cluster, clip, tmp_path):
    def run(video: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sender.client", "--host", "127.0.0.1", "--port",
                               str(cluster.jobs_port), "--protocol", "file", "--video", video, "--tiles", "2x2",
                               "--filters", "blur:3", "--out", str(tmp_path / "o.mp4")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    done = run(clip)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"]["frames"] == FRAMES
    refused = run(str(packaged_clip("bikes.mp4")))  # readable, but not under --jobs-root
    assert refused.returncode == 1 and "path_refused" in refused.stderr


def test_preview_gif_thumbnails_and_progress_page(cluster, clip, tmp_path):
    import http.client

    done = subprocess.run([sys.executable, "-m", "sender.client", "--host", "127.0.0.1", "--port",
                           str(cluster.jobs_port), "--video", clip, "--tiles", "2x2", "--filters", "sobel",
                           "--preview", "--out", str(tmp_path / "p.mp4")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    job_id = summary["job_id"]
    page_url = f"http://127.0.0.1:{cluster.preview_port}/jobs/{job_id}"
    assert f"preview: {page_url} " in done.stderr, done.stderr  # told when the job starts
    assert summary["preview"]["page_url"] == page_url and summary["preview"]["gif_url"] == page_url + "/gif"
    assert summary["preview"]["gif"] == f"/jobs/{job_id}/gif" and summary["preview"]["thumbnails"] > 0

    def get(path: str) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", cluster.preview_port, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read()

    status, ctype, gif = get(f"/jobs/{job_id}/gif")
    assert status == 200 and ctype == "image/gif" and gif[:6] in (b"GIF89a", b"GIF87a")
    status, ctype, jpg = get(f"/jobs/{job_id}/frame/7")
    assert status == 200 and cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR) is not None
    status, ctype, body = get("/progress.json")
    assert status == 200 and ctype == "application/json"
    [job] = [j for j in json.loads(body)["jobs"] if j["job_id"] == job_id]
    assert job["state"] == "done" and job["frames_out"] == FRAMES and job["gif"]
    assert get("/metrics")[0] == 404  # that name means Prometheus text; the preview serves none
    status, ctype, page = get("/")
    assert status == 200 and f'href="/jobs/{job_id}"'.encode() in page and f'href="/jobs/{job_id}/gif"'.encode() in page
    status, ctype, page = get(f"/jobs/{job_id}")
    assert status == 200 and ctype.startswith("text/html") and f'src="/jobs/{job_id}/gif"'.encode() in page
    assert get("/jobs/nope/gif")[0] == 404 and get("/jobs/nope")[0] == 404


def test_without_a_preview_server_the_client_says_so(cluster, clip, tmp_path):
    jobs_port = free_port()
    cluster.start_receiver([free_port(socket.SOCK_DGRAM)], "--jobs-port", str(jobs_port), name="no-preview")
    done = subprocess.run([sys.executable, "-m", "sender.client", "--host", "127.0.0.1", "--port", str(jobs_port),
                           "--video", clip, "--preview", "--out", str(tmp_path / "np.mp4")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "preview: the job server shows none (its receiver runs without --jobs-http-port)" in done.stderr
    assert "page_url" not in json.loads(done.stdout)["preview"]


def test_the_output_mp4_gets_the_usual_file_mode(cluster, clip, tmp_path):
    old = os.umask(0o022)  # what most users have; the client inherits it
    try:
        done = subprocess.run([sys.executable, "-m", "sender.client", "--host", "127.0.0.1", "--port",
                               str(cluster.jobs_port), "--video", clip, "--out", str(tmp_path / "mode.mp4")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "mode.mp4").stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".mode.mp4.*")), "the temporary .part file is left behind"


def test_the_sound_track_goes_through_a_file_job(cluster, tmp_path):
    src = clip_with_sound(tmp_path / "talk.mp4", seconds=2.0, fps=25)
    result, out = upload(cluster, src, "127.0.0.1", "ipv4", "blur:3", tmp_path)
    assert result["metrics"]["audio"] == "copied"

    def sound_s(path: str) -> float:
        with av.open(path) as f:
            stream = f.streams.audio[0]
            spans = [(p.pts * p.time_base, (p.pts + p.duration) * p.time_base) for p in f.demux(stream) if p.size]
        return float(max(b for _, b in spans) - min(a for a, _ in spans))

    with av.open(out) as f:
        assert f.streams.audio and f.streams.audio[0].codec_context.name == "aac"
        assert sum(1 for p in f.demux(f.streams.video[0]) if p.size) == 50
    assert abs(sound_s(out) - sound_s(src)) <= 1 / 25


def test_a_job_server_on_its_own_serves_a_job(cluster, clip, tmp_path):
    """`python -m receiver.jobs`: no cameras, the same protocol, its jobs on the master's dashboard."""
    from cluster.local import wait_for_log

    port = free_port()
    alone = cluster.spawn("jobs-alone", "receiver.jobs", "--port", str(port), "--master", cluster.master_url,
                          "--name", "jobs-alone")
    wait_for_log(alone, "serving file jobs", 30)
    out = tmp_path / "alone.mp4"
    done = subprocess.run([sys.executable, "-m", "sender.client", "--host", "127.0.0.1", "--port", str(port),
                           "--video", clip, "--tiles", "2x2", "--filters", "blur:3", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr + alone.log_text()[-3000:]
    assert json.loads(done.stdout)["metrics"]["frames"] == FRAMES and len(frames_of(str(out))) == FRAMES
    with MasterClient(cluster.master_url) as c:  # its finished job reaches the master's stats
        wait_until(lambda: any(j["state"] == "done" for j in
                               c.get_stats()["sources"].get("jobs-alone", {}).get("jobs", {}).get("jobs", [])), 15)
