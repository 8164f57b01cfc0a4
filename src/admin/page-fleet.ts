/**
 * @module The dashboard's Fleet tab (issue 14), kept out of page.ts: every gateway (this one first, then each of
 * `[fleet] peers`) with its status (online / degraded / offline), name, location, version, health and reasons, the
 * platform link and "connected on", last heartbeat, missed heartbeats, active agents (60 min / 24 h), savings (30 d)
 * and open connections against capacity, from `GET /api/fleet`, refreshed every 2 s while the tab is open.
 * No backticks or `${` inside: these strings are spliced into page.ts's own template literals.
 */

export const FLEET_TAB = `<button data-tab="fleet">Fleet</button>`;

export const FLEET_SECTION = `
<section data-tab="fleet" class="hidden">
  <div class="card"><h3>Gateways</h3>
    <div class="muted" id="f-rules"></div>
    <table style="margin-top:8px"><thead><tr><th>status</th><th>gateway</th><th>location</th><th>version</th><th>health</th><th>platform link</th><th>last heartbeat</th><th>missed</th><th>active agents 60 min / 24 h</th><th>saved (30 d)</th><th>connections / capacity</th></tr></thead><tbody id="f-rows"></tbody></table>
    <p class="muted">A peer's trouble shows here only: it never changes this gateway's own health, so a load balancer keeps sending agents to a healthy gateway.</p>
  </div>
  <div class="card" style="margin-top:14px"><h3>Steer the fleet</h3>
    <p class="muted">Each chosen gateway applies the change through its own checks and audit log; the result is shown per gateway.</p>
    <div id="fs-targets"></div>
    <form id="fs-chain-form"><h4>Assign a customer chain</h4>
      <div class="row"><div><label for="fs-root">Root certificate (PEM)</label><input id="fs-root" name="root" type="file"></div>
      <div><label for="fs-inter">Intermediate chain (PEM)</label><input id="fs-inter" name="intermediate" type="file"></div>
      <div><label for="fs-key">Private key (PEM)</label><input id="fs-key" name="key" type="file"></div>
      <div><label for="fs-cn">Name</label><input id="fs-cn" name="common_name" type="text"></div></div>
      <p><button class="pri" type="button" id="fs-chain-btn">Assign to the chosen gateways</button></p></form>
    <h4>Push config</h4>
    <label for="fs-domains">Allowed domains (one per line; leave empty to keep each gateway's)</label><textarea id="fs-domains" rows="3"></textarea>
    <label for="fs-mintls">Minimum TLS version</label><select id="fs-mintls"><option value="">(unchanged)</option><option>1.0</option><option>1.1</option><option>1.2</option><option>1.3</option></select>
    <label for="fs-rules">Cache rules (JSON list of {host, path, max_age_s}; leave empty to keep)</label><textarea id="fs-rules" rows="2"></textarea>
    <p><button class="pri" type="button" id="fs-config-btn">Push to the chosen gateways</button></p>
    <div class="err" id="fs-err"></div>
    <table><thead><tr><th>gateway</th><th>result</th><th>reason</th></tr></thead><tbody id="fs-results"></tbody></table>
    <div class="muted" id="fs-summary"></div>
  </div>
  <div class="card" style="margin-top:14px"><h3>Export / import this gateway</h3>
    <p class="muted">Config, CAs with their keys and uploaded chains in one archive (age format; open it with <code>age -d</code>). Import restores one here ("Replace an appliance"); this gateway's management port and token are kept.</p>
    <div class="row"><div><label for="fx-pass">Passphrase (at least 12 characters)</label><input id="fx-pass" type="password" autocomplete="new-password"></div></div>
    <p><button class="pri" type="button" id="fx-export">Export</button> <a id="fx-link" class="hidden">download</a></p>
    <div class="row"><div><label for="fx-file">Archive to import</label><input id="fx-file" type="file"></div><div><label for="fx-ipass">Its passphrase</label><input id="fx-ipass" type="password" autocomplete="off"></div></div>
    <p><button class="dan" type="button" id="fx-import">Import and apply</button></p>
    <div id="fx-result"></div>
  </div>
</section>`;

