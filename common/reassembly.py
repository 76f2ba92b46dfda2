"""Pure reassembly of UDP frame datagrams into whole frames, with bounded memory.

No sockets and no clock reads: the caller passes each datagram, where it came from and `now`.
Every datagram that cannot be used is counted under a reason and dropped; nothing raises.
With a shared key, only signed datagrams whose MAC checks out are used, each (frame, chunk) once.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from common.protocol import (
    FLAG_SIGNED,
    SEQ_MODULUS,
    ChunkHeader,
    DatagramError,
    decode_datagram,
    seq_newer,
    verify_mac,
)

# A sequence number this far behind the last delivered one means the sender restarted.
RESTART_DISTANCE = 256
# With a key: a frame this many frames behind the newest authentic one on its stream is a replay.
REPLAY_WINDOW_FRAMES = 64
# With a key: replay windows kept per port, one per stream id (least recently used forgotten first).
MAX_REPLAY_STREAMS = 1024

# Counter names for datagrams a keyed receiver refuses (the master shows dropped_* as receiver drops).
AUTH_REASONS = ("dropped_unsigned", "dropped_forged", "dropped_replayed")

# Counter names that mean "someone sent us something broken".
MALFORMED_REASONS = ("short", "bad_magic", "bad_version", "bad_flags", "bad_length", "bad_chunk",
                     "bad_checksum", "too_large", "inconsistent", "corrupt")


@dataclass(frozen=True)
class ReassemblyLimits:
    """Bounds on what one assembler (one receiving port) keeps in memory."""

    max_frame_bytes: int = 8 * 1024 * 1024
    max_chunks: int = 8192
    max_frames_in_flight: int = 8  # incomplete frames per stream
    max_streams: int = 32  # (source address, stream id) pairs tracked per port
    max_buffered_bytes: int = 64 * 1024 * 1024  # chunk bytes held across all streams
    frame_timeout_s: float = 1.0  # an incomplete frame older than this is dropped
    stream_idle_s: float = 60.0  # a stream silent this long is forgotten

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_chunks", "max_frames_in_flight", "max_streams",
                     "max_buffered_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.frame_timeout_s <= 0 or self.stream_idle_s <= 0:
            raise ValueError("timeouts must be > 0")


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole frame as the sender sent it."""

    source: Hashable
    stream_id: int
    seq: int
    capture_ns: int
    data: bytes
    first_at: float  # when its first datagram arrived (caller's clock, seconds)
    completed_at: float
    chunks: int


@dataclass
class _Partial:
    count: int
    frame_len: int
    capture_ns: int
    first_at: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


@dataclass
class ReplayWindow:
    """Which (frame seq, chunk index) pairs one stream has already had accepted, for the newest frames."""

    size: int = REPLAY_WINDOW_FRAMES
    newest: int | None = None
    seen: dict[int, int] = field(default_factory=dict)  # frame seq -> bit mask of chunk indexes

    def accept(self, seq: int, index: int) -> bool:
        """True, and remembered, the first time (seq, index) is offered within the window; else False."""
        if self.newest is None or seq_newer(seq, self.newest):
            self.newest = seq
            for old in [s for s in self.seen if (seq - s) % SEQ_MODULUS >= self.size]:
                del self.seen[old]
        elif (self.newest - seq) % SEQ_MODULUS >= self.size:
            return False
        mask, bit = self.seen.get(seq, 0), 1 << index
        if mask & bit:
            return False
        self.seen[seq] = mask | bit
        return True


@dataclass
class _Stream:
    last_seen: float
    partials: OrderedDict[int, _Partial] = field(default_factory=OrderedDict)
    last_done: int | None = None


