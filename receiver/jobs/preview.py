"""The job server's HTTP preview of file jobs: a page of all jobs, a page per job with its thumbnails
and preview GIF, the images themselves, and their progress as JSON (`/progress.json`)."""

from __future__ import annotations

import html
import io
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common import auth
from common.deadlineio import DeadlineReader
from receiver.jobs.runner import Job
from receiver.jobs.server import JobServer

log = logging.getLogger(__name__)

JOB_PAGE = re.compile(r"/jobs/([\w-]{1,64})/?")
FRAME = re.compile(r"/jobs/([\w-]{1,64})/frame/(\d{1,9})")
GIF = re.compile(r"/jobs/([\w-]{1,64})/gif")
LATEST_FRAME = re.compile(r"/frame/(\d{1,9})")
HEAD_TIMEOUT_S = 10.0  # a request's whole head (GET only: no body); a trickling client is cut then


def thumbnail_at(job: Job, n: int) -> bytes | None:
    """The thumbnail of frame `n`, or of the nearest frame before it that has one."""
    best = None
    for index, jpeg in list(job.thumbnails):
        if index <= n:
            best = jpeg
    return best


HEAD = ("<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        "<title>framehive jobs</title>")


def index_page(snap: dict[str, Any]) -> str:
    """Every running and recent job: a row each, linking to its own page and, once made, its GIF."""
    rows = []
    for j in snap["jobs"]:
        jid = html.escape(j["job_id"])
        thumbs = "".join(f'<img src="/jobs/{jid}/frame/{i}" width="160" alt="frame {i}">'
                         for i in j["thumbnails"][-6:])
        gif = f'<a href="/jobs/{jid}/gif">GIF</a>' if j["gif"] else "–"
        rows.append(f'<tr><td><a href="/jobs/{jid}">{jid}</a></td><td>{html.escape(j["name"])}</td>'
                    f"<td>{html.escape(j['state'])}</td><td>{j.get('frames_out', 0)} / {j.get('frames_in', 0)}</td>"
                    f"<td>{html.escape(j['filters'])} {html.escape(j['tiles'])}</td><td>{gif}</td>"
                    f"<td>{thumbs}</td></tr>")
    return (HEAD + "<meta http-equiv=refresh content=2><h1>framehive file jobs</h1>"
            "<table border=1 cellpadding=4><tr><th>job</th><th>file</th><th>state</th><th>frames out / in</th>"
            "<th>pipeline</th><th>preview</th><th>latest frames</th></tr>" + "".join(rows) + "</table>"
            '<p><a href="/progress.json">progress.json</a></p>')


def job_page(j: dict[str, Any]) -> str:
    """One job: its progress, its newest thumbnails and, when the job is done, its preview GIF (the
    page reloads itself until then)."""
    jid = html.escape(j["job_id"])
    running = j["state"] == "running"
    thumbs = "".join(f'<img src="/jobs/{jid}/frame/{i}" width="240" alt="frame {i}">' for i in j["thumbnails"][-12:])
    if j["gif"]:
        gif = f'<p><a href="/jobs/{jid}/gif"><img src="/jobs/{jid}/gif" alt="preview GIF of {jid}"></a></p>'
    else:
        gif = "<p>The preview GIF appears here when the job is done.</p>" if running else "<p>No GIF.</p>"
    error = f"<p>Error: {html.escape(j['error'])}</p>" if j.get("error") else ""
    return (HEAD + ("<meta http-equiv=refresh content=2>" if running else "")
            + f"<h1>{html.escape(j['name'])}</h1><p>job {jid}: {html.escape(j['state'])}, "
            f"{j.get('frames_out', 0)} of {j.get('frames_total') or '?'} frames written, "
            f"pipeline {html.escape(j['filters'])} on {html.escape(j['tiles'])} tiles</p>"
            + error + gif + f"<p>{thumbs}</p>" + '<p><a href="/">all jobs</a></p>')


class PreviewHandler(BaseHTTPRequestHandler):
    """GET only; everything it shows is read from the JobServer."""

    server: PreviewServer
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self._reader = DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + HEAD_TIMEOUT_S  # read at call time: tests shorten it
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        jobs = self.server.jobs
        token = jobs.config.token
        if token is not None and not auth.allowed(self.headers.get("Authorization"), token):
            jobs.counters["preview_unauthorized"] += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="framehive jobs", charset="UTF-8"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.path.split("?", 1)[0]
        latest = next(iter(reversed(jobs.recent)), None)
        if path == "/progress.json":
            self._send(200, "application/json", json.dumps(jobs.snapshot()).encode())
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", index_page(jobs.snapshot()).encode())
        elif m := JOB_PAGE.fullmatch(path):
            view = next((j for j in jobs.snapshot()["jobs"] if j["job_id"] == m[1]), None)
            if view is None:
                self._send(404, "text/plain", b"no such job (unknown, or finished too long ago)\n")
            else:
                self._send(200, "text/html; charset=utf-8", job_page(view).encode())
        elif m := FRAME.fullmatch(path):
            job = jobs.find(m[1])
            self._image(thumbnail_at(job, int(m[2])) if job else None, "image/jpeg")
        elif m := LATEST_FRAME.fullmatch(path):
            self._image(thumbnail_at(latest, int(m[1])) if latest else None, "image/jpeg")
        elif m := GIF.fullmatch(path):
            job = jobs.find(m[1])
            self._image(job.gif if job else None, "image/gif")
        elif path == "/gif":
            self._image(latest.gif if latest else None, "image/gif")
        else:
            self._send(404, "text/plain", b"no such page\n")

    def _image(self, data: bytes | None, ctype: str) -> None:
        if data:
            self._send(200, ctype, data)
        else:
            self._send(404, "text/plain", b"nothing to show (unknown job, no frame yet, or no preview asked for)\n")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class PreviewServer(ThreadingHTTPServer):
    """Serves the preview in a background thread: start(), stop(), join()."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], jobs: JobServer, *, max_connections: int = 32) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.jobs = jobs
        self.refused = 0
        self._slots = threading.BoundedSemaphore(max_connections)  # a page and its GIF: a few per viewer
        super().__init__(address, PreviewHandler)
        jobs.preview_address = self.server_address[:2]  # the job server tells clients where to look

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

