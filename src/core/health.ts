/**
 * @module Health that means "can serve agents" (issue 10): facts the supervisor gathers (workers, the platform
 * link, the upstream proxy, disks, the active CA, draining, maintenance) → Normal | Degraded | Down with every
 * reason, and per agent port what its `GET /healthz` answers (200 only when *that port* can serve now, else 503
 * with the reasons), what a new CONNECT to a platform host gets (fail fast), and HAProxy's agent-check reply.
 * Pure: `now` comes in with the facts; no clock, no disk (STYLE §1, §2).
 */

export type HealthState = "Normal" | "Degraded" | "Down";
export type AgentPort = "proxy" | "cache";

/** Every reason health can give: a stable value for logs, /metrics and tests; `text` is for a person (STYLE §9). */
export type HealthCode =
  | "maintenance"
  | "draining"
  | "no-worker"
  | "workers-restarting"
  | "platform-down"
  | "platform-unreachable-once"
  | "platform-tls"
  | "upstream-proxy"
  | "data-disk-low"
  | "data-disk-unwritable"
  | "patch-volume-low"
  | "patch-volume-unwritable"
  | "patch-refused"
  | "cache-disk-full"
  | "ca-expired"
  | "ca-expiring"
  | "ca-missing";

export type HealthProblem = {
  code: HealthCode;
  severity: "down" | "degraded";
  /** the agent ports this problem stops (severity down) or weakens */
  ports: AgentPort[];
  text: string;
};

/** One probe round over the pod's hosts, as the platform link records it (supervisor/platform-link.ts). */
export type ProbeRound = {
  at: number;
  /** hosts that passed every hop (TLS verified) */
  reachable: number;
  /** hosts reached at all: passed, or failed only at TLS (the tunnel works; agents check TLS with their own roots) */
  reached?: number;
  total: number;
  /** the last failure of the round, with its hop (dns, tcp, upstream-proxy, tls) */
  error: { host: string; hop: string; reason: string } | null;
};

export type DiskFact = { path: string; free: number; size: number; writable: boolean; error?: string };

export type HealthFacts = {
  now: number;
  workers: { alive: number; total: number };
  draining: boolean;
  maintenance: { on: boolean; since: number | null };
  cacheEnabled: boolean;
  /** the last probe rounds, oldest first (two are enough); `trafficAt`: a tunnel or fill to a platform host succeeded */
  platform: { rounds: ProbeRound[]; trafficAt: number | null };
  upstreamProxy: string | null;
  dataDisk: DiskFact | null;
  patchVolume: DiskFact | null;
  patchRefused: string | null;
  /** a worker's cache store cannot take new objects (WorkerRuntime.cacheNoSpace) */
  cacheNoSpace: { workers: number; needed: number } | null;
  ca: { kind: string; notAfter: number } | null;
};

/** Below this much free space a disk the gateway writes to is a problem (logs, stats, the store). */
export const MIN_FREE_BYTES = 512 * 1024 * 1024;
export const MIN_FREE_RATIO = 0.02;
/** A CA that expires within this many days makes health Degraded: time to replace it before agents break. */
export const CA_WARN_DAYS = 30;
const DAY = 86_400_000;

export type PortVerdict = { ok: boolean; status: 200 | 503; reasons: string[] };

export type HealthDecision = {
  health: HealthState;
  problems: HealthProblem[];
  ports: Record<AgentPort, PortVerdict>;
  /** new CONNECTs to platform hosts are refused at once (the link is Down), or every new connection (maintenance) */
  failFast: { scope: "platform" | "all"; code: "PX_MAINTENANCE" | "PX_PLATFORM_DOWN"; reason: string } | null;
};

const ALL: AgentPort[] = ["proxy", "cache"];

function diskProblems(name: "data disk" | "patch volume", d: DiskFact, low: HealthCode, unwritable: HealthCode): HealthProblem[] {
  const out: HealthProblem[] = [];
  if (!d.writable)
    out.push({ code: unwritable, severity: "degraded", ports: name === "patch volume" ? ["cache"] : ALL, text: `the ${name} ${d.path} is not writable${d.error ? `: ${d.error}` : ""}` });
  const min = Math.max(MIN_FREE_BYTES, d.size * MIN_FREE_RATIO);
  if (d.size > 0 && d.free < min)
    out.push({ code: low, severity: "degraded", ports: name === "patch volume" ? ["cache"] : ALL, text: `the ${name} ${d.path} has ${mib(d.free)} free of ${mib(d.size)} (below ${mib(min)})` });
  return out;
}

