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
      Math.round(j.progress) + "%", j.worker_id, j.queue_position ?? ""]);
    tr.dataset.jobId = j.id;
    tr.className = "status-" + j.status;
    return tr;
  }));
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

function fmtPct(p) {
  if (!p || p.p50 === null) return "-";
  return p.p50 + " / " + p.p99 + " ms";
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
    w.current_jobs.join(", "), w.heartbeat_age_seconds === null ? "" : w.heartbeat_age_seconds.toFixed(1) + " s",
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
  $("job-worker").textContent = job.worker_id || "";
  $("job-attempts").textContent = job.attempts + " of " + (job.max_retries + 1);
  $("job-message").textContent = job.message || "";
  $("job-waiting").textContent = job.waiting ? job.waiting.message : "";
  $("job-error").textContent = job.error || "";
  $("job-times").textContent = [job.created_at, job.claimed_at, job.finished_at].map((t) => t || "-").join(" / ");
  setProgress(job.progress);
  $("job-result").textContent = job.result === null || job.result === undefined ? "" : JSON.stringify(job.result, null, 2);
  renderImages(job.result);
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

function findImages(value, key, out) {
  if (out.length >= 16 || value === null || value === undefined) return out;
  if (typeof value === "string") {
    if (value.startsWith("data:image/")) out.push(value);
    else if (IMG_URL.test(value) && imageOriginAllowed(value)) out.push(value);
    else if (/image/i.test(key || "") && value.length > 64 && B64.test(value)) out.push("data:image/png;base64," + value);
  } else if (Array.isArray(value)) {
    for (const v of value) findImages(v, key, out);
  } else if (typeof value === "object") {
    // ComfyUI results: {filename, content_type: "image/png", base64: "..."}
    if (typeof value.base64 === "string" && /^image\//.test(value.content_type || "")) {
      out.push("data:" + value.content_type + ";base64," + value.base64);
      return out;
    }
    for (const [k, v] of Object.entries(value)) findImages(v, k, out);
  }
  return out;
}

function renderImages(result) {
  const box = $("job-images");
  box.replaceChildren(...findImages(result, "", []).map((src) => el("img", null, { src, alt: "result image", class: "result-image" })));
}

async function loadJob(jobId) {
  try { renderJob(await api("/jobs/" + encodeURIComponent(jobId))); } catch (e) { $("job-error").textContent = e.message; }
}

function onJobMessage(jobId, msg) {
  if (msg.type === "snapshot") { renderJob(msg.job); return; }
  if (msg.type !== "event" || msg.event.job_id !== jobId) return;
  const ev = msg.event;
  const li = el("li", "#" + ev.seq + " " + ev.event + " " + JSON.stringify(ev.data));
  $("job-events").appendChild(li);
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
    connect((ws) => ws.send(JSON.stringify({ type: "subscribe", all: true })), onDashboardMessage);
    setInterval(refresh, 10000);
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
