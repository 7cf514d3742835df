// The ucwa-agent console: reads the JSON API of the agent's listener, shows the live tail
// from /api/tap. Everything is written with textContent (names and errors come from outside).
"use strict";
const $ = (id) => document.getElementById(id);
const S = { page: 1, q: "", account: null, event: null, admin: false, named: false };
// (`/?per_page=N`: more or fewer accounts a page than 50.)
const perPage = Number(new URLSearchParams(location.search).get("per_page")) || 50;

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
const badge = (text) => el("span", { class: "badge " + String(text).replace(/[^a-z_]/g, "") }, text);
const ms = (v) => (v === null || v === undefined ? "–" : v < 1 ? (v * 1000).toFixed(0) + " µs" : v.toFixed(v < 10 ? 1 : 0) + " ms");
const time = (atMs) => (atMs ? new Date(atMs).toLocaleTimeString() : "");
const ago = (s) => (s === null || s === undefined ? "never" : s < 60 ? s + " s ago" : Math.round(s / 60) + " min ago");

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

async function post(url) {
  const r = await fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-Admin-Token": $("token").value } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status);
  return body;
}

function notice(text, bad) {
  const n = $("notice");
  n.textContent = text;
  n.className = bad ? "error" : "ok";
}

// Accounts: a page at a time, filtered by the agent.
async function loadAccounts() {
  const d = await getJSON(`/api/accounts?page=${S.page}&per_page=${perPage}&q=${encodeURIComponent(S.q)}`);
  S.admin = d.admin; S.named = d.named; S.page = d.page;
  $("agent").textContent = `v${d.version} · ${d.accounts_total} account(s)` + (d.reload.ok ? "" : " · configuration reload rejected" + (d.reload.error ? ": " + d.reload.error : ""));
  $("admin").hidden = !d.admin;
  $("accounts-count").textContent = d.total === d.accounts_total ? "" : `${d.total} of ${d.accounts_total} shown`;
  $("page").textContent = `page ${d.page} of ${d.pages}`;
  $("prev").disabled = d.page <= 1;
  $("next").disabled = d.page >= d.pages;
  const body = $("accounts").tBodies[0];
  body.replaceChildren(...d.accounts.map((a) => {
    const label = a.name || "account " + a.key.slice(1);
    const tr = el("tr", { class: a.key === S.account ? "selected" : "", onclick: () => selectAccount(a.key, label) },
      el("td", {}, label, a.application ? "" : el("small", { class: "muted" }, " (no application)")),
      el("td", {}, badge(a.state), a.last_error ? el("div", { class: "error" }, a.last_error) : null),
      el("td", {}, ago(a.last_poll_secs_ago)),
      el("td", {}, a.recoveries),
      el("td", {}, a.handler_errors),
      el("td", {}, a.scripts, a.scripts_in_trouble ? el("span", { class: "error" }, ` (${a.scripts_in_trouble} in trouble)`) : ""));
    tr.dataset.key = a.key;
    return tr;
  }));
  if (!S.account && d.accounts.length) selectAccount(d.accounts[0].key, d.accounts[0].name || "account 1");
}

function selectAccount(key, label) {
  const moved = S.account !== key;
  S.account = key; S.event = null;
  $("account-name").textContent = label;
  if (moved) tail();
  for (const tr of $("accounts").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.key === key);
  $("timeline").textContent = "Pick an event."; $("dryrun").replaceChildren();
  loadAccount();
}

const loadAccount = () => Promise.all([loadScripts(), loadEvents()]).catch((e) => notice(e.message, true));
const q = () => "account=" + encodeURIComponent(S.account);

// Each list draws only the answer to its latest request: an earlier one that answers later is
// another account's (picked before; its `#seq`s are another journal's) or older than what is shown.
const asked = { scripts: 0, events: 0 };

