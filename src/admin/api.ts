/**
 * @module The management API: (req, deps, ctx, addr) → Response. `GET /healthz`, the CA downloads
 * (admin/ca-downloads.ts) and the web page's shell (`GET /`, which holds no data) are open; everything else needs the bearer token (constant-time
 * compare), and an address that keeps getting it wrong is answered 429 for a while. Refusals are 4xx JSON
 * `{ error, field }`, the field naming the config key, form field or parameter at fault. Every change (a method other
 * than GET/HEAD) is written to the audit log with who, what and when, refused or not.
 */
import { allowedDomainWarnings } from "../core/domain-warnings";
import { randomBytes } from "node:crypto";
import { mergeConfig, redactConfig } from "../core/config";
import { ConfigError, ProxyError, statusFor } from "../core/errors";
import type { AdminDeps } from "./deps";
import { VERSION } from "../version";
import { readLogLinesNewestFirst } from "../store/log-store";
import { DAY, HOUR } from "../store/stats-db";
import { cacheCounters, ARCHIVE_TTL_MS, type AdminContext } from "./context";
import { checkApiChange, checkPatchVolume, commitConfig, configSources } from "./config-change";
import { upstreamGate, UpstreamUnusable, type UpstreamTest } from "./upstream-check";
import { overlayPath } from "../store/config-files";
import { resetPlan, runReset } from "./reset";
import { durationMetrics } from "./metrics-durations";
import { answerCaDownload } from "./ca-downloads";
import { clearNextCa, nextCaView, publishNextCa } from "./ca-next";
import { assignCertificate, deleteCertificate, editCertificate, isRefusal, listCertificates, uploadCertificate, type Refusal } from "./certificates";
import { archiveAnswer, archiveName, diagTargetsOf, makeOneTimePassword, readResources, sealArchive, testConnectivity } from "./diagnostics";
import { BodyTooLarge, MAX_JSON_BODY, MAX_UPLOAD_BODY, checkToken, decideDoor, readBodyLimited, tokenFingerprint } from "./guard";
import { renderPage } from "./page";
import { handleMaintenance, healthMetrics } from "./maintenance";
import { handleCacheApi, isCachePath, metricsCacheStore } from "./cache-ops";
import { FLEET_SELF_PATH, answerFleetSelf, fleetView } from "./fleet-api";
import { answerPeerSteer, handleSteerApi, isPeerSteerPath, isSteerPath } from "./fleet-steer";
import { handleArchiveApi, isArchivePath } from "./export";
import { log } from "../log";

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store", ...headers },
  });

export const apiError = (status: number, error: string, field?: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) =>
  json(status, field ? { error, field, ...extra } : { error, ...extra }, headers);

const fromRefusal = (r: Refusal) => apiError(r.status, r.error, r.field, r.extra);

/** Graph ranges for GET /api/stats?range=…: span and number of points. */
const RANGES: Record<string, { span: number; points: number }> = {
  "1h": { span: HOUR, points: 60 },
  "24h": { span: 24 * HOUR, points: 96 },
  "7d": { span: 7 * DAY, points: 168 },
};

/** Keys whose values GET /api/config shows as "(set)": sent back unchanged, they keep the current secret. */
function keepSecrets(partial: Record<string, any>, cur: ReturnType<typeof redactConfig>, real: AdminDeps["config"]) {
  const up = partial.upstream_proxy;
  if (up && typeof up === "object" && up.password === "(set)") up.password = real.upstream_proxy?.password ?? null;
  const ad = partial.admin;
  if (ad && typeof ad === "object" && ad.token === "(set)") ad.token = real.admin.token;
  const fl = partial.fleet;
  if (fl && typeof fl === "object" && fl.token === "(set)") fl.token = real.fleet.token;
  void cur;
}

/** The partial config with secrets masked, for the audit log. */
function maskSecrets(partial: unknown): unknown {
  return JSON.parse(JSON.stringify(partial ?? null, (k, v) => (k === "password" || k === "token") && v ? "(set)" : v));
}

