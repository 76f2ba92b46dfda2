"""One job's work: decode the video, send its tiles, take them back, assemble and encode the result.

Bounded memory: at most `window_tiles` tiles are in flight, and frames are written to the encoder as soon
as all their tiles are back."""

from __future__ import annotations

import io
import logging
import os
import queue
import statistics
import threading
import time
import xmlrpc.client
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

from common import jobproto
from common.errors import DecodeError, FramehiveError, MasterUnavailable, QueueFull
from common.jobproto import Handshake
from common.masterclient import MasterClient
from common.pipeline import needs_previous, pipeline_halo
from common.results import Result, ResultStatus
from common.runtime import Component, Loop
from common.tasks import TaskKind, TaskSpec
from common.tiling import Tile, assemble, cut, plan_tiles
from common.video import H264Writer, add_audio, iter_frames, probe, thumbnail_jpeg, write_gif
from receiver.jobs.config import JobConfig
from receiver.jobs.plan import decode_tile_bytes, encode_tile_bytes, grid_fields, job_grid
from receiver.jobs.spool import Cancelled, Spool

log = logging.getLogger(__name__)

MAX_THUMBNAILS = 60  # per job, for the preview page and GIF
THUMBNAIL_EVERY = 5  # frames between thumbnails
MAX_LATENCY_SAMPLES = 10_000  # tile latencies kept for p50/p95 (the most recent)
SUBMIT_BYTES = 16 * 1024**2  # the master's request limit is 32 MB; one add_tasks request carries at most this much
TAKE_LINGER_S = 0.01  # pause after a take that brought tiles: ~1 take per frame instead of ~3.4


_NOTHING: list = []  # the submitter's "nothing carried over" (never queued)


@dataclass
class Job:
    """One upload and its processing."""

    id: str
    handshake: Handshake
    source: Path
    total: int
    out_path: Path
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    counters: Counter = field(default_factory=Counter)
    error: tuple[str, str] | None = None  # (code, message)
    metrics: dict[str, Any] = field(default_factory=dict)
    spool: Spool | None = None
    thumbnails: deque = field(default_factory=lambda: deque(maxlen=MAX_THUMBNAILS))  # (frame index, JPEG)
    gif: bytes = b""
    started_at: float = field(default_factory=time.time)


@dataclass
class _Frame:
    image: np.ndarray
    tiles: list[Tile]
    sent_at: float
    outputs: dict[int, np.ndarray] = field(default_factory=dict)


