"""Long polls wake as many waiters as the news can serve, and never miss news that came mid-fetch."""

from __future__ import annotations

import threading
import time

from master.core.longpoll import WakeChannel
from tests.conftest import wait_until


class Queue:
    """Items to hand out, counting fetches (one fetch per wake-up of a waiter)."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.fetches = 0
        self.lock = threading.Lock()

    def fetch(self) -> list[int]:
        with self.lock:
            self.fetches += 1
            return [self.items.pop()] if self.items else []


def test_one_item_wakes_one_waiter_not_all():
    channel, queue, stop = WakeChannel(), Queue(), threading.Event()
    got: list[list[int]] = []
    waiters = [threading.Thread(target=lambda: got.append(channel.poll(queue.fetch, time.monotonic() + 30, stop)))
               for _ in range(3)]
    for t in waiters:
        t.start()
    wait_until(lambda: queue.fetches == 3)  # each fetched once, found nothing, and sleeps
    wait_until(lambda: all(w.is_alive() for w in waiters) and len(channel._cond._waiters) == 3)
    with queue.lock:
        queue.items.append(7)
    channel.signal(1)
    wait_until(lambda: got == [[7]])
    assert queue.fetches == 4  # only the one woken waiter fetched again
    stop.set()
    channel.signal()  # a stop wakes everyone
    for t in waiters:
        t.join(5)
    assert got.count([]) == 2 and not any(t.is_alive() for t in waiters)


def test_news_that_arrives_during_a_fetch_is_not_missed():
    channel, stop = WakeChannel(), threading.Event()
    calls = []

    def fetch() -> list[str]:
        calls.append(1)
        if len(calls) == 1:  # the news lands after this fetch looked and before the poll waits
            channel.signal(1)
            return []
        return ["task"]

    assert channel.poll(fetch, time.monotonic() + 30, stop) == ["task"]
    assert len(calls) == 2


def test_a_poll_with_nothing_returns_empty_at_its_deadline():
    channel, stop = WakeChannel(), threading.Event()
    assert channel.poll(list, time.monotonic() + 0.05, stop) == []
