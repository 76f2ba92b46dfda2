"""Untrusted structured data: cleaned and bounded at the boundary, or refused with the path at fault."""

from __future__ import annotations

import datetime
import json
import xmlrpc.client

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import BadRequest
from common.wiredata import META, STATS, Limits, clean
from master.api.rpc import xmlrpc_safe


def test_plain_counters_pass_unchanged():
    stats = {"cpu_percent": 12.5, "rss_mb": 80, "busy": 1, "name": "w1", "ok": True,
             "ports": {"5000": {"frames": 10, "jobs": [{"state": "done", "fps": 9.5}]}}}
    assert clean(stats) == stats


@pytest.mark.parametrize("bad,words", [
    ({"cpu": float("nan")}, "value.cpu: nan is not a finite number"),
    ({"cpu": float("inf")}, "is not a finite number"),
    ({"at": datetime.datetime(2026, 1, 1)}, "a datetime is not allowed"),
    ({"at": xmlrpc.client.DateTime("20260101T00:00:00")}, "a DateTime is not allowed"),
    ({"blob": xmlrpc.client.Binary(b"x")}, "a Binary is not allowed"),
    ({"n": 10**30}, "out of range"),
    ({"s": "x" * 1000}, "a string of 1000 characters"),
    ({"x" * 100: 1}, "must be a string of 1..64 characters"),
    ({"a": None}, "a NoneType is not allowed"),
])
def test_what_breaks_read_outs_is_refused_with_its_path(bad, words):
    with pytest.raises(BadRequest, match=words):
        clean(bad)


def test_depth_and_size_are_bounded():
    deep: dict = {}
    node = deep
    for _ in range(3000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(BadRequest, match="nested deeper than 6 levels"):
        clean(deep)
    with pytest.raises(BadRequest, match="more than 256 items"):
        clean({f"k{i}": i for i in range(1000)}, STATS)
    with pytest.raises(BadRequest, match="nested deeper than 3"):
        clean({"a": {"b": {"c": {}}}}, META, what="meta")


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300) | st.binary(max_size=4)
values = st.recursive(scalars, lambda children: st.lists(children, max_size=5)
                      | st.dictionaries(st.text(max_size=70), children, max_size=5), max_leaves=40)


@given(values)
def test_whatever_comes_in_either_is_refused_or_serialises_strictly(value):
    try:
        out = clean(value, Limits(depth=4, items=50))
    except BadRequest:
        return
    json.dumps(out, allow_nan=False)  # never raises: no NaN, no infinity, no odd type
    xmlrpc.client.dumps((xmlrpc_safe(out),), allow_none=False)  # as get_stats sends it
