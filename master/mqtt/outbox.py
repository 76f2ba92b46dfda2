"""The outbox between the master and its MQTT broker, and the reconnect backoff: pure and thread-safe.

Two kinds of message wait here:

* queued messages (event entries, command results) keep their order; beyond `max_messages` or
  `max_bytes` the oldest waiting one is dropped and counted (`dropped_events`);
* latest-only messages (retained state: counts, occupancy, snapshots, discovery configs, stats) are
  keyed by topic, since only a topic's newest value matters: a new value replaces a waiting older one
  in its place in line (`coalesced`). They have their own bounds (`max_state_topics`,
  `max_state_bytes`), so state never crowds out events, nor events state.

Delivery: `take(n)` hands the sender the oldest waiting messages of either kind, which are then in
flight; `sent(key, now)` when the broker has acknowledged one (PUBACK for QoS 1; written to the socket for
QoS 0); `requeue(now)` when the connection drops: whatever was in flight goes back in front, in its old
order (a latest-only message whose topic has meanwhile got a newer value is dropped as superseded).
A QoS 1 message therefore leaves the outbox only once the broker has it, so a broker restart loses
none; one whose PUBACK was lost with the connection is sent again (at least once, never at most once).
In-flight messages, at most the sender's window, are never dropped; the bounds count them all the same.

A broker that is killed can lose what it had acknowledged but not yet passed on to its subscribers
or written to disk (a window of milliseconds; not seen in 5 kills of mosquitto at 200 events/s). So
queued messages acknowledged in the last `replay_s` seconds (1 s) before a connection drops are sent
again too (`replayed`): a subscriber may see such an event twice and must tell repeats by their id and
phase, as at-least-once delivery asks of it anyway. `sent()` and `requeue()` take the time (monotonic
seconds).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass

MAX_MESSAGES = 10_000  # queued messages (events) waiting or in flight
MAX_BYTES = 32 * 2**20  # ... and their payload bytes
MAX_STATE_TOPICS = 20_000  # latest-only topics waiting or in flight
MAX_STATE_BYTES = 64 * 2**20  # ... and their payload bytes (snapshots are the big ones)
REPLAY_S = 1.0  # queued messages acknowledged this long before a drop are sent again
MAX_REPLAY = 2_000  # ... at most this many
BACKOFF_BASE_S = 0.5
COUNTERS = ("queued", "delivered", "coalesced", "requeued", "superseded", "replayed", "dropped_events",
            "dropped_state", "dropped_too_large", "refused")
BACKOFF_CAP_S = 30.0


@dataclass(frozen=True)
class Message:
    """One MQTT message to publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    latest_only: bool = False  # only the newest value of this topic matters (retained state)


