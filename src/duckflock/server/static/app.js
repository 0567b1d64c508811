"use strict";
// The duckflock dashboard: a SQL box, a table browser and live analyses (define, edit,
// drop), each shown as a table and an SVG chart. Vanilla JS, no dependencies, no network
// beyond this server. The server inlines this file into index.html (no build step).

// ---------------------------------------------------------------------------------------
// settings

const POLL_MS = 2000; // tables and the analysis list are re-read this often while live
const RETRY_FIRST_MS = 500; // first reconnect attempt after the server went away…
const RETRY_CAP_MS = 10000; // …then doubling, capped here
const STREAM_RETRY_CAP_MS = 30000; // an event stream that keeps failing is retried slower
const REQUEST_TIMEOUT_MS = 20000; // a listing or health check not answered by then: offline
const ACTION_TIMEOUT_MS = 120000; // a query or a definition may take the server's time
const CHART_POINTS = 2000; // a time chart draws the newest this many rows
const CHART_BARS = 60; // a bar chart draws the first this many rows
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#d68a00", "#2f6fba", "#3a9a5b", "#8a4fbf", "#c2413b", "#1f9aa5", "#7a6a55"];

let token = new URLSearchParams(location.search).get("access_token") || "";

// ---------------------------------------------------------------------------------------
// small DOM helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function rolePill(role) {
  const pill = el("span", "role", role + " role");
  pill.dataset.role = role;
  pill.title = `needs a token with the ${role} role`;
  return pill;
}

const $ = (selector) => document.querySelector(selector);

// ---------------------------------------------------------------------------------------
// the HTTP API

