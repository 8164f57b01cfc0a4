/**
 * Patch mode end to end: a vendor's 1 GB file through the cache port (HTTPS and plain HTTP), fetched by 3 agents
 * one after the other and by 20 at once for about one copy from the origin; byte ranges byte-exact across slice
 * boundaries; bounded RSS while serving; an origin that changes its ETag mid-way never yields a mixed file; agents
 * only; a too-small volume refused with the reason; kill -9 during a fill, then a restart, serves a correct file.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { type RangeOrigin, sha256OfPattern, startRangeOrigin, writePatternFile } from "../peers/range-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { rawExchange } from "../peers/fake-client";
import { waitFor } from "../peers/helpers";

const VENDOR = "download.windowsupdate.example";
const pki = makeTestPki([VENDOR]);
const hosts = { [VENDOR]: "127.0.0.1" };
const SLICE = 4 * 1024 * 1024;
const GB = 1024 * 1024 * 1024;

let work: string;
let https: RangeOrigin;
let http: RangeOrigin;
let bigSha: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "agate-patch-"));
  writePatternFile(join(work, "big.bin"), GB);
  bigSha = await sha256OfPattern(GB);
  https = startRangeOrigin(pki);
  http = startRangeOrigin(null);
  for (const o of [https, http]) o.setFile("/kb/cumulative.msu", join(work, "big.bin"), '"kb-v1"');
}, 120_000);
afterAll(() => {
  https?.stop();
  http?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

function patchConfig(volume: string, extra: Record<string, unknown> = {}) {
  return {
    cache: { enabled: true, port: 0, listen: "127.0.0.1" },
    patch: { enabled: true, volume, min_volume_bytes: 1, allow_same_device: true, client_networks: ["127.0.0.0/8"], slice_bytes: SLICE, ...extra },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports: [https.port, http.port] },
    hosts,
  };
}

async function withCa(gw: Gateway) {
  const ca = join(gw.dir, "agate-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
  return ca;
}

/** Download through the gateway; returns status, size and SHA-256 of the body, streamed (no file). */
async function fetchThrough(gw: Gateway, ca: string, url: string, extra: string[] = []) {
  const p = Bun.spawn(["curl", "-sS", "--max-time", "120", "-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", ca, "--suppress-connect-headers", "-D", "-", ...extra, url], { stdout: "pipe", stderr: "pipe" });
  const h = new Bun.CryptoHasher("sha256");
  let head = "";
  let inBody = false;
  let size = 0;
  let pending = Buffer.alloc(0);
  for await (const chunk of p.stdout) {
    if (inBody) {
      h.update(chunk);
      size += chunk.byteLength;
      continue;
    }
    pending = Buffer.concat([pending, Buffer.from(chunk)]);
    const i = pending.indexOf("\r\n\r\n");
    if (i >= 0) {
      head = pending.subarray(0, i).toString("latin1");
      const rest = pending.subarray(i + 4);
      h.update(rest);
      size += rest.byteLength;
      inBody = true;
    }
  }
  const code = await p.exited;
  const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0);
  return { code, status, size, sha: h.digest("hex"), head, stderr: await new Response(p.stderr).text() };
}

function rssKb(pid: number) {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
}

