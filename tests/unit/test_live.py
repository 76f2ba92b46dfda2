"""The pure parts of a live source: its backoff and its online/offline bookkeeping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sender.live import Backoff, Liveness, State


@given(st.integers(1, 10_000), st.floats(0.0, 1.0, exclude_max=True))
def test_backoff_is_capped_and_jittered_within_its_top_half(failures, rand):
    b = Backoff(first_s=0.5, max_s=10.0, jitter=0.5)
    base = min(10.0, 0.5 * 2 ** min(failures - 1, 10))
    assert base / 2 <= b.delay(failures, rand) <= base <= 10.0


def test_backoff_doubles_until_the_cap():
    b = Backoff(first_s=0.5, max_s=10.0, jitter=0.5)
    assert [b.delay(n, 0.0) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.delay(3, 0.999) > 1.0  # never below half the base: retries do not collapse to a burst


def test_a_source_down_at_start_changes_state_once_per_change_and_counts_its_outage():
    live = Liveness(now=100.0)
    changes = [live.failed(100.0 + i) for i in range(5)]  # five retries, one change
    assert [c.new if c else None for c in changes] == [State.OFFLINE, None, None, None, None]
    assert live.failures == 5 and live.offline_s(106.0) == 6.0
    back = live.frame(107.5)
    assert back is not None and back.old is State.OFFLINE and back.outage_s == 7.5
    assert live.frame(107.6) is None and live.failures == 0
    assert live.report(200.0) == {"reconnects": 1, "outages": 1, "offline_s": 7.5}


def test_a_drop_and_a_return_are_one_outage_and_one_reconnect_each():
    live = Liveness(now=0.0)
    first = live.frame(1.0)
    assert first is not None and first.old is State.STARTING and first.outage_s == 0.0
    assert live.failed(10.0).old is State.ONLINE
    assert live.failed(11.0) is None
    live.frame(13.0)
    live.failed(20.0)
    assert live.report(21.0) == {"reconnects": 1, "outages": 2, "offline_s": 4.0}  # 3 s, then 1 s so far
    live.frame(22.0)
    assert live.report(30.0) == {"reconnects": 2, "outages": 2, "offline_s": 5.0}


def test_an_unforeseen_error_is_retried_logged_once_with_its_traceback_and_masked(caplog):
    import logging

    from sender.credentials import StreamAddress
    from sender.live import LiveSource
    from tests.conftest import wait_until

    address = StreamAddress.from_flags("rtsp://cam/live", username="u", password="hunter2-Zq9", env={})
    attempts = []

    def connect():  # a library that fails in a way nobody foresaw, quoting the URL it was given
        attempts.append(1)
        raise RuntimeError(f"could not open {address.url()}")

    source = LiveSource(address.masked, connect, backoff=Backoff(first_s=0.01, max_s=0.02), scrub=address.scrub)
    with caplog.at_level(logging.DEBUG, logger="sender.live"):
        source.start()
        wait_until(lambda: len(attempts) >= 5)
        source.stop()
        assert source.join(5)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Traceback" in errors[0].getMessage() and "RuntimeError" in errors[0].getMessage()
    assert "rtsp://u:***@cam/live" in errors[0].getMessage()
    assert "hunter2" not in caplog.text and source.stats()["outages"] == 1
