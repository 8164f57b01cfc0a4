/**
 * @module The dashboard's health parts (issue 10), as strings page.ts puts in: the platform link card ("QAG Status:
 * Connected", connected on, each host with its latency or last error and hop), the maintenance button, and the
 * "gateway unreachable since …" banner that replaces a stale "Normal" when the API stops answering (the page used to
 * keep showing the last answer after the gateway had stopped), polled on every tab (`pollHealth`).
 */

export const HEALTH_CARD = `
    <div class="card" id="link-card"><h3>Platform link</h3><div id="qag-status" class="big" style="font-size:1.1em">QAG Status: …</div>
      <div id="qag-on" class="muted"></div><div id="qag-hosts" style="margin-top:6px;font-size:.9em"></div>
      <div style="margin-top:8px"><button id="maint-btn" type="button">Maintenance on</button> <span id="maint-msg" class="muted"></span></div></div>`;

export const UNREACHABLE_BANNER = `<div id="unreachable" class="err hidden" role="alert" style="font-weight:bold;margin:6px 0"></div>`;

export const HEALTH_SCRIPT = `
let unreachableSince = null, maintOn = false;
/** A successful refresh: the gateway answers again. */
function onReach() {
  if (!unreachableSince) return;
  unreachableSince = null;
  const el = document.getElementById("unreachable"); el.textContent = ""; el.classList.add("hidden");
}
/** A refresh that failed: a network error (fetch rejects with a TypeError) or a gateway error in front of us means
 * the API is not answering; the badge must not keep saying the last health it heard. */
function onRefreshFail(e) {
  if (e && e.message === "unauthorized") return;
  if (!(e instanceof TypeError) && !(e && e.status >= 502)) { showErr(e); return; }
  if (!unreachableSince) unreachableSince = new Date();
  const hb = document.getElementById("health"); hb.textContent = "Unreachable"; hb.className = "badge Down";
  const el = document.getElementById("unreachable");
  el.textContent = "gateway unreachable since " + unreachableSince.toLocaleString() + " (" + unreachableSince.toISOString() + "); the figures below are from before";
  el.classList.remove("hidden");
}
/** On every tab but the Appliance one (which refreshes it all): /api/status alone keeps the header's badge and the
 * banner true, so "gateway unreachable since …" shows wherever the admin is, not only on the Appliance tab. */
async function pollHealth() {
  const st = await api("/api/status");
  onReach();
  const hb = document.getElementById("health"); hb.textContent = st.health; hb.className = "badge " + st.health;
}
function linkText(l) {
  const on = l.connected_on ? " · connected on " + new Date(l.connected_on).toLocaleString() : "";
  const ms = l.latency_ms != null ? " · " + l.latency_ms + " ms" : "";
  const err = l.status !== "Connected" && l.last_error ? " · " + l.last_error.hop + ": " + l.last_error.reason : "";
  return l.status + on + ms + err;
}
function renderLink(st) {
  const p = st.platform;
  if (p) {
    const s = document.getElementById("qag-status"); s.textContent = "QAG Status: " + p.status;
    s.style.color = p.status === "Connected" ? "#1a7f37" : p.status === "Not connected" ? "#b42318" : "";
    document.getElementById("qag-on").textContent = (p.connected_on ? "connected on " + new Date(p.connected_on).toLocaleString() : "not connected since start") + " · pod " + p.pod + (p.probe_interval_s ? " · probed every " + p.probe_interval_s + " s" : " · probe off");
    document.getElementById("qag-hosts").innerHTML = p.hosts.map((h) => "<div><b>" + esc(h.host) + "</b> " + esc(linkText(h)) + "</div>").join("");
  }
  maintOn = !!(st.maintenance && st.maintenance.on);
  document.getElementById("maint-btn").textContent = maintOn ? "Maintenance off" : "Maintenance on";
  document.getElementById("maint-msg").textContent = maintOn ? "in maintenance since " + new Date(st.maintenance.since).toLocaleString() + ": new connections get 503" : "";
}
async function toggleMaintenance() {
  const on = !maintOn;
  if (on && !confirm("Maintenance: every port's /healthz answers 503 and new agent connections are refused with 503 + Retry-After (established tunnels and downloads continue). It stays on across restarts until you turn it off. Go on?")) return;
  try { await api("/api/maintenance", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ on }) }); await refreshAppliance(); }
  catch (e) { document.getElementById("maint-msg").textContent = e.message; }
}
document.addEventListener("DOMContentLoaded", () => document.getElementById("maint-btn").addEventListener("click", toggleMaintenance));
`;
