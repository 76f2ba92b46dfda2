"""File-job tiles through a real master and worker: lossless in, processed out, no seams."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from common.masterclient import MasterClient
from common.pipeline import parse_pipeline, pipeline_halo
from common.rawtile import decode_raw_tile, encode_raw_tile, is_raw_tile
from common.tasks import TaskKind, TaskSpec
from common.tiling import assemble, cut, plan_tiles
from worker.loop import Worker, WorkerConfig
from worker.pipeline import StageCache, run_pipeline


def png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


ENCODE = {"png": png, "raw": encode_raw_tile}


def decode(img: bytes) -> np.ndarray:
    return decode_raw_tile(img) if is_raw_tile(img) else cv2.imdecode(np.frombuffer(img, np.uint8),
                                                                      cv2.IMREAD_UNCHANGED)


def take_all(client: MasterClient, job: str, n: int, timeout: float = 30) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += client.take_job_results(job, n, wait_s=1.0)
    return got


@pytest.mark.parametrize("fmt", ["png", "raw"])
def test_tiled_frame_through_the_cluster_equals_the_whole_frame(master, person_frames, fmt):
    frame = person_frames[3]
    spec = "gaussian:5,sobel"
    tiles = plan_tiles(frame.shape[1], frame.shape[0], 3, 3, pipeline_halo(parse_pipeline(spec)))
    now = time.time_ns()
    with MasterClient(master.url) as c, Worker(WorkerConfig(master_url=master.url, wait_s=0.2), stages=StageCache()):
        ids = c.add_tasks([(TaskSpec(port=0, seq=0, pipeline=spec, captured_ns=now, received_ns=now,
                                     kind=TaskKind.TILE, job_id="job-1", meta={"tile": t.index}),
                            ENCODE[fmt](cut(frame, t)))
                           for t in tiles])["ids"]
        assert all(ids)
        done = take_all(c, "job-1", len(tiles))
        assert c.get_results(0, 0, 100)["results"] == []  # tiles never land in a camera's results
    assert len(done) == len(tiles) and all(r.status == "ok" and r.kind == "tile" for r, _ in done)
    assert all(is_raw_tile(img) == (fmt == "raw") for _, img in done)  # answered in the format it was sent
    outputs = {r.meta["tile"]: decode(img) for r, img in done}
    tiled = assemble([(t, outputs[t.index]) for t in tiles], frame.shape[1], frame.shape[0])
    whole = run_pipeline(spec, frame, StageCache()).image
    assert np.array_equal(tiled, whole)


def test_a_broken_tile_comes_back_as_an_error_and_a_cancelled_job_leaves_nothing(master):
    now = time.time_ns()

    def tile(job: str, payload: bytes) -> tuple[TaskSpec, bytes]:
        return TaskSpec(port=0, seq=0, pipeline="blur:3", captured_ns=now, received_ns=now, kind=TaskKind.TILE,
                        job_id=job), payload

    with MasterClient(master.url) as c:
        c.add_tasks([tile("job-2", b"not a png"), tile("job-2", encode_raw_tile(np.zeros((8, 8, 3), np.uint8))[:-1])])
        c.add_tasks([tile("job-3", png(np.zeros((8, 8, 3), np.uint8)))] * 5)
        assert c.cancel_job("job-3") == 5
        with Worker(WorkerConfig(master_url=master.url, wait_s=0.2), stages=StageCache()):
            done = take_all(c, "job-2", 2)
        assert sorted(r.error[:10] for r, _ in done) == ["payload of", "raw tile 8"], done
        assert all(r.status == "error" and img == b"" for r, img in done)
        assert c.take_job_results("job-3", 10) == []
        assert master.service.stats()["pending"] == 0


def test_motion_tiles_carry_the_previous_frame_and_match_the_whole_frame(master, person_frames):
    prev, frame = person_frames[4], person_frames[5]
    spec = "blur:5,motion"
    tiles = plan_tiles(frame.shape[1], frame.shape[0], 2, 2, 2)
    now = time.time_ns()
    with MasterClient(master.url) as c, Worker(WorkerConfig(master_url=master.url, wait_s=0.2), stages=StageCache()):
        c.add_tasks([(TaskSpec(port=0, seq=0, pipeline=spec, captured_ns=now, received_ns=now, kind=TaskKind.TILE,
                               job_id="job-m", meta={"tile": t.index, "stacked": True}),
                      encode_raw_tile(np.vstack([cut(prev, t), cut(frame, t)]))) for t in tiles])
        done = take_all(c, "job-m", len(tiles))
    outputs = {r.meta["tile"]: decode(img) for r, img in done}
    tiled = assemble([(t, outputs[t.index]) for t in tiles], frame.shape[1], frame.shape[0])
    whole = run_pipeline(spec, frame, StageCache(), previous=prev).image
    assert np.array_equal(tiled, whole) and whole.any()  # people moved between the two frames


def test_a_worker_with_a_local_process_pool_gives_the_same_tiles(master, person_frames):
    frame = person_frames[2]
    spec = "gaussian:3,threshold"
    tiles = plan_tiles(frame.shape[1], frame.shape[0], 2, 2, 6)
    now = time.time_ns()
    config = WorkerConfig(master_url=master.url, wait_s=0.2, batch=4, processes=2)
    with MasterClient(master.url) as c, Worker(config):
        c.add_tasks([(TaskSpec(port=0, seq=0, pipeline=spec, captured_ns=now, received_ns=now, kind=TaskKind.TILE,
                               job_id="job-p", meta={"tile": t.index}), png(cut(frame, t))) for t in tiles])
        done = take_all(c, "job-p", len(tiles), timeout=60)
    assert {r.worker for r, _ in done} and all(r.status == "ok" for r, _ in done)
    outputs = {r.meta["tile"]: cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_UNCHANGED) for r, img in done}
    tiled = assemble([(t, outputs[t.index]) for t in tiles], frame.shape[1], frame.shape[0])
    assert np.array_equal(tiled, run_pipeline(spec, frame, StageCache()).image)
