/**
 * Changes that apply or are refused, as a whole (issue 10): API changes go to the overlay `<data_dir>/agate.auto.toml`
 * and never into the admin's --config file; GET /api/config?sources=1 says where each value comes from; a port held
 * by another process, port 0, or a file that does not exist is refused with 4xx naming the key, and the running
 * config and the files stay as they were; the same checks at start exit 78; a new upstream proxy is tried through
 * to a platform host (refused unless ?force=1).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { BUN, ROOT, curl, startGateway, toToml } from "../peers/gateway";
import { squidMissing, startSquid, type Squid } from "../peers/squid";
import { freePort } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const hosts = { [HOST]: "127.0.0.1" };
let origin: Origin;
beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

const put = (gw: { admin: (p: string, i?: RequestInit) => Promise<Response> }, body: unknown, q = "") =>
  gw.admin(`/api/config${q}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

/** The proxy port answers a CONNECT through to the origin. */
async function tunnels(port: number) {
  const r = await curl(["-x", `http://127.0.0.1:${port}`, "--cacert", pki.caPath, origin.url(HOST, "/ok")]);
  return r.stdout === "hello from origin /ok\n";
}

/** `bun src/main.ts --config FILE` to its exit (bounded): code and stderr. */
async function startExit(file: string) {
  const p = Bun.spawn([BUN, join(ROOT, "src/main.ts"), "--config", file], { stdout: "pipe", stderr: "pipe" });
  const t = setTimeout(() => p.kill("SIGKILL"), 20_000);
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  clearTimeout(t);
  return { code, err };
}

describe("the overlay", () => {
  test("a change goes to data_dir/agate.auto.toml, the --config file stays byte for byte; sources say where values come from; a restart keeps it", async () => {
    const dir = (await import("node:fs")).mkdtempSync(join((await import("node:os")).tmpdir(), "agate-ov-"));
    const cfg = { destinations: { ports: [origin.port] }, hosts };
    {
      await using gw = await startGateway(cfg, { dir });
      // comments and layout the admin wrote
      const text = `# the admin's own file\n${readFileSync(gw.configPath, "utf8")}`;
      writeFileSync(gw.configPath, text);
      const r = await put(gw, { cache: { allowed_domains: ["microsoft.com"] }, proxy: { idle_timeout_s: 600 } });
      expect(r.status).toBe(200);
      const body = await r.json();
      const overlay = join(dir, "data", "agate.auto.toml");
      expect(body.file).toBe(overlay);
      expect(readFileSync(gw.configPath, "utf8")).toBe(text);
      const written = Bun.TOML.parse(readFileSync(overlay, "utf8")) as any;
      expect(written).toEqual({ cache: { allowed_domains: ["microsoft.com"] }, proxy: { idle_timeout_s: 600 } });
      const s = await (await gw.admin("/api/config?sources=1")).json();
      expect(s.sources["cache.allowed_domains"]).toBe("overlay");
      expect(s.sources["proxy.idle_timeout_s"]).toBe("overlay");
      expect(s.sources["proxy.listen"]).toBe("file");
      expect(s.sources["proxy.max_connections"]).toBe("default");
      expect(s.sources["hosts"]).toBe("file");
      expect(s.file).toBe(gw.configPath);
      expect(s.overlay).toBe(overlay);
      expect(s.config.cache.allowed_domains).toEqual(["microsoft.com"]);
    }
    // the same start command reads the file and the overlay on top
    await using again = await startGateway(cfg, { dir });
    const c = await (await again.admin("/api/config")).json();
    expect(c.cache.allowed_domains).toEqual(["microsoft.com"]);
    expect(c.proxy.idle_timeout_s).toBe(600);
  }, 60_000);
});

