/**
 * @module The web UI: one page, plain HTML/CSS/JS in a string (no build step, nothing fetched from the internet),
 * served at `/` by the management port. It holds no data: it asks for the token once per browser session
 * (sessionStorage) and calls the JSON API with it. Tabs: appliance (health, ports, modes, TLS, counters, the
 * connections-over-time graph as inline SVG, bandwidth saved), certificates (list, upload, edit, delete, assign,
 * expiry warning 30 days ahead), configuration (a 3-step wizard validated by the API's dry run, messages shown next to
 * the field), logs (search, paging), diagnostics (connectivity, resources, the encrypted archive, reset) and the
 * fleet (admin/page-fleet.ts).
 */
import { MAX_ALLOWED_DOMAINS, OFFERED_TLS_VERSIONS, RESERVED_PORTS } from "../core/config";
import { CACHE_SCRIPT, CACHE_SECTION, CACHE_TAB } from "./page-cache";
import { FLEET_SCRIPT, FLEET_SECTION, FLEET_TAB } from "./page-fleet";
import { HEALTH_CARD, HEALTH_SCRIPT, UNREACHABLE_BANNER } from "./page-health";

const CSS = `
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f6f8;color:#1d2733}
header{background:#17324d;color:#fff;padding:10px 20px;display:flex;align-items:center;gap:16px}
header h1{font-size:18px;margin:0;font-weight:600}header .sp{flex:1}
header button{background:transparent;color:#fff;border:1px solid #fff6;border-radius:4px;padding:4px 10px;cursor:pointer}
nav{display:flex;gap:2px;background:#fff;border-bottom:1px solid #d8dee4;padding:0 20px}
nav button{border:0;background:none;padding:10px 14px;cursor:pointer;font-size:14px;color:#445;border-bottom:3px solid transparent}
nav button.on{border-bottom-color:#2f80ed;color:#17324d;font-weight:600}
main{padding:20px;max-width:1200px;margin:0 auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:14px}
.card{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:14px}
.card h3{margin:0 0 8px;font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#5a6b7b}
.big{font-size:26px;font-weight:600}.muted{color:#6b7b8b;font-size:12px}
.kv{display:grid;grid-template-columns:auto 1fr;gap:2px 12px}.kv b{font-weight:500;color:#5a6b7b}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;font-size:13px}
.Normal{background:#d9f2e3;color:#176b3a}.Degraded{background:#fff1cc;color:#8a5b00}.Down{background:#fbd9d9;color:#9b1c1c}
.on-mode{color:#176b3a;font-weight:600}.off-mode{color:#8a96a3}
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e6eaee;vertical-align:top}
th{font-size:12px;color:#5a6b7b;font-weight:600}tr.warn td{background:#fff7e0}
.err{color:#b42318;font-size:12px;margin-top:3px;min-height:1em}.ok{color:#176b3a}
input[type=text],input[type=number],input[type=password],select,textarea{padding:6px 8px;border:1px solid #b8c2cc;border-radius:4px;font:inherit;width:100%}
input.bad,textarea.bad,select.bad{border-color:#b42318;background:#fff5f5}
label{display:block;font-weight:500;margin:10px 0 4px}
button.pri{background:#2f80ed;color:#fff;border:0;border-radius:4px;padding:7px 16px;cursor:pointer;font:inherit}
button.sec{background:#fff;color:#17324d;border:1px solid #b8c2cc;border-radius:4px;padding:6px 12px;cursor:pointer;font:inherit}
button.dan{background:#fff;color:#b42318;border:1px solid #e0a9a4;border-radius:4px;padding:6px 12px;cursor:pointer;font:inherit}
button:disabled{opacity:.5;cursor:default}
.steps{display:flex;gap:8px;margin-bottom:14px}.steps span{padding:4px 12px;border-radius:12px;background:#e6eaee;color:#5a6b7b}
.steps span.on{background:#2f80ed;color:#fff}
.row{display:flex;gap:8px;align-items:center}.row>*{flex:1}
#login{max-width:420px;margin:80px auto}.hidden{display:none}
.warnbox{background:#fff1cc;border:1px solid #f0d48a;color:#6b4700;padding:8px 12px;border-radius:4px;margin-bottom:10px}
svg text{font-size:10px;fill:#6b7b8b}pre{white-space:pre-wrap;word-break:break-all;margin:0;font-size:12px}
.secret{font-family:ui-monospace,monospace;font-size:16px;background:#17324d;color:#fff;padding:8px 12px;border-radius:4px;display:inline-block}
`;

