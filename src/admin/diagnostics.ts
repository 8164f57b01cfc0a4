/**
 * @module Diagnostics for the admin: a connectivity check of each host the configured pod has (core/platform-hosts.ts)
 * plus the targets the admin adds (`host:port`), each probed the way agents' traffic goes (workers/probe.ts: DNS with
 * `[hosts]` → TCP → CONNECT through the upstream proxy with its authentication when one is set → TLS verified against
 * the system roots plus `[tls] upstream_ca`); the process's and each worker thread's resource use; and the encrypted
 * diagnostics archive.
 *
 * Archive: the age format (age-encryption.org/v1) in passphrase mode (an scrypt recipient stanza), made with the
 * `age-encryption` package by age's author, so standard tools open it: `age -d -o agate-diag-ID.json.gz FILE` asks
 * for the one-time password (Debian's /usr/bin/age 1.x; test/e2e/diagnostics.test.ts drives it through a pty).
 * Its content is what it was before the age format: gzip of one JSON document (redacted config, status, stats,
 * connectivity, resources, certificates, recent log lines); `agate diag open FILE --password P` opens it too.
 */
import { readdirSync, readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { Decrypter, Encrypter } from "age-encryption";
import type { Config } from "../core/config";
import { isIPv4, isIPv6 } from "../core/config";
import { platformPort, podHosts } from "../core/platform-hosts";
import { probeHost, type ProbeResult } from "../workers/probe";

/** At most this many extra targets per run: each is one more probe from the appliance. */
export const MAX_DIAG_TARGETS = 8;
/**
 * age's scrypt work factor (log2 N). age-encryption runs scrypt synchronously in JS, so sealing blocks the admin's
 * thread: on this 2-core machine, shared and loaded (load average 13), a cold 200 kB seal took 7.4 s at age's default
 * 18 and 2.1 s at 15; with less load, 1.8 s at 18 (`Encrypter().setScryptWorkFactor(n); await encrypt(…)` timed with
 * performance.now() in a bun script; scrypt's cost is linear in N, so 15 is 8× less work). The one-time password carries
 * about 200 bits, so brute force is out of reach at any work factor, and 15 is what the older AGATEDIAG1 container
 * used. Debian's age 1.1.1 opens it (it refuses only factors above 22; test/e2e/diagnostics.test.ts).
 */
export const ARCHIVE_SCRYPT_LOG_N = 15;

export type DiagTarget = { host: string; port: number };
/** One check: a probe result, and whether it was one of the pod's hosts or a target the admin added. */
export type DiagCheck = ProbeResult & { check: "platform" | "target" };
export type Connectivity = {
  pod: string;
  port: number;
  /** the pod's hosts probed (only those the pod has) */
  hosts: string[];
  via: "direct" | "upstream";
  /** `host:port` of the upstream proxy, when one is set */
  upstream_proxy: string | null;
  results: DiagCheck[];
  /** every check passed */
  ok: boolean;
  failed: number;
};

/**
 * `host:port`, `[v6]:port` → a target, or the reason it is not one. The host is a DNS name or an IP literal; the
 * port is required (the admin names exactly what to test).
 */
export function parseDiagTarget(s: string): DiagTarget | string {
  const t = s.trim();
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s\/\[\]]+)):(\d{1,5})$/.exec(t);
  if (!m) return `expected host:port (e.g. qagpublic.qg1.apps.qualys.com:443 or [2001:db8::1]:443), got ${JSON.stringify(t.slice(0, 80))}`;
  const host = (m[1] ?? m[2]!).toLowerCase().replace(/\.$/, "");
  const port = Number(m[3]);
  if (!(port >= 1 && port <= 65535)) return `port must be 1–65535, got ${m[3]}`;
  if (m[1] !== undefined ? !isIPv6(host) : !isIPv4(host) && !/^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?$/.test(host))
    return `not a host name or IP address: ${JSON.stringify(host.slice(0, 80))}`;
  return { host, port };
}

/** Targets from the API's body (`target` string or `targets` list) and query (`?target=`, repeatable), checked. */
export function parseDiagTargets(values: unknown[]): DiagTarget[] | string {
  const out: DiagTarget[] = [];
  for (const v of values) {
    if (typeof v !== "string") return `target: expected a "host:port" string, got ${JSON.stringify(v)?.slice(0, 80)}`;
    for (const part of v.split(",").filter((x) => x.trim())) {
      const t = parseDiagTarget(part);
      if (typeof t === "string") return `target: ${t}`;
      if (!out.some((o) => o.host === t.host && o.port === t.port)) out.push(t);
    }
  }
  if (out.length > MAX_DIAG_TARGETS) return `target: at most ${MAX_DIAG_TARGETS} targets per run, got ${out.length}`;
  return out;
}

/** The pod's hosts (only those it has) and the admin's targets, each probed once, all in parallel. */
export async function testConnectivity(c: Config, targets: DiagTarget[] = [], opts: { timeoutMs?: number } = {}): Promise<Connectivity> {
  const platform = podHosts(c);
  const jobs = [
    ...platform.map((h) => probeHost(c, h.host, h.port, opts).then((r): DiagCheck => ({ ...r, check: "platform" }))),
    ...targets.map((t) => probeHost(c, t.host, t.port, opts).then((r): DiagCheck => ({ ...r, check: "target" }))),
  ];
  const results = await Promise.all(jobs);
  const up = c.upstream_proxy;
  const failed = results.filter((r) => !r.ok).length;
  return {
    pod: c.platform.pod,
    port: platformPort(c),
    hosts: platform.map((h) => h.host),
    via: up ? "upstream" : "direct",
    upstream_proxy: up ? `${up.host}:${up.port}` : null,
    results,
    ok: failed === 0,
    failed,
  };
}

