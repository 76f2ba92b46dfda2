"""Structured data from the wire, checked once at the boundary: heartbeat stats, receiver reports,
task metadata.

What comes in over XML-RPC or JSON can hold anything the format can: NaN and infinities, a dateTime,
a 3,000-deep nesting, a million keys, a megabyte string. Kept as it came, one such value breaks every
read-out that touches it later (/metrics, the dashboard's JSON, get_stats). `clean` either returns a
copy made only of what every read-out can carry (str, bool, finite int/float, and dicts and lists of
them), bounded in depth, items and string length, or raises BadRequest naming the first offending
path, so the caller refuses the whole call with a clear message and counts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from common.errors import BadRequest

INT_LIMIT = 2**63  # beyond this a number is no counter of ours


@dataclass(frozen=True)
class Limits:
    """How much one value may hold."""

    depth: int = 6  # dict/list levels
    items: int = 4096  # scalars and containers, all levels together
    text: int = 256  # characters per string
    key: int = 64  # characters per dict key


STATS = Limits(depth=4, items=256, text=128, key=64)  # a worker heartbeat
REPORT = Limits(depth=6, items=8192, text=256, key=64)  # a receiver's counters and its file jobs
META = Limits(depth=3, items=256, text=256, key=32)  # a task's metadata (motion regions: 8 lists of 4)


def clean(value: Any, limits: Limits = REPORT, *, what: str = "value") -> Any:
    """A bounded, JSON- and XML-RPC-safe copy of `value`; BadRequest naming the path of the first problem."""
    budget = [limits.items]
    return _clean(value, limits, what, 0, budget)


def _clean(value: Any, limits: Limits, path: str, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise BadRequest(f"{path}: more than {limits.items} items in all")
    if isinstance(value, bool | str):
        if isinstance(value, str) and len(value) > limits.text:
            raise BadRequest(f"{path}: a string of {len(value)} characters (at most {limits.text})")
        return value
    if isinstance(value, int):
        if not -INT_LIMIT < value < INT_LIMIT:
            raise BadRequest(f"{path}: {value} is out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= INT_LIMIT:
            raise BadRequest(f"{path}: {value!r} is not a finite number in range")
        return value
    if isinstance(value, dict | list | tuple):
        if depth >= limits.depth:
            raise BadRequest(f"{path}: nested deeper than {limits.depth} levels")
        if isinstance(value, dict):
            return {_key(k, limits, path): _clean(v, limits, f"{path}.{k}", depth + 1, budget)
                    for k, v in value.items()}
        return [_clean(v, limits, f"{path}[{i}]", depth + 1, budget) for i, v in enumerate(value)]
    raise BadRequest(f"{path}: a {type(value).__name__} is not allowed here (numbers, strings, structs, lists)")


def _key(k: Any, limits: Limits, path: str) -> str:
    if not isinstance(k, str) or not 0 < len(k) <= limits.key:
        raise BadRequest(f"{path}: key {str(k)[:40]!r} must be a string of 1..{limits.key} characters")
    return k