describe("refused as a whole", () => {
  test("a proxy port another process holds: 400 naming proxy.port, the old port keeps serving, nothing written (the next start is the same)", async () => {
    await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts });
    const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const before = readFileSync(gw.configPath, "utf8");
      const r = await put(gw, { proxy: { port: holder.port } });
      expect(r.status).toBe(400);
      const b = await r.json();
      expect(b.field).toBe("proxy.port");
      expect(b.error).toContain("in use");
      expect(readFileSync(gw.configPath, "utf8")).toBe(before);
      expect(existsSync(join(gw.dir, "data", "agate.auto.toml"))).toBe(false);
      expect((await (await gw.admin("/api/config")).json()).proxy.port).toBe(0);
      expect(await tunnels(gw.ports.proxy)).toBe(true);
    } finally {
      holder.stop(true);
    }
  }, 60_000);

  test("port 0 from the API is refused (an emptied wizard field); dry runs too", async () => {
    await using gw = await startGateway({ proxy: { port: freePort() } });
    for (const q of ["", "?dry_run=1"]) {
      const r = await put(gw, { proxy: { port: 0 } }, q);
      expect(r.status).toBe(400);
      expect((await r.json()).field).toBe("proxy.port");
    }
    const r = await put(gw, { cache: { enabled: true, port: 0 } });
    expect(r.status).toBe(400);
    expect((await r.json()).field).toBe("cache.port");
  }, 60_000);

  test("tls.upstream_ca that does not exist: 400 naming it, the running config stays; at start: exit 78 naming it", async () => {
    await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts });
    const missing = join(gw.dir, "no-such-ca.pem");
    const r = await put(gw, { tls: { upstream_ca: missing } });
    expect(r.status).toBe(400);
    const b = await r.json();
    expect(b.field).toBe("tls.upstream_ca");
    expect(b.error).toContain("does not exist");
    expect((await (await gw.admin("/api/config")).json()).tls.upstream_ca).toBe(null);
    expect(existsSync(join(gw.dir, "data", "agate.auto.toml"))).toBe(false);

    const file = join(gw.dir, "start.toml");
    writeFileSync(file, toToml({ gateway: { data_dir: join(gw.dir, "d2") }, proxy: { port: 0, listen: "127.0.0.1" }, admin: { port: 0 }, tls: { upstream_ca: missing } }));
    const s = await startExit(file);
    expect(s.code).toBe(78);
    expect(s.err).toContain("tls.upstream_ca");
  }, 60_000);

  test("a proxy port in use at start: exit 78 naming proxy.port", async () => {
    const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const dir = (await import("node:fs")).mkdtempSync(join((await import("node:os")).tmpdir(), "agate-busy-"));
      const file = join(dir, "a.toml");
      writeFileSync(file, toToml({ gateway: { data_dir: join(dir, "data") }, proxy: { port: holder.port, listen: "127.0.0.1" }, admin: { port: 0 } }));
      const s = await startExit(file);
      expect(s.code).toBe(78);
      expect(s.err).toContain("proxy.port");
    } finally {
      holder.stop(true);
    }
  }, 30_000);
});

describe("a new upstream proxy is tried first", () => {
  test("one that does not answer: 422 with the test's hop and reason, nothing changed; ?force=1 saves it and says it failed", async () => {
    await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts });
    const dead = freePort();
    const r = await put(gw, { upstream_proxy: { host: "127.0.0.1", port: dead } });
    expect(r.status).toBe(422);
    const b = await r.json();
    expect(b.field).toBe("upstream_proxy");
    expect(b.upstream_test).toMatchObject({ ok: false, hop: "tcp", via: `127.0.0.1:${dead}` });
    expect((await (await gw.admin("/api/config")).json()).upstream_proxy).toBe(null);
    expect(await tunnels(gw.ports.proxy)).toBe(true);
    const f = await put(gw, { upstream_proxy: { host: "127.0.0.1", port: dead } }, "?force=1");
    expect(f.status).toBe(200);
    const fb = await f.json();
    expect(fb.upstream_test.ok).toBe(false);
    expect(fb.config.upstream_proxy).toMatchObject({ host: "127.0.0.1", port: dead });
  }, 60_000);

  const noSquid = squidMissing();
  describe.skipIf(!!noSquid)("through squid", () => {
    let squid: Squid;
    beforeAll(async () => {
      squid = await startSquid(hosts);
    });
    afterAll(async () => {
      await squid?.stop();
    });
    test("one that works (squid, Basic): saved, and the answer says it reached the platform host", async () => {
      await using gw = await startGateway({ destinations: { ports: [origin.port] }, hosts, tls: { upstream_ca: pki.caPath } });
      const r = await put(gw, { upstream_proxy: { host: "127.0.0.1", port: squid.port, username: squid.user, password: squid.password } });
      const b = await r.json();
      expect(b.upstream_test).toMatchObject({ ok: true, host: HOST, via: `127.0.0.1:${squid.port}` });
      expect(r.status).toBe(200);
      expect(await tunnels(gw.ports.proxy)).toBe(true);
      // a wrong password: squid answers 407, refused
      const w = await put(gw, { upstream_proxy: { host: "127.0.0.1", port: squid.port, username: squid.user, password: "wrong-password" } });
      expect(w.status).toBe(422);
      expect((await w.json()).upstream_test).toMatchObject({ ok: false, hop: "upstream-proxy", status: 407 });
    }, 60_000);
  });
});

describe("the patch volume is a second disk", () => {
  test("a [patch] volume on data_dir's device is refused with 400 naming patch.volume and st_dev; one on another device (tmpfs) is applied", async () => {
    await using gw = await startGateway({ cache: { enabled: true, port: freePort() } });
    const same = join(gw.dir, "patch-vol");
    (await import("node:fs")).mkdirSync(same);
    const patch = (volume: string) => ({ patch: { enabled: true, volume, min_volume_bytes: 1, client_networks: ["127.0.0.0/8"] } });
    const r = await put(gw, patch(same));
    expect(r.status).toBe(400);
    const b = await r.json();
    expect(b.field).toBe("patch.volume");
    expect(b.error).toContain("same device");
    expect((await (await gw.admin("/api/config")).json()).patch.enabled).toBe(false);
    const fs = await import("node:fs");
    if (fs.statSync("/dev/shm").dev === fs.statSync(gw.dir).dev) return; // no second device on this machine
    const other = fs.mkdtempSync("/dev/shm/agate-patch-");
    try {
      const ok = await put(gw, patch(other));
      expect(ok.status).toBe(200);
      expect((await ok.json()).config.patch).toMatchObject({ enabled: true, volume: other });
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
  }, 60_000);
});