async function readJson(req: Request): Promise<unknown> {
  const bytes = await readBodyLimited(req, MAX_JSON_BODY);
  const text = new TextDecoder().decode(bytes).trim();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ConfigError("body", `not valid JSON: ${(e as Error).message}`);
  }
}

function statusBody(deps: AdminDeps, ctx: AdminContext) {
  const c = deps.config;
  const h = deps.health();
  return {
    name: c.gateway.name,
    version: VERSION,
    uptime_s: h.uptime_s,
    health: h.health,
    status: h.status,
    reasons: h.reasons,
    ports: { ...deps.ports, admin: ctx.port },
    listen: { proxy: c.proxy.listen, cache: c.cache.listen, admin: c.admin.listen },
    admin_tls: c.admin.tls,
    modes: { proxy: true, cache: c.cache.enabled, patch: c.patch.enabled },
    min_tls: c.cache.min_tls,
    allowed_domains: c.cache.allowed_domains,
    upstream_proxy: c.upstream_proxy ? `${c.upstream_proxy.host}:${c.upstream_proxy.port}` : null,
    pod: c.platform.pod,
    workers: h.workers,
    ca: h.ca,
    active_tunnels: h.active_tunnels,
    open_connections: h.open_connections,
    config_file: deps.configPath,
    platform: h.platform,
    maintenance: h.maintenance,
    agent_ports: h.agent_ports,
  };
}

function statsBody(deps: AdminDeps, ctx: AdminContext, range: string) {
  const now = Date.now();
  if (now - ctx.lastSample > 1000) ctx.sampleNow(); // fresh numbers for a watching admin, not only every 10 s
  const s = deps.stats();
  const cache = cacheCounters(s);
  const sum = ctx.stats.summary(now);
  const r = RANGES[range] ?? RANGES["1h"]!;
  return {
    ...s,
    active_tunnels: s.totals.activeTunnels,
    active_agents_24h: sum.active_agents_24h,
    total_agents_7d: sum.total_agents_7d,
    unique_ips_7d: sum.unique_ips_7d,
    bandwidth_savings_30d: sum.savings_30d,
    cache,
    // issue 9: entries, bytes, capacity, evictions, hit ratio by host (`?.`: older AdminDeps test doubles lack it)
    cache_store: deps.cacheUsage?.(false) ?? null,
    series: { range: RANGES[range] ? range : "1h", points: ctx.stats.series(now, r.span, r.points) },
  };
}

type LogQuery = { q: string | null; id: string | null; limit: number; offset: number };

function searchLogs(deps: AdminDeps, ctx: AdminContext, query: LogQuery) {
  // Workers batch their lines to the supervisor (every 100 ms), so the ring is in arrival order: put it in time
  // order (log lines start with {"t":"<ISO time>", which sorts as text). Lines on disk are older than the ring's.
  const stamp = (l: string) => (l.startsWith('{"t":"') ? l.slice(6, 30) : "");
  const ring = deps
    .recentLogs()
    .map((line, i) => ({ line, i, t: stamp(line) }))
    .sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : a.i - b.i))
    .map((x) => x.line);
  const inRing = new Set(ring);
  const q = query.q?.toLowerCase() ?? null;
  const items: unknown[] = [];
  let matched = 0;
  let more = false;
  const since = ctx.logsSince;
  const consider = (line: string): boolean => {
    if (q && !line.toLowerCase().includes(q)) return true;
    let obj: any;
    try {
      obj = JSON.parse(line);
    } catch {
      obj = { raw: line };
    }
    if (since && typeof obj.t === "string" && Date.parse(obj.t) < since) return true;
    if (query.id !== null && String(obj.id ?? obj.reqId ?? "") !== query.id) return true;
    matched++;
    if (matched <= query.offset) return true;
    if (items.length >= query.limit) {
      more = true;
      return false;
    }
    items.push(obj);
    return true;
  };
  let go = true;
  for (let i = ring.length - 1; i >= 0 && go; i--) go = consider(ring[i]!);
  if (go)
    for (const line of readLogLinesNewestFirst(ctx.logPath)) {
      if (inRing.has(line)) continue;
      if (!consider(line)) break;
    }
  return { items, offset: query.offset, limit: query.limit, more };
}

