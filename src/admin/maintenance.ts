/**
 * @module `POST /api/maintenance {"on": true|false}` (issue 10) and the health lines of `/metrics`: the platform
 * link per host and overall, maintenance, and what each agent port's /healthz answers. api.ts routes here.
 */
import type { AdminDeps, HealthReport } from "./deps";

type Json = (status: number, body: unknown) => Response;

/** `{"on": true|false}` → the new state; anything else is a 400 naming the field. */
export async function handleMaintenance(req: Request, deps: AdminDeps, json: Json, readJson: (r: Request) => Promise<unknown>, note: (d: Record<string, unknown>) => void): Promise<Response> {
  if (req.method === "GET") return json(200, deps.health().maintenance);
  if (req.method !== "POST") return json(405, { error: "use GET or POST {\"on\": true|false}", field: "method" });
  const body = (await readJson(req)) as { on?: unknown } | null;
  if (!body || typeof body !== "object" || typeof body.on !== "boolean")
    return json(400, { error: 'expected {"on": true} or {"on": false}', field: "on" });
  note({ on: body.on });
  const m = deps.setMaintenance(body.on);
  return json(200, { ok: true, ...m, effect: m.on ? "health answers 503 on every port; new connections get 503 + Retry-After; established tunnels and downloads continue" : "serving again" });
}

type Metric = (name: string, type: "gauge" | "counter", help: string, samples: [Record<string, string> | null, number][]) => void;

export function healthMetrics(h: HealthReport, metric: Metric): void {
  const p = h.platform;
  if (!p) return; // a test's stand-in deps
  metric("agate_platform_connected", "gauge", "1 while the platform link is Connected (last probe or real traffic reached a platform host).", [[{ pod: p.pod }, p.status === "Connected" ? 1 : 0]]);
  metric("agate_platform_host_connected", "gauge", "Per platform host: 1 when its last probe or tunnel succeeded.", p.hosts.map((x) => [{ host: x.host }, x.status === "Connected" ? 1 : 0]));
  metric("agate_platform_host_latency_seconds", "gauge", "Per platform host: the last probe's time to a verified TLS handshake.", p.hosts.filter((x) => x.latency_ms !== null).map((x) => [{ host: x.host }, x.latency_ms! / 1000]));
  if (p.connected_on) metric("agate_platform_connected_on_timestamp_seconds", "gauge", "When a platform host was last reached.", [[null, Math.floor(Date.parse(p.connected_on) / 1000)]]);
  metric("agate_platform_probes_total", "counter", "Probe rounds over the pod's hosts since start.", [[null, p.rounds]]);
  metric("agate_maintenance", "gauge", "1 while in maintenance mode.", [[null, h.maintenance.on ? 1 : 0]]);
  metric("agate_port_serving", "gauge", "Per agent port: 1 when its GET /healthz answers 200.", (Object.entries(h.agent_ports) as [string, { ok: boolean }][]).map(([port, v]) => [{ port }, v.ok ? 1 : 0]));
}
