"use strict";
// The duckflock dashboard: tables with row counts and ingest rates, and every analysis
// as a table and a chart that update live over server-sent events. No dependencies.
const query = new URLSearchParams(location.search);
const token = query.get("access_token") || "";
const headers = token ? { Authorization: "Bearer " + token } : {};
const streams = new Map();
const previous = new Map();
const statusLine = document.getElementById("status");

async function api(path) {
  const response = await fetch(path, { headers });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

function cell(row, text, tag = "td") {
  const node = document.createElement(tag);
  node.textContent = text === null || text === undefined ? "NULL" : String(text);
  row.appendChild(node);
  return node;
}

async function refreshTables() {
  const tables = await api("/v1/tables");
  const now = performance.now();
  const body = document.querySelector("#tables tbody");
  body.replaceChildren();
  for (const table of tables) {
    const row = document.createElement("tr");
    row.dataset.table = table.name;
    const before = previous.get(table.name);
    const rate = before ? ((table.rows - before.rows) * 1000) / (now - before.at) : 0;
    previous.set(table.name, { rows: table.rows, at: now });
    cell(row, table.name);
    cell(row, table.rows.toLocaleString()).className = "rows";
    cell(row, Math.max(0, Math.round(rate)).toLocaleString());
    cell(row, table.columns.map((c) => c.name + " " + c.type).join(", ")).className = "muted";
    body.appendChild(row);
  }
}

function card(name) {
  let node = document.querySelector(`.card[data-name="${CSS.escape(name)}"]`);
  if (!node) {
    node = document.createElement("div");
    node.className = "card";
    node.dataset.name = name;
    const title = document.createElement("h3");
    title.textContent = name;
    node.append(title, document.createElement("div"), document.createElement("div"));
    node.children[1].className = "meta";
    document.getElementById("analyses").appendChild(node);
  }
  return node;
}

const NUMERIC = /^(int|uint|double|float|decimal|halffloat)/;
const TIMELIKE = /^(timestamp|date|time)/;

function chart(result) {
  const valueIndex = result.types.findIndex((t, i) => i > 0 && NUMERIC.test(t));
  if (valueIndex < 0 || result.rows.length === 0) return null;
  const width = 400, height = 140, pad = 18;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("class", TIMELIKE.test(result.types[0]) ? "chart line-chart" : "chart bar-chart");
  const rows = result.rows.slice(0, 200);
  const values = rows.map((r) => Number(r[valueIndex]) || 0);
  const top = Math.max(...values, 0), bottom = Math.min(...values, 0);
  const y = (v) => height - pad - ((v - bottom) / (top - bottom || 1)) * (height - 2 * pad);
  const axis = document.createElementNS(svg.namespaceURI, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", pad); axis.setAttribute("x2", width - pad);
  axis.setAttribute("y1", y(0)); axis.setAttribute("y2", y(0));
  svg.appendChild(axis);
  const step = (width - 2 * pad) / values.length;
  if (TIMELIKE.test(result.types[0])) {
    const line = document.createElementNS(svg.namespaceURI, "polyline");
    line.setAttribute("class", "line");
    line.setAttribute("points", values.map((v, i) => `${pad + step * (i + 0.5)},${y(v)}`).join(" "));
    svg.appendChild(line);
  } else {
    values.forEach((v, i) => {
      const bar = document.createElementNS(svg.namespaceURI, "rect");
      bar.setAttribute("class", "bar");
      bar.setAttribute("x", pad + step * i + 1);
      bar.setAttribute("width", Math.max(1, step - 2));
      bar.setAttribute("y", Math.min(y(v), y(0)));
      bar.setAttribute("height", Math.abs(y(0) - y(v)));
      const label = document.createElementNS(svg.namespaceURI, "title");
      label.textContent = `${rows[i][0]}: ${v}`;
      bar.appendChild(label);
      svg.appendChild(bar);
      if (values.length <= 20) {
        const text = document.createElementNS(svg.namespaceURI, "text");
        text.setAttribute("x", pad + step * (i + 0.5));
        text.setAttribute("y", height - 4);
        text.setAttribute("text-anchor", "middle");
        text.textContent = String(rows[i][0]).slice(0, 12);
        svg.appendChild(text);
      }
    });
  }
  return svg;
}

function renderResult(result) {
  const node = card(result.name);
  node.dataset.version = result.version;
  node.children[1].textContent =
    `v${result.version} · ${result.mode} · ${(result.duration * 1000).toFixed(1)} ms · ` +
    `${result.rows.length} rows · ${new Date(result.refreshed_at).toLocaleTimeString()}`;
  const body = node.children[2];
  body.replaceChildren();
  if (result.error) {
    const error = document.createElement("div");
    error.className = "error";
    error.textContent = `${result.error.type}: ${result.error.message}`;
    body.appendChild(error);
  }
  const picture = chart(result);
  if (picture) body.appendChild(picture);
  const table = document.createElement("table");
  table.className = "grid result";
  const head = document.createElement("tr");
  result.columns.forEach((c) => cell(head, c, "th"));
  table.appendChild(head);
  for (const values of result.rows.slice(0, 50)) {
    const row = document.createElement("tr");
    values.forEach((v) => cell(row, v));
    table.appendChild(row);
  }
  body.appendChild(table);
}

function follow(name) {
  if (streams.has(name)) return;
  const suffix = token ? "?access_token=" + encodeURIComponent(token) : "";
  const source = new EventSource(`/v1/analyses/${encodeURIComponent(name)}/events${suffix}`);
  source.addEventListener("result", (event) => renderResult(JSON.parse(event.data)));
  streams.set(name, source);
}

async function refreshAnalyses() {
  const analyses = await api("/v1/analyses");
  const names = new Set(analyses.map((a) => a.name));
  for (const [name, source] of streams) {
    if (!names.has(name)) {
      source.close();
      streams.delete(name);
      card(name).remove();
    }
  }
  for (const analysis of analyses) {
    card(analysis.name);
    follow(analysis.name);
  }
}

async function tick() {
  try {
    await Promise.all([refreshTables(), refreshAnalyses()]);
    statusLine.textContent = "live · updated " + new Date().toLocaleTimeString();
  } catch (error) {
    statusLine.textContent = "disconnected: " + error.message;
  }
}

tick();
setInterval(tick, 2000);
