// emp-redis hub dashboard. No framework, no CDN. Everything from the API is inserted as
// text (textContent), never as HTML. The operator token lives in sessionStorage only.
"use strict";

const TOKEN_KEY = "emp-operator-token";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let socket = null;
let refreshTimer = null;
let reconnectDelay = 500;

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell ?? "";
    tr.appendChild(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
}

function jobLink(id) {
  return el("a", id, { href: "/ui/jobs/" + encodeURIComponent(id), class: "job-link" });
}

function ms(a, b) {
  if (!a || !b) return "";
  const d = (Date.parse(b) - Date.parse(a)) / 1000;
  return d.toFixed(d < 10 ? 2 : 0) + " s";
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers = Object.assign({ Authorization: "Bearer " + token }, opts.headers);
  opts.cache = "no-store";  // live state: never answer from the browser cache
  const res = await fetch(path, opts);
  if (res.status === 401 || res.status === 403) {
    forget("the token was refused (" + res.status + ")");
    throw new Error("unauthorized");
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = body.error || {};
    throw new Error((err.field ? err.field + ": " : "") + (err.message || res.status));
  }
  return body;
}

function forget(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  if (socket) socket.close();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
}

// -- live feed --------------------------------------------------------------------------

function setConn(state) {
  const pill = $("conn-status");
  pill.dataset.state = state;
  pill.textContent = state;
}

function connect(onOpen, onEvent) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(proto + "//" + location.host + "/ws?token=" + encodeURIComponent(token));
  socket.onopen = () => { setConn("live"); reconnectDelay = 500; onOpen(socket); };
  socket.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (e) { console.error(e); } };
  socket.onclose = () => {
    setConn(token ? "reconnecting" : "offline");
    if (!token) return;
    setTimeout(() => connect(onOpen, onEvent), reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 10000);
  };
}

// -- dashboard page ---------------------------------------------------------------------

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 300);
}

async function refresh() {
  let data;
  try { data = await api("/dashboard/data"); } catch (e) { return; }
  const s = data.stats;
  $("stat-pending").textContent = s.jobs.pending;
  $("stat-active").textContent = s.jobs.active;
  $("stat-completed").textContent = s.throughput["5m"].completed;
  $("stat-failed").textContent = s.throughput["5m"].failed;
  $("stat-workers").textContent = s.workers.total + " (" + s.workers.busy + " busy)";
  $("stat-wait").textContent = fmtPct(s.wait_ms);
  $("stat-run").textContent = fmtPct(s.run_ms);
  fill("queue-table", Object.entries(s.pending.by_service).map(([svc, e]) => row([
    svc, e.total, e.by_priority.urgent, e.by_priority.high, e.by_priority.normal, e.by_priority.low,
  ])));
  fill("workers-table", data.workers.map(workerRow));
  fill("live-table", data.active.concat(data.pending).map((j) => {
    const tr = row([jobLink(j.id), j.service_type, j.customer_id, j.status, j.effective_priority,
      Math.round(j.progress) + "%", j.worker_id, waitingCell(j)]);
    tr.dataset.jobId = j.id;
    tr.className = "status-" + j.status;
    return tr;
  }));
  fill("fair-table", (data.fair_share || []).map((f) => row([f.pool, f.customer || "(none)",
    f.usage_gpu_seconds.toFixed(1), f.weight, (100 * f.share).toFixed(1) + "%",
    (100 * f.entitled).toFixed(1) + "%"])));
  fill("recent-table", data.recent.map((j) => {
    const tr = row([jobLink(j.id), j.service_type, j.customer_id, j.status,
      ms(j.claimed_at, j.finished_at), j.worker_id, j.finished_at]);
    tr.className = "status-" + j.status;
    return tr;
  }));
  fill("failed-table", data.failed.map((j) => {
    const btn = el("button", "retry", { type: "button", class: "retry-btn", "data-job-id": j.id });
    btn.addEventListener("click", () => act("/jobs/" + encodeURIComponent(j.id) + "/retry"));
    return row([jobLink(j.id), j.service_type, j.attempts, j.error, j.finished_at, btn]);
  }));
}

