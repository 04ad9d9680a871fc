// The worker dashboard's live half: refresh from GET /api/status every 2 seconds without
// reloading the page, and send the operator's actions with the HUB_OPERATOR_TOKEN they typed.
// Without that token the status names no job and no customer; with it (kept in this tab's
// sessionStorage only) every refresh asks for the full view.
//
// Plain JavaScript with no dependencies, loaded from the worker itself (GPU boxes are often
// offline, and the page's Content-Security-Policy allows no other origin). Everything the
// server sends is put into the page with textContent, never innerHTML: job ids, messages and
// errors come from clients and AI services.
(() => {
  "use strict";

  const TOKEN_KEY = "emp-worker-dashboard-token";
  const refreshMs = 1000 * Number(document.body.dataset.refreshSeconds || 2);
  const $ = (id) => document.getElementById(id);
  let snapshot = null;
  let pending = null; // the action waiting for a token to be entered
  let timer = null;

  // -- formatting (mirrors format_duration / format_number in worker/dashboard/page.py) ------

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return seconds < 1 ? `${seconds.toFixed(2)}s` : `${seconds.toFixed(1)}s`;
    let minutes = Math.floor(seconds / 60);
    const secs = Math.floor(seconds) % 60;
    let hours = Math.floor(minutes / 60);
    minutes %= 60;
    const days = Math.floor(hours / 24);
    hours %= 24;
    const two = (n) => String(n).padStart(2, "0");
    if (days) return `${days}d ${two(hours)}h`;
    if (hours) return `${hours}h ${two(minutes)}m`;
    return `${minutes}m ${two(secs)}s`;
  }

  function number(value, suffix = "", digits = 1) {
    return value === null || value === undefined ? "–" : `${value.toFixed(digits)}${suffix}`;
  }

  function clock(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
  }

  // -- DOM helpers -------------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else node[key] = value;
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(id, text) {
    const node = $(id);
    if (node && node.textContent !== text) node.textContent = text;
  }

  function emptyRow(colspan, text) {
    return el("tr", { class: "empty" }, el("td", { colSpan: colspan }, text));
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind}` }, text);
  }

  // -- rendering ---------------------------------------------------------------------------

  function render(s) {
    snapshot = s;
    const w = s.worker;
    setText("status", w.status);
    $("status").className = `badge status-${w.status}`;
    setText("state", w.state);
    $("state").className = `badge state-${w.state}`;
    setText("services", w.services.join(", ") || "none");
    setText("uptime", duration(w.uptime_seconds));
    setText("heartbeat", duration(w.heartbeat_age_seconds));
    $("heartbeat").classList.toggle("warn", w.heartbeat_late);
    setText("slots", `${w.slots.busy} / ${w.slots.total}`);
    setText("success-rate", number(s.stats.success_rate, "%"));
    setText("p50", duration(s.stats.p50_seconds));
    setText("p95", duration(s.stats.p95_seconds));
    setText("jobs-count", String(s.stats.jobs));
    setText("updated", clock(s.generated_at));
    $("connection").classList.remove("bad");
    renderControls(s);
    $("detail-hidden").hidden = s.detail;
    renderRunning(s.running, s.controls.enabled);
    renderResources(s.resources);
    renderConnectors(s.connectors);
    renderCapabilities(s.capabilities);
    renderHistory(s.history);
  }

  function renderControls(s) {
    const enabled = s.controls.enabled;
    $("pause").disabled = !enabled || s.worker.state === "paused";
    $("resume").disabled = !enabled || s.worker.state === "active";
    $("controls-disabled").hidden = enabled;
    setText("controls-disabled", s.controls.reason || "");
  }

  // Rows are updated in place, keyed by job id (by position in the open view, which names
  // no job), so a Cancel button does not vanish under the pointer at every refresh.
  function renderRunning(jobs, enabled) {
    const body = $("running-jobs").tBodies[0];
    const rows = new Map();
    for (const row of body.querySelectorAll("tr[data-job-id]")) rows.set(row.dataset.jobId, row);
    body.querySelector("tr.empty")?.remove();
    jobs.forEach((job, index) => {
      const key = job.job_id || `#${index}`;
      let row = rows.get(key);
      rows.delete(key);
      if (!row) row = body.appendChild(newJobRow(job, key));
      updateJobRow(row, job, enabled);
    });
    for (const row of rows.values()) row.remove();
    if (!jobs.length) body.append(emptyRow(8, "No job running."));
  }

  function newJobRow(job, key) {
    return el(
      "tr",
      { data: { jobId: key } },
      el("td", { class: "job-id mono" }, job.job_id || "–"),
      el("td", { class: "job-service" }, job.service_type),
      el("td", { class: "job-customer" }, job.customer_id || "–"),
      el("td", { class: "job-attempt" }, job.attempt),
      el("td", { class: "job-progress" }, el("progress", { max: 100 }), " ",
        el("span", { class: "job-percent" })),
      el("td", { class: "job-message" }),
      el("td", { class: "job-elapsed" }),
      el("td", {}, el("button", { type: "button", class: "cancel", data: { jobId: job.job_id || "" } })),
    );
  }

  function updateJobRow(row, job, enabled) {
    row.querySelector("progress").value = job.progress;
    row.querySelector(".job-percent").textContent = number(job.progress, "%", 0);
    row.querySelector(".job-message").textContent = job.message || "";
    row.querySelector(".job-attempt").textContent = job.attempt;
    row.querySelector(".job-elapsed").textContent = duration(job.elapsed_seconds);
    const button = row.querySelector("button.cancel");
    button.textContent = job.cancelling ? "Cancelling…" : "Cancel";
    button.disabled = job.cancelling || !enabled || !job.job_id || button.dataset.busy === "1";
  }

  function renderResources(r) {
    setText("cpu", number(r.cpu_percent, "%"));
    setText("ram", `${number(r.ram_used_gb, " GB")} / ${number(r.ram_total_gb, " GB")} ` +
      `(${number(r.ram_percent, "%")})`);
    const rows = r.gpus.map((g) => el("tr", {},
      el("th", {}, `GPU ${g.index}${g.name ? ` · ${g.name}` : ""}`),
      el("td", {}, g.error ? g.error : `${number(g.utilization_gpu, "%", 0)} busy · ` +
        `${number(g.memory_used_gb, " GB")} / ${number(g.memory_total_gb, " GB")}`)));
    if (!rows.length) {
      rows.push(el("tr", {}, el("th", {}, "GPU"),
        el("td", { class: "muted" }, r.gpu_error || r.error || "none")));
    }
    $("gpus").replaceChildren(...rows);
  }

  function renderConnectors(connectors) {
    const rows = connectors.map((c) => el("tr", { data: { connector: c.name } },
      el("th", {}, c.name),
      el("td", {}, badge(c.ok ? "healthy" : "unhealthy", c.ok ? "ok" : "bad"), " ", c.detail)));
    if (!rows.length) rows.push(emptyRow(2, "Not checked yet."));
    $("connectors").tBodies[0].replaceChildren(...rows);
  }

  function renderCapabilities(c) {
    const items = [
      ["Services", c.services.join(", ") || "none healthy"],
      ["GPUs", c.hardware.gpus.length],
      ["CPU / RAM", `${c.hardware.cpu_cores} cores / ${c.hardware.ram_gb} GB`],
      ["Models", c.models.length],
      ["Warm models", c.warm_models.join(", ") || "none"],
      ["Quality", c.performance.quality_levels.join(", ") || "–"],
      ["Region", c.geographic.region || "–"],
      ["Isolation", c.customer_access.isolation],
    ];
    $("capabilities").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function renderHistory(history) {
    setText("history-count", String(history.length));
    const rows = history.map((o) => el("tr", { data: { jobId: o.job_id || "" } },
      el("td", {}, el("time", { dateTime: o.finished_at }, clock(o.finished_at))),
      el("td", { class: "mono" }, o.job_id || "–"),
      el("td", {}, badge(o.status, `outcome-${o.status}`)),
      el("td", {}, duration(o.seconds)),
      el("td", { class: "error" }, o.error || ""),
      el("td", {}, ...(o.images || []).map((url, i) => el("a",
        { href: url, target: "_blank", rel: "noopener noreferrer" },
        el("img", { class: "thumb", src: url, alt: `output ${i + 1}`, loading: "lazy" }))))));
    if (!rows.length) rows.push(emptyRow(6, "No job finished yet."));
    $("history").tBodies[0].replaceChildren(...rows);
  }

  // -- refreshing --------------------------------------------------------------------------

  async function refresh() {
    try {
      const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
      const response = await fetch("/api/status", { cache: "no-store", headers });
      if (response.status === 401 && token()) {
        // A stale or mistyped token: forget it (as an action would) and read the open view.
        const body = await response.json().catch(() => ({}));
        askForToken(pending, `Token refused (${body.error?.message || "401"}): enter it again.`);
        return refresh();
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
    } catch (error) {
      $("connection").classList.add("bad");
      setText("updated", `unreachable (${error.message}); retrying`);
    } finally {
      // Scheduled after the answer, so a slow worker never has requests piling up.
      schedule(refreshMs);
    }
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  // -- actions -----------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function notice(text, kind = "") {
    const node = $("notice");
    node.textContent = text;
    node.className = kind;
  }

  function showToken() {
    const set = Boolean(token());
    $("token-form").hidden = set;
    $("token-set").hidden = !set;
  }

  function askForToken(action, why) {
    pending = action;
    sessionStorage.removeItem(TOKEN_KEY);
    showToken();
    notice(why, "warn");
    $("token").focus();
  }

  async function act(path, label, button) {
    const run = () => act(path, label, button);
    if (!token()) {
      askForToken(run, `Enter the worker's HUB_OPERATOR_TOKEN to ${label}.`);
      return;
    }
    if (button) {
      button.dataset.busy = "1";
      button.disabled = true;
    }
    try {
      const response = await fetch(path, {
        method: "POST",
        headers: { Authorization: `Bearer ${token()}` },
      });
      const body = await response.json().catch(() => ({}));
      if (response.status === 401) {
        askForToken(run, `Token refused (${body.error?.message || "401"}): enter it again.`);
      } else if (!response.ok) {
        notice(`Could not ${label}: ${body.error?.message || `HTTP ${response.status}`}`, "bad");
      } else {
        notice(`Done: ${label}.`, "ok");
        schedule(0); // show the effect now rather than at the next tick
      }
    } catch (error) {
      notice(`Could not ${label}: ${error.message}`, "bad");
    } finally {
      if (button) delete button.dataset.busy;
      if (snapshot) renderControls(snapshot);
    }
  }

  function wire() {
    $("pause").addEventListener("click", (e) => act("/api/pause", "pause claiming", e.currentTarget));
    $("resume").addEventListener("click", (e) => act("/api/resume", "resume claiming", e.currentTarget));
    $("running-jobs").addEventListener("click", (e) => {
      const button = e.target.closest("button.cancel");
      if (!button) return;
      const id = button.dataset.jobId;
      act(`/api/jobs/${encodeURIComponent(id)}/cancel`, `cancel job ${id}`, button);
    });
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("token").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      showToken();
      notice("");
      const action = pending;
      pending = null;
      if (action) action();
      else schedule(0); // show job and customer ids now
    });
    $("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showToken();
      notice("Token forgotten.");
      schedule(0);
    });
  }

  wire();
  showToken();
  refresh();
})();
