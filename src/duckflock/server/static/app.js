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

const ROW_NUMBER = "#row"; // the x axis choice "row number"
const ID_LIKE = /^(id|rowid|.+_id)$/i; // identifiers: never charted by default

// Which column is the key (x axis) and which are values. Chosen by the user (``x``: a
// column name, or ROW_NUMBER), else a time column first, else the first non-numeric
// one; when all columns are numbers, the first labels the others.
function describe(data, x = null) {
  const kinds = data.types.map(kindOf);
  let key;
  if (x === ROW_NUMBER) key = -1;
  else if (x !== null && data.columns && data.columns.includes(x)) key = data.columns.indexOf(x);
  else {
    key = kinds.indexOf("time");
    if (key < 0) key = kinds.indexOf("other");
    if (key < 0 && kinds.length > 1) key = 0;
  }
  const numeric = [];
  kinds.forEach((kind, i) => kind === "number" && i !== key && numeric.push(i));
  const keyKind = key < 0 ? "index" : kinds[key] === "time" ? "time" : "category";
  return { kinds, key, keyKind, numeric };
}

// The column charted by default: the first number that is not an identifier (an `id`
// over time says nothing), else the first number.
function defaultSeries(names) {
  return names.find((name) => !ID_LIKE.test(name)) ?? names[0];
}

// ---------------------------------------------------------------------------------------
// sorting and filtering what is shown (in the page; exports come from the server)

// numbers by value, times by instant, text by code point (DuckDB's default collation,
// so a column sorts as ORDER BY … NULLS LAST sorts it)
function compareValues(a, b, kind) {
  if (kind === "number") {
    const x = toNumber(a), y = toNumber(b);
    if (x !== null && y !== null) return x - y;
  } else if (kind === "time") {
    const x = parseTime(a), y = parseTime(b);
    if (!Number.isNaN(x) && !Number.isNaN(y)) return x - y;
  }
  const x = formatCell(a, kind), y = formatCell(b, kind);
  return x < y ? -1 : x > y ? 1 : 0;
}

// rows sorted by the column at ``index`` (``dir`` 1 up, -1 down); NULLs last either way,
// ties keep their order
function sortRows(rows, index, kind, dir) {
  const isNull = (v) => v === null || v === undefined;
  return rows
    .map((row, i) => [row, i])
    .sort(([a, i], [b, j]) => {
      const x = a[index], y = b[index];
      if (isNull(x) || isNull(y)) return isNull(x) && isNull(y) ? i - j : isNull(x) ? 1 : -1;
      return dir * compareValues(x, y, kind) || i - j;
    })
    .map(([row]) => row);
}

// rows with ``text`` in a cell, as shown or as sent (so 1234 finds "1,234")
function filterRows(rows, kinds, text) {
  const needle = text.trim().toLowerCase();
  if (!needle) return rows;
  return rows.filter((row) =>
    row.some((value, i) => {
      if (value === null || value === undefined) return "null".includes(needle);
      const raw = typeof value === "object" ? JSON.stringify(value) : String(value);
      return raw.toLowerCase().includes(needle) || formatCell(value, kinds[i]).toLowerCase().includes(needle);
    }),
  );
}

// a click, or Enter or Space from the keyboard (a header is focusable)
function onActivate(node, action) {
  node.tabIndex = 0;
  node.addEventListener("click", action);
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      action();
    }
  });
}

