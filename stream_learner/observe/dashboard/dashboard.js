// The live dashboard: polls api/status every 2 s and draws it with small SVG charts of its own.
// Every string from the server (model, metric names, topics, reasons) goes in through
// textContent or an attribute, never as markup.
"use strict";

(() => {
  const POLL_MS = 2000;
  const MAX_POINTS = 3600; // an hour at one a second, as the server keeps
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    points: [], // {at, events_per_s, version, lag, metrics}
    versions: [], // {at, version}
    marks: [], // {at, kind, text}: promotions, rollbacks, drift alerts
    lastAt: 0,
    startedAt: null,
    families: "", // the metric selector's options, as JSON, to rebuild it only on change
    status: null,
  };

  const $ = (id) => document.getElementById(id);

  function setText(id, value) {
    const el = $(id);
    const s = String(value);
    if (el.textContent !== s) el.textContent = s;
  }

  function el(tag, attrs = {}, text) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

  function num(v, digits = 4) {
    if (typeof v !== "number" || !Number.isFinite(v)) return "\u2013";
    if (Number.isInteger(v) || Math.abs(v) >= 1000) return intFmt.format(v);
    const s = v.toPrecision(digits);
    if (s.includes("e") || !s.includes(".")) return s;
    return s.replace(/0+$/, "").replace(/\.$/, "");
  }

  function duration(s) {
    if (!Number.isFinite(s)) return "\u2013";
    s = Math.max(0, s);
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toLocaleTimeString(undefined, { hour12: false });
  }

  // -- charts -------------------------------------------------------------------------------

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
  }

  function ticks(lo, hi, count) {
    const step = niceStep(hi - lo, count);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

  function timeTicks(lo, hi, count) {
    const raw = (hi - lo) / Math.max(1, count);
    const step = TIME_STEPS.find((s) => s >= raw) || TIME_STEPS[TIME_STEPS.length - 1];
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
    return out;
  }

  // Draws series over shared xs into svg; a y of null breaks the line. Returns how many xs
  // have a value drawn in at least one series (the chart's data-points).
  function chart(svg, xs, series, opts) {
    const width = Math.max(240, Math.round(svg.getBoundingClientRect().width) || 600);
    const height = opts.height || 180;
    const m = { l: 58, r: 14, t: 10, b: 26 };
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("height", String(height));
    svg.replaceChildren();

    const ys = series.flatMap((s) => s.ys).filter((v) => v !== null && Number.isFinite(v));
    let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1];
    if (opts.zero) y0 = Math.min(0, y0);
    if (y1 - y0 < 1e-12) {
      const pad = Math.abs(y1) > 1e-12 ? Math.abs(y1) * 0.05 : 1;
      y0 -= opts.zero && y0 >= 0 ? 0 : pad;
      y1 += pad;
    } else {
      const pad = (y1 - y0) * 0.06;
      y1 += pad;
      if (!(opts.zero && y0 === 0)) y0 -= pad;
    }
    if (opts.integer) {
      y0 = Math.floor(y0);
      y1 = Math.ceil(y1);
    }
    const [x0, x1] = [opts.x0, opts.x1 > opts.x0 ? opts.x1 : opts.x0 + 1];
    const px = (x) => m.l + ((x - x0) / (x1 - x0)) * (width - m.l - m.r);
    const py = (y) => m.t + (1 - (y - y0) / (y1 - y0)) * (height - m.t - m.b);

    const axis = el("svg:g", { class: "axis", "aria-hidden": "true" });
    let yt = ticks(y0, y1, 4);
    if (opts.integer) yt = yt.filter(Number.isInteger);
    for (const v of yt) {
      const y = py(v);
      axis.append(el("svg:line", { x1: m.l, x2: width - m.r, y1: y, y2: y, class: "grid" }));
      axis.append(el("svg:text", { x: m.l - 6, y: y + 4, "text-anchor": "end" }, num(v, 3)));
    }
    for (const t of timeTicks(x0, x1, Math.max(2, Math.floor((width - m.l - m.r) / 90)))) {
      const x = px(t);
      axis.append(el("svg:line", { x1: x, x2: x, y1: height - m.b, y2: height - m.b + 4, class: "tick" }));
      axis.append(el("svg:text", { x, y: height - 8, "text-anchor": "middle" }, clock(t)));
    }
    axis.append(el("svg:line", { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b, class: "base" }));
    svg.append(axis);
    for (const mark of opts.marks || []) {
      if (mark.at < x0 || mark.at > x1) continue;
      const x = px(mark.at);
      const line = el("svg:line", { x1: x, x2: x, y1: m.t, y2: height - m.b, class: `mark ${mark.kind}` });
      line.append(el("svg:title", {}, `${mark.kind}: ${mark.text}`));
      svg.append(line);
    }

    const drawn = new Set();
    series.forEach((s, k) => {
      let d = "";
      let open = false;
      let last = null;
      s.ys.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) {
          open = false;
          return;
        }
        drawn.add(i);
        const x = px(xs[i]).toFixed(1);
        const y = py(v).toFixed(1);
        if (!open) d += `M${x} ${y}`;
        else d += opts.step ? `H${x}V${y}` : `L${x} ${y}`;
        open = true;
        last = [x, y];
      });
      const cls = `s${k % 4}`;
      if (d) svg.append(el("svg:path", { d, class: `line ${cls}` }));
      if (last) svg.append(el("svg:circle", { cx: last[0], cy: last[1], r: 3, class: `dot ${cls}` }));
    });
    if (!drawn.size) {
      svg.append(el("svg:text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "nodata" }, "no data yet"));
    }
    const summary = el("svg:title", {}, opts.summary || "");
    svg.prepend(summary);
    svg.setAttribute("data-points", String(drawn.size));
    return drawn.size;
  }

  // -- the figures ----------------------------------------------------------------------------

  function families(names) {
    // "Accuracy" and "Accuracy@1000" are one family: cumulative, then rolling windows.
    const out = new Map();
    for (const name of names) {
      const at = name.indexOf("@");
      const base = at < 0 ? name : name.slice(0, at);
      if (!out.has(base)) out.set(base, []);
      out.get(base).push(name);
    }
    for (const members of out.values()) members.sort((a, b) => (a.includes("@") - b.includes("@")) || a.localeCompare(b));
    return out;
  }

  function metricNames(status) {
    const seen = new Set(Object.keys(status.metrics || {}));
    for (const p of state.points) for (const k of Object.keys(p.metrics || {})) seen.add(k);
    return [...seen];
  }

  function renderSelector(fams) {
    const select = $("metric-select");
    const key = JSON.stringify([...fams.keys()]);
    if (key === state.families) return;
    state.families = key;
    const chosen = select.value;
    select.replaceChildren(...[...fams.keys()].map((base) => {
      const option = el("option", {}, base);
      option.value = base;
      return option;
    }));
    if (fams.has(chosen)) select.value = chosen;
    select.disabled = fams.size < 2;
  }

  function renderMetric(span) {
    const status = state.status;
    const fams = families(metricNames(status));
    renderSelector(fams);
    const base = $("metric-select").value;
    const members = fams.get(base) || [];
    setText("metric-title", base ? `Prequential ${base}` : "Prequential metric");
    const xs = state.points.map((p) => p.at);
    // The champion's series, then each challenger's rolling one.
    const rolling = members.find((name) => name.includes("@"));
    const lines = [
      ...members.map((name) => ({ name, who: "", now: (status.metrics || {})[name] })),
      ...(rolling ? Object.entries(status.challengers || {}).map(([who, c]) => ({ name: rolling, who, now: c.metrics[rolling] })) : []),
    ];
    const series = lines.map((line) => ({
      name: line.who ? `${line.who}: ${line.name}` : line.name,
      ys: state.points.map((p) => {
        const figures = line.who ? (p.challengers || {})[line.who] : p.metrics;
        const v = figures ? figures[line.name] : null;
        return typeof v === "number" ? v : null;
      }),
    }));
    const label = (line) => {
      const at = line.name.indexOf("@");
      const what = at < 0 ? `${line.name} (cumulative)` : `${line.name} (last ${line.name.slice(at + 1)} events)`;
      return line.who ? `${line.who}: ${what}` : what;
    };
    const latest = lines.map((line) => `${label(line)}: ${num(line.now)}`);
    chart($("metric-chart"), xs, series, { ...span, marks: state.marks, summary: latest.join("; ") || "no metric" });
    $("metric-legend").replaceChildren(...lines.map((line, k) => {
      const item = el("li");
      item.append(el("span", { class: `swatch s${k % 4}`, "aria-hidden": "true" }), el("span", {}, label(line)),
        el("strong", {}, num(line.now)));
      return item;
    }));
    renderModels(status, members);
    renderKeys(status, members.find((name) => !name.includes("@")), Date.now() / 1000);
  }

  function renderModels(status, members) {
    const challengers = Object.entries(status.challengers || {});
    $("models-panel").hidden = challengers.length === 0;
    const cumulative = members.find((name) => !name.includes("@"));
    const rolling = members.find((name) => name.includes("@"));
    setText("models-cumulative", cumulative || "cumulative");
    setText("models-rolling", rolling || "rolling");
    const row = (name, spec, learned, metrics, error) => [name, el("td", { class: "spec" }, spec),
      el("td", { class: "num" }, num(learned)), el("td", { class: "num" }, num((metrics || {})[cumulative])),
      el("td", { class: "num" }, num((metrics || {})[rolling])), error ? `stopped: ${error}` : "learning"];
    renderTable("models-table", [
      row("champion", status.spec || "", status.learned_total, status.metrics, ""),
      ...challengers.map(([name, c]) => row(name, c.spec, c.learned, c.metrics, c.error)),
    ]);
  }

  // Key scope: the process's key-model figures and a row per partition it owns or serves.
  function renderKeys(status, metric, now) {
    const keys = status.keys || {};
    const scoped = Object.keys(keys).length > 0;
    $("keys-panel").hidden = !scoped;
    setText("version-label", scoped ? "Highest partition version" : "Model version");
    if (!scoped) return;
    const asked = (keys.hits || 0) + (keys.misses || 0);
    const names = ["cached", "created", "expired", "evicted", "hits", "misses"].filter((k) => k in keys);
    renderTable("keys-table", [
      ...names.map((k) => [k, el("td", { class: "num" }, num(keys[k]))]),
      ["cache hit ratio", el("td", { class: "num" }, asked ? num(keys.hits / asked, 3) : "\u2013")],
    ]);
    setText("partitions-metric", metric || "metric");
    renderTable("partitions-table", (status.partitions || []).map((p) => [String(p.partition),
      el("td", { class: "num" }, num(p.version)),
      el("td", { class: "num" }, num(((p.metrics || {})[metric]))),
      el("td", { class: "num" }, p.checkpoint_bytes ? num(p.checkpoint_bytes) : "\u2013"),
      el("td", { class: "num" }, p.checkpoint_at ? duration(now - p.checkpoint_at) : "\u2013")]));
  }

  function renderMarks() {
    const rows = [...state.marks].reverse().map((m) => [clock(m.at), m.kind, m.text]);
    renderTable("marks-table", rows);
    $("marks-empty").hidden = rows.length > 0;
  }

  function renderVersions(span) {
    const shown = [];
    let before = null;
    for (const v of state.versions) {
      if (v.at < span.x0) before = v;
      else shown.push(v);
    }
    if (before) shown.unshift({ at: span.x0, version: before.version });
    const steps = shown.length; // the versions drawn; the last one's step runs on to the span's end
    if (shown.length) shown.push({ at: Math.max(span.x1, shown[shown.length - 1].at), version: shown[shown.length - 1].version });
    const xs = shown.map((v) => v.at);
    const ys = shown.map((v) => v.version);
    const svg = $("version-chart");
    chart(svg, xs, [{ ys }], { ...span, step: true, integer: true, height: 150,
      summary: `version ${state.status.version}, ${state.versions.length} changes kept` });
    svg.setAttribute("data-points", String(steps));
  }

  function renderTable(id, rows) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren(...rows.map((cells) => {
      const tr = el("tr");
      for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", {}, cell));
      return tr;
    }));
    $(id).hidden = rows.length === 0;
  }

  function renderLags(status) {
    const lags = status.lags || [];
    const max = Math.max(1, ...lags.map((l) => l.lag));
    renderTable("lag-table", lags.map((l) => {
      const bar = el("td", { class: "barcell", "aria-hidden": "true" });
      const fill = el("span", { class: "bar" });
      fill.style.width = `${(100 * l.lag) / max}%`;
      bar.append(fill);
      return [String(l.topic), String(l.partition), el("td", { class: "num" }, num(l.lag)), bar];
    }));
    $("lag-empty").hidden = lags.length > 0;
  }

  function renderLetters(status) {
    const rows = Object.entries(status.dead_letters || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    renderTable("letters-table", rows.map(([reason, n]) => [reason, el("td", { class: "num" }, num(n))]));
    $("letters-empty").hidden = rows.length > 0;
  }

  function badge(id, ok, yes, no) {
    const b = $(id);
    b.className = `badge ${ok === null ? "unknown" : ok ? "ok" : "bad"}`;
    setText(id, ok === null ? `${yes} ?` : ok ? yes : no);
  }

  function render() {
    const s = state.status;
    if (!s) return;
    const now = Date.now() / 1000;
    setText("model", s.model);
    setText("mode", s.mode);
    $("instance-wrap").hidden = !s.instance;
    setText("instance", s.instance || "");
    setText("uptime", duration(now - s.started_at));
    document.title = `${s.model} (${s.mode}) \u00b7 stream-learner`;
    badge("healthy", s.healthy, "healthy", `stuck ${duration(s.beat_age_s)}`);
    badge("ready", s.ready, "ready", "not ready");

    setText("version", String(s.version));
    setText("rate", num(Math.round(s.events_per_s)));
    for (const k of ["predicted", "learned", "dead_lettered"]) setText(k, num((s.outcomes || {})[k] || 0));
    if (s.mode === "frozen") {
      setText("checkpoint-label", "Reloads");
      setText("checkpoint", num(s.reloads));
      setText("checkpoint-note", "new versions loaded from the store");
    } else {
      setText("checkpoint-label", "Last checkpoint");
      setText("checkpoint", s.last_checkpoint_at ? `${duration(now - s.last_checkpoint_at)} ago` : "none yet");
      setText("checkpoint-note", s.last_checkpoint_bytes ? `${num(s.last_checkpoint_bytes)} bytes` : "");
    }
    setText("assigned", num(s.assigned));
    setText("lease", s.lease_held === null ? "" : s.lease_held ? "writer lease held" : "standby: no writer lease");

    const xs = state.points.map((p) => p.at);
    // The time axis: the points kept, at least 10 s, up to the latest point or version change.
    const last = state.versions.length ? state.versions[state.versions.length - 1].at : -Infinity;
    const end = Math.max(xs.length ? xs[xs.length - 1] : now, last);
    const span = { x0: Math.min(xs.length ? xs[0] : end, end - 10), x1: end };
    renderMetric(span);
    chart($("rate-chart"), xs, [{ ys: state.points.map((p) => p.events_per_s) }],
      { ...span, zero: true, height: 150, summary: `${num(Math.round(s.events_per_s))} events/s now` });
    renderVersions(span);
    renderLags(s);
    renderLetters(s);
    renderMarks();
  }

  // -- polling --------------------------------------------------------------------------------

  async function poll() {
    try {
      const answer = await fetch(`api/status?since=${encodeURIComponent(String(state.lastAt))}`, { cache: "no-store" });
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      const s = await answer.json();
      if (state.startedAt !== null && s.started_at !== state.startedAt) {
        // Another process answers now: its history is not a continuation of ours.
        state.points = [];
        state.lastAt = 0;
        state.startedAt = s.started_at;
        return poll();
      }
      state.startedAt = s.started_at;
      const fresh = (s.points || []).filter((p) => p.at > state.lastAt);
      state.points.push(...fresh);
      if (state.points.length > MAX_POINTS) state.points.splice(0, state.points.length - MAX_POINTS);
      if (state.points.length) state.lastAt = state.points[state.points.length - 1].at;
      state.versions = s.versions || [];
      state.marks = s.marks || [];
      state.status = s;
      badge("connection", true, "live", "");
      setText("updated", `Updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}.`);
      render();
    } catch (err) {
      badge("connection", false, "", `disconnected, retrying (${err.message || err})`);
    }
  }

  async function loop() {
    await poll();
    setTimeout(loop, POLL_MS);
  }

  $("metric-select").addEventListener("change", render);
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  });
  loop();
})();
