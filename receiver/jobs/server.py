"""The file-job server: a video is uploaded over TCP (IPv4 and IPv6 on one socket), runs as a job,
and an H.264 MP4 with JSON metrics goes back (docs/PROTOCOL.md section 4). The upload is spooled to
disk and decoded while it arrives."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import shutil
import socket
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from common import jobproto
from common.jobproto import Handshake, JobProtocolError
from common.runtime import Component
from receiver.jobs.config import JobConfig
from receiver.jobs.plan import grid_fields
from receiver.jobs.runner import Job, TileRunner
from receiver.jobs.spool import Spool

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0  # an upload that sends nothing for this long is abandoned
UPLOAD_STALL_S = 60.0  # an upload whose byte count does not grow for this long is refused ("idle"), however
#                        many empty messages keep its connection busy
SPOOL_FREE_RESERVE_BYTES = 256 * 1024**2  # an upload is refused ("busy") unless this much disk stays free
OUT_CHUNK_BYTES = 1024 * 1024
RECENT_JOBS = 16  # finished jobs kept for the preview page


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