const mib = (n: number) => `${Math.floor(n / (1024 * 1024))} MiB`;
const iso = (t: number) => new Date(t).toISOString();

/**
 * The platform link's part: Down when no platform host was reachable in the last two probes and no real traffic
 * reached one since the older of them; one failed round is Degraded (a blip must not take a gateway out).
 * "Reachable" for Down means the tunnel works (DNS, TCP, the upstream proxy's CONNECT): a host whose TLS does not
 * verify against our roots is Degraded, not Down — in proxy mode agents verify TLS themselves, with their roots
 * (e.g. a TLS-inspecting upstream whose CA the agents trust and the gateway was not given).
 */
function platformProblems(f: HealthFacts): HealthProblem[] {
  const r = f.platform.rounds;
  if (r.length === 0) return [];
  const last = r[r.length - 1]!;
  if (last.reachable > 0) return [];
  const reached = (x: ProbeRound) => x.reached ?? x.reachable;
  if (reached(last) > 0) {
    if (f.platform.trafficAt !== null && f.platform.trafficAt >= last.at) return [];
    const e = last.error;
    return [{ code: "platform-tls", severity: "degraded", ports: ALL, text: `the platform hosts answer, but TLS to them does not verify against the system roots and tls.upstream_ca${e ? ` (${e.host}: ${e.reason})` : ""}` }];
  }
  const why = last.error ? `${last.error.host}: ${last.error.hop}: ${last.error.reason}` : "no host answered";
  const prev = r.length >= 2 ? r[r.length - 2]! : null;
  const trafficSince = (t: number) => f.platform.trafficAt !== null && f.platform.trafficAt >= t;
  const out: HealthProblem[] = [];
  if (prev && reached(prev) === 0 && !trafficSince(prev.at)) {
    out.push({ code: "platform-down", severity: "down", ports: ALL, text: `no platform host reachable in the last two probes (${why})` });
  } else if (!trafficSince(last.at)) {
    out.push({ code: "platform-unreachable-once", severity: "degraded", ports: ALL, text: `no platform host reachable in the last probe (${why})` });
  }
  // With an upstream proxy every hop before TLS is the proxy's (its name, its port, its CONNECT answer).
  if (out.length && f.upstreamProxy && last.error && last.error.hop !== "tls")
    out.push({ code: "upstream-proxy", severity: out[0]!.severity, ports: ALL, text: `the upstream proxy ${f.upstreamProxy} does not work: ${last.error.reason}` });
  return out;
}

