/**
 * The gateway's life: a worker that dies is replaced while another worker's tunnel keeps streaming;
 * SIGHUP reloads without dropping tunnels (and keeps the old config when the new one is bad);
 * SIGTERM drains; a bad config at start exits non-zero with the key and the rule.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { BUN, ROOT, curl, startGateway, type Gateway } from "../peers/gateway";
import { openTunnel, rawExchange } from "../peers/fake-client";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const MS = "www.microsoft.com";
const pki = makeTestPki([HOST, MS]);
const hosts = { [HOST]: "127.0.0.1", [MS]: "127.0.0.1" };
let origin: Origin;

beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

/** A curl download through the proxy whose progress can be watched line by line. */
function streamThrough(gw: Gateway, path: string) {
  const p: Subprocess<"ignore", "pipe", "pipe"> = Bun.spawn(
    ["curl", "-sS", "-N", "--max-time", "60", "-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, path)],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
  );
  let text = "";
  const done = (async () => {
    const dec = new TextDecoder();
    for await (const c of p.stdout) text += dec.decode(c);
    return p.exited;
  })();
  return { lines: () => text.split("\n").filter(Boolean).length, text: () => text, done, proc: p };
}

describe("workers", () => {
  test("a killed worker is replaced while another worker's tunnel keeps streaming", async () => {
    await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts, gateway: { workers: 2 } });
    const s = streamThrough(gw, "/stream?n=80&ms=50");
    await waitFor(() => s.lines() >= 5, { timeoutMs: 10_000, what: "stream start" });
    // Which worker holds the tunnel? Kill the other one.
    let holder = -1;
    await waitFor(async () => {
      const st = await (await gw.admin("/api/stats")).json();
      holder = st.workers.findIndex((w: any) => w.counters?.activeTunnels === 1);
      return holder >= 0;
    }, { timeoutMs: 5000, what: "stats showing the tunnel" });
    const victim = holder === 0 ? 1 : 0;
    const before = s.lines();
    const r = await gw.admin(`/api/workers/${victim}/crash`, { method: "POST" });
    expect(r.status).toBe(202);
    await gw.waitForLine((l) => l.msg === "worker exited; restarting" && l.worker === victim);
    // Replaced: both workers alive again, the victim started twice.
    await waitFor(async () => {
      const h = await (await gw.admin("/healthz")).json();
      return h.workers.alive === 2;
    }, { timeoutMs: 10_000, what: "worker restart" });
    const st = await (await gw.admin("/api/stats")).json();
    expect(st.workers[victim].starts).toBe(2);
    expect(st.workers[holder].starts).toBe(1);
    // The surviving tunnel kept streaming, and finishes whole.
    expect(await s.done).toBe(0);
    expect(s.lines()).toBe(80);
    expect(s.lines()).toBeGreaterThan(before);
    // New agents are served after the restart.
    const c = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/after-restart")]);
    expect(c.stdout).toBe("hello from origin /after-restart\n");
  });
});

describe("reload", () => {
  test("SIGHUP with a new allowed domain admits it without dropping an open tunnel", async () => {
    await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts });
    const denied = await rawExchange(gw.ports.proxy, `CONNECT ${MS}:${origin.port} HTTP/1.1\r\n\r\n`);
    expect(denied).toStartWith("HTTP/1.1 403 ");
    const s = streamThrough(gw, "/stream?n=40&ms=50");
    await waitFor(() => s.lines() >= 3, { timeoutMs: 10_000, what: "stream start" });
    gw.writeConfig({ destinations: { ports: [origin.port] }, hosts, cache: { allowed_domains: ["microsoft.com"] } });
    gw.proc.kill("SIGHUP");
    await gw.waitForLine((l) => l.msg === "config reloaded");
    // The supervisor logs before the workers have applied the broadcast: wait until a CONNECT is admitted.
    await waitFor(
      async () => {
        const t = await openTunnel(gw.ports.proxy, `${MS}:${origin.port}`);
        t.destroy();
        return t.head.startsWith("HTTP/1.1 200");
      },
      { what: `a worker admitting ${MS} after the reload` },
    );
    const r = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(MS, "/now-allowed")]);
    expect(r.stdout).toBe("hello from origin /now-allowed\n");
    expect(await s.done).toBe(0);
    expect(s.lines()).toBe(40);
  });

  test("a bad config on reload keeps the running one and logs the reason", async () => {
    await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts });
    writeFileSync(gw.configPath, `[proxy]\nport = 22\n`);
    gw.proc.kill("SIGHUP");
    const l = await gw.waitForLine((x) => x.msg === "config reload failed; keeping the running config");
    expect(l.error).toContain("proxy.port: port 22 is reserved");
    const r = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/still-up")]);
    expect(r.stdout).toBe("hello from origin /still-up\n");
  });
});