const SCRIPT = `
const LIMITS = { maxDomains: ${MAX_ALLOWED_DOMAINS}, reserved: ${JSON.stringify([...RESERVED_PORTS])}, tls: ${JSON.stringify(OFFERED_TLS_VERSIONS)} };
const $ = (s, r = document) => r.querySelector(s);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const fmtBytes = (n) => { n = Number(n) || 0; const u = ["B","KB","MB","GB","TB"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i ? n.toFixed(1) : n) + " " + u[i]; };
const fmtNum = (n) => Number(n || 0).toLocaleString("en-US");
const fmtDate = (s) => s ? new Date(s).toISOString().slice(0, 10) : "";
let token = sessionStorage.getItem("agate.token");
let tab = "appliance", range = "1h", timer = null;

async function api(path, init = {}) {
  const headers = Object.assign({ authorization: "Bearer " + token }, init.headers || {});
  const r = await fetch(path, Object.assign({}, init, { headers }));
  if (r.status === 401) { logout("The token was not accepted."); throw new Error("unauthorized"); }
  const ct = r.headers.get("content-type") || "";
  const body = ct.includes("json") ? await r.json() : await r.text();
  if (!r.ok) { const e = new Error(body && body.error || ("HTTP " + r.status)); e.field = body && body.field; e.status = r.status; e.body = body; throw e; }
  return body;
}

function logout(msg) {
  sessionStorage.removeItem("agate.token"); token = null; clearInterval(timer);
  $("#app").classList.add("hidden"); $("#login").classList.remove("hidden");
  $("#login-err").textContent = msg || "";
}

async function login(ev) {
  ev && ev.preventDefault();
  const t = $("#token").value.trim();
  if (!t) { $("#login-err").textContent = "Enter the token (agate token prints it)."; return; }
  const r = await fetch("/api/status", { headers: { authorization: "Bearer " + t } });
  if (!r.ok) { const b = await r.json().catch(() => ({})); $("#login-err").textContent = b.error || ("HTTP " + r.status); return; }
  token = t; sessionStorage.setItem("agate.token", t); $("#token").value = ""; start();
}

function start() {
  $("#login").classList.add("hidden"); $("#app").classList.remove("hidden");
  show(tab);
  clearInterval(timer); timer = setInterval(() => { if (tab === "appliance") refreshAppliance().catch(onRefreshFail); else pollHealth().catch(onRefreshFail); if (tab === "cache") refreshCache().catch(() => {}); if (tab === "fleet") refreshFleet().catch(() => {}); }, 2000);
}

function show(t) {
  tab = t;
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("on", b.dataset.tab === t);
  for (const s of document.querySelectorAll("section[data-tab]")) s.classList.toggle("hidden", s.dataset.tab !== t);
  if (t === "appliance") refreshAppliance().catch(showErr);
  if (t === "certs") refreshCerts().catch(showErr);
  if (t === "config") startWizard().catch(showErr);
  if (t === "logs") refreshLogs().catch(showErr);
  if (t === "cache") refreshCache().catch(showErr);
  if (t === "fleet") refreshFleet().catch(showErr);
}
function showErr(e) { if (e.message !== "unauthorized") $("#toast").textContent = e.message; }

// ---- appliance ---------------------------------------------------------------------------------------------
const set = (id, v) => { const el = document.getElementById(id); if (el) el.textContent = v; };
async function refreshAppliance() {
  const [st, s] = await Promise.all([api("/api/status"), api("/api/stats?range=" + range)]);
  $("#gw-name").textContent = st.name + " " + st.version;
  onReach(); renderLink(st); // page-health.ts
  const hb = $("#health"); hb.textContent = st.health; hb.className = "badge " + st.health;
  $("#reasons").innerHTML = st.reasons.map((r) => "<div>" + esc(r) + "</div>").join("") || '<span class="muted">no problems</span>';
  set("uptime", Math.floor(st.uptime_s / 3600) + " h " + Math.floor((st.uptime_s % 3600) / 60) + " min");
  set("workers", st.workers.alive + " / " + st.workers.total);
  set("p-proxy", st.ports.proxy + " (" + st.listen.proxy + ")");
  set("p-cache", st.modes.cache ? st.ports.cache + " (" + st.listen.cache + ")" : "off");
  set("p-admin", st.ports.admin + (st.admin_tls ? " (HTTPS)" : " (HTTP)"));
  for (const m of ["proxy", "cache", "patch"]) { const el = document.getElementById("m-" + m); el.textContent = st.modes[m] ? "on" : "off"; el.className = st.modes[m] ? "on-mode" : "off-mode"; }
  set("min-tls", "TLS " + st.min_tls + " minimum");
  set("ca-kind", st.ca ? st.ca.kind + " CA: " + st.ca.common_name : "no CA");
  set("ca-exp", st.ca ? "expires " + fmtDate(st.ca.not_after) + " (" + st.ca.expires_in_days + " days)" : "");
  set("c-active-tunnels", fmtNum(s.active_tunnels));
  set("c-total-tunnels", fmtNum(s.totals.totalTunnels));
  set("c-unique-ips", fmtNum(s.unique_ips_60m));
  set("c-active-agents", fmtNum(s.active_agents_60m));
  set("c-total-agents", fmtNum(s.total_agents_7d));
  set("c-agents-24h", fmtNum(s.active_agents_24h));
  set("c-saved", fmtBytes(s.bandwidth_savings_30d.saved_bytes));
  set("c-saved-detail", fmtBytes(s.bandwidth_savings_30d.served_bytes) + " served from cache, " + fmtBytes(s.bandwidth_savings_30d.fetched_bytes) + " fetched");
  set("c-hits", fmtNum(s.cache.hits) + " / " + fmtNum(s.cache.misses));
  set("c-bytes", fmtBytes(s.totals.bytesUp) + " up, " + fmtBytes(s.totals.bytesDown) + " down");
  const refusals = Object.values(s.totals.refusals).reduce((a, b) => a + b, 0);
  set("c-refusals", fmtNum(refusals));
  $("#graph").innerHTML = graph(s.series.points);
}

function graph(points) {
  const W = 760, H = 180, L = 40, B = 22, T = 10, R = 10;
  const maxIps = Math.max(1, ...points.map((p) => Math.max(p.proxy_ips, p.cache_ips)));
  const maxConn = Math.max(1, ...points.map((p) => p.connections));
  const n = points.length, w = (W - L - R) / n;
  const x = (i) => L + i * w, y = (v, m) => T + (H - T - B) * (1 - v / m);
  let bars = "", lp = "", lc = "";
  points.forEach((p, i) => {
    const h = (H - T - B) * (p.connections / maxConn);
    if (p.connections) bars += '<rect x="' + (x(i) + 1).toFixed(1) + '" y="' + (H - B - h).toFixed(1) + '" width="' + Math.max(1, w - 2).toFixed(1) + '" height="' + h.toFixed(1) + '" fill="#d6e4f5"><title>' + p.connections + ' connections</title></rect>';
    lp += (i ? "L" : "M") + (x(i) + w / 2).toFixed(1) + " " + y(p.proxy_ips, maxIps).toFixed(1);
    lc += (i ? "L" : "M") + (x(i) + w / 2).toFixed(1) + " " + y(p.cache_ips, maxIps).toFixed(1);
  });
  const t0 = new Date(points[0].t), t1 = new Date(points[n - 1].t);
  const lbl = (d) => range === "7d" ? d.toISOString().slice(5, 10) : d.toTimeString().slice(0, 5);
  return '<svg id="conn-graph" viewBox="0 0 ' + W + ' ' + H + '" width="100%" role="img" aria-label="connections over time">' +
    '<line x1="' + L + '" y1="' + (H - B) + '" x2="' + (W - R) + '" y2="' + (H - B) + '" stroke="#c9d1d9"/>' +
    '<line x1="' + L + '" y1="' + T + '" x2="' + (W - R) + '" y2="' + T + '" stroke="#eef1f4"/>' + bars +
    '<path d="' + lp + '" fill="none" stroke="#2f80ed" stroke-width="2"/><path d="' + lc + '" fill="none" stroke="#27ae60" stroke-width="2"/>' +
    '<text x="' + (L - 4) + '" y="' + (T + 8) + '" text-anchor="end">' + maxIps + '</text><text x="' + (L - 4) + '" y="' + (H - B) + '" text-anchor="end">0</text>' +
    '<text x="' + L + '" y="' + (H - 6) + '">' + lbl(t0) + '</text><text x="' + (W - R) + '" y="' + (H - 6) + '" text-anchor="end">' + lbl(t1) + '</text></svg>' +
    '<div class="muted"><span style="color:#2f80ed">&#9632;</span> unique client IPs (proxy port) &nbsp; <span style="color:#27ae60">&#9632;</span> unique agent IPs (cache port) &nbsp; <span style="color:#9db8dc">&#9632;</span> new connections (max ' + maxConn + ')</div>';
}

// ---- certificates ------------------------------------------------------------------------------------------
async function refreshCerts() {
  const { certificates } = await api("/api/certificates");
  const warn = certificates.filter((c) => c.expiry_warning);
  $("#cert-warn").innerHTML = warn.map((c) => '<div class="warnbox">&#9888; ' + esc(c.expiry_warning) + "</div>").join("");
  $("#cert-rows").innerHTML = certificates.map((c) =>
    '<tr data-id="' + esc(c.id) + '"' + (c.expiry_warning ? ' class="warn"' : "") + "><td>" + esc(c.common_name) + '<div class="muted">' + esc(c.subject) + "</div></td><td>" + esc(c.description) +
    "</td><td>" + esc(c.role) + (c.assigned ? ' <span class="badge Normal">assigned</span>' : "") + (c.next ? ' <span class="badge Degraded" title="published as the next CA: agents get it in /ca-bundle.pem">next</span>' : "") + '<div class="muted">' + esc(c.gateway) + "</div></td><td>" + fmtDate(c.not_before) + "</td><td>" + fmtDate(c.not_after) +
    '<div class="muted">' + (c.expires_in_days < 0 ? "expired" : c.expires_in_days + " days left") + "</div></td><td>" + fmtDate(c.created) + "</td><td>" + fmtDate(c.updated) + "</td><td>" +
    (c.editable ? '<button class="sec" data-act="edit">Edit</button> ' : "") + (!c.assigned ? '<button class="sec" data-act="assign">Assign</button> ' : "") + (!c.assigned && !c.next ? '<button class="sec" data-act="next">Publish as next</button> ' : "") + (c.next ? '<button class="sec" data-act="unnext">Unpublish next</button> ' : "") +
    (c.deletable ? '<button class="dan" data-act="delete">Delete</button>' : "") + '<div class="err"></div></td></tr>').join("");
}

async function certAction(ev) {
  const b = ev.target.closest("button[data-act]"); if (!b) return;
  const tr = b.closest("tr"), id = tr.dataset.id, err = tr.querySelector(".err"); err.textContent = "";
  try {
    if (b.dataset.act === "delete") { if (!confirm("Delete this certificate?")) return; await api("/api/certificates/" + id, { method: "DELETE" }); }
    if (b.dataset.act === "next") await api("/api/ca/next", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id }) });
    if (b.dataset.act === "unnext") await api("/api/ca/next", { method: "DELETE" });
    if (b.dataset.act === "assign") { if (!confirm("Make this the CA that signs agents' certificates? Agents must trust it.")) return; await api("/api/certificates/" + id + "/assign", { method: "POST" }); }
    if (b.dataset.act === "edit") {
      const cn = prompt("Common name (at most 100 characters)", tr.children[0].firstChild.textContent); if (cn === null) return;
      const d = prompt("Description (at most 100 characters)", tr.children[1].textContent); if (d === null) return;
      await api("/api/certificates/" + id, { method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify({ common_name: cn, description: d }) });
    }
    await refreshCerts();
  } catch (e) { err.textContent = e.message; }
}

async function upload(ev) {
  ev.preventDefault();
  const f = $("#upload-form");
  for (const el of f.querySelectorAll(".err")) el.textContent = "";
  for (const el of f.querySelectorAll(".bad")) el.classList.remove("bad");
  $("#upload-ok").textContent = "";
  try {
    const c = await api("/api/certificates", { method: "POST", body: new FormData(f) });
    $("#upload-ok").textContent = "Uploaded \\u201c" + c.common_name + "\\u201d (valid until " + fmtDate(c.not_after) + ").";
    f.reset(); await refreshCerts();
  } catch (e) {
    const probs = (e.body && e.body.problems) || [{ file: e.field, problem: e.message }];
    for (const p of probs) {
      const el = f.querySelector('[data-err="' + (p.file || "form") + '"]') || f.querySelector('[data-err="form"]');
      el.textContent = (el.textContent ? el.textContent + " " : "") + (p.problem || e.message);
      const input = f.querySelector('[name="' + p.file + '"]'); if (input) input.classList.add("bad");
    }
  }
}

// ---- configuration wizard ----------------------------------------------------------------------------------
let wstep = 1, wcfg = null;
const FIELDS = { 1: ["proxy.port"], 2: ["cache.enabled", "cache.port", "cache.allowed_domains", "patch.enabled", "patch.volume", "patch.client_networks"], 3: ["cache.min_tls"] };
async function startWizard() {
  wcfg = await api("/api/config");
  $("#w-proxy-port").value = wcfg.proxy.port;
  $("#w-cache-enabled").checked = wcfg.cache.enabled;
  $("#w-cache-port").value = wcfg.cache.port;
  $("#w-domains").value = wcfg.cache.allowed_domains.join("\\n");
  $("#w-patch-enabled").checked = wcfg.patch.enabled;
  $("#w-min-tls").value = wcfg.cache.min_tls;
  $("#w-done").textContent = "";
  clearFieldErrors(); step(1);
}
function step(n) {
  wstep = n;
  for (const s of document.querySelectorAll(".wstep")) s.classList.toggle("hidden", Number(s.dataset.step) !== n);
  for (const s of document.querySelectorAll(".steps span")) s.classList.toggle("on", Number(s.dataset.step) === n);
  $("#w-back").disabled = n === 1; $("#w-next").classList.toggle("hidden", n === 3); $("#w-save").classList.toggle("hidden", n !== 3);
  $("#w-cache-port").disabled = !$("#w-cache-enabled").checked;
}
function domains() { return $("#w-domains").value.split(/[\\s,]+/).map((d) => d.trim()).filter(Boolean); }
// An emptied field is sent as null (refused with the key), never Number("") = 0, "any free port" (issue 10).
function portField(id) { const v = $(id).value.trim(); return v === "" ? null : Number(v); }
function partialFor(upTo) {
  const p = { proxy: { port: portField("#w-proxy-port") } };
  if (upTo >= 2) {
    p.cache = { enabled: $("#w-cache-enabled").checked, port: portField("#w-cache-port"), allowed_domains: domains() };
    p.patch = { enabled: $("#w-patch-enabled").checked };
  }
  if (upTo >= 3) p.cache.min_tls = $("#w-min-tls").value;
  return p;
}
function clearFieldErrors() {
  // every error shown, the general one and the last "saved" too: a successful save leaves no stale message
  for (const el of document.querySelectorAll("#wizard [data-field-err], #w-general-err, #w-done")) el.textContent = "";
  for (const el of document.querySelectorAll("#wizard .bad")) el.classList.remove("bad");
}
function fieldError(field, msg) {
  const base = String(field || "").replace(/\\[\\d+\\]$/, "");
  const el = document.querySelector('#wizard [data-field-err="' + base + '"]') || $("#w-general-err");
  el.textContent = msg;
  const input = document.querySelector('#wizard [data-field="' + base + '"]'); if (input) input.classList.add("bad");
  for (const [s, fs] of Object.entries(FIELDS)) if (fs.includes(base)) step(Number(s));
}
async function validateStep(dry) {
  clearFieldErrors();
  if (domains().length > LIMITS.maxDomains) { fieldError("cache.allowed_domains", "cache.allowed_domains: " + domains().length + " entries, at most " + LIMITS.maxDomains); return false; }
  try {
    await api("/api/config" + (dry ? "?dry_run=1" : ""), { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(partialFor(dry ? wstep : 3)) });
    return true;
  } catch (e) { if (e.message !== "unauthorized") fieldError(e.field, e.message); return false; }
}
async function next() { if (await validateStep(true)) step(wstep + 1); }
async function save() {
  if (await validateStep(false)) { $("#w-done").textContent = "Saved and applied: new connections use the new settings; open tunnels are untouched."; wcfg = await api("/api/config"); }
}

// ---- logs --------------------------------------------------------------------------------------------------
let logOffset = 0;
async function refreshLogs() {
  const q = $("#log-q").value, id = $("#log-id").value;
  const r = await api("/api/logs?limit=50&offset=" + logOffset + "&q=" + encodeURIComponent(q) + "&id=" + encodeURIComponent(id));
  $("#log-rows").innerHTML = r.items.map((l) => "<tr><td>" + esc((l.t || "").replace("T", " ").slice(0, 19)) + "</td><td>" + esc(l.level) + "</td><td>" + esc(l.msg || l.raw) + "</td><td>" + esc(l.id || "") +
    "</td><td><pre>" + esc(JSON.stringify(Object.fromEntries(Object.entries(l).filter(([k]) => !["t", "level", "msg", "id"].includes(k))))) + "</pre></td></tr>").join("") || '<tr><td colspan="5" class="muted">no lines</td></tr>';
  $("#log-newer").disabled = logOffset === 0; $("#log-older").disabled = !r.more;
}

// ---- diagnostics -------------------------------------------------------------------------------------------
async function runDiag() {
  $("#diag-out").innerHTML = '<p class="muted">Testing each host of the pod (up to 5 s)…</p>';
  const target = $("#diag-target").value.trim();
  const r = await api("/api/diagnostics", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(target ? { target } : {}) });
  const c = r.connectivity;
  const rows = c.results.map((x) => "<tr><td>" + esc(x.host) + ":" + x.port + "</td><td>" + esc(x.check) + "</td><td class='" + (x.ok ? "ok" : "err") + "'>" + (x.ok ? "OK " + esc(x.tlsVersion || "") : esc(x.hop + (x.status ? " " + x.status : "")) + ": " + esc(x.reason)) + "</td><td>" + x.ms + " ms</td></tr>").join("");
  const w = r.resources.workers.map((x) => "<tr><td>worker " + x.index + "</td><td>" + (x.cpu_s ?? "?") + " s CPU</td></tr>").join("");
  $("#diag-out").innerHTML = "<h3>Connectivity (pod " + esc(c.pod) + ", " + (c.via === "upstream" ? "through upstream proxy " + esc(c.upstream_proxy) : "direct") + "): <span class='" + (c.ok ? "ok'>all checks passed" : "err'>" + c.failed + " failed") + "</span></h3><table><tr><th>host</th><th>check</th><th>result</th><th>time</th></tr>" + rows + "</table>" +
    "<h3>Resources</h3><p>process: " + fmtBytes(r.resources.process.rss_bytes) + " RSS, " + r.resources.process.cpu_user_s.toFixed(1) + " s user CPU</p><table>" + w + "</table>" +
    "<h3>Archive</h3><p>One-time password (shown only now): <span class='secret' id='diag-pass'>" + esc(r.archive.password) + "</span></p>" +
    "<p>Open it with (age asks for the password): <code id='diag-cmd'>" + esc(r.archive.open_command) + "</code></p>" +
    "<p><button class='sec' id='diag-dl' data-url='" + esc(r.archive.url) + "' data-name='" + esc(r.archive.name) + "'>Download the encrypted archive (" + fmtBytes(r.archive.bytes) + ", once)</button></p>";
}
async function download(ev) {
  const b = ev.target.closest("#diag-dl"); if (!b) return;
  const r = await fetch(b.dataset.url, { headers: { authorization: "Bearer " + token } });
  if (!r.ok) { b.textContent = "Already downloaded or expired"; b.disabled = true; return; }
  const a = document.createElement("a"); a.href = URL.createObjectURL(await r.blob()); a.download = b.dataset.name; a.click();
  b.disabled = true;
}
async function doReset() {
  // The confirmation says what will happen (GET /api/reset: a new CA every agent must install, the ports after it…).
  let plan = null; try { plan = await api("/api/reset"); } catch (e) { if (e.message === "unauthorized") return; }
  const will = plan ? plan.will.map((w) => "- " + w).join("\\n") : "The changes made here, certificates, logs, stats and stores are removed.";
  const c = prompt("Reset will:\\n" + will + "\\n\\nType RESET to confirm."); if (c === null) return;
  try {
    const r = await api("/api/reset", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ confirm: c }) });
    if (r.token) { token = r.token; sessionStorage.setItem("agate.token", r.token); } // the new admin token
    $("#reset-msg").textContent = "Reset done: the gateway runs on " + (r.config_file ? "the values in " + r.config_file + " (kept)" : "the embedded defaults") + ".";
  }
  catch (e) { $("#reset-msg").textContent = e.message; }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => logout(""));
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.tab));
  for (const b of document.querySelectorAll("[data-range]")) b.addEventListener("click", () => { range = b.dataset.range; refreshAppliance().catch(showErr); });
  $("#cert-rows").addEventListener("click", certAction);
  $("#next-gen").addEventListener("click", async () => {
    $("#next-msg").textContent = "";
    if (!confirm("Generate a new appliance CA and publish it as the next CA? Agents can then fetch /ca-bundle.pem (current + next) before you assign it.")) return;
    try { const r = await api("/api/ca/next", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ generate: true }) }); $("#next-msg").textContent = "Published \\u201c" + r.next.common_name + "\\u201d as the next CA."; await refreshCerts(); }
    catch (e) { $("#next-msg").textContent = e.message; }
  });
  $("#upload-form").addEventListener("submit", upload);
  $("#w-next").addEventListener("click", next);
  $("#w-back").addEventListener("click", () => { clearFieldErrors(); step(wstep - 1); });
  $("#w-save").addEventListener("click", save);
  $("#w-cache-enabled").addEventListener("change", () => { $("#w-cache-port").disabled = !$("#w-cache-enabled").checked; });
  $("#log-form").addEventListener("submit", (e) => { e.preventDefault(); logOffset = 0; refreshLogs().catch(showErr); });
  $("#log-newer").addEventListener("click", () => { logOffset = Math.max(0, logOffset - 50); refreshLogs().catch(showErr); });
  $("#log-older").addEventListener("click", () => { logOffset += 50; refreshLogs().catch(showErr); });
  $("#diag-run").addEventListener("click", () => runDiag().catch((e) => { $("#diag-out").textContent = e.message; }));
  $("#diag-out").addEventListener("click", download);
  $("#reset").addEventListener("click", doReset);
  wireCache();
  if (token) start(); else $("#token").focus();
});
${CACHE_SCRIPT}${HEALTH_SCRIPT}${FLEET_SCRIPT}`;

