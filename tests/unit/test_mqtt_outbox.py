"""The MQTT outbox (master/mqtt/outbox.py): bounds by count and bytes, oldest dropped and counted,
latest-only state coalesced by topic and never crowding out events, messages kept until acknowledged
and sent again after a dropped connection, in order; and the reconnect backoff."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from master.mqtt.outbox import Message, Outbox, backoff_s


def event(i: int, size: int = 10) -> Message:
    return Message("fh/events", str(i).encode().ljust(size, b" "), qos=1)


def state(topic: str, value: bytes) -> Message:
    return Message(topic, value, qos=1, retain=True, latest_only=True)


def drain(box: Outbox, now: float = 0.0) -> list[Message]:
    out = []
    while True:
        batch = box.take(10)
        if not batch:
            return out
        for key, msg in batch:
            box.sent(key, now)
            out.append(msg)


def test_events_keep_their_order_and_the_oldest_go_beyond_the_count():
    box = Outbox(max_messages=3)
    for i in range(5):
        box.put(event(i))
    assert [int(m.payload) for m in drain(box)] == [2, 3, 4]
    assert box.stats()["dropped_events"] == 2 and box.stats()["delivered"] == 3


def test_the_byte_bound_drops_the_oldest_too():
    box = Outbox(max_bytes=25)
    for i in range(4):
        box.put(event(i, size=10))
    assert [int(m.payload) for m in drain(box)] == [2, 3]
    assert box.stats()["dropped_events"] == 2
    assert not box.put(event(9, size=26)) and box.stats()["dropped_too_large"] == 1


def test_state_is_coalesced_by_topic_in_its_place_in_line():
    box = Outbox()
    box.put(state("fh/a", b"1"))
    box.put(event(0))
    box.put(state("fh/b", b"1"))
    box.put(state("fh/a", b"2"))
    got = [(m.topic, m.payload) for m in drain(box)]
    assert got == [("fh/a", b"2"), ("fh/events", event(0).payload), ("fh/b", b"1")]
    assert box.stats()["coalesced"] == 1


def test_state_never_crowds_out_events_nor_events_state():
    box = Outbox(max_messages=5, max_state_topics=3)
    for i in range(5):
        box.put(event(i))
    for i in range(100):  # many values of many topics: only 3 topics' latest values are kept
        box.put(state(f"fh/t{i % 10}", str(i).encode()))
    out = drain(box)
    assert [int(m.payload) for m in out if m.topic == "fh/events"] == [0, 1, 2, 3, 4]
    assert [(m.topic, m.payload) for m in out if m.latest_only] == [("fh/t7", b"97"), ("fh/t8", b"98"),
                                                                     ("fh/t9", b"99")]
    assert box.stats()["dropped_events"] == 0 and box.stats()["dropped_state"] == 97


def test_messages_in_flight_are_kept_until_acknowledged_and_sent_again_in_order_after_a_drop():
    box = Outbox()
    for i in range(6):
        box.put(event(i))
    first = box.take(4)
    box.sent(first[1][0], now=10.0)  # the broker acknowledged #1 only
    assert box.in_flight == 3 and box.waiting() == 2
    assert box.requeue(now=13.0) == 3  # the connection dropped 3 s later
    assert [int(m.payload) for m in drain(box)] == [0, 2, 3, 4, 5]
    assert box.stats()["requeued"] == 3 and box.stats()["waiting"] == 0 and box.stats()["bytes"] == 0


def test_events_acknowledged_just_before_a_drop_are_sent_again_a_killed_broker_may_have_lost_them():
    box = Outbox(replay_s=2.0)
    for i in range(4):
        box.put(event(i))
    for key, msg in box.take(3):
        box.sent(key, now=100.0 + int(msg.payload))  # acknowledged at 100, 101, 102
    box.put(state("fh/a", b"1"))
    [_, (key, _)] = box.take(2)  # event #3 and the state
    box.sent(key, now=102.5)  # the state is acknowledged: the bridge sends all state again after a drop anyway
    assert box.requeue(now=103.0) == 3  # #1 and #2 again (#0 is older than 2 s), and #3 still in flight
    assert [m.payload for m in drain(box)] == [event(1).payload, event(2).payload, event(3).payload]
    assert box.stats()["replayed"] == 2
    box.put(event(9))
    [(key, _)] = box.take(1)
    box.refused(key)  # paho would not take it: it leaves, counted, and is never replayed
    assert box.requeue(now=103.1) == 0 and box.stats()["refused"] == 1 and box.stats()["bytes"] == 0


def test_in_flight_state_superseded_while_away_is_not_sent_again():
    box = Outbox()
    box.put(state("fh/a", b"1"))
    [(_, _)] = box.take(1)
    box.put(state("fh/a", b"2"))
    box.requeue(now=1.0)
    assert [m.payload for m in drain(box)] == [b"2"]
    assert box.stats()["superseded"] == 1


def test_in_flight_messages_are_never_dropped_by_the_bounds():
    box = Outbox(max_messages=2)
    box.put(event(0))
    box.put(event(1))
    taken = box.take(2)
    for i in range(2, 6):
        box.put(event(i))
    assert box.in_flight == 2 and box.waiting() == 0  # every new one pushed out the one before it
    for key, _ in taken:
        box.sent(key, 0.0)
    assert drain(box) == [] and box.stats()["dropped_events"] == 4


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "put_state", "take", "ack", "drop"]), st.integers(0, 5)),
                max_size=60))
def test_no_acknowledged_or_queued_event_is_ever_lost_or_reordered(ops):
    """Under any mix of puts, takes, acks and dropped connections (no bound reached), every event is
    acknowledged at least once, first acknowledgements in the order they were queued."""
    box = Outbox(replay_s=0.0)  # replays only add repeats; the property is about losses and order
    queued, acked, flight, n = [], [], [], 0
    for op, arg in ops:
        if op == "put":
            box.put(event(n))
            queued.append(n)
            n += 1
        elif op == "put_state":
            box.put(state(f"fh/s{arg}", b"x"))
        elif op == "take":
            flight += box.take(arg + 1)
        elif op == "ack" and flight:
            key, msg = flight.pop(arg % len(flight))
            box.sent(key, 0.0)
            if not msg.latest_only:
                acked.append(int(msg.payload))
        elif op == "drop":
            box.requeue(0.0)
            flight = []
    for key, msg in flight:
        box.sent(key, 0.0)
        if not msg.latest_only:
            acked.append(int(msg.payload))
    acked += [int(m.payload) for m in drain(box) if not m.latest_only]
    assert sorted(set(acked)) == queued
    assert box.stats()["waiting"] == 0 and box.stats()["in_flight"] == 0 and box.stats()["bytes"] == 0


def test_backoff_doubles_is_capped_and_jittered():
    assert backoff_s(1, 0.0) == 0.25 and backoff_s(1, 1.0) == 0.5
    assert backoff_s(3, 1.0) == 2.0 and backoff_s(100, 1.0) == 30.0 and backoff_s(100, 0.0) == 15.0
    assert backoff_s(5, 0.5, cap_s=4.0) == 3.0
    delays = {round(backoff_s(4, r / 10), 3) for r in range(10)}
    assert len(delays) == 10 and min(delays) >= 2.0 and max(delays) <= 4.0