describe("drain", () => {
  test("SIGTERM: health 503 at once, no new agents, the open tunnel finishes, exit 0", async () => {
    await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts, gateway: { drain_grace_s: 10 } });
    const s = streamThrough(gw, "/stream?n=30&ms=50");
    await waitFor(() => s.lines() >= 3, { timeoutMs: 10_000, what: "stream start" });
    gw.proc.kill("SIGTERM");
    await gw.waitForLine((l) => l.msg === "draining");
    const h = await fetch(`http://127.0.0.1:${gw.ports.admin}/healthz`);
    expect(h.status).toBe(503);
    expect((await h.json()).status).toBe("draining");
    const refused = await rawExchange(gw.ports.proxy, `CONNECT ${HOST}:${origin.port} HTTP/1.1\r\n\r\n`, { waitMs: 2000 });
    expect(refused.startsWith("HTTP/1.1 200")).toBe(false);
    expect(await s.done).toBe(0);
    expect(s.lines()).toBe(30);
    expect(await gw.proc.exited).toBe(0);
  });

  test("SIGTERM: a tunnel still open after the grace period is closed and the gateway exits 0", async () => {
    await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts, gateway: { drain_grace_s: 1 } });
    const s = streamThrough(gw, "/stream?n=400&ms=50");
    await waitFor(() => s.lines() >= 3, { timeoutMs: 10_000, what: "stream start" });
    gw.proc.kill("SIGTERM");
    expect(await gw.proc.exited).toBe(0);
    await s.done;
    // the stream (400 lines at 20/s) was cut at the end of the 1 s grace, not allowed to finish
    expect(s.lines()).toBeLessThan(400);
    expect(gw.lines().some((l) => l.msg === "stopped" && l.open_at_exit >= 1)).toBe(true);
  });
});

describe("config at start", () => {
  test.each([
    [`[proxy]\nport = 22\n`, "proxy.port: port 22 is reserved"],
    [`[cache]\nallowed_domains = ["https://www.microsoft.com"]\n`, "cache.allowed_domains[0]: 'https://www.microsoft.com': write the bare domain, e.g. microsoft.com"],
    [`[cache]\nallowed_domains = ["a.com","b.com","c.com","d.com","e.com","f.com","g.com","h.com","i.com","j.com","k.com"]\n`, "cache.allowed_domains: 11 entries, at most 10"],
    [`[proxy]\nport = "x"\n`, "proxy.port"],
    [`[proxy\nport = 1\n`, "not valid TOML"],
  ])("%p is refused with its reason and a non-zero exit", async (toml, message) => {
    const dir = (await import("node:fs")).mkdtempSync(join((await import("node:os")).tmpdir(), "agate-badcfg-"));
    const path = join(dir, "bad.toml");
    writeFileSync(path, toml);
    const p = Bun.spawn([BUN, join(ROOT, "src/main.ts"), "--config", path], { stdout: "pipe", stderr: "pipe", cwd: dir });
    const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
    expect(code).not.toBe(0);
    expect(err).toContain(message);
  });
});
