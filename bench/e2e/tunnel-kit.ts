/**
 * @module What the tunnel benchmarks (bench/e2e/tunnels.ts, throughput.ts, handshakes.ts) share: the origin and
 * the gateway they start, Debian's squid as a plain CONNECT proxy (no auth, no cache; configured here in a scratch
 * directory and stopped by its PID), the CPU-bound neighbour (one busy-looping process per core at normal
 * priority, each stopped by its PID) and an RSS sampler over /proc/<pid>/status.
 */
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { startGateway, type Gateway } from "../../test/peers/gateway";
import { freePort } from "../../test/peers/helpers";
import { type Child, rssKB, spawnChild } from "./children";

export const HOST = "qagpublic.qg1.apps.qualys.com";
export const BUN = process.execPath;
export const HERE = import.meta.dir;
const SQUID_BINS = ["/usr/sbin/squid", "/usr/bin/squid"];

export async function startOrigin(pki: { certPath: string; keyPath: string }): Promise<{ origin: Child; port: number }> {
  const origin = spawnChild("origin", [BUN, join(HERE, "origin-fixture.ts"), "--cert", pki.certPath, "--key", pki.keyPath]);
  const l = await origin.next("listening", 15_000);
  return { origin, port: Number(l.port) };
}

/** A proxy-mode gateway for tunnels to `originPort` (HOST resolves to loopback). */
export function startTunnelGateway(originPort: number, workers: number, maxConnections: number, extra: Record<string, any> = {}): Promise<Gateway> {
  return startGateway({
    gateway: { workers, drain_grace_s: 2 },
    proxy: { max_connections: maxConnections, idle_timeout_s: 900, connect_timeout_s: 30 },
    destinations: { ports: [originPort] },
    hosts: { [HOST]: "127.0.0.1" },
    ...extra,
  });
}

// ---- squid, plain CONNECT ----------------------------------------------------------------------------------

export type PlainSquid = { port: number; pid: number; dir: string; stop: () => Promise<void> };

export const squidBin = (): string | null => SQUID_BINS.find((b) => Bun.file(b).size > 0) ?? null;

/** squid allowing CONNECT to `originPort` only, HOST → 127.0.0.1 from its own hosts file, nothing cached. */
export async function startPlainSquid(originPort: number): Promise<PlainSquid | null> {
  const bin = squidBin();
  if (!bin) return null;
  const dir = mkdtempSync(join(tmpdir(), "agate-bench-squid-"));
  chmodSync(dir, 0o777); // squid drops to its own user (proxy), which must read the hosts file and write its log
  const port = freePort(); // squid cannot be told port 0
  writeFileSync(join(dir, "hosts"), `127.0.0.1 ${HOST}\n`);
  writeFileSync(
    join(dir, "squid.conf"),
    [
      `http_port 127.0.0.1:${port}`,
      `pid_filename ${dir}/squid.pid`,
      `cache_log ${dir}/cache.log`,
      `access_log none`, // agate's access log is batched off the hot path; squid's would be a synchronous file write
      `cache deny all`,
      `cache_mem 8 MB`,
      `hosts_file ${dir}/hosts`,
      `dns_nameservers 127.0.0.1`,
      `acl bench_port port ${originPort}`,
      `http_access allow CONNECT bench_port`,
      `http_access deny all`,
      `shutdown_lifetime 0 seconds`,
      `pinger_enable off`,
      `coredump_dir ${dir}`,
      `max_filedescriptors 19500`,
      `client_lifetime 1 hour`,
      `read_timeout 15 minutes`,
      "",
    ].join("\n"),
  );
  const proc: Subprocess = Bun.spawn([bin, "-N", "-f", join(dir, "squid.conf")], { stdout: "ignore", stderr: "pipe", cwd: dir });
  const end = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`squid exited ${proc.exitCode}: ${await Bun.file(join(dir, "cache.log")).text().catch(() => "")}`);
    const up = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } }).then(
      (s) => (s.end(), true),
      () => false,
    );
    if (up) break;
    if (Date.now() > end) {
      proc.kill("SIGKILL");
      throw new Error(`squid not listening on ${port} within 15 s`);
    }
    await Bun.sleep(100);
  }
  return {
    port,
    pid: proc.pid,
    dir,
    stop: async () => {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

// ---- the CPU-bound neighbour -------------------------------------------------------------------------------

export type Neighbour = { pids: number[]; stop: () => Promise<void> };

/** One busy-looping process per core at normal priority (nice 0), as on a shared VM. */
export function startNeighbour(n = availableParallelism()): Neighbour {
  const procs = Array.from({ length: n }, () => Bun.spawn([BUN, "-e", "for(;;){}"], { stdin: "ignore", stdout: "ignore", stderr: "ignore" }));
  return {
    pids: procs.map((p) => p.pid),
    stop: async () => {
      for (const p of procs) p.kill("SIGKILL");
      await Promise.all(procs.map((p) => p.exited));
    },
  };
}

// ---- RSS ---------------------------------------------------------------------------------------------------

/** Samples a process's RSS every `everyMs`; `mark()` starts a new peak window. */
export class RssSampler {
  peak = 0;
  last = 0;
  private timer: ReturnType<typeof setInterval>;
  constructor(readonly pid: number, everyMs = 50) {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
  }
  sample(): number {
    const r = rssKB(this.pid);
    if (r !== null) {
      this.last = r;
      if (r > this.peak) this.peak = r;
    }
    return this.last;
  }
  mark() {
    this.peak = this.sample();
  }
  stop() {
    clearInterval(this.timer);
  }
}

/** The machine's load right now, as `uptime` prints it (the figures' context). */
export const uptime = () => Bun.spawnSync(["uptime"], { stdout: "pipe" }).stdout.toString().trim();
