// Small SVG line charts for the hub dashboard: a few dozen lines instead of a charting
// library, so the page stays light and works on closed GPU networks (no CDN). Built with
// DOM calls only (no innerHTML), styled by classes (the CSP forbids inline styles). Every
// point carries data-series, data-t and data-value, so a test can read what is drawn.
"use strict";

const EmpCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 480, H = 190, L = 56, R = 10, T = 10, B = 24;

  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = text;
    return n;
  }

  // The grid step: about four steps cover `max`. Counts step by 1, 2 or 5 times a power of
  // ten; durations (spec.steps) by round times, so the axis reads 30 s, 1 min, 1.5 min.
  function niceStep(max, steps) {
    const raw = max / 4;
    if (raw <= 1) return 1;
    const fit = (steps || []).find((s) => s >= raw);
    if (fit) return fit;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  }

  function clock(ms) {
    const d = new Date(ms);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  // spec: {t: [minute start ms], series: [{name, values: [number|null], cls}],
  //        format: value -> text, summary: series -> text (the legend's figure),
  //        steps: grid steps to prefer, empty: text when there is no series}
  function draw(figure, spec) {
    const plot = figure.querySelector(".plot");
    const legend = figure.querySelector(".legend");
    const values = spec.series.flatMap((s) => s.values).filter((v) => v !== null);
    const step = niceStep(Math.max(0, ...values), spec.steps);
    const top = Math.max(step, Math.ceil(Math.max(0, ...values) / step) * step);
    const n = spec.t.length;
    const x = (i) => L + (n > 1 ? (i * (W - L - R)) / (n - 1) : 0);
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const svg = node("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": figure.dataset.title || "" });

    for (let v = 0; v <= top + step / 2; v += step) {
      svg.appendChild(node("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      svg.appendChild(node("text", { x: L - 6, y: y(v) + 4, class: "tick y" }, spec.format(v)));
    }
    spec.t.forEach((t, i) => {
      if (new Date(t).getMinutes() % 15 === 0) {
        svg.appendChild(node("text", { x: x(i), y: H - 6, class: "tick x" }, clock(t)));
      }
    });
    // One invisible column per minute: hovering it shows every series' value then.
    spec.t.forEach((t, i) => {
      const col = node("rect", { x: x(i) - (W - L - R) / (2 * n), y: T, width: (W - L - R) / n, height: H - T - B, class: "hover" });
      const parts = spec.series.map((s) => s.name + " " + (s.values[i] === null ? "-" : spec.format(s.values[i])));
      col.appendChild(node("title", {}, clock(t) + "  " + parts.join(", ")));
      svg.appendChild(col);
    });
    spec.series.forEach((s, k) => {
      const cls = s.cls || "s" + (k % 10);
      let d = "", pen = "M";
      s.values.forEach((v, i) => {
        if (v === null) { pen = "M"; return; }
        d += `${pen}${x(i).toFixed(1)} ${y(v).toFixed(1)} `;
        pen = "L";
      });
      svg.appendChild(node("path", { d: d.trim(), class: "line " + cls, "data-series": s.name }));
      s.values.forEach((v, i) => {
        if (v === null || (v === 0 && i !== n - 1)) return;  // dots where something happened
        svg.appendChild(node("circle", { cx: x(i), cy: y(v), r: 2.6, class: "pt " + cls,
          "data-series": s.name, "data-t": spec.t[i], "data-value": v }));
      });
    });
    if (!spec.series.length) {
      svg.appendChild(node("text", { x: (L + W - R) / 2, y: H / 2, class: "empty" }, spec.empty || "no data"));
    }
    plot.replaceChildren(svg);
    legend.replaceChildren(...spec.series.map((s, k) => {
      const li = document.createElement("li");
      li.append(Object.assign(document.createElement("span"), { className: "swatch " + (s.cls || "s" + (k % 10)) }),
        document.createTextNode(" " + s.name + " "),
        Object.assign(document.createElement("b"), { textContent: spec.summary(s) }));
      return li;
    }));
  }

  return { draw };
})();
