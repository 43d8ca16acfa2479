// The operator's console: reads the admin API with the token typed once (kept in this tab's
// sessionStorage, sent as `Authorization: Bearer`, never in a cookie or a URL) and draws what
// it answers. Every string from the gateway (backend names, messages, plugin output) is
// untrusted: the page is built with DOM APIs and textContent only, never parsed as HTML.
"use strict";

const TOKEN_KEY = "platform-gateway-admin-token";
const REFRESH_MS = 5000;
const VIEWS = ["overview", "backends", "routes", "rollouts", "plans"];

/** An answer of the admin API that was not a success, with its error body. */
class ApiFailure extends Error {
  constructor(status, body) {
    const message = body && body.error_msg ? body.error_msg : "HTTP " + status;
    const cause = body && body.error_cause ? ": " + body.error_cause : "";
    super(message + cause);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** `method` `path` on the admin API (same origin), JSON in and out. */
async function api(path, method, body, headers) {
  const init = { method: method || "GET", headers: Object.assign({}, headers || {}), credentials: "omit", cache: "no-store" };
  const t = token();
  if (t) {
    init.headers["Authorization"] = "Bearer " + t;
  }
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch (_) {
    parsed = null;
  }
  if (!response.ok) {
    throw new ApiFailure(response.status, parsed);
  }
  return parsed;
}

// ---- DOM helpers: every text goes through textContent.

/** An element `tag` with `attrs` (class, id, other attributes) and `children` (nodes or text). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function card(label, value, attrs) {
  return el("div", Object.assign({ class: "card" }, attrs || {}), el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function table(headings, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { class: h.num ? "num" : null }, h.num ? h.text : h)))),
    el("tbody", {}, rows));
}

function badge(text, kind) {
  return el("span", { class: "badge " + (kind || text) }, text);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (Math.round(n * 10) / 10) + " " + units[i];
}

function percent(rate) {
  return (Math.round(rate * 1000) / 10).toFixed(1) + "%";
}

function time(ms) {
  return stamp(new Date(ms).toISOString());
}

/** An RFC 3339 time as the page shows it: `2026-01-02 10:00:00Z`. */
function stamp(text) {
  return String(text).replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function shortDigest(digest) {
  return digest && digest.length > 19 ? digest.slice(0, 19) + "…" : digest;
}

// ---- Charts: small SVG line charts built with DOM calls (no inline style: presentation by class).

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

/**
 * A line chart of `series` ([{cls, points: [[x, y]]}]) over x in [x0, x1], y in [0, yMax];
 * `threshold`, if given, is drawn as a dashed line; `unit` labels the y axis.
 */
function chart(series, x0, x1, yMax, unit, threshold, label) {
  const W = 600, H = 120, L = 44, R = 8, T = 8, B = 18;
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": label });
  const x = (v) => L + ((v - x0) / Math.max(1, x1 - x0)) * (W - L - R);
  const y = (v) => H - B - (Math.min(v, yMax) / yMax) * (H - T - B);
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  const top = svg("text", { x: 2, y: T + 8 });
  top.textContent = formatNumber(yMax) + unit;
  const zero = svg("text", { x: 2, y: H - B });
  zero.textContent = "0";
  const left = svg("text", { x: L, y: H - 4 });
  left.textContent = "-" + Math.round((x1 - x0) / 60000) + " min";
  const right = svg("text", { x: W - R - 22, y: H - 4 });
  right.textContent = "now";
  root.append(top, zero, left, right);
  if (threshold !== undefined && threshold !== null) {
    root.append(svg("line", { class: "threshold", x1: L, y1: y(threshold), x2: W - R, y2: y(threshold) }));
  }
  for (const s of series) {
    if (s.points.length === 0) continue;
    const points = s.points.length === 1 ? [s.points[0], [s.points[0][0] + 1, s.points[0][1]]] : s.points;
    root.append(svg("polyline", { class: s.cls, points: points.map(([px, py]) => x(px).toFixed(1) + "," + y(py).toFixed(1)).join(" ") }));
    for (const [px, py] of s.points) {
      root.append(svg("circle", { class: s.cls + " dot", cx: x(px).toFixed(1), cy: y(py).toFixed(1), r: 2.5 }));
    }
  }
  return root;
}

function formatNumber(v) {
  return v >= 100 ? String(Math.round(v)) : String(Math.round(v * 10) / 10);
}

function legend(items) {
  return el("div", { class: "legend" }, items.map(([cls, text]) => el("span", { class: cls }, "── " + text + "  ")));
}

/** The x range of an activity answer's samples: the last `max_samples` intervals up to now. */
function span(activity) {
  const now = Date.now();
  return [now - activity.max_samples * activity.interval_ms, now];
}

// ---- Views. Each returns the nodes to show; `refresh` re-runs the current one.

async function overview() {
  const [generation, state] = await Promise.all([api("/admin/generation"), api("/admin/state")]);
  const nodes = [el("h1", {}, "Overview")];
  nodes.push(el("div", { class: "cards" },
    card("Generation", generation.generation, { id: "generation" }),
    card("Loaded at", stamp(generation.loaded_at), { id: "loaded-at", class: "card small" }),
    card("Reloads applied / refused", generation.reloads + " / " + generation.refused),
    card("Ready", state.ready ? badge("ready", "ok") : badge("not ready", "bad"), { id: "ready" })));
  nodes.push(el("h2", {}, "State store"));
  nodes.push(facts([["store", state.store], state.error ? ["error", state.error] : null]));
  if (generation.restart_needed && generation.restart_needed.length) {
    nodes.push(el("h2", {}, "Changed, waiting for a restart"));
    nodes.push(el("ul", {}, generation.restart_needed.map((s) => el("li", {}, s))));
  }
  if (generation.last_refused) {
    nodes.push(el("h2", {}, "Last refused reload"));
    nodes.push(el("p", { class: "error", id: "last-refused" }, stamp(generation.last_refused.at) + ": " + generation.last_refused.reason));
  }
  nodes.push(el("h2", {}, "Reload history"));
  const history = (generation.history || []).slice().reverse();
  if (history.length === 0) {
    nodes.push(el("p", { class: "muted" }, "No reload since the gateway started."));
  } else {
    nodes.push(table(["When", "Outcome", "Generation serving", { text: "Took", num: true }, "Message"],
      history.map((e) => el("tr", { class: "reload " + e.outcome },
        el("td", { class: "when" }, stamp(e.at)), el("td", {}, badge(e.outcome)), el("td", {}, e.generation),
        el("td", { class: "num" }, e.load_ms + " ms"), el("td", { class: "message" }, e.reason || ""))),
      { id: "history" }));
  }
  return nodes;
}

async function backends() {
  const [list, activity] = await Promise.all([api("/admin/backends"), api("/admin/activity")]);
  const seen = new Map(activity.backends.map((b) => [b.name, b]));
  const [x0, x1] = span(activity);
  const nodes = [el("h1", {}, "Backends"), el("p", { class: "muted" },
    `Generation ${list.generation}. Calls and errors since the gateway started; the chart shows each ${activity.interval_ms / 1000} s interval of the last ${Math.round(activity.max_samples * activity.interval_ms / 60000)} minutes that saw calls.`)];
  for (const b of list.backends) {
    const a = seen.get(b.name) || { calls: 0, errors: 0, outcomes: {}, in_flight: 0, queued: 0, samples: [] };
    const errors = Object.entries(a.outcomes).filter(([k]) => k !== "ok");
    const maxMs = Math.max(1, ...a.samples.map((s) => s.max_ms));
    nodes.push(el("div", { class: "panel backend", "data-backend": b.name },
      el("h2", {}, b.name, " ", b.candidate ? badge("candidate " + b.candidate.state, b.candidate.state) : null),
      el("div", { class: "cards" },
        card("Calls", a.calls, { class: "card calls" }),
        card("Errors", a.errors, { class: "card errors" }),
        card("In flight", a.in_flight + " / " + b.limits.concurrency),
        card("Queued", a.queued)),
      el("div", { class: "grid2" },
        el("div", {},
          el("h3", {}, "Plugin"),
          facts([["file", b.plugin], ["digest", el("span", { class: "mono", title: b.digest }, shortDigest(b.digest))], ["contract", b.contract]]),
          el("h3", {}, "Limits"),
          facts([["memory", bytes(b.limits.memory_bytes)], ["timeout", b.limits.timeout_ms + " ms"], ["concurrency", b.limits.concurrency],
            ["state", `${b.limits.state.keys} keys, ${bytes(b.limits.state.bytes)}, values up to ${bytes(b.limits.state.value_bytes)}, ${b.limits.state.writes_per_second} writes/s`]]),
          el("h3", {}, "Errors by kind"),
          errors.length === 0 ? el("p", { class: "muted" }, "None.") :
            table(["Outcome", { text: "Calls", num: true }], errors.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, v))), { class: "outcomes" })),
        el("div", {},
          el("h3", {}, "Latency"),
          chart([
            { cls: "max", points: a.samples.map((s) => [s.at_ms, s.max_ms]) },
            { cls: "mean", points: a.samples.map((s) => [s.at_ms, s.mean_ms]) },
          ], x0, x1, maxMs, " ms", null, "latency of " + b.name),
          legend([["key-mean", "mean"], ["key-max", "max"]]),
          a.samples.length === 0 ? el("p", { class: "muted" }, "No calls in the last minutes.") : null))));
  }
  return nodes;
}