// A header that sorts its table: the arrow shows the order, a click asks for the other.
function sortHeader(th, dir, auto) {
  th.classList.add("sortable");
  th.setAttribute("aria-sort", dir === 0 ? "none" : dir > 0 ? "ascending" : "descending");
  th.title = dir === 0 ? "click to sort by this column" : "click to reverse the order";
  if (dir !== 0) {
    const arrow = el("span", "sorted", dir > 0 ? " ↑" : " ↓");
    arrow.title = auto ? "newest first" : dir > 0 ? "ascending" : "descending";
    th.insertBefore(arrow, th.querySelector(".type"));
  }
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
// a result view: a toolbar (filter, axes, export), the chart with its legend (pick the
// numeric columns to chart), the table (click a header to sort)

const views = new Set();
const EXPORTS = {
  csv: { type: "text/csv", label: "CSV", suffix: "csv" },
  parquet: { type: "application/vnd.apache.parquet", label: "Parquet", suffix: "parquet" },
};

class View {
  // ``exporter``: () => {path, method, body, name} of the server request that gives the
  // whole result (in any format, by Accept); none: no export buttons
  constructor(container, { maxRows, height, exporter = null, allSeries = false }) {
    this.container = container;
    this.maxRows = maxRows;
    this.height = height;
    this.exporter = exporter;
    this.allSeries = allSeries; // chart every number column by default (up to the palette)
    this.data = null;
    this.selected = null; // names of the charted columns; null: the default
    this.x = null; // the x axis: a column name or ROW_NUMBER; null: the automatic choice
    this.sort = null; // {column, dir}: the user's order; null: the default
    this.filter = "";
    this.signature = "";
    this.toolbar = el("div", "toolbar");
    this.toolbar.hidden = true;
    const filter = el("input", "filter");
    filter.type = "search";
    filter.placeholder = "filter rows";
    filter.title = "Show only the rows with this text in a cell (in the chart too); exports hold the whole result";
    filter.setAttribute("aria-label", "filter rows");
    filter.addEventListener("input", () => {
      this.filter = filter.value;
      this.render();
    });
    this.xSelect = el("select", "x-select");
    this.xSelect.title = "the chart's x axis";
    this.xSelect.addEventListener("change", () => {
      this.x = this.xSelect.value;
      this.render();
    });
    this.ySelect = el("select", "y-select");
    this.ySelect.title = "the chart's y axis (tick more columns below the chart to add them)";
    this.ySelect.addEventListener("change", () => {
      if (this.ySelect.value) this.selected = new Set([this.ySelect.value]);
      this.render();
    });
    const axes = el("span", "axes");
    const xLabel = el("label", "", "x ");
    xLabel.appendChild(this.xSelect);
    const yLabel = el("label", "", "y ");
    yLabel.appendChild(this.ySelect);
    axes.append(xLabel, yLabel);
    this.toolbar.append(filter, axes);
    if (exporter) {
      const exports = el("span", "exports");
      exports.appendChild(el("span", "muted", "export"));
      for (const [format, spec] of Object.entries(EXPORTS)) {
        const button = el("button", "export-" + format, spec.label);
        button.type = "button";
        button.title = `Download the whole result as ${spec.label}, made by the server (not only the rows shown; up to its row and byte caps)`;
        button.addEventListener("click", () => this.export(format, button));
        exports.appendChild(button);
      }
      this.exportNote = el("span", "export-note muted");
      exports.appendChild(this.exportNote);
      this.toolbar.appendChild(exports);
    }
    this.message = el("div", "view-message");
    this.chartBox = el("div", "chart-box");
    this.tableBox = el("div", "table-box");
    container.replaceChildren(this.toolbar, this.message, this.chartBox, this.tableBox);
    views.add(this);
  }

  show(data) {
    const signature = JSON.stringify([data.columns, data.types]);
    if (signature !== this.signature) {
      // a new shape: default columns and axes; a sort by a column that is gone ends
      this.selected = null;
      this.x = null;
      if (this.sort && !data.columns.includes(this.sort.column)) this.sort = null;
    }
    this.signature = signature;
    this.data = data;
    this.message.replaceChildren();
    this.render();
  }

  // an error instead of a result: the last result goes
  error(text) {
    this.data = null;
    this.signature = "";
    this.toolbar.hidden = true;
    this.message.replaceChildren(errorBox(text));
    this.chartBox.replaceChildren();
    this.tableBox.replaceChildren();
  }

  render() {
    const data = this.data;
    if (!data) return;
    this.toolbar.hidden = false;
    const model = describe(data, this.x);
    const names = model.numeric.map((i) => data.columns[i]);
    if (!this.selected || !names.some((n) => this.selected.has(n))) {
      this.selected = new Set(this.allSeries ? names.slice(0, PALETTE.length) : [defaultSeries(names)].filter(Boolean));
    }
    this.renderAxes(model);
    const rows = filterRows(data.rows, model.kinds, this.filter);
    const shown = { ...data, rows };
    const chartBox = this.chartBox;
    chartBox.replaceChildren();
    if (names.length && rows.length) {
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
          this.renderAxes(model);
          this.renderChart(shown, model);
        });
        const swatch = el("span", "swatch");
        swatch.style.background = PALETTE[n % PALETTE.length];
        label.append(box, swatch, document.createTextNode(data.columns[column]));
        legend.appendChild(label);
      });
      chartBox.append(legend, el("div", "plot"));
      this.renderChart(shown, model);
    }
    this.tableBox.replaceChildren(this.table(model, rows));
  }

  // the axis selects: options rebuilt only when they change (an open select stays open)
  renderAxes(model) {
    const data = this.data;
    const xOptions = [[ROW_NUMBER, "row number"], ...data.columns.map((name) => [name, name])];
    const yOptions = model.numeric.map((i) => [data.columns[i], data.columns[i]]);
    const picked = model.numeric.map((i) => data.columns[i]).filter((n) => this.selected.has(n));
    if (picked.length > 1) yOptions.unshift(["", `${picked.length} ticked below`]);
    if (!yOptions.length) yOptions.push(["", "no number column"]);
    fillSelect(this.xSelect, xOptions, model.key < 0 ? ROW_NUMBER : data.columns[model.key]);
    fillSelect(this.ySelect, yOptions, picked.length === 1 ? picked[0] : "");
    this.ySelect.disabled = model.numeric.length === 0;
  }

  renderChart(data, model) {
    const plot = this.chartBox.querySelector(".plot");
    if (!plot) return;
    const series = model.numeric.filter((i) => data.columns[i] !== undefined && this.selected.has(data.columns[i]));
    if (series.length === 0) {
      plot.replaceChildren(el("p", "muted", "Tick a column above to chart it."));
      return;
    }
    // the chart fits its box at any width (no horizontal scroll on a phone)
    const width = Math.max(200, Math.floor(this.container.clientWidth || 600));
    const parts = [drawChart(data, model, series, width, this.height)];
    const limit = model.keyKind === "time" ? CHART_POINTS : CHART_BARS;
    if (data.rows.length > limit) {
      const which = model.keyKind === "time" ? "newest" : "first";
      parts.push(el("div", "chart-note muted", `chart: the ${which} ${limit.toLocaleString()} of ${data.rows.length.toLocaleString()} rows`));
    }
    plot.replaceChildren(...parts);
  }

  // the order shown: the user's, else newest first when the key is a time
  order(model) {
    const data = this.data;
    if (this.sort && data.columns.includes(this.sort.column)) return { ...this.sort, auto: false };
    if (model.keyKind === "time") return { column: data.columns[model.key], dir: -1, auto: true };
    return null;
  }

  table(model, filtered) {
    const data = this.data;
    const order = this.order(model);
    let rows = filtered;
    if (order) {
      const index = data.columns.indexOf(order.column);
      rows = sortRows(rows, index, model.kinds[index], order.dir);
    }
    const wrap = el("div", "table-wrap");
    const shown = rows.slice(0, this.maxRows);
    const total = data.rows.length;
    const note = [`${total.toLocaleString()} row${total === 1 ? "" : "s"}`];
    if (this.filter.trim()) note.push(`${rows.length.toLocaleString()} match “${this.filter.trim()}”`);
    if (shown.length < rows.length) note.push(`showing ${shown.length.toLocaleString()}`);
    if (order && order.auto) note.push(`newest first by ${order.column}`);
    else if (order) note.push(`sorted by ${order.column} ${order.dir > 0 ? "↑" : "↓"}`);
    if (data.truncated) note.push("cut at the server's row cap");
    wrap.appendChild(el("div", "table-note muted", note.join(" · ")));
    const table = el("table", "grid result");
    const head = el("tr");
    data.columns.forEach((name, i) => {
      const th = el("th", model.kinds[i] === "number" ? "num" : "", name);
      th.dataset.column = name;
      th.appendChild(el("span", "type", data.types[i].replace(/^timestamp\[us(, tz=(.*))?\]$/, "timestamp $2").trim()));
      sortHeader(th, order && order.column === name ? order.dir : 0, order && order.auto);
      onActivate(th, () => {
        const current = this.order(describe(this.data, this.x));
        const dir = current && current.column === name ? -current.dir : 1;
        this.sort = { column: name, dir };
        this.render();
      });
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

  async export(format, button) {
    const request = this.exporter && this.exporter();
    if (!request) return;
    const spec = EXPORTS[format];
    button.disabled = true;
    this.exportNote.textContent = `preparing ${spec.label}…`;
    try {
      const got = await download(request, spec.type, `${fileName(request.name)}.${spec.suffix}`);
      this.exportNote.textContent =
        `downloaded ${got.name} (${formatBytes(got.bytes)})` + (got.truncated ? " · cut at the server's caps" : "");
    } catch (error) {
      this.exportNote.textContent = "";
      this.message.replaceChildren(errorBox(explain(error, "read")));
    } finally {
      button.disabled = false;
    }
  }
}

function fillSelect(select, options, value) {
  const signature = JSON.stringify(options);
  if (select.dataset.options !== signature) {
    select.replaceChildren(...options.map(([v, text]) => {
      const option = el("option", "", text);
      option.value = v;
      return option;
    }));
    select.dataset.options = signature;
  }
  select.value = value;
}

const fileName = (name) => String(name || "result").replace(/[^\w.-]+/g, "_").slice(0, 80) || "result";

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${fractions.format(bytes / 1024)} KiB`;
  return `${fractions.format(bytes / 1024 / 1024)} MiB`;
}

// A file made by the server (Accept: its type) saved by the browser. The server streams
// it within its caps; the page only hands the bytes to the browser's download.
async function download(request, type, name) {
  const headers = { Accept: type };
  if (token) headers.Authorization = "Bearer " + token;
  const init = { method: request.method || "GET", headers, cache: "no-store", signal: AbortSignal.timeout(ACTION_TIMEOUT_MS) };
  if (request.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(request.body);
  }
  let response;
  let blob;
  try {
    response = await fetch(request.path, init);
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    blob = await response.blob();
  } catch (error) {
    if (error instanceof ApiError) throw error;
    connectionLost();
    throw new OfflineError("the server cannot be reached");
  }
  const url = URL.createObjectURL(blob);
  const link = el("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return { name, bytes: blob.size, truncated: response.headers.get("X-Duckflock-Truncated") === "true" };
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

let querySql = ""; // the SQL of the result shown: exports run it again on the server
const queryView = new View($("#query-result"), {
  maxRows: 500,
  height: 260,
  exporter: () => querySql && { path: "/v1/query", method: "POST", body: { sql: querySql }, name: "query" },
});

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
    querySql = sql;
    queryView.show(data);
  } catch (error) {
    $("#query-meta").textContent = "";
    querySql = "";
    queryView.error(explain(error, "read"));
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

const tableTarget = (table) => quoteIdent(table.schema || "main") + "." + quoteIdent(tableName(table));

function previewSql(table) {
  const target = tableTarget(table);
  // rowid is the insertion order; a column of that name would shadow it
  const ordered = !table.columns.some((c) => c.name.toLowerCase() === "rowid");
  return `SELECT * FROM ${target}${ordered ? " ORDER BY rowid DESC" : ""} LIMIT 50`;
}

const tables = new Map(); // name -> the latest listing entry
const previous = new Map(); // name -> {rows, at}: for rows per second
// the preview shows the newest rows; its export is the whole table (within the caps)
const previewView = new View($("#preview-result"), {
  maxRows: 50,
  height: 220,
  exporter: () => {
    const table = previewing && tables.get(previewing);
    return table && { path: "/v1/query", method: "POST", body: { sql: `SELECT * FROM ${tableTarget(table)}` }, name: tableName(table) };
  },
});
let previewing = null; // the name of the table being previewed

let listed = []; // [[name, rows, rate]] from the last listing, in the server's order
let tablesSort = null; // {column: index, dir}: the user's order; null: the server's
const TABLE_KINDS = ["other", "number", "number"];

async function refreshTables() {
  const listing = await api("/v1/tables");
  const now = performance.now();
  tables.clear();
  listed = listing.map((table) => {
    tables.set(table.name, table);
    const before = previous.get(table.name);
    const rate = before ? ((table.rows - before.rows) * 1000) / (now - before.at) : 0;
    previous.set(table.name, { rows: table.rows, at: now });
    return [table.name, table.rows, Math.max(0, Math.round(rate))];
  });
  renderTables();
}

// the listing, filtered by the box above it and sorted by the header clicked
function renderTables() {
  let rows = filterRows(listed, TABLE_KINDS, $("#tables-filter").value);
  if (tablesSort) rows = sortRows(rows, tablesSort.column, TABLE_KINDS[tablesSort.column], tablesSort.dir);
  document.querySelectorAll("#tables thead th").forEach((th, i) => {
    th.querySelectorAll(".sorted").forEach((arrow) => arrow.remove());
    sortHeader(th, tablesSort && tablesSort.column === i ? tablesSort.dir : 0, false);
  });
  const body = $("#tables tbody");
  body.replaceChildren();
  for (const [name, count, rate] of rows) {
    const table = tables.get(name);
    const row = el("tr");
    row.dataset.table = name;
    row.tabIndex = 0;
    // the hover text: the table's columns, which the preview's SQL reads
    row.title = `${name}: click to preview its newest rows. Columns:\n` +
      table.columns.map((c) => `${c.name} ${c.type}`).join("\n");
    if (name === previewing) row.classList.add("selected");
    row.append(
      el("td", "name", name),
      el("td", "rows num", count.toLocaleString()),
      el("td", "rate num", rate.toLocaleString()),
    );
    row.addEventListener("click", () => preview(name));
    row.addEventListener("keydown", (event) => event.key === "Enter" && preview(name));
    body.appendChild(row);
  }
  $("#tables-note").textContent = rows.length < listed.length ? `${rows.length} of ${listed.length} tables` : "";
}

document.querySelectorAll("#tables thead th").forEach((th, i) => {
  onActivate(th, () => {
    tablesSort = { column: i, dir: tablesSort && tablesSort.column === i ? -tablesSort.dir : 1 };
    renderTables();
  });
});
$("#tables-filter").addEventListener("input", renderTables);

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
    previewView.error(explain(error, "read"));
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

const analysisPath = (name) => `/v1/analyses/${encodeURIComponent(name)}`;

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
  // two tabs: the latest result, and how it moved over the versions the server kept
  const tabs = el("div", "tabs");
  tabs.setAttribute("role", "tablist");
  const latestTab = el("button", "tab tab-latest", "Latest");
  latestTab.title = "the latest result, as it refreshes";
  const historyTab = el("button", "tab tab-history", "History");
  historyTab.title = "how the result moved: the last versions this server keeps in memory, charted over time";
  tabs.append(latestTab, historyTab);
  const body = el("div", "card-body latest");
  const pane = el("div", "history");
  pane.hidden = true;
  const controls = el("div", "history-controls");
  const valueLabel = el("label", "", "value ");
  const valueSelect = el("select", "history-value");
  valueSelect.title = "the result column charted over time (one line per row of the result, by its key)";
  valueLabel.appendChild(valueSelect);
  controls.append(valueLabel, el("span", "history-note muted"));
  const historyBody = el("div", "history-body");
  pane.append(controls, historyBody);
  node.append(
    head,
    el("div", "schedule muted"),
    el("div", "meta"),
    el("div", "reason"),
    el("div", "card-message"),
    tabs,
    body,
    pane,
  );
  $("#analyses").appendChild(node);
  card = {
    node,
    view: new View(body, { maxRows: 50, height: 190, exporter: () => ({ path: analysisPath(name) + "/result", name }) }),
    history: {
      long: null, // {columns, types, rows}: version, refreshed_at, then the result's columns
      limit: 0,
      value: null, // the charted column; null: the default
      select: valueSelect,
      view: new View(historyBody, {
        maxRows: 50,
        height: 190,
        allSeries: true,
        exporter: () => ({ path: analysisPath(name) + "/history", name: name + "-history" }),
      }),
    },
    status: null,
  };
  const select = (showHistory) => {
    latestTab.setAttribute("aria-selected", String(!showHistory));
    historyTab.setAttribute("aria-selected", String(showHistory));
    body.hidden = showHistory;
    pane.hidden = !showHistory;
    node.dataset.tab = showHistory ? "history" : "latest";
    if (showHistory) loadHistory(name);
    else card.view.render();
  };
  latestTab.type = historyTab.type = "button";
  latestTab.addEventListener("click", () => select(false));
  historyTab.addEventListener("click", () => select(true));
  valueSelect.addEventListener("change", () => {
    card.history.value = valueSelect.value;
    renderHistory(card);
  });
  select(false);
  cards.set(name, card);
  return card;
}

// The history from the server once, then each new version from the event stream.
async function loadHistory(name) {
  const card = cards.get(name);
  if (!card) return;
  try {
    const data = await api(analysisPath(name) + "/history", "GET", undefined, ACTION_TIMEOUT_MS);
    card.history.long = { columns: data.columns, types: data.types, rows: data.rows };
    card.history.limit = data.limit;
    renderHistory(card);
  } catch (error) {
    card.history.view.error(explain(error, "read"));
  }
}

function appendHistory(card, result) {
  const history = card.history;
  const long = history.long;
  if (!long || !result.types) return;
  const shape = JSON.stringify([result.columns, result.types]);
  const rows = result.rows.map((row) => [result.version, result.refreshed_at, ...row]);
  if (JSON.stringify([long.columns.slice(2), long.types.slice(2)]) !== shape) {
    // new columns (an edit): the history starts again, as the server's does
    history.long = { columns: ["version", "refreshed_at", ...result.columns], types: ["int64", "timestamp[us, tz=UTC]", ...result.types], rows };
  } else {
    const last = long.rows.length ? long.rows[long.rows.length - 1][0] : 0;
    if (result.version <= last) return;
    long.rows.push(...rows);
    const versions = [...new Set(long.rows.map((row) => row[0]))];
    if (versions.length > history.limit) {
      const first = versions[versions.length - history.limit];
      long.rows = long.rows.filter((row) => row[0] >= first);
    }
  }
  if (!card.node.querySelector(".history").hidden) renderHistory(card);
}

// The long history pivoted for the chart: one row per version (x: refreshed_at), one
// column per row of the result (by its key; the newest version's keys first).
function renderHistory(card) {
  const history = card.history;
  const long = history.long;
  if (!long) return;
  const result = { columns: long.columns.slice(2), types: long.types.slice(2) };
  const model = describe(result);
  const values = model.numeric.map((i) => result.columns[i]);
  const note = card.node.querySelector(".history-note");
  const versions = new Map();
  for (const row of long.rows) if (!versions.has(row[0])) versions.set(row[0], { at: row[1], cells: new Map() });
  if (!values.length) {
    fillSelect(history.select, [["", "no number column"]], "");
    history.select.disabled = true;
    note.textContent = `${versions.size} versions kept`;
    history.view.error("Nothing to chart over time: the result has no number column.");
    return;
  }
  history.select.disabled = false;
  const value = values.includes(history.value) ? history.value : defaultSeries(values);
  fillSelect(history.select, values.map((v) => [v, v]), value);
  const valueIndex = 2 + result.columns.indexOf(value);
  const keyIndex = model.key >= 0 && model.keyKind !== "index" ? 2 + model.key : -1;
  const order = [];
  for (let i = long.rows.length - 1; i >= 0; i--) {
    const row = long.rows[i];
    const group = keyIndex < 0 ? value : formatCell(row[keyIndex], model.kinds[keyIndex - 2]);
    if (!order.includes(group)) order.push(group);
    const cells = versions.get(row[0]).cells;
    if (!cells.has(group)) cells.set(group, row[valueIndex]);
  }
  const groups = order.slice(0, PALETTE.length);
  const key = keyIndex < 0 ? "" : ` per ${result.columns[keyIndex - 2]}`;
  note.textContent =
    `${versions.size} version${versions.size === 1 ? "" : "s"} kept (up to ${history.limit}) · ${value}${key}` +
    (groups.length < order.length ? ` · the ${groups.length} newest of ${order.length} lines` : "");
  history.view.show({
    columns: ["refreshed_at", ...groups],
    types: ["timestamp[us, tz=UTC]", ...groups.map(() => long.types[valueIndex])],
    rows: [...versions.values()].map((entry) => [entry.at, ...groups.map((g) => (entry.cells.has(g) ? entry.cells.get(g) : null))]),
  });
}

function removeCard(name) {
  const card = cards.get(name);
  if (card) {
    views.delete(card.view);
    views.delete(card.history.view);
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
    `${result.rows.length.toLocaleString()} row${result.rows.length === 1 ? "" : "s"} · ${new Date(result.refreshed_at).toLocaleTimeString()}`;
  // the mode's why: what an incremental run folded in, or what made it a full run
  const reason = node.querySelector(".reason");
  reason.textContent = result.reason || "";
  reason.dataset.mode = result.mode;
  const message = node.querySelector(".card-message");
  message.replaceChildren();
  if (result.error) message.appendChild(errorBox(`${result.error.type}: ${result.error.message}`));
  if (result.truncated) {
    // over the byte cap of one event: the rows are not in it; export fetches them whole
    message.appendChild(el("div", "muted", "This version is too big to send as an event; export it to see its rows."));
    return;
  }
  card.view.show(result);
  appendHistory(card, result);
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
  checkName();
  say("", true);
  (status ? $("#analysis-sql") : $("#analysis-name")).focus();
  form.scrollIntoView({ block: "nearest" });
}

// The browser's own bubble for a name it refuses says why (the name is in the URL).
function checkName() {
  const input = $("#analysis-name");
  const name = input.value;
  input.setCustomValidity(
    name.includes("/")
      ? "An analysis name cannot hold “/”: the name is part of its address, /v1/analyses/{name}."
      : name.trim()
        ? ""
        : "Give the analysis a name: any text but “/” (it is part of its address, /v1/analyses/{name}).",
  );
}
$("#analysis-name").addEventListener("input", checkName);

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
    await api(analysisPath(name), "PUT", body, ACTION_TIMEOUT_MS);
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