class TileRunner(Component):
    """Decodes a job's video, sends its tiles to the master, assembles and encodes the result; a
    Component whose `stop()` cancels the job.

    Four threads overlap the work, so that neither the decoder nor the encoder waits for a round
    trip to the master: this one decodes frames and cuts tiles; a submitter sends them (merging the
    frames that queued up meanwhile into one request); a collector takes finished tiles back; a
    writer assembles complete frames in order and feeds the H.264 encoder. `window_tiles` and
    `window_frames` bound the frames between decoding and writing; `pending` (frames sent, not yet
    complete), `in_flight` and `frames_held` are shared under `_lock`.
    """

    def __init__(self, job: Job, config: JobConfig) -> None:
        super().__init__()
        self.thread_name = f"job-{job.id}"
        self.job, self.config = job, config
        hs = job.handshake
        (self.cols, self.rows), self.grid_note = job_grid(hs.stages, hs.tiles)
        self.halo = pipeline_halo(hs.stages)
        self.client = MasterClient(config.master_url, token=config.token)
        self.pending: dict[int, _Frame] = {}
        self._lock = threading.Condition()
        self._decoded = False  # the sender has sent the last frame
        self._failure: BaseException | None = None  # what stopped the collector, if anything
        self.next_out = 0
        self.in_flight = 0  # tiles of the frames decoded and not yet written
        self.frames_held = 0  # frames decoded and not yet written
        self._outbox: queue.Queue[list | None] = queue.Queue()  # tiles to submit (bounded by the window)
        self._complete: queue.Queue[tuple[int, _Frame] | None] = queue.Queue()  # frames to write, in order
        self.latencies: deque[float] = deque(maxlen=MAX_LATENCY_SAMPLES)  # bounded for hour-long videos
        self._unacked: list[str] = []  # task ids of the tiles the last take brought: acknowledged by the next
        self.writer: H264Writer | None = None
        self.stacked = needs_previous(hs.stages)  # `motion`: each tile carries the previous frame's tile
        self.gray = jobproto.gray_tiles(hs.stages, hs.tile_format)  # tiles as one channel (same pixels)
        self.previous: np.ndarray | None = None
        self.step_s: Counter[str] = Counter()  # seconds per step; each step is timed in one thread only

    @contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.step_s[step] += time.perf_counter() - t0

    def _frames(self, reader: io.RawIOBase) -> Iterator[tuple[int, np.ndarray]]:
        """The decoded frames, timing the decoder (which waits for upload bytes too)."""
        frames = iter_frames(reader)
        while True:
            with self._timed("decode"):
                item = next(frames, None)
            if item is None:
                return
            yield item

    def run(self) -> None:
        """Process the whole video; sets job.metrics or job.error, then job.done."""
        job, t0 = self.job, time.monotonic()
        cpu0 = psutil.Process().cpu_times()
        try:
            reader = self._open()
            info = probe(reader)
            job.counters["frames_total"] = info.frames  # 0 when the container does not say
            reader.seek(0)
            self.writer = H264Writer(job.out_path, width=info.width, height=info.height, fps=info.fps)
            submitter, collector, writer = (
                Loop(f"{job.id}-{name}", partial(self._guarded, loop))
                for name, loop in (("submit", self._submit_loop), ("collect", self._collect_loop),
                                   ("write", self._write_loop)))
            for thread in (submitter, collector, writer):
                thread.start()
            try:
                for index, frame in self._frames(reader):
                    self._check()
                    job.counters["frames_in"] += 1
                    self._send(index, frame)
            finally:
                self._outbox.put(None)
                submitter.join()
                with self._lock:
                    self._decoded = True
                    self._lock.notify_all()
                collector.join()
                writer.join()
            if self._failure is not None:
                raise self._failure
            with self._timed("flush"):
                self.writer.close()
            with self._timed("audio"):
                reader.seek(0)
                audio = add_audio(job.out_path, reader)  # the input's sound track, or why it is missing
            job.metrics = {**self._metrics(info, time.monotonic() - t0, cpu0), "audio": audio}
            if job.handshake.preview:
                job.gif = self._gif(float(info.fps))
        except Cancelled:
            failure = self._failure if not job.cancelled.is_set() else None
            job.error = job.error or ("internal", f"{type(failure).__name__}: {failure}" if failure else "cancelled")
        except DecodeError as e:
            job.error = ("not_video", str(e)) if not job.cancelled.is_set() else ("internal", "cancelled")
        except Exception as e:  # the job fails; the server goes on
            log.exception("job %s failed", job.id)
            job.error = ("internal", f"{type(e).__name__}: {e}")
        finally:
            if self.writer is not None:
                self.writer.close()
            self._cancel_on_master()  # done or failed: the master frees the job's tiles and journal rows
            self.client.close()
            job.done.set()

    def _wake(self) -> None:
        self.job.cancelled.set()

    def _open(self) -> io.RawIOBase:
        if self.job.spool is not None:
            return self.job.spool
        return open(self.job.source, "rb")  # noqa: SIM115 - the decoder owns it until the job ends

    def _check(self) -> None:
        if self.job.cancelled.is_set() or self._failure is not None:
            raise Cancelled("job cancelled")

    def _send(self, index: int, frame: np.ndarray) -> None:
        if self.gray:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        h, w = frame.shape[:2]
        tiles = plan_tiles(w, h, self.cols, self.rows, self.halo)
        now_ns = time.time_ns()
        items = []
        previous = self.previous if self.previous is not None else frame  # frame 0: no motion at all
        with self._timed("cut"):
            for t in tiles:
                pixels = np.vstack([cut(previous, t), cut(frame, t)]) if self.stacked else cut(frame, t)
                data = encode_tile_bytes(pixels, self.job.handshake.tile_format)
                meta = {"frame": index, "tile": t.index, **({"stacked": True} if self.stacked else {})}
                spec = TaskSpec(port=jobproto.TILE_PORT, seq=index & 0x7FFFFFFF, pipeline=self.job.handshake.filters,
                                captured_ns=now_ns, received_ns=now_ns, kind=TaskKind.TILE, job_id=self.job.id,
                                meta=meta)
                items.append((spec, data))
        self.previous = frame
        with self._timed("window_wait"), self._lock:  # backpressure: wait for room in the window
            while self.in_flight and (self.in_flight + len(tiles) > self.config.window_tiles
                                      or self.frames_held >= self.config.window_frames):
                self._check()
                self._lock.wait(0.5)
            self.pending[index] = _Frame(frame, tiles, time.monotonic())
            self.in_flight += len(tiles)
            self.frames_held += 1
        self._outbox.put(items)
        self.job.counters["tiles_sent"] += len(tiles)

    def _guarded(self, loop: Any) -> None:
        """Run one of the helper threads' loops; a failure is handed to the decoding thread, which ends
        the job with it."""
        try:
            loop()
        except BaseException as e:
            self._failure = self._failure or e
        finally:
            with self._lock:
                self._lock.notify_all()

    def _submit_loop(self) -> None:
        """The submitter thread: send queued tiles; the frames that queued up while a request was out
        go together in the next one (up to SUBMIT_BYTES), so a busy master gets fewer requests."""
        items = self._outbox.get()
        while items is not None:
            size = sum(len(data) for _, data in items)
            try:
                while (more := self._outbox.get_nowait()) is not None and size + (
                        n := sum(len(data) for _, data in more)) <= SUBMIT_BYTES:
                    items, size, more = items + more, size + n, _NOTHING
            except queue.Empty:
                more = _NOTHING
            with self._timed("submit"):
                self._submit(items)
            self.job.counters["submit_requests"] += 1
            items = self._outbox.get() if more is _NOTHING else more

    def _submit(self, items: list) -> None:
        pause = 0.05
        while True:
            self._check()
            try:
                self.client.add_tasks(items)
                return
            except (QueueFull, MasterUnavailable) as e:  # the master is busy or away: wait, bounded
                log.info("job %s: %s; retrying", self.job.id, e)
                self.job.cancelled.wait(pause)
                pause = min(pause * 2, 2.0)

    def _collect_loop(self) -> None:
        """The collector thread: take finished tiles until every sent frame is complete."""
        client = MasterClient(self.config.master_url, token=self.config.token)
        try:
            while not self.job.cancelled.is_set() and self._failure is None:
                with self._lock:
                    if self._decoded and not self.pending:
                        return
                self._collect(client)
        finally:
            client.close()
            self._complete.put(None)

    def _write_loop(self) -> None:
        """The writer thread: assemble and encode complete frames, in order, until the collector ends."""
        while (item := self._complete.get()) is not None:
            if self.job.cancelled.is_set() or self._failure is not None:
                continue  # drain: the job is ending
            self._write(item)
            with self._lock:
                self.in_flight -= len(item[1].tiles)
                self.frames_held -= 1
                self._lock.notify_all()

    def _collect(self, client: MasterClient) -> None:
        try:
            with self._timed("take"):
                got = client.take_job_results(self.job.id, 256, wait_s=0.5, ack=self._unacked)
            self._unacked = [r.task_id for r, _ in got]
            self.job.counters["take_requests"] += 1
            if got:  # let the next tiles gather: fewer, fuller requests (the window covers the wait)
                self.job.cancelled.wait(TAKE_LINGER_S)
        except MasterUnavailable as e:
            log.info("job %s: %s; retrying", self.job.id, e)
            self.job.cancelled.wait(0.5)
            got = []
        with self._timed("untile"):
            decoded = [(r, decode_tile_bytes(img)) for r, img in got]  # decode outside the lock
        with self._timed("untile"), self._lock:
            for result, image in decoded:
                self._absorb(result, image)
            self._time_out_stragglers()
            for frame in self._ready_frames():
                self._complete.put(frame)

    def _absorb(self, result: Result, out: np.ndarray | None) -> None:
        meta = result.meta
        frame = self.pending.get(int(meta.get("frame", -1)))
        index = int(meta.get("tile", -1))
        if frame is None or index in frame.outputs or not 0 <= index < len(frame.tiles):
            return  # a late tile of a frame already written with its original
        self.latencies.append((time.monotonic() - frame.sent_at) * 1000.0)
        self.job.counters["retries"] += max(0, result.attempts - 1)
        tile = frame.tiles[index]
        if (result.status is not ResultStatus.OK or out is None
                or out.shape != (tile.cut.h, tile.cut.w, *frame.image.shape[2:])):
            self.job.counters["fallback_tiles"] += 1
            log.info("job %s: tile %d of frame %s replaced by the original (%s)", self.job.id, index,
                     meta.get("frame"), result.error or "no image")
            out = cut(frame.image, tile)
        frame.outputs[index] = out
        self.job.counters["tiles_done"] += 1

    def _time_out_stragglers(self) -> None:
        now = time.monotonic()
        for frame in self.pending.values():
            if now - frame.sent_at > self.config.tile_timeout_s:
                for t in frame.tiles:
                    if t.index not in frame.outputs:
                        frame.outputs[t.index] = cut(frame.image, t)
                        self.job.counters["fallback_tiles"] += 1
                        self.job.counters["timed_out_tiles"] += 1

    def _ready_frames(self) -> list[tuple[int, _Frame]]:
        """Take the frames, in order, whose tiles are all back (called under the lock)."""
        ready = []
        while (frame := self.pending.get(self.next_out)) is not None and len(frame.outputs) == len(frame.tiles):
            ready.append((self.next_out, self.pending.pop(self.next_out)))
            self.next_out += 1
        return ready

    def _write(self, item: tuple[int, _Frame]) -> None:
        index, frame = item
        h, w = frame.image.shape[:2]
        with self._timed("assemble"):
            image = assemble([(t, frame.outputs[t.index]) for t in frame.tiles], w, h)
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        with self._timed("encode"):
            self.writer.write(image)
        if index % THUMBNAIL_EVERY == 0 or not self.job.thumbnails:
            with self._timed("thumbnail"):
                self.job.thumbnails.append((index, thumbnail_jpeg(image)))
        self.job.counters["frames_out"] += 1

    def _gif(self, fps: float) -> bytes:
        """An animated GIF of the thumbnails (the preview a client asked for)."""
        frames = [cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR) for _, jpg in self.job.thumbnails]
        path = self.job.out_path.with_suffix(".gif")
        try:
            write_gif(frames, path, max(1.0, fps / THUMBNAIL_EVERY))
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def _cancel_on_master(self) -> None:
        try:
            self.client.cancel_job(self.job.id)
        except FramehiveError as e:
            log.info("job %s: could not cancel on the master: %s", self.job.id, e)

    def _metrics(self, info: Any, seconds: float, cpu0: Any) -> dict[str, Any]:
        c, lat = self.job.counters, sorted(self.latencies)
        cpu1, proc = psutil.Process().cpu_times(), psutil.Process()
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else 0.0
        return {
            "frames": c["frames_out"], "frames_in": c["frames_in"], "input_fps": float(info.fps),
            "fps_in": round(c["frames_in"] / seconds, 2) if seconds else 0.0,
            "fps_out": round(c["frames_out"] / seconds, 2) if seconds else 0.0,
            "tiles": c["tiles_sent"], "tiles_per_s": round(c["tiles_done"] / seconds, 1) if seconds else 0.0,
            "tile_latency_p50_ms": round(statistics.median(lat), 2) if lat else 0.0,
            "tile_latency_p95_ms": round(p95, 2), "retries": c["retries"], "fallback_tiles": c["fallback_tiles"],
            **grid_fields(self.job.handshake), "tile_format": self.job.handshake.tile_format,
            "tile_channels": 1 if self.gray else 3, "halo_px": self.halo,
            "filters": self.job.handshake.filters,
            "seconds": round(seconds, 3),
            # where a frame's time goes, per server thread (sender: decode, cut, window_wait, submit;
            # collector: take, untile, assemble, encode, thumbnail); waits included, so not CPU
            "server_ms_per_frame": {k: round(v * 1000 / max(1, c["frames_in"]), 2) for k, v in self.step_s.items()},
            "master_requests": {"submit": c["submit_requests"], "take": c["take_requests"]},
            "server": {"cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 3),
                       "rss_mb": round(proc.memory_info().rss / 2**20, 1), "pid": os.getpid()},
            "workers": self._worker_stats(),
        }

    def _worker_stats(self) -> list[dict[str, Any]]:
        """CPU and RSS of each live worker, from their last heartbeat to the master."""
        try:  # a read-out, never a reason to fail the job
            workers = self.client.get_stats()["workers"]
            keys = ("cpu_percent", "rss_mb", "tasks_done", "pid")
            return [{"worker": str(w["worker_id"]), **{k: w["stats"][k] for k in keys if k in w["stats"]}}
                    for w in workers if w.get("alive")]
        except (FramehiveError, OSError, xmlrpc.client.Fault, KeyError, TypeError, AttributeError) as e:
            log.info("job %s: no worker stats: %s", self.job.id, e)
            return []
