/**
 * @module The dashboard's Cache tab (issue 9), kept out of page.ts: usage (used / capacity, entries, evictions, where
 * the store lives), purge (one URL, a host, a prefix, everything — "everything" asks first), prefill (a list of URLs;
 * each job's progress as a bar, refreshed every 2 s while the tab is open), hit ratio by host, the largest and the
 * most served objects. Plain strings spliced into page.ts's HTML and script; they call the same API as the CLI.
 * No backticks or `${` inside: these strings are spliced into page.ts's own template literals.
 */

export const CACHE_TAB = `<button data-tab="cache">Cache</button>`;

export const CACHE_SECTION = `
<section data-tab="cache" class="hidden">
  <div class="grid">
    <div class="card"><h3>Cache store</h3><div class="big" id="k-used">0 B</div><div class="muted" id="k-cap"></div>
      <div class="kv" style="margin-top:8px"><b>entries</b><span id="k-entries">0</span><b>evictions</b><span id="k-evict">0</span><b>where</b><span id="k-where"></span></div></div>
  </div>
  <div class="card" style="margin-top:14px"><h3>Purge</h3>
    <div class="row"><select id="k-purge-kind" style="flex:0 0 200px"><option value="url">one URL (every variant)</option><option value="host">every object of a host</option><option value="prefix">a URL prefix</option><option value="all">everything</option></select>
    <input id="k-purge-value" type="text" placeholder="https://host/path?query"><button class="dan" id="k-purge" style="flex:0 0 auto">Purge</button></div>
    <div class="err" id="k-purge-err"></div><div class="ok" id="k-purge-ok"></div>
    <p class="muted">Agents already downloading a purged object finish it; their next requests go to the origin.</p></div>
  <div class="card" style="margin-top:14px"><h3>Prefill</h3>
    <label for="k-prefill-urls">URLs to fetch into the cache before a rollout (one https URL per line)</label><textarea id="k-prefill-urls" rows="4"></textarea>
    <p><button class="pri" id="k-prefill">Prefill</button></p><div class="err" id="k-prefill-err"></div>
    <table><thead><tr><th>job</th><th>started</th><th>progress</th><th>done</th><th>failed</th><th>bytes</th></tr></thead><tbody id="k-jobs"></tbody></table></div>
  <div class="card" style="margin-top:14px"><h3>Hit ratio by host</h3>
    <table><thead><tr><th>host</th><th>hits</th><th>misses</th><th>bypass</th><th>hit ratio</th></tr></thead><tbody id="k-hosts"></tbody></table></div>
  <div class="grid" style="margin-top:14px;grid-template-columns:1fr 1fr">
    <div class="card"><h3>Largest objects</h3><table><thead><tr><th>size</th><th>hits</th><th>URL</th></tr></thead><tbody id="k-largest"></tbody></table></div>
    <div class="card"><h3>Most served</h3><table><thead><tr><th>served</th><th>hits</th><th>URL</th></tr></thead><tbody id="k-served"></tbody></table></div>
  </div>
</section>`;

export const CACHE_SCRIPT = `
// ---- cache (issue 9) ---------------------------------------------------------------------------------------
const none = (n) => '<tr><td colspan="' + n + '" class="muted">none yet</td></tr>';
async function refreshCache() {
  const [u, j] = await Promise.all([api("/api/cache"), api("/api/cache/prefill")]);
  set("k-used", fmtBytes(u.bytes));
  set("k-cap", "of " + fmtBytes(u.capacity) + (u.capacity ? " (" + (100 * u.bytes / u.capacity).toFixed(1) + "%)" : "") + (u.enabled ? "" : " \\u2014 cache mode is off"));
  set("k-entries", fmtNum(u.entries));
  set("k-evict", fmtNum(u.evictions.objects) + " (" + fmtBytes(u.evictions.bytes) + ")");
  set("k-where", (u.location === "patch-volume" ? "patch volume, one budget with patch files: " : "data directory: ") + (u.dir || ""));
  $("#k-hosts").innerHTML = u.by_host.map((h) => "<tr><td>" + esc(h.host) + "</td><td>" + fmtNum(h.hits) + "</td><td>" + fmtNum(h.misses) + "</td><td>" + fmtNum(h.bypass) + "</td><td>" + (h.hit_ratio === null ? "" : (100 * h.hit_ratio).toFixed(1) + "%") + "</td></tr>").join("") || none(5);
  $("#k-largest").innerHTML = u.largest.map((o) => "<tr><td>" + fmtBytes(o.size) + "</td><td>" + fmtNum(o.hits) + "</td><td>" + esc(o.url) + "</td></tr>").join("") || none(3);
  $("#k-served").innerHTML = u.most_served.map((o) => "<tr><td>" + fmtBytes(o.bytes_served) + "</td><td>" + fmtNum(o.hits) + "</td><td>" + esc(o.url) + "</td></tr>").join("") || none(3);
  $("#k-jobs").innerHTML = j.jobs.map((x) => '<tr data-job="' + esc(x.id) + '" data-finished="' + x.finished + '"><td>' + esc(x.id) + "</td><td>" + esc(x.created.slice(11, 19)) + '</td><td><progress max="' + x.items.length + '" value="' + (x.done + x.failed) + '"></progress> ' + (x.done + x.failed) + "/" + x.items.length + (x.finished ? "" : " \\u2026") + '</td><td class="k-done">' + x.done + '</td><td class="k-failed">' + x.failed + "</td><td>" + fmtBytes(x.bytes) + "</td></tr>" + x.items.filter((i) => i.error).map((i) => '<tr><td></td><td colspan="5" class="err">' + esc(i.url) + ": " + esc(i.error) + "</td></tr>").join("")).join("") || none(6);
}
async function purgeCache() {
  $("#k-purge-err").textContent = ""; $("#k-purge-ok").textContent = "";
  const kind = $("#k-purge-kind").value, value = $("#k-purge-value").value.trim();
  if (kind === "all" && !confirm("Purge every object in the cache? Agents' next requests go to the origins.")) return;
  const body = kind === "all" ? { all: true } : { [kind]: value };
  try { const r = await api("/api/cache/purge", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }); $("#k-purge-ok").textContent = "Purged " + fmtNum(r.objects) + (r.objects === 1 ? " object, " : " objects, ") + fmtBytes(r.bytes) + "."; await refreshCache(); }
  catch (e) { $("#k-purge-err").textContent = e.message; }
}
async function prefillCache() {
  $("#k-prefill-err").textContent = "";
  const urls = $("#k-prefill-urls").value.split(/\\s+/).map((s) => s.trim()).filter(Boolean);
  try { await api("/api/cache/prefill", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ urls }) }); $("#k-prefill-urls").value = ""; await refreshCache(); }
  catch (e) { $("#k-prefill-err").textContent = e.message; }
}
function wireCache() {
  $("#k-purge").addEventListener("click", purgeCache);
  $("#k-prefill").addEventListener("click", prefillCache);
  $("#k-purge-kind").addEventListener("change", () => { const k = $("#k-purge-kind").value; const v = $("#k-purge-value"); v.disabled = k === "all"; v.placeholder = k === "host" ? "download.example.com" : k === "prefix" ? "https://host/path/" : k === "all" ? "" : "https://host/path?query"; });
}
`;
