/**
 * Debian's haproxy in front of gateways for end-to-end tests and benchmarks: TCP mode, round-robin over the given
 * ports, HTTP health checks (`GET /healthz` sent to each port itself, as a site's load balancer does), and a
 * connection that fails on a server that went away is retried on another (`retries` + `option redispatch`). The
 * config is generated in a scratch directory; haproxy runs in the foreground (-db) and is stopped by its PID.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort, waitFor } from "./helpers";

export const HAPROXY = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].find((p) => Bun.file(p).size > 0) ?? null;

export type Haproxy = {
  port: number;
  pid: number;
  /** the servers haproxy sees UP now (from its stats CSV) */
  up(): Promise<string[]>;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
};

export async function startHaproxy(servers: { name: string; port: number }[], opts: { timeoutMs?: number } = {}): Promise<Haproxy> {
  if (!HAPROXY) throw new Error("haproxy is not installed (apt-get install haproxy)");
  const dir = mkdtempSync(join(tmpdir(), "agate-haproxy-"));
  const port = freePort(); // haproxy cannot be told port 0
  const statsPort = freePort();
  writeFileSync(
    join(dir, "haproxy.cfg"),
    [
      "global",
      "  maxconn 2000",
      "defaults",
      "  mode tcp",
      "  timeout connect 2s",
      "  timeout client 60s",
      "  timeout server 60s",
      // a check waits up to 2 s: without it haproxy waits `inter` (200 ms) and marks a gateway busy with a stampede
      // of first downloads DOWN, then closes the queued agents' connections (measured: bench/e2e/fleet.ts phase 2,
      // 48 of 300 agents "proxy-closed" with the default)
      "  timeout check 2s",
      "  retries 3",
      "  option redispatch",
      "frontend agents",
      `  bind 127.0.0.1:${port}`,
      "  default_backend gateways",
      "backend gateways",
      "  balance roundrobin",
      "  option httpchk GET /healthz",
      "  http-check expect status 200",
      "  default-server inter 200ms fall 2 rise 2",
      ...servers.map((s) => `  server ${s.name} 127.0.0.1:${s.port} check`),
      "frontend stats",
      "  mode http",
      `  bind 127.0.0.1:${statsPort}`,
      "  stats enable",
      "  stats uri /stats",
      "",
    ].join("\n"),
  );
  const proc: Subprocess = Bun.spawn([HAPROXY, "-f", join(dir, "haproxy.cfg"), "-db"], { stdout: "pipe", stderr: "pipe" });
  const up = async () => {
    const csv = await fetch(`http://127.0.0.1:${statsPort}/stats;csv`).then((r) => r.text(), () => "");
    return [...csv.matchAll(/^gateways,([^,]+),(?:[^,]*,){15}UP[ ,]/gm)].map((m) => m[1]!).filter((n) => n !== "BACKEND");
  };
  const stop = async () => {
    if (proc.exitCode === null) proc.kill("SIGTERM");
    const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
    await proc.exited;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => proc.exitCode === null && (await up()).length === servers.length, { timeoutMs: opts.timeoutMs ?? 15_000, what: "haproxy reporting every gateway UP", everyMs: 100 });
  } catch (e) {
    await stop();
    throw e;
  }
  return { port, pid: proc.pid, up, stop, [Symbol.asyncDispose]: stop };
}