function metricsText(deps: AdminDeps, ctx: AdminContext): string {
  const h = deps.health();
  const s = deps.stats();
  const sum = ctx.stats.summary(Date.now());
  const cache = cacheCounters(s);
  const out: string[] = [];
  const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
  const metric = (name: string, type: "gauge" | "counter", help: string, samples: [Record<string, string> | null, number][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) {
      const l = labels && Object.keys(labels).length ? `{${Object.entries(labels).map(([k, x]) => `${k}="${esc(x)}"`).join(",")}}` : "";
      out.push(`${name}${l} ${Number.isFinite(v) ? v : 0}`);
    }
  };
  metric("agate_up", "gauge", "1 while the gateway serves (0 when down or draining).", [[null, h.health === "Down" ? 0 : 1]]);
  metric("agate_health", "gauge", "Health state: 1 for the current one.", (["Normal", "Degraded", "Down"] as const).map((x) => [{ state: x }, h.health === x ? 1 : 0]));
  metric("agate_uptime_seconds", "gauge", "Seconds since the gateway started.", [[null, h.uptime_s]]);
  // two series, not state="alive"/"total" labels of one, which double-count when summed (issue 10)
  metric("agate_workers_alive", "gauge", "Worker threads alive.", [[null, h.workers.alive]]);
  metric("agate_workers_configured", "gauge", "Worker threads configured.", [[null, h.workers.total]]);
  metric("agate_active_tunnels", "gauge", "Tunnels open now.", [[null, s.totals.activeTunnels]]);
  metric("agate_open_connections", "gauge", "Client connections open now (both ports).", [[null, s.open_connections]]);
  metric("agate_tunnels_total", "counter", "Tunnels established since start.", [[null, s.totals.totalTunnels]]);
  out.push(...durationMetrics(s.totals));
  metric("agate_tunnel_bytes_total", "counter", "Bytes through tunnels since start.", [[{ direction: "up" }, s.totals.bytesUp], [{ direction: "down" }, s.totals.bytesDown]]);
  metric("agate_refusals_total", "counter", "Requests refused, by reason.", Object.entries(s.totals.refusals).map(([k, v]) => [{ reason: k }, v]));
  metric("agate_errors_total", "counter", "Errors, by kind.", Object.entries(s.totals.errors).map(([k, v]) => [{ kind: k }, v]));
  // the same names as /api/stats; agents are clients served (a tunnel or a cache answer), never /healthz probes or refused clients
  metric("agate_unique_ips_60m", "gauge", "Distinct client IPs served on the proxy port in the last 60 minutes.", [[null, s.unique_ips_60m]]);
  metric("agate_active_agents_60m", "gauge", "Distinct agents served (a tunnel or a cache answer) in the last 60 minutes.", [[null, s.active_agents_60m]]);
  metric("agate_active_agents_24h", "gauge", "Distinct agents served in the last 24 hours.", [[null, sum.active_agents_24h]]);
  metric("agate_total_agents_7d", "gauge", "Distinct agents served in the last 7 days.", [[null, sum.total_agents_7d]]);
  metric("agate_cache_requests_total", "counter", "Cache lookups since start, by result.", [[{ result: "hit" }, cache.hits], [{ result: "miss" }, cache.misses]]);
  metric("agate_cache_bytes_total", "counter", "Cache bytes since start: served to agents, fetched from origins.", [[{ kind: "served" }, cache.served_bytes], [{ kind: "fetched" }, cache.fetched_bytes]]);
  const store = deps.cacheUsage?.(false);
  if (store) metricsCacheStore(store, metric);
  // /api/stats' bandwidth_savings_30d.saved_bytes, with the unit as the last word (prometheus.io/docs/practices/naming)
  metric("agate_bandwidth_savings_30d_saved_bytes", "gauge", "Bytes served from the cache minus bytes fetched for it, last 30 days.", [[null, sum.savings_30d.saved_bytes]]);
  healthMetrics(h, metric);
  if (h.ca) metric("agate_ca_expiry_timestamp_seconds", "gauge", "When the active CA expires.", [[{ kind: h.ca.kind }, Math.floor(Date.parse(h.ca.not_after) / 1000)]]);
  return out.join("\n") + "\n";
}

