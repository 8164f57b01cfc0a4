/**
 * @module The management API: (req, deps) → Response. `GET /healthz`, `/ca.pem` and `/ca.der` are open;
 * everything else needs the bearer token (constant-time compare). Refusals are JSON `{ error, field? }`.
 */
import { timingSafeEqual } from "node:crypto";
import type { Supervisor } from "../supervisor/supervisor";
import { VERSION } from "../supervisor/supervisor";

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store", ...headers },
  });

export const apiError = (status: number, error: string, field?: string) => json(status, field ? { error, field } : { error });

function tokenOk(req: Request, token: string): boolean {
  const h = req.headers.get("authorization") ?? "";
  const m = /^Bearer\s+(.+)$/i.exec(h);
  if (!m) return false;
  const a = Buffer.from(m[1]!.trim());
  const b = Buffer.from(token);
  // Compare equal-length buffers only; a length mismatch still costs one compare.
  return a.length === b.length ? timingSafeEqual(a, b) : (timingSafeEqual(b, b), false);
}

export async function handleApi(req: Request, sup: Supervisor): Promise<Response> {
  const url = new URL(req.url);
  const path = url.pathname;
  const method = req.method;

  if (path === "/healthz" && (method === "GET" || method === "HEAD")) {
    const h = sup.health();
    const ok = h.status === "ok" || h.status === "degraded";
    return json(ok ? 200 : 503, h);
  }

  if ((path === "/ca.pem" || path === "/ca.der") && (method === "GET" || method === "HEAD")) {
    const ca = sup.ca;
    if (!ca) return apiError(404, "no CA: cache mode has not been configured");
    if (path === "/ca.pem")
      return new Response(ca.rootPem, { headers: { "content-type": "application/x-pem-file", "content-disposition": 'attachment; filename="agate-ca.pem"' } });
    const b64 = ca.rootPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
    return new Response(Buffer.from(b64, "base64"), {
      headers: { "content-type": "application/x-x509-ca-cert", "content-disposition": 'attachment; filename="agate-ca.der"' },
    });
  }

  if (!tokenOk(req, sup.token)) return apiError(401, "missing or wrong bearer token (see `agate token`)");

  if (path === "/api/status" && method === "GET") {
    const c = sup.config;
    const h = sup.health();
    return json(200, {
      name: c.gateway.name,
      version: VERSION,
      uptime_s: h.uptime_s,
      health: h.health,
      reasons: h.reasons,
      ports: sup.ports,
      modes: { proxy: true, cache: c.cache.enabled, patch: c.patch.enabled },
      min_tls: c.cache.min_tls,
      workers: h.workers,
    });
  }
  if (path === "/api/stats" && method === "GET") return json(200, sup.stats());
  if (path === "/api/reload" && method === "POST") {
    const r = await sup.reloadFromFile();
    return r.ok ? json(200, { ok: true }) : apiError(400, r.error);
  }
  const crash = /^\/api\/workers\/(\d+)\/crash$/.exec(path);
  if (crash && method === "POST") {
    return sup.crashWorker(Number(crash[1])) ? json(202, { ok: true }) : apiError(404, `no worker ${crash[1]}`, "index");
  }
  return apiError(404, `no such endpoint: ${method} ${path}`);
}
