/* eventsapp dashboard: draws /stats/* as hand-written SVG and HTML. No libraries, nothing fetched
 * from outside the app. Values shown are also exposed as data-* attributes (tests read them). */
(() => {
  "use strict";
  const { svg, html } = window.eventsappDom;

  const $ = (id) => document.getElementById(id);
  const root = $("dashboard");
  const API_BASE = root.dataset.apiBase || "";
  const PROJECT_TZ = root.dataset.projectTimezone || "UTC";
  const KEY_STORE = "eventsapp.readKey";
  const DAY_MS = 86400000;
  const MAX_RANGE_DAYS = 366;
  const DEFAULT_DAYS = 30;
  const TOP_LIMIT = 10;
  const MAX_RETRIES_503 = 1;
  // Retention shape: the most recent cohorts ending at the range's last day.
  const RETENTION = {
    daily: { step: 1, windows: 8, maxCohorts: 14, unit: "Day" },
    weekly: { step: 7, windows: 6, maxCohorts: 8, unit: "Week" },
  };
  const numberFormat = new Intl.NumberFormat();
  const percentFormat = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });

  // ---- calendar dates as "YYYY-MM-DD", computed in UTC so the browser's own zone never shifts them
  const parseDate = (s) => {
    const [y, m, d] = s.split("-").map(Number);
    return Date.UTC(y, m - 1, d);
  };
  const isoDate = (ms) => new Date(ms).toISOString().slice(0, 10);
  const addDays = (s, n) => isoDate(parseDate(s) + n * DAY_MS);
  const daysBetween = (a, b) => Math.round((parseDate(b) - parseDate(a)) / DAY_MS);
  const isDate = (s) => /^\d{4}-\d{2}-\d{2}$/.test(s || "") && !Number.isNaN(parseDate(s));
  const shortDate = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  const longDate = new Intl.DateTimeFormat(undefined, {
    weekday: "short", year: "numeric", month: "short", day: "numeric", timeZone: "UTC",
  });
  const labelDate = (s) => shortDate.format(parseDate(s));
  const labelLongDate = (s) => longDate.format(parseDate(s));

  function todayIn(tz) {
    let parts;
    try {
      parts = new Intl.DateTimeFormat("en-CA", {
        timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
      }).formatToParts(new Date());
    } catch (err) {
      // The server knows zones some browsers don't; UTC's date is off by at most a day.
      return new Date().toISOString().slice(0, 10);
    }
    const get = (type) => parts.find((p) => p.type === type).value;
    return `${get("year")}-${get("month")}-${get("day")}`;
  }

  // ---- state, mirrored into the URL so a reload or a shared link shows the same view
  const state = {
    from: null, to: null, tz: PROJECT_TZ, segments: [],
    windowSize: "daily", cohort: "first_seen", lastDate: null, rangeEvents: null,
  };

  function readUrl() {
    const q = new URLSearchParams(location.search);
    if (isDate(q.get("from")) && isDate(q.get("to"))) {
      state.from = q.get("from");
      state.to = q.get("to");
    }
    if (q.get("tz")) state.tz = q.get("tz");
    state.segments = q.getAll("segment").filter(Boolean);
    if (RETENTION[q.get("window_size")]) state.windowSize = q.get("window_size");
    if (["first_seen", "active"].includes(q.get("cohort"))) state.cohort = q.get("cohort");
  }

  function writeUrl() {
    const q = new URLSearchParams();
    q.set("from", state.from);
    q.set("to", state.to);
    q.set("tz", state.tz);
    state.segments.forEach((s) => q.append("segment", s));
    q.set("window_size", state.windowSize);
    q.set("cohort", state.cohort);
    history.replaceState(null, "", `${location.pathname}?${q}`);
  }

  // ---- the API, with a read key asked for once per browser session when the server wants one
  class ApiFailure extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  const storedKey = () => {
    try { return sessionStorage.getItem(KEY_STORE); } catch (err) { return null; }
  };
  let pendingKey = null;

  function askForKey(message, rejected) {
    const current = storedKey();
    // Another request may already have replaced the rejected key while this one was in flight.
    if (current && current !== rejected) return Promise.resolve(current);
    if (pendingKey) return pendingKey;
    if (rejected) {
      try { sessionStorage.removeItem(KEY_STORE); } catch (err) { /* storage disabled */ }
    }
    const dialog = $("key-dialog");
    const input = $("key-input");
    $("key-message").textContent = message;
    input.value = "";
    pendingKey = new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        pendingKey = null;
        const key = input.value.trim();
        input.value = "";
        if (dialog.returnValue === "ok" && key) {
          try { sessionStorage.setItem(KEY_STORE, key); } catch (err) { /* storage disabled */ }
          resolve(key);
        } else {
          resolve(null);
        }
      }, { once: true });
    });
    dialog.returnValue = "";
    root.dataset.keyPrompts = String(Number(root.dataset.keyPrompts || 0) + 1);
    dialog.showModal();
    input.focus();
    return pendingKey;
  }

  function describeError(body, status) {
    if (!body || typeof body !== "object") return `The server answered ${status}.`;
    let text = body.message || `The server answered ${status}.`;
    const fields = [];
    const walk = (node, path) => {
      if (Array.isArray(node)) fields.push(`${path}: ${node.join(" ")}`);
      else if (node && typeof node === "object") {
        Object.entries(node).forEach(([k, v]) => walk(v, ["query", "json", "headers"].includes(k) && !path ? "" : (path ? `${path}.${k}` : k)));
      }
    };
    walk(body.errors, "");
    if (fields.length) text += ` (${fields.join("; ")})`;
    return text;
  }

  const sleep = (ms, signal) => new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); reject(new DOMException("aborted", "AbortError")); }, { once: true });
  });

  async function api(path, params, signal) {
    const url = new URL(API_BASE + path, location.origin);
    params.forEach(([k, v]) => url.searchParams.append(k, v));
    let retries = MAX_RETRIES_503;
    for (;;) {
      const key = storedKey();
      const headers = { Accept: "application/json" };
      if (key) headers.Authorization = `Bearer ${key}`;
      const response = await fetch(url, { headers, signal });
      if (response.status === 401 || response.status === 403) {
        let message = "The stats API needs a read key. It is kept for this browser session only.";
        if (key && response.status === 401) message = "That key was not accepted. Enter a read key.";
        if (key && response.status === 403) message = "That key may not read stats. Enter a read key.";
        const next = await askForKey(message, key);
        if (!next) throw new ApiFailure("A read API key is needed to show the stats.", response.status);
        continue;
      }
      if (response.status === 503 && retries > 0) {
        // The server says "briefly unavailable, retry"; a reader should not see that blip. Waits are
        // capped because Retry-After is sized for bulk clients, not for someone looking at a page.
        retries -= 1;
        const after = Number(response.headers.get("Retry-After")) || 1;
        await sleep(Math.min(after, 1) * 1000, signal);
        continue;
      }
      const body = await response.json().catch(() => null);
      if (!response.ok) throw new ApiFailure(describeError(body, response.status), response.status, body);
      return body;
    }
  }

  // ---- small DOM helpers
  function setStatus(text, isError = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }
  function showEmpty(id, emptyId, message) {
    $(id).dataset.state = message ? "empty" : "ready";
    $(id).hidden = Boolean(message);
    const empty = $(emptyId);
    empty.hidden = !message;
    if (message) empty.textContent = message;
  }

  function niceTicks(max, count = 5) {
    if (max <= 0) return [0, 1];
    const raw = max / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    // Whole-number steps only: user counts are integers, and 2.5 would round to uneven gridlines.
    const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).filter(Number.isInteger).find((s) => s >= raw) || 1;
    const niceStep = Math.max(step, 1);
    const ticks = [];
    for (let v = 0; v <= max + niceStep - 1e-9; v += niceStep) ticks.push(Math.round(v));
    return ticks;
  }

  // ---- DAU line chart
  let dauRows = [];
  let dauFocus = -1;

  function renderDau(rows) {
    dauRows = rows;
    dauFocus = -1;
    const container = $("dau-chart");
    container.replaceChildren();
    $("dau-tooltip").hidden = true;
    const tbody = $("dau-table").tBodies[0];
    tbody.replaceChildren(...rows.map((r) => {
      const tr = html("tr");
      tr.append(html("td", {}, r.date), html("td", {}, numberFormat.format(r.dau)));
      return tr;
    }));
    if (!rows.length || rows.every((r) => r.dau === 0)) {
      showEmpty("dau-chart", "dau-empty", "No events in this range");
      return;
    }
    showEmpty("dau-chart", "dau-empty", null);

    const width = Math.max(container.clientWidth || 600, 280);
    const narrow = width < 520;
    const height = narrow ? 220 : 280;
    const m = { top: 16, right: 16, bottom: 52, left: narrow ? 48 : 60 };
    const plotW = width - m.left - m.right;
    const plotH = height - m.top - m.bottom;
    const max = Math.max(...rows.map((r) => r.dau));
    const ticks = niceTicks(max, narrow ? 4 : 5);
    const top = ticks[ticks.length - 1];
    const x = (i) => m.left + (rows.length === 1 ? plotW / 2 : (i * plotW) / (rows.length - 1));
    const y = (v) => m.top + plotH - (v / top) * plotH;
    const peak = rows.reduce((a, b) => (b.dau > a.dau ? b : a));

    const chart = svg("svg", {
      id: "dau-svg", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", tabindex: "0",
      "aria-labelledby": "dau-svg-title dau-svg-desc", class: "line-chart",
    });
    svg("title", { id: "dau-svg-title" }, chart).textContent = "Daily active users per day";
    svg("desc", { id: "dau-svg-desc" }, chart).textContent =
      `${rows.length} days from ${rows[0].date} to ${rows[rows.length - 1].date} in ${state.tz}; ` +
      `highest ${peak.dau} on ${peak.date}. Use the left and right arrow keys to read each day.`;

    const grid = svg("g", { class: "grid", "aria-hidden": "true" }, chart);
    ticks.forEach((t) => {
      svg("line", { x1: m.left, x2: width - m.right, y1: y(t), y2: y(t) }, grid);
      const label = svg("text", { x: m.left - 8, y: y(t), class: "tick y-tick", "text-anchor": "end", "dominant-baseline": "middle" }, grid);
      label.textContent = numberFormat.format(t);
    });
    const maxLabels = Math.max(2, Math.floor(plotW / (narrow ? 64 : 76)));
    const every = Math.max(1, Math.ceil(rows.length / maxLabels));
    rows.forEach((r, i) => {
      if (i % every !== 0 && i !== rows.length - 1) return;
      if (i !== rows.length - 1 && rows.length - 1 - i < every / 2) return; // don't crowd the last label
      svg("line", { x1: x(i), x2: x(i), y1: m.top + plotH, y2: m.top + plotH + 5, class: "tick-mark" }, grid);
      const label = svg("text", { x: x(i), y: m.top + plotH + 18, class: "tick x-tick", "text-anchor": "middle" }, grid);
      label.textContent = labelDate(r.date);
    });
    svg("line", { x1: m.left, x2: width - m.right, y1: m.top + plotH, y2: m.top + plotH, class: "axis" }, grid);
    svg("line", { x1: m.left, x2: m.left, y1: m.top, y2: m.top + plotH, class: "axis" }, grid);
    const xTitle = svg("text", { x: m.left + plotW / 2, y: height - 8, class: "axis-title", "text-anchor": "middle" }, grid);
    xTitle.textContent = `Day (${state.tz})`;
    const yTitle = svg("text", {
      x: 0, y: 0, class: "axis-title", "text-anchor": "middle",
      transform: `translate(14 ${m.top + plotH / 2}) rotate(-90)`,
    }, grid);
    yTitle.textContent = "Daily active users";

    const points = rows.map((r, i) => `${x(i).toFixed(1)},${y(r.dau).toFixed(1)}`);
    svg("path", {
      class: "area", "aria-hidden": "true",
      d: `M${x(0).toFixed(1)},${y(0)} L${points.join(" L")} L${x(rows.length - 1).toFixed(1)},${y(0)} Z`,
    }, chart);
    svg("path", { class: "line", "aria-hidden": "true", d: `M${points.join(" L")}` }, chart);
    svg("line", { id: "dau-cursor", class: "cursor", x1: 0, x2: 0, y1: m.top, y2: m.top + plotH, visibility: "hidden" }, chart);
    const dots = svg("g", { class: "points" }, chart);
    rows.forEach((r, i) => {
      svg("circle", {
        class: "point", cx: x(i).toFixed(1), cy: y(r.dau).toFixed(1), r: rows.length > 120 ? 1.5 : 3,
        "data-date": r.date, "data-dau": r.dau, "data-index": i,
      }, dots);
    });
    // A transparent layer on top so the whole plot, not just the dots, answers the pointer.
    svg("rect", { class: "hit", x: m.left, y: m.top, width: plotW, height: plotH, fill: "transparent" }, chart);

    const indexAt = (clientX) => {
      const box = chart.getBoundingClientRect();
      const px = ((clientX - box.left) * width) / box.width;
      if (rows.length === 1) return 0;
      return Math.min(rows.length - 1, Math.max(0, Math.round(((px - m.left) / plotW) * (rows.length - 1))));
    };
    chart.addEventListener("pointermove", (e) => focusDau(indexAt(e.clientX), x, y));
    chart.addEventListener("pointerleave", () => {
      if (document.activeElement === chart) return;
      hideDauFocus();
      dauFocus = -1;
    });
    chart.addEventListener("focus", () => focusDau(dauFocus >= 0 ? dauFocus : rows.length - 1, x, y));
    chart.addEventListener("blur", hideDauFocus);
    chart.addEventListener("keydown", (e) => {
      const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowDown: -1, ArrowUp: 1 };
      let next = dauFocus;
      if (e.key in moves) next = Math.min(rows.length - 1, Math.max(0, (dauFocus < 0 ? rows.length - 1 : dauFocus) + moves[e.key]));
      else if (e.key === "Home") next = 0;
      else if (e.key === "End") next = rows.length - 1;
      else return;
      e.preventDefault();
      focusDau(next, x, y);
    });
    container.appendChild(chart);
  }

  function focusDau(i, x, y) {
    const chart = $("dau-svg");
    if (!chart || !dauRows[i]) return;
    dauFocus = i;
    const row = dauRows[i];
    const cursor = $("dau-cursor");
    cursor.setAttribute("x1", x(i));
    cursor.setAttribute("x2", x(i));
    cursor.setAttribute("visibility", "visible");
    chart.querySelectorAll(".point.active").forEach((p) => p.classList.remove("active"));
    const point = chart.querySelector(`.point[data-index="${i}"]`);
    point.classList.add("active");
    const tip = $("dau-tooltip");
    tip.replaceChildren(html("strong", {}, numberFormat.format(row.dau)), document.createTextNode(" users"), html("br"),
      document.createTextNode(labelLongDate(row.date)));
    tip.dataset.date = row.date;
    tip.dataset.dau = row.dau;
    tip.hidden = false;
    const box = chart.getBoundingClientRect();
    const scale = box.width / Number(chart.getAttribute("width"));
    const left = x(i) * scale;
    const tipWidth = tip.offsetWidth;
    tip.style.setProperty("left", `${Math.min(Math.max(left - tipWidth / 2, 0), box.width - tipWidth)}px`);
    tip.style.setProperty("top", `${Math.max(y(row.dau) * scale - tip.offsetHeight - 12, 0)}px`);
  }

  function hideDauFocus() {
    const cursor = $("dau-cursor");
    if (cursor) cursor.setAttribute("visibility", "hidden");
    document.querySelectorAll("#dau-svg .point.active").forEach((p) => p.classList.remove("active"));
    $("dau-tooltip").hidden = true;
  }

  // Redraw the SVG at the container's width when that changed (window resize, or a scrollbar that
  // appeared once the rest of the page rendered); the data is already here.
  function redrawIfResized() {
    const chart = $("dau-svg");
    if (!chart || !dauRows.length) return;
    const width = Math.max($("dau-chart").clientWidth || 600, 280);
    if (Number(chart.getAttribute("width")) !== width) renderDau(dauRows);
  }

  // ---- top events: horizontal bars as an ordered list
  function renderTop(rows) {
    const list = $("top-bars");
    list.replaceChildren();
    if (!rows.length) {
      showEmpty("top-chart", "top-empty", "No events in this range");
      return;
    }
    showEmpty("top-chart", "top-empty", null);
    const max = Math.max(...rows.map((r) => r.count));
    rows.forEach((r) => {
      const li = html("li", { className: "bar-row", "data-event-type": r.event_type, "data-count": r.count });
      const name = html("span", { className: "bar-label", title: r.event_type }, r.event_type);
      const track = html("span", { className: "bar-track", "aria-hidden": "true" });
      const bar = html("span", { className: "bar" });
      bar.style.setProperty("width", `${Math.max((r.count / max) * 100, 0.5)}%`);
      track.appendChild(bar);
      const value = html("span", { className: "bar-value" }, numberFormat.format(r.count));
      li.append(name, track, value);
      list.appendChild(li);
    });
  }

  // ---- retention heatmap
  function retentionQuery() {
    const shape = RETENTION[state.windowSize];
    const days = daysBetween(state.from, state.to) + 1;
    const cohorts = Math.max(1, Math.min(shape.maxCohorts, Math.floor(days / shape.step)));
    const start = days >= shape.step ? addDays(state.to, -(cohorts * shape.step) + 1) : state.from;
    return {
      shape, cohorts,
      params: [
        ["start_date", start], ["windows", String(shape.windows)], ["window_size", state.windowSize],
        ["cohort", state.cohort], ["cohorts", String(cohorts)], ["tz", state.tz],
        ...state.segments.map((s) => ["segment", s]),
      ],
    };
  }

  function renderRetention(rows, shape) {
    const table = $("ret-table");
    const thead = table.tHead;
    const tbody = table.tBodies[0];
    thead.replaceChildren();
    tbody.replaceChildren();
    const cohortWord = state.cohort === "first_seen" ? "first seen" : "active";
    $("ret-caption").textContent =
      `Share of users ${cohortWord} in each ${shape.unit.toLowerCase()}'s cohort who came back in later ` +
      `${shape.unit.toLowerCase()}s (${state.tz}).`;
    if (state.rangeEvents === 0) {
      showEmpty("ret-wrap", "ret-empty", "No events in this range");
      return;
    }
    if (!rows.length || rows.every((r) => r.size === 0)) {
      showEmpty("ret-wrap", "ret-empty", state.cohort === "first_seen"
        ? "No new users in these cohorts" : "No active users in these cohorts");
      return;
    }
    showEmpty("ret-wrap", "ret-empty", null);
    const head = html("tr");
    head.append(html("th", { scope: "col" }, "Cohort"), html("th", { scope: "col" }, "Users"));
    for (let k = 0; k < shape.windows; k += 1) head.append(html("th", { scope: "col" }, `${shape.unit} ${k}`));
    thead.appendChild(head);
    // Windows that start after the last day with data (or today) are unobserved, not zero.
    const today = todayIn(state.tz);
    const horizon = state.lastDate && state.lastDate < today ? state.lastDate : today;
    rows.forEach((r) => {
      const tr = html("tr", { "data-cohort": r.cohort_start_date, "data-size": r.size });
      tr.append(html("th", { scope: "row" }, labelDate(r.cohort_start_date)),
        html("td", { className: "size" }, numberFormat.format(r.size)));
      for (let k = 0; k < shape.windows; k += 1) {
        const value = r[`w${k}`];
        const windowStart = addDays(r.cohort_start_date, k * shape.step);
        const td = html("td", { className: "cell", "data-window": k, "data-value": value });
        if (windowStart > horizon) {
          td.classList.add("future");
          td.title = "After the last day with data: not observed yet";
          td.appendChild(html("span", { className: "visually-hidden" }, "not observed yet"));
        } else if (value === null) {
          // The API answers null for a window that has not ended: a share so far would read as a drop.
          td.classList.add("future");
          td.title = "This window has not ended yet";
          td.appendChild(html("span", { className: "visually-hidden" }, "not ended yet"));
        } else {
          td.textContent = percentFormat.format(value);
          td.style.setProperty("--v", String(value));
          if (value >= 0.5) td.classList.add("hot");
        }
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    });
  }

  // ---- headline figures
  function setFigure(id, value) {
    const el = $(id);
    el.dataset.value = value;
    el.textContent = numberFormat.format(value);
  }

  // ---- loading
  let generation = 0;
  let retGeneration = 0;
  let controller = null;
  let retController = null;

  function rangeProblem() {
    if (!isDate(state.from)) return ["from", "Choose a start date."];
    if (!isDate(state.to)) return ["to", "Choose an end date."];
    if (state.from > state.to) return ["from", "The start date must not be after the end date."];
    if (daysBetween(state.from, state.to) + 1 > MAX_RANGE_DAYS) return ["to", `A range may span at most ${MAX_RANGE_DAYS} days.`];
    return null;
  }

  function showFilterError(message, field) {
    const el = $("filter-error");
    el.hidden = !message;
    el.textContent = message || "";
    ["from", "to"].forEach((id) => $(id).setAttribute("aria-invalid", String(field === id)));
    document.querySelectorAll(".segment-input").forEach((input) => input.setAttribute("aria-invalid", String(field === "segment")));
  }

  function markLoading() {
    root.dataset.status = "loading";
    root.setAttribute("aria-busy", "true");
    setStatus("Loading…");
  }

  function markFailed(err) {
    const message = err instanceof ApiFailure ? err.message : `Could not load the stats: ${err.message}`;
    root.dataset.status = "error";
    root.removeAttribute("aria-busy");
    setStatus(message, true);
    const field = err.body && err.body.errors ? JSON.stringify(err.body.errors) : "";
    if (err.status === 400) {
      showFilterError(message, /segment/.test(field) ? "segment" : /"(from|start_date)"/.test(field) ? "from" : /"to"/.test(field) ? "to" : null);
    }
  }

  function markReady(startedAt, calls) {
    root.dataset.status = "ready";
    root.removeAttribute("aria-busy");
    root.dataset.renderCount = String(Number(root.dataset.renderCount || 0) + 1);
    if (!root.dataset.firstRenderMs) root.dataset.firstRenderMs = String(Math.round(performance.now()));
    const ms = Math.round(performance.now() - startedAt);
    root.dataset.lastRenderMs = String(ms);
    root.dataset.lastRenderCalls = String(calls);
    setStatus(`Showing ${labelLongDate(state.from)} – ${labelLongDate(state.to)}, ${state.tz}.`);
  }

  async function defaultRange(signal) {
    const today = todayIn(state.tz);
    const summary = await api("/stats/summary", [["from", today], ["to", today], ["tz", state.tz]], signal);
    const last = summary.data_last_date || today;
    let first = addDays(last, -(DEFAULT_DAYS - 1));
    if (summary.data_first_date && summary.data_first_date > first) first = summary.data_first_date;
    return [first, last];
  }

  async function load({ resetRange = false } = {}) {
    const gen = ++generation;
    retGeneration += 1;
    if (controller) controller.abort();
    if (retController) retController.abort();
    controller = new AbortController();
    const { signal } = controller;
    const startedAt = performance.now();
    markLoading();
    showFilterError(null);
    try {
      let calls = 0;
      if (resetRange || !state.from || !state.to) {
        [state.from, state.to] = await defaultRange(signal);
        calls += 1;
        if (gen !== generation) return;
        $("from").value = state.from;
        $("to").value = state.to;
      }
      const problem = rangeProblem();
      if (problem) {
        showFilterError(problem[1], problem[0]);
        root.dataset.status = "invalid";
        root.removeAttribute("aria-busy");
        setStatus(problem[1], true);
        return;
      }
      writeUrl();
      const base = [["tz", state.tz], ...state.segments.map((s) => ["segment", s])];
      const range = [["from", state.from], ["to", state.to], ...base];
      const today = todayIn(state.tz);
      const yesterday = addDays(today, -1);
      const ret = retentionQuery();
      // When the range already holds yesterday and today, their DAU comes with the chart's answer.
      const recentInRange = state.from <= yesterday && state.to >= today;
      const [summary, dau, top, retention, recentAnswer] = await Promise.all([
        api("/stats/summary", range, signal),
        api("/stats/dau", range, signal),
        api("/stats/top-events", [...range, ["limit", String(TOP_LIMIT)]], signal),
        api("/stats/retention", ret.params, signal),
        recentInRange ? null : api("/stats/dau", [["from", yesterday], ["to", today], ...base], signal),
      ]);
      const recent = recentAnswer || dau;
      calls += recentInRange ? 4 : 5;
      if (gen !== generation) return;
      state.lastDate = summary.data_last_date;
      state.rangeEvents = summary.events;
      setFigure("h-events", summary.events);
      setFigure("h-users", summary.users);
      const byDate = Object.fromEntries(recent.map((r) => [r.date, r.dau]));
      setFigure("h-dau-today", byDate[today] || 0);
      setFigure("h-dau-yesterday", byDate[yesterday] || 0);
      $("h-today-date").textContent = `(${labelDate(today)})`;
      $("h-yesterday-date").textContent = `(${labelDate(yesterday)})`;
      renderDau(summary.events === 0 ? [] : dau);
      renderTop(top);
      renderRetention(retention, ret.shape);
      redrawIfResized();
      markReady(startedAt, calls);
    } catch (err) {
      if (err.name === "AbortError" || gen !== generation) return;
      markFailed(err);
    }
  }

  async function loadRetention() {
    const gen = ++retGeneration;
    if (retController) retController.abort();
    retController = new AbortController();
    const startedAt = performance.now();
    const problem = rangeProblem();
    if (problem || !state.lastDate && state.rangeEvents === null) return load();
    markLoading();
    $("ret-wrap").dataset.state = "loading";
    writeUrl();
    const ret = retentionQuery();
    try {
      const rows = await api("/stats/retention", ret.params, retController.signal);
      if (gen !== retGeneration) return;
      renderRetention(rows, ret.shape);
      redrawIfResized();
      markReady(startedAt, 1);
    } catch (err) {
      if (err.name === "AbortError" || gen !== retGeneration) return;
      markFailed(err);
    }
  }

  // ---- segment conditions
  let segmentSerial = 0;
  function addSegmentRow(value = "") {
    segmentSerial += 1;
    const id = `segment-${segmentSerial}`;
    const li = html("li", { className: "segment-row" });
    const label = html("label", { for: id, className: "visually-hidden" }, "Segment condition");
    const input = html("input", {
      type: "text", id, className: "segment-input", name: "segment", value, spellcheck: "false",
      autocomplete: "off", placeholder: "event_type:purchase", "aria-describedby": "segment-hint",
    });
    const remove = html("button", { type: "button", className: "secondary remove", "aria-label": "Remove this condition" }, "×");
    remove.addEventListener("click", () => {
      li.remove();
      if (!document.querySelector(".segment-row")) addSegmentRow();
      applyFilters();
    });
    li.append(label, input, remove);
    $("segment-list").appendChild(li);
    return input;
  }

  function applyFilters() {
    state.from = $("from").value;
    state.to = $("to").value;
    state.tz = $("tz").value;
    state.segments = [...document.querySelectorAll(".segment-input")].map((i) => i.value.trim()).filter(Boolean);
    load();
  }

  let redrawTimer = null;
  function init() {
    readUrl();
    const tzSelect = $("tz");
    if (![...tzSelect.options].some((o) => o.value === state.tz)) tzSelect.add(new Option(state.tz, state.tz));
    tzSelect.value = state.tz;
    if (state.from) {
      $("from").value = state.from;
      $("to").value = state.to;
    }
    (state.segments.length ? state.segments : [""]).forEach((s) => addSegmentRow(s));
    document.querySelector(`input[name=window_size][value=${state.windowSize}]`).checked = true;
    document.querySelector(`input[name=cohort][value=${state.cohort}]`).checked = true;

    $("filters").addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });
    ["from", "to", "tz"].forEach((id) => $(id).addEventListener("change", applyFilters));
    $("add-segment").addEventListener("click", () => addSegmentRow().focus());
    $("reset-range").addEventListener("click", () => {
      state.tz = tzSelect.value;
      state.segments = [...document.querySelectorAll(".segment-input")].map((i) => i.value.trim()).filter(Boolean);
      load({ resetRange: true });
    });
    document.querySelectorAll("input[name=window_size], input[name=cohort]").forEach((input) => {
      input.addEventListener("change", () => {
        state.windowSize = document.querySelector("input[name=window_size]:checked").value;
        state.cohort = document.querySelector("input[name=cohort]:checked").value;
        loadRetention();
      });
    });
    new ResizeObserver(() => {
      clearTimeout(redrawTimer);
      redrawTimer = setTimeout(redrawIfResized, 120);
    }).observe($("dau-chart").parentElement);
    load();
  }

  init();
})();