/** An explanation as `platform-gateway route` prints it (`Explanation::render`). */
function renderExplanation(e) {
  let out = `${e.operation} of ${e.request}\n`;
  (e.tried || []).forEach((t, i) => {
    out += `  route ${i} \`${t.route}\` (${t.conditions}) -> ${t.backend}: ${t.matched ? "matches" : "no match"}\n`;
  });
  const d = e.decision;
  if (d.by === "route") out += `=> backend \`${d.backend}\`, chosen by route \`${d.route}\` (routes[${d.index}])\n`;
  else if (d.by === "no_route") out += "=> no route matches: the gateway answers 422\n";
  else if (d.by === "owner") out += `=> backend \`${d.backend}\`, from the ownership index (the backend that created or reported the node; the route table is not consulted)\n`;
  else out += "=> not in the ownership index: the gateway asks every backend and sends the request to the one that reports the node (404 if none does, 409 if several do)\n";
  return out;
}

const EXAMPLE_PROVISION = JSON.stringify({
  cluster: { cluster_id: "example", store: "mongodb", store_version: "7.0", attributes: {},
    nodes: { data: { attributes: {}, desired_count: 3, node_class: "small" } } },
  provision: { node_group_id: "data" },
}, null, 2);

async function routes() {
  const answer = await api("/admin/routes");
  const nodes = [el("h1", {}, "Routes")];
  nodes.push(table(["#", "Name", "Conditions", "Backend"], answer.routes.map((r, i) =>
    el("tr", {}, el("td", {}, i), el("td", {}, r.name), el("td", {}, r.conditions), el("td", {}, r.backend))), { id: "route-table" }));
  nodes.push(el("p", { class: "muted" }, "Discovery when a backend fails: ", el("code", {}, answer.discovery.on_backend_failure)));
  const input = el("textarea", { id: "route-request", spellcheck: "false", "aria-label": "request" });
  input.value = EXAMPLE_PROVISION;
  const output = el("pre", { id: "route-explanation", hidden: true });
  const failure = el("p", { class: "error", id: "route-error", hidden: true });
  const form = el("form", { class: "stack", id: "route-form" }, input, el("div", {}, el("button", { type: "submit" }, "Explain")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    failure.hidden = true;
    try {
      const explanation = await api("/admin/route", "POST", input.value);
      output.textContent = renderExplanation(explanation);
      output.hidden = false;
    } catch (e) {
      output.hidden = true;
      failure.textContent = e.message;
      failure.hidden = false;
      if (e.status === 401) signedOut(e.message);
    }
  });
  nodes.push(el("div", { class: "panel" }, el("h2", {}, "Where would this request go?"),
    el("p", { class: "muted" }, "Paste a provision or deprovision request as Replicante would send it: ", el("code", {}, "POST /admin/route"), " explains it from the live route table and ownership index."),
    form, failure, output));
  return nodes;
}