const BODY = `
<div id="login" class="card">
  <h2 style="margin-top:0">agate management</h2>
  <form id="login-form"><label for="token">Admin token</label>
  <input id="token" type="password" autocomplete="off" placeholder="printed by: agate token">
  <div class="err" id="login-err"></div>
  <p class="muted">Asked once per browser session; it stays in this tab only.</p>
  <button class="pri" type="submit" id="login-btn">Sign in</button></form>
</div>
<div id="app" class="hidden">
<header><h1>agate</h1><span id="gw-name" class="muted" style="color:#cfe0f2"></span><span class="sp"></span><span id="health" class="badge">…</span><button id="logout">Sign out</button></header>
<nav><button data-tab="appliance">Appliance</button>${CACHE_TAB}<button data-tab="certs">Certificates</button><button data-tab="config">Configuration</button><button data-tab="logs">Logs</button><button data-tab="diag">Diagnostics</button>${FLEET_TAB}</nav>
<main>
<div id="toast" class="err"></div>${UNREACHABLE_BANNER}
<section data-tab="appliance">
  <div class="grid">
    <div class="card"><h3>Health</h3><div id="reasons"></div><div class="kv" style="margin-top:8px"><b>uptime</b><span id="uptime"></span><b>workers</b><span id="workers"></span></div></div>
${HEALTH_CARD}
    <div class="card"><h3>Ports</h3><div class="kv"><b>proxy</b><span id="p-proxy"></span><b>cache</b><span id="p-cache"></span><b>management</b><span id="p-admin"></span></div></div>
    <div class="card"><h3>Modes</h3><div class="kv"><b>proxy</b><span id="m-proxy"></span><b>cache</b><span id="m-cache"></span><b>patch</b><span id="m-patch"></span></div></div>
    <div class="card"><h3>TLS</h3><div id="min-tls"></div><div id="ca-kind" class="muted"></div><div id="ca-exp" class="muted"></div><div class="muted"><a href="/ca.pem">CA (PEM)</a> · <a href="/ca.der">CA (DER)</a></div></div>
    <div class="card"><h3>Active tunnels</h3><div class="big" id="c-active-tunnels">0</div><div class="muted">total since start: <span id="c-total-tunnels">0</span></div></div>
    <div class="card"><h3>Unique IPs (60 min)</h3><div class="big" id="c-unique-ips">0</div><div class="muted">clients on the proxy port</div></div>
    <div class="card"><h3>Active agents (60 min)</h3><div class="big" id="c-active-agents">0</div><div class="muted">24 hours: <span id="c-agents-24h">0</span> · total agents over 7 days: <span id="c-total-agents">0</span></div></div>
    <div class="card"><h3>Bandwidth saved (30 days)</h3><div class="big" id="c-saved">0 B</div><div class="muted" id="c-saved-detail"></div></div>
    <div class="card"><h3>Cache hits / misses</h3><div class="big" id="c-hits">0 / 0</div><div class="muted">tunnel bytes: <span id="c-bytes"></span></div></div>
    <div class="card"><h3>Refused</h3><div class="big" id="c-refusals">0</div><div class="muted">requests refused by policy or limits</div></div>
  </div>
  <div class="card" style="margin-top:14px"><div class="row" style="justify-content:space-between"><h3 style="flex:0 0 auto">Connections over time</h3><span style="flex:0 0 auto"><button class="sec" data-range="1h">1 h</button> <button class="sec" data-range="24h">24 h</button> <button class="sec" data-range="7d">7 days</button></span></div><div id="graph"></div></div>
</section>${CACHE_SECTION}${FLEET_SECTION}
<section data-tab="certs" class="hidden">
  <div id="cert-warn"></div>
  <div class="card"><h3>Certificate authorities</h3>
  <table><thead><tr><th>common name</th><th>description</th><th>role</th><th>valid from</th><th>valid until</th><th>created</th><th>updated</th><th></th></tr></thead><tbody id="cert-rows"></tbody></table>
  <p class="muted">Rollover: publish the next CA before assigning it; agents fetch <code>/ca-bundle.pem</code> (current + next) or <code>/ca.pem?next=1</code> from the proxy, cache or this port, so they trust both before the switch. Assigning the next CA makes it current.</p>
  <button class="sec" id="next-gen">Generate a new appliance CA as next</button> <span id="next-msg" class="err"></span></div>
  <div class="card" style="margin-top:14px"><h3>Upload a customer-signed chain</h3>
  <form id="upload-form">
    <div class="row"><div><label for="u-cn">Common name (≤ 100)</label><input id="u-cn" name="common_name" type="text" maxlength="100"><div class="err" data-err="common_name"></div></div>
    <div><label for="u-desc">Description (≤ 100)</label><input id="u-desc" name="description" type="text" maxlength="100"><div class="err" data-err="description"></div></div></div>
    <div class="row"><div><label for="u-root">Root certificate (PEM)</label><input id="u-root" name="root" type="file" accept=".pem,.crt,.cer"><div class="err" data-err="root"></div></div>
    <div><label for="u-inter">Intermediate chain (PEM)</label><input id="u-inter" name="intermediate" type="file" accept=".pem,.crt,.cer"><div class="err" data-err="intermediate"></div></div>
    <div><label for="u-key">Private key (PEM, no passphrase)</label><input id="u-key" name="key" type="file" accept=".pem,.key"><div class="err" data-err="key"></div></div></div>
    <p class="muted">PEM only, at most 3 MB each. The chain is checked before it is kept.</p>
    <div class="err" data-err="form"></div><div class="ok" id="upload-ok"></div>
    <button class="pri" type="submit" id="upload-btn">Upload</button>
  </form></div>
</section>
<section data-tab="config" class="hidden">
  <div class="card" id="wizard">
  <div class="steps"><span data-step="1">1 · Proxy port</span><span data-step="2">2 · Modes</span><span data-step="3">3 · TLS</span></div>
  <div class="wstep" data-step="1"><label for="w-proxy-port">Proxy port</label><input id="w-proxy-port" data-field="proxy.port" type="number" min="1" max="65535" required>
    <div class="err" data-field-err="proxy.port"></div><p class="muted">1–65535, not ${[...RESERVED_PORTS].join(", ")}; agents use it as their HTTPS proxy.</p></div>
  <div class="wstep hidden" data-step="2">
    <label><input id="w-cache-enabled" data-field="cache.enabled" type="checkbox"> Cache mode (terminate agents' TLS and serve artifacts from the local cache)</label><div class="err" data-field-err="cache.enabled"></div>
    <label for="w-cache-port">Cache port</label><input id="w-cache-port" data-field="cache.port" type="number" min="1" max="65535" required><div class="err" data-field-err="cache.port"></div>
    <label for="w-domains">Allowed domains (at most ${MAX_ALLOWED_DOMAINS}, one per line, bare domains like microsoft.com)</label><textarea id="w-domains" data-field="cache.allowed_domains" rows="4"></textarea><div class="err" data-field-err="cache.allowed_domains"></div>
    <label><input id="w-patch-enabled" data-field="patch.enabled" type="checkbox"> Patch mode (needs cache mode, the patch volume and the agents' networks in the config file)</label><div class="err" data-field-err="patch.enabled"></div><div class="err" data-field-err="patch.volume"></div><div class="err" data-field-err="patch.client_networks"></div>
  </div>
  <div class="wstep hidden" data-step="3"><label for="w-min-tls">Minimum TLS version for agents</label>
    <select id="w-min-tls" data-field="cache.min_tls">${OFFERED_TLS_VERSIONS.map((v) => `<option>${v}</option>`).join("")}</select><div class="err" data-field-err="cache.min_tls"></div></div>
  <div class="err" id="w-general-err"></div>
  <p><button class="sec" id="w-back">Back</button> <button class="pri" id="w-next">Next</button> <button class="pri hidden" id="w-save">Save and apply</button></p>
  <div class="ok" id="w-done"></div></div>
</section>
<section data-tab="logs" class="hidden"><div class="card">
  <form id="log-form" class="row"><input id="log-q" type="text" placeholder="search text"><input id="log-id" type="text" placeholder="connection id"><button class="pri" type="submit" style="flex:0 0 auto">Search</button></form>
  <table style="margin-top:10px"><thead><tr><th>time (UTC)</th><th>level</th><th>message</th><th>id</th><th>details</th></tr></thead><tbody id="log-rows"></tbody></table>
  <p><button class="sec" id="log-newer">Newer</button> <button class="sec" id="log-older">Older</button></p></div>
</section>
<section data-tab="diag" class="hidden"><div class="card"><h3>Diagnostics</h3>
  <p>Tests each host the configured pod has (through the upstream proxy when one is set, as agents' traffic goes), reports resource use, and makes an encrypted archive (age format) for support.</p>
  <p><label>Also test (optional) <input id="diag-target" placeholder="host:port, e.g. qagpublic.qg2.apps.qualys.com:443" size="44"></label></p>
  <button class="pri" id="diag-run">Run diagnostics</button><div id="diag-out" style="margin-top:12px"></div></div>
  <div class="card" style="margin-top:14px"><h3>Reset</h3><p>Back to unconfigured: the changes made here, certificates, logs, stats and stores are removed; the --config file is kept.</p><button class="dan" id="reset">Reset the appliance…</button> <span id="reset-msg"></span></div>
</section>
</main></div>`;

let cached: string | null = null;

export function renderPage(): string {
  cached ??= `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>agate</title>
<link rel="icon" href="data:,"><style>${CSS}</style></head><body>${BODY}<script>${SCRIPT}</script></body></html>`;
  return cached;
}