describe("a 1 GB patch", () => {
  let gw: Gateway;
  let ca: string;
  beforeAll(async () => {
    const vol = join(work, "vol-main");
    mkdirSync(vol);
    gw = await startGateway(patchConfig(vol));
    ca = await withCa(gw);
  });
  afterAll(async () => {
    await gw?.stop();
  });

  test("3 agents one after the other (HTTPS) cost the origin one copy; RSS stays bounded while serving", async () => {
    const before = https.bytesSent();
    const first = await fetchThrough(gw, ca, https.url(VENDOR, "/kb/cumulative.msu"));
    expect(first.status).toBe(200);
    expect(first.size).toBe(GB);
    expect(first.sha).toBe(bigSha);
    const pid = gw.proc.pid;
    const base = rssKb(pid);
    let peak = base;
    const t = setInterval(() => (peak = Math.max(peak, rssKb(pid))), 50);
    for (let i = 0; i < 2; i++) {
      const r = await fetchThrough(gw, ca, https.url(VENDOR, "/kb/cumulative.msu"));
      expect(r.size).toBe(GB);
      expect(r.sha).toBe(bigSha);
    }
    clearInterval(t);
    const originBytes = https.bytesSent() - before;
    expect(originBytes).toBeGreaterThanOrEqual(GB);
    expect(originBytes).toBeLessThan(GB * 1.01);
    // serving 2 GB from the store grows RSS by far less than one copy of the file
    expect(peak - base).toBeLessThan(256 * 1024);
  }, 180_000);

  test("20 agents at once (plain HTTP) cost the origin about one copy", async () => {
    const before = http.bytesSent();
    const url = http.url(VENDOR, "/kb/cumulative.msu");
    const r = await curl(["-x", `http://127.0.0.1:${gw.ports.cache}`, "-Z", "--parallel-max", "20", "-w", "%{http_code} %{size_download}\n", ...Array.from({ length: 20 }, () => [url, "-o", "/dev/null"]).flat()], 300_000);
    const lines = r.stdout.trim().split("\n");
    expect(lines.length).toBe(20);
    expect(lines.every((l) => l === `200 ${GB}`)).toBe(true);
    const originBytes = http.bytesSent() - before;
    expect(originBytes).toBeGreaterThanOrEqual(GB);
    expect(originBytes).toBeLessThan(GB * 1.05);
  }, 300_000);

  test.each([
    ["start", "0-999", 0, 1000],
    ["middle across a slice boundary", `${SLICE - 500}-${SLICE + 499}`, SLICE - 500, 1000],
    ["several slices", `${3 * SLICE + 7}-${6 * SLICE + 11}`, 3 * SLICE + 7, 3 * SLICE + 5],
    ["suffix -N", "-5000", GB - 5000, 5000],
    ["open-ended", `${GB - 3 * SLICE - 1}-`, GB - 3 * SLICE - 1, 3 * SLICE + 1],
  ])("range %s is byte-exact against the origin (206)", async (_n, spec, start, len) => {
    const r = await fetchThrough(gw, ca, https.url(VENDOR, "/kb/cumulative.msu"), ["-r", spec]);
    expect(r.status).toBe(206);
    expect(r.head).toMatch(new RegExp(`content-range: bytes ${start}-${start + len - 1}/${GB}`, "i"));
    expect(r.size).toBe(len);
    expect(r.sha).toBe(await sha256OfPattern(len, start));
  });

  test("If-Range with another validator gets the whole object, not the range", async () => {
    const r = await fetchThrough(gw, ca, https.url(VENDOR, "/kb/cumulative.msu"), ["-r", "0-9", "-H", 'If-Range: "kb-v0"', "-o", "/dev/null"]);
    expect(r.status).toBe(200);
  }, 60_000);
});

describe("a range of an object not cached yet", () => {
  test("is fetched without downloading the whole file first", async () => {
    const vol = join(work, "vol-range");
    mkdirSync(vol);
    await using gw = await startGateway(patchConfig(vol));
    const ca = await withCa(gw);
    https.setFile("/kb/other.msu", join(work, "big.bin"), '"other-v1"');
    const before = https.bytesSent();
    const start = 700 * 1024 * 1024 + 3;
    const r = await fetchThrough(gw, ca, https.url(VENDOR, "/kb/other.msu"), ["-r", `${start}-${start + 99_999}`]);
    expect(r.status).toBe(206);
    expect(r.sha).toBe(await sha256OfPattern(100_000, start));
    expect(https.bytesSent() - before).toBeLessThanOrEqual(2 * SLICE + 1); // one or two slices, not 1 GB
  });
});

describe("an origin that changes its file mid-way", () => {
  test("never produces a mixed file: the old slices are dropped", async () => {
    const vol = join(work, "vol-change");
    mkdirSync(vol);
    const size = 40 * SLICE;
    const v1 = join(work, "v1.bin"), v2 = join(work, "v2.bin");
    writePatternFile(v1, size, 0);
    writePatternFile(v2, size, 13);
    https.setFile("/app/installer.exe", v1, '"inst-1"');
    https.throttle.set("/app/installer.exe", 20);
    await using gw = await startGateway(patchConfig(vol));
    try {
      const ca = await withCa(gw);
      const sent0 = https.bytesSent();
      const pending = fetchThrough(gw, ca, https.url(VENDOR, "/app/installer.exe"));
      // some slices in (a quarter of the 40), then the origin changes the file
      await waitFor(() => https.bytesSent() - sent0 >= 10 * SLICE, { timeoutMs: 30_000, what: "10 slices from the origin" });
      https.setFile("/app/installer.exe", v2, '"inst-2"');
      const r = await pending;
      const old = await sha256OfPattern(size, 0, 0);
      const neu = await sha256OfPattern(size, 0, 13);
      // Either the agent's download was cut (it retries) or it is one whole version: never a mix.
      if (r.size === size) expect([old, neu]).toContain(r.sha);
      else expect(r.code).not.toBe(0);
      https.throttle.delete("/app/installer.exe");
      const again = await fetchThrough(gw, ca, https.url(VENDOR, "/app/installer.exe"));
      expect(again.size).toBe(size);
      expect(again.sha).toBe(neu);
    } finally {
      https.throttle.delete("/app/installer.exe");
    }
  }, 120_000);
});

