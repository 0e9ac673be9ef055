/* eventsapp dashboard: the Trends panel. Draws /stats/trends as one SVG line per breakdown series
 * ($other and none last, muted), a legend, a hover/keyboard read-out and a table. It follows the page's
 * range, timezone and segments (read from the URL after each render of dashboard.js) and sends the read
 * key dashboard.js keeps in sessionStorage. Values are exposed as data-* attributes (tests read them). */
(() => {
  "use strict";
  const { svg, html } = window.eventsappDom;

  const $ = (id) => document.getElementById(id);
  const root = $("dashboard");
  const panel = $("trends-panel");
  if (!root || !panel) return;
  const API_BASE = root.dataset.apiBase || "";
  const KEY_STORE = "eventsapp.readKey";
  const PROPERTY_MEASURES = ["sum", "avg", "min", "max", "median", "p90", "p95", "p99"];
  const PALETTE = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];
  const MUTED = "#9ca3af";
  const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  let rows = [];
  let series = [];
  let buckets = [];
  let focus = -1;
  let controller = null;
  let pendingQuery = null;
  let geometry = null;

  const format = (v) => (v === null || v === undefined ? "–" : numberFormat.format(v));
  const seriesName = (s) => (s.group === "other" ? "Other values ($other)" : s.group === "none" ? "No value" : s.breakdown === null ? "All" : s.breakdown);

  function query() {
    const page = new URLSearchParams(location.search);
    const params = new URLSearchParams();
    ["from", "to", "tz"].forEach((k) => page.get(k) && params.set(k, page.get(k)));
    page.getAll("segment").forEach((s) => params.append("segment", s));
    const measure = $("trends-measure").value;
    params.set("measure", measure);
    $("trends-property-field").hidden = !PROPERTY_MEASURES.includes(measure);
    if (PROPERTY_MEASURES.includes(measure)) params.set("property", $("trends-property").value.trim());
    params.set("interval", $("trends-interval").value);
    const breakdown = $("trends-breakdown").value.trim();
    if (breakdown) {
      params.set("breakdown", breakdown);
      params.set("limit", $("trends-limit").value);
    }
    if ($("trends-compare").checked) params.set("compare", "previous");
    return params;
  }

  function describe(body, status) {
    if (!body || typeof body !== "object") return `The server answered ${status}.`;
    const fields = [];
    const query = (body.errors && body.errors.query) || {};
    Object.entries(query).forEach(([k, v]) => fields.push(`${k}: ${[].concat(v).join(" ")}`));
    return (body.message || `The server answered ${status}.`) + (fields.length ? ` (${fields.join("; ")})` : "");
  }

  async function load(options) {
    const params = query();
    if (!params.get("from") || !params.get("to")) return;
    const asked = params.toString();
    // Leaving a field by clicking Show fires its change and the form's submit together: the same question
    // is asked once and drawn once. A page refresh (new data, same question) always asks again.
    const refresh = Boolean(options && options.refresh);
    const shown = panel.dataset.state === "ready" && panel.dataset.query === asked;
    if (!refresh && (asked === pendingQuery || (pendingQuery === null && shown))) return;
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    pendingQuery = asked;
    panel.dataset.state = "loading";
    $("trends-error").hidden = true;
    const headers = { Accept: "application/json" };
    let key = null;
    try { key = sessionStorage.getItem(KEY_STORE); } catch (err) { /* storage disabled */ }
    if (key) headers.Authorization = `Bearer ${key}`;
    try {
      const response = await fetch(`${API_BASE}/stats/trends?${params}`, { headers, signal: mine.signal });
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        const message = response.status === 401 || response.status === 403
          ? "A read API key is needed to show trends." : describe(body, response.status);
        throw new Error(message);
      }
      panel.dataset.query = params.toString();
      render(body, params.get("compare") === "previous");
      panel.dataset.state = "ready";
      panel.dataset.renderCount = String(Number(panel.dataset.renderCount || 0) + 1);
    } catch (err) {
      if (err.name === "AbortError") return;
      panel.dataset.state = "error";
      $("trends-error").textContent = err.message;
      $("trends-error").hidden = false;
    } finally {
      if (controller === mine) pendingQuery = null;
    }
  }

  function render(answer, compare) {
    rows = answer;
    // Series in the API's order: ranked values, then other, then none (the muted ones stay last).
    const keys = new Map();
    rows.forEach((r) => {
      const id = `${r.group}\u0000${r.breakdown === null ? "" : r.breakdown}`;
      if (!keys.has(id)) keys.set(id, { id, group: r.group, breakdown: r.breakdown, values: [], previous: [] });
      keys.get(id).values.push(r.value);
      keys.get(id).previous.push(r.previous_value);
    });
    series = [...keys.values()];
    series.forEach((s, i) => {
      s.muted = s.group !== "value";
      s.color = s.muted ? MUTED : PALETTE[i % PALETTE.length];
    });
    buckets = series.length ? rows.slice(0, rows.length / series.length).map((r) => ({ bucket: r.bucket, previous: r.previous_bucket })) : [];
    focus = -1;
    drawChart(compare);
    drawLegend();
    drawTable(compare);
  }

  function drawChart(compare) {
    const container = $("trends-chart");
    container.replaceChildren();
    $("trends-tooltip").hidden = true;
    const empty = !series.length || series.every((s) => s.values.every((v) => !v));
    $("trends-empty").hidden = !empty;
    container.hidden = empty;
    if (empty) return;
    const width = Math.max(container.clientWidth || 600, 280);
    const height = 280;
    const m = { top: 16, right: 16, bottom: 40, left: 64 };
    const plotW = width - m.left - m.right;
    const plotH = height - m.top - m.bottom;
    const all = series.flatMap((s) => s.values.concat(compare ? s.previous : [])).filter((v) => v !== null && v !== undefined);
    const max = Math.max(...all, 0) || 1;
    const min = Math.min(...all, 0);
    const x = (i) => m.left + (buckets.length === 1 ? plotW / 2 : (i * plotW) / (buckets.length - 1));
    const y = (v) => m.top + plotH - ((v - min) / (max - min || 1)) * plotH;
    geometry = { x, y, width };
    const chart = svg("svg", { id: "trends-svg", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      tabindex: "0", class: "line-chart", "aria-label": `Trends: ${series.length} series over ${buckets.length} buckets` });
    const grid = svg("g", { class: "grid", "aria-hidden": "true" }, chart);
    [min, (min + max) / 2, max].forEach((t) => {
      svg("line", { x1: m.left, x2: width - m.right, y1: y(t), y2: y(t) }, grid);
      svg("text", { x: m.left - 8, y: y(t), class: "tick y-tick", "text-anchor": "end", "dominant-baseline": "middle" }, grid).textContent = format(t);
    });
    const every = Math.max(1, Math.ceil(buckets.length / Math.max(2, Math.floor(plotW / 90))));
    buckets.forEach((b, i) => {
      if (i % every) return;
      svg("text", { x: x(i), y: m.top + plotH + 18, class: "tick x-tick", "text-anchor": "middle" }, grid).textContent = b.bucket.slice(0, 16).replace("T", " ");
    });
    // Muted series are drawn first, so the ranked values stay on top of them.
    [...series].sort((a, b) => Number(b.muted) - Number(a.muted)).forEach((s) => {
      const line = (values, dashed) => {
        const points = values.map((v, i) => (v === null || v === undefined ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`));
        const d = points.reduce((acc, p, i) => (p === null ? acc : `${acc}${acc && points[i - 1] !== null && i ? " L" : " M"}${p}`), "").trim();
        if (!d) return;
        svg("path", { d, fill: "none", stroke: s.color, "stroke-width": s.muted ? 1.5 : 2,
          "stroke-dasharray": dashed ? "4 3" : "none", class: `trend-line${s.muted ? " muted" : ""}${dashed ? " previous" : ""}`,
          "data-series": seriesName(s), "data-group": s.group, "data-values": JSON.stringify(values) }, chart);
      };
      if (compare) line(s.previous, true);
      line(s.values, false);
    });
    svg("line", { id: "trends-cursor", class: "cursor", x1: 0, x2: 0, y1: m.top, y2: m.top + plotH, visibility: "hidden" }, chart);
    svg("rect", { class: "hit", x: m.left, y: m.top, width: plotW, height: plotH, fill: "transparent" }, chart);
    const indexAt = (clientX) => {
      const box = chart.getBoundingClientRect();
      const px = ((clientX - box.left) * width) / box.width;
      return buckets.length === 1 ? 0 : Math.min(buckets.length - 1, Math.max(0, Math.round(((px - m.left) / plotW) * (buckets.length - 1))));
    };
    chart.addEventListener("pointermove", (e) => show(indexAt(e.clientX)));
    chart.addEventListener("pointerleave", () => { if (document.activeElement !== chart) hide(); });
    chart.addEventListener("focus", () => show(focus >= 0 ? focus : buckets.length - 1));
    chart.addEventListener("blur", hide);
    chart.addEventListener("keydown", (e) => {
      const moves = { ArrowLeft: -1, ArrowRight: 1 };
      let next = focus;
      if (e.key in moves) next = Math.min(buckets.length - 1, Math.max(0, (focus < 0 ? buckets.length - 1 : focus) + moves[e.key]));
      else if (e.key === "Home") next = 0;
      else if (e.key === "End") next = buckets.length - 1;
      else return;
      e.preventDefault();
      show(next);
    });
    container.appendChild(chart);
  }

  function show(i) {
    const chart = $("trends-svg");
    if (!chart || !buckets[i]) return;
    focus = i;
    const cursor = $("trends-cursor");
    cursor.setAttribute("x1", geometry.x(i));
    cursor.setAttribute("x2", geometry.x(i));
    cursor.setAttribute("visibility", "visible");
    const tip = $("trends-tooltip");
    const list = html("ul");
    series.forEach((s) => {
      const li = html("li", { "data-series": seriesName(s), "data-value": s.values[i] === null ? "" : String(s.values[i]) });
      const swatch = html("span", { className: "swatch", "aria-hidden": "true" });
      swatch.style.setProperty("background", s.color);
      li.append(swatch, document.createTextNode(` ${seriesName(s)}: `), html("strong", {}, format(s.values[i])));
      if (buckets[i].previous !== undefined) li.append(document.createTextNode(` (previous ${format(s.previous[i])})`));
      list.appendChild(li);
    });
    tip.replaceChildren(html("div", { className: "tip-title" }, buckets[i].bucket), list);
    tip.dataset.bucket = buckets[i].bucket;
    tip.hidden = false;
    const box = chart.getBoundingClientRect();
    const scale = box.width / Number(chart.getAttribute("width"));
    tip.style.setProperty("left", `${Math.min(Math.max(geometry.x(i) * scale - tip.offsetWidth / 2, 0), box.width - tip.offsetWidth)}px`);
    tip.style.setProperty("top", "0px");
  }

  function hide() {
    const cursor = $("trends-cursor");
    if (cursor) cursor.setAttribute("visibility", "hidden");
    $("trends-tooltip").hidden = true;
  }

  function drawLegend() {
    const legend = $("trends-legend");
    legend.replaceChildren(...series.map((s) => {
      const li = html("li", { className: s.muted ? "muted" : "", "data-series": seriesName(s), "data-group": s.group });
      const swatch = html("span", { className: "swatch", "aria-hidden": "true" });
      swatch.style.setProperty("background", s.color);
      li.append(swatch, document.createTextNode(` ${seriesName(s)}`));
      return li;
    }));
  }

  function drawTable(compare) {
    const table = $("trends-table");
    const head = html("tr");
    head.append(html("th", { scope: "col" }, "Bucket"));
    series.forEach((s) => {
      head.append(html("th", { scope: "col" }, seriesName(s)));
      if (compare) head.append(html("th", { scope: "col" }, `${seriesName(s)} (previous)`));
    });
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(...buckets.map((b, i) => {
      const tr = html("tr", { "data-bucket": b.bucket });
      tr.append(html("td", {}, b.bucket));
      series.forEach((s) => {
        tr.append(html("td", { "data-series": seriesName(s), "data-value": s.values[i] === null ? "" : String(s.values[i]) }, format(s.values[i])));
        if (compare) tr.append(html("td", {}, format(s.previous[i])));
      });
      return tr;
    }));
  }

  ["trends-measure", "trends-interval", "trends-compare", "trends-limit"].forEach((id) => $(id).addEventListener("change", load));
  ["trends-property", "trends-breakdown"].forEach((id) => $(id).addEventListener("change", load));
  $("trends-form").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  // Follow the page: each finished render of dashboard.js (new range, timezone or segments) reloads trends.
  new MutationObserver(() => root.dataset.status === "ready" && load({ refresh: true }))
    .observe(root, { attributes: true, attributeFilter: ["data-render-count"] });
  if (root.dataset.status === "ready") load();
})();
