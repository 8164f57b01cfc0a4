/**
 * Starts a real gateway (`bun src/main.ts --config FILE`) as a child process for end-to-end tests,
 * with a TOML config written from a plain object, and reads its ports from the "listening" log line.
 * `stop()` sends SIGTERM and waits for the exit; `kill()` is for crash tests.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { waitFor } from "./helpers";

export const ROOT = resolve(import.meta.dir, "../..");
export const BUN = process.execPath;

type Tomlish = Record<string, Record<string, unknown>>;

export function toToml(cfg: Tomlish): string {
  const val = (v: unknown): string =>
    typeof v === "string" ? JSON.stringify(v) : Array.isArray(v) ? `[${v.map(val).join(", ")}]` : typeof v === "object" && v ? `{ ${Object.entries(v).map(([k, x]) => `${k} = ${val(x)}`).join(", ")} }` : String(v);
  return Object.entries(cfg)
    .map(([sec, kv]) => `[${sec}]\n` + Object.entries(kv).map(([k, v]) => `${JSON.stringify(k)} = ${val(v)}`).join("\n"))
    .join("\n\n") + "\n";
}

export type Gateway = {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  dir: string;
  configPath: string;
  ports: { proxy: number; cache: number | null; admin: number };
  token: string;
  lines: () => any[];
  stderr: () => string;
  waitForLine: (pred: (l: any) => boolean, ms?: number) => Promise<any>;
  admin: (path: string, init?: RequestInit) => Promise<Response>;
  writeConfig: (cfg: Tomlish) => void;
  stop: () => Promise<number>;
  [Symbol.asyncDispose]: () => Promise<void>;
};

export async function startGateway(cfg: Tomlish, opts: { dir?: string } = {}): Promise<Gateway> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "agate-gw-"));
  const full: Tomlish = {
    ...cfg,
    gateway: { data_dir: join(dir, "data"), workers: 2, drain_grace_s: 2, ...(cfg.gateway ?? {}) },
    proxy: { port: 0, listen: "127.0.0.1", ...(cfg.proxy ?? {}) },
    // tests listen on loopback only, also when a test turns cache mode on later (API, wizard)
    cache: { listen: "127.0.0.1", ...(cfg.cache ?? {}) },
    admin: { port: 0, token: "test-token-0123456789abcdef", ...(cfg.admin ?? {}) },
    // No test gateway reaches the real platform (no network): the link probe is off unless the test gives a
    // [platform] section (then the gateway's own default, probe_interval_s = 60), else health would go Down and
    // platform CONNECTs fail fast seconds after start (issue 10).
    platform: cfg.platform ?? { probe_interval_s: 0 },
  };
  const configPath = join(dir, "agate.toml");
  writeFileSync(configPath, toToml(full));
  const proc = Bun.spawn([BUN, join(ROOT, "src/main.ts"), "--config", configPath], {
    cwd: dir,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const parsed: any[] = [];
  let errText = "";
  const waiters: { pred: (l: any) => boolean; res: (l: any) => void }[] = [];
  (async () => {
    const dec = new TextDecoder();
    let rest = "";
    for await (const chunk of proc.stdout) {
      rest += dec.decode(chunk, { stream: true });
      // one pass over the chunk's lines, one slice of what is left at the end (not a re-slice of the rest per line:
      // a supervisor batch holds thousands of access lines, and benchmarks read these on the cores they measure)
      let from = 0;
      let i;
      while ((i = rest.indexOf("\n", from)) >= 0) {
        const line = rest.slice(from, i);
        from = i + 1;
        let obj: any;
        try {
          obj = JSON.parse(line);
        } catch {
          obj = { raw: line };
        }
        parsed.push(obj);
        if (waiters.length) for (const w of [...waiters]) if (w.pred(obj)) (waiters.splice(waiters.indexOf(w), 1), w.res(obj));
      }
      rest = from === 0 ? rest : rest.slice(from);
    }
  })();
  (async () => {
    const dec = new TextDecoder();
    for await (const chunk of proc.stderr) errText += dec.decode(chunk, { stream: true });
  })();
  const waitForLine = (pred: (l: any) => boolean, ms = 15_000) =>
    new Promise<any>((res, rej) => {
      const hit = parsed.find(pred);
      if (hit) return res(hit);
      const t = setTimeout(() => rej(new Error(`no matching log line within ${ms}ms; stderr: ${errText}; lines: ${JSON.stringify(parsed.slice(-20))}`)), ms);
      waiters.push({ pred, res: (l) => (clearTimeout(t), res(l)) });
    });
  const exited = proc.exited.then((c) => {
    for (const w of waiters) w.res({ exited: c });
    return c;
  });
  const ready = await Promise.race([waitForLine((l) => l.msg === "listening"), exited.then((c) => ({ exited: c }))]);
  if (ready.exited !== undefined) throw new Error(`gateway exited ${ready.exited} before listening: ${errText}`);
  const token = String((full.admin as any).token);
  const gw: Gateway = {
    proc,
    dir,
    configPath,
    ports: { proxy: ready.proxy, cache: ready.cache, admin: ready.admin },
    token,
    lines: () => parsed,
    stderr: () => errText,
    waitForLine,
    admin: (path, init = {}) =>
      fetch(`http://127.0.0.1:${ready.admin}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) } }),
    writeConfig: (next) => {
      const merged: Tomlish = {
        ...next,
        gateway: full.gateway,
        proxy: { ...full.proxy, port: ready.proxy, ...(next.proxy ?? {}) },
        cache: { listen: "127.0.0.1", ...(next.cache ?? {}) },
        admin: full.admin,
        platform: next.platform ?? full.platform,
      };
      writeFileSync(configPath, toToml(merged));
    },
    stop: async () => {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      const c = await exited;
      clearTimeout(t);
      return c;
    },
    [Symbol.asyncDispose]: async () => {
      await gw.stop();
    },
  };
  return gw;
}

/** Run curl and return { code, stdout, stderr }. */
export async function curl(args: string[], timeoutMs = 20_000) {
  const p = Bun.spawn(["curl", "-sS", "--max-time", String(Math.ceil(timeoutMs / 1000)), ...args], { stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

/**
 * /api/stats once the workers' reports (each worker posts its counters about once a second) cover at least
 * `tunnels` tunnels and intercepted connections in total with none still open: counters read then include
 * everything those connections did. Use it on a gateway the test started itself, so it knows the count.
 */
export async function reportedStats(gw: Gateway, opts: { tunnels: number; timeoutMs?: number }): Promise<any> {
  return waitFor(
    async () => {
      const st: any = await (await gw.admin("/api/stats")).json();
      const reported = st.workers.map((w: any) => w.counters).filter(Boolean);
      const total = reported.reduce((n: number, c: any) => n + c.totalTunnels, 0);
      const open = reported.some((c: any) => c.activeTunnels > 0 || c.activeConnections > 0);
      return total >= opts.tunnels && !open && st;
    },
    { timeoutMs: opts.timeoutMs ?? 10_000, what: `stats reporting ${opts.tunnels} closed tunnels`, everyMs: 100 },
  );
}
