"""The dashboard in a terminal: `python -m master.cli.status --master http://127.0.0.1:8000 [--watch]`.

Reads the same `GET /api/v1/dashboard` document as the web page and draws it with rich: totals,
cameras, workers and the newest events. One shot by default; `--watch` redraws every second and,
while the master restarts, says it is waiting for it and retries with backoff.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from common import auth
from common.cli import DefaultsHelpFormatter
from common.errors import BadRequest, ConfigError, MasterUnavailable, Unauthorized
from common.masterclient import master_address
from common.runtime import stop_on_signals

STATE_STYLE = {"busy": "green", "idle": "dim", "dead": "red"}
RETRY_FIRST_S = 0.5  # --watch: first wait after the master stopped answering; doubles up to RETRY_MAX_S
RETRY_MAX_S = 10.0


def fetch(master: str, token: str | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """The dashboard document of a master. Raises MasterUnavailable when it cannot be reached (or
    answers 5xx: it may be starting), Unauthorized without the right token, BadRequest when what
    answers is not a framehive master."""
    url = master_address(master).base_url + "/api/v1/dashboard"
    request = urllib.request.Request(url, headers={"Authorization": auth.header(token)} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise Unauthorized(f"{url}: the master wants a token: set $FRAMEHIVE_TOKEN or --token-file") from e
        if e.code >= 500:
            raise MasterUnavailable(f"{url}: HTTP {e.code}") from e
        raise BadRequest(f"{url}: HTTP {e.code} (is this a framehive master?)") from e
    except ValueError as e:  # a reply that is not JSON
        raise BadRequest(f"{url}: the answer is not a dashboard document (is this a framehive master?)") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise MasterUnavailable(f"cannot reach the master at {master}: {reason}") from e


def _n(v: Any, fmt: str = "{:,}") -> str:
    return "–" if v is None else fmt.format(v)


def totals_table(d: Mapping[str, Any]) -> Table:
    q = d["queue"]
    t = Table(title="framehive", title_justify="left", show_edge=False, box=None, padding=(0, 2))
    cols = ["up s", "cameras", "workers", "queued", "in progress", "done", "failed", "retried", "events"]
    for c in cols:
        t.add_column(c, justify="right")
    alive = sum(w["state"] != "dead" for w in d["workers"])
    t.add_row(_n(round(d["uptime_s"])), str(len(d["cameras"])), str(alive), _n(q["pending"]),
              _n(q["in_progress"]), _n(q["completed"]), _n(q["failed"]), _n(q["retried"]), _n(d["events"]["total"]))
    return t


def cameras_table(cameras: Sequence[Mapping[str, Any]]) -> Table:
    t = Table(title="cameras", title_justify="left")
    for c, j in (("camera", "left"), ("port", "right"), ("fps", "right"), ("latency ms", "right"), ("in", "right"),
                 ("out", "right"), ("dropped", "right"), ("queued", "right"), ("last", "right"),
                 ("detections", "left")):
        t.add_column(c, justify=j)
    for c in cameras:
        dets = ", ".join(f"{x['label']} {x['score']:.2f}" for x in c["detections"][:3]) or "–"
        age = "–" if c["last_age_s"] is None else f"{c['last_age_s']:.0f} s ago"
        t.add_row(c.get("name") or "–", str(c["port"]), f"{c['fps']:.1f}", _n(c["latency_ms"], "{:.0f}"),
                  _n(c["frames_in"]), _n(c["frames_out"]), _n(c["dropped"]), _n(c["pending"]), age, dets)
    return t


def workers_table(workers: Sequence[Mapping[str, Any]]) -> Table:
    t = Table(title="workers", title_justify="left")
    for c, j in (("worker", "left"), ("state", "left"), ("cpu %", "right"), ("ram MB", "right"), ("done", "right"),
                 ("failed", "right"), ("seen", "right"), ("device", "left"), ("ms/frame", "left")):
        t.add_column(c, justify=j)
    for w in workers:
        ms = " ".join(f"{k} {v:.0f}" for k, v in (w.get("stage_ms") or {}).items())
        t.add_row(w["name"] or w["id"], Text(w["state"], style=STATE_STYLE.get(w["state"], "")),
                  _n(w["cpu_percent"], "{:.0f}"), _n(w["rss_mb"], "{:.0f}"), _n(w["tasks_done"]),
                  _n(w["tasks_failed"]), _n(w["last_seen_s"], "{:.1f} s"), w.get("device") or "-", ms or "-")
    return t


def counts_table(cameras: Sequence[Mapping[str, Any]]) -> Table | None:
    """Line crossings by direction and zone occupancy (now / peak) of the cameras that have them."""
    rows = []
    for c in cameras:
        scene = c.get("scene") or {}
        for ln in scene.get("lines", []):
            rows.append((c.get("name") or str(c["port"]), f"line {ln['name']}",
                         "  ".join(f"{d} {ln['counts'].get(d, 0):,}" for d in ln["directions"])))
        for z in scene.get("zones", []):
            labels = sorted(set(z.get("now", {})) | set(z.get("peak", {})))
            now, peak = z.get("now", {}), z.get("peak", {})
            text = "  ".join(f"{label} {now.get(label, 0)} now, peak {peak.get(label, 0)}" for label in labels)
            rows.append((c.get("name") or str(c["port"]), f"zone {z['name']}", text or "empty"))
    if not rows:
        return None
    t = Table(title="counts", title_justify="left")
    for c in ("camera", "where", "counts"):
        t.add_column(c)
    for row in rows:
        t.add_row(*row)
    return t


def events_table(events: Sequence[Mapping[str, Any]], limit: int = 5) -> Table:
    t = Table(title="events", title_justify="left")
    for c in ("fired", "rule", "camera", "what", "detection", "phase"):
        t.add_column(c)
    for e in events[:limit]:
        d = e["detection"]
        what = " ".join(x for x in (e.get("kind", "detect"), e.get("place", ""), e.get("direction", "")) if x)
        if e.get("track_id"):
            what += f" #{e['track_id']}"
        t.add_row(time.strftime("%H:%M:%S", time.localtime(e["fired_at"])), e["rule"],
                  e.get("camera") or str(e["port"]), what, f"{d['label']} {d['score']:.2f}", e.get("phase", "start"))
    return t


def masters_table(masters: Sequence[Mapping[str, Any]]) -> Table:
    """A federation's masters: up or down, since when, their cameras."""
    t = Table(title="masters", title_justify="left")
    for c in ("master", "state", "workers", "cameras", "note"):
        t.add_column(c)
    for m in masters:
        up = m["state"] == "up"
        note = "" if up else \
            f"down for {m.get('down_for_s') or 0:.0f} s: its cameras are not watched here; {m['error']}"
        t.add_row(m["name"], Text(m["state"], style="green" if up else "red"), str(m.get("workers_alive", 0)),
                  ", ".join(m.get("cameras", [])) or "-", note)
    return t


