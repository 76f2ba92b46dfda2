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

const cards = new Map(); // port -> {node, img, seq}

function cameraCard(port, name) {
  const title = name ? `${name} (${port})` : `camera ${port}`;
  const img = el("img", { alt: `latest frame of ${title}` });
  const frame = el("div", { class: "frame" }, "waiting for a frame…");
  const node = el("article", { class: "camera", "data-port": port }, frame,
    el("div", { class: "body" }, el("h3", {}, title, el("span", { class: "age" })),
      el("dl", { class: "stats" }), el("div", { class: "stages", title: "median time per stage, last 10 frames" }),
      el("div", { class: "chips" })));
  return { node, img, frame, seq: null };
}

function renderCameras(cameras) {
  const box = $("cameras");
  if (!cameras.length) return;
  box.querySelector(".empty")?.remove();
  for (const c of cameras) {
    let card = cards.get(c.port);
    if (!card) {
      card = cameraCard(c.port, c.name);
      cards.set(c.port, card);
      box.append(card.node);
    }
    if (c.has_frame && c.last_seq !== card.seq) {
      card.seq = c.last_seq;
      card.img.src = `/ports/${c.port}/latest.jpg?seq=${c.last_seq}`;
      if (!card.img.parentNode) card.frame.replaceChildren(card.img);
    }
    card.node.querySelector(".age").textContent = fmt.age(c.last_age_s);
    const stats = [["fps", fmt.fixed(c.fps)], ["latency", fmt.ms(c.latency_ms)], ["queued", c.pending],
      ["in", fmt.num(c.frames_in)], ["out", fmt.num(c.frames_out)], ["dropped", fmt.num(c.dropped)]];
    card.node.querySelector(".stats").replaceChildren(
      ...stats.flatMap(([k, v]) => [el("div", {}, el("dt", {}, k), el("dd", { "data-stat": k }, v))]));
    const chips = c.detections.length
      ? c.detections.map((x) => el("span", { class: "chip" }, `${x.label} ${Math.round(x.score * 100)}%`))
      : [el("span", { class: "empty" }, "no detections lately")];
    card.node.querySelector(".chips").replaceChildren(...chips);
    renderStages(card.node.querySelector(".stages"), c.stages_ms || []);
  }
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

let shownEvents = "";

function renderEvents(events) {
  $("events-total").textContent = `${fmt.num(events.total)} in the log`;
  const key = events.recent.map((e) => e.id).join(",");
  if (key === shownEvents) return;
  shownEvents = key;
  if (!events.recent.length) return;
  $("events").replaceChildren(...events.recent.map((e) => {
    const pic = e.snapshot
      ? el("img", { src: `/events/${encodeURIComponent(e.id)}/snapshot.jpg`, alt: `snapshot of ${e.id}` })
      : el("div", { class: "frame" });
    const d = e.detection;
    return el("li", { class: "event", "data-event": e.id }, pic,
      el("div", {}, el("div", { class: "what" }, e.rule),
        el("div", {}, `camera ${e.port}: ${d.label} ${Math.round(d.score * 100)}%`),
        el("div", { class: "when" }, `${fmt.clock(e.fired_at)} · frames ${e.first_seq}–${e.last_seq}`)));
  }));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
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

async function poll() {
  try {
    const r = await fetch("/api/v1/dashboard", { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const d = await r.json();
    renderTotals(d);
    renderCameras(d.cameras);
    renderWorkers(d.workers);
    renderEvents(d.events);
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

poll();
