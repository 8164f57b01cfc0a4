/**
 * @module Setting or changing the upstream proxy tests it before it is applied: a probe through it to the pod's
 * platform hosts (workers/probe.ts: DNS → TCP → CONNECT with its authentication → TLS verified against the system
 * roots plus `tls.upstream_ca`, the same exchange agents' tunnels use). The answer says whether it works; an upstream
 * that does not work is refused (every agent would get 502) unless the admin insists with `?force=1`.
 */
import type { Config } from "../core/config";
import { podHosts } from "../core/platform-hosts";
import { probeHost, type ProbeResult } from "../workers/probe";

/** Each platform host's probe has this long; they run side by side. */
const TEST_TIMEOUT_MS = 5000;

export type UpstreamTest =
  | { ok: true; via: string; host: string; port: number; ms: number }
  | { ok: false; via: string; host: string; port: number; hop: string; reason: string; status?: number; tried: number };

/** The upstream proxy does not carry traffic to the platform: refused unless forced (answered 422 with the test). */
export class UpstreamUnusable extends Error {
  constructor(readonly test: UpstreamTest & { ok: false }) {
    super(
      `upstream_proxy: ${test.via} does not reach ${test.host}:${test.port} (${test.hop}${test.status ? ` ${test.status}` : ""}: ${test.reason}); ` +
        "nothing was changed; save it anyway with ?force=1",
    );
  }
}

const changed = (a: Config, b: Config) =>
  JSON.stringify(a.upstream_proxy) !== JSON.stringify(b.upstream_proxy) || (b.upstream_proxy !== null && a.tls.upstream_ca !== b.tls.upstream_ca);

/** null when the change leaves the upstream proxy alone (or removes it); otherwise the probe's verdict. */
export async function testUpstream(prev: Config, next: Config): Promise<UpstreamTest | null> {
  const up = next.upstream_proxy;
  if (!up || !changed(prev, next)) return null;
  const via = `${up.host}:${up.port}`;
  const hosts = podHosts(next);
  if (!hosts.length) return null; // nothing to try it against
  // The first host that answers settles it (the others may be slow to fail); all failing, the first host's reason.
  const results: ProbeResult[] = [];
  const good = await new Promise<ProbeResult | null>((done) => {
    let left = hosts.length;
    for (const h of hosts)
      void probeHost(next, h.host, h.port, { timeoutMs: TEST_TIMEOUT_MS }).then((r) => {
        results.push(r);
        if (r.ok) done(r);
        else if (--left === 0) done(null);
      });
  });
  if (good) return { ok: true, via, host: good.host, port: good.port, ms: good.ms };
  const bad = results.find((r) => r.host === hosts[0]!.host) ?? results[0]!;
  if (bad.ok) throw new Error("unreachable: every probe failed");
  return { ok: false, via, host: bad.host, port: bad.port, hop: bad.hop, reason: bad.reason, ...(bad.status ? { status: bad.status } : {}), tried: results.length };
}

/** The gate for commitConfig: records the test in `out`, and refuses a failing upstream unless `force`. */
export function upstreamGate(force: boolean, out: { test: UpstreamTest | null }) {
  return async (prev: Config, next: Config) => {
    out.test = await testUpstream(prev, next);
    if (out.test && !out.test.ok && !force) throw new UpstreamUnusable(out.test);
  };
}