/** Every problem the facts show, most severe first as they are found; `health` is the worst severity. */
export function decideHealth(f: HealthFacts): HealthDecision {
  const p: HealthProblem[] = [];
  if (f.maintenance.on)
    p.push({ code: "maintenance", severity: "down", ports: ALL, text: `in maintenance${f.maintenance.since ? ` since ${iso(f.maintenance.since)}` : ""}: new connections are refused` });
  if (f.draining) p.push({ code: "draining", severity: "down", ports: ALL, text: "draining: shutting down" });
  if (f.workers.alive === 0) p.push({ code: "no-worker", severity: "down", ports: ALL, text: "no live worker" });
  else if (f.workers.alive < f.workers.total)
    p.push({ code: "workers-restarting", severity: "degraded", ports: ALL, text: `${f.workers.total - f.workers.alive} of ${f.workers.total} workers restarting` });
  p.push(...platformProblems(f));
  if (f.dataDisk) p.push(...diskProblems("data disk", f.dataDisk, "data-disk-low", "data-disk-unwritable"));
  if (f.patchVolume) p.push(...diskProblems("patch volume", f.patchVolume, "patch-volume-low", "patch-volume-unwritable"));
  if (f.patchRefused) p.push({ code: "patch-refused", severity: "degraded", ports: ["cache"], text: `patch mode refused: ${f.patchRefused}` });
  if (f.cacheNoSpace)
    p.push({ code: "cache-disk-full", severity: "degraded", ports: ["cache"], text: `the cache disk is full (${f.cacheNoSpace.workers} worker(s) need ${mib(f.cacheNoSpace.needed)} free): requests pass through uncached` });
  if (f.cacheEnabled && !f.ca) p.push({ code: "ca-missing", severity: "down", ports: ["cache"], text: "cache mode is on but no CA is loaded: the cache port cannot terminate TLS" });
  if (f.ca) {
    const days = Math.floor((f.ca.notAfter - f.now) / DAY);
    if (f.ca.notAfter <= f.now)
      p.push({ code: "ca-expired", severity: f.cacheEnabled ? "down" : "degraded", ports: ["cache"], text: `the ${f.ca.kind} CA expired on ${iso(f.ca.notAfter).slice(0, 10)}: agents reject every intercepted connection` });
    else if (days <= CA_WARN_DAYS)
      p.push({ code: "ca-expiring", severity: "degraded", ports: ["cache"], text: `the ${f.ca.kind} CA expires in ${days} days (${iso(f.ca.notAfter).slice(0, 10)}): replace it before agents break` });
  }
  const health: HealthState = p.some((x) => x.severity === "down") ? "Down" : p.length ? "Degraded" : "Normal";
  const port = (k: AgentPort): PortVerdict => {
    const mine = p.filter((x) => x.ports.includes(k));
    const ok = !mine.some((x) => x.severity === "down");
    return { ok, status: ok ? 200 : 503, reasons: mine.map((x) => x.text) };
  };
  const maint = p.find((x) => x.code === "maintenance");
  const down = p.find((x) => x.code === "platform-down");
  const failFast: HealthDecision["failFast"] = maint
    ? { scope: "all", code: "PX_MAINTENANCE", reason: `gateway in maintenance; use the next proxy` }
    : down
      ? { scope: "platform", code: "PX_PLATFORM_DOWN", reason: `the platform cannot be reached from this gateway (${down.text}); use the next proxy` }
      : null;
  return { health, problems: p, ports: { proxy: port("proxy"), cache: port("cache") }, failFast };
}

/** Retry-After for a fail-fast refusal: `base` seconds plus up to `spread` more, from the shell's random in [0, 1),
 * so refused agents do not all come back in the same second (RFC 9110 §10.2.3: delay-seconds). */
export function retryAfterSeconds(random: number, base = 30, spread = 30): number {
  const r = Number.isFinite(random) ? Math.min(Math.max(random, 0), 0.999999) : 0;
  return base + Math.floor(r * (spread + 1));
}

/**
 * HAProxy's agent-check answer (HAProxy configuration manual, "agent-check"): one line of words — `up`/`ready`
 * with a weight `N%`, `drain`, `maint`, or `down` with a `#description`. The weight follows load: open
 * connections against `max_connections`, never 0% while up (0% would drain it). Written `down #reason`: see below.
 */
export function agentCheckReply(d: HealthDecision, load: { open: number; max: number }, port: AgentPort = "proxy"): string {
  const has = (c: HealthCode) => d.problems.some((x) => x.code === c);
  if (has("maintenance")) return "maint\n";
  if (has("draining")) return "drain\n";
  const v = d.ports[port];
  if (!v.ok) {
    const first = d.problems.find((x) => x.severity === "down" && x.ports.includes(port));
    // '#' starts the description only as a word of its own: HAProxy's agent parser (src/tcpcheck.c, "look for next
    // word") ends words at ' ', '\t' and ',' only, so "down#x" would be one unknown word. Newlines end the reply.
    return `down #${(first?.code ?? "down")}: ${(first?.text ?? "").replace(/[\r\n]+/g, " ").slice(0, 200)}\n`;
  }
  const free = load.max > 0 ? 1 - load.open / load.max : 1;
  const weight = Math.max(1, Math.min(100, Math.round(free * 100)));
  return `up ready ${weight}%\n`;
}

/** What the supervisor pushes to each worker: per agent port its /healthz answer, and the fail-fast rule. */
export type PortHealth = Pick<HealthDecision, "ports" | "failFast">;

export const portHealthOf = (d: HealthDecision): PortHealth => ({ ports: d.ports, failFast: d.failFast });
