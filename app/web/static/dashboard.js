// metro's live page: one snapshot a second from /events (server-sent events),
// drawn into the page with the DOM and SVG. No library; data is only ever set as
// text, never as markup. Each number also carries its raw value in data-value.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function fmt(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}
// A count the dashboard stopped at its limit: "100,000+" (there are more).
function atLeast(n, more) {
  return fmt(n) + (more ? "+" : "");
}
function pct(r) {
  return r === null || r === undefined ? "–" : (r * 100).toFixed(1) + "%";
}
function secs(s) {
  return s === null || s === undefined ? "–" : Number(s).toFixed(1) + " s";
}
function setNumber(id, value, text) {
  const el = $(id);
  el.textContent = text === undefined ? fmt(value) : text;
  el.dataset.value = value === null || value === undefined ? "" : String(value);
}
function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}
function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c;
    tr.appendChild(td);
  }
  return tr;
}
function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren(...rows);
  if (!rows.length) {
    const tr = row([empty]);
    tr.firstChild.colSpan = columns;
    tr.firstChild.className = "empty";
    tbody.appendChild(tr);
  }
}
function clock(iso) {
  return new Date(iso).toISOString().substring(11, 19);
}

function drawChart(seconds) {
  const chart = $("chart");
  const W = 1000, H = 180, pad = 4;
  const max = Math.max(1, ...seconds.map((s) => s[1]));
  const x = (i) => (seconds.length > 1 ? (i * W) / (seconds.length - 1) : 0);
  const y = (v) => H - pad - (v * (H - 2 * pad)) / max;
  const nodes = [];
  for (let g = 1; g < 4; g++) {
    nodes.push(svg("line", { x1: 0, x2: W, y1: (g * H) / 4, y2: (g * H) / 4,
                              stroke: "#2a3642", "stroke-width": 1 }));
  }
  seconds.forEach((s, i) => {
    if (s[3] > 0) {
      nodes.push(svg("rect", { x: x(i) - 1.5, y: y(s[3]), width: 3, height: H - pad - y(s[3]),
                               fill: "#ff6b6b" }));
    }
  });
  const points = seconds.map((s, i) => `${x(i).toFixed(1)},${y(s[1]).toFixed(1)}`).join(" ");
  if (seconds.length) {
    nodes.push(svg("polygon", { points: `0,${H - pad} ${points} ${W},${H - pad}`,
                                fill: "rgba(79,179,255,0.18)" }));
    nodes.push(svg("polyline", { points, fill: "none", stroke: "#4fb3ff", "stroke-width": 2,
                                 "vector-effect": "non-scaling-stroke" }));
  }
  nodes.push(svg("text", { x: 6, y: 14, fill: "#8a98a6", "font-size": 12 }, `${fmt(max)}/s`));
  chart.replaceChildren(...nodes);
}

function drawLine(stations, trains) {
  const line = $("line");
  const W = 1000, mid = 95, n = stations.length;
  const x = (i) => (n > 1 ? 50 + (i * (W - 100)) / (n - 1) : W / 2);
  const max = Math.max(1, ...stations.map((s) => s.swipes));
  const where = new Map(stations.map((s, i) => [s.station_id, i]));
  const nodes = [svg("line", { x1: x(0), x2: x(Math.max(0, n - 1)), y1: mid, y2: mid,
                               stroke: "#4fb3ff", "stroke-width": 4, "stroke-linecap": "round" })];
  stations.forEach((s, i) => {
    const r = 5 + 13 * Math.sqrt(s.swipes / max);
    const g = svg("g", { "data-station": s.station_id, "data-swipes": s.swipes });
    g.appendChild(svg("circle", { cx: x(i), cy: mid, r, fill: s.swipes ? "#4fb3ff" : "#182029",
                                  stroke: "#d8e0e8", "stroke-width": 2 }));
    // Names alternate between two rows below the line, so long ones never overlap.
    g.appendChild(svg("text", { x: x(i), y: mid + (i % 2 ? 52 : 34), fill: "#d8e0e8",
                                "font-size": 12, "text-anchor": "middle" }, s.name));
    g.appendChild(svg("text", { x: x(i), y: mid - 26, fill: "#d8e0e8", "font-size": 12,
                                "text-anchor": "middle" }, fmt(s.swipes)));
    g.appendChild(svg("text", { x: x(i), y: mid - 12 - 30, fill: "#8a98a6", "font-size": 10,
                                "text-anchor": "middle" },
                      s.average_wait_seconds === null ? "" : `${Number(s.average_wait_seconds).toFixed(0)} s`));
    nodes.push(g);
  });
  const stacked = new Map();
  for (const t of trains) {
    const i = where.get(t.station_id);
    if (i === undefined) continue;
    const k = stacked.get(i) || 0;
    stacked.set(i, k + 1);
    // A departed train sits just past its station, an arrived one on it.
    const dx = t.activity_type === 1 ? 14 : 0;
    const cx = x(i) + dx, cy = 12 + k * 14;
    const tri = svg("polygon", { points: `${cx - 6},${cy + 10} ${cx + 6},${cy + 10} ${cx},${cy}`,
                                 fill: "#ffd166", "data-train": t.train_id });
    tri.appendChild(svg("title", {}, `${t.name}: ${t.activity_type === 1 ? "left" : "at"} ${t.station_name} ${clock(t.ts)}`));
    nodes.push(tri);
  }
  line.replaceChildren(...nodes);
}