class ApiError extends Error {
  constructor(status, payload) {
    const error = (payload && payload.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || "HTTPError";
  }
}

class OfflineError extends Error {}

// One request. A network failure or no answer in time (the server is gone or stuck)
// switches the page to its reconnecting state and throws OfflineError; an error answer
// throws ApiError.
async function api(path, method = "GET", body = undefined, timeout = REQUEST_TIMEOUT_MS) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const init = { method, headers, cache: "no-store", signal: AbortSignal.timeout(timeout) };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  let payload = null;
  try {
    response = await fetch(path, init);
    if (response.status !== 204) payload = await response.json().catch(() => null);
  } catch {
    connectionLost();
    throw new OfflineError("the server cannot be reached");
  }
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

function eventsUrl(name) {
  const suffix = token ? "?access_token=" + encodeURIComponent(token) : "";
  return `/v1/analyses/${encodeURIComponent(name)}/events${suffix}`;
}

// What went wrong, in words, with the role the action needs when the token was refused.
function explain(error, role) {
  if (error instanceof OfflineError) {
    return "Not done: the server cannot be reached (the dashboard is reconnecting).";
  }
  if (!(error instanceof ApiError)) return String((error && error.message) || error);
  const text = `${error.type}: ${error.message}`;
  const refused = error.status === 401 || (error.status === 403 && error.type !== "QueryRefusedError");
  return refused ? `${text} — this needs a token with the ${role} role (enter one at the top).` : text;
}

// ---------------------------------------------------------------------------------------
// the connection: live, or offline and retrying with a capped exponential backoff.
// Each failed request makes the browser itself log one line, so while offline the page
// sends exactly one request per attempt (GET /v1/health), closes its event streams (they
// would retry by themselves every few seconds) and logs nothing of its own.

const connection = {
  state: "connecting", // "connecting" | "live" | "refused" (token) | "offline"
  attempt: 0, // reconnect attempts made in this outage
  due: 0, // when the next attempt runs (ms since epoch)
  timer: 0,
  since: 0, // when the outage began
  updated: 0, // when data last arrived
  problem: "", // a refusal (401/403) from the last poll
};

function connectionLost() {
  if (connection.state === "offline") return;
  connection.state = "offline";
  connection.attempt = 0;
  connection.since = Date.now();
  clearTimeout(pollTimer);
  closeStreams();
  document.body.classList.add("stale");
  scheduleAttempt();
}

function scheduleAttempt() {
  const delay = Math.min(RETRY_CAP_MS, RETRY_FIRST_MS * 2 ** connection.attempt);
  connection.due = Date.now() + delay;
  clearTimeout(connection.timer);
  connection.timer = setTimeout(attempt, delay);
  renderConnection();
}

async function attempt() {
  clearTimeout(connection.timer);
  connection.attempt += 1;
  connection.due = 0;
  renderConnection();
  let ok = false;
  try {
    const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
    ok = (await fetch("/v1/health", { cache: "no-store", signal })).ok;
  } catch {
    ok = false; // still gone: the browser has logged the failed request once
  }
  if (connection.state !== "offline") return;
  if (!ok) {
    scheduleAttempt();
    return;
  }
  connection.state = "live";
  document.body.classList.remove("stale");
  renderConnection();
  poll();
}

function renderConnection() {
  const box = $("#connection");
  box.dataset.state = connection.state;
  box.dataset.attempt = String(connection.attempt);
  const time = (ms) => new Date(ms).toLocaleTimeString();
  let text;
  if (connection.state === "connecting") text = "connecting…";
  else if (connection.state === "live") {
    text = "live" + (connection.updated ? " · updated " + time(connection.updated) : "");
  } else if (connection.state === "refused") {
    text = "connected, but " + connection.problem;
  } else {
    const wait = Math.max(0, Math.ceil((connection.due - Date.now()) / 1000));
    text = connection.due
      ? `disconnected · retrying in ${wait} s (attempt ${connection.attempt + 1})`
      : `disconnected · retrying now (attempt ${connection.attempt})`;
  }
  $("#status").textContent = text;
  $("#retry").hidden = connection.state !== "offline";
  const banner = $("#banner");
  banner.hidden = connection.state !== "offline";
  if (connection.state === "offline") {
    const since = connection.updated ? connection.updated : connection.since;
    banner.textContent =
      `The server cannot be reached. What you see is from ${time(since)} and is not ` +
      `updating; the dashboard reconnects by itself (next try backs off up to ` +
      `${RETRY_CAP_MS / 1000} s).`;
  }
}

$("#retry").addEventListener("click", () => {
  if (connection.state === "offline" && connection.due) attempt();
});

// ---------------------------------------------------------------------------------------
// values: column kinds, numbers, times

function kindOf(type) {
  if (/^(timestamp|date32|date64)/.test(type)) return "time";
  if (/^(u?int\d+|float|double|halffloat|decimal\d*\(|duration)/.test(type)) return "number";
  return "other";
}

const integers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const fractions = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
const smalls = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

function formatNumber(value) {
  if (typeof value === "string") {
    // decimals arrive as exact strings: group the integer part, keep every digit
    const match = /^(-?)(\d+)(\.\d+)?$/.exec(value);
    return match ? match[1] + integers.format(BigInt(match[2])) + (match[3] || "") : value;
  }
  if (Number.isInteger(value)) return integers.format(value);
  return Math.abs(value) >= 1 ? fractions.format(value) : smalls.format(value);
}

function formatTick(value, step) {
  if (Math.abs(value) >= 10000) return compact.format(value);
  const digits = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
  return value.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function toNumber(value) {
  if (value === null || value === undefined || value === "") return null;
  const number = Number(value);
  return Number.isFinite(number) ? number : null;
}

// Times arrive as ISO strings. Without an offset they are shown as written, so they are
// read as UTC and the time axis is labelled in UTC.
function parseTime(value) {
  if (typeof value !== "string") return NaN;
  let text = value.replace(" ", "T").replace(/(\.\d{3})\d+/, "$1");
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) text += "T00:00:00Z";
  else if (!/(Z|[+-]\d{2}(:?\d{2})?)$/.test(text)) text += "Z";
  return Date.parse(text);
}

function formatCell(value, kind) {
  if (value === null || value === undefined) return "NULL";
  if (kind === "number") return formatNumber(value);
  if (kind === "time" && typeof value === "string") return value.replace("T", " ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// ---------------------------------------------------------------------------------------
// charts

// Which column is the key (x axis) and which are values: a time column first, else the
// first non-numeric one; when all columns are numbers, the first labels the others.
function describe(data) {
  const kinds = data.types.map(kindOf);
  let key = kinds.indexOf("time");
  if (key < 0) key = kinds.indexOf("other");
  if (key < 0 && kinds.length > 1) key = 0;
  const numeric = [];
  kinds.forEach((kind, i) => kind === "number" && i !== key && numeric.push(i));
  const keyKind = key < 0 ? "index" : kinds[key] === "time" ? "time" : "category";
  return { kinds, key, keyKind, numeric };
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
}

function niceTicks(lo, hi, count, minStep = 0) {
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  const step = Math.max(minStep, niceStep(hi - lo, count));
  const start = Math.floor(lo / step) * step;
  // rounded to the step's digits, so 0.1 + 0.2 is drawn as 0.3
  const digits = Math.max(0, 1 - Math.floor(Math.log10(step)));
  const at = (i) => Number((start + i * step).toFixed(digits)) || 0;
  const ticks = [];
  for (let i = 0; at(i) <= hi + step * 1e-9; i++) ticks.push(at(i));
  if (ticks[ticks.length - 1] < hi - step * 1e-9) ticks.push(at(ticks.length));
  return { ticks, step };
}

const SECOND = 1000, MINUTE = 60 * SECOND, HOUR = 60 * MINUTE, DAY = 24 * HOUR;
const TIME_STEPS = [10, 20, 50, 100, 200, 500]
  .concat([1, 2, 5, 10, 15, 30].map((n) => n * SECOND))
  .concat([1, 2, 5, 10, 15, 30].map((n) => n * MINUTE))
  .concat([1, 2, 3, 6, 12].map((n) => n * HOUR))
  .concat([1, 2, 7].map((n) => n * DAY));

// Tick times (UTC) between lo and hi: round seconds/minutes/hours/days, then months.
function timeTicks(lo, hi, count) {
  const step = TIME_STEPS.find((s) => (hi - lo) / s <= count);
  const ticks = [];
  if (step) {
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) ticks.push(t);
    return { ticks, step };
  }
  const months = [1, 2, 3, 6, 12, 24, 60, 120].find((m) => (hi - lo) / (m * 30.44 * DAY) <= count) || 240;
  const first = new Date(lo);
  let index = Math.ceil((first.getUTCFullYear() * 12 + first.getUTCMonth()) / months) * months;
  for (;;) {
    const t = Date.UTC(Math.floor(index / 12), index % 12, 1);
    if (t > hi) break;
    if (t >= lo) ticks.push(t);
    index += months;
  }
  return { ticks, step: months * 30 * DAY };
}

function timeLabel(t, step, previous) {
  const iso = new Date(t).toISOString();
  if (step >= 360 * DAY) return iso.slice(0, 4);
  if (step >= 28 * DAY) return iso.slice(0, 7);
  if (step >= DAY) return iso.slice(0, 10);
  const clock = iso.slice(11, step < SECOND ? 23 : step < MINUTE ? 19 : 16);
  const sameDay = previous !== undefined && new Date(previous).toISOString().slice(0, 10) === iso.slice(0, 10);
  return sameDay ? clock : `${iso.slice(5, 10)} ${clock}`;
}

function clip(text, length) {
  return text.length > length ? text.slice(0, length - 1) + "…" : text;
}

// An SVG chart of the selected value columns against the key: a line chart on a time
// axis for a time key, grouped bars otherwise. Axes, grid, tick labels, axis titles.
function drawChart(data, model, series, width, height) {
  const isTime = model.keyKind === "time";
  const svg = svgEl("svg", {
    width,
    height,
    class: "chart " + (isTime ? "line-chart" : "bar-chart"),
    role: "img",
    "aria-label": `${series.map((i) => data.columns[i]).join(", ")} by ${model.key < 0 ? "row" : data.columns[model.key]}`,
  });
  const margin = { top: 10, right: 18, bottom: 46, left: 66 };
  const plotW = Math.max(40, width - margin.left - margin.right);
  const plotH = Math.max(40, height - margin.top - margin.bottom);
  const colorOf = (i) => PALETTE[model.numeric.indexOf(i) % PALETTE.length];

  // rows to draw: a time chart sorts by time and keeps the newest; bars keep row order
  let rows = data.rows;
  let keys;
  if (isTime) {
    const timed = rows.map((row) => [parseTime(row[model.key]), row]).filter(([t]) => !Number.isNaN(t));
    timed.sort((a, b) => a[0] - b[0]);
    const kept = timed.slice(-CHART_POINTS);
    keys = kept.map(([t]) => t);
    rows = kept.map(([, row]) => row);
  } else {
    rows = rows.slice(0, CHART_BARS);
    keys = rows.map((row, i) => (model.key < 0 ? String(i + 1) : formatCell(row[model.key], model.kinds[model.key])));
  }
  const values = series.map((i) => rows.map((row) => toNumber(row[i])));
  const present = values.flat().filter((v) => v !== null);
  if (rows.length === 0 || present.length === 0) {
    svg.setAttribute("height", 40);
    svg.appendChild(svgEl("text", { x: 8, y: 24, class: "empty" }, "nothing to chart: no numeric values"));
    return svg;
  }
  let lo = Math.min(...present), hi = Math.max(...present);
  if (!isTime) [lo, hi] = [Math.min(lo, 0), Math.max(hi, 0)]; // bars start at zero
  // counts and other integers get whole-number ticks
  const whole = series.every((i) => /^u?int/.test(data.types[i]));
  const yTicks = niceTicks(lo, hi, Math.max(2, Math.floor(plotH / 36)), whole ? 1 : 0);
  const yLo = yTicks.ticks[0], yHi = yTicks.ticks[yTicks.ticks.length - 1];
  const y = (v) => margin.top + plotH - ((v - yLo) / (yHi - yLo || 1)) * plotH;

  const grid = svgEl("g", { class: "y-axis" });
  for (const tick of yTicks.ticks) {
    grid.appendChild(svgEl("line", { class: "grid", x1: margin.left, x2: margin.left + plotW, y1: y(tick), y2: y(tick) }));
    grid.appendChild(svgEl("text", { x: margin.left - 6, y: y(tick) + 3, "text-anchor": "end", class: "tick" }, formatTick(tick, yTicks.step)));
  }
  svg.appendChild(grid);
  const yTitle = series.length === 1 ? data.columns[series[0]] : "value";
  svg.appendChild(svgEl("text", {
    class: "axis-title y-title",
    transform: `translate(12 ${margin.top + plotH / 2}) rotate(-90)`,
    "text-anchor": "middle",
  }, clip(yTitle, 28)));

  const xAxis = svgEl("g", { class: "x-axis" });
  const baseline = margin.top + plotH;
  xAxis.appendChild(svgEl("line", { class: "axis", x1: margin.left, x2: margin.left + plotW, y1: baseline, y2: baseline }));
  xAxis.appendChild(svgEl("line", { class: "axis", x1: margin.left, x2: margin.left, y1: margin.top, y2: baseline }));
  const keyName = model.key < 0 ? "row" : data.columns[model.key];
  svg.appendChild(svgEl("text", {
    class: "axis-title x-title",
    x: margin.left + plotW / 2,
    y: height - 6,
    "text-anchor": "middle",
  }, clip(isTime ? keyName + " (UTC)" : keyName, 60)));

  if (isTime) {
    let tLo = keys[0], tHi = keys[keys.length - 1];
    if (tLo === tHi) [tLo, tHi] = [tLo - MINUTE, tHi + MINUTE];
    const x = (t) => margin.left + ((t - tLo) / (tHi - tLo)) * plotW;
    const ticks = timeTicks(tLo, tHi, Math.max(3, Math.floor(plotW / 95)));
    ticks.ticks.forEach((t, i) => {
      xAxis.appendChild(svgEl("line", { class: "tick-mark", x1: x(t), x2: x(t), y1: baseline, y2: baseline + 4 }));
      xAxis.appendChild(svgEl("text", { class: "tick time-tick", x: x(t), y: baseline + 16, "text-anchor": "middle" },
        timeLabel(t, ticks.step, ticks.ticks[i - 1])));
    });
    series.forEach((column, s) => {
      const color = colorOf(column);
      // a NULL value breaks the line instead of dropping it to zero
      const segments = [[]];
      values[s].forEach((v, i) => {
        if (v === null) segments.push([]);
        else segments[segments.length - 1].push(`${x(keys[i]).toFixed(1)},${y(v).toFixed(1)}`);
      });
      for (const points of segments.filter((p) => p.length)) {
        svg.appendChild(svgEl("polyline", { class: "line", points: points.join(" "), stroke: color, "data-column": data.columns[column] }));
      }
      if (rows.length <= 80) {
        values[s].forEach((v, i) => {
          if (v === null) return;
          const dot = svgEl("circle", { class: "dot", cx: x(keys[i]), cy: y(v), r: 2.5, fill: color });
          dot.appendChild(svgEl("title", {}, `${data.columns[column]} at ${new Date(keys[i]).toISOString()}: ${formatNumber(rows[i][column])}`));
          svg.appendChild(dot);
        });
      }
    });
  } else {
    const band = plotW / rows.length;
    const barW = Math.max(1, (band * 0.8) / series.length);
    const labelEvery = Math.max(1, Math.ceil(rows.length / Math.max(1, Math.floor(plotW / 54))));
    rows.forEach((row, i) => {
      series.forEach((column, s) => {
        const v = values[s][i];
        if (v === null) return;
        const left = margin.left + band * i + band * 0.1 + barW * s;
        const bar = svgEl("rect", {
          class: "bar",
          x: left.toFixed(1),
          width: barW.toFixed(1),
          y: Math.min(y(v), y(0)).toFixed(1),
          height: Math.max(0.5, Math.abs(y(0) - y(v))).toFixed(1),
          fill: colorOf(column),
          "data-column": data.columns[column],
        });
        bar.appendChild(svgEl("title", {}, `${keys[i]} · ${data.columns[column]}: ${formatNumber(row[column])}`));
        svg.appendChild(bar);
      });
      if (i % labelEvery === 0) {
        const label = svgEl("text", { class: "tick", x: margin.left + band * (i + 0.5), y: baseline + 16, "text-anchor": "middle" },
          clip(keys[i], Math.max(4, Math.floor((band * labelEvery) / 7))));
        label.appendChild(svgEl("title", {}, keys[i]));
        xAxis.appendChild(label);
      }
    });
  }
  svg.appendChild(xAxis);
  return svg;
}

// ---------------------------------------------------------------------------------------
// a result view: legend (pick the numeric columns to chart), chart, table

const views = new Set();

class View {
  constructor(container, { maxRows, height }) {
    this.container = container;
    this.maxRows = maxRows;
    this.height = height;
    this.data = null;
    this.selected = null; // names of the charted columns; null: the default
    this.signature = "";
    views.add(this);
  }

  show(data) {
    const signature = JSON.stringify([data.columns, data.types]);
    if (signature !== this.signature) this.selected = null; // a new shape: default columns
    this.signature = signature;
    this.data = data;
    this.render();
  }

  render() {
    const data = this.data;
    if (!data) return;
    const model = describe(data);
    const names = model.numeric.map((i) => data.columns[i]);
    if (!this.selected || !names.some((n) => this.selected.has(n))) this.selected = new Set(names.slice(0, 1));
    const chartBox = el("div", "chart-box");
    if (names.length && data.rows.length) {
      const legend = el("div", "legend");
      legend.appendChild(el("span", "muted", "chart:"));
      model.numeric.forEach((column, n) => {
        const label = el("label", "series");
        const box = el("input");
        box.type = "checkbox";
        box.checked = this.selected.has(data.columns[column]);
        box.dataset.column = data.columns[column];
        box.addEventListener("change", () => {
          if (box.checked) this.selected.add(box.dataset.column);
          else this.selected.delete(box.dataset.column);
          this.renderChart(chartBox, model);
        });
        const swatch = el("span", "swatch");
        swatch.style.background = PALETTE[n % PALETTE.length];
        label.append(box, swatch, document.createTextNode(data.columns[column]));
        legend.appendChild(label);
      });
      chartBox.appendChild(legend);
      chartBox.appendChild(el("div", "plot"));
    }
    this.container.replaceChildren(chartBox, this.table(model));
    if (names.length && data.rows.length) this.renderChart(chartBox, model);
  }

  renderChart(chartBox, model) {
    const plot = chartBox.querySelector(".plot");
    const series = model.numeric.filter((i) => this.selected.has(this.data.columns[i]));
    if (series.length === 0) {
      plot.replaceChildren(el("p", "muted", "Tick a column above to chart it."));
      return;
    }
    const width = Math.max(320, Math.floor(this.container.clientWidth || 600));
    const parts = [drawChart(this.data, model, series, width, this.height)];
    const limit = model.keyKind === "time" ? CHART_POINTS : CHART_BARS;
    if (this.data.rows.length > limit) {
      const which = model.keyKind === "time" ? "newest" : "first";
      parts.push(el("div", "chart-note muted", `chart: the ${which} ${limit.toLocaleString()} of ${this.data.rows.length.toLocaleString()} rows`));
    }
    plot.replaceChildren(...parts);
  }

  table(model) {
    const data = this.data;
    let rows = data.rows;
    const newestFirst = model.keyKind === "time";
    if (newestFirst) {
      // the newest rows on top, whatever order the SQL gave (rows without a time last)
      const time = (row) => {
        const t = parseTime(row[model.key]);
        return Number.isNaN(t) ? -Infinity : t;
      };
      rows = rows.slice().sort((a, b) => time(b) - time(a));
    }
    const wrap = el("div", "table-wrap");
    const shown = rows.slice(0, this.maxRows);
    const note = [`${data.rows.length.toLocaleString()} row${data.rows.length === 1 ? "" : "s"}`];
    if (shown.length < rows.length) note.push(`showing ${shown.length.toLocaleString()}`);
    if (newestFirst) note.push(`newest first by ${data.columns[model.key]}`);
    if (data.truncated) note.push("cut at the server's row cap");
    wrap.appendChild(el("div", "table-note muted", note.join(" · ")));
    const table = el("table", "grid result");
    const head = el("tr");
    data.columns.forEach((name, i) => {
      const th = el("th", model.kinds[i] === "number" ? "num" : "", name);
      if (newestFirst && i === model.key) {
        const arrow = el("span", "sorted", " ↓");
        arrow.title = "newest first";
        th.appendChild(arrow);
      }
      th.appendChild(el("span", "type", data.types[i].replace(/^timestamp\[us(, tz=(.*))?\]$/, "timestamp $2").trim()));
      head.appendChild(th);
    });
    const thead = el("thead");
    thead.appendChild(head);
    const tbody = el("tbody");
    for (const values of shown) {
      const row = el("tr");
      values.forEach((value, i) => {
        const kind = model.kinds[i];
        const td = el("td", kind === "number" ? "num" : "", formatCell(value, kind));
        if (value === null) td.classList.add("null");
        else if (kind === "number") td.title = String(value);
        row.appendChild(td);
      });
      tbody.appendChild(row);
    }
    table.append(thead, tbody);
    wrap.appendChild(table);
    return wrap;
  }
}

let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => views.forEach((view) => view.render()), 150);
});

