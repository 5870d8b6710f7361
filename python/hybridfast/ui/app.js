// The hybridfast dashboard: one page per hash route, plain DOM and SVG, no build step.
// Every call goes to the gateway's own /admin API, relative to where /ui is served, so the
// dashboard works behind a path prefix. The session is an HttpOnly cookie; mutations carry
// the CSRF token the session endpoint returns. At most one live-feed connection is open.

const BASE = new URL("..", location.href);
const $ = (sel, root = document) => root.querySelector(sel);
let csrf = "";
let live = null; // the one EventSource, open while the Overview shows

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick" || k === "onchange" || k === "onsubmit") node[k] = v;
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

async function call(path, { method = "GET", body, raw = false } = {}) {
  const headers = {};
  if (method !== "GET") headers["x-hybridfast-csrf"] = csrf;
  if (body !== undefined && typeof body !== "string") headers["content-type"] = "application/json";
  const resp = await fetch(new URL(path, BASE), {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  if (resp.status === 401) { showLogin(); throw new Error("signed out"); }
  if (raw) return resp;
  const data = resp.headers.get("content-type")?.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const err = data?.error ?? data;
    throw new Error(typeof err === "string" ? err : `${err.code ?? resp.status}: ${err.message ?? ""}`);
  }
  return data;
}

// --- formatting and charts ------------------------------------------------------------

// Estimates (the live feed's float rates) are rounded; ledger amounts arrive as exact decimal
// strings and are shown as they are.
const usd = (x) => (x === null || x === undefined ? "–" : `$${Number(x).toFixed(Math.abs(x) < 0.01 ? 6 : 2)}`);
const exact = (s) => (s === null || s === undefined ? "–" : `$${s}`);
const num = (x, d = 0) => (x === null || x === undefined ? "–" : Number(x).toLocaleString(undefined, { maximumFractionDigits: d }));
const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
const time = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);
const pill = (text, kind) => el("span", { class: `pill ${kind}` }, text);

function sparkline(values) {
  const w = 200, h = 44, vals = values.map((v) => v ?? 0);
  const max = Math.max(...vals, 1e-9);
  const pts = vals.map((v, i) => `${(i / Math.max(vals.length - 1, 1)) * w},${h - 2 - (v / max) * (h - 4)}`);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.innerHTML = `<polyline class="line" points="${pts.join(" ")}"/>`;
  return svg;
}

function barChart(rows, label, value, format) {
  const w = 760, bar = 22, h = rows.length * (bar + 6) + 10;
  const max = Math.max(...rows.map(value), 1e-12);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "chart");
  svg.innerHTML = rows.map((r, i) => {
    const y = 5 + i * (bar + 6), len = (value(r) / max) * (w - 360);
    const name = String(label(r)).replace(/[<&>]/g, "");
    return `<text x="0" y="${y + 15}">${name.slice(0, 34)}</text>` +
      `<rect class="bar" x="230" y="${y}" width="${Math.max(len, 1)}" height="${bar}" rx="3"/>` +
      `<text x="${236 + len}" y="${y + 15}">${format(value(r))}</text>`;
  }).join("");
  return svg;
}

function table(columns, rows, onclick) {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map(([title, , cls]) => el("th", { class: cls ?? "" }, title)))),
    el("tbody", {}, rows.map((r) => el("tr", onclick ? { class: "clickable", onclick: () => onclick(r) } : {},
      columns.map(([, cell, cls]) => { const v = cell(r); return el("td", { class: cls ?? "" }, v instanceof Node ? v : String(v ?? "–")); })))));
}

// --- pages ------------------------------------------------------------------------------

const pages = {};

