"""The dashboard's one self-contained page: HTML, CSS and plain JavaScript, no CDN.

The script polls ``api/state`` (with the page's own ``token`` query parameter, sent as the
``X-Atb-Token`` header) and redraws: per symbol an inline SVG chart of the close, the
prediction (drawn at the bar it predicts, one bar later) and the fills, with the position,
value, signal, serving model, its age and the guards; the equity chart; the kill switch; open
orders; the shadows' books; the model events. Values go into the page as text, never as HTML.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>atb dashboard</title><link rel="icon" href="data:,">
<style>
body{font:14px system-ui,sans-serif;margin:1em 2em;background:#fafafa;color:#222}
h1{font-size:1.3em;margin:.2em 0} h2{font-size:1.1em;margin:.8em 0 .3em}
.bar{display:flex;gap:2em;flex-wrap:wrap;align-items:center}
.badge{padding:.2em .6em;border-radius:.3em;font-weight:bold}
.ok{background:#d8f0d8;color:#185c18} .tripped{background:#f7d4d4;color:#8a1010}
section.symbol,#account{background:#fff;border:1px solid #ddd;border-radius:.4em;
 padding:.6em 1em;margin:.8em 0}
dl{display:grid;grid-template-columns:max-content auto max-content auto max-content auto;
 gap:.2em 1em;margin:.4em 0} dt{color:#666} dd{margin:0;font-variant-numeric:tabular-nums}
svg{background:#fff;border:1px solid #eee} table{border-collapse:collapse}
td,th{padding:.15em .6em;border-bottom:1px solid #eee;text-align:left}
.legend span{margin-right:1.2em} .muted{color:#888}
</style></head>
<body>
<div class="bar"><h1>atb dashboard</h1>
<span>session <b id="session">-</b></span>
<span>last bar <b id="last-bar">-</b> (<span id="bar-count">0</span> bars)</span>
<span>kill switch <span id="kill-switch" class="badge ok">-</span></span>
<span class="muted" id="status">loading</span></div>
<div id="symbols"></div>
<div id="account"><h2>Equity <span id="equity-value"></span></h2>
<svg id="equity-chart" width="900" height="160"></svg>
<h2>Open orders on the exchange (journal)</h2><table id="open-orders"></table>
<h2>Shadows</h2><table id="shadows"></table>
<h2>Model events</h2><table id="model-events"></table></div>
<template id="symbol-template"><section class="symbol">
<h2 class="name"></h2>
<dl><dt>close</dt><dd class="close"></dd><dt>position</dt><dd class="position"></dd>
<dt>value</dt><dd class="value"></dd><dt>P&amp;L</dt><dd class="pnl"></dd>
<dt>signal</dt><dd class="signal"></dd><dt>action</dt><dd class="action"></dd>
<dt>model</dt><dd class="model"></dd><dt>model age</dt><dd class="model-age"></dd>
<dt>guards</dt><dd class="guards"></dd></dl>
<svg class="price-chart" width="900" height="260"></svg>
<div class="legend"><span style="color:#1f5fbf">&#9473; close</span>
<span style="color:#e08000">&#9476; prediction (at the bar it predicts)</span>
<span style="color:#128a12">&#9650; buy fill</span>
<span style="color:#c01818">&#9660; sell fill</span></div>
<h2>Open orders</h2><table class="orders"></table></section></template>
<script>
"use strict";
const POLL_MS = __POLL_MS__;
const token = new URLSearchParams(location.search).get("token");
const NS = "http://www.w3.org/2000/svg";
function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(x, d) { return x === null || x === undefined ? "-" : Number(x).toFixed(d); }
function text(root, sel, value) { root.querySelector(sel).textContent = value; }
function table(t, rows, cols) {
  t.replaceChildren();
  if (!rows.length) { const r = t.insertRow(); r.insertCell().textContent = "none"; return; }
  const h = t.createTHead().insertRow();
  for (const c of cols) {
    const th = document.createElement("th"); th.textContent = c; h.appendChild(th);
  }
  const b = t.createTBody();
  for (const row of rows) { const r = b.insertRow();
    for (const c of cols) {
      const v = row[c];
      r.insertCell().textContent = v === null || v === undefined ? "-"
        : typeof v === "number" ? String(+v.toPrecision(8)) : String(v);
    }
  }
}
function chart(svg, series, marks, times) {
  // series: [{values: [number|null], color, dash}], x in slots 0..n-1; marks: [{slot, y, side}]
  svg.replaceChildren();
  const W = +svg.getAttribute("width"), H = +svg.getAttribute("height");
  const L = 70, R = 50, T = 10, B = 22;
  const all = series.flatMap(s => s.values).concat(marks.map(m => m.y))
    .filter(v => v !== null && isFinite(v));
  const n = Math.max(...series.map(s => s.values.length), 2);
  if (!all.length) return;
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = i => L + (W - L - R) * i / (n - 1), y = v => T + (H - T - B) * (hi - v) / (hi - lo);
  for (const v of [lo, (lo + hi) / 2, hi]) {
    el("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eee"}, svg);
    el("text", {x: 4, y: y(v) + 4, "font-size": 11, fill: "#666"}, svg).textContent = v.toFixed(2);
  }
  const ticks = times.length ? [0, Math.floor((times.length - 1) / 2), times.length - 1] : [];
  for (const i of new Set(ticks)) {
    el("text", {x: x(i), y: H - 6, "font-size": 11, fill: "#666", "text-anchor": "middle",
      class: "time-label"}, svg).textContent = times[i].slice(0, 16).replace("T", " ");
  }
  for (const s of series) {
    const pts = s.values.map((v, i) => v === null ? null : x(i) + "," + y(v)).filter(p => p);
    el("polyline", {points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": 1.6,
      "stroke-dasharray": s.dash || "", class: s.cls}, svg);
  }
  for (const m of marks) {
    const cx = x(m.slot), cy = y(m.y), up = m.side === "buy";
    el("path", {d: up ? `M${cx},${cy-7} l6,11 l-12,0 z` : `M${cx},${cy+7} l6,-11 l-12,0 z`,
      fill: up ? "#128a12" : "#c01818", class: "fill-mark " + m.side}, svg);
  }
}
function renderSymbol(name, s) {
  const host = document.getElementById("symbols");
  let sec = host.querySelector(`section[data-symbol="${CSS.escape(name)}"]`);
  if (!sec) {
    sec = document.getElementById("symbol-template").content.firstElementChild.cloneNode(true);
    sec.dataset.symbol = name; sec.querySelector(".name").textContent = name; host.appendChild(sec);
  }
  const last = s.last;
  text(sec, ".close", fmt(last.close, 2)); text(sec, ".position", fmt(last.position, 6));
  text(sec, ".value", fmt(last.value, 2)); text(sec, ".pnl", fmt(last.pnl, 2));
  text(sec, ".signal", last.signal || "-"); text(sec, ".action", last.action || "-");
  text(sec, ".model", last.model || "-");
  text(sec, ".model-age", last.model_age_hours === null || last.model_age_hours === undefined
    ? "unknown" : (last.model_age_hours / 24).toFixed(1) + " days");
  text(sec, ".guards", (last.guards || []).length ? last.guards.join(", ") : "none firing");
  const times = s.bars.map(b => b.time), closes = s.bars.map(b => b.close);
  const preds = [null].concat(s.bars.map(b => b.prediction));
  const marks = s.fills.map(f => ({slot: f.slot, y: f.price, side: f.side}));
  chart(sec.querySelector(".price-chart"), [
    {values: closes.concat([null]), color: "#1f5fbf", cls: "close-line"},
    {values: preds, color: "#e08000", dash: "5,3", cls: "prediction-line"}], marks, times);
  table(sec.querySelector(".orders"), s.open_orders, ["side", "type", "amount", "price"]);
}
function render(st) {
  text(document, "#session", st.session); text(document, "#last-bar", st.last_time || "-");
  text(document, "#bar-count", st.bars);
  const ks = document.getElementById("kill-switch");
  const trip = st.kill_switch;
  ks.textContent = trip ? `TRIPPED ${trip.time} (${trip.reason})` : "no trip recorded";
  ks.className = "badge " + (trip ? "tripped" : "ok");
  for (const [name, s] of Object.entries(st.symbols)) renderSymbol(name, s);
  const eq = st.equity.map(e => e.value);
  text(document, "#equity-value", eq.length ? fmt(eq[eq.length - 1], 2) : "-");
  const byId = id => document.getElementById(id);
  const eqTimes = st.equity.map(e => e.time);
  chart(byId("equity-chart"), [{values: eq, color: "#444", cls: "equity-line"}], [], eqTimes);
  table(byId("open-orders"), st.open_orders,
    ["symbol", "side", "type", "amount", "price", "state", "filled"]);
  table(byId("shadows"), st.shadows,
    ["symbol", "role", "model_key", "signal", "position", "equity", "trades"]);
  table(byId("model-events"), st.model_events,
    ["bar", "symbol", "kind", "from_key", "to_key", "reason"]);
}
let lastState = null;
async function poll() {
  try {
    const r = await fetch("api/state", {headers: token ? {"X-Atb-Token": token} : {}});
    if (!r.ok) throw new Error(r.status + " " + (await r.text()));
    const raw = await r.text();
    if (raw !== lastState) { render(JSON.parse(raw)); lastState = raw; }  // redraw on change
    text(document, "#status", "updated " + new Date().toISOString().slice(11, 19) + " UTC");
  } catch (e) { text(document, "#status", "error: " + e.message); }
  setTimeout(poll, POLL_MS);
}
poll();
</script></body></html>
"""


def render_page(poll_seconds: float) -> str:
    """The page, polling every ``poll_seconds``."""
    return PAGE.replace("__POLL_MS__", str(max(int(poll_seconds * 1000), 100)))