async function rollouts() {
  const [list, activity] = await Promise.all([api("/admin/backends"), api("/admin/activity")]);
  const seen = new Map(activity.backends.map((b) => [b.name, b]));
  const [x0, x1] = span(activity);
  const nodes = [el("h1", {}, "Rollouts")];
  const with_candidate = list.backends.filter((b) => b.candidate);
  if (with_candidate.length === 0) {
    nodes.push(el("p", { class: "muted" }, "No backend has a candidate (", el("code", {}, "[backends.NAME.candidate]"), ")."));
  }
  for (const b of with_candidate) {
    const c = b.candidate;
    const samples = ((seen.get(b.name) || {}).samples || []).filter((s) => s.candidate_calls > 0);
    const reset = el("button", { type: "button", class: c.state === "rolled-back" ? null : "secondary", "data-reset": b.name }, "Reset the candidate");
    reset.addEventListener("click", async () => {
      reset.disabled = true;
      try {
        await api("/admin/backends/" + encodeURIComponent(b.name) + "/candidate/reset", "POST", {});
        await show();
      } catch (e) {
        fail(e);
      }
    });
    nodes.push(el("div", { class: "panel rollout", "data-backend": b.name },
      el("h2", {}, b.name, " ", badge(c.state)),
      el("div", { class: "cards" },
        card("Weight now", c.weight + "%"),
        card("Configured", c.configured_weight + "%" + (c.steps.length ? ", steps " + c.steps.join(" → ") + "%" : "")),
        card("Failure rate in the window", percent(c.error_rate) + " of " + percent(c.max_error_rate), { class: "card rate" }),
        card("Calls / failures", c.calls + " / " + c.failures)),
      el("div", { class: "grid2" },
        el("div", {},
          el("h3", {}, "Stable and candidate"),
          facts([["stable", [b.plugin, " ", el("span", { class: "mono" }, shortDigest(b.digest))]],
            ["candidate", [c.plugin, " ", el("span", { class: "mono" }, shortDigest(c.digest))]],
            ["contract", c.contract], ["armed at", time(c.armed_at_ms)],
            ["window", `${Math.round(c.window_ms / 1000)} s, verdict from ${c.min_calls} calls`]]),
          c.rolled_back ? el("div", { class: "error rollback" },
            `Rolled back at ${time(c.rolled_back.at_ms)}: ${c.rolled_back.reason} (${c.rolled_back.failures} of ${c.rolled_back.calls} calls failed, ${percent(c.rolled_back.error_rate)})`) : null,
          c.replay ? replayGate(c.replay) : null,
          el("h3", {}, "Shadow discovery"),
          c.shadow ? facts([["compared", c.shadow_compared], ["different", c.shadow_different], ["failed", c.shadow_failed]]) : el("p", { class: "muted" }, "Off."),
          c.last_differences.length ? el("ol", { class: "differences" }, c.last_differences.map((d) => el("li", { class: "mono" }, d))) : null,
          el("p", {}, reset)),
        el("div", {},
          el("h3", {}, "Candidate failure rate per interval, against the threshold"),
          chart([{ cls: "rate", points: samples.map((s) => [s.at_ms, s.candidate_failures / s.candidate_calls]) }],
            x0, x1, 1, "", c.max_error_rate, "failure rate of the candidate of " + b.name),
          legend([["key-rate", "failed / calls"], ["key-threshold", "max_error_rate"]])))));
  }
  return nodes;
}

