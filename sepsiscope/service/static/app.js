// SepsisScope alarm review: pick a stay, see its risk trace, click an alarm to see why.
// The token comes from the page address (#token=...), is kept for this tab only, and is sent
// as "Authorization: Bearer" with every /v1 request.
"use strict";

const state = {token: null, stays: [], model: null, stay: null};
const $ = id => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c === null || c === undefined ? "" : c);
  return e;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const s = Number(x).toFixed(digits);
  return /^-0\.?0*$/.test(s) ? s.slice(1) : s;  // no "-0.000"
}

function prob(log10odds) {
  return 1 / (1 + Math.pow(10, -log10odds));
}

async function api(path) {
  const r = await fetch(path, {headers: {Authorization: `Bearer ${state.token}`}});
  if (r.status === 401) { showTokenForm("The token was refused."); throw new Error("401"); }
  const body = await r.json();
  if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  return body;
}

function showMessage(text) {
  $("message").hidden = false;
  $("message").textContent = text;
}

function showTokenForm(text) {
  $("token-form").hidden = false;
  showMessage(text || "Enter the API token printed by `sepsiscope serve`.");
}

// ---------------------------------------------------------------- stays
function renderStays() {
  const q = $("stay-filter").value.trim();
  const septicOnly = $("septic-only").checked;
  const list = $("stay-list");
  list.textContent = "";
  const shown = state.stays.filter(s => (!q || String(s.stay_id).includes(q)) && (!septicOnly || s.septic));
  for (const s of shown.slice(0, 500)) {
    const tag = s.source === "posted" ? "posted" : (s.septic ? "septic" : "");
    const li = el("li", {"data-testid": "stay", "data-stay": String(s.stay_id), tabIndex: 0},
                  el("span", {class: "id"}, String(s.stay_id)), el("span", {class: `tag ${tag}`}, tag),
                  el("span", {class: "muted"}, `${fmt(s.hours, 0)} h`));
    if (state.stay === s.stay_id) li.classList.add("selected");
    li.addEventListener("click", () => openStay(s.stay_id));
    li.addEventListener("keydown", e => { if (e.key === "Enter") openStay(s.stay_id); });
    list.append(li);
  }
  $("stay-count").textContent = `${shown.length} of ${state.stays.length} stays` +
    (shown.length > 500 ? " (first 500 shown; filter by id)" : "");
}

async function loadStays() {
  const body = await api("/v1/stays?limit=100000");
  state.stays = body.stays;
  renderStays();
}

// ---------------------------------------------------------------- trace
async function openStay(stayId) {
  state.stay = stayId;
  renderStays();
  $("explain-panel").hidden = true;
  const trace = await api(`/v1/stays/${stayId}/trace`);
  $("message").hidden = true;
  $("trace-panel").hidden = false;
  const fired = trace.alarms.filter(a => a.fired).length;
  $("trace-title").textContent = `Stay ${stayId} (${trace.source}) · ${fired} alarm(s) at threshold ` +
    `${fmt(trace.threshold)}` + (trace.operating_point ? ` (${trace.operating_point})` : "") +
    (trace.onset_hours !== null ? ` · onset at ${fmt(trace.onset_hours, 0)} h` : " · no onset");
  window.drawTrace($("trace"), trace, a => openAlarm(stayId, a));
}

// ---------------------------------------------------------------- explanation
function bar(value, scale, testid) {
  // two cells: a bar centred on zero (blue raises, red lowers) and the number
  const track = el("div", {class: "track"});
  const fill = el("div", {class: value >= 0 ? "fill raise" : "fill lower"});
  const frac = Math.min(1, Math.abs(value || 0) / scale) * 50;
  fill.style.width = `${frac}%`;
  fill.style.left = value >= 0 ? "50%" : `${50 - frac}%`;
  track.append(fill);
  return [el("td", {class: "bar"}, track), el("td", {class: "num", "data-testid": testid}, fmt(value))];
}

// the unit is in the value column already
function stateText(item) {
  const s = item.state_label || "";
  return item.unit && s.endsWith(` ${item.unit}`) ? s.slice(0, -item.unit.length - 1) : s;
}

// yes/no leaves and categories show their state, not a code
function showValue(item) {
  return item.value !== null && item.state_label !== "yes" && item.state_label !== "no";
}