export const FLEET_SCRIPT = `
// ---- steering the fleet, export / import (issue 14; admin/fleet-steer.ts, admin/export.ts) ---------------------------
let fsPeers = "";
function renderTargets(f) {
  const list = f.gateways.map((g) => g.peer);
  if (list.join(",") === fsPeers) return;
  fsPeers = list.join(",");
  $("#fs-targets").innerHTML = f.gateways.map((g) => '<label style="display:inline-block;margin-right:14px"><input type="checkbox" class="fs-target" value="' + esc(g.peer) + '" checked> ' + esc(g.self ? "this gateway" : ((g.member && g.member.name) || g.peer) + " (" + g.peer + ")") + "</label>").join("");
}
const fsChosen = () => Array.from(document.querySelectorAll(".fs-target")).filter((x) => x.checked).map((x) => x.value);
function showSteer(r) {
  $("#fs-results").innerHTML = r.results.map((x) => '<tr data-gateway="' + esc(x.gateway) + '" data-result="' + esc(x.result) + '"><td>' + esc(x.gateway === "self" ? "this gateway" : x.gateway) + "</td><td>" + esc(x.result) + "</td><td>" + esc(x.reason || "") + "</td></tr>").join("");
  set("fs-summary", r.summary);
}
async function steerChain() {
  set("fs-err", "");
  const fd = new FormData($("#fs-chain-form"));
  for (const g of fsChosen()) fd.append("gateways", g);
  try { showSteer(await api("/api/fleet/chain", { method: "POST", body: fd })); } catch (e) { set("fs-err", e.message); if (e.body && e.body.results) showSteer(Object.assign({ summary: "" }, e.body)); }
}
async function steerConfig() {
  set("fs-err", "");
  const cache = {};
  const doms = $("#fs-domains").value.split(/[\\s,]+/).filter((x) => x);
  if (doms.length) cache.allowed_domains = doms;
  if ($("#fs-mintls").value) cache.min_tls = $("#fs-mintls").value;
  if ($("#fs-rules").value.trim()) { try { cache.rules = JSON.parse($("#fs-rules").value); } catch (e) { set("fs-err", "cache rules: not valid JSON (" + e.message + ")"); return; } }
  try { showSteer(await api("/api/fleet/config", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ gateways: fsChosen(), change: { cache } }) })); } catch (e) { set("fs-err", e.message); }
}
async function doExport() {
  set("fx-result", "");
  const r = await fetch("/api/export", { method: "POST", headers: { authorization: "Bearer " + token, "content-type": "application/json" }, body: JSON.stringify({ passphrase: $("#fx-pass").value }) });
  if (!r.ok) { const b = await r.json().catch(() => ({})); set("fx-result", b.error || ("HTTP " + r.status)); return; }
  const name = (/filename="([^"]+)"/.exec(r.headers.get("content-disposition") || "") || [])[1] || "agate-export.age";
  const a = $("#fx-link"); a.href = URL.createObjectURL(await r.blob()); a.download = name; a.textContent = "download " + name; a.classList.remove("hidden"); a.click();
  set("fx-result", "exported " + name + "; open it with: age -d -o export.json.gz " + name);
}
async function doImport() {
  const f = $("#fx-file").files[0];
  if (!f) { set("fx-result", "choose the archive first"); return; }
  if (!confirm("Import replaces this gateway's CA and config with the archive's. Continue?")) return;
  const fd = new FormData(); fd.append("archive", f); fd.append("passphrase", $("#fx-ipass").value);
  try { const r = await api("/api/import", { method: "POST", body: fd }); set("fx-result", "imported " + r.from.gateway + " (" + r.from.created + "): CA " + r.assigned + ", " + r.uploaded.length + " uploaded chain(s)" + (r.restart_required.length ? "; restart to apply " + r.restart_required.join(", ") : "")); } catch (e) { set("fx-result", e.message); }
}
document.addEventListener("click", (e) => {
  const id = e.target && e.target.id;
  if (id === "fs-chain-btn") steerChain();
  else if (id === "fs-config-btn") steerConfig();
  else if (id === "fx-export") doExport().catch((x) => set("fx-result", x.message));
  else if (id === "fx-import") doImport();
});
// ---- fleet (issue 14) --------------------------------------------------------------------------------------
const FLEET_COLOR = { online: "#27ae60", degraded: "#e2a400", offline: "#c0392b" };
const ago = (s) => { if (!s) return "never"; const d = Math.max(0, Math.round((Date.now() - Date.parse(s)) / 1000)); return d < 90 ? d + " s ago" : d < 5400 ? Math.round(d / 60) + " min ago" : new Date(s).toISOString().replace("T", " ").slice(0, 19) + " UTC"; };
async function refreshFleet() {
  const f = await api("/api/fleet");
  renderTargets(f);
  set("f-rules", "heartbeat every " + f.heartbeat_s + " s; offline after " + f.missed_heartbeats + " missed; webhook: " + (f.webhook.configured ? f.webhook.sent + " sent, " + f.webhook.failed + " failed, " + f.webhook.pending + " pending" : "none") + (f.peer_tls && f.gateways.length > 1 ? "; peer TLS: " + (f.peer_tls.verified ? "verified against [fleet] peer_ca" : f.peer_tls.note) : ""));
  $("#f-rows").innerHTML = f.gateways.map((g) => {
    const m = g.member || {};
    const name = (m.name ? esc(m.name) : '<span class="muted">(never answered)</span>') + '<div class="muted">' + (g.self ? "this gateway" : esc(g.peer) + (g.tls_verified === false ? " · TLS not verified" : "")) + "</div>";
    const health = m.health ? esc(m.health) + (m.reasons && m.reasons.length ? '<div class="muted">' + m.reasons.map(esc).join("<br>") + "</div>" : "") : "";
    const link = m.platform ? esc(m.platform.status) + '<div class="muted">connected on ' + (m.platform.connected_on ? esc(new Date(m.platform.connected_on).toISOString().replace("T", " ").slice(0, 19)) + " UTC" : "never") + "</div>" : "";
    const err = g.last_error ? '<div class="err">' + esc(g.last_error) + "</div>" : "";
    const cap = m.capacity ? fmtNum(m.open_connections) + " / " + fmtNum(m.capacity) : "";
    return '<tr data-peer="' + esc(g.peer) + '" data-status="' + esc(g.status) + '"><td><span class="badge" style="background:' + FLEET_COLOR[g.status] + ';color:#fff">' + esc(g.status) + "</span></td><td>" + name + "</td><td>" + esc(m.location) + "</td><td>" + esc(m.version) + "</td><td>" + health + "</td><td>" + link +
      "</td><td>" + (g.self ? "(itself)" : esc(ago(g.last_heartbeat))) + err + "</td><td>" + fmtNum(g.missed_heartbeats) + "</td><td>" + (m.name ? fmtNum(m.active_agents_60m) + " / " + fmtNum(m.active_agents_24h) : "") + "</td><td>" + (m.savings_30d ? fmtBytes(m.savings_30d.saved_bytes) : "") + "</td><td>" + cap + "</td></tr>";
  }).join("");
}
`;