/** A candidate's replay gate: its state, counts and first findings with their differences. */
function replayGate(gate) {
  const r = gate.report;
  const parts = [el("h3", {}, "Replay gate ", badge(gate.state))];
  if (!r) {
    parts.push(el("p", { class: "muted" }, "Replaying the backend's recorded calls: the candidate serves nothing here until it passes."));
    return el("div", { class: "replay-gate" }, parts);
  }
  parts.push(facts([["replayed", r.calls], ["same", r.same], ["different", r.different], ["failed", r.failed],
    ["allowed", r.max_differences], ["at", time(r.at_ms)]]));
  if (r.error) parts.push(el("p", { class: "error" }, r.error));
  if (r.findings.length) {
    parts.push(el("ol", { class: "differences" }, r.findings.map((f) => el("li", {},
      `call ${f.seq} ${f.operation}: ${f.verdict}`, f.error ? " (" + f.error + ")" : null,
      el("ul", {}, (f.differences || []).slice(0, 5).map((d) =>
        el("li", { class: "mono" }, `${d.path}: ${JSON.stringify(d.recorded)} → ${JSON.stringify(d.replayed)}`)))))));
  }
  return el("div", { class: "replay-gate" }, parts);
}

function effectList(plan) {
  const items = [];
  for (const w of plan.state_writes) {
    items.push(el("li", {}, el("span", { class: "kind" }, "state " + w.operation), el("code", {}, w.key),
      ` in ${w.namespace} (${w.old_version || "absent"} → ${w.new_version})`, w.value ? [" = ", el("code", {}, w.value)] : null));
  }
  for (const r of plan.requests) {
    items.push(el("li", {}, el("span", { class: "kind" }, r.sent ? "request sent" : "request withheld"), el("code", {}, r.method + " " + r.url),
      r.status ? " → " + r.status : null, r.error ? " (" + r.error + ")" : null));
  }
  if (plan.stopped) {
    items.push(el("li", {}, el("span", { class: "kind" }, "stopped"), `${plan.stopped.backend} at step ${plan.stopped.step}: ${plan.stopped.effect}`));
  }
  return items.length ? el("ol", { class: "effects", id: "plan-effects" }, items) : el("p", { class: "muted", id: "plan-effects" }, "No effect: no state write, no request.");
}