function errorBox(text) {
  return el("div", "error", text);
}

// ---------------------------------------------------------------------------------------
// the SQL box (POST /v1/query, read role)

const queryView = new View($("#query-result"), { maxRows: 500, height: 260 });

async function runQuery() {
  const sql = $("#sql").value.trim();
  if (!sql) return;
  const run = $("#run");
  run.disabled = true;
  $("#query-meta").textContent = "running…";
  const started = performance.now();
  try {
    const data = await api("/v1/query", "POST", { sql }, ACTION_TIMEOUT_MS);
    $("#query-meta").textContent = `${Math.round(performance.now() - started).toLocaleString()} ms`;
    queryView.show(data);
  } catch (error) {
    $("#query-meta").textContent = "";
    queryView.data = null;
    $("#query-result").replaceChildren(errorBox(explain(error, "read")));
  } finally {
    run.disabled = false;
  }
}

$("#query-form").addEventListener("submit", (event) => {
  event.preventDefault();
  runQuery();
});
$("#sql").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    runQuery();
  }
});

// ---------------------------------------------------------------------------------------
// tables (GET /v1/tables) and a preview of the newest rows (POST /v1/query)

const quoteIdent = (name) => '"' + String(name).replaceAll('"', '""') + '"';
const plainIdent = (name) => (/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : quoteIdent(name));

