"""Shared fixtures: an in-process master on a real socket, real clips, a wait helper."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pytest

from cluster.local import packaged_clip
from master.api.httpserver import MasterHTTPServer
from master.core.service import MasterService, ServiceConfig

SHARED_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


def wait_until(pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> object:
    """Poll `pred` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture(scope="session")
def person_clip() -> Path:
    """A real clip with people walking: the shared sample when present, else a package-shipped one."""
    shared = SHARED_SAMPLES / "one-by-one-person-detection.mp4"
    return shared if shared.is_file() else packaged_clip("bikes.mp4")


@pytest.fixture(scope="session")
def person_frames(person_clip: Path) -> list:
    """Every 10th frame of the person clip (up to 40) as BGR arrays."""
    cap = cv2.VideoCapture(str(person_clip))
    frames, i = [], 0
    while len(frames) < 40:
        ok, frame = cap.read()
        if not ok:
            break
        if i % 10 == 0:
            frames.append(frame)
        i += 1
    cap.release()
    assert frames, f"could not read {person_clip}"
    return frames


class RunningMaster:
    """An in-process master serving on 127.0.0.1 with a real HTTP socket."""

    def __init__(self, config: ServiceConfig | None = None, *, port: int = 0, **server_kw) -> None:
        self.service = MasterService(config)
        self.server = MasterHTTPServer(("127.0.0.1", port), self.service, **server_kw)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})

    def start(self) -> RunningMaster:
        self.service.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(5)
        self.server.server_close()
        self.service.stop()
        self.service.join(5)


@pytest.fixture
def master() -> Iterator[RunningMaster]:
    m = RunningMaster().start()
    yield m
    m.stop()


@pytest.fixture(scope="session")
def netns_ok() -> None:
    """Skip (saying why) where Linux network namespaces cannot be made: not root, or no iproute2."""
    from cluster import netns

    why = netns.unavailable()
    if why:
        pytest.skip(why)


@pytest.fixture
def lab(netns_ok, tmp_path):
    """A NetLab whose every process gets one fresh cluster token ($FRAMEHIVE_TOKEN): every server in it
    binds a non-loopback address."""
    import secrets

    from cluster import netns

    with netns.NetLab(log_dir=tmp_path / "logs", env={"FRAMEHIVE_TOKEN": secrets.token_hex(24)}) as lab:
        yield lab
