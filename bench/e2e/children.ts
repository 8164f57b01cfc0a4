/**
 * @module Child processes and /proc readings for the end-to-end benchmarks (the same patterns as
 * bench/e2e/concurrency.ts, kept here so new benchmarks need not copy them): every child is spawned with piped
 * stdio, speaks one JSON object per stdout line, is tracked in one set and stopped by its own PID (stdin closed,
 * then SIGTERM after 5 s, SIGKILL after 10 s). Every wait is bounded.
 */
import { readFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { ROOT } from "../../test/peers/gateway";

export const CLK_TCK = (() => {
  const r = Bun.spawnSync(["getconf", "CLK_TCK"], { stdout: "pipe", stderr: "ignore" });
  const n = Number(r.stdout.toString().trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

export type CpuTimes = { user: number; sys: number };

/** utime and stime in seconds, all threads (a gateway's workers are threads of its process). */
export function cpuTimes(pid: number): CpuTimes | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return { user: Number(f[11]) / CLK_TCK, sys: Number(f[12]) / CLK_TCK };
  } catch {
    return null;
  }
}

export function rssKB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
export const ratio = (a: number | null | undefined, b: number | null | undefined) => (a && b ? round(a / b, 3) : null);

export const median = (xs: (number | null | undefined)[]) => {
  const a = xs.filter((x): x is number => typeof x === "number").sort((p, q) => p - q);
  if (!a.length) return null;
  const m = a.length >> 1;
  return a.length % 2 ? a[m]! : round((a[m - 1]! + a[m]!) / 2, 3);
};

export type Child = {
  proc: Subprocess<"pipe", "pipe", "pipe">;
  pid: number;
  name: string;
  /** the next stdout object whose `ev` is `ev` (others are skipped); throws on timeout, exit or `error` */
  next: (ev: string, ms: number) => Promise<any>;
  send: (cmd: string) => void;
  stderr: () => string;
  stop: () => Promise<void>;
};

const children = new Set<Child>();

export function spawnChild(name: string, cmd: string[], onEvent?: (o: any) => void): Child {
  const proc = Bun.spawn(cmd, { cwd: ROOT, stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  const queue: any[] = [];
  let waiter = null as ((o: any) => void) | null;
  let errText = "";
  let exited = false;
  (async () => {
    const dec = new TextDecoder();
    let rest = "";
    for await (const chunk of proc.stdout) {
      rest += dec.decode(chunk, { stream: true });
      let k;
      while ((k = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, k);
        rest = rest.slice(k + 1);
        let o: any;
        try {
          o = JSON.parse(line);
        } catch {
          o = { ev: "raw", line };
        }
        onEvent?.(o);
        if (o.ev === "progress") continue;
        if (waiter) {
          const w = waiter;
          waiter = null;
          w(o);
        } else queue.push(o);
      }
    }
  })();
  (async () => {
    const dec = new TextDecoder();
    for await (const chunk of proc.stderr) errText = (errText + dec.decode(chunk, { stream: true })).slice(-8000);
  })();
  proc.exited.then(() => {
    exited = true;
    if (waiter) {
      const w = waiter;
      waiter = null;
      w({ ev: "exit", code: proc.exitCode });
    }
  });
  const nextAny = (ms: number) =>
    new Promise<any>((res) => {
      if (queue.length) return res(queue.shift());
      if (exited) return res({ ev: "exit", code: proc.exitCode });
      const t = setTimeout(() => {
        waiter = null;
        res({ ev: "timeout" });
      }, ms);
      waiter = (o) => (clearTimeout(t), res(o));
    });
  const child: Child = {
    proc,
    pid: proc.pid,
    name,
    async next(ev, ms) {
      const end = Date.now() + ms;
      for (;;) {
        const o = await nextAny(Math.max(1, end - Date.now()));
        if (o.ev === ev) return o;
        if (o.ev === "timeout") throw new Error(`${name}: no "${ev}" within ${ms} ms; stderr: ${errText.slice(-2000)}`);
        if (o.ev === "exit" || o.ev === "error") throw new Error(`${name}: ${JSON.stringify(o)} while waiting for "${ev}"; stderr: ${errText.slice(-2000)}`);
      }
    },
    send(cmd) {
      if (!exited) {
        proc.stdin.write(cmd + "\n");
        proc.stdin.flush();
      }
    },
    stderr: () => errText,
    async stop() {
      children.delete(child);
      if (!exited) {
        try {
          proc.stdin.end();
        } catch {}
        const t1 = setTimeout(() => proc.kill("SIGTERM"), 5000);
        const t2 = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await proc.exited;
        clearTimeout(t1);
        clearTimeout(t2);
      }
    },
  };
  children.add(child);
  return child;
}

/** Stop every child still running (each by its own PID). */
export async function stopChildren() {
  await Promise.all([...children].map((c) => c.stop()));
}

export function gitRev(): string | null {
  const r = Bun.spawnSync(["git", "describe", "--always", "--dirty"], { cwd: ROOT, stdout: "pipe", stderr: "ignore" });
  return r.exitCode === 0 ? r.stdout.toString().trim() : null;
}