async function loadScripts() {
  const n = ++asked.scripts;
  const d = await getJSON("/api/scripts?" + q());
  if (n !== asked.scripts) return;
  $("scripts").tBodies[0].replaceChildren(...d.scripts.map((s) => {
    const err = s.last_error || (s.load_error ? { message: s.load_error } : null);
    const resume = S.admin && s.state === "paused" ? el("button", { type: "button", onclick: () => act(`/api/resume?${q()}&script=${encodeURIComponent(s.name)}`, `${s.name} resumed`) }, "Resume") : null;
    return el("tr", { "data-script": s.name },
      el("td", {}, s.name), el("td", {}, s.version ? "v" + s.version : "–"), el("td", {}, badge(s.state)),
      el("td", { class: err ? "error" : "" }, err ? [err.at ? el("span", { class: "where" }, err.at + " ") : "", err.message || ""].reduce((a, b) => (a.append(b), a), el("span")) : ""),
      el("td", {}, s.handled), el("td", {}, s.errors), el("td", {}, ms(s.p50_ms)), el("td", {}, ms(s.p99_ms)), el("td", {}, resume));
  }));
}

// The outcome of one script's run of an event, in a word.
function outcome(t) {
  if (t.skipped) return "skipped";
  if (!t.calls || !t.calls.length) return "no handler";
  return t.calls.find((c) => c.outcome !== "ok")?.outcome || "ok";
}

function eventLabel(e) {
  return e.event ? `#${e.event.seq} ${e.event.rel} ${e.event.type}` : e.kind + " run";
}

// One entry of the list whatever runs it has so far (its earliest run's time may change).
function eventKey(e) {
  return e.event ? "event " + e.event.seq : `${e.kind} ${e.at_ms} ${e.seq}`;
}

async function loadEvents() {
  const n = ++asked.events;
  const d = await getJSON("/api/events?limit=40&" + q());
  if (n !== asked.events) return;
  // The event shown gets the runs committed since it was clicked (a script that made a
  // request may commit after the others).
  const shown = S.event && d.events.find((e) => eventKey(e) === eventKey(S.event));
  if (shown && JSON.stringify(shown.traces) !== JSON.stringify(S.event.traces)) {
    S.event = shown;
    $("trace-title").textContent = eventLabel(shown) + " at " + time(shown.at_ms);
    $("timeline").replaceChildren(...timeline(shown.traces));
  }
  $("events").replaceChildren(...d.events.map((e) => {
    const li = el("li", { class: S.event && eventKey(S.event) === eventKey(e) ? "selected" : "", onclick: () => showEvent(e, li) },
      el("span", { class: "muted" }, time(e.at_ms) + " "), eventLabel(e), " ",
      ...e.traces.map((t) => el("span", {}, " ", t.script, ": ", badge(outcome(t)))));
    return li;
  }));
}

function step(s) {
  const at = `+${(s.at_us / 1000).toFixed(1)} ms `;
  switch (s.do) {
    case "log": return at + `log ${s.level}: ${s.message}`;
    case "request": return at + `${s.via} ${s.method} ${s.target} → ${s.status ?? s.error ?? "?"} (${ms(s.us / 1000)})`;
    case "timer": return at + `timer ${s.op} #${s.id}` + (s.ms !== undefined ? ` ${s.ms} ms` : "") + (s.every ? " every" : "");
    case "metric": return at + `metric ${s.name} ${s.op} ${s.value}`;
    default: return at + JSON.stringify(s);
  }
}

// Each script's run as a timeline: its subscriptions, its calls (a bar as long as the call
// took, beside the longest), and what each call did, in order.
function timeline(traces) {
  const longest = Math.max(1, ...traces.flatMap((t) => (t.calls || []).map((c) => c.us)));
  return traces.map((t) => {
    const o = outcome(t);
    const subs = (t.subscriptions || []).map((s) => `${s.rel}${s.type ? " " + s.type : ""}${s.line ? " (line " + s.line + ")" : ""}: ${s.matched}`);
    return el("div", { class: "run " + (o === "ok" ? "ok" : o === "error" || o === "limit" || o === "stuck" ? "error" : ""), "data-script": t.script },
      el("h3", {}, `${t.script} v${t.version} `, badge(o)),
      subs.length ? el("div", { class: "muted" }, "subscriptions: " + subs.join("; ")) : null,
      t.skipped ? el("div", { class: "paused" }, "skipped: " + t.skipped) : null,
      ...(t.calls || []).map((c) => el("div", { class: c.outcome === "ok" ? "ok" : "error" },
        el("div", {}, `${c.what}${c.sub !== undefined ? " (subscription " + (c.sub + 1) + ")" : ""}: ${c.outcome}, ${ms(c.us / 1000)}`,
          c.at ? el("span", { class: "where" }, " at " + c.at) : null),
        el("div", { class: "bar", style: `width:${Math.max(0.5, (100 * c.us) / longest).toFixed(1)}%` }),
        c.error ? el("pre", { class: "error" }, c.error) : null,
        c.steps && c.steps.length ? el("ol", { class: "steps" }, ...c.steps.map((s) => el("li", {}, step(s)))) : null)),
      t.state && (t.state.set.length || t.state.removed.length) ? el("div", { class: "muted" }, `agent.state: set ${t.state.set.join(", ") || "–"}; removed ${t.state.removed.join(", ") || "–"}`) : null);
  });
}