// The table's own name: /v1/tables gives a display name ("events", or schema.table with
// each part quoted when it needs to be) and the schema, so the schema prefix is removed.
function tableName(table) {
  if (typeof table.table === "string") return table.table;
  if (table.schema === "main" || table.schema === undefined) return table.name;
  const prefix = plainIdent(table.schema) + ".";
  if (!table.name.startsWith(prefix)) return table.name;
  const rest = table.name.slice(prefix.length);
  return rest.startsWith('"') && rest.endsWith('"') ? rest.slice(1, -1).replaceAll('""', '"') : rest;
}

function previewSql(table) {
  const target = quoteIdent(table.schema || "main") + "." + quoteIdent(tableName(table));
  // rowid is the insertion order; a column of that name would shadow it
  const ordered = !table.columns.some((c) => c.name.toLowerCase() === "rowid");
  return `SELECT * FROM ${target}${ordered ? " ORDER BY rowid DESC" : ""} LIMIT 50`;
}

const tables = new Map(); // name -> the latest listing entry
const previous = new Map(); // name -> {rows, at}: for rows per second
const previewView = new View($("#preview-result"), { maxRows: 50, height: 220 });
let previewing = null; // the name of the table being previewed

async function refreshTables() {
  const listing = await api("/v1/tables");
  const now = performance.now();
  const body = $("#tables tbody");
  body.replaceChildren();
  tables.clear();
  for (const table of listing) {
    tables.set(table.name, table);
    const row = el("tr");
    row.dataset.table = table.name;
    row.tabIndex = 0;
    row.title = table.columns.map((c) => `${c.name} ${c.type}`).join("\n");
    if (table.name === previewing) row.classList.add("selected");
    const before = previous.get(table.name);
    const rate = before ? ((table.rows - before.rows) * 1000) / (now - before.at) : 0;
    previous.set(table.name, { rows: table.rows, at: now });
    row.append(
      el("td", "name", table.name),
      el("td", "rows num", table.rows.toLocaleString()),
      el("td", "rate num", Math.max(0, Math.round(rate)).toLocaleString()),
    );
    row.addEventListener("click", () => preview(table.name));
    row.addEventListener("keydown", (event) => event.key === "Enter" && preview(table.name));
    body.appendChild(row);
  }
}

