/* eventsapp dashboard: the Funnel panel (GET /stats/funnel). Its own file; it reads the page's range,
 * timezone and segment from the filter form and redraws whenever the main dashboard has rendered.
 * Values shown are also exposed as data-* attributes (tests read them). */
(() => {
  "use strict";
  const { html } = window.eventsappDom;

  const $ = (id) => document.getElementById(id);
  const root = $("dashboard");
  const panel = $("funnel-panel");
  if (!root || !panel) return;
  const API_BASE = root.dataset.apiBase || "";
  const KEY_STORE = "eventsapp.readKey";
  const MAX_STEPS = 10;
  const DEFAULT_STEPS = ["app_open", "add_to_cart", "purchase"];
  const numberFormat = new Intl.NumberFormat();
  const percentFormat = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });

  let eventTypes = [];
  let controller = null;
  let generation = 0;
  let lastRange = "";


  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function range() {
    const segments = [...document.querySelectorAll(".segment-input")].map((i) => i.value.trim()).filter(Boolean);
    return { from: $("from").value, to: $("to").value, tz: $("tz").value, segments };
  }

  async function api(path, params, signal) {
    const url = new URL(API_BASE + path, location.origin);
    params.forEach(([k, v]) => url.searchParams.append(k, v));
    const headers = { Accept: "application/json" };
    let key = null;
    try { key = sessionStorage.getItem(KEY_STORE); } catch (err) { /* storage disabled */ }
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(url, { headers, signal });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const error = new Error((body && body.message) || `The server answered ${response.status}.`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // ---- step pickers, filled with the event types seen in the range
  function stepSelects() {
    return [...panel.querySelectorAll(".funnel-step")];
  }

  function addStep(value) {
    const list = $("funnel-steps");
    const n = list.children.length + 1;
    const li = html("li", { className: "funnel-step-row" });
    const id = `funnel-step-${n}-${Date.now()}`;
    const label = html("label", { for: id }, `Step ${n}`);
    const select = html("select", { id, className: "funnel-step" });
    fillOptions(select, value);
    select.addEventListener("change", draw);
    const remove = html("button", { type: "button", className: "secondary remove", "aria-label": `Remove step ${n}` }, "×");
    remove.addEventListener("click", () => {
      if (stepSelects().length <= 2) return;
      li.remove();
      relabel();
      draw();
    });
    li.append(label, select, remove);
    list.appendChild(li);
    $("funnel-add-step").disabled = stepSelects().length >= MAX_STEPS;
  }

  function relabel() {
    stepSelects().forEach((select, i) => {
      select.previousElementSibling.textContent = `Step ${i + 1}`;
      select.nextElementSibling.setAttribute("aria-label", `Remove step ${i + 1}`);
    });
    $("funnel-add-step").disabled = stepSelects().length >= MAX_STEPS;
  }

  function fillOptions(select, wanted) {
    const current = wanted || select.value;
    select.replaceChildren(...eventTypes.map((name) => new Option(name, name)));
    if (current && !eventTypes.includes(current)) select.add(new Option(current, current));
    if (current) select.value = current;
  }

  // ---- drawing
  function setState(state, message = "") {
    panel.dataset.state = state;
    const note = $("funnel-message");
    note.textContent = message;
    note.hidden = !message;
    note.classList.toggle("error", state === "error");
  }

  function render(rows, steps) {
    const overall = rows.filter((r) => r.group === "value" && r.breakdown === null);
    const bars = $("funnel-bars");
    const table = $("funnel-table");
    bars.replaceChildren();
    // Without a breakdown the bars are the one group; with one they are the sum over groups.
    const totals = steps.map((_, k) => rows.filter((r) => r.step === k + 1).reduce((a, r) => a + r.users, 0));
    const source = overall.length ? overall.map((r) => r.users) : totals;
    const first = source[0] || 0;
    if (!first) {
      setState("empty", "Nobody did the first step in this range.");
      table.hidden = true;
      return;
    }
    steps.forEach((step, k) => {
      const users = source[k];
      const previous = k ? source[k - 1] : users;
      const fromStart = first ? users / first : 0;
      const fromPrevious = previous ? users / previous : 0;
      const median = overall.length ? overall[k].median_seconds : null;
      const li = html("li", { className: "funnel-bar" });
      Object.assign(li.dataset, { step: String(k + 1), users: String(users), fromStart: fromStart.toFixed(4),
                                  fromPrevious: fromPrevious.toFixed(4), median: median === null ? "" : String(median) });
      if (k) {
        li.appendChild(html("p", { className: "funnel-between" },
          `↓ ${percentFormat.format(fromPrevious)} converted` + (overall.length ? ` · median ${duration(median)}` : "")));
      }
      const label = html("div", { className: "funnel-label" });
      label.append(html("span", { className: "funnel-name" }, `${k + 1}. ${step}`),
                   html("span", { className: "funnel-value" }, `${numberFormat.format(users)} · ${percentFormat.format(fromStart)}`));
      const track = html("div", { className: "funnel-track", role: "img",
                                  "aria-label": `Step ${k + 1}, ${step}: ${numberFormat.format(users)} users, ${percentFormat.format(fromStart)} of step 1` });
      const fill = html("div", { className: "funnel-fill" });
      fill.style.width = `${Math.max(fromStart * 100, users ? 0.5 : 0)}%`;
      track.appendChild(fill);
      li.append(label, track);
      bars.appendChild(li);
    });
    renderTable(rows, steps);
    setState("ready");
  }

  function renderTable(rows, steps) {
    const table = $("funnel-table");
    const groups = [];
    rows.forEach((r) => {
      const name = r.group === "value" ? r.breakdown : `$${r.group}`;
      let g = groups.find((x) => x.name === name && x.group === r.group);
      if (!g) groups.push(g = { name, group: r.group, rows: [] });
      g.rows.push(r);
    });
    const breakdown = $("funnel-breakdown").value.trim();
    table.hidden = !breakdown;
    if (!breakdown) return;
    const head = html("tr");
    head.appendChild(html("th", { scope: "col" }, breakdown.replace(/^properties\./, "")));
    steps.forEach((s, k) => head.appendChild(html("th", { scope: "col" }, `${k + 1}. ${s}`)));
    head.appendChild(html("th", { scope: "col" }, "Converted"));
    table.tHead.replaceChildren(head);
    const body = groups.map((g) => {
      const tr = html("tr", { className: `group-${g.group}` });
      tr.dataset.group = g.group;
      tr.dataset.breakdown = g.name === null ? "" : g.name;
      tr.appendChild(html("th", { scope: "row" }, g.group === "value" ? g.name : (g.group === "other" ? "Other values" : "(none)")));
      g.rows.forEach((r) => {
        const td = html("td", {}, numberFormat.format(r.users));
        td.dataset.users = String(r.users);
        tr.appendChild(td);
      });
      tr.appendChild(html("td", {}, percentFormat.format(g.rows[g.rows.length - 1].from_start)));
      return tr;
    });
    table.tBodies[0].replaceChildren(...body);
  }

  async function draw() {
    const gen = ++generation;
    if (controller) controller.abort();
    controller = new AbortController();
    const r = range();
    if (!r.from || !r.to) return;
    const steps = stepSelects().map((s) => s.value).filter(Boolean);
    if (steps.length < 2) {
      setState("empty", "Pick at least two steps.");
      return;
    }
    const params = [["from", r.from], ["to", r.to], ["tz", r.tz], ...r.segments.map((s) => ["segment", s]),
                    ...steps.map((s) => ["step", `event_type:${s}`]),
                    ["window", $("funnel-window").value], ["order", $("funnel-order").value]];
    const breakdown = $("funnel-breakdown").value.trim();
    if (breakdown) params.push(["breakdown", breakdown.startsWith("properties.") ? breakdown : `properties.${breakdown}`]);
    setState("loading", "Loading…");
    try {
      const rows = await api("/stats/funnel", params, controller.signal);
      if (gen !== generation) return;
      render(rows, steps);
      panel.dataset.query = new URLSearchParams(params).toString();  // what the drawn answer was asked
      panel.dataset.renderCount = String(Number(panel.dataset.renderCount || 0) + 1);
    } catch (err) {
      if (err.name === "AbortError" || gen !== generation) return;
      setState("error", err.message);
    }
  }

  async function refresh() {
    const r = range();
    const key = JSON.stringify(r);
    if (!r.from || !r.to || key === lastRange) return;
    lastRange = key;
    try {
      const top = await api("/stats/top-events", [["from", r.from], ["to", r.to], ["tz", r.tz], ["limit", "1000"]]);
      eventTypes = top.map((t) => t.event_type).sort();
    } catch (err) {
      setState("error", err.message);
      return;
    }
    if (!stepSelects().length) {
      const defaults = DEFAULT_STEPS.every((s) => eventTypes.includes(s)) ? DEFAULT_STEPS : eventTypes.slice(0, 3);
      (defaults.length >= 2 ? defaults : [eventTypes[0] || "", eventTypes[1] || ""]).forEach((s) => addStep(s));
    } else {
      stepSelects().forEach((s) => fillOptions(s));
    }
    draw();
  }

  function init() {
    $("funnel-add-step").addEventListener("click", () => {
      if (stepSelects().length >= MAX_STEPS) return;
      addStep(eventTypes[0] || "");
      draw();
    });
    ["funnel-window", "funnel-order"].forEach((id) => $(id).addEventListener("change", draw));
    $("funnel-breakdown").addEventListener("change", draw);
    // The main dashboard counts its renders on #dashboard: follow its range, timezone and segment.
    new MutationObserver(() => {
      if (root.dataset.status === "ready") refresh();
    }).observe(root, { attributes: true, attributeFilter: ["data-render-count"] });
    if (root.dataset.status === "ready") refresh();
  }

  init();
})();
