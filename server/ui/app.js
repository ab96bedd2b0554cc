// ecad playground: the bank's quality/latency front, the server's choice for a budget, generation.
// Plain browser JavaScript, no dependencies, no network access beyond this server's own API.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SELECT_DEBOUNCE_MS = 150;
  const PLOT_MARGIN = { left: 64, right: 22, top: 24, bottom: 48 };
  const THUMB = 18; // px, keep in sync with style.css (input[type=range] thumb)

  const state = {
    bank: null,        // GET /schedules
    noCacheId: null,
    bestId: null,      // best-quality entry: what a request without a budget gets
    selection: null,   // last GET /select answer, with .budget (the slider string it answers)
    selectSeq: 0,
    selectTimer: null,
    lastRun: null,     // {schedule_id, predicted_ms, actual_ms} of the last budgeted generation
    busy: false,
    x: null, y: null,  // plot scales
  };

  // -- API ------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, field) {
      super(message);
      this.status = status;
      this.field = field || null;
    }
  }

  // Two error shapes reach the page: the server's own {error, field?} / {error, detail: [{field,
  // error}]}, and BentoML's input validation {error, detail: [{loc: [...], msg}]} (pydantic's).
  function detailField(d) {
    if (!d || typeof d !== "object") return null;
    if (d.field) return String(d.field);
    if (Array.isArray(d.loc) && d.loc.length) return d.loc.join(".");
    return null;
  }

  function describeError(response, body, text) {
    if (body && typeof body === "object") {
      if (Array.isArray(body.detail) && body.detail.length) {
        return body.detail
          .map((d) => {
            const field = detailField(d);
            const msg = d && typeof d === "object" ? d.error || d.msg || JSON.stringify(d) : String(d);
            return field ? `${field}: ${msg}` : msg;
          })
          .join("; ");
      }
      if (body.error) return String(body.error);
      if (typeof body.detail === "string") return body.detail;
      if (body.message) return String(body.message);
    }
    if (text && text.trim()) return text.trim().slice(0, 400);
    return response.statusText || "no details";
  }

  async function api(path, options) {
    let response;
    try {
      response = await fetch(path, { cache: "no-store", ...options });
    } catch (err) {
      throw new ApiError(0, `cannot reach the server (${err.message})`);
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const field = body && typeof body === "object" ? body.field || (Array.isArray(body.detail) ? detailField(body.detail[0]) : null) : null;
      throw new ApiError(response.status, describeError(response, body, text), field);
    }
    if (body === null || typeof body !== "object") {
      throw new ApiError(response.status, `unexpected answer from ${path} (not JSON)`);
    }
    return body;
  }

  // -- errors ---------------------------------------------------------------------------------

  const STATUS_HINT = {
    400: "the request was refused",
    404: "not found",
    429: "too many requests",
    503: "server busy",
    504: "timed out",
  };

  function showError(title, err) {
    const box = $("errors");
    const item = document.createElement("div");
    item.className = "error";
    const status = err instanceof ApiError && err.status ? ` (HTTP ${err.status}${STATUS_HINT[err.status] ? ", " + STATUS_HINT[err.status] : ""})` : "";
    const strong = document.createElement("strong");
    strong.textContent = `${title}${status}: `;
    const msg = document.createElement("span");
    msg.className = "error-message";
    msg.textContent = err && err.message ? err.message : String(err);
    const close = document.createElement("button");
    close.type = "button";
    close.className = "error-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", () => item.remove());
    item.append(strong, msg, close);
    box.append(item);
    while (box.children.length > 4) box.firstElementChild.remove();
    if (err instanceof ApiError && err.field) markField(err.field);
  }

  function clearErrors() {
    $("errors").replaceChildren();
    for (const el of document.querySelectorAll(".invalid")) el.classList.remove("invalid");
  }

  function markField(field) {
    const name = String(field).split(".").pop();
    const el = { prompt: $("prompt"), seed: $("seed"), latency_ms: $("budget") }[name];
    if (el) el.classList.add("invalid");
  }

  // -- formatting -----------------------------------------------------------------------------

  function fmtMs(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "–";
    if (ms >= 10000) return `${(ms / 1000).toFixed(1)} s`;
    if (ms >= 100) return `${Math.round(ms)} ms`;
    if (ms >= 10) return `${ms.toFixed(1)} ms`;
    return `${ms.toFixed(2)} ms`;
  }

  // A budget exactly as sent (the slider's value), not rounded like other latencies.
  function fmtBudget(ms) {
    return ms >= 10000 ? fmtMs(ms) : `${+Number(ms).toFixed(3)} ms`;
  }

  function fmtMacs(n) {
    if (!isFinite(n)) return "–";
    for (const [unit, size] of [["T", 1e12], ["G", 1e9], ["M", 1e6], ["k", 1e3]]) {
      if (n >= size) return `${(n / size).toFixed(n / size >= 100 ? 0 : n / size >= 10 ? 1 : 2)} ${unit}`;
    }
    return String(n);
  }

  function fmtQ(q) {
    if (q === null || q === undefined || !isFinite(q)) return "–";
    const a = Math.abs(q);
    if (a !== 0 && (a < 0.01 || a >= 1e5)) return q.toExponential(2);
    return q.toFixed(a >= 100 ? 1 : a >= 1 ? 3 : 4);
  }

  function quality(entry) {
    return entry.quality[state.bank.quality_metric];
  }

  function decimalsOf(step) {
    const s = String(step);
    return s.includes(".") ? s.split(".")[1].length : 0;
  }

  // -- bank -----------------------------------------------------------------------------------

  async function loadBank() {
    const bank = await api("/schedules");
    if (!Array.isArray(bank.entries) || !bank.entries.length) {
      throw new ApiError(200, "the server's bank has no entries");
    }
    state.bank = bank;
    const entries = bank.entries;
    const noCache = entries.find((e) => e.source === "no-cache") ||
      entries.reduce((a, b) => (b.recompute_fraction > a.recompute_fraction ? b : a));
    state.noCacheId = noCache.id;
    const byQuality = [...entries].sort((a, b) => quality(b) - quality(a) || a.predicted_ms - b.predicted_ms || (a.id < b.id ? -1 : 1));
    state.bestId = byQuality[0].id;
    renderFacts();
    renderTable();
    setupSlider();
    drawPlot();
  }

  function renderFacts() {
    const b = state.bank;
    const model = String(b.model);
    const short = model.replace(/\/+$/, "").split("/").slice(-2).join("/");
    setFact("fact-model", short, model);
    const frames = b.num_frames ? ` · ${b.num_frames} frames` : "";
    setFact("fact-setting", `${b.width}×${b.height}${frames} · ${b.num_inference_steps} steps · CFG ${b.guidance_scale}`);
    setFact("fact-quality", `${b.quality_metric}`, `scorer: ${b.scorer}; higher is better`);
    const hw = String(b.hardware_profile || "");
    setFact("fact-hardware", hw.split("/").join(" · "), hw);
    $("th-quality").textContent = b.quality_metric;
  }

  function setFact(id, text, title) {
    const el = $(id);
    el.textContent = text;
    el.title = title || text;
  }

  function renderTable() {
    const tbody = $("entries").tBodies[0];
    const rows = [...state.bank.entries].sort((a, b) => a.predicted_ms - b.predicted_ms);
    tbody.replaceChildren(
      ...rows.map((e) => {
        const tr = document.createElement("tr");
        tr.dataset.id = e.id;
        const cells = [
          e.id, e.source, fmtQ(quality(e)), fmtMs(e.predicted_ms),
          `${Math.round(e.recompute_fraction * 100)}%`, fmtMacs(e.macs),
        ];
        cells.forEach((text, i) => {
          const td = document.createElement("td");
          td.textContent = text;
          if (i >= 2) td.className = "num";
          if (i === 0) td.innerHTML = `<code>${escapeHtml(text)}</code>`;
          tr.append(td);
        });
        return tr;
      })
    );
    $("entry-count").textContent = String(rows.length);
    highlightRow();
  }

  function highlightRow() {
    const id = state.selection && state.selection.schedule_id;
    for (const tr of $("entries").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.id === id);
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  // -- slider ---------------------------------------------------------------------------------

  function niceStep(raw) {
    const exp = Math.floor(Math.log10(raw));
    const base = Math.pow(10, exp);
    const f = raw / base;
    const nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
    return +(nice * base).toPrecision(6);
  }

  function sliderRange() {
    const ms = state.bank.entries.map((e) => e.predicted_ms);
    if (state.lastRun) ms.push(state.lastRun.actual_ms);
    const lo = Math.min(...ms);
    const hi = Math.max(...ms);
    const span = Math.max(hi - lo, hi * 0.1, 1e-3);
    const step = niceStep(span / 400);
    const min = Math.max(step, Math.floor((lo - span * 0.12) / step) * step);
    const max = Math.ceil((hi + span * 0.12) / step) * step;
    return { min, max, step };
  }

  function setupSlider() {
    const slider = $("budget");
    let { min, max, step } = sliderRange();
    const first = slider.disabled;
    if (!first) {
      // Refreshed predictions: only ever widen the range and keep the step, so the budget the
      // user picked stays where it is.
      step = Number(slider.step);
      min = Math.min(min, Number(slider.min));
      max = Math.max(max, Number(slider.max));
      min = Math.max(step, Math.floor(min / step) * step);
      max = Math.ceil(max / step) * step;
    }
    const d = decimalsOf(step);
    let value = first ? null : Number(slider.value);
    if (value === null) {
      // Start between the fastest and the slowest entry, so the first choice is a cached one.
      const ms = state.bank.entries.map((e) => e.predicted_ms).sort((a, b) => a - b);
      value = ms[Math.floor((ms.length - 1) / 2)] + step / 2;
    }
    slider.min = min.toFixed(d);
    slider.max = max.toFixed(d);
    slider.step = String(step);
    value = Math.min(max, Math.max(min, Math.round(value / step) * step));
    slider.value = value.toFixed(d);
    slider.disabled = false;
    $("budget-min").textContent = fmtMs(min);
    $("budget-max").textContent = fmtMs(max);
    updateBudgetLabel();
  }

  function updateBudgetLabel() {
    const slider = $("budget");
    // The exact value sent to /select and /generate (not rounded for display).
    $("budget-value").textContent = fmtBudget(Number(slider.value));
    slider.setAttribute("aria-valuetext", fmtMs(Number(slider.value)));
    const pct = ((slider.value - slider.min) / (slider.max - slider.min)) * 100;
    slider.style.setProperty("--fill", `${pct}%`);
  }

  function onSlider() {
    updateBudgetLabel();
    drawPlot();
    const sel = $("selection");
    sel.dataset.state = "pending";
    clearTimeout(state.selectTimer);
    state.selectTimer = setTimeout(refreshSelection, SELECT_DEBOUNCE_MS);
  }

  // -- selection (the server's choice for the budget) -----------------------------------------

  async function refreshSelection() {
    const budget = $("budget").value; // the exact string sent to /select and /generate
    const seq = ++state.selectSeq;
    const sel = $("selection");
    sel.dataset.state = "pending";
    try {
      const answer = await api(`/select?latency_ms=${encodeURIComponent(budget)}`);
      if (seq !== state.selectSeq) return; // a newer request is in flight
      state.selection = { ...answer, budget };
      renderSelection();
      drawPlot();
      highlightRow();
    } catch (err) {
      if (seq !== state.selectSeq) return;
      state.selection = null;
      sel.dataset.state = "error";
      $("selected-id").textContent = "–";
      $("selected-badge").textContent = "";
      $("selected-detail").textContent = "";
      showError("Could not select a schedule", err);
      drawPlot();
    }
  }

  function renderSelection() {
    const s = state.selection;
    const sel = $("selection");
    $("selected-id").textContent = s.schedule_id;
    const badge = $("selected-badge");
    badge.textContent = s.budget_met ? "fits the budget" : "over budget";
    badge.className = `badge ${s.budget_met ? "ok" : "bad"}`;
    const entry = state.bank.entries.find((e) => e.id === s.schedule_id);
    const noCache = state.bank.entries.find((e) => e.id === state.noCacheId);
    const parts = [
      `predicted ${fmtMs(s.predicted_ms)}`,
      `${state.bank.quality_metric} ${fmtQ(s.quality)}`,
    ];
    if (entry && noCache && s.schedule_id !== state.noCacheId) {
      parts.push(`${(noCache.predicted_ms / s.predicted_ms).toFixed(2)}× faster than no-cache`);
    }
    if (entry) parts.push(`recomputes ${Math.round(entry.recompute_fraction * 100)}%`);
    const detail = $("selected-detail");
    detail.replaceChildren();
    detail.append(parts.join(" · "));
    const reason = document.createElement("div");
    reason.className = "muted small";
    reason.textContent = [s.reason, ...(s.notes || [])].filter(Boolean).join(" · ");
    detail.append(reason);
    sel.dataset.met = String(s.budget_met);
    sel.dataset.budget = s.budget;
    sel.dataset.selected = s.schedule_id;
    sel.dataset.state = "ready";
  }

  // -- plot -----------------------------------------------------------------------------------

  function niceTicks(lo, hi, count) {
    const step = niceStep((hi - lo) / count);
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(10));
    return ticks;
  }

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    if (parent) parent.append(el);
    return el;
  }

  function paretoFront(entries) {
    const sorted = [...entries].sort((a, b) => a.predicted_ms - b.predicted_ms || quality(b) - quality(a));
    const front = [];
    let best = -Infinity;
    for (const e of sorted) {
      if (quality(e) > best) {
        front.push(e);
        best = quality(e);
      }
    }
    return front;
  }

  function drawPlot() {
    const plot = $("plot");
    if (!state.bank) return;
    const wrap = $("plot-wrap");
    const W = Math.max(320, wrap.clientWidth);
    const H = Math.round(Math.min(380, Math.max(260, W * 0.56)));
    plot.setAttribute("viewBox", `0 0 ${W} ${H}`);
    plot.setAttribute("width", W);
    plot.setAttribute("height", H);
    plot.replaceChildren();

    const m = PLOT_MARGIN;
    const iw = W - m.left - m.right;
    const ih = H - m.top - m.bottom;
    const slider = $("budget");
    const xmin = Number(slider.min);
    const xmax = Number(slider.max);
    const entries = state.bank.entries;
    const qs = entries.map(quality);
    let qlo = Math.min(...qs);
    let qhi = Math.max(...qs);
    const qpad = Math.max((qhi - qlo) * 0.12, Math.abs(qhi) * 0.01, 1e-6);
    qlo -= qpad;
    qhi += qpad;
    const x = (v) => m.left + ((v - xmin) / (xmax - xmin)) * iw;
    const y = (v) => m.top + (1 - (v - qlo) / (qhi - qlo)) * ih;
    state.x = x;
    state.y = y;

    // Align the slider's thumb travel with the x axis, so the budget line sits above the thumb.
    const budgetBox = document.querySelector(".budget");
    budgetBox.style.setProperty("--track-left", `${m.left - THUMB / 2}px`);
    budgetBox.style.setProperty("--track-right", `${m.right - THUMB / 2}px`);

    const defs = svg("defs", {}, plot);
    const pattern = svg("pattern", { id: "hatch", width: 7, height: 7, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, defs);
    svg("line", { x1: 0, y1: 0, x2: 0, y2: 7, class: "hatch-line" }, pattern);
    const clip = svg("clipPath", { id: "plot-clip" }, defs);
    svg("rect", { x: m.left, y: m.top, width: iw, height: ih }, clip);

    // grid + axes
    const grid = svg("g", { class: "grid" }, plot);
    const xt = niceTicks(xmin, xmax, Math.max(3, Math.floor(iw / 90)));
    const yt = niceTicks(qlo, qhi, Math.max(3, Math.floor(ih / 55)));
    const xd = decimalsOf(niceStep((xmax - xmin) / Math.max(3, Math.floor(iw / 90))));
    const yd = Math.min(6, decimalsOf(niceStep((qhi - qlo) / Math.max(3, Math.floor(ih / 55)))));
    for (const t of xt) {
      svg("line", { x1: x(t), x2: x(t), y1: m.top, y2: m.top + ih }, grid);
      const label = svg("text", { x: x(t), y: m.top + ih + 18, class: "tick", "text-anchor": "middle" }, plot);
      label.textContent = t.toFixed(Math.min(xd, 3));
    }
    for (const t of yt) {
      svg("line", { x1: m.left, x2: m.left + iw, y1: y(t), y2: y(t) }, grid);
      const label = svg("text", { x: m.left - 8, y: y(t) + 4, class: "tick", "text-anchor": "end" }, plot);
      label.textContent = t.toFixed(yd);
    }
    svg("rect", { x: m.left, y: m.top, width: iw, height: ih, class: "frame" }, plot);
    const xl = svg("text", { x: m.left + iw / 2, y: H - 8, class: "axis-label", "text-anchor": "middle" }, plot);
    xl.textContent = "predicted latency on this server (ms)";
    const yl = svg("text", { x: 0, y: 0, class: "axis-label", "text-anchor": "middle", transform: `translate(16 ${m.top + ih / 2}) rotate(-90)` }, plot);
    yl.textContent = `${state.bank.quality_metric} (higher is better)`;

    const body = svg("g", { "clip-path": "url(#plot-clip)" }, plot);

    // region over the budget
    const budget = Number(slider.value);
    const bx = x(budget);
    svg("rect", { x: bx, y: m.top, width: Math.max(0, m.left + iw - bx), height: ih, class: "over-budget" }, body);
    svg("rect", { x: bx, y: m.top, width: Math.max(0, m.left + iw - bx), height: ih, fill: "url(#hatch)" }, body);

    // attainable quality for a budget: a step function along the front
    const front = paretoFront(entries);
    const onFront = new Set(front.map((e) => e.id));
    let d = "";
    front.forEach((e, i) => {
      const px = x(e.predicted_ms);
      const py = y(quality(e));
      d += i === 0 ? `M${px},${py}` : `V${py}`;
      const next = front[i + 1];
      d += `H${next ? x(next.predicted_ms) : m.left + iw}`;
    });
    svg("path", { d, class: "front" }, body);

    // budget line
    svg("line", { x1: bx, x2: bx, y1: m.top, y2: m.top + ih, class: "budget-line" }, body);
    // its label sits above the frame, where no point can be
    const labelRight = bx + 100 <= m.left + iw;
    const bl = svg("text", { x: labelRight ? bx + 4 : bx - 4, y: m.top - 7, class: "budget-text", "text-anchor": labelRight ? "start" : "end" }, plot);
    bl.textContent = `budget ${fmtBudget(budget)}`;

    // last run: predicted -> actual
    const run = state.lastRun;
    const runEntry = run && entries.find((e) => e.id === run.schedule_id);
    if (runEntry) {
      const ry = y(quality(runEntry));
      svg("line", { x1: x(run.predicted_ms), x2: x(run.actual_ms), y1: ry, y2: ry, class: "run-link" }, body);
      const ax = x(run.actual_ms);
      svg("path", { d: `M${ax - 5},${ry - 5}L${ax + 5},${ry + 5}M${ax - 5},${ry + 5}L${ax + 5},${ry - 5}`, class: "run-actual" }, body);
    }

    // points
    const selected = state.selection && $("selection").dataset.state === "ready" ? state.selection.schedule_id : null;
    const points = svg("g", { class: "points" }, plot);
    const ordered = [...entries].sort((a, b) => (a.id === selected) - (b.id === selected));
    for (const e of ordered) {
      const px = x(e.predicted_ms);
      const py = y(quality(e));
      const isNoCache = e.id === state.noCacheId;
      const kind = isNoCache ? "nocache" : e.source === "heuristic" ? "heuristic" : "ecad";
      const g = svg("g", { class: `pt ${kind}${onFront.has(e.id) ? "" : " dominated"}${e.id === selected ? " selected" : ""}`, "data-id": e.id }, points);
      if (e.id === selected) svg("circle", { cx: px, cy: py, r: 11, class: "sel-ring" }, g);
      if (isNoCache) svg("path", { d: `M${px},${py - 7}L${px + 7},${py}L${px},${py + 7}L${px - 7},${py}Z`, class: "mark" }, g);
      else if (kind === "heuristic") svg("rect", { x: px - 4.5, y: py - 4.5, width: 9, height: 9, rx: 1.5, class: "mark" }, g);
      else svg("circle", { cx: px, cy: py, r: 5, class: "mark" }, g);
      const title = svg("title", {}, g);
      title.textContent = e.id;
      const hit = svg("circle", { cx: px, cy: py, r: 12, class: "hit" }, g);
      hit.addEventListener("mouseenter", () => showTooltip(e, px, py));
      hit.addEventListener("mouseleave", hideTooltip);
      hit.addEventListener("click", () => setBudget(e.predicted_ms));
      if (isNoCache || e.id === selected) {
        // Above the point: the front's step line and the last run's link run level with it.
        const right = px > m.left + iw * 0.8;
        const left = px < m.left + iw * 0.12;
        const anchor = right ? "end" : left ? "start" : "middle";
        const label = svg("text", { x: px + (right ? 6 : left ? -6 : 0), y: py - 13, class: `pt-label${e.id === selected ? " sel" : ""}`, "text-anchor": anchor }, g);
        label.textContent = e.id;
      }
    }
  }

  function setBudget(ms) {
    const slider = $("budget");
    const step = Number(slider.step);
    const v = Math.min(Number(slider.max), Math.max(Number(slider.min), Math.ceil(ms / step - 1e-9) * step));
    slider.value = v.toFixed(decimalsOf(step));
    onSlider();
  }

  function showTooltip(e, px, py) {
    const tip = $("tooltip");
    const noCache = state.bank.entries.find((n) => n.id === state.noCacheId);
    const speed = noCache && e.id !== noCache.id ? `<div>${(noCache.predicted_ms / e.predicted_ms).toFixed(2)}× faster than no-cache</div>` : "";
    tip.innerHTML =
      `<div class="tip-id">${escapeHtml(e.id)}</div>` +
      `<div class="tip-src">${escapeHtml(e.source)}</div>` +
      `<table>` +
      `<tr><td>${escapeHtml(state.bank.quality_metric)}</td><td>${fmtQ(quality(e))}</td></tr>` +
      `<tr><td>predicted</td><td>${fmtMs(e.predicted_ms)}</td></tr>` +
      `<tr><td>profiled</td><td>${fmtMs(e.profiled_ms)}</td></tr>` +
      `<tr><td>recompute</td><td>${Math.round(e.recompute_fraction * 100)}%</td></tr>` +
      `<tr><td>MACs</td><td>${fmtMacs(e.macs)}</td></tr>` +
      `</table>${speed}<div class="tip-hint">click to set the budget here</div>`;
    tip.hidden = false;
    const wrap = $("plot-wrap");
    const w = tip.offsetWidth;
    const left = px + 14 + w > wrap.clientWidth ? px - 14 - w : px + 14;
    tip.style.left = `${Math.max(0, left)}px`;
    tip.style.top = `${Math.max(0, py - 20)}px`;
  }

  function hideTooltip() {
    $("tooltip").hidden = true;
  }

  // -- generation -----------------------------------------------------------------------------

  function readForm(withBudget) {
    const body = { prompt: $("prompt").value };
    const seedText = $("seed").value.trim();
    if (seedText !== "") body.seed = Number(seedText);
    else if ($("seed").validity.badInput) body.seed = NaN; // refused below, readable message
    if (withBudget) body.latency_ms = Number($("budget").value);
    return body;
  }

  async function postGenerate(body) {
    if (body.seed !== undefined && !Number.isFinite(body.seed)) {
      throw new ApiError(0, "seed: must be a whole number between 0 and 4294967295", "seed");
    }
    return api("/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
  }

  function setBusy(busy, message) {
    state.busy = busy;
    $("generate").disabled = busy || !state.bank;
    $("compare").disabled = busy || !state.bank;
    $("results").dataset.state = busy ? "running" : $("results").dataset.state === "running" ? "idle" : $("results").dataset.state;
    const status = $("status");
    clearInterval(state.statusTimer);
    if (busy) {
      const t0 = performance.now();
      const tick = () => {
        status.innerHTML = `<span class="spinner" aria-hidden="true"></span>${escapeHtml(message)} <span class="muted">${((performance.now() - t0) / 1000).toFixed(1)} s</span>`;
      };
      tick();
      state.statusTimer = setInterval(tick, 100);
    } else {
      status.textContent = message || "";
    }
  }

  async function run(compare) {
    if (state.busy) return;
    clearErrors();
    const budgetText = $("budget").value;
    const withBudget = readForm(true);
    let cached = null;
    let reference = null;
    setBusy(true, `Generating with a ${fmtBudget(Number(budgetText))} budget…`);
    try {
      cached = await postGenerate(withBudget);
      if (compare) {
        setBusy(true, "Generating the no-cache reference…");
        const ref = readForm(false);
        ref.seed = cached.seed; // same noise, so the images are comparable
        ref.schedule_id = state.noCacheId; // pinned: exactly what a server without caching runs
        reference = await postGenerate(ref);
      }
      state.lastRun = { schedule_id: cached.schedule_id, predicted_ms: cached.predicted_ms, actual_ms: cached.actual_ms };
      renderResults(cached, reference);
      setBusy(false, "");
    } catch (err) {
      if (cached) {
        state.lastRun = { schedule_id: cached.schedule_id, predicted_ms: cached.predicted_ms, actual_ms: cached.actual_ms };
        renderResults(cached, null);
      }
      setBusy(false, "");
      if (!cached) $("results").dataset.state = $("results").querySelector(".result") ? "done" : "empty";
      showError(cached ? "Reference generation failed" : "Generation failed", err);
    }
    // The server learns from observed latencies: fetch its updated predictions and choice.
    try {
      await loadBank();
      await refreshSelection();
    } catch (err) {
      showError("Could not refresh the schedule bank", err);
    }
  }

  function figure(result, label, cls) {
    const node = $("result-tpl").content.firstElementChild.cloneNode(true);
    node.classList.add(cls);
    node.dataset.scheduleId = result.schedule_id;
    const img = node.querySelector("img");
    const mediaType = result.media_type || "image/png";
    if (mediaType.startsWith("video/")) {
      // a video model: its MP4 (H.264) in a looping, muted <video> (muted: browsers autoplay only those)
      const video = document.createElement("video");
      Object.assign(video, { autoplay: true, loop: true, muted: true, controls: true, playsInline: true });
      video.setAttribute("aria-label", `${result.schedule_id}: ${$("prompt").value}`);
      video.addEventListener("loadeddata", () => {
        if (video.videoWidth < 256) video.classList.add("pixelated");
        node.dataset.loaded = "true";
      });
      video.src = `data:${mediaType};base64,${result.images[0]}`;
      img.replaceWith(video);
    } else {
      img.src = `data:${mediaType};base64,${result.images[0]}`;
      img.alt = `${result.schedule_id}: ${$("prompt").value}`;
      img.addEventListener("load", () => {
        if (img.naturalWidth < 256) img.classList.add("pixelated");
        node.dataset.loaded = "true";
      });
    }
    node.querySelector(".cap-label").textContent = label;
    node.querySelector(".result-id").textContent = result.schedule_id;
    node.querySelector(".m-pred").textContent = fmtMs(result.predicted_ms);
    node.querySelector(".m-actual").textContent = fmtMs(result.actual_ms);
    node.querySelector(".m-queue").textContent = fmtMs(result.queue_ms);
    const budgetDd = node.querySelector(".m-budget");
    if (result.latency_ms === null || result.latency_ms === undefined) {
      budgetDd.textContent = "none";
    } else {
      budgetDd.innerHTML = `${escapeHtml(fmtBudget(result.latency_ms))} <span class="badge ${result.budget_met ? "ok" : "bad"}">${result.budget_met ? "met" : "missed"}</span>`;
      budgetDd.dataset.met = String(result.budget_met);
    }
    const frames = result.num_frames ? [`${result.num_frames} frames`] : [];
    const notes = [`seed ${result.seed}`, `${result.width}×${result.height}`, ...frames, `${result.num_inference_steps} steps`, ...(result.notes || [])];
    node.querySelector(".cap-notes").textContent = notes.join(" · ");
    return node;
  }

  function renderResults(cached, reference) {
    const box = $("results");
    box.replaceChildren();
    const pair = document.createElement("div");
    pair.className = reference ? "pair" : "single";
    pair.append(figure(cached, "Budgeted", "result-main"));
    if (reference) {
      const isNoCache = reference.schedule_id === state.noCacheId;
      pair.append(figure(reference, isNoCache ? "Reference" : "Best quality", "result-ref"));
    }
    box.append(pair);
    const summary = document.createElement("p");
    summary.className = "summary";
    if (reference) {
      const speedup = reference.actual_ms / cached.actual_ms;
      let text = `Same prompt and seed. The budgeted run took ${fmtMs(cached.actual_ms)}, the reference ${fmtMs(reference.actual_ms)}`;
      if (cached.schedule_id === reference.schedule_id) text += " (the same schedule: the budget allowed the best one).";
      else if (speedup >= 1) text += `: ${speedup.toFixed(2)}× faster.`;
      else text += `: not faster this time (${speedup.toFixed(2)}×; latency varies on a busy machine).`;
      if (reference.schedule_id !== state.noCacheId) {
        text += ` Note: without a budget the server serves the bank's best-quality entry, ${reference.schedule_id}, which is not the no-cache schedule (${state.noCacheId}).`;
      }
      summary.textContent = text;
    } else {
      summary.textContent = `Predicted ${fmtMs(cached.predicted_ms)}, measured ${fmtMs(cached.actual_ms)} (${cached.actual_ms <= cached.predicted_ms ? "faster" : "slower"} than predicted by ${fmtMs(Math.abs(cached.actual_ms - cached.predicted_ms))}).`;
    }
    box.append(summary);
    box.dataset.state = "done";
  }

  // -- wiring ---------------------------------------------------------------------------------

  function init() {
    $("budget").addEventListener("input", onSlider);
    $("gen-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      run(false);
    });
    $("compare").addEventListener("click", () => run(true));
    $("prompt").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        run(false);
      }
    });
    $("seed-random").addEventListener("click", () => {
      const a = new Uint32Array(1);
      crypto.getRandomValues(a);
      $("seed").value = String(a[0]);
    });
    for (const id of ["prompt", "seed"]) $(id).addEventListener("input", () => $(id).classList.remove("invalid"));
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(drawPlot, 100);
    });
    $("plot").addEventListener("mouseleave", hideTooltip);

    loadBank()
      .then(() => {
        setBusy(false, "");
        return refreshSelection();
      })
      .catch((err) => {
        $("selection").dataset.state = "error";
        showError("Could not load the schedule bank", err);
      });
  }

  document.addEventListener("DOMContentLoaded", init);
})();