export async function handleApi(req: Request, deps: AdminDeps, ctx: AdminContext, addr = "unknown"): Promise<Response> {
  const url = new URL(req.url);
  const path = url.pathname;
  const method = req.method;
  const read = method === "GET" || method === "HEAD";

  if (path === "/healthz" && read) {
    const h = deps.health();
    const ok = h.status === "ok" || h.status === "degraded";
    return json(ok ? 200 : 503, { ...h, ports: { ...h.ports, admin: ctx.port } });
  }

  // /ca.pem, /ca.der, /ca, /ca.msi, /ca-bundle.pem (and ?next=1): public, the same answers as the agent ports
  const caDownload = answerCaDownload(req, url, deps);
  if (caDownload) return caDownload;

  // The page holds no data: it asks for the token and calls the API with it.
  if ((path === "/" || path === "/index.html") && read)
    return new Response(renderPage(), {
      headers: {
        "content-type": "text/html; charset=utf-8",
        "cache-control": "no-store",
        "content-security-policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
        "x-frame-options": "DENY",
      },
    });

  // Peers only: the fleet token and a peer's address, never the admin token (admin/fleet-api.ts)
  if (path === FLEET_SELF_PATH) {
    const a = answerFleetSelf(req, deps, ctx, addr);
    return json(a.status, a.body, a.headers);
  }
  // Peers' pushes (issue 14): the fleet token and a peer's address, their own audit entries (admin/fleet-steer.ts)
  if (isPeerSteerPath(path)) return answerPeerSteer(req, path, deps, ctx, addr);

  const check = checkToken(req, deps.token);
  const door = decideDoor(check, ctx.throttle, addr, Date.now());
  if (!door.pass) {
    if (door.status === 429)
      return apiError(429, `too many wrong tokens from ${addr}; try again in ${door.retryAfter} s`, "authorization", {}, { "retry-after": String(door.retryAfter) });
    log("warn", `admin: ${check} token`, { addr, path });
    return apiError(401, `${check} bearer token (see \`agate token\`)`, "authorization", {}, { "www-authenticate": 'Bearer realm="agate"' });
  }

  if (read || url.searchParams.has("dry_run")) return route(req, url, deps, ctx);
  // A change: answer it, then record who did what, and how it ended.
  let detail: Record<string, unknown> | undefined;
  const res = await route(req, url, deps, ctx, (d) => (detail = d));
  ctx.audit.write({
    t: new Date().toISOString(),
    who: { addr, token: tokenFingerprint(deps.token) },
    method,
    path,
    action: actionName(method, path),
    status: res.status,
    ...(detail ? { detail } : {}),
  });
  return res;
}

function actionName(method: string, path: string): string {
  if (path === "/api/config") return "config.change";
  if (path === "/api/certificates") return "certificate.upload";
  if (path === "/api/ca/next") return method === "DELETE" ? "ca.next.clear" : "ca.next.publish";
  if (/\/assign$/.test(path)) return "certificate.assign";
  if (path.startsWith("/api/certificates/")) return method === "DELETE" ? "certificate.delete" : "certificate.edit";
  if (path === "/api/reset") return "reset";
  if (path === "/api/maintenance") return "maintenance";
  if (path === "/api/diagnostics") return "diagnostics.run";
  if (path === "/api/reload") return "config.reload";
  if (/^\/api\/workers\/\d+\/crash$/.test(path)) return "worker.crash";
  if (path === "/api/cache/purge") return "cache.purge";
  if (path === "/api/cache/prefill") return "cache.prefill";
  if (path === "/api/fleet/chain") return "fleet.chain";
  if (path === "/api/fleet/config") return "fleet.config";
  if (path === "/api/export") return "gateway.export";
  if (path === "/api/import") return "gateway.import";
  return `${method} ${path}`;
}