class FrameAssembler:
    """Turns datagrams from any number of senders on one port into complete frames.

    With `key`, unsigned, forged and replayed datagrams are dropped and counted (AUTH_REASONS).
    The replay window is kept per stream id, which the MAC covers, and not per source address,
    which it does not: a captured datagram re-sent from a spoofed address is still a replay.
    Without a key, signed datagrams are accepted unverified (their trailer skipped) and counted as
    `signed_unverified`: a receiver without the key cannot tell a forgery, so it refuses nothing
    it would have taken unsigned.
    """

    def __init__(self, limits: ReassemblyLimits | None = None, key: bytes | None = None) -> None:
        self.limits = limits or ReassemblyLimits()
        self.key = key
        self.counters: Counter[str] = Counter()
        self._streams: OrderedDict[tuple[Hashable, int], _Stream] = OrderedDict()
        self._replay: OrderedDict[int, ReplayWindow] = OrderedDict()
        self._buffered = 0

    @property
    def buffered_bytes(self) -> int:
        """Chunk bytes currently held for incomplete frames."""
        return self._buffered

    @property
    def frames_in_flight(self) -> int:
        """Incomplete frames currently held."""
        return sum(len(s.partials) for s in self._streams.values())

    def occupancy(self) -> dict[str, int]:
        """What is held now, counted by walking it (tests check the bounds with this on both cores)."""
        per_stream = [len(s.partials) for s in self._streams.values()]
        return {"streams": len(self._streams), "frames_in_flight": sum(per_stream),
                "most_frames_per_stream": max(per_stream, default=0), "buffered_bytes": self._buffered,
                "held_bytes": sum(p.size for s in self._streams.values() for p in s.partials.values()),
                "replay_windows": len(self._replay),
                "most_replay_entries": max((len(w.seen) for w in self._replay.values()), default=0)}

    def malformed(self) -> int:
        """Total datagrams dropped as broken, across all reasons."""
        return sum(self.counters[r] for r in MALFORMED_REASONS)

    def add(self, datagram: bytes | memoryview, source: Hashable, now: float) -> Frame | None:
        """Take one datagram; return the frame it completes, if any."""
        self.counters["datagrams"] += 1
        self.counters["bytes"] += len(datagram)
        try:
            head, payload = decode_datagram(datagram)
        except DatagramError as e:
            self.counters[e.reason] += 1
            return None
        reason = self._authenticate(datagram, head) or self._check_limits(head)
        if reason:
            self.counters[reason] += 1
            return None
        if self.key is not None and not self._replay_window(head.stream_id).accept(head.seq, head.index):
            self.counters["dropped_replayed"] += 1
            return None
        stream = self._stream(source, head.stream_id, now)
        if self._is_late(stream, head.seq):
            self.counters["late"] += 1
            return None
        partial = self._partial(stream, head, now)
        if partial is None:
            return None
        return self._store_chunk(source, stream, partial, head, payload, now)

    def expire(self, now: float) -> int:
        """Drop incomplete frames older than the timeout and idle streams; return frames dropped."""
        dropped = 0
        timeout, idle = self.limits.frame_timeout_s, self.limits.stream_idle_s
        for key in list(self._streams):
            stream = self._streams[key]
            for seq in [s for s, p in stream.partials.items() if now - p.first_at > timeout]:
                self._drop_partial(stream, seq)
                dropped += 1
            if not stream.partials and now - stream.last_seen > idle:
                del self._streams[key]
        self.counters["frames_incomplete"] += dropped
        return dropped

    def _authenticate(self, datagram: bytes | memoryview, head: ChunkHeader) -> str:
        """The drop reason for a datagram a keyed assembler must refuse, else ""."""
        signed = bool(head.flags & FLAG_SIGNED)
        if self.key is None:
            if signed:
                self.counters["signed_unverified"] += 1
            return ""
        if not signed:
            return "dropped_unsigned"
        return "" if verify_mac(datagram, self.key) else "dropped_forged"

    def _replay_window(self, stream_id: int) -> ReplayWindow:
        window = self._replay.get(stream_id)
        if window is None:
            window = self._replay[stream_id] = ReplayWindow()
            while len(self._replay) > MAX_REPLAY_STREAMS:
                self._replay.popitem(last=False)
        else:
            self._replay.move_to_end(stream_id)
        return window

    def _check_limits(self, head: ChunkHeader) -> str:
        lim = self.limits
        if head.frame_len == 0 or head.frame_len > lim.max_frame_bytes:
            return "too_large" if head.frame_len else "bad_length"
        if head.count > lim.max_chunks or head.count > head.frame_len:
            return "bad_chunk"
        if head.payload_len == 0 or head.payload_len > head.frame_len:
            return "bad_length"
        return ""

    def _stream(self, source: Hashable, stream_id: int, now: float) -> _Stream:
        key = (source, stream_id)
        stream = self._streams.get(key)
        if stream is None:
            while len(self._streams) >= self.limits.max_streams:
                _, old = self._streams.popitem(last=False)
                self._forget(old)
                self.counters["streams_evicted"] += 1
            stream = self._streams[key] = _Stream(last_seen=now)
        else:
            self._streams.move_to_end(key)
        stream.last_seen = now
        return stream

    @staticmethod
    def _is_late(stream: _Stream, seq: int) -> bool:
        if stream.last_done is None or seq_newer(seq, stream.last_done):
            return False
        behind = (stream.last_done - seq) % (1 << 32)
        if behind > RESTART_DISTANCE:  # the sender restarted its numbering: follow it
            stream.last_done = None
            return False
        return True

    def _partial(self, stream: _Stream, head: ChunkHeader, now: float) -> _Partial | None:
        partial = stream.partials.get(head.seq)
        if partial is None:
            while len(stream.partials) >= self.limits.max_frames_in_flight:
                self._drop_partial(stream, next(iter(stream.partials)))
                self.counters["frames_incomplete"] += 1
            partial = _Partial(head.count, head.frame_len, head.capture_ns, now)
            stream.partials[head.seq] = partial
            return partial
        if (partial.count, partial.frame_len, partial.capture_ns) != (head.count, head.frame_len, head.capture_ns):
            self.counters["inconsistent"] += 1
            return None
        if head.index in partial.chunks:
            self.counters["duplicate"] += 1
            return None
        return partial

    def _store_chunk(self, source: Hashable, stream: _Stream, partial: _Partial, head: ChunkHeader,
                     payload: memoryview, now: float) -> Frame | None:
        if partial.size + len(payload) > partial.frame_len:
            self.counters["inconsistent"] += 1
            return None
        self._make_room(len(payload))
        if stream.partials.get(head.seq) is not partial:  # evicted to make room for itself
            return None
        partial.chunks[head.index] = bytes(payload)
        partial.size += len(payload)
        self._buffered += len(payload)
        if len(partial.chunks) < partial.count:
            return None
        self._drop_partial(stream, head.seq)
        if partial.size != partial.frame_len:
            self.counters["corrupt"] += 1
            return None
        stream.last_done = head.seq
        self._drop_older(stream, head.seq)
        self.counters["frames_complete"] += 1
        data = b"".join(partial.chunks[i] for i in range(partial.count))
        return Frame(source, head.stream_id, head.seq, partial.capture_ns, data, partial.first_at, now,
                     partial.count)

    def _drop_older(self, stream: _Stream, seq: int) -> None:
        """Newest frame wins: incomplete frames older than a delivered one will never be used."""
        for old in [s for s in stream.partials if seq_newer(seq, s)]:
            self._drop_partial(stream, old)
            self.counters["frames_incomplete"] += 1

    def _make_room(self, need: int) -> None:
        while self._buffered + need > self.limits.max_buffered_bytes:
            oldest = min(((p.first_at, seq, s) for s in self._streams.values() for seq, p in s.partials.items()),
                         default=None, key=lambda t: t[0])
            if oldest is None:
                return
            self._drop_partial(oldest[2], oldest[1])
            self.counters["frames_incomplete"] += 1
            self.counters["evicted_for_memory"] += 1

    def _drop_partial(self, stream: _Stream, seq: int) -> None:
        partial = stream.partials.pop(seq)
        self._buffered -= partial.size

    def _forget(self, stream: _Stream) -> None:
        for seq in list(stream.partials):
            self._drop_partial(stream, seq)
            self.counters["frames_incomplete"] += 1