async function preview(name) {
  const table = tables.get(name);
  if (!table) return;
  previewing = name;
  document.querySelectorAll("#tables tr.selected").forEach((row) => row.classList.remove("selected"));
  const row = document.querySelector(`#tables tr[data-table="${CSS.escape(name)}"]`);
  if (row) row.classList.add("selected");
  const sql = previewSql(table);
  const panel = $("#preview-panel");
  panel.hidden = false;
  panel.dataset.table = name;
  $("#preview-name").textContent = name;
  $("#preview-sql").textContent = sql;
  $("#preview-columns").textContent =
    `${table.rows.toLocaleString()} rows · ` + table.columns.map((c) => `${c.name} ${c.type}`).join(", ");
  try {
    previewView.show(await api("/v1/query", "POST", { sql }, ACTION_TIMEOUT_MS));
  } catch (error) {
    previewView.data = null;
    $("#preview-result").replaceChildren(errorBox(explain(error, "read")));
  }
}

$("#preview-refresh").addEventListener("click", () => previewing && preview(previewing));
$("#preview-close").addEventListener("click", () => {
  previewing = null;
  $("#preview-panel").hidden = true;
  document.querySelectorAll("#tables tr.selected").forEach((row) => row.classList.remove("selected"));
});
$("#preview-edit").addEventListener("click", () => {
  $("#sql").value = $("#preview-sql").textContent;
  $("#sql").focus();
  $("#query-panel").scrollIntoView({ block: "start" });
});