pages.overview = async (page) => {
  const series = { requests: [], errors: [], p50: [], p99: [], tokens: [], cost: [], hit: [] };
  const cards = [
    ["requests", "requests / s", (v) => num(v)],
    ["p50", "latency p50 (ms)", (v) => num(v, 1)],
    ["p99", "latency p99 (ms)", (v) => num(v, 1)],
    ["errors", "errors / s", (v) => num(v)],
    ["tokens", "tokens / s", (v) => num(v)],
    ["cost", "cost / hour", (v) => usd(v)],
    ["hit", "cache hit rate", (v) => pct(v)],
  ];
  const grid = el("div", { class: "grid", id: "live-grid" });
  page.append(el("h1", {}, "Overview"), el("p", { class: "muted", id: "live-status" }, "connecting to the live feed…"), grid);
  const render = () => {
    grid.replaceChildren(...cards.map(([key, label, fmt]) => {
      const vals = series[key];
      return el("div", { class: "card stat", "data-stat": key },
        el("div", { class: "label" }, label), el("div", { class: "value" }, fmt(vals.at(-1))), sparkline(vals.slice(-120)));
    }));
  };
  render();
  live = new EventSource(new URL("admin/live", BASE), { withCredentials: true });
  live.onmessage = (event) => {
    const s = JSON.parse(event.data);
    series.requests.push(s.requests); series.errors.push(s.errors);
    series.p50.push(s.latency_p50_ms); series.p99.push(s.latency_p99_ms);
    series.tokens.push(s.input_tokens + s.output_tokens); series.cost.push(s.cost_usd * 3600);
    series.hit.push(s.cache_hit_rate);
    for (const k of Object.keys(series)) if (series[k].length > 300) series[k].shift();
    $("#live-status").textContent = `live · last second ${time(s.ts * 1000)} UTC`;
    render();
  };
  live.onerror = () => { $("#live-status").textContent = "live feed interrupted; reconnecting…"; };
};

pages.spend = async (page) => {
  const by = el("select", { id: "spend-by" }, ["model", "key", "team", "route", "deployment", "provider", "user"].map((b) => el("option", { value: b }, b)));
  const range = el("select", { id: "spend-range" }, [["day", "last 24 hours"], ["week", "last 7 days"], ["month", "last 30 days"]].map(([v, t]) => el("option", { value: v }, t)));
  const out = el("div");
  const days = { day: 1, week: 7, month: 30 };
  const load = async () => {
    const since = new Date(Date.now() - days[range.value] * 86400e3).toISOString();
    const q = `since=${encodeURIComponent(since)}`;
    const [groups, overTime] = await Promise.all([
      call(`admin/spend?by=${by.value}&${q}`), call(`admin/spend?by=${range.value === "day" ? "hour" : "day"}&${q}`)]);
    const rows = groups.rows.sort((a, b) => b.cost_picodollars - a.cost_picodollars);
    out.replaceChildren(
      el("div", { class: "card" }, el("h2", {}, `cost by ${by.value}`), rows.length ? barChart(rows.slice(0, 15), (r) => r.group ?? "–", (r) => Number(r.cost_usd), usd) : el("p", { class: "muted" }, "no spend in this range")),
      el("div", { class: "card" }, el("h2", {}, "cost over time"), overTime.rows.length ? barChart(overTime.rows, (r) => (r.period_start ?? "").replace("T", " ").slice(0, 16), (r) => Number(r.cost_usd), usd) : el("p", { class: "muted" }, "no spend in this range")),
      el("div", { class: "card" }, table([[by.value, (r) => r.group], ["requests", (r) => num(r.requests), "num"], ["cache hits", (r) => num(r.cache_hits), "num"], ["input tokens", (r) => num(r.input_tokens), "num"], ["output tokens", (r) => num(r.output_tokens), "num"], ["cost", (r) => exact(r.cost_usd), "num"], ["saved by the cache", (r) => exact(r.saved_usd), "num"]], rows)));
  };
  const csv = el("button", { class: "secondary", id: "spend-csv", onclick: async () => {
    const since = new Date(Date.now() - days[range.value] * 86400e3).toISOString();
    const resp = await call(`admin/spend?by=${by.value}&since=${encodeURIComponent(since)}&format=csv`, { raw: true });
    const a = el("a", { href: URL.createObjectURL(await resp.blob()), download: `spend-by-${by.value}.csv` });
    a.click();
  } }, "Export CSV");
  by.onchange = load; range.onchange = load;
  page.append(el("h1", {}, "Spend"), el("div", { class: "toolbar" }, "by", by, range, csv), out);
  await load();
};

