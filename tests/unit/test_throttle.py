"""A repeated warning is let through once per interval and says how many it stood for."""

from common.throttle import Throttle


def test_one_warning_per_interval_counting_the_ones_held_back():
    t = [0.0]
    throttle = Throttle(60.0, lambda: t[0])
    assert throttle.ready() == 0
    assert [throttle.ready() for _ in range(3)] == [None, None, None]
    t[0] = 59.9
    assert throttle.ready() is None
    t[0] = 60.0
    assert throttle.ready() == 4
    assert throttle.ready() is None
