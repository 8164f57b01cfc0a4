/**
 * @module The management API's cache operations (issue 9; names kept stable for outside tests, docs/ADMIN.md):
 *   GET  /api/cache                 usage: entries, bytes, capacity, evictions, largest / most served, hit ratio by host
 *   POST /api/cache/purge           {"url"} | {"host"} | {"prefix"} | {"all": true} → 200 {objects, bytes}
 *   POST /api/cache/prefill         {"urls": [...]} → 202 {id, job}
 *   GET  /api/cache/prefill         the jobs and their progress (done / failed / bytes), newest first
 *   GET  /api/cache/prefill/ID      one job (the CLI's progress bar polls it)
 * The bodies are checked by core/cache-ops.ts; the work is the supervisor's (AdminDeps). Refusals are 4xx JSON
 * `{error, field}` like the rest of the API.
 */
import { parsePrefillBody, parsePurgeBody } from "../core/cache-ops";
import type { AdminDeps } from "./deps";
import { MAX_JSON_BODY, readBodyLimited } from "./guard";

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body, null, 2) + "\n", { status, headers: { "content-type": "application/json", "cache-control": "no-store", ...headers } });
const refuse = (status: number, error: string, field?: string, headers: Record<string, string> = {}) => json(status, field ? { error, field } : { error }, headers);
const notAllowed = (method: string, path: string, allow: string) => refuse(405, `${method} is not allowed on ${path}; use ${allow}`, "method", { allow });

async function readJson(req: Request): Promise<{ ok: true; body: unknown } | { ok: false; res: Response }> {
  const text = new TextDecoder().decode(await readBodyLimited(req, MAX_JSON_BODY)).trim();
  try {
    return { ok: true, body: text === "" ? null : JSON.parse(text) };
  } catch (e) {
    return { ok: false, res: refuse(400, `not valid JSON: ${(e as Error).message}`, "body") };
  }
}

/** True for the paths this module answers. */
export const isCachePath = (path: string) => path === "/api/cache" || path.startsWith("/api/cache/");

/** Answer a request under /api/cache. `note` records the audit detail of a change. */
export async function handleCacheApi(req: Request, path: string, deps: AdminDeps, note: (d: Record<string, unknown>) => void): Promise<Response> {
  const method = req.method;
  if (path === "/api/cache") return method === "GET" ? json(200, deps.cacheUsage()) : notAllowed(method, path, "GET");

  if (path === "/api/cache/purge") {
    if (method !== "POST") return notAllowed(method, path, "POST");
    const b = await readJson(req);
    if (!b.ok) return b.res;
    const sel = parsePurgeBody(b.body);
    if (!sel.ok) return refuse(400, sel.error, sel.field);
    const removed = deps.purgeCache(sel.value);
    note({ selector: sel.value, ...removed });
    return json(200, { ok: true, selector: sel.value, ...removed });
  }

  if (path === "/api/cache/prefill") {
    if (method === "GET") return json(200, { jobs: deps.prefillJobs() });
    if (method !== "POST") return notAllowed(method, path, "GET, POST");
    const b = await readJson(req);
    if (!b.ok) return b.res;
    const urls = parsePrefillBody(b.body);
    if (!urls.ok) return refuse(400, urls.error, urls.field);
    const r = deps.startPrefill(urls.value);
    if (!r.ok) return refuse(r.status, r.error, "cache");
    note({ job: r.job.id, urls: urls.value.length });
    return json(202, { ok: true, id: r.job.id, job: r.job }, { location: `/api/cache/prefill/${r.job.id}` });
  }

  const one = /^\/api\/cache\/prefill\/([A-Za-z0-9_-]{1,32})$/.exec(path);
  if (one) {
    if (method !== "GET") return notAllowed(method, path, "GET");
    const job = deps.prefillJobs().find((j) => j.id === one[1]);
    return job ? json(200, job) : refuse(404, `no prefill job ${one[1]} (jobs are kept in memory until a restart)`, "id");
  }
  return refuse(404, `no such endpoint: ${method} ${path}`, "path");
}

type Metric = (name: string, type: "gauge" | "counter", help: string, samples: [Record<string, string> | null, number][]) => void;

/** The store's usage in /metrics (issue 9), written with the API's own `metric` helper. */
export function metricsCacheStore(u: ReturnType<AdminDeps["cacheUsage"]>, metric: Metric): void {
  metric("agate_cache_store_entries", "gauge", "Objects in the cache store (variants and patch slices count one each).", [[null, u.entries]]);
  metric("agate_cache_store_bytes", "gauge", "Blob bytes in the cache store.", [[null, u.bytes]]);
  metric("agate_cache_store_capacity_bytes", "gauge", "The cache store's size budget.", [[null, u.capacity]]);
  metric("agate_cache_evictions_total", "counter", "Objects evicted by LRU since the store was created.", [[null, u.evictions.objects]]);
  metric("agate_cache_evicted_bytes_total", "counter", "Bytes evicted by LRU since the store was created.", [[null, u.evictions.bytes]]);
  metric(
    "agate_cache_host_requests_total",
    "counter",
    "Cache-port requests since start, by host and result (hit: from the store; miss: filled; bypass: passed through).",
    u.by_host.flatMap((h) => [
      [{ host: h.host, result: "hit" }, h.hits],
      [{ host: h.host, result: "miss" }, h.misses],
      [{ host: h.host, result: "bypass" }, h.bypass],
    ] as [Record<string, string>, number][]),
  );
}