// The hub's explanation (hub/fleet.py why_waiting) in words; the reason code and the queue
// position stay at hand in the tooltip.
function waitingCell(j) {
  if (!j.waiting) return "";
  const span = el("span", j.waiting.message, { class: "why why-" + j.waiting.reason });
  span.title = j.waiting.reason + (j.queue_position === null || j.queue_position === undefined
    ? "" : "; position " + j.queue_position + " in the queue");
  return span;
}

// -- charts (the last hour, per minute: GET /dashboard/series, drawn by charts.js) -------

function fmtMs(v) {
  if (v === null || v === undefined) return "-";
  if (v < 1000) return Math.round(v) + " ms";
  if (v < 60000) return (v / 1000).toFixed(v < 10000 && v % 1000 ? 1 : 0) + " s";
  return (v / 60000).toFixed(v % 60000 ? 1 : 0) + " min";
}

const SEC = 1000, MIN = 60 * SEC;
const TIME_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, SEC, 2 * SEC, 5 * SEC, 10 * SEC, 15 * SEC,
  30 * SEC, MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, 60 * MIN];

const lastValue = (s) => { const v = s.values.filter((x) => x !== null).pop(); return v === undefined ? null : v; };

async function refreshCharts() {
  let doc;
  try { doc = await api("/dashboard/series"); } catch (e) { return; }
  const count = (v) => String(v);
  EmpCharts.draw($("chart-depth"), {
    t: doc.minutes, format: count, empty: "no queued jobs in the last hour",
    series: Object.entries(doc.depth).map(([name, values]) => ({ name, values })),
    summary: (s) => "now " + (lastValue(s) ?? "-"),
  });
  EmpCharts.draw($("chart-throughput"), {
    t: doc.minutes, format: count,
    series: ["submitted", "completed", "failed"].map((name) => ({ name, values: doc.throughput[name], cls: "c-" + name })),
    summary: (s) => s.values.reduce((a, b) => a + (b || 0), 0) + " in the hour",
  });
  EmpCharts.draw($("chart-wait"), {
    t: doc.minutes, format: fmtMs, steps: TIME_STEPS,
    series: ["p50", "p95"].map((name) => ({ name: "wait " + name, values: doc.wait_ms[name], cls: "c-" + name })),
    summary: (s) => "latest " + fmtMs(lastValue(s)),
  });
}

function fmtPct(p) {
  if (!p || p.p50 === null) return "-";
  return fmtMs(p.p50) + " / " + fmtMs(p.p99);
}

function workerRow(w) {
  const caps = w.capabilities || {};
  const gpus = ((caps.hardware || {}).gpus || []).map((g) => g.name + " " + g.memory_gb + " GB");
  const actions = el("span");
  for (const action of ["pause", "resume", "drain"]) {
    const b = el("button", action, { type: "button", class: "worker-" + action, "data-worker-id": w.id });
    b.addEventListener("click", () => act("/workers/" + encodeURIComponent(w.id) + "/" + action));
    actions.appendChild(b);
  }
  const tr = row([w.id, w.status, w.state, (caps.services || []).join(", "), gpus.join("; "),
    (w.warm_models || []).join(", "), w.current_jobs.join(", "), w.heartbeat_age_seconds === null ? "" : w.heartbeat_age_seconds.toFixed(1) + " s",
    w.counters.completed + " / " + w.counters.failed, actions]);
  tr.dataset.workerId = w.id;
  return tr;
}

async function act(path) {
  try { await api(path, { method: "POST" }); } catch (e) { alert(e.message); }
  scheduleRefresh();
}

function onDashboardMessage(msg) {
  if (msg.type !== "event") return;
  const ev = msg.event;
  if (ev.event === "progress") {
    const tr = document.querySelector('#live-table tr[data-job-id="' + CSS.escape(ev.job_id) + '"]');
    if (tr) { tr.children[5].textContent = Math.round(ev.data.progress || 0) + "%"; return; }
  }
  scheduleRefresh();
}