class Outbox:
    """Messages waiting for the broker and in flight to it, bounded; see the module docstring."""

    def __init__(self, *, max_messages: int = MAX_MESSAGES, max_bytes: int = MAX_BYTES,
                 max_state_topics: int = MAX_STATE_TOPICS, max_state_bytes: int = MAX_STATE_BYTES,
                 replay_s: float = REPLAY_S) -> None:
        if min(max_messages, max_bytes, max_state_topics, max_state_bytes) < 1:
            raise ValueError("outbox bounds must be >= 1")
        self.limits = {False: (max_messages, max_bytes), True: (max_state_topics, max_state_bytes)}
        self._lock = threading.Lock()
        self._keys = itertools.count(1)
        self._waiting: dict[bool, OrderedDict[int, Message]] = {False: OrderedDict(), True: OrderedDict()}
        self._state_key: dict[str, int] = {}  # topic -> key of its waiting latest-only message
        self._inflight: dict[int, Message] = {}
        self.replay_s = replay_s
        self._recent: deque[tuple[float, int, Message]] = deque(maxlen=MAX_REPLAY)  # (acked at, key, queued msg)
        self._count = {False: 0, True: 0}  # waiting + in flight, by kind
        self._bytes = {False: 0, True: 0}
        self.counters: Counter[str] = Counter()

    def put(self, msg: Message) -> bool:
        """Queue `msg` (replacing a waiting value of its topic when latest-only); False if it alone is
        larger than its kind's byte bound (dropped, counted)."""
        kind = msg.latest_only
        with self._lock:
            if len(msg.payload) > self.limits[kind][1]:
                self.counters["dropped_too_large"] += 1
                return False
            old_key = self._state_key.get(msg.topic) if kind else None
            if old_key is not None:
                old = self._waiting[True][old_key]
                self._waiting[True][old_key] = msg
                self._bytes[True] += len(msg.payload) - len(old.payload)
                self.counters["coalesced"] += 1
            else:
                key = next(self._keys)
                self._waiting[kind][key] = msg
                if kind:
                    self._state_key[msg.topic] = key
                self._count[kind] += 1
                self._bytes[kind] += len(msg.payload)
            self.counters["queued"] += 1
            self._trim(kind)
        return True

    def _trim(self, kind: bool) -> None:
        """Drop the oldest waiting messages of a kind while it is over its bounds."""
        max_n, max_b = self.limits[kind]
        waiting = self._waiting[kind]
        while waiting and (self._count[kind] > max_n or self._bytes[kind] > max_b):
            _, old = waiting.popitem(last=False)
            self._forget(kind, old)
            if kind:
                del self._state_key[old.topic]
            self.counters["dropped_state" if kind else "dropped_events"] += 1

    def _forget(self, kind: bool, msg: Message) -> None:
        self._count[kind] -= 1
        self._bytes[kind] -= len(msg.payload)

    def take(self, n: int) -> list[tuple[int, Message]]:
        """Up to `n` of the oldest waiting messages, of either kind, now in flight: (key, message)."""
        out: list[tuple[int, Message]] = []
        with self._lock:
            events, state = self._waiting[False], self._waiting[True]
            while len(out) < n and (events or state):
                first_event = next(iter(events)) if events else None
                first_state = next(iter(state)) if state else None
                kind = first_event is None or (first_state is not None and first_state < first_event)
                key, msg = self._waiting[kind].popitem(last=False)
                if kind:
                    del self._state_key[msg.topic]
                self._inflight[key] = msg
                out.append((key, msg))
        return out

    def sent(self, key: int, now: float) -> None:
        """The broker has message `key` (or, QoS 0, it has left) at `now`: it leaves the outbox (a
        queued one is remembered for `replay_s`)."""
        with self._lock:
            msg = self._inflight.pop(key, None)
            if msg is not None:
                self._forget(msg.latest_only, msg)
                self.counters["delivered"] += 1
                if not msg.latest_only and self.replay_s > 0:
                    self._recent.append((now, key, msg))

    def refused(self, key: int) -> None:
        """The sender cannot send message `key` at all (paho refused it): it leaves, counted."""
        with self._lock:
            msg = self._inflight.pop(key, None)
            if msg is not None:
                self._forget(msg.latest_only, msg)
                self.counters["refused"] += 1

    def requeue(self, now: float, *, replay: bool = True) -> int:
        """The connection dropped at `now`: messages in flight, and queued ones acknowledged in the last
        `replay_s` (unless `replay` is false: a clean disconnect), wait again, in front, in their old
        order (superseded latest-only ones are dropped). Returns how many wait again."""
        with self._lock:
            back = 0
            again = {key: msg for at, key, msg in self._recent if now - at <= self.replay_s} if replay else {}
            self._recent.clear()
            for key, msg in again.items():
                self._waiting[False][key] = msg
                self._count[False] += 1
                self._bytes[False] += len(msg.payload)
            self.counters["replayed"] += len(again)
            back += len(again)
            for key, msg in sorted(self._inflight.items()):
                kind = msg.latest_only
                if kind and msg.topic in self._state_key:
                    self._forget(kind, msg)
                    self.counters["superseded"] += 1
                    continue
                self._waiting[kind][key] = msg
                if kind:
                    self._state_key[msg.topic] = key
                back += 1
            self._inflight.clear()
            for kind in (False, True):
                self._waiting[kind] = OrderedDict(sorted(self._waiting[kind].items()))
                self._trim(kind)
            self.counters["requeued"] += back
            return back

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def waiting(self) -> int:
        """Messages waiting to be sent (not in flight)."""
        with self._lock:
            return len(self._waiting[False]) + len(self._waiting[True])

    def stats(self) -> dict[str, int]:
        """Waiting, in flight, bytes held, and the counters (queued, delivered, coalesced, requeued,
        superseded, replayed, dropped_events, dropped_state, dropped_too_large, refused)."""
        with self._lock:
            waiting = len(self._waiting[False]) + len(self._waiting[True])
            held = self._bytes[False] + self._bytes[True]
            return {"waiting": waiting, "in_flight": len(self._inflight), "bytes": held,
                    **{k: self.counters[k] for k in COUNTERS}}


def backoff_s(attempt: int, rand: float, *, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before reconnect attempt `attempt` (1: the first retry): doubling from `base_s`,
    capped at `cap_s`, and jittered by `rand` in [0, 1) to between half and all of that, so masters
    that lost one broker together do not all come back in the same instant."""
    full = min(cap_s, base_s * 2 ** min(max(attempt, 1) - 1, 30))
    return full * (0.5 + 0.5 * min(max(rand, 0.0), 1.0))