// ---------------------------------------------------------------------------------------
// analyses: cards fed by server-sent events; define, edit, drop (admin role)

const cards = new Map(); // name -> {node, view, status}
const streams = new Map(); // name -> EventSource
const streamFailures = new Map(); // name -> {count, until}: a failing stream backs off

function seconds(value) {
  return `${Number(value).toLocaleString(undefined, { maximumFractionDigits: 3 })} s`;
}

function schedule(status) {
  const parts = [];
  if (status.every) parts.push("every " + seconds(status.every));
  if (status.on_change) {
    parts.push("on new data" + (status.min_interval ? ` (≥ ${seconds(status.min_interval)} apart)` : ""));
  }
  if (status.incremental !== undefined) parts.push(status.incremental ? "incremental" : "full re-run");
  return parts.join(" · ");
}

function ensureCard(name) {
  let card = cards.get(name);
  if (card) return card;
  const node = el("div", "card");
  node.dataset.name = name;
  const head = el("div", "card-head");
  const edit = el("button", "edit", "Edit");
  edit.type = "button";
  edit.addEventListener("click", () => openForm(cards.get(name) && cards.get(name).status));
  const drop = el("button", "drop", "Drop");
  drop.type = "button";
  drop.addEventListener("click", () => dropAnalysis(name, drop));
  const actions = el("span", "card-actions");
  actions.append(edit, drop, rolePill("admin"));
  head.append(el("h3", "", name), actions);
  const body = el("div", "card-body");
  node.append(
    head,
    el("div", "schedule muted"),
    el("div", "meta"),
    el("div", "reason"),
    el("div", "card-message"),
    body,
  );
  $("#analyses").appendChild(node);
  card = { node, view: new View(body, { maxRows: 50, height: 190 }), status: null };
  cards.set(name, card);
  return card;
}

