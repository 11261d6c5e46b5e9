// SepsisScope risk trace, drawn as plain SVG (no library, nothing fetched from outside).
// drawTrace(container, trace, onAlarm): risk per screen against hours since admission, the
// threshold, silencing windows, onset, and one clickable marker per alarm candidate.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function niceStep(span) {
  const raw = span / 8;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function drawTrace(container, trace, onAlarm) {
  container.textContent = "";
  const W = 860, H = 300, L = 52, R = 16, T = 14, B = 40;
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img",
                            "aria-label": "risk trace"}, container);
  const pts = trace.points;
  const hours = pts.map(p => p.hours);
  let x0 = hours.length ? Math.min(...hours) : 0;
  let x1 = hours.length ? Math.max(...hours) : 1;
  if (trace.onset_hours !== null && trace.onset_hours !== undefined) x1 = Math.max(x1, trace.onset_hours);
  if (x1 <= x0) x1 = x0 + 1;
  const sx = h => L + (h - x0) / (x1 - x0) * (W - L - R);
  const sy = r => T + (1 - r) * (H - T - B);
  const plot = svgEl("g", {}, svg);

  // silencing windows first, so that everything else draws over them
  for (const w of trace.silencing_windows) {
    const a = sx(Math.max(w.start_hours, x0)), b = sx(Math.min(w.end_hours, x1));
    if (b > a) svgEl("rect", {x: a, y: T, width: b - a, height: H - T - B, class: "window",
                              "data-testid": "silencing-window"}, plot);
  }
  // axes and grid
  for (let r = 0; r <= 1.0001; r += 0.2) {
    svgEl("line", {x1: L, x2: W - R, y1: sy(r), y2: sy(r), class: "grid"}, plot);
    svgEl("text", {x: L - 6, y: sy(r) + 4, class: "tick", "text-anchor": "end"}, plot).textContent = r.toFixed(1);
  }
  const step = niceStep(x1 - x0);
  for (let h = Math.ceil(x0 / step) * step; h <= x1; h += step) {
    svgEl("line", {x1: sx(h), x2: sx(h), y1: H - B, y2: H - B + 4, class: "axis"}, plot);
    svgEl("text", {x: sx(h), y: H - B + 16, class: "tick", "text-anchor": "middle"}, plot).textContent = h;
  }
  svgEl("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis"}, plot);
  svgEl("line", {x1: L, x2: L, y1: T, y2: H - B, class: "axis"}, plot);
  svgEl("text", {x: (L + W - R) / 2, y: H - 6, class: "label", "text-anchor": "middle"}, plot)
    .textContent = "hours since admission";
  svgEl("text", {x: 14, y: (T + H - B) / 2, class: "label", "text-anchor": "middle",
                 transform: `rotate(-90 14 ${(T + H - B) / 2})`}, plot).textContent = "risk";

  // threshold, onset, risk line
  svgEl("line", {x1: L, x2: W - R, y1: sy(trace.threshold), y2: sy(trace.threshold), class: "threshold",
                 "data-testid": "threshold-line"}, plot);
  if (trace.onset_hours !== null && trace.onset_hours !== undefined) {
    svgEl("line", {x1: sx(trace.onset_hours), x2: sx(trace.onset_hours), y1: T, y2: H - B, class: "onset",
                   "data-testid": "onset"}, plot);
    svgEl("text", {x: sx(trace.onset_hours) - 4, y: T + 12, class: "onset-label", "text-anchor": "end"}, plot)
      .textContent = "onset";
  }
  if (pts.length) {
    const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p.hours).toFixed(1)},${sy(p.risk).toFixed(1)}`).join("");
    svgEl("path", {d, class: "risk"}, plot);
  }
  // alarm markers, silenced ones hollow; each opens the explanation of its screen
  for (const a of trace.alarms) {
    const g = svgEl("g", {class: a.fired ? "alarm fired" : "alarm silenced", tabindex: 0, role: "button",
                          "data-testid": a.fired ? "alarm" : "silenced-alarm", "data-time": a.screen_time},
                    plot);
    svgEl("circle", {cx: sx(a.hours), cy: sy(a.risk), r: a.fired ? 7 : 5}, g);
    svgEl("title", {}, g).textContent =
      `${a.fired ? "alarm" : "silenced"} at ${a.hours} h, risk ${a.risk.toFixed(3)}`;
    const open = () => onAlarm(a);
    g.addEventListener("click", open);
    g.addEventListener("keydown", e => { if (e.key === "Enter" || e.key === " ") open(); });
  }
  return svg;
}

window.drawTrace = drawTrace;