pages.requests = async (page) => {
  const fields = ["model", "key", "team", "route", "deployment", "status", "cache", "code"];
  const inputs = Object.fromEntries(fields.map((f) => [f, el("input", { placeholder: f, "data-filter": f, size: 12 })]));
  const list = el("div", { class: "card" });
  const detail = el("div", { id: "request-detail" });
  let cursor = null;
  const load = async (next = false) => {
    const q = new URLSearchParams({ limit: "50" });
    for (const f of fields) if (inputs[f].value) q.set(f, inputs[f].value);
    if (next && cursor) q.set("cursor", cursor);
    const data = await call(`admin/requests?${q}`);
    cursor = data.next_cursor;
    list.replaceChildren(table([
      ["time", (r) => time(r.ts_ms)], ["id", (r) => r.request_id], ["endpoint", (r) => r.endpoint],
      ["model", (r) => r.model], ["deployment", (r) => r.deployment],
      ["status", (r) => pill(String(r.status), r.status < 400 ? "good" : r.status < 500 ? "warn" : "bad")],
      ["cache", (r) => r.cache], ["tokens", (r) => num(r.input_tokens + r.output_tokens), "num"],
      ["cost", (r) => exact(r.cost_usd), "num"], ["latency ms", (r) => num(r.latency_ms, 1), "num"]],
      data.data, (r) => showRequest(detail, r)),
      el("div", { class: "toolbar" }, el("span", { class: "muted" }, `${data.data.length} rows`),
        cursor ? el("button", { class: "secondary", id: "requests-next", onclick: () => load(true) }, "Next page") : ""));
  };
  page.append(el("h1", {}, "Requests"),
    el("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); load(); } }, Object.values(inputs), el("button", { type: "submit", id: "requests-filter" }, "Filter")),
    list, detail);
  await load();
};

function showRequest(box, r) {
  const rows = [["request id", r.request_id], ["trace id", r.trace_id], ["time", time(r.ts_ms)], ["endpoint", r.endpoint],
    ["route", r.route], ["model", r.model], ["deployment", r.deployment], ["provider", r.provider],
    ["key", r.key_name], ["team", r.team], ["status", r.status], ["code", r.code], ["stream", r.stream ? "yes" : "no"],
    ["cache", r.cache], ["fallbacks", r.fallbacks], ["recovered stream", r.recovered ? "yes" : "no"],
    ["input / output tokens", `${r.input_tokens} / ${r.output_tokens}`], ["cached input tokens", r.cached_input_tokens],
    ["cost", exact(r.cost_usd)], ["latency", `${num(r.latency_ms, 2)} ms`], ["time to first token", r.ttft_ms == null ? "–" : `${num(r.ttft_ms, 2)} ms`],
    ["gateway overhead", r.overhead_ms == null ? "–" : `${num(r.overhead_ms, 3)} ms`]];
  box.replaceChildren(el("div", { class: "card", "data-request": r.request_id }, el("h2", {}, `request ${r.request_id}`),
    table([["", (x) => x[0]], ["", (x) => x[1]]], rows)));
}

pages.deployments = async (page) => {
  const data = await call("admin/deployments");
  const circuit = (c) => pill(c, c === "closed" ? "good" : c === "open" ? "bad" : "warn");
  page.append(el("h1", {}, "Deployments"), el("div", { class: "card" }, table([
    ["deployment", (d) => d.id], ["model", (d) => d.model], ["provider", (d) => d.provider],
    ["local", (d) => (d.local ? "yes" : "no")], ["circuit", (d) => circuit(d.circuit)],
    ["in flight", (d) => num(d.in_flight), "num"], ["queued", (d) => num(d.queued), "num"],
    ["latency (EWMA)", (d) => (d.latency_s == null ? "–" : `${num(d.latency_s * 1000, 1)} ms`), "num"],
    ["TTFT (EWMA)", (d) => (d.ttft_s == null ? "–" : `${num(d.ttft_s * 1000, 1)} ms`), "num"],
    ["error rate", (d) => pct(d.error_rate), "num"], ["capabilities", (d) => (d.capabilities.length ? d.capabilities.join(", ") : "any")],
    ["price in/out per Mtok", (d) => d.price]], data.deployments)),
  data.gpus.length ? el("div", { class: "card" }, el("h2", {}, "GPUs"), table([
    ["gpu", (g) => g.index], ["name", (g) => g.name], ["state", (g) => pill(g.healthy ? "up" : "down", g.healthy ? "good" : "bad")],
    ["utilisation", (g) => pct(g.utilization), "num"], ["memory", (g) => `${num(g.memory_used / 2 ** 30, 1)} / ${num(g.memory_total / 2 ** 30, 1)} GiB`, "num"],
    ["temperature", (g) => `${g.temperature_c} °C`, "num"], ["problem", (g) => g.problem]], data.gpus)) : "");
};

pages.budgets = async (page) => {
  const data = await call("admin/budgets");
  const bar = (b) => {
    const used = b.limit_picodollars ? Number(b.spent_picodollars) / Number(b.limit_picodollars) : 0;
    return pill(pct(used), used >= 1 ? "bad" : used >= (b.soft_fraction ?? 0.8) ? "warn" : "good");
  };
  page.append(el("h1", {}, "Budgets & keys"), el("div", { class: "card" }, el("h2", {}, "budgets"), data.budgets.length ? table([
    ["scope", (b) => b.scope], ["name", (b) => b.name ?? "–"], ["window", (b) => b.window], ["limit", (b) => exact(b.limit_usd), "num"],
    ["spent", (b) => exact(b.spent_usd), "num"], ["reserved", (b) => exact(b.reserved_usd), "num"], ["remaining", (b) => exact(b.remaining_usd), "num"],
    ["used", bar]], data.budgets) : el("p", { class: "muted" }, "no budgets configured")));
  const keys = await call("admin/keys").catch(() => null);
  if (keys?.keys) page.append(el("div", { class: "card" }, el("h2", {}, "keys created at run time"), keys.keys.length ? table([
    ["name", (k) => k.name], ["key", (k) => k.key_hint], ["user", (k) => k.user], ["team", (k) => k.team],
    ["status", (k) => pill(k.status, k.status === "active" ? "good" : "bad")],
    ["expires", (k) => (k.expires_at ? time(k.expires_at * 1000) : "never")], ["models", (k) => (k.models?.length ? k.models.join(", ") : "all")]], keys.keys)
    : el("p", { class: "muted" }, "none: create one with `hybridfast keys create NAME`")));
};

pages.cache = async (page) => {
  const out = el("div");
  const load = async () => {
    const s = await call("admin/cache");
    out.replaceChildren(el("div", { class: "card" }, el("pre", { id: "cache-stats" }, JSON.stringify(s, null, 2))));
  };
  const clear = el("button", { class: "secondary", id: "cache-clear", onclick: async () => {
    if (confirm("Remove every cached answer?")) { await call("admin/cache", { method: "DELETE" }); await load(); }
  } }, "Clear the cache");
  page.append(el("h1", {}, "Cache"), el("div", { class: "toolbar" }, clear), out);
  await load();
};

// An arm's 95% interval on a 0-100% axis, its mean a dot: overlapping bars mean "not yet".
function interval(arm) {
  const w = 160, h = 14, x = (v) => 4 + (v ?? 0) * (w - 8);
  const [low, high] = arm.ci95;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "interval");
  svg.innerHTML = `<line class="axis" x1="4" x2="${w - 4}" y1="7" y2="7"/>` +
    `<rect class="bar" x="${x(low)}" y="3" width="${Math.max(x(high) - x(low), 1)}" height="8" rx="2"/>` +
    (arm.mean === null ? "" : `<circle class="mean" cx="${x(arm.mean)}" cy="7" r="3"/>`);
  return svg;
}