function removeCard(name) {
  const card = cards.get(name);
  if (card) {
    views.delete(card.view);
    card.node.remove();
  }
  cards.delete(name);
  const source = streams.get(name);
  if (source) source.close();
  streams.delete(name);
  streamFailures.delete(name);
}

function renderResult(result) {
  const card = cards.get(result.name);
  if (!card) return;
  const node = card.node;
  node.dataset.version = result.version;
  node.querySelector(".meta").textContent =
    `v${result.version} · ${result.mode} · ${(result.duration * 1000).toFixed(1)} ms · ` +
    `${result.rows.length.toLocaleString()} rows · ${new Date(result.refreshed_at).toLocaleTimeString()}`;
  // the mode's why: what an incremental run folded in, or what made it a full run
  const reason = node.querySelector(".reason");
  reason.textContent = result.reason || "";
  reason.dataset.mode = result.mode;
  const message = node.querySelector(".card-message");
  message.replaceChildren();
  if (result.error) message.appendChild(errorBox(`${result.error.type}: ${result.error.message}`));
  card.view.show(result);
}

function follow(name) {
  if (streams.has(name) || connection.state === "offline") return;
  const failed = streamFailures.get(name);
  if (failed && Date.now() < failed.until) return;
  const source = new EventSource(eventsUrl(name));
  source.addEventListener("open", () => streamFailures.delete(name));
  source.addEventListener("result", (event) => renderResult(JSON.parse(event.data)));
  source.addEventListener("error", () => {
    // An EventSource retries on its own every few seconds, and the browser logs each
    // failure: close it instead; the next poll follows again (backing off) if the
    // analysis still exists and the server answers.
    source.close();
    if (streams.get(name) === source) streams.delete(name);
    const count = ((streamFailures.get(name) || {}).count || 0) + 1;
    const wait = Math.min(STREAM_RETRY_CAP_MS, RETRY_FIRST_MS * 2 ** count);
    streamFailures.set(name, { count, until: Date.now() + wait });
    checkServer();
  });
  streams.set(name, source);
}

function closeStreams() {
  for (const source of streams.values()) source.close();
  streams.clear();
  streamFailures.clear();
}

let checking = false;

// A stream broke: is the server gone? One request, however many streams broke at once.
async function checkServer() {
  if (checking || connection.state === "offline") return;
  checking = true;
  try {
    await api("/v1/health");
  } catch {
    // api() has switched to the reconnecting state if the server is gone
  } finally {
    checking = false;
  }
}

async function refreshAnalyses() {
  const list = await api("/v1/analyses");
  const names = new Set(list.map((a) => a.name));
  for (const name of [...cards.keys()]) if (!names.has(name)) removeCard(name);
  for (const status of list) {
    const card = ensureCard(status.name);
    card.status = status;
    card.node.querySelector(".schedule").textContent = schedule(status);
    follow(status.name);
  }
  $("#no-analyses").hidden = list.length > 0;
}

// the define/edit form
const form = $("#analysis-form");