function showEvent(e, li) {
  S.event = e;
  for (const x of $("events").children) x.classList.toggle("selected", x === li);
  $("trace-title").textContent = eventLabel(e) + " at " + time(e.at_ms);
  $("timeline").replaceChildren(...timeline(e.traces));
  const dry = e.event ? el("button", { type: "button", onclick: () => dryRun(e.event.seq) }, "Run again as a dry run (current version, nothing sent)") : null;
  $("dryrun").replaceChildren(...(dry ? [dry] : []));
}

async function dryRun(seq) {
  const out = $("dryrun");
  out.replaceChildren(el("p", { class: "muted" }, "running…"));
  try {
    const r = await fetch(`/api/dryrun?${q()}&seq=${seq}`, { method: "POST", credentials: "same-origin", headers: { "X-Requested-By": "ucwa-console" } });
    const d = await r.json();
    if (!r.ok) throw new Error(d.error || r.status);
    out.replaceChildren(el("h2", {}, "Dry run (nothing was sent)"),
      el("div", { id: "dryrun-result" }, ...d.scripts.map((s) => el("div", { class: "run " + (s.errors.length ? "error" : "ok") },
        el("h3", {}, `${s.script} v${s.version ?? "?"}`),
        s.would_send.length ? el("ol", { class: "steps" }, ...s.would_send.map((w) => el("li", {}, "would send " + w))) : el("div", { class: "muted" }, "would send nothing"),
        ...s.logs.map((l) => el("div", { class: "muted" }, l)),
        ...s.errors.map((x) => el("pre", { class: "error" }, x))))));
  } catch (err) {
    out.replaceChildren(el("p", { class: "error" }, "dry run: " + err.message));
  }
}

async function act(url, done) {
  try { await post(url); notice(done); } catch (e) { notice(e.message, true); }
  refresh();
}

// The live tail: every event and every run's trace as the agent sees them.
// Where names are shown, the tail follows the account shown (an agent may run a thousand).
let refreshSoon = null, source = null;
function tail() {
  if (source) source.close();
  const src = (source = new EventSource(S.named && S.account ? "/api/tap?" + q() : "/api/tap"));
  $("tail").replaceChildren();
  src.onopen = () => { $("tail-state").textContent = "live"; };
  src.onerror = () => { $("tail-state").textContent = "reconnecting…"; };
  src.onmessage = (m) => {
    let d; try { d = JSON.parse(m.data); } catch { return; }
    const who = d.account ? d.account + " " : "";
    let text;
    if (d.kind === "event") text = [`${who}event #${d.seq} ${d.rel} ${d.type}`];
    else if (d.kind === "trace") text = [`${who}${d.script} v${d.version} ${d.event ? "#" + d.event.seq : d.run}: `, badge(outcome(d))];
    else text = [`missed ${d.missed} (the tail fell behind)`];
    const list = $("tail");
    list.prepend(el("li", {}, el("span", { class: "muted" }, new Date().toLocaleTimeString() + " "), ...text));
    while (list.children.length > 200) list.lastChild.remove();
    if (d.kind === "trace" && !refreshSoon) refreshSoon = setTimeout(() => { refreshSoon = null; refresh(); }, 1000);
  };
}

function refresh() {
  loadAccounts().then(() => S.account && loadAccount()).catch((e) => notice(e.message, true));
}

let typing = null;
$("q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { S.q = $("q").value; S.page = 1; refresh(); }, 250); });
$("prev").addEventListener("click", () => { S.page--; refresh(); });
$("next").addEventListener("click", () => { S.page++; refresh(); });
$("reload").addEventListener("click", () => act("/api/reload", "configuration reload asked"));
$("token").value = sessionStorage.getItem("ucwa-admin-token") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("ucwa-admin-token", $("token").value));
refresh();
setInterval(refresh, 5000);