async function submitJob(e) {
  e.preventDefault();
  const out = $("submit-result");
  let body;
  try {
    body = {
      service_type: $("submit-service").value.trim(),
      priority: Number($("submit-priority").value),
      payload: JSON.parse($("submit-payload").value || "{}"),
      requirements: JSON.parse($("submit-requirements").value || "{}"),
    };
  } catch (err) { out.textContent = "invalid JSON: " + err.message; out.className = "error"; return; }
  const customer = $("submit-customer").value.trim();
  if (customer) body.customer_id = customer;
  try {
    const job = await api("/jobs", { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" } });
    out.className = "";
    out.replaceChildren(document.createTextNode("submitted "), jobLink(job.id));
    scheduleRefresh();
  } catch (err) { out.textContent = err.message; out.className = "error"; }
}

// -- job page ---------------------------------------------------------------------------

function renderJob(job) {
  $("job-status").textContent = job.status;
  $("job-status").className = "status-" + job.status;
  $("job-service").textContent = job.service_type;
  $("job-customer").textContent = job.customer_id || "";
  $("job-priority").textContent = job.priority + " (effective " + job.effective_priority + ")";
  $("job-preferred-models").textContent = (job.preferred_models || []).join(", ") || "none";
  $("job-worker").textContent = job.worker_id || "";
  $("job-attempts").textContent = job.attempts + " of " + (job.max_retries + 1);
  $("job-message").textContent = job.message || "";
  renderWaiting(job);
  $("job-error").textContent = job.error || "";
  $("job-times").textContent = [job.created_at, job.claimed_at, job.finished_at].map((t) => t || "-").join(" / ");
  setProgress(job.progress);
  $("job-payload").textContent = jsonText(job.payload);
  $("job-result").textContent = jsonText(job.result);
  renderImages(job.result);
  if (job.created_at) timeline.createdMs = Date.parse(job.created_at);
  renderTimeline();
}

const SHOWN_JSON = 100000;  // characters: a 10 MB payload must not freeze the page

// Inline images are shown above, so their base64 is only named in the JSON text.
const LONG_B64 = /^(data:[\w/+.-]+;base64,)?[A-Za-z0-9+/]+={0,2}$/;
const elide = (k, v) => typeof v === "string" && v.length > 512 && LONG_B64.test(v) ? "<base64, " + v.length + " characters>" : v;

function jsonText(value) {
  if (value === null || value === undefined) return "";
  const text = JSON.stringify(value, elide, 2);
  return text.length <= SHOWN_JSON ? text
    : text.slice(0, SHOWN_JSON) + "\n... (" + (text.length - SHOWN_JSON) + " more characters; GET /jobs/{id} has it all)";
}

// "Why is it waiting": the hub's sentence, then the figures it rests on.
function renderWaiting(job) {
  if (job.status === "pending" && job.waiting === undefined) return;  // a snapshot: keep it
  const box = $("job-waiting-box");
  const w = job.status === "pending" ? job.waiting : null;
  box.hidden = !w;
  $("job-waiting").textContent = w ? w.message : "";
  if (!w) return;
  box.dataset.reason = w.reason;
  const c = w.workers || {};
  const ahead = w.jobs_ahead === null || w.jobs_ahead === undefined ? "" : w.jobs_ahead + " job(s) ahead in the queue; ";
  const busy = c.capable ? ", " + (c.busy ?? 0) + " of those busy" : "";
  $("job-waiting-detail").textContent = ahead + "workers: " + (c.live ?? 0) + " live, " + (c.offering ?? 0) +
    " offering " + job.service_type + ", " + (c.capable ?? 0) + " able to run it" + busy;
}

function setProgress(p) {
  $("job-progress").value = p || 0;
  $("job-progress-text").textContent = Math.round(p || 0) + "%";
}

const IMG_URL = /^https?:\/\/\S+\.(png|jpe?g|gif|webp)(\?\S*)?$/i;
const B64 = /^[A-Za-z0-9+/]+={0,2}$/;

// Image URLs are shown inline only from the hub's own origin and the output store the
// operator configured (HUB_DASHBOARD_IMAGE_ORIGINS, rendered into data-image-origins): any
// other URL in a result would make this browser tell that server an operator is looking.
// The page's CSP img-src holds the same list, so this is the first of two locks.
function imageOriginAllowed(value) {
  let url;
  try { url = new URL(value); } catch (e) { return false; }
  const allowed = (document.body.dataset.imageOrigins || "").split(" ").filter(Boolean);
  return url.origin === location.origin || allowed.includes(url.origin);
}

// Image URLs from other origins are not loaded; their origins are listed (as text) so the
// operator knows what HUB_DASHBOARD_IMAGE_ORIGINS would have to allow.
function imageUrl(value, out, blocked) {
  if (imageOriginAllowed(value)) { out.push(value); return; }
  try { blocked.add(new URL(value).origin); } catch (e) { /* not a URL: nothing to name */ }
}

function findImages(value, key, out, blocked) {
  if (out.length >= 16 || value === null || value === undefined) return out;
  if (typeof value === "string") {
    if (value.startsWith("data:image/")) out.push(value);
    else if (IMG_URL.test(value)) imageUrl(value, out, blocked);
    else if (/image/i.test(key || "") && value.length > 64 && B64.test(value)) out.push("data:image/png;base64," + value);
  } else if (Array.isArray(value)) {
    for (const v of value) findImages(v, key, out, blocked);
  } else if (typeof value === "object") {
    // ComfyUI results: {filename, content_type: "image/png", base64: "..."}, or past the
    // worker's inline budget a reference to ComfyUI's /view: {content_type, url}.
    if (/^image\//.test(value.content_type || "")) {
      if (typeof value.base64 === "string") {
        out.push("data:" + value.content_type + ";base64," + value.base64);
        return out;
      }
      if (typeof value.url === "string" && /^https?:\/\//.test(value.url)) {
        imageUrl(value.url, out, blocked);
        return out;
      }
    }
    for (const [k, v] of Object.entries(value)) findImages(v, k, out, blocked);
  }
  return out;
}

function renderImages(result) {
  const blocked = new Set();
  const images = findImages(result, "", [], blocked);
  $("job-images").replaceChildren(...images.map((src) => el("img", null, { src, alt: "result image", class: "result-image" })));
  $("job-images-blocked").textContent = blocked.size
    ? "Images from " + [...blocked].join(", ") + " are not shown: not the hub and not in HUB_DASHBOARD_IMAGE_ORIGINS."
    : "";
}

// -- the job's timeline: its past events (GET /dashboard/jobs/{id}/timeline), then live ones

const timeline = { events: new Map(), missing: 0, createdMs: null };

function addEvents(events) {
  for (const ev of events) if (ev.seq) timeline.events.set(ev.seq, ev);
}

async function loadTimeline(jobId) {
  try {
    const doc = await api("/dashboard/jobs/" + encodeURIComponent(jobId) + "/timeline");
    addEvents(doc.events);
    timeline.missing = doc.missing;
  } catch (e) { return; }
  renderTimeline();
}

function clockTime(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// What one event says, in words: [what happened, by which worker, details].
function describe(ev, worker, claimedAt) {
  const d = ev.data || {};
  const ran = claimedAt === null ? "" : " after " + fmtMs(ev.ts - claimedAt);
  switch (ev.event) {
    case "accepted": return ["queued", "", "service " + (d.service_type ?? "?") + ", priority " + (d.priority ?? "?")];
    case "claimed": return ["claimed", ev.worker_id, "waited " + fmtMs(d.wait_ms)];
    case "retrying":
      if (d.operator) return ["sent back by an operator", "", "attempts reset"];
      return ["failed, will retry", worker, "attempt " + d.attempts + ran + ": " + d.error + "; next try in " + fmtMs(d.delay_ms)];
    case "released": return ["handed back", d.worker_id || worker, (d.reason || "") + ran + "; no attempt counted"];
    case "failed": return ["failed", worker, "attempt " + d.attempts + ran + ": " + d.error];
    case "completed": return ["completed", ev.worker_id || worker, "ran " + fmtMs(d.run_ms)];
    case "cancelled": return ["cancelled", d.worker_id || "", "was " + d.was + (d.reason ? ": " + d.reason : "")];
    default: return [ev.event, ev.worker_id || "", JSON.stringify(d)];
  }
}

function timelineRow(ev, what, who, detail) {
  const li = el("li", null, { class: "ev ev-" + ev.event, "data-seq": ev.seq });
  const since = timeline.createdMs === null ? "" : "+" + fmtMs(Math.max(0, ev.ts - timeline.createdMs));
  li.append(el("time", clockTime(ev.ts), { datetime: new Date(ev.ts).toISOString() }), el("span", since, { class: "offset" }),
    el("span", what, { class: "what" }), el("span", who || "", { class: "who" }), el("span", detail, { class: "detail" }));
  return li;
}

function renderTimeline() {
  const list = [...timeline.events.values()].sort((a, b) => a.seq - b.seq);
  const rows = [];
  if (timeline.missing > 0) {  // trimmed from the capped stream, or past the hub's read budget
    rows.push(el("li", timeline.missing + " of this job's events could not be read back from the hub's event stream " +
      "(it keeps the newest ~100,000 events of the fleet)", { class: "ev ev-gap" }));
  }
  let worker = "", claimedAt = null;
  for (let i = 0; i < list.length; i++) {
    const ev = list[i];
    if (ev.event === "progress") {  // a run of progress reports is one row
      let j = i;
      while (j + 1 < list.length && list[j + 1].event === "progress") j++;
      const first = list[i].data || {}, last = list[j].data || {};
      const span = j > i ? Math.round(first.progress || 0) + "% -> " : "";
      const count = j > i ? " (" + (j - i + 1) + " updates)" : "";
      rows.push(timelineRow(list[j], "progress", worker, span + Math.round(last.progress || 0) + "%" + (last.message ? " - " + last.message : "") + count));
      i = j;
      continue;
    }
    const [what, who, detail] = describe(ev, worker, claimedAt);
    rows.push(timelineRow(ev, what, who, detail));
    if (ev.event === "claimed") { worker = ev.worker_id || ""; claimedAt = ev.ts; }
    else if (ev.event !== "progress") claimedAt = null;
  }
  $("job-events").replaceChildren(...rows);
}

async function loadJob(jobId) {
  try { renderJob(await api("/jobs/" + encodeURIComponent(jobId))); } catch (e) { $("job-error").textContent = e.message; }
}

function onJobMessage(jobId, msg) {
  // The snapshot comes once the subscription is in place (and again after a gap): reading
  // the history then leaves no event between the two. GET /jobs/{id} adds "why waiting".
  if (msg.type === "snapshot") { renderJob(msg.job); loadJob(jobId); loadTimeline(jobId); return; }
  if (msg.type !== "event" || msg.event.job_id !== jobId) return;
  const ev = msg.event;
  addEvents([ev]);
  renderTimeline();
  if (ev.event === "progress") {
    setProgress(ev.data.progress);
    $("job-message").textContent = ev.data.message || "";
  } else {
    loadJob(jobId);
  }
}

// -- start ------------------------------------------------------------------------------

function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  const page = document.body.dataset.page;
  if (page === "job") {
    const jobId = document.body.dataset.jobId;
    loadJob(jobId);
    connect((ws) => ws.send(JSON.stringify({ type: "subscribe", job_id: jobId })), (m) => onJobMessage(jobId, m));
    // Why a job waits changes with the fleet, not only with the job's own events.
    setInterval(() => { if ($("job-status").textContent === "pending") loadJob(jobId); }, 10000);
    $("job-cancel").addEventListener("click", async () => {
      try { await api("/jobs/" + encodeURIComponent(jobId) + "/cancel", { method: "POST" }); } catch (e) { alert(e.message); }
      loadJob(jobId);
    });
    $("job-retry").addEventListener("click", async () => {
      try { await api("/jobs/" + encodeURIComponent(jobId) + "/retry", { method: "POST" }); } catch (e) { alert(e.message); }
      loadJob(jobId);
    });
  } else {
    refresh();
    refreshCharts();
    connect((ws) => ws.send(JSON.stringify({ type: "subscribe", all: true })), onDashboardMessage);
    setInterval(refresh, 10000);
    setInterval(refreshCharts, 5000);  // the current minute keeps counting
    $("submit-form").addEventListener("submit", submitJob);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $("logout").addEventListener("click", () => forget(""));
  if (token) { start(); return; }
  // A hub running open (HUB_AUTH=off) answers without a token: skip the login then.
  fetch("/dashboard/data").then((res) => {
    if (res.ok) { token = "open"; start(); } else forget("");
  }).catch(() => forget(""));
});