def render(d: Mapping[str, Any]) -> Group:
    """The whole status screen for one dashboard document (a master's, or a federation's)."""
    counts = counts_table(d["cameras"])
    masters = [masters_table(d["masters"])] if d.get("masters") else []
    return Group(totals_table(d), *masters, cameras_table(d["cameras"]), *([counts] if counts else []),
                 workers_table(d["workers"]), events_table(d["events"]["recent"]))


def watch(master: str, token: str | None, interval_s: float, console: Console, stop: threading.Event) -> int:
    """Redraw every `interval_s` until `stop`. While the master cannot be reached (restarting), say so
    on stderr and on screen, keep the last picture, and retry with backoff up to RETRY_MAX_S."""
    screen: Any = Text(f"connecting to {master} ...")
    delay = 0.0  # the current retry backoff; 0 while the master answers
    with Live(screen, console=console, auto_refresh=False) as live:
        while not stop.is_set():
            try:
                screen = render(fetch(master, token))
            except MasterUnavailable as e:
                delay = min(RETRY_MAX_S, delay * 2) if delay else RETRY_FIRST_S
                note = f"waiting for the master ({e}); retrying in {delay:.1f} s"
                print(f"master.cli.status: {note}", file=sys.stderr, flush=True)
                live.update(Group(Text(note, style="yellow"), screen), refresh=True)
                stop.wait(delay)
                continue
            if delay:
                print(f"master.cli.status: the master at {master} answers again", file=sys.stderr, flush=True)
                delay = 0.0
            live.update(screen, refresh=True)
            stop.wait(max(0.1, interval_s))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m master.cli.status", description=__doc__.splitlines()[0],
                                 formatter_class=DefaultsHelpFormatter)
    ap.add_argument("--master", default="http://127.0.0.1:8000", help="the master's URL")
    ap.add_argument("--watch", action="store_true",
                    help="redraw until Ctrl-C, waiting for the master (retrying with backoff) while it restarts")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between redraws with --watch")
    ap.add_argument("--token-file", default="", help="file holding the master's token (default: $FRAMEHIVE_TOKEN)")
    args = ap.parse_args(argv)
    try:
        master_address(args.master)
        token = auth.load_token(args.token_file or None)
    except (ValueError, ConfigError) as e:
        ap.error(str(e))
    console = Console()
    try:
        if args.watch:
            return watch(args.master, token, args.interval, console, stop_on_signals())
        console.print(render(fetch(args.master, token)))
        return 0
    except (MasterUnavailable, BadRequest) as e:
        print(f"master.cli.status: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
