/**
 * /metrics follows Prometheus' naming conventions and uses the names of /api/stats (issue 10: "one name per series
 * across /api/stats, the dashboard and /metrics"). Parsed from a running gateway after real traffic (curl through
 * the proxy port, one cache-port request): each family's HELP and TYPE once and before its samples; counters end in
 * `_total`; a unit is the name's last word (`_bytes`, `_seconds`, before `_total` on counters), so
 * `agate_bandwidth_saved_bytes_30d` had to go; no label value "total" (it double-counts when a family is summed);
 * a duration histogram per agent port; the agent counts carry the /api/stats keys. The conventions:
 * https://prometheus.io/docs/practices/naming/ and the text format https://prometheus.io/docs/instrumenting/exposition_formats/.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway } from "../peers/gateway";
import { freePort, waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
let origin: Origin;
beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

type Family = { name: string; type: string; help: number; typeLines: number; samples: { name: string; labels: Record<string, string>; value: number }[] };

/** The text format, strictly: a sample must belong to a family declared above it. */
function parseMetrics(text: string): Map<string, Family> {
  const fams = new Map<string, Family>();
  const fam = (n: string) => fams.get(n) ?? (fams.set(n, { name: n, type: "untyped", help: 0, typeLines: 0, samples: [] }), fams.get(n)!);
  for (const line of text.split("\n")) {
    if (!line) continue;
    let m = /^# HELP (\w+) (.+)$/.exec(line);
    if (m) { fam(m[1]!).help++; continue; }
    m = /^# TYPE (\w+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (m) { const f = fam(m[1]!); f.typeLines++; f.type = m[2]!; continue; }
    m = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a metrics line: ${line}`);
    const [, name, rawLabels = "", v] = m;
    const labels: Record<string, string> = {};
    for (const [, k, x] of rawLabels.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = x!;
    const base = fams.has(name!) ? name! : name!.replace(/_(bucket|sum|count)$/, "");
    const f = fams.get(base);
    if (!f) throw new Error(`sample ${name} before its # TYPE`);
    if (base !== name && f.type !== "histogram") throw new Error(`${name}: _bucket/_sum/_count on a ${f.type}`);
    f.samples.push({ name: name!, labels, value: Number(v) });
  }
  return fams;
}

test("/metrics: HELP and TYPE once per family, counters end in _total, units last, no label value 'total', a duration histogram per port, the /api/stats names", async () => {
  await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts: { [HOST]: "127.0.0.1" }, cache: { enabled: true, port: freePort(), allowed_domains: ["qualys.com"] }, tls: { upstream_ca: pki.caPath } });
  const r = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/m")]);
  expect(r.stdout).toBe("hello from origin /m\n");
  await waitFor(async () => (await (await gw.admin("/api/stats")).json()).totals.totalTunnels >= 1, { what: "the tunnel counted" });
  const text = await (await gw.admin("/metrics")).text();
  const fams = parseMetrics(text);
  expect(fams.size).toBeGreaterThan(20);

  const bad: string[] = [];
  for (const f of fams.values()) {
    if (f.help !== 1 || f.typeLines !== 1) bad.push(`${f.name}: HELP ×${f.help}, TYPE ×${f.typeLines}`);
    if (!f.name.startsWith("agate_")) bad.push(`${f.name}: not in the agate_ namespace`);
    if (f.type === "counter" && !f.name.endsWith("_total")) bad.push(`${f.name}: a counter without _total`);
    if (f.type !== "counter" && f.name.endsWith("_total")) bad.push(`${f.name}: _total on a ${f.type}`);
    const bare = f.name.replace(/_total$/, "");
    for (const unit of ["bytes", "seconds"]) if (bare.includes(`_${unit}_`) && !bare.endsWith(`_${unit}`)) bad.push(`${f.name}: the unit _${unit} is not the last word`);
    if (/_(ms|milliseconds|kb|mb|bits)(_|$)/.test(bare)) bad.push(`${f.name}: not a base unit`);
    for (const s of f.samples) for (const [k, v] of Object.entries(s.labels)) if (v === "total" && k !== "le") bad.push(`${s.name}{${k}="total"}: double-counts when summed`);
  }
  expect(bad).toEqual([]);

  // a duration histogram for each agent port, with +Inf equal to _count
  const conn = fams.get("agate_connection_duration_seconds")!;
  expect(conn.type).toBe("histogram");
  for (const port of ["proxy", "cache"]) {
    const inf = conn.samples.find((s) => s.name.endsWith("_bucket") && s.labels.port === port && s.labels.le === "+Inf");
    const count = conn.samples.find((s) => s.name.endsWith("_count") && s.labels.port === port);
    expect(inf?.value).toBe(count?.value);
  }
  expect(conn.samples.find((s) => s.name.endsWith("_count") && s.labels.port === "proxy")!.value).toBeGreaterThanOrEqual(1);
  expect(fams.get("agate_request_duration_seconds")?.type).toBe("histogram");

  // one name per series: the /api/stats keys, the same values
  const s = await (await gw.admin("/api/stats")).json();
  for (const k of ["unique_ips_60m", "active_agents_60m", "active_agents_24h", "total_agents_7d"]) {
    expect(typeof s[k]).toBe("number");
    expect(fams.get(`agate_${k}`)?.samples[0]?.value).toBe(s[k]);
  }
  expect(fams.get("agate_tunnels_total")!.samples[0]!.value).toBe(s.totals.totalTunnels);
  expect(fams.get("agate_bandwidth_savings_30d_saved_bytes")!.samples[0]!.value).toBe(s.bandwidth_savings_30d.saved_bytes);
}, 60_000);
