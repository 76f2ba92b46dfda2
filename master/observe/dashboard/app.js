// framehive dashboard: polls /api/v1/dashboard once a second and redraws. No dependencies.
"use strict";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const fmt = {
  num: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en")),
  fixed: (n, d = 1) => (n === null || n === undefined ? "–" : Number(n).toFixed(d)),
  ms: (n) => (n === null || n === undefined ? "–" : `${Math.round(n)} ms`),
  mb: (n) => (n === null || n === undefined ? "–" : `${Math.round(n)} MB`),
  pct: (n) => (n === null || n === undefined ? "–" : `${Math.round(n)} %`),
  age: (s) => (s === null || s === undefined ? "" : s < 1 ? "now" : `${Math.round(s)} s ago`),
  duration(s) {
    s = Math.floor(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
  },
  clock: (t) => new Date(t * 1000).toLocaleTimeString("en-GB"),
};

function renderTotals(d) {
  const q = d.queue;
  const items = [
    ["up", fmt.duration(d.uptime_s)], ["cameras", d.cameras.length],
    ["workers", d.workers.filter((w) => w.state !== "dead").length],
    ["queued", fmt.num(q.pending)], ["in progress", fmt.num(q.in_progress)],
    ["done", fmt.num(q.completed)], ["failed", fmt.num(q.failed)], ["events", fmt.num(d.events.total)],
  ];
  $("totals").replaceChildren(...items.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const cards = new Map(); // port -> {node, img, frame, overlay, seq}

function cardTitle(port, name) {
  return name ? `${name} (${port})` : `camera ${port}`;
}

function cameraCard(port, name) {
  const title = cardTitle(port, name);
  const img = el("img", { alt: `latest frame of ${title}` });
  const frame = el("div", { class: "frame" }, "waiting for a frame…");
  const overlay = svg("svg", { class: "overlay", preserveAspectRatio: "xMidYMid meet", role: "img",
    "aria-label": `zones, lines and tracks of ${title}` });
  const node = el("article", { class: "camera", "data-port": port }, frame,
    el("div", { class: "body" }, el("h3", {}, el("span", { class: "title" }, title), el("span", { class: "age" })),
      el("div", { class: "scene", hidden: "" }),
      el("dl", { class: "stats" }), el("div", { class: "stages", title: "median time per stage, last 10 frames" }),
      el("div", { class: "chips" })));
  return { node, img, frame, overlay, seq: null, name };
}

function renderCameras(cameras) {
  const box = $("cameras");
  if (!cameras.length) return;
  box.querySelector(".empty")?.remove();
  for (const c of cameras) {
    const key = c.key || c.port; // a federation of masters keys cameras by master/port
    let card = cards.get(key);
    if (!card) {
      card = cameraCard(c.port, c.name);
      if (c.master) card.node.dataset.master = c.master;
      cards.set(key, card);
      box.append(card.node);
    }
    card.node.classList.toggle("unreachable", Boolean(c.unreachable));
    if ((c.name || "") !== (card.name || "")) { // named (or renamed) by a config reload
      card.name = c.name;
      const title = cardTitle(c.port, c.name);
      card.node.querySelector("h3 .title").textContent = title;
      card.img.alt = `latest frame of ${title}`;
      card.overlay.setAttribute("aria-label", `zones, lines and tracks of ${title}`);
    }
    if (c.unreachable && !card.img.parentNode) {
      card.frame.textContent = `master ${c.master} does not answer: no picture`;
    } else if (c.has_frame && !c.unreachable && c.last_seq !== card.seq) { // the last picture stays while it is lost
      card.seq = c.last_seq;
      card.img.src = `${c.frame_url || `/ports/${c.port}/latest.jpg`}?seq=${c.last_seq}`;
      if (!card.img.parentNode) card.frame.replaceChildren(card.img);
    }
    card.node.querySelector(".age").textContent = c.unreachable
      ? `master ${c.master} unreachable` : fmt.age(c.last_age_s);
    const stats = [["fps", fmt.fixed(c.fps)], ["latency", fmt.ms(c.latency_ms)], ["queued", c.pending],
      ["in", fmt.num(c.frames_in)], ["out", fmt.num(c.frames_out)], ["dropped", fmt.num(c.dropped)]];
    card.node.querySelector(".stats").replaceChildren(
      ...stats.flatMap(([k, v]) => [el("div", {}, el("dt", {}, k), el("dd", { "data-stat": k }, v))]));
    const chips = c.detections.length
      ? c.detections.map((x) => el("span", { class: "chip" }, `${x.label} ${Math.round(x.score * 100)}%`))
      : [el("span", { class: "empty" }, "no detections lately")];
    card.node.querySelector(".chips").replaceChildren(...chips);
    renderStages(card.node.querySelector(".stages"), c.stages_ms || []);
    renderScene(card, c.scene);
  }
}

// ----- a camera's scene: zones, lines and live tracks drawn over its frame, counts below it -----

const ZONE_COLOURS = ["#4aa3ff", "#3fcf8e", "#c78bff", "#ff8fa3", "#5fd4e0"];

function renderScene(card, scene) {
  const counts = card.node.querySelector(".scene");
  const size = scene && scene.size;
  if (!size) {
    card.overlay.remove();
    card.frame.style.aspectRatio = "";
  } else {
    card.frame.style.aspectRatio = `${size[0]} / ${size[1]}`; // the frame box fits the picture exactly
    if (card.img.parentNode && !card.overlay.parentNode) card.frame.append(card.overlay);
    if (card.overlay.parentNode) drawScene(card.overlay, scene);
  }
  counts.hidden = !scene;
  counts.replaceChildren(...(scene ? sceneCounts(scene) : []));
}

function drawScene(overlay, scene) {
  const [W, H] = scene.size;
  overlay.setAttribute("viewBox", `0 0 ${W} ${H}`);
  // user units per screen pixel, so that text and marks keep one size however big the card is
  const r = overlay.getBoundingClientRect();
  const u = 1 / (Math.min(r.width / W, r.height / H) || 400 / W);
  overlay.replaceChildren(
    ...scene.zones.map((z, i) => drawZone(z, ZONE_COLOURS[i % ZONE_COLOURS.length], W, H, u)),
    ...scene.lines.map((ln) => drawLine(ln, W, H, u)),
    ...scene.tracks.map((t) => drawTrack(t, W, H, u)));
}

const CHAR_PX = 7; // about the width of a character of the overlay's 12 px bold text

function label(x, y, text, u, [W, H], attrs = {}) {
  // kept inside the frame: a label cut by its edge says nothing
  const w = String(text).length * CHAR_PX * u, anchor = attrs["text-anchor"] || "start";
  const shift = anchor === "middle" ? w / 2 : anchor === "end" ? w : 0;
  x = Math.min(Math.max(x - shift, 2 * u), W - w - 2 * u) + shift;
  y = Math.min(Math.max(y, 12 * u), H - 3 * u);
  return svg("text", { x: x.toFixed(1), y: y.toFixed(1), "font-size": (12 * u).toFixed(2),
    "stroke-width": (3 * u).toFixed(2), ...attrs }, text);
}

function drawZone(z, colour, W, H, u) {
  const pts = z.points.map(([x, y]) => [x * W, y * H]);
  // named at its bottom-left corner: tags sit above boxes, so the top of a zone people stand in is crowded
  const low = pts.reduce((a, p) => (p[1] > a[1] || (p[1] === a[1] && p[0] < a[0]) ? p : a));
  const here = total(z.now);
  return svg("g", { class: "zone", "data-zone": z.name, style: `--zone: ${colour}` },
    svg("polygon", { points: pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(" "),
      class: here ? "occupied" : "" }),
    label(low[0] + 4 * u, low[1] - 5 * u, here ? `${z.name} · ${here}` : z.name, u, [W, H]));
}

function drawLine(ln, W, H, u) {
  const [ax, ay, bx, by] = [ln.a[0] * W, ln.a[1] * H, ln.b[0] * W, ln.b[1] * H].map((v) => Number(v.toFixed(1)));
  const len = Math.hypot(bx - ax, by - ay) || 1;
  // the first direction is a crossing to the right of a->b on screen: the side the normal (-dy, dx) points to
  const nx = -(by - ay) / len, ny = (bx - ax) / len;
  const mx = (ax + bx) / 2, my = (ay + by) / 2;
  const g = svg("g", { class: "line", "data-line": ln.name },
    svg("line", { x1: ax, y1: ay, x2: bx, y2: by, class: "under" }),
    svg("line", { x1: ax, y1: ay, x2: bx, y2: by }),
    svg("circle", { cx: ax, cy: ay, r: 3 * u }), svg("circle", { cx: bx, cy: by, r: 3 * u }),
    label(ax + 6 * u, ay + (ay < H / 2 ? 16 : -8) * u, ln.name, u, [W, H], { class: "name" }));
  ln.directions.forEach((d, i) => {
    const s = i === 0 ? 1 : -1, dx = s * nx, dy = s * ny;
    const x0 = mx + dx * 6 * u, y0 = my + dy * 6 * u, x1 = mx + dx * 24 * u, y1 = my + dy * 24 * u;
    const head = [[x1 + dx * 8 * u, y1 + dy * 8 * u], [x1 - dy * 5 * u, y1 + dx * 5 * u],
      [x1 + dy * 5 * u, y1 - dx * 5 * u]].map((p) => p.map((v) => v.toFixed(1)).join(",")).join(" ");
    const anchor = dx > 0.3 ? "start" : dx < -0.3 ? "end" : "middle";
    const tx = x1 + dx * 12 * u, ty = y1 + dy * 12 * u + (dy > 0.3 ? 10 : dy < -0.3 ? 0 : 4) * u;
    g.append(svg("g", { class: "direction", "data-dir": d },
      svg("line", { x1: x0, y1: y0, x2: x1, y2: y1 }), svg("polygon", { points: head }),
      label(tx, ty, `${d} ${fmt.num(ln.counts[d] ?? 0)}`, u, [W, H], { "text-anchor": anchor })));
  });
  return g;
}

function drawTrack(t, W, H, u) {
  const [x, y, w, h] = t.box;
  const tag = `#${t.id} ${t.label}`;
  const above = y > 18 * u;
  const tw = (tag.length * CHAR_PX + 8) * u, th = 16 * u;
  const tx = Math.min(Math.max(x, 0), W - tw), ty = above ? y - th : Math.max(y, 0);
  return svg("g", { class: `track ${t.state}`, "data-track": t.id, "data-state": t.state },
    svg("rect", { x, y, width: w, height: h, class: "box" }),
    svg("rect", { x: tx, y: ty, width: tw, height: th, class: "tag" }),
    svg("text", { x: tx + 4 * u, y: ty + 12 * u, "font-size": (12 * u).toFixed(2) }, tag));
}

function total(byLabel) {
  return Object.values(byLabel || {}).reduce((a, n) => a + n, 0);
}

function perLabel(byLabel) {
  const parts = Object.entries(byLabel || {}).sort().map(([k, n]) => `${fmt.num(n)} ${k}`);
  return parts.length ? parts.join(", ") : "0";
}

function sceneCounts(scene) {
  const row = (attrs, name, ...values) => el("div", { class: "count", ...attrs },
    el("span", { class: "name" }, name), el("span", { class: "values" }, ...values));
  const lines = scene.lines.map((ln) => row({ "data-line": ln.name }, ln.name,
    ...ln.directions.map((d) => el("span", { "data-dir": d }, `${d} ${fmt.num(ln.counts[d] ?? 0)}`))));
  const zones = scene.zones.map((z) => row({ "data-zone": z.name }, z.name,
    el("span", { "data-count": "now" }, `now ${perLabel(z.now)}`),
    el("span", { "data-count": "peak" }, `peak ${perLabel(z.peak)}`),
    el("span", { "data-count": "entered" }, `entered ${perLabel(z.entered)}`)));
  const n = scene.tracks.filter((t) => t.state === "confirmed").length;
  return [...lines, ...zones, el("div", { class: "tracks" }, `${n} tracked now`)];
}

function renderStages(box, stages) {
  const total = stages.reduce((a, s) => a + s.ms, 0);
  if (!total) { box.replaceChildren(); return; }
  const bar = el("div", { class: "bar" }, ...stages.map((s) => el("span", {
    class: `seg seg-${s.stage}`, style: `flex-grow: ${Math.max(s.ms, total / 100)}`,
    title: `${s.stage}: ${fmt.ms(s.ms)}` })));
  const legend = el("div", { class: "slegend" }, ...stages.map((s) =>
    el("span", { class: "skey" }, el("i", { class: `seg-${s.stage}` }), `${s.stage.replace("_", " ")} ${fmt.ms(s.ms)}`)));
  box.replaceChildren(bar, legend);
}

function renderWorkers(workers) {
  const rows = workers.map((w) => el("tr", { "data-worker": w.id },
    el("td", { title: w.id }, w.name || w.id), el("td", { class: `state-${w.state}` }, w.state),
    el("td", {}, fmt.pct(w.cpu_percent)), el("td", {}, fmt.pct(w.host_cpu_percent)), el("td", {}, fmt.mb(w.rss_mb)),
    el("td", {}, fmt.num(w.tasks_done)), el("td", {}, fmt.num(w.tasks_failed)),
    el("td", { class: "device" }, w.device || "–"),
    el("td", { class: "stage-ms", title: w.stages.length ? `can run: ${w.stages.join(", ")}` : "" },
      ...(Object.entries(w.stage_ms).map(([k, v]) => el("span", {}, `${k} ${fmt.ms(v)}`))),
      Object.keys(w.stage_ms).length ? "" : "–")));
  $("workers").tBodies[0].replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No workers yet."))]));
}

function renderJobs(jobs, tiles) {
  $("jobs-panel").hidden = !jobs.length;
  $("tiles-total").textContent = tiles
    ? `tiles on the master: ${fmt.num(tiles.completed)} done of ${fmt.num(tiles.added)}` +
      (tiles.failed ? `, ${fmt.num(tiles.failed)} failed` : "")
    : "";
  $("jobs").tBodies[0].replaceChildren(...jobs.map((j) => {
    const pct = j.frames_total ? Math.min(100, Math.round((100 * j.frames_out) / j.frames_total)) : null;
    const bar = el("div", { class: "progress", title: `${j.frames_out} of ${j.frames_total || "?"} frames written` },
      el("span", { style: `width: ${pct === null ? 0 : pct}%` }));
    return el("tr", { "data-job": j.job_id },
      el("td", { title: j.job_id }, j.name), el("td", {}, j.source), el("td", {}, j.filters),
      el("td", { title: j.grid_note || "" }, j.grid), el("td", { class: `job-${j.state}` }, j.error || j.state),
      el("td", {}, bar, el("small", {}, pct === null ? `${fmt.num(j.frames_out)} frames` : `${pct} %`)),
      el("td", {}, j.fps_out === null || j.fps_out === undefined ? "–" : fmt.fixed(j.fps_out)),
      el("td", {}, fmt.num(j.fallback_tiles)));
  }));
}

// ----- events: one row per event (the master collapses its start, update and end entries) -----

let shownEvents = "";
const eventsById = new Map(); // id -> its row, for the dialog
const portNames = new Map(); // port -> camera name, for events of rules that do not name their camera

const PLACE_ARROW = "→";

function eventCamera(e) {
  return e.camera || portNames.get(e.port) || `camera ${e.port}`;
}

function eventWhere(e) {
  const parts = [eventCamera(e)];
  if (e.place) parts.push(e.direction ? `${e.place} ${PLACE_ARROW} ${e.direction}` : e.place);
  return parts.join(" · ");
}

function eventWho(e) {
  const d = e.detection || {};
  const what = d.label ? `${d.label} ${Math.round((d.score || 0) * 100)}%` : "";
  return e.track_id ? `#${e.track_id} ${what}`.trim() : what;
}

function eventWhen(e, { short = false } = {}) {
  const start = e.first_at || e.fired_at;
  if (e.state !== "ended" || !e.ended_at) return fmt.clock(start);
  const lasted = fmt.duration(Math.max(0, e.ended_at - start));
  return short ? `${fmt.clock(start)} · ${lasted}` : `${fmt.clock(start)}–${fmt.clock(e.ended_at)} (${lasted})`;
}

const STATE_TEXT = { ongoing: "ongoing", ended: "ended", moment: "" };

function snapshotUrl(e) {
  // a later entry of an event may bring a better snapshot: its entry count makes a new URL
  return `${e.base || ""}/events/${encodeURIComponent(e.id)}/snapshot.jpg?v=${e.entries || 1}`;
}

function renderEvents(events) {
  $("events-total").textContent = `${fmt.num(events.total)} ${events.total === 1 ? "entry" : "entries"} in the log`;
  eventsById.clear();
  for (const e of events.recent) eventsById.set(e.id, e);
  const key = JSON.stringify(events.recent.map((e) => [e.id, e.phase, e.entries, e.state, e.clip, e.snapshot]));
  if (key === shownEvents) return;
  shownEvents = key;
  if (!events.recent.length) return;
  $("events").replaceChildren(...events.recent.map((e) => {
    const pic = e.snapshot ? el("img", { src: snapshotUrl(e), alt: `snapshot of ${e.id}` }) : el("span", { class: "frame" });
    const state = STATE_TEXT[e.state] ?? e.phase;
    const open = el("button", { type: "button", class: "open", "aria-haspopup": "dialog" }, pic,
      el("span", { class: "info" },
        el("span", { class: "what" }, e.rule, e.kind && e.kind !== "detect" ? el("span", { class: "kind" }, e.kind) : ""),
        el("span", { class: "where" }, eventWhere(e)),
        el("span", { class: "who" }, eventWho(e)),
        el("span", { class: "when" }, el("span", {}, eventWhen(e, { short: true })),
          state ? el("span", { class: `state state-${e.state}`, "data-state": e.state }, state) : "",
          e.clip === "ready" || e.clip === "recording" ? el("span", { class: "clip" }, `clip ${e.clip}`) : "")));
    open.addEventListener("click", () => openEvent(e.id));
    return el("li", { class: "event", "data-event": e.id, "data-state": e.state || "", "data-phase": e.phase || "" },
      open);
  }));
}

// ----- the event dialog: snapshot, clip (when ready; "recording" until then), facts -----

const shown = { id: null, clip: null, snapshot: null }; // what the open dialog shows

function openEvent(id) {
  const e = eventsById.get(id);
  if (!e) return;
  Object.assign(shown, { id, clip: null, snapshot: null });
  renderDialog(e);
  if (!$("event-dialog").open) $("event-dialog").showModal();
}

function renderDialog(e) {
  $("event-title").textContent = e.kind && e.kind !== "detect" ? `${e.rule} · ${e.kind}` : e.rule;
  const facts = [["camera", eventCamera(e)], ["place", e.place], ["direction", e.direction],
    ["object", eventWho(e)], ["state", STATE_TEXT[e.state] || e.phase], ["when", eventWhen(e)],
    ["frames", (e.kind || "detect") === "detect" ? `${e.first_seq}–${e.last_seq}` : ""], ["event", e.id]];
  $("event-facts").replaceChildren(...facts.filter(([, v]) => v).map(([k, v]) =>
    el("div", {}, el("dt", {}, k), el("dd", { "data-fact": k }, v))));
  const snap = e.snapshot ? snapshotUrl(e) : "";
  if (snap !== shown.snapshot) {
    shown.snapshot = snap;
    $("event-snapshot").replaceChildren(snap
      ? el("img", { class: "snapshot", src: snap, alt: `snapshot of ${e.id}` })
      : el("p", { class: "empty" }, "no snapshot kept for this event"));
  }
  if (e.clip !== shown.clip) { // only when it changes: a video playing is never reloaded
    shown.clip = e.clip;
    $("event-dialog").dataset.clip = e.clip || "";
    $("event-clip").textContent = CLIP_NOTES[e.clip] || "";
    $("event-video").replaceChildren(...(e.clip === "ready" ? [clipVideo(e)] : []));
  }
}

const CLIP_NOTES = {
  recording: "Recording the clip… it plays here when it is ready.",
  failed: "Recording the clip failed.",
  none: "No clip for this event (this master records none).",
};

function clipVideo(e) {
  const video = el("video", { controls: "", autoplay: "", muted: "", playsinline: "",
    src: `${e.base || ""}/events/${encodeURIComponent(e.id)}/clip.mp4` });
  video.muted = true; // the attribute alone does not mute a video made by script, and autoplay needs it muted
  video.addEventListener("error", () => {
    video.remove();
    $("event-clip").textContent = "The clip could not be loaded.";
  }, { once: true });
  return video;
}

function refreshDialog() {
  const dialog = $("event-dialog");
  if (!dialog.open || !shown.id) return;
  const e = eventsById.get(shown.id);
  if (e) renderDialog(e); // an event gone from the newest rows keeps what the dialog last showed
}

function setUpDialog() {
  const dialog = $("event-dialog");
  dialog.addEventListener("click", (ev) => { if (ev.target === dialog) dialog.close(); }); // the backdrop
  dialog.addEventListener("close", () => {
    shown.id = null;
    $("event-video").replaceChildren(); // stops a playing clip
  });
}

function renderChart(points) {
  const chart = $("chart");
  const W = 600, H = 160, pad = 4;
  const start = points.length ? points[0].t : 0, end = points.length ? points[points.length - 1].t : 0;
  const span = Math.min(300, Math.max(30, end - start)); // grows from 30 s to the 5 minutes kept
  const top = Math.max(1, ...points.flatMap((p) => [p.in, p.out, p.dropped]));
  const x = (t) => W - ((end - t) / span) * W;
  const y = (v) => H - pad - (v / top) * (H - 2 * pad);
  const children = [0.5, 1].map((f) => svg("line", { class: "grid", x1: 0, x2: W, y1: y(top * f), y2: y(top * f) }));
  for (const key of ["in", "dropped", "out"]) {
    const pts = points.map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
    children.push(svg("polyline", { points: pts, class: key, stroke: "currentColor", "data-series": key }));
  }
  chart.replaceChildren(...children);
  const last = points[points.length - 1];
  $("chart-scale").textContent = last
    ? `top line ${top.toFixed(1)} fps · now ${last.out.toFixed(1)} out of ${last.in.toFixed(1)} in · last ${Math.round(span)} s`
    : "collecting…";
}

function renderMasters(masters) {
  const box = $("masters");
  box.hidden = !masters;
  if (!masters) return;
  box.replaceChildren(...masters.map((m) => el("li", { class: `master ${m.state}`, "data-master": m.name },
    el("strong", {}, m.name), ` ${m.state}`,
    m.state === "up" ? ` · ${m.workers_alive} worker(s) · ${m.cameras.length} camera(s)`
      : ` for ${Math.round(m.down_for_s || 0)} s · its cameras (${m.cameras.join(", ") || "none known"}) ` +
        `are not being watched here · ${m.error}`)));
}

async function poll() {
  try {
    const r = await fetch("/api/v1/dashboard", { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const d = await r.json();
    renderTotals(d);
    renderMasters(d.masters);
    renderCameras(d.cameras);
    renderWorkers(d.workers);
    for (const c of d.cameras) if (c.name) portNames.set(c.port, c.name);
    renderEvents(d.events);
    refreshDialog();
    renderJobs(d.jobs || [], d.tiles);
    renderChart(d.throughput);
    $("status").dataset.state = d.durable === false ? "degraded" : "live";
    $("status").textContent = `live · ${fmt.clock(d.now)}` +
      (d.durable === false ? " · NOT DURABLE: the state dir cannot be written (disk full?)" : "");
  } catch (e) {
    $("status").dataset.state = "error";
    $("status").textContent = `master unreachable (${e.message}); retrying`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

setUpDialog();
poll();