function bayesTable(view) {
  const scale = Math.max(0.05, ...view.items.flatMap(i => [Math.abs(i.in_context || 0), Math.abs(i.alone || 0)]));
  const head = el("tr", {}, ...["evidence", "value", "state", "age", "decay weight"].map(h => el("th", {}, h)),
    el("th", {colSpan: 2}, "in context"), el("th", {colSpan: 2}, "alone"));
  const rows = view.items.map(i => el("tr", {"data-testid": "bf-row", "data-feature": i.feature},
    el("td", {class: "label", title: `${i.label} (${i.feature})`}, i.label),
    el("td", {class: "value"}, showValue(i) ? `${fmt(i.value, 4).replace(/\.?0+$/, "")} ${i.unit}` : ""),
    el("td", {title: i.state || ""}, stateText(i)),
    el("td", {class: "value"}, i.age_h === null ? "" : `${fmt(i.age_h, 1)} h`),
    el("td", {class: "value", "data-testid": "weight"}, fmt(i.weight, 2)),
    ...bar(i.in_context, scale, "in-context"), ...bar(i.alone, scale, "alone")));
  const foot = el("div", {class: "totals"},
    el("span", {"data-testid": "bf-prior"}, `prior log10 odds ${fmt(view.prior)} (P = ${fmt(prob(view.prior))})`),
    el("span", {"data-testid": "bf-total"}, `total log10 B(E) ${fmt(view.total)}`),
    el("span", {"data-testid": "bf-posterior"},
       `posterior log10 odds ${fmt(view.posterior)} (risk ${fmt(view.risk)})`));
  return [el("table", {class: "bf"}, el("thead", {}, head), el("tbody", {}, ...rows)), foot];
}

function contributionTable(view) {
  const scale = Math.max(0.05, ...view.items.map(i => Math.abs(i.contribution)));
  const rows = view.items.map(i => el("tr", {"data-testid": "shap-row", "data-feature": i.feature},
    el("td", {class: "label", title: `${i.label} (${i.feature})`}, i.label),
    el("td", {class: i.missing ? "value muted" : "value"},
       i.missing ? "not measured" : showValue(i) ? `${fmt(i.value, 4).replace(/\.?0+$/, "")} ${i.unit}` : ""),
    ...bar(i.contribution, scale, "contribution")));
  const foot = el("div", {class: "totals"},
    el("span", {}, `expected ${fmt(view.expected)} log-odds`),
    el("span", {"data-testid": "shap-total"}, `total ${fmt(view.total)}`),
    el("span", {}, `risk ${fmt(view.risk)}`));
  return [el("table", {class: "bf shap"}, el("thead", {}, el("tr", {}, el("th", {}, "feature"),
    el("th", {}, "value"), el("th", {colSpan: 2}, "contribution"))), el("tbody", {}, ...rows)), foot];
}

async function openAlarm(stayId, alarm) {
  const ex = await api(`/v1/stays/${stayId}/explain?at=${encodeURIComponent(alarm.screen_time)}`);
  const panel = $("explain-panel");
  panel.hidden = false;
  const primary = ex.explanations[0];
  $("explain-title").textContent = `Stay ${stayId} · ${ex.screen_time.replace("T", " ")} · ` +
    `${fmt(ex.hours_since_admit, 0)} h since admission`;
  $("explain-summary").textContent = `${primary.model} risk ${fmt(primary.risk)} against threshold ` +
    `${fmt(ex.threshold)}: ${alarm.fired ? "alarm" : "silenced alarm"}`;
  const box = $("explain-models");
  box.textContent = "";
  for (const view of ex.explanations) {
    const parts = view.kind === "bayes_factors" ? bayesTable(view) : contributionTable(view);
    box.append(el("div", {class: `model ${view.kind}`, "data-testid": `explain-${view.model}`},
                  el("h3", {}, `${view.model}: ${view.scale}`), ...parts));
  }
  panel.scrollIntoView({block: "nearest"});
}

// ---------------------------------------------------------------- start
async function start() {
  const m = /token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("sepsiscope-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  state.token = sessionStorage.getItem("sepsiscope-token");
  $("token-form").addEventListener("submit", e => {
    e.preventDefault();
    sessionStorage.setItem("sepsiscope-token", $("token-input").value.trim());
    $("token-form").hidden = true;
    start();
  });
  $("stay-filter").addEventListener("input", renderStays);
  $("septic-only").addEventListener("change", renderStays);
  if (!state.token) { showTokenForm(); return; }
  try {
    state.model = await api("/v1/model");
    const p = state.model.primary;
    $("model-info").textContent = `${p.name} ${p.version} · threshold ${fmt(state.model.threshold)}` +
      (state.model.operating_point ? ` (${state.model.operating_point})` : "") +
      ` · silencing ${state.model.silencing_h} h` +
      (state.model.compare.length ? ` · beside: ${state.model.compare.map(c => c.name).join(", ")}` : "");
    await loadStays();
  } catch (err) {
    if (err.message !== "401") showMessage(`Error: ${err.message}`);
  }
}

document.addEventListener("DOMContentLoaded", start);
