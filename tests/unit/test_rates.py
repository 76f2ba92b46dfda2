"""The per-camera frame rate (master/core/rates.py): a count over a sliding window, at any rate."""

from __future__ import annotations

import pytest

from master.core.rates import RateMeter


def feed(meter: RateMeter, key: int, fps: float, start: float, seconds: float) -> float:
    """Observe `key` at a steady `fps` from `start` for `seconds`; returns the time of the last event."""
    n = int(fps * seconds)
    for i in range(n):
        meter.observe(key, start + i / fps)
    return start + (n - 1) / fps


@pytest.mark.parametrize("fps", [1.0, 6.0, 30.0, 120.0, 900.0])
def test_a_steady_rate_is_measured_whatever_it_is(fps):
    meter = RateMeter(window_s=5.0, bucket_s=0.25)
    last = feed(meter, 5000, fps, 1000.0, 10.0)
    assert meter.rate(5000, last) == pytest.approx(fps, rel=0.06)


def test_keys_are_apart_and_an_unknown_key_is_zero():
    meter = RateMeter()
    feed(meter, 1, 10.0, 0.0, 6.0)
    last = feed(meter, 2, 40.0, 0.0, 6.0)
    rates = meter.rates(last)
    assert rates[1] == pytest.approx(10.0, rel=0.06) and rates[2] == pytest.approx(40.0, rel=0.06)
    assert meter.rate(3, last) == 0.0


def test_a_camera_that_stopped_falls_to_zero_after_the_window():
    meter = RateMeter(window_s=5.0, bucket_s=0.25)
    last = feed(meter, 7, 25.0, 50.0, 4.0)
    assert meter.rate(7, last + 2.0) > 0.0
    assert meter.rate(7, last + 5.5) == 0.0


def test_memory_per_key_is_bounded_by_the_window_not_the_rate():
    meter = RateMeter(window_s=5.0, bucket_s=0.25)
    feed(meter, 9, 2000.0, 0.0, 30.0)
    assert len(meter._counts[9]) <= 20


def test_keys_beyond_the_cap_are_not_tracked():
    meter = RateMeter(max_keys=2)
    for key in (1, 2, 3):
        meter.observe(key, 10.0)
    assert set(meter.rates(10.0)) == {1, 2}


def test_a_bucket_longer_than_the_window_is_refused():
    with pytest.raises(ValueError):
        RateMeter(window_s=1.0, bucket_s=2.0)