export type ThreadUse = { tid: number; name: string; cpu_s: number };
export type Resources = {
  process: { rss_bytes: number; heap_used_bytes: number; external_bytes: number; cpu_user_s: number; cpu_system_s: number };
  threads: ThreadUse[];
  workers: { index: number; tid: number | null; cpu_s: number | null }[];
  note: string;
};

/** CPU per thread from /proc (Linux): utime + stime, in seconds. Worker threads are named "Worker" by Bun. */
export function readResources(workerCount: number): Resources {
  const m = process.memoryUsage();
  const cu = process.cpuUsage();
  const threads: ThreadUse[] = [];
  const hz = 100; // USER_HZ is 100 on every Linux this runs on
  try {
    for (const t of readdirSync("/proc/self/task")) {
      try {
        const stat = readFileSync(`/proc/self/task/${t}/stat`, "utf8");
        const name = readFileSync(`/proc/self/task/${t}/comm`, "utf8").trim();
        const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        // fields after ")": state(3) … utime(14) stime(15) → indexes 11, 12 here
        threads.push({ tid: Number(t), name, cpu_s: (Number(f[11]) + Number(f[12])) / hz });
      } catch {
        // thread ended meanwhile
      }
    }
  } catch {
    // not Linux
  }
  const workerThreads = threads.filter((t) => t.name === "Worker").sort((a, b) => a.tid - b.tid);
  // Restarted workers get new threads; the newest `workerCount` "Worker" threads are the live ones, in start order.
  const live = workerThreads.slice(-workerCount);
  return {
    process: {
      rss_bytes: m.rss,
      heap_used_bytes: m.heapUsed,
      external_bytes: m.external,
      cpu_user_s: cu.user / 1e6,
      cpu_system_s: cu.system / 1e6,
    },
    threads,
    workers: Array.from({ length: workerCount }, (_, i) => ({ index: i, tid: live[i]?.tid ?? null, cpu_s: live[i]?.cpu_s ?? null })),
    note: "workers are threads of one process: memory is shared and reported for the process; CPU is per thread",
  };
}

/** Ten groups of 4 from an unambiguous alphabet: about 200 bits, easy to read out on a phone call. */
export function makeOneTimePassword(): string {
  const ALPHA = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"; // 32 symbols: 5 bits each
  const b = randomBytes(40);
  let s = "";
  for (let i = 0; i < 40; i++) s += ALPHA[b[i]! & 31];
  return s.match(/.{4}/g)!.join("-");
}

/** The archive's file name: `agate-diag-<id>.age` (age's own extension; the content is gzip'd JSON). */
export function archiveName(id: string): string {
  return `agate-diag-${id}.age`;
}

/** The exact command that opens the archive with Debian's (or any) age; it asks for the one-time password. */
export function openCommand(file: string): string {
  const out = file.replace(/\.age$/, "") + ".json.gz";
  const q = (x: string) => (/^[\w./@%+=:,-]+$/.test(x) ? x : `'${x.replace(/'/g, "'\\''")}'`);
  return `age -d -o ${q(out)} ${q(file)} && gunzip ${q(out)}`;
}

/** gzip(JSON) sealed in the age format with a passphrase (scrypt recipient), ready to download. */
export async function sealArchive(content: unknown, password: string): Promise<Uint8Array> {
  const e = new Encrypter();
  e.setPassphrase(password);
  e.setScryptWorkFactor(ARCHIVE_SCRYPT_LOG_N);
  return e.encrypt(new Uint8Array(gzipSync(JSON.stringify(content))));
}

/** The reverse of sealArchive (also what `agate diag open` runs). */
export async function openArchive(bytes: Uint8Array, password: string): Promise<unknown> {
  const head = new TextDecoder().decode(bytes.subarray(0, 22));
  if (head !== "age-encryption.org/v1\n") throw new Error("not an age file (a diagnostics archive starts with age-encryption.org/v1)");
  const d = new Decrypter();
  d.addPassphrase(password.trim());
  let plain: Uint8Array;
  try {
    plain = await d.decrypt(bytes);
  } catch (e) {
    throw new Error(`wrong password, or the archive is damaged (${(e as Error).message})`);
  }
  return JSON.parse(gunzipSync(plain).toString("utf8"));
}

/** The admin's extra targets from a POST /api/diagnostics: body `target` (string) or `targets` (list), and `?target=`. */
export function diagTargetsOf(body: unknown, query: URLSearchParams): DiagTarget[] | string {
  const values: unknown[] = [...query.getAll("target")];
  if (body && typeof body === "object" && !Array.isArray(body)) {
    const b = body as Record<string, unknown>;
    if (b.target !== undefined && b.target !== null && b.target !== "") values.push(b.target);
    if (b.targets !== undefined) {
      if (!Array.isArray(b.targets)) return `targets: expected a list of "host:port" strings`;
      values.push(...b.targets);
    }
  }
  return parseDiagTargets(values);
}

/** What the API answers about the archive: where to fetch it once, the one-time password and the command that opens it. */
export function archiveAnswer(id: string, name: string, bytes: number, password: string, expires: number) {
  return {
    id,
    url: `/api/diagnostics/${id}/archive`,
    name,
    bytes,
    password,
    expires: new Date(expires).toISOString(),
    format: "age (age-encryption.org/v1, passphrase/scrypt); content: gzip'd JSON",
    open_command: openCommand(name),
    note: "the password is shown only now, and the archive can be downloaded once; age asks for the password",
  };
}