function say(text, ok) {
  const message = $("#analysis-message");
  message.textContent = text;
  message.className = ok ? "ok" : "error";
  message.hidden = !text;
}

function openForm(status) {
  form.hidden = false;
  form.dataset.mode = status ? "edit" : "new";
  $("#analysis-name").value = status ? status.name : "";
  $("#analysis-name").readOnly = Boolean(status);
  $("#analysis-sql").value = status ? status.sql : "";
  $("#analysis-every").value = status && status.every ? status.every : "";
  $("#analysis-on-change").checked = status ? Boolean(status.on_change) : true;
  $("#analysis-min-interval").value = status ? status.min_interval : 0.1;
  $("#analysis-save").textContent = status ? "Save" : "Define";
  say("", true);
  (status ? $("#analysis-sql") : $("#analysis-name")).focus();
  form.scrollIntoView({ block: "nearest" });
}

$("#new-analysis").addEventListener("click", () => openForm(null));
$("#analysis-cancel").addEventListener("click", () => {
  form.hidden = true;
  say("", true);
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("#analysis-name").value.trim();
  const every = $("#analysis-every").value.trim();
  const body = {
    sql: $("#analysis-sql").value,
    on_change: $("#analysis-on-change").checked,
    min_interval: Number($("#analysis-min-interval").value || 0),
  };
  if (every) body.every = Number(every);
  const save = $("#analysis-save");
  save.disabled = true;
  try {
    await api(`/v1/analyses/${encodeURIComponent(name)}`, "PUT", body, ACTION_TIMEOUT_MS);
    form.hidden = true;
    say(`${form.dataset.mode === "edit" ? "Saved" : "Defined"} analysis “${name}”.`, true);
    await refreshAnalyses();
  } catch (error) {
    say(explain(error, "admin"), false);
  } finally {
    save.disabled = false;
  }
});

async function dropAnalysis(name, button) {
  // two clicks: the first arms the button for a few seconds
  if (!button.classList.contains("armed")) {
    button.classList.add("armed");
    button.textContent = "Confirm drop";
    setTimeout(() => {
      button.classList.remove("armed");
      button.textContent = "Drop";
    }, 4000);
    return;
  }
  try {
    await api(`/v1/analyses/${encodeURIComponent(name)}`, "DELETE");
    removeCard(name);
    say(`Dropped analysis “${name}”.`, true);
    $("#no-analyses").hidden = cards.size > 0;
  } catch (error) {
    const card = cards.get(name);
    if (card) card.node.querySelector(".card-message").replaceChildren(errorBox(explain(error, "admin")));
  }
}

// ---------------------------------------------------------------------------------------
// the poll loop, and the token box

let pollTimer = 0;

// a DuckLake: its snapshot id and maintenance state, from /v1/stats ("lake"). Asked
// once; then on each poll only when the server is in front of a lake.
let lakeServer = null;

async function refreshLake() {
  if (lakeServer === false) return;
  const stats = await api("/v1/stats");
  lakeServer = Boolean(stats.lake);
  const box = $("#lake");
  box.hidden = !lakeServer;
  if (!lakeServer) return;
  const lake = stats.lake;
  const last = lake.last_maintenance;
  let text = `lake snapshot ${lake.snapshot ?? "?"}`;
  text += lake.poll_error ? ` · catalog unreachable: ${lake.poll_error}` : "";
  text += lake.maintaining ? " · maintenance running" : ` · ${lake.maintenance_runs} maintenance runs`;
  if (last) {
    text += ` · last ${new Date(last.at).toLocaleTimeString()}: ${last.files_before} → ${last.files_after} files`;
  }
  if (lake.maintenance_error) text += ` · error: ${lake.maintenance_error}`;
  box.textContent = text;
}

async function poll() {
  clearTimeout(pollTimer);
  if (document.hidden && connection.state === "live") {
    // a background tab asks nothing; it catches up when shown (visibilitychange)
    pollTimer = setTimeout(poll, POLL_MS);
    return;
  }
  try {
    await Promise.all([refreshTables(), refreshAnalyses(), refreshLake()]);
    connection.state = "live";
    connection.updated = Date.now();
    connection.problem = "";
  } catch (error) {
    if (error instanceof OfflineError || connection.state === "offline") return; // attempts take over
    connection.state = "refused";
    connection.problem = explain(error, "read");
  }
  renderConnection();
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, POLL_MS);
}

$("#token").value = token;
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("#token").value.trim();
  const url = new URL(location.href);
  if (token) url.searchParams.set("access_token", token);
  else url.searchParams.delete("access_token");
  history.replaceState(null, "", url);
  closeStreams();
  if (connection.state !== "offline") poll();
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && connection.state !== "offline") poll();
});
setInterval(() => connection.state === "offline" && renderConnection(), 1000);
renderConnection();
poll();