pages.experiments = async (page) => {
  const data = await call("admin/experiments");
  page.append(el("h1", {}, "Experiments"));
  if (!data.experiments.length) {
    page.append(el("p", { class: "muted" }, "no experiment yet: a route with `router: bandit` starts one with its first request (docs/experiments.md)"));
    return;
  }
  for (const x of data.experiments) {
    const status = x.status === "stopped" ? pill(`stopped: ${x.winner} wins`, "good") : pill("running", "warn");
    page.append(el("div", { class: "card", "data-experiment": x.route },
      el("h2", {}, `${x.route} · ${x.metric} `, status),
      el("p", { class: "muted" }, `each arm needs ${x.min_samples} judged answers; the experiment stops when committing to the leader is expected to lose less than ${x.max_loss} of ${x.metric}`),
      table([
        ["arm", (a) => a.arm], ["judged", (a) => num(a.n, 1), "num"], ["mean", (a) => pct(a.mean), "num"],
        ["95% interval", (a) => `${pct(a.ci95[0])} – ${pct(a.ci95[1])}`, "num"], ["", interval],
        ["P(best)", (a) => pct(a.p_best), "num"], ["expected loss", (a) => num(a.expected_loss, 5), "num"]], x.arms)));
  }
};

pages.config = async (page) => {
  const data = await call("admin/config");
  const editor = el("textarea", { id: "config-text", spellcheck: "false" });
  editor.value = data.text;
  const message = el("p", { id: "config-message", role: "status" });
  const send = async (dryRun) => {
    message.className = ""; message.textContent = dryRun ? "checking…" : "applying…";
    try {
      const r = await call(`admin/config${dryRun ? "?dry_run=1" : ""}`, { method: "POST", body: { text: editor.value } });
      message.className = "ok"; message.textContent = r.message;
    } catch (e) { message.className = "error"; message.textContent = e.message; }
  };
  const audit = el("div", { class: "card", id: "config-audit" });
  const loadAudit = async () => {
    const log = await call("admin/audit?limit=10").catch(() => null);
    if (log?.entries) audit.replaceChildren(el("h2", {}, "recent admin actions"), table([
      ["when", (a) => time(a.at * 1000)], ["who", (a) => a.actor], ["what", (a) => a.action], ["target", (a) => a.target]], log.entries));
  };
  const sendAndLog = async (dryRun) => { await send(dryRun); if (!dryRun) await loadAudit(); };
  page.append(el("h1", {}, "Config"), el("p", { class: "muted" }, `${data.source} · secrets are masked; leave a masked value as it is to keep it`),
    el("div", { class: "toolbar" }, el("button", { class: "secondary", id: "config-check", onclick: () => sendAndLog(true) }, "Check"),
      el("button", { id: "config-apply", onclick: () => sendAndLog(false) }, "Apply")), message, el("div", { class: "card" }, editor), audit);
  await loadAudit();
};

