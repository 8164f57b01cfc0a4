/**
 * @module Micro-benchmark of the policy hot path: decide() per CONNECT (plus decideAddress / decideClient).
 * Bounded: each case runs a fixed number of iterations (stopping early past a time cap), after a warm-up.
 * Prints one JSON object: { bench, cases: [{ name, iterations, ops_per_s, ns_per_op }] }.
 * Run: `bun bench/micro/policy.bench.ts [iterations]`.
 * TODO: move onto bench/harness.ts once it exists (STYLE: one hot function per file via the harness).
 */
import { parseConfig } from "../../src/core/config";
import { compilePolicy, decide, decideAddress, decideClient } from "../../src/core/policy";
import type { ClientInfo, Target } from "../../src/core/types";

const ITERATIONS = Math.max(1000, Math.min(Number(process.argv[2] ?? 1_000_000) || 1_000_000, 20_000_000));
const WARMUP = Math.min(50_000, ITERATIONS);
const CAP_MS = 3000;

const allowed = ["microsoft.com", "windowsupdate.com", "adobe.com", "google.com", "mozilla.org", "oracle.com", "zoom.us", "java.com", "apple.com", "dell.com"];
const proxyOnly = compilePolicy(parseConfig({ cache: { allowed_domains: allowed } }));
const patch = compilePolicy(
  parseConfig({
    cache: { enabled: true, allowed_domains: allowed },
    patch: { enabled: true, volume: "/mnt/patch", client_networks: ["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "fd00::/8"], agent_user_agents: ["QualysAgent"] },
    hosts: { "origin.qualys.com": "10.0.0.9" },
  }),
);

const PROXY: ClientInfo = { ip: "10.1.2.3", port: "proxy" };
const AGENT: ClientInfo = { ip: "10.1.2.3", port: "cache", userAgent: "QualysAgent/6.1 (Linux)" };
const t = (host: string, port = 443, isIp = false): Target => ({ host, port, isIp });

// Several hosts per case, so the JIT sees the variety a real worker does.
const cases: { name: string; run: (i: number) => unknown }[] = [
  { name: "decide proxy platform pod host", hosts: ["qagpublic.qg1.apps.qualys.com", "camsrepo.qg2.apps.qualys.eu", "cask.qg1.apps.qualys.co.uk"] },
  { name: "decide proxy allowed subdomain", hosts: ["www.microsoft.com", "download.windowsupdate.com", "ardownload2.adobe.com"] },
  { name: "decide proxy deny domain", hosts: ["evilqualys.com", "qualys.com.evil.net", "example.org"] },
  { name: "decide proxy upper-case + trailing dot", hosts: ["QAGPUBLIC.QG1.APPS.QUALYS.COM.", "Www.Microsoft.Com."] },
  { name: "decide patch any host (client checked)", hosts: ["dl.google.com", "download.mozilla.org", "swcdn.apple.com"], client: AGENT, policy: patch },
  { name: "decide patch mapped host", hosts: ["origin.qualys.com"], client: AGENT, policy: patch },
].map(({ name, hosts, client = PROXY, policy = proxyOnly }) => {
  const targets = hosts.map((h) => t(h));
  return { name, run: (i: number) => decide(policy, targets[i % targets.length]!, client) };
});
const portTarget = t("qualys.com", 8443);
const ipTarget = t("10.0.0.1", 443, true);
const addrTarget = t("dl.google.com");
const addrs = ["142.250.185.78", "2a00:1450:4001:80b::200e", "10.1.2.3", "::ffff:127.0.0.1"];
cases.push(
  { name: "decide deny port", run: () => decide(proxyOnly, portTarget, PROXY) },
  { name: "decide deny ip literal", run: () => decide(proxyOnly, ipTarget, PROXY) },
  { name: "decideAddress v4/v6 mix", run: (i) => decideAddress(patch, addrTarget, addrs[i & 3]!) },
  { name: "decideClient patch v4 agent", run: () => decideClient(patch, AGENT) },
);

let sink = 0;
const results = cases.map(({ name, run }) => {
  for (let i = 0; i < WARMUP; i++) sink += run(i) === null ? 0 : 1;
  const start = performance.now();
  let n = 0;
  // Check the clock every 4096 iterations only, so timing does not dominate the loop.
  while (n < ITERATIONS) {
    const end = Math.min(n + 4096, ITERATIONS);
    for (; n < end; n++) sink += run(n) === null ? 0 : 1;
    if (performance.now() - start > CAP_MS) break;
  }
  const ms = performance.now() - start;
  return { name, iterations: n, ops_per_s: Math.round((n / ms) * 1000), ns_per_op: Number(((ms * 1e6) / n).toFixed(1)) };
});

console.log(JSON.stringify({ bench: "policy", iterations: ITERATIONS, sink: sink > 0, cases: results }, null, 2));
