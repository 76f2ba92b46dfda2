"""The file-job server: a video is uploaded over TCP (IPv4 and IPv6 on one socket), its frames are
tiled across the workers as they are decoded, and an H.264 MP4 with JSON metrics goes back.

Bounded memory: the upload is spooled to disk and decoded while it arrives (a reader that waits for
bytes not yet received), at most `window_tiles` tiles are in flight, and frames are written to the
encoder as soon as all their tiles are back. Protocol: docs/PROTOCOL.md section 4.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import os
import queue
import secrets
import shutil
import socket
import statistics
import tempfile
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
from common.imageinfo import MAX_IMAGE_PIXELS
from common.jobproto import Handshake, JobProtocolError
from common.masterclient import MasterClient
from common.pipeline import STAGES, StageSpec, needs_previous, pipeline_halo
from common.results import Result, ResultStatus
from common.runtime import Component, Loop
from common.tasks import TaskKind, TaskSpec
from common.tiling import Tile, assemble, cut, decode_tile, encode_tile, plan_tiles
from receiver.video import H264Writer, add_audio, iter_frames, probe, thumbnail_jpeg, write_gif

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0  # an upload that sends nothing for this long is abandoned
UPLOAD_STALL_S = 60.0  # an upload whose byte count does not grow for this long is refused ("idle"), however
#                        many empty messages keep its connection busy
SPOOL_FREE_RESERVE_BYTES = 256 * 1024**2  # an upload is refused ("busy") unless this much disk stays free
OUT_CHUNK_BYTES = 1024 * 1024
MAX_THUMBNAILS = 60  # per job, for the preview page and GIF
THUMBNAIL_EVERY = 5  # frames between thumbnails
RECENT_JOBS = 16  # finished jobs kept for the preview page
MAX_LATENCY_SAMPLES = 10_000  # tile latencies kept for p50/p95 (the most recent)
MAX_RAW_TILE_BYTES = 12 * 1024**2  # a bigger tile (4K whole frames, stacked) travels as PNG: the master's
SUBMIT_BYTES = 16 * 1024**2  # request limit is 32 MB; one add_tasks request carries at most this much
TAKE_LINGER_S = 0.01  # pause after a take that brought tiles: ~1 take per frame instead of ~3.4


@dataclass(frozen=True)
class JobConfig:
    """Limits and places of the job server."""

    master_url: str = "http://127.0.0.1:8000"
    root: Path | None = None  # `file` protocol: paths must lie under this folder (None: refused)
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    max_upload_bytes: int = 4 * 1024**3  # one job's upload
    max_spool_bytes: int = 8 * 1024**3  # all running uploads together (what their handshakes announced)
    max_jobs: int = 8  # jobs at once; a further handshake is answered "busy"
    window_tiles: int = 64  # tiles of frames decoded and not yet written, per job: backpressure on decoding
    window_frames: int = 16  # and at most this many such frames (whole-frame jobs hold big frames)
    tile_timeout_s: float = 60.0  # a tile not back by then is replaced by the original
    progress_every_s: float = 0.5
    token: str | None = None  # with a token, a handshake must carry it ("token"), as must preview requests


def job_grid(stages: tuple[StageSpec, ...], requested: tuple[int, int]) -> tuple[tuple[int, int], str]:
    """The grid a job really uses and why it differs from the requested one ("" if it does not).

    A detector looks at the whole picture: on a 3x3 tile it runs 9 times (SSDLite resizes every
    input to 300x300, so a tile costs as much as a frame) and misses whoever a seam cuts. Pipelines
    with a detector stage therefore travel as whole frames, spread over the workers frame by frame.
    """
    detectors = [s.name for s in stages if STAGES[s.name].kind != "filter"]
    if not detectors or requested == (1, 1):
        return requested, ""
    return (1, 1), f"whole frames: the pipeline has a detector ({', '.join(detectors)}), which tiles would cut"


def grid_fields(hs: Handshake) -> dict[str, str]:
    """The grid used, the one asked for and why they differ, for metrics, progress and the preview."""
    (cols, rows), note = job_grid(hs.stages, hs.tiles)
    return {"grid": f"{cols}x{rows}", "grid_requested": f"{hs.tiles[0]}x{hs.tiles[1]}", "grid_note": note}


def encode_tile_bytes(pixels: np.ndarray, tile_format: str) -> bytes:
    """A tile's pixels for the wire: raw tile bytes when asked for and small enough, else PNG
    (docs/PROTOCOL.md section 5)."""
    return encode_tile(pixels, raw=tile_format == "raw" and pixels.nbytes <= MAX_RAW_TILE_BYTES)


def decode_tile_bytes(data: bytes) -> np.ndarray | None:
    """A processed tile from a worker (raw tile bytes or PNG); None if the bytes are not a tile."""
    if not data:
        return None
    try:
        return decode_tile(data, MAX_IMAGE_PIXELS)
    except DecodeError as e:
        log.info("a worker sent back a tile that is not a tile: %s", e)
        return None


_NOTHING: list = []  # the submitter's "nothing carried over" (never queued)


class Cancelled(FramehiveError):
    """The job was cancelled (its client went away or the upload was refused)."""


class Spool(io.RawIOBase):
    """A file being uploaded, readable while it grows: reads wait for bytes not yet received."""

    def __init__(self, path: Path, total: int, cancelled: threading.Event) -> None:
        super().__init__()
        self.path, self.total, self._cancelled = path, total, cancelled
        self._received = 0
        self._cond = threading.Condition()
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._pos = 0

    def grew(self, received: int) -> None:
        """The writer side reports how many bytes are on disk."""
        with self._cond:
            self._received = received
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.total}[whence]
        self._pos = max(0, min(self.total, base + offset))
        return self._pos

    def readinto(self, buf: Any) -> int:
        want = min(len(buf), self.total - self._pos)
        if want <= 0:
            return 0
        with self._cond:
            while self._received <= self._pos:
                if self._cancelled.is_set():
                    raise Cancelled("job cancelled")
                self._cond.wait(0.5)
        self._f.seek(self._pos)
        n = self._f.readinto(memoryview(buf)[:min(want, self._received - self._pos)])
        self._pos += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


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


class JobServer:
    """The asyncio side: one dual-stack listening socket, one coroutine per client."""

    def __init__(self, host: str, port: int, config: JobConfig) -> None:
        self.host, self.port, self.config = host, port, config
        self.counters: Counter[str] = Counter()
        self.jobs: dict[str, Job] = {}
        self.runners: dict[str, TileRunner] = {}  # by job id, until the job's connection is finished
        self.recent: deque[Job] = deque(maxlen=RECENT_JOBS)  # finished jobs, for the preview page
        self.preview_address: tuple[str, int] | None = None  # set by the preview server that shows these jobs
        self._server: asyncio.base_events.Server | None = None
        self.spool = Path(config.spool_dir)  # made per port once listening (_clean_spool)

    def _clean_spool(self) -> None:
        """This server's spool folder (one per port) emptied of what a killed predecessor left."""
        self.spool = Path(self.config.spool_dir) / f"framehive-jobs-{self.port}"
        self.spool.mkdir(parents=True, exist_ok=True)
        left = [p for p in self.spool.glob("framehive-*") if p.is_file()]
        for p in left:
            p.unlink(missing_ok=True)
        if left:
            log.info("job server: removed %d spool file(s) left by a previous run in %s", len(left), self.spool)

    async def start(self) -> None:
        """Listen. "localhost" means 127.0.0.1 and ::1; "::" one dual-stack socket for every address."""
        try:
            await self._listen()
        finally:
            if self.port:
                self._clean_spool()

    async def _listen(self) -> None:
        if self.host == "localhost":
            self._server = await asyncio.start_server(self.handle, host=["127.0.0.1", "::1"], port=self.port,
                                                      reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]
            return
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 clients too
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self.handle, sock=sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for job in list(self.jobs.values()):
            job.cancelled.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        job: Job | None = None
        try:
            job = await self._accept(reader, writer)
            if job is not None:
                await self._run(job, reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as e:
            self.counters["disconnected"] += 1
            log.info("job client %s went away: %s", peer, type(e).__name__)
        finally:
            if job is not None:
                await self._finish(job)
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Job | None:
        try:
            msg = await asyncio.wait_for(jobproto.read_message(reader), HANDSHAKE_TIMEOUT_S)
            self._check_token(msg)
            hs = jobproto.parse_handshake(msg)
            source, total = self._source(hs)
        except JobProtocolError as e:
            self.counters[f"refused_{e.code}"] += 1
            await self._send(writer, jobproto.error_message(e.code, str(e)))
            return None
        job_id = f"job-{secrets.token_hex(4)}"
        out = self.spool / f"framehive-{job_id}-out.mp4"
        job = Job(job_id, hs, source, total, out)
        if hs.protocol == "stream":
            source.touch()
            job.spool = Spool(source, total, job.cancelled)
        self.jobs[job_id] = job
        self.counters["accepted"] += 1
        log.info("job %s accepted: %s, %d bytes, %dx%d tiles, %s", job_id, hs.name, total, *hs.tiles, hs.filters)
        await self._send(writer, {"type": "accepted", "job_id": job_id, **self._preview_where(job)})
        return job

    def _preview_where(self, job: Job) -> dict[str, Any]:
        """Where a job that asked for a preview can be watched (docs/PROTOCOL.md section 4): the preview
        server's host (empty when it listens on every address: the one the client used) and port, and
        the job's page and GIF on it. Nothing when no preview was asked for or none is served."""
        if not job.handshake.preview or self.preview_address is None:
            return {}
        host, port = self.preview_address
        return {"preview": {"host": "" if host in ("", "0.0.0.0", "::") else host, "port": port,
                            "page": f"/jobs/{job.id}", "gif": f"/jobs/{job.id}/gif"}}

    def _check_token(self, msg: dict) -> None:
        token = self.config.token
        if token is None:
            return
        given = msg.get("token") if isinstance(msg, dict) else None
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
            raise JobProtocolError("this job server wants the cluster's token in the handshake: set $FRAMEHIVE_TOKEN "
                                "or --token-file", "unauthorized")

    def _admit(self, hs: Handshake) -> None:
        """Refuse ("busy") a job beyond the concurrent-jobs cap, or an upload the spool cannot hold now."""
        running = [j for j in self.jobs.values() if not j.done.is_set()]
        if len(running) >= self.config.max_jobs:
            raise JobProtocolError(f"{len(running)} jobs are running (max {self.config.max_jobs}): try again later",
                                "busy")
        if hs.protocol != "stream":
            return
        if hs.size > self.config.max_upload_bytes:
            raise JobProtocolError(f"upload of {hs.size} bytes is over the limit of {self.config.max_upload_bytes}",
                                "too_large")
        spooled = sum(j.total for j in running if j.handshake.protocol == "stream")
        if spooled + hs.size > self.config.max_spool_bytes:
            raise JobProtocolError(f"running uploads hold {spooled} bytes; {hs.size} more would pass the spool's "
                                f"{self.config.max_spool_bytes}: try again later", "busy")
        free = shutil.disk_usage(self.spool).free
        if free - hs.size < SPOOL_FREE_RESERVE_BYTES:
            raise JobProtocolError(f"the server's spool disk has {free} bytes free, too few for {hs.size}: try again "
                                "later", "busy")

    def _source(self, hs: Handshake) -> tuple[Path, int]:
        self._admit(hs)
        if hs.protocol == "stream":
            return self.spool / f"framehive-{secrets.token_hex(6)}-in", hs.size
        root = self.config.root
        path = Path(hs.path).resolve()
        if root is None or not path.is_relative_to(Path(root).resolve()) or not path.is_file():
            raise JobProtocolError(f"path {hs.path!r} is not a readable file under the server's --jobs-root",
                                "path_refused")
        return path, path.stat().st_size

    async def _run(self, job: Job, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        runner = self.runners[job.id] = TileRunner(job, self.config)
        runner.start()
        if job.handshake.protocol == "stream":
            if not await self._upload(job, reader, writer):
                return
        while not job.done.is_set():
            await self._send(writer, self._progress(job))
            await asyncio.get_running_loop().run_in_executor(None, job.done.wait, self.config.progress_every_s)
        if job.error:
            code, message = job.error
            await self._send(writer, jobproto.error_message(code, message))
            return
        await self._deliver(job, writer)

    async def _upload(self, job: Job, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        digest, received, last = hashlib.sha256(), 0, 0.0
        grew_at = time.monotonic()
        with open(job.source, "r+b") as out:
            while True:
                msg = await asyncio.wait_for(jobproto.read_message(reader), IDLE_TIMEOUT_S)
                if msg["type"] == "eof":
                    break
                size = jobproto.data_size(msg)
                chunk = await asyncio.wait_for(jobproto.read_data(reader, size), IDLE_TIMEOUT_S)
                if received + len(chunk) > job.total:
                    return await self._refuse(job, writer, "too_large", "more bytes than the handshake announced")
                if chunk:
                    grew_at = time.monotonic()
                elif time.monotonic() - grew_at > UPLOAD_STALL_S:
                    return await self._refuse(job, writer, "idle", f"no upload bytes for {UPLOAD_STALL_S:.0f} s")
                try:
                    out.write(chunk)
                    out.flush()
                except OSError as e:  # ENOSPC and friends: this job fails, the server goes on
                    log.warning("job %s: cannot spool the upload: %s", job.id, e)
                    return await self._refuse(job, writer, "busy", f"the server cannot store the upload now ({e})")
                digest.update(chunk)
                received += len(chunk)
                job.spool.grew(received)
                if time.monotonic() - last > self.config.progress_every_s:
                    last = time.monotonic()
                    await self._send(writer, self._progress(job, received))
        if received != job.total or digest.hexdigest() != job.handshake.sha256:
            return await self._refuse(job, writer, "checksum",
                                      f"upload of {received} bytes does not match the announced size/SHA-256")
        return True

    async def _refuse(self, job: Job, writer: asyncio.StreamWriter, code: str, message: str) -> bool:
        job.error = (code, message)
        job.cancelled.set()
        self.counters[f"refused_{code}"] += 1
        await self._send(writer, jobproto.error_message(code, message))
        return False

    async def _deliver(self, job: Job, writer: asyncio.StreamWriter) -> None:
        size = job.out_path.stat().st_size
        digest = hashlib.sha256()
        with open(job.out_path, "rb") as f:
            for block in iter(lambda: f.read(OUT_CHUNK_BYTES), b""):
                digest.update(block)
        name = f"{Path(job.handshake.name).stem}-processed.mp4"
        result = {"type": "result", "ok": True, "job_id": job.id, "metrics": job.metrics,
                  "output": {"name": name, "size": size, "sha256": digest.hexdigest()}}
        if job.handshake.preview:
            result["preview"] = {"page": f"/jobs/{job.id}", "gif": f"/jobs/{job.id}/gif",
                                 "frames": f"/jobs/{job.id}/frame/<n>", "thumbnails": len(job.thumbnails)}
        await self._send(writer, result)
        with open(job.out_path, "rb") as f:
            for block in iter(lambda: f.read(OUT_CHUNK_BYTES), b""):
                writer.write(jobproto.data_header(len(block)))
                writer.write(block)
                await writer.drain()
        self.counters["delivered"] += 1
        log.info("job %s done: %s", job.id, job.metrics)

    def _progress(self, job: Job, received: int | None = None) -> dict[str, Any]:
        c = job.counters
        return {"type": "progress", "bytes_in": job.total if received is None else received, "bytes_total": job.total,
                "frames_in": c["frames_in"], "frames_out": c["frames_out"], "tiles_done": c["tiles_done"],
                **grid_fields(job.handshake)}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, msg: dict) -> None:
        writer.write(jobproto.encode(msg))
        await writer.drain()

    async def _finish(self, job: Job) -> None:
        """Cancel what is unfinished and free the job's files (called whatever happened)."""
        job.cancelled.set()
        if job.spool is not None:
            job.spool.wake()
        # the runner notices within a second; wait for it without blocking other clients
        runner = self.runners.pop(job.id, None)
        if runner is not None:
            runner.stop()
            await asyncio.get_running_loop().run_in_executor(None, runner.join, 30)
        if job.spool is not None:
            job.spool.close()
        for path in (job.out_path, job.source if job.handshake.protocol == "stream" else None):
            if path is not None:
                path.unlink(missing_ok=True)
        self.jobs.pop(job.id, None)
        job.spool = None
        self.recent.append(job)

    def snapshot(self) -> dict[str, Any]:
        """Counters and every active and recent job, for the preview pages and /progress.json."""
        def view(job: Job, state: str) -> dict[str, Any]:
            return {"job_id": job.id, "state": state, "name": job.handshake.name, "filters": job.handshake.filters,
                    "tiles": "x".join(map(str, job.handshake.tiles)), **grid_fields(job.handshake), "bytes": job.total,
                    "started_at": job.started_at, **dict(job.counters),
                    "error": job.error[1] if job.error else "", "metrics": job.metrics,
                    "thumbnails": [i for i, _ in job.thumbnails], "gif": bool(job.gif)}
        jobs = [view(j, "running") for j in list(self.jobs.values())]
        jobs += [view(j, "failed" if j.error else "done") for j in list(self.recent)]
        return {"counters": dict(self.counters), "jobs": jobs}

    def report(self, recent: int = 5) -> dict[str, Any]:
        """What the master shows of this job server (stats, dashboard, /metrics): its counters and the
        progress of running and recent jobs, numbers only (no paths, no thumbnails)."""
        def view(job: Job, state: str) -> dict[str, Any]:
            c = job.counters
            return {"job_id": job.id, "state": state, "name": job.handshake.name[:64], "filters": job.handshake.filters,
                    **grid_fields(job.handshake), "started_at": round(job.started_at, 3),
                    **{k: int(c.get(k, 0)) for k in ("frames_total", "frames_in", "frames_out", "tiles_done",
                                                      "fallback_tiles", "retries")},
                    "fps_out": job.metrics.get("fps_out"), "error": job.error[0] if job.error else ""}
        jobs = [view(j, "running") for j in list(self.jobs.values())]
        jobs += [view(j, "failed" if j.error else "done") for j in list(self.recent)[-recent:]]
        return {"counters": {k: int(v) for k, v in self.counters.items()}, "jobs": jobs}

    def find(self, job_id: str) -> Job | None:
        """An active or recent job."""
        return self.jobs.get(job_id) or next((j for j in list(self.recent) if j.id == job_id), None)


class JobServerThread(Component):
    """Runs a JobServer's event loop in its own thread, for the thread-based receiver process."""

    thread_name = "jobs"

    def __init__(self, host: str, port: int, config: JobConfig) -> None:
        super().__init__()
        self.server = JobServer(host, port, config)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start serving; raises OSError (e.g. the port is taken) when the server cannot listen."""
        super().start()
        self.ready.wait(10)
        if self.error is not None:
            raise OSError(f"cannot serve file jobs: {self.error}") from self.error

    def run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # reported to whoever waits on `ready`
            self.error = e
            self.ready.set()
        finally:
            self._loop.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the server thread, then for the runners of jobs it was serving (cancelled by stop)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ended = super().join(timeout)
        for runner in list(self.server.runners.values()):
            runner.stop()
            ended = runner.join(None if deadline is None else max(0.0, deadline - time.monotonic())) and ended
        return ended

    async def _serve(self) -> None:
        await self.server.start()
        self.ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.2)
        await self.server.stop()