describe("who may use it", () => {
  test("a client outside client_networks gets 403, a User-Agent that is not an agent too", async () => {
    const vol = join(work, "vol-clients");
    mkdirSync(vol);
    {
      await using gw = await startGateway(patchConfig(vol, { client_networks: ["10.0.0.0/8"] }));
      const raw = await rawExchange(gw.ports.cache!, `CONNECT ${VENDOR}:${https.port} HTTP/1.1\r\n\r\n`);
      expect(raw).toStartWith("HTTP/1.1 403 ");
      const plain = await rawExchange(gw.ports.cache!, `GET http://${VENDOR}:${http.port}/kb/cumulative.msu HTTP/1.1\r\nHost: ${VENDOR}\r\n\r\n`);
      expect(plain).toStartWith("HTTP/1.1 403 ");
      // the proxy port's rules do not change
      const p = await rawExchange(gw.ports.proxy, `CONNECT ${VENDOR}:${https.port} HTTP/1.1\r\n\r\n`);
      expect(p).toContain("not an allowed domain");
    }
    const vol2 = join(work, "vol-ua");
    mkdirSync(vol2);
    {
      await using g2 = await startGateway(patchConfig(vol2, { agent_user_agents: ["QualysAgent/*"] }));
      const denied = await rawExchange(g2.ports.cache!, `CONNECT ${VENDOR}:${https.port} HTTP/1.1\r\nUser-Agent: curl/8\r\n\r\n`);
      expect(denied).toStartWith("HTTP/1.1 403 ");
      const ok = await rawExchange(g2.ports.cache!, `CONNECT ${VENDOR}:${https.port} HTTP/1.1\r\nUser-Agent: QualysAgent/6.1\r\n\r\n`, { waitMs: 500 });
      expect(ok).toStartWith("HTTP/1.1 200 ");
    }
  });

  test("patch mode on a too-small volume is refused with the rule and the sizes; cache mode keeps working", async () => {
    const vol = join(work, "vol-small");
    mkdirSync(vol);
    await using gw = await startGateway(patchConfig(vol, { min_volume_bytes: 10 ** 15 }));
    const line = await gw.waitForLine((l) => l.msg === "patch mode not enabled");
    expect(line.reason).toContain(`patch.volume ${vol} is`);
    expect(line.reason).toContain("below patch.min_volume_bytes");
    const h = await (await fetch(`http://127.0.0.1:${gw.ports.admin}/healthz`)).json();
    expect(h.health).toBe("Degraded");
    expect(h.reasons.join(" ")).toContain("patch mode refused");
    // not an open proxy: a vendor host is refused as in cache mode
    const raw = await rawExchange(gw.ports.cache!, `CONNECT ${VENDOR}:${https.port} HTTP/1.1\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 403 ");
  });
});

describe("durability", () => {
  test("kill -9 during a fill, then a restart, serves a correct file", async () => {
    const vol = join(work, "vol-crash");
    mkdirSync(vol);
    const size = 24 * SLICE + 777;
    const f = join(work, "crash.bin");
    writePatternFile(f, size, 99);
    https.setFile("/crash/update.cab", f, '"crash-1"');
    https.throttle.set("/crash/update.cab", 15);
    const dir = mkdtempSync(join(tmpdir(), "agate-gw-crash-"));
    {
      await using gw = await startGateway(patchConfig(vol), { dir });
      const ca = await withCa(gw);
      const sent0 = https.bytesSent();
      const pending = fetchThrough(gw, ca, https.url(VENDOR, "/crash/update.cab"));
      // mid-fill: a third of the 24 slices have left the origin
      await waitFor(() => https.bytesSent() - sent0 >= 8 * SLICE, { timeoutMs: 30_000, what: "8 slices from the origin" });
      gw.proc.kill("SIGKILL");
      await gw.proc.exited;
      await pending;
      https.throttle.delete("/crash/update.cab");
    }
    {
      await using g2 = await startGateway(patchConfig(vol), { dir });
      const ca2 = await withCa(g2);
      const r = await fetchThrough(g2, ca2, https.url(VENDOR, "/crash/update.cab"));
      expect(r.size).toBe(size);
      expect(r.sha).toBe(await sha256OfPattern(size, 0, 99));
      const again = await fetchThrough(g2, ca2, https.url(VENDOR, "/crash/update.cab"));
      expect(again.sha).toBe(r.sha);
    }

    // A slice corrupted on disk is caught before its bytes go out, dropped, and fetched again.
    const blobs: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) e.isDirectory() ? walk(join(d, e.name)) : blobs.push(join(d, e.name));
    };
    walk(join(vol, "agate-patch", "blobs"));
    const victim = blobs.find((b) => statSync(b).size === SLICE)!;
    const bytes = readFileSync(victim);
    bytes[4321] ^= 0x5a;
    writeFileSync(victim, bytes);
    {
      await using g3 = await startGateway(patchConfig(vol), { dir });
      const ca3 = await withCa(g3);
      const before = https.bytesSent();
      const cut = await fetchThrough(g3, ca3, https.url(VENDOR, "/crash/update.cab"));
      expect(cut.size === size && cut.sha === (await sha256OfPattern(size, 0, 99))).toBe(false); // never a silently wrong file…
      expect(cut.size).toBeLessThan(size); // …the download was cut instead
      const fixed = await fetchThrough(g3, ca3, https.url(VENDOR, "/crash/update.cab"));
      expect(fixed.size).toBe(size);
      expect(fixed.sha).toBe(await sha256OfPattern(size, 0, 99));
      expect(https.bytesSent() - before).toBe(SLICE); // exactly the one bad slice again
    }
  }, 180_000);
});
