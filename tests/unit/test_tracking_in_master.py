"""The master gives every detection of a camera's results a track id, in capture order, and lists the
camera's live tracks; results that complete out of order get the same ids as in order."""

from __future__ import annotations

import pytest

from common.errors import BadRequest
from common.tasks import Detection, Outcome, TaskSpec
from master.core.service import MasterService

NS = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def run(order: list[int], frames: int = 8) -> tuple[MasterService, Clock]:
    """Frames 0..frames-1 of camera 5000: two people walking apart; completed in `order`."""
    clock = Clock()
    svc = MasterService(clock=clock)
    worker = svc.register_worker("w")["worker_id"]
    svc.add_tasks([(TaskSpec(port=5000, seq=i, pipeline="person", captured_ns=int((clock.t + i * 0.1) * NS),
                             received_ns=0), b"\xff\xd8") for i in range(frames)])
    leases = {lease.task.spec.seq: lease for lease in svc.request_tasks(worker, frames)}
    assert len(leases) == frames
    for seq in order:
        lease = leases[seq]
        dets = (Detection("person", 0.9, (100 + 10 * seq, 100, 40, 100)),
                Detection("person", 0.8, (400 - 10 * seq, 120, 40, 100)))
        svc.complete(worker, [Outcome(lease.task.id, lease.token, detections=dets)])
    clock.t += 2.0  # the first frame waited for a possible earlier one: a monitor pass releases it
    svc.monitor_once()
    return svc, clock


def tracks_of(svc: MasterService) -> dict[int, list[int]]:
    page = svc.results(5000, 0, 100)
    return {r.seq: [d.track_id for d in r.detections] for r in page["results"]}


def test_every_detection_gets_a_stable_track_id_and_the_camera_lists_its_tracks():
    svc, _ = run(list(range(8)))
    ids = tracks_of(svc)
    assert all(len(set(v)) == 2 and 0 not in v for v in ids.values()), ids
    assert len({tuple(v) for v in ids.values()}) == 1, "the same two people keep their ids in every frame"
    listed = svc.tracks("5000")
    assert listed["port"] == 5000 and sorted(t["track_id"] for t in listed["tracks"]) == sorted(ids[0])
    assert {t["state"] for t in listed["tracks"]} == {"confirmed"}
    wire = svc.results(5000, 0, 1)["results"][0].to_wire()["detections"][0]
    assert set(wire) == {"label", "score", "box", "track_id"}


def test_results_completed_out_of_order_get_the_same_tracks():
    in_order, _ = run(list(range(8)))
    shuffled, _ = run([1, 0, 3, 2, 5, 7, 4, 6])
    assert tracks_of(in_order) == tracks_of(shuffled)


def test_an_unknown_camera_is_a_clear_error():
    svc = MasterService()
    with pytest.raises(BadRequest, match="no camera 'attic'"):
        svc.tracks("attic")


def test_a_restarted_master_with_a_state_dir_never_hands_out_a_track_id_again(tmp_path):
    from master.core.journal import SqliteJournal
    from master.core.service import ServiceConfig
    from master.core.store import TaskStore

    def life() -> tuple[set[int], set[int]]:
        journal = SqliteJournal(tmp_path / "master.sqlite3")
        config = ServiceConfig()
        clock = Clock()
        svc = MasterService(config, clock=clock, store=TaskStore(config.store, journal=journal))
        worker = svc.register_worker("w")["worker_id"]
        svc.add_tasks([(TaskSpec(port=5000, seq=i, pipeline="person", captured_ns=int((clock.t + i * 0.1) * NS),
                                 received_ns=0), b"\xff\xd8") for i in range(4)])
        for lease in svc.request_tasks(worker, 4):
            svc.complete(worker, [Outcome(lease.task.id, lease.token,
                                          detections=(Detection("car", 0.9, (10, 10, 50, 30)),))])
        clock.t += 2.0
        svc.monitor_once()
        results = svc.results(5000, 0, 100)["results"]
        ids = {d.track_id for r in results[-4:] for d in r.detections if d.track_id}
        kept = {d.track_id for r in results[:-4] for d in r.detections}  # an earlier life's, from the journal
        journal.close()
        return ids, kept

    (first, _), (second, kept) = life(), life()
    assert first and second and min(second) > max(first), (first, second)
    assert kept == first, "results kept from the first life come back with their track ids"


def test_a_camera_line_of_the_config_file_counts_crossings_by_direction_and_label():
    import cv2
    import numpy as np

    from master.clusterfile import parse
    from master.observe.metrics import families

    jpeg = cv2.imencode(".jpg", np.zeros((480, 640, 3), np.uint8))[1].tobytes()
    cluster = parse('[receivers.hub]\nports = "5000-5001"\n[cameras.door]\nsource = "synthetic"\nport = 5000\n'
                    '[cameras.door.lines.entrance]\na = [0.5, 1.0]\nb = [0.5, 0.0]\ndirections = ["in", "out"]\n')
    clock = Clock()
    svc = MasterService(clock=clock)
    svc.apply_cluster(cluster)
    worker = svc.register_worker("w")["worker_id"]
    for i in range(16):  # one frame at a time, as a camera's frames arrive
        svc.add_tasks([(TaskSpec(port=5000, seq=i, pipeline="person", captured_ns=int((clock.t + i * 0.1) * NS),
                                 received_ns=0), jpeg)])
        [lease] = svc.request_tasks(worker, 1)
        dets = (Detection("person", 0.9, (200 + 10 * i, 200, 40, 100)),  # walks left to right over x=320: "in"
                Detection("person", 0.9, (400 - 10 * i, 300, 40, 100)))  # walks right to left: "out"
        svc.complete(worker, [Outcome(lease.task.id, lease.token, detections=dets)])
    clock.t += 2.0
    svc.monitor_once()
    counts = svc.counts()["door"]
    assert (counts["port"], counts["lines"]) == (5000, {"entrance": {"in": {"person": 1}, "out": {"person": 1}}})
    assert [(h["direction"], h["count"]) for h in counts["hourly"]] == [("in", 1), ("out", 1)]
    samples = {tuple(sorted(s.labels.items())): s.value for f in families(svc.stats())
               if f.name == "framehive_line_crossings" for s in f.samples if s.name.endswith("_total")}
    assert samples[(("camera", "door"), ("direction", "in"), ("label", "person"), ("line", "entrance"))] == 1
