/**
 * @module Diagnostics for the admin: a connectivity test to each platform host of the configured pod (directly and,
 * when one is configured, through the upstream proxy: TCP, then CONNECT, then a TLS handshake with the host's name),
 * the process's and each worker thread's resource use, and the encrypted diagnostics archive.
 *
 * Archive format (version 1), opened with the one-time password shown once:
 *   "AGATEDIAG1" (10 bytes) · salt (16) · iv (12) · GCM tag (16) · AES-256-GCM(gzip(JSON))
 *   key = scrypt(password, salt, 32, { N: 2^15, r: 8, p: 1 })
 * `openArchive` (and `agate diag open FILE --password P`) reverses it.
 */
import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from "node:crypto";
import { lookup } from "node:dns/promises";
import { readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { gunzipSync, gzipSync } from "node:zlib";
import type { Config } from "../core/config";

/** DESIGN: platform hosts are `{qagpublic,camspublic,camspm,camsrepo,cask}.<pod>`. */
export const PLATFORM_HOST_PREFIXES = ["qagpublic", "camspublic", "camspm", "camsrepo", "cask"] as const;
export const CONNECT_TIMEOUT_MS = 5000;
const MAGIC = Buffer.from("AGATEDIAG1");
const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

export type ProbeResult = {
  host: string;
  port: number;
  via: "direct" | "upstream_proxy";
  ok: boolean;
  ms: number;
  address?: string;
  tls_version?: string;
  error?: string;
};

function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let t: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<T>((_, rej) => {
      t = setTimeout(() => {
        onTimeout();
        rej(new Error(`${what}: no answer within ${ms} ms`));
      }, ms);
    }),
  ]).finally(() => clearTimeout(t));
}

function tcpConnect(host: string, port: number): Promise<net.Socket> {
  return new Promise((res, rej) => {
    const s = net.connect({ host, port });
    s.once("connect", () => res(s));
    s.once("error", (e) => rej(new Error(`TCP connect to ${host}:${port}: ${(e as Error).message}`)));
  });
}

function tlsHandshake(socket: net.Socket, servername: string, ca: string[]): Promise<tls.TLSSocket> {
  return new Promise((res, rej) => {
    const t = tls.connect({ socket, servername, ca, rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] });
    t.once("secureConnect", () => {
      if (!t.authorized) {
        t.destroy();
        return rej(new Error(`TLS: the certificate of ${servername} is not trusted (${String(t.authorizationError)})`));
      }
      res(t);
    });
    t.once("error", (e) => rej(new Error(`TLS handshake with ${servername}: ${(e as Error).message}`)));
  });
}

/** CONNECT through the upstream proxy with the host name (never a resolved IP), Basic auth when configured. */
function proxyConnect(sock: net.Socket, host: string, port: number, up: NonNullable<Config["upstream_proxy"]>): Promise<void> {
  return new Promise((res, rej) => {
    const auth = up.username ? `Proxy-Authorization: Basic ${Buffer.from(`${up.username}:${up.password ?? ""}`).toString("base64")}\r\n` : "";
    sock.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n${auth}\r\n`);
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString("latin1");
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buf.length > 16384) rej(new Error("upstream proxy: answer head too large"));
        return;
      }
      sock.off("data", onData);
      const status = /^HTTP\/1\.[01] (\d{3})[^\r\n]*/.exec(buf);
      if (!status) return rej(new Error(`upstream proxy: not an HTTP answer: ${JSON.stringify(buf.slice(0, 40))}`));
      if (status[1] !== "200") return rej(new Error(`upstream proxy answered: ${status[0].slice(9)}`));
      res();
    };
    sock.on("data", onData);
    sock.once("close", () => rej(new Error("upstream proxy closed the connection")));
  });
}

async function probe(c: Config, host: string, port: number, via: ProbeResult["via"], ca: string[]): Promise<ProbeResult> {
  const t0 = performance.now();
  let sock: net.Socket | null = null;
  let tsock: tls.TLSSocket | null = null;
  const r: ProbeResult = { host, port, via, ok: false, ms: 0 };
  try {
    await withTimeout(
      (async () => {
        if (via === "upstream_proxy") {
          const up = c.upstream_proxy!;
          sock = await tcpConnect(up.host, up.port);
          r.address = `${up.host}:${up.port}`;
          await proxyConnect(sock, host, port, up);
        } else {
          const mapped = c.hosts[host];
          const addr =
            mapped ??
            (await lookup(host).then(
              (a) => a.address,
              (e: NodeJS.ErrnoException) => {
                throw new Error(`DNS: ${host} does not resolve (${e.code ?? e.message}); map it in [hosts] or fix the resolver`);
              },
            ));
          r.address = addr;
          sock = await tcpConnect(addr, port);
        }
        tsock = await tlsHandshake(sock, host, ca);
        r.tls_version = tsock.getProtocol() ?? undefined;
      })(),
      CONNECT_TIMEOUT_MS,
      `${host}:${port}`,
      () => {
        (sock as net.Socket | null)?.destroy();
      },
    );
    r.ok = true;
  } catch (e) {
    r.error = (e as Error).message;
  } finally {
    (tsock as tls.TLSSocket | null)?.destroy();
    (sock as net.Socket | null)?.destroy();
    r.ms = Math.round(performance.now() - t0);
  }
  return r;
}

/** Each platform host of the pod, directly and through the upstream proxy when one is set; all in parallel. */
export async function testConnectivity(c: Config): Promise<{ pod: string; port: number; results: ProbeResult[] }> {
  const port = c.destinations.ports.includes(443) ? 443 : c.destinations.ports[0]!;
  const ca = [...tls.rootCertificates];
  if (c.tls.upstream_ca) {
    try {
      ca.push(readFileSync(c.tls.upstream_ca, "utf8"));
    } catch {
      // the probe then reports an untrusted certificate
    }
  }
  const hosts = PLATFORM_HOST_PREFIXES.map((p) => `${p}.${c.platform.pod}`);
  const jobs: Promise<ProbeResult>[] = hosts.map((h) => probe(c, h, port, "direct", ca));
  if (c.upstream_proxy) jobs.push(...hosts.map((h) => probe(c, h, port, "upstream_proxy", ca)));
  return { pod: c.platform.pod, port, results: await Promise.all(jobs) };
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

export function sealArchive(content: unknown, password: string): Uint8Array {
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const key = scryptSync(password, salt, 32, SCRYPT);
  const c = createCipheriv("aes-256-gcm", key, iv);
  const body = Buffer.concat([c.update(gzipSync(JSON.stringify(content))), c.final()]);
  return Buffer.concat([MAGIC, salt, iv, c.getAuthTag(), body]);
}

export function openArchive(bytes: Uint8Array, password: string): unknown {
  const b = Buffer.from(bytes);
  if (b.length < MAGIC.length + 44 || !b.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error("not an agate diagnostics archive");
  let o = MAGIC.length;
  const salt = b.subarray(o, (o += 16));
  const iv = b.subarray(o, (o += 12));
  const tag = b.subarray(o, (o += 16));
  const key = scryptSync(password.trim(), salt, 32, SCRYPT);
  const d = createDecipheriv("aes-256-gcm", key, iv);
  d.setAuthTag(tag);
  let plain: Buffer;
  try {
    plain = Buffer.concat([d.update(b.subarray(o)), d.final()]);
  } catch {
    throw new Error("wrong password, or the archive is damaged");
  }
  return JSON.parse(gunzipSync(plain).toString("utf8"));
}