async function plans() {
  const nodes = [el("h1", {}, "Plans")];
  const input = el("textarea", { id: "plan-request", spellcheck: "false", "aria-label": "provision request" });
  input.value = EXAMPLE_PROVISION;
  const key = el("input", { type: "text", id: "plan-key", placeholder: "Idempotency-Key (optional)" });
  const output = el("div", { id: "plan-result" });
  const form = el("form", { class: "stack", id: "plan-form" }, input, el("div", {}, key, " ", el("button", { type: "submit" }, "Plan")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(output);
    try {
      const headers = key.value ? { "Idempotency-Key": key.value } : {};
      const plan = await api("/admin/plan/provision", "POST", input.value, headers);
      append(output, [
        el("h3", {}, "Route"), el("pre", {}, plan.route),
        facts([["backend", plan.backend || "none"], ["would answer", String(plan.would_answer.status)],
          ["plan", plan.plan_id ? `${plan.plan_id}, until ${plan.expires_at}` : "not saved: " + (plan.not_saved || "")]]),
        el("h3", {}, "Effects"), effectList(plan),
        plan.would_answer.body ? [el("h3", {}, "Answer"), el("pre", {}, JSON.stringify(plan.would_answer.body, null, 2))] : null,
      ]);
    } catch (e) {
      output.append(el("p", { class: "error", id: "plan-error" }, e.message));
      if (e.status === 401) signedOut(e.message);
    }
  });
  nodes.push(el("div", { class: "panel" }, el("h2", {}, "Plan a provision"),
    el("p", { class: "muted" }, el("code", {}, "POST /admin/plan/provision"), " runs the plugin with its effects withheld: state writes go to an overlay, only reads are sent."),
    form, output));
  // Replay reports: the gateway holds those of its candidates' replay gates (`candidate.replay`
  // in /admin/backends); a replay by hand is `platform-gateway replay`, offline.
  const list = await api("/admin/backends");
  const gated = list.backends.filter((b) => b.candidate && b.candidate.replay);
  nodes.push(el("div", { class: "panel", id: "replays" }, el("h2", {}, "Replay reports"),
    el("p", { class: "muted" }, "Candidates with ", el("code", {}, "replay = { max_differences }"),
      " are replayed on the backend's recorded calls before they serve; a replay by hand is ",
      el("code", {}, "platform-gateway replay"), "."),
    gated.length ? gated.map((b) => el("div", { "data-backend": b.name }, el("h3", {}, b.name), replayGate(b.candidate.replay)))
      : el("p", { class: "muted" }, "No candidate has a replay gate.")));
  return nodes;
}

const RENDER = { overview, backends, routes, rollouts, plans };
/** Views that only show state refresh themselves; views with a form do not. */
const LIVE = new Set(["overview", "backends", "rollouts"]);

// ---- The shell: login, navigation, refresh.

let timer = null;

function current() {
  const name = location.hash.replace(/^#/, "");
  return VIEWS.includes(name) ? name : "overview";
}

function fail(e) {
  if (e.status === 401) return signedOut(e.message);
  const box = document.getElementById("error");
  box.textContent = e.message;
  box.hidden = false;
}

function signedOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  for (const v of VIEWS) document.getElementById("view-" + v).hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("forget").hidden = true;
  document.getElementById("status-line").textContent = "";
  document.getElementById("login").hidden = false;
  const box = document.getElementById("auth-error");
  box.textContent = message ? "The admin API refused the token: " + message : "";
  box.hidden = !message;
  document.getElementById("token").focus();
}

async function show() {
  clearTimeout(timer);
  const name = current();
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("forget").hidden = false;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", link.dataset.view === name);
  }
  const section = document.getElementById("view-" + name);
  try {
    const nodes = await RENDER[name]();
    if (current() !== name) return;
    for (const v of VIEWS) document.getElementById("view-" + v).hidden = v !== name;
    append(clear(section), nodes);
    document.getElementById("error").hidden = true;
    section.dataset.loaded = String(Date.now());
    document.getElementById("status-line").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    fail(e);
  }
  if (LIVE.has(name) && token() !== null) timer = setTimeout(show, REFRESH_MS);
}

async function signIn(event) {
  event.preventDefault();
  const typed = document.getElementById("token").value;
  sessionStorage.setItem(TOKEN_KEY, typed);
  try {
    await api("/admin/generation");
  } catch (e) {
    if (e.status === 401) return signedOut(e.message);
    return fail(e);
  }
  document.getElementById("token").value = "";
  document.getElementById("auth-error").hidden = true;
  await show();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", signIn);
  document.getElementById("forget").addEventListener("click", () => signedOut(""));
  window.addEventListener("hashchange", () => { if (token() !== null) show(); });
  if (token() === null) signedOut("");
  else show();
});