function render(s) {
  setNumber("swipes-per-second", s.swipes_per_second);
  setNumber("minute-swipes", s.minute.swipes);
  setNumber("minute-entries", s.minute.entries);
  setNumber("acceptance", s.minute.acceptance, pct(s.minute.acceptance));
  setNumber("fraud-total", s.fraud_total, atLeast(s.fraud_total, s.fraud_total_more));
  setNumber("minute-fraud", s.minute.fraud);
  setNumber("payments-decided", s.payments.decided_total,
            atLeast(s.payments.decided_total, s.payments.decided_total_more));
  setNumber("payments-minute-decided", s.payments.minute.decided);
  setNumber("payments-minute-blocked", s.payments.minute.blocked);
  drawChart(s.seconds);
  drawLine(s.stations, s.trains);

  fill($("busiest").tBodies[0], s.busiest.map((b) =>
    row([b.name, fmt(b.swipes), fmt(b.entries), secs(b.average_wait_seconds)],
        { "data-station": b.station_id, "data-swipes": b.swipes })),
       "no swipes in the last minute", 4);

  const feed = s.fraud_feed.map((f) => {
    const li = document.createElement("li");
    li.dataset.transId = f.trans_id;
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = clock(f.ts);
    const card = document.createElement("span");
    card.className = "card";
    card.textContent = `card ${f.card_id}`;
    const where = document.createElement("span");
    where.textContent = `${f.activity_code === 2 ? "recharge at" : "at"} ${f.station_name || f.station_id}`;
    li.append(time, card, where);
    return li;
  });
  $("fraud-feed").replaceChildren(...feed);
  if (!feed.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "no fraud yet";
    $("fraud-feed").appendChild(li);
  }

  fill($("streams").tBodies[0], s.streams.map((t) =>
    row([t.stream, t.topic, fmt(t.delivered), atLeast(t.pending, t.more_pending),
         t.pending ? secs(t.lag_seconds) : "–"], { "data-stream": t.stream })),
       "no streams", 5);
  const b = s.bridge;
  $("bridge").textContent = !b || !b.holder ? "bridge: never ran"
    : `bridge ${b.holder}, heartbeat ${secs(b.heartbeat_age_seconds)} ago` +
      (b.last_error ? ` — last error: ${b.last_error}` : "");

  fill($("inbound").tBodies[0], s.inbound.map((p) =>
    row([p.topic, String(p.partition), fmt(p.next_offset), fmt(p.applied),
         fmt(p.dead_lettered)])), "nothing consumed yet", 5);
  setNumber("dead-letters", s.dead_letters);

  fill($("worker").tBodies[0], s.worker.map((w) =>
    row([w.source, atLeast(w.pending, w.more_pending), w.pending ? secs(w.lag_seconds) : "–"])),
       "no sources", 3);

  const status = $("status");
  status.className = "status live";
  status.textContent = `live · ${clock(s.now)} UTC`;
  document.body.dataset.updated = s.now;
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("snapshot", (event) => {
    const s = JSON.parse(event.data);
    if (s.error) {
      const status = $("status");
      status.className = "status error";
      status.textContent = s.error;
      return;
    }
    render(s);
  });
  source.onerror = () => {
    const status = $("status");
    status.className = "status error";
    status.textContent = "dashboard server not answering; retrying…";
  };
}

connect();