// --- shell ---------------------------------------------------------------------------------

function showLogin() {
  $("#nav").hidden = true; $("#logout").hidden = true; $("#page").replaceChildren(); $("#login").hidden = false;
}

async function route() {
  if (live) { live.close(); live = null; }
  const name = (location.hash.slice(1) || "overview").split("?")[0];
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === `#${name}`);
  const page = el("section", { id: `page-${name}` });
  $("#page").replaceChildren(page);
  try { await (pages[name] ?? pages.overview)(page); } catch (e) { if (e.message !== "signed out") page.append(el("p", { class: "error" }, e.message)); }
}

async function start() {
  const session = await fetch(new URL("ui/session", BASE), { credentials: "same-origin" }).then((r) => r.json());
  if (!session.authenticated) return showLogin();
  csrf = session.csrf;
  $("#login").hidden = true; $("#nav").hidden = false; $("#logout").hidden = false;
  await route();
}

$("#login").onsubmit = async (event) => {
  event.preventDefault();
  const resp = await fetch(new URL("ui/login", BASE), { method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" }, body: JSON.stringify({ key: $("#login-key").value }) });
  $("#login-key").value = "";
  if (!resp.ok) { $("#login-error").textContent = "that key is not an admin key of this gateway"; return; }
  await start();
};
$("#logout").onclick = async () => { await call("ui/logout", { method: "POST" }).catch(() => {}); showLogin(); };
window.addEventListener("hashchange", route);
start();
