"""Per-frame stage durations and their histograms (master/core/timing.py)."""

from __future__ import annotations

import pytest

from master.core.timing import BUCKETS_S, STAGES, LatencyHistograms, frame_stages

MS = 1_000_000


def stamps(**over):
    base = dict(captured_ns=1_000 * MS, received_ns=1_012 * MS, meta={"forwarded_ns": str(1_015 * MS)},
                queued_ns=1_017 * MS, leased_at=1.020, started_ns=5_000 * MS, finished_ns=5_030 * MS,
                stored_at=1.058)
    return {**base, **over}


def test_every_stage_of_a_frame_from_its_stamps():
    got = frame_stages(**stamps())
    assert got == {"network_in": 12.0, "receiver": 3.0, "to_master": 2.0, "queue": 3.0, "work": 30.0,
                   "dispatch": 8.0, "end_to_end": 58.0}
    assert set(got) == set(STAGES)


def test_the_workers_clock_offset_never_leaks_into_one_host_stages():
    # the worker's clock is an hour off: work and dispatch are still exact
    hour = 3600 * 1000 * MS
    got = frame_stages(**stamps(started_ns=5_000 * MS + hour, finished_ns=5_030 * MS + hour))
    assert got["work"] == 30.0 and got["dispatch"] == 8.0
    assert {k for k, (_, clocks) in STAGES.items() if clocks == "cross-host"} == {"network_in", "to_master",
                                                                                  "end_to_end"}


def test_missing_stamps_leave_their_stages_out():
    got = frame_stages(**stamps(meta={}, started_ns=0, finished_ns=0))
    assert "receiver" not in got and "to_master" not in got and "work" not in got and "dispatch" not in got
    assert got["queue"] == 3.0


def test_histograms_are_cumulative_per_port_and_stage_and_bounded_in_ports():
    h = LatencyHistograms(max_ports=2)
    for ms in (0.5, 7, 7, 300, 40_000):
        h.observe(5000, {"work": ms, "not-a-stage": 1})
    h.observe(5001, {"queue": 2})
    h.observe(5002, {"queue": 2})  # a third port is over the bound: ignored
    snap = h.snapshot()
    assert set(snap) == {"5000", "5001"}
    work = snap["5000"]["work"]
    assert work["count"] == 5 and work["sum_s"] == pytest.approx(40.3145)
    assert len(work["buckets"]) == len(BUCKETS_S)
    assert work["buckets"][0] == 1 and work["buckets"][BUCKETS_S.index(0.01)] == 3
    assert work["buckets"][-1] == 4, "40 s is past the last bound: only in the count (+Inf)"
    assert LatencyHistograms.quantile(work, 0.5) == 0.01
    assert LatencyHistograms.quantile(work, 1.0) == float("inf")
