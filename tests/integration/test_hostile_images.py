"""Images that lie about their size, through a real master, worker and receiver.

A few hundred bytes of JPEG claiming 20000x20000 pixels used to make `cv2.imdecode` allocate 1.2 GB
and the `face` stage segfault; the lease went back to the queue and killed the next worker too.
Now every process reads the size from the header first and refuses the image, as a visible error
that is not retried, and the cluster goes on serving every other camera.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import cv2
import pytest

from cluster.local import LocalCluster, free_udp_ports
from cluster.testdata import jpeg_claiming
from common.protocol import encode_frame
from common.tasks import TaskSpec
from tests.conftest import wait_until


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        yield c


def results(c, port: int) -> list[dict]:
    return c.get_results(port, 0, 100)["results"]


def test_a_bomb_is_an_error_result_and_every_worker_survives(cluster, person_frames):
    cluster.start_master()
    workers = cluster.start_workers(2, "--threads", "1", "--preload", "face")
    good = cv2.imencode(".jpg", cv2.resize(person_frames[0], (320, 180)))[1].tobytes()
    bomb = jpeg_claiming(20000, 20000)
    now = time.time_ns()
    with cluster.client() as c:
        tasks = [(TaskSpec(port=7001, seq=i, pipeline="face", captured_ns=now, received_ns=now), bomb)
                 for i in range(3)]
        tasks += [(TaskSpec(port=7002, seq=i, pipeline="face", captured_ns=now, received_ns=now), good)
                  for i in range(5)]
        assert all(c.add_tasks(tasks)["ids"])
        wait_until(lambda: len(results(c, 7001)) == 3 and len(results(c, 7002)) == 5, 60, 0.1)
        refused, fine = results(c, 7001), results(c, 7002)
        stats = c.get_stats()
    assert all(r["status"] == "error" and "refused before decoding" in r["error"] and r["attempts"] == 1
               for r in refused), refused
    assert all(r["status"] == "ok" for r in fine), fine
    assert all(w.alive() for w in workers), [w.log_text()[-1500:] for w in workers]
    assert stats["counters"].get("retried", 0) == 0 and stats["counters"].get("lease_expired", 0) == 0
    # the master's own decoders (latest frame with boxes drawn) refuse it too, and keep serving
    url = f"{cluster.master_url}/ports/7001/latest.jpg"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 404
    with urllib.request.urlopen(f"{cluster.master_url}/ports/7002/latest.jpg", timeout=10) as r:
        assert r.headers["Content-Type"] == "image/jpeg"


def test_the_receiver_refuses_a_bomb_and_counts_it(cluster, person_frames):
    port, other = free_udp_ports(2)
    cluster.start_master()
    cluster.start_receiver([port, other], "--pipeline", "face")
    workers = cluster.start_workers(1, "--threads", "1")
    good = cv2.imencode(".jpg", cv2.resize(person_frames[0], (320, 180)))[1].tobytes()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for seq in range(3):
            for d in encode_frame(jpeg_claiming(20000, 20000), stream_id=1, seq=seq, capture_ns=time.time_ns(),
                                  chunk_bytes=60000):
                s.sendto(d, ("127.0.0.1", port))
            for d in encode_frame(good, stream_id=2, seq=seq, capture_ns=time.time_ns(), chunk_bytes=60000):
                s.sendto(d, ("127.0.0.1", other))

    def refused() -> dict | None:
        with cluster.client() as c:
            stats = c.get_stats()
            rx = stats["sources"].get("receiver", {}).get("ports", {})
            ok = rx.get(str(port), {}).get("refused_image", 0) == 3 and len(results(c, other)) == 3
        return stats if ok else None

    stats = wait_until(refused, 30, 0.2)
    assert stats["ports"].get(str(port), {}).get("added", 0) == 0  # never reached the master
    assert all(w.alive() for w in workers)


def test_the_master_never_decodes_a_bomb_a_worker_called_fine(master):
    """A worker (buggy, or hostile with the token) reports a bomb as processed with a detection: the
    master's own decoders (the latest frame with boxes, an event's snapshot) refuse it and go on."""
    from common.masterclient import MasterClient
    from common.tasks import Detection, Outcome

    now = time.time_ns()
    with MasterClient(master.url) as c:
        c.add_tasks([(TaskSpec(port=7005, seq=1, pipeline="person", captured_ns=now, received_ns=now),
                      jpeg_claiming(30000, 30000))])
        wid = c.register_worker("liar")["worker_id"]
        [lease] = c.lease(wid, 1)
        c.complete(wid, [Outcome(lease.task.id, lease.token, (Detection("person", 0.9, (1, 2, 3, 4)),),
                                 {"person": 1.0})])
        assert c.get_results(7005, 0, 10)["results"][0]["status"] == "ok"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{master.url}/ports/7005/latest.jpg", timeout=10)
        assert e.value.code == 404
        assert c.get_stats()["uptime_s"] > 0  # still serving