async function route(req: Request, url: URL, deps: AdminDeps, ctx: AdminContext, note: (d: Record<string, unknown>) => void = () => {}): Promise<Response> {
  const path = url.pathname;
  const method = req.method;
  try {
    if (path === "/api/status") return method === "GET" ? json(200, statusBody(deps, ctx)) : notAllowed(method, path, "GET");
    if (isCachePath(path)) return await handleCacheApi(req, path, deps, note);
    if (isSteerPath(path)) return await handleSteerApi(req, path, deps, ctx, note);
    if (isArchivePath(path)) return await handleArchiveApi(req, path, deps, ctx, note);
    if (path === "/api/fleet") return method === "GET" ? json(200, fleetView(deps, ctx)) : notAllowed(method, path, "GET");
    if (path === "/api/stats") return method === "GET" ? json(200, statsBody(deps, ctx, url.searchParams.get("range") ?? "1h")) : notAllowed(method, path, "GET");
    if (path === "/metrics") {
      if (method !== "GET") return notAllowed(method, path, "GET");
      return new Response(metricsText(deps, ctx), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" } });
    }

    if (path === "/api/config") {
      if (method === "GET") {
        if (url.searchParams.has("sources")) return json(200, configSources(deps)); // where each value comes from
        return json(200, redactConfig(deps.config), { "x-agate-config-file": deps.configPath ?? "(none: embedded defaults)", "x-agate-config-overlay": overlayPath(deps.dataDir) });
      }
      if (method !== "PUT" && method !== "PATCH") return notAllowed(method, path, "GET, PUT");
      const partial = await readJson(req);
      note({ change: maskSecrets(partial) });
      if (!partial || typeof partial !== "object" || Array.isArray(partial))
        return apiError(400, "expected a JSON object in the config's shape, e.g. {\"proxy\":{\"port\":1081}}", "body");
      keepSecrets(partial as Record<string, any>, redactConfig(deps.config), deps.config);
      if (url.searchParams.has("dry_run")) {
        // The wizard's "Next": the same validation as a save, nothing applied or written.
        const next = mergeConfig(deps.config, partial);
        checkApiChange(deps.config, next);
        checkPatchVolume(next);
        return json(200, { ok: true, dry_run: true, warnings: allowedDomainWarnings(next.cache.allowed_domains, next.platform.domains) });
      }
      const up: { test: UpstreamTest | null } = { test: null }; // a new upstream proxy is tried first (upstream-check.ts)
      const r = await commitConfig(deps, ctx, (cur) => mergeConfig(cur, partial), upstreamGate(url.searchParams.get("force") === "1", up));
      log("info", "config changed through the admin API", { file: r.file, keys: Object.keys(partial as object) });
      const warnings = allowedDomainWarnings(deps.config.cache.allowed_domains, deps.config.platform.domains);
      return json(200, { ok: true, file: r.file, restart_required: r.restart_required, warnings, ...(up.test ? { upstream_test: up.test } : {}), config: redactConfig(deps.config) });
    }

    if (path === "/api/maintenance") return handleMaintenance(req, deps, json, readJson, note);
    if (path === "/api/reload") {
      if (method !== "POST") return notAllowed(method, path, "POST");
      const r = await deps.reloadFromFile();
      return r.ok ? json(200, { ok: true }) : apiError(400, r.error, "config_file");
    }
    const crash = /^\/api\/workers\/(\d+)\/crash$/.exec(path);
    if (crash) {
      if (method !== "POST") return notAllowed(method, path, "POST");
      return deps.crashWorker(Number(crash[1])) ? json(202, { ok: true }) : apiError(404, `no worker ${crash[1]}`, "index");
    }

    if (path === "/api/ca/next") {
      // CA rollover (admin/ca-next.ts): publish the next CA before it is assigned; agents fetch /ca-bundle.pem
      if (method === "GET") return json(200, { next: nextCaView(deps, ctx) });
      if (method === "POST") {
        const body = await readJson(req);
        note({ change: body });
        const r = await publishNextCa(deps, ctx, body);
        if (isRefusal(r)) return fromRefusal(r);
        note({ id: r.next.id, common_name: r.next.common_name, generated: r.generated });
        log("info", "next CA published", { id: r.next.id, common_name: r.next.common_name, generated: r.generated });
        return json(r.generated ? 201 : 200, r);
      }
      if (method === "DELETE") {
        const r = await clearNextCa(deps, ctx);
        if (isRefusal(r)) return fromRefusal(r);
        note(r);
        if (r.cleared) log("info", "next CA unpublished", { id: r.cleared });
        return json(200, { ok: true, ...r });
      }
      return notAllowed(method, path, "GET, POST, DELETE");
    }
    if (path === "/api/certificates") {
      if (method === "GET") return json(200, { certificates: listCertificates(deps, ctx) });
      if (method !== "POST") return notAllowed(method, path, "GET, POST");
      const type = req.headers.get("content-type") ?? "";
      if (!/^multipart\/form-data/i.test(type))
        return apiError(415, "upload the files as multipart/form-data (fields common_name, description; files root, intermediate, key)", "body");
      const bytes = await readBodyLimited(req, MAX_UPLOAD_BODY);
      let form: FormData;
      try {
        form = (await new Response(bytes, { headers: { "content-type": type } }).formData()) as unknown as FormData;
      } catch (e) {
        return apiError(400, `the multipart body could not be read: ${(e as Error).message}`, "body");
      }
      const r = await uploadCertificate(deps, ctx, form);
      if (isRefusal(r)) {
        note({ refused: r.error });
        return fromRefusal(r);
      }
      note({ id: r.id, common_name: r.common_name, subject: r.subject, not_after: r.not_after });
      log("info", "certificate uploaded", { id: r.id, common_name: r.common_name });
      return json(201, r);
    }
    const assign = /^\/api\/certificates\/([A-Za-z0-9_-]{1,64})\/assign$/.exec(path);
    if (assign) {
      if (method !== "POST") return notAllowed(method, path, "POST");
      const id = assign[1]!;
      note({ id });
      const r = await assignCertificate(deps, ctx, id);
      if (isRefusal(r)) return fromRefusal(r);
      log("info", "certificate assigned", { id, common_name: r.assigned.common_name });
      return json(200, r);
    }
    const one = /^\/api\/certificates\/([A-Za-z0-9_-]{1,64})$/.exec(path);
    if (one) {
      const id = one[1]!;
      if (method === "GET") {
        const v = listCertificates(deps, ctx).find((c) => c.id === id);
        return v ? json(200, v) : apiError(404, `no certificate ${id}`, "id");
      }
      if (method === "PATCH" || method === "PUT") {
        const body = await readJson(req);
        note({ id, change: body });
        const r = editCertificate(deps, ctx, id, body);
        return isRefusal(r) ? fromRefusal(r) : json(200, r);
      }
      if (method === "DELETE") {
        note({ id });
        const r = deleteCertificate(deps, ctx, id);
        return isRefusal(r) ? fromRefusal(r) : json(200, { ok: true, deleted: id });
      }
      return notAllowed(method, path, "GET, PATCH, DELETE");
    }

    if (path === "/api/logs") {
      if (method !== "GET") return notAllowed(method, path, "GET");
      const sp = url.searchParams;
      const limit = intParam(sp.get("limit"), 100, 1, 1000, "limit");
      const offset = intParam(sp.get("offset"), 0, 0, 1_000_000, "offset");
      if (typeof limit === "string") return apiError(400, limit, "limit");
      if (typeof offset === "string") return apiError(400, offset, "offset");
      const q = sp.get("q");
      const id = sp.get("id");
      return json(200, searchLogs(deps, ctx, { q: q || null, id: id || null, limit, offset }));
    }

    if (path === "/api/audit") {
      if (method !== "GET") return notAllowed(method, path, "GET");
      const limit = intParam(url.searchParams.get("limit"), 100, 1, 1000, "limit");
      if (typeof limit === "string") return apiError(400, limit, "limit");
      const items: unknown[] = [];
      for (const line of readLogLinesNewestFirst(ctx.audit.path)) {
        try {
          items.push(JSON.parse(line));
        } catch {
          continue;
        }
        if (items.length >= limit) break;
      }
      return json(200, { items });
    }

    if (path === "/api/diagnostics") {
      if (method !== "POST") return notAllowed(method, path, "POST");
      const c = deps.config;
      const targets = diagTargetsOf(await readJson(req), url.searchParams);
      if (typeof targets === "string") return apiError(400, targets, "target");
      const connectivity = await testConnectivity(c, targets);
      const resources = readResources(deps.health().workers.total);
      const password = makeOneTimePassword();
      const id = randomBytes(9).toString("base64url");
      const created = new Date();
      const logs = deps.recentLogs().slice(-2000);
      const bytes = await sealArchive(
        {
          format: "agate-diagnostics/1",
          created: created.toISOString(),
          status: statusBody(deps, ctx),
          config: redactConfig(c),
          stats: statsBody(deps, ctx, "24h"),
          connectivity,
          resources,
          certificates: listCertificates(deps, ctx),
          logs,
        },
        password,
      );
      const name = archiveName(id);
      ctx.archives.set(id, { bytes, expires: Date.now() + ARCHIVE_TTL_MS, name });
      note({ archive: id, bytes: bytes.byteLength, failed: connectivity.results.filter((r) => !r.ok).map((r) => `${r.host}:${r.port}:${r.ok ? "" : r.hop}`) });
      return json(200, { connectivity, resources, archive: archiveAnswer(id, name, bytes.byteLength, password, Date.now() + ARCHIVE_TTL_MS) });
    }
    const arch = /^\/api\/diagnostics\/([A-Za-z0-9_-]{1,32})\/archive$/.exec(path);
    if (arch) {
      if (method !== "GET") return notAllowed(method, path, "GET");
      const a = ctx.archives.get(arch[1]!);
      if (!a || a.expires < Date.now()) return apiError(404, "no such archive: it was downloaded already, or it expired", "id");
      ctx.archives.delete(arch[1]!); // once
      return new Response(a.bytes, {
        headers: { "content-type": "application/octet-stream", "content-disposition": `attachment; filename="${a.name}"`, "cache-control": "no-store" },
      });
    }

    if (path === "/api/reset") {
      if (method === "GET") return json(200, resetPlan(deps)); // what a reset would do, for the confirmation
      if (method !== "POST") return notAllowed(method, path, "GET, POST");
      const body = (await readJson(req)) as Record<string, unknown> | null;
      if (!body || typeof body !== "object" || body.confirm !== "RESET")
        return apiError(400, `reset: ${resetPlan(deps).will.join("; ")}. Confirm with {"confirm": "RESET"}`, "confirm", { plan: resetPlan(deps) });
      const { removed, token } = await runReset(deps, ctx);
      note({ removed });
      log("warn", "reset through the admin API: back to the config file's values or the defaults", { removed: removed.length, config_file: deps.configPath });
      return json(200, { ok: true, removed, kept: resetPlan(deps).keeps, config_file: deps.configPath, ...(token ? { token } : {}), config: redactConfig(deps.config) });
    }

    return apiError(404, `no such endpoint: ${method} ${path}`, "path");
  } catch (e) {
    if (e instanceof BodyTooLarge) return apiError(413, `the request body is larger than ${e.limit} bytes`, "body");
    if (e instanceof ConfigError) return apiError(400, e.message, e.key);
    if (e instanceof UpstreamUnusable) return apiError(422, e.message, "upstream_proxy", { upstream_test: e.test });
    // A ProxyError that reaches the API (a CA that cannot be made or read, a store that is closed…) keeps its code,
    // and its status is statusFor's, as everywhere else; the API's own refusals (401, 404, 405, 413 …) are above.
    if (e instanceof ProxyError) {
      log(e.side === "client" ? "warn" : "error", "admin API request failed", { path, code: e.code, error: e.message });
      return apiError(statusFor(e), e.message, undefined, { code: e.code });
    }
    throw e;
  }
}

function notAllowed(method: string, path: string, allow: string) {
  return apiError(405, `${method} is not allowed on ${path}; use ${allow}`, "method", {}, { allow });
}

function intParam(v: string | null, d: number, min: number, max: number, name: string): number | string {
  if (v === null || v === "") return d;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) return `${name}: expected an integer ${min}–${max}, got ${JSON.stringify(v)}`;
  return n;
}
