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
</section>`;

export const FLEET_SCRIPT = `
// ---- fleet (issue 14) --------------------------------------------------------------------------------------
const FLEET_COLOR = { online: "#27ae60", degraded: "#e2a400", offline: "#c0392b" };
const ago = (s) => { if (!s) return "never"; const d = Math.max(0, Math.round((Date.now() - Date.parse(s)) / 1000)); return d < 90 ? d + " s ago" : d < 5400 ? Math.round(d / 60) + " min ago" : new Date(s).toISOString().replace("T", " ").slice(0, 19) + " UTC"; };
async function refreshFleet() {
  const f = await api("/api/fleet");
  set("f-rules", "heartbeat every " + f.heartbeat_s + " s; offline after " + f.missed_heartbeats + " missed; webhook: " + (f.webhook.configured ? f.webhook.sent + " sent, " + f.webhook.failed + " failed, " + f.webhook.pending + " pending" : "none"));
  $("#f-rows").innerHTML = f.gateways.map((g) => {
    const m = g.member || {};
    const name = (m.name ? esc(m.name) : '<span class="muted">(never answered)</span>') + '<div class="muted">' + (g.self ? "this gateway" : esc(g.peer)) + "</div>";
    const health = m.health ? esc(m.health) + (m.reasons && m.reasons.length ? '<div class="muted">' + m.reasons.map(esc).join("<br>") + "</div>" : "") : "";
    const link = m.platform ? esc(m.platform.status) + '<div class="muted">connected on ' + (m.platform.connected_on ? esc(new Date(m.platform.connected_on).toISOString().replace("T", " ").slice(0, 19)) + " UTC" : "never") + "</div>" : "";
    const err = g.last_error ? '<div class="err">' + esc(g.last_error) + "</div>" : "";
    const cap = m.capacity ? fmtNum(m.open_connections) + " / " + fmtNum(m.capacity) : "";
    return '<tr data-peer="' + esc(g.peer) + '" data-status="' + esc(g.status) + '"><td><span class="badge" style="background:' + FLEET_COLOR[g.status] + ';color:#fff">' + esc(g.status) + "</span></td><td>" + name + "</td><td>" + esc(m.location) + "</td><td>" + esc(m.version) + "</td><td>" + health + "</td><td>" + link +
      "</td><td>" + (g.self ? "(itself)" : esc(ago(g.last_heartbeat))) + err + "</td><td>" + fmtNum(g.missed_heartbeats) + "</td><td>" + (m.name ? fmtNum(m.active_agents_60m) + " / " + fmtNum(m.active_agents_24h) : "") + "</td><td>" + (m.savings_30d ? fmtBytes(m.savings_30d.saved_bytes) : "") + "</td><td>" + cap + "</td></tr>";
  }).join("");
}
`;
