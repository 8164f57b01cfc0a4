/**
 * @module Faults injected into fills, against a started gateway in cache mode (issue 12): an origin that resets
 * mid-body for each framing (Content-Length, chunked, close-delimited) and each transport (a plain forward on the
 * cache port, HTTPS inside an intercepted session); kill -9 of the gateway during a fill and a restart on the same
 * data directory; a stored blob corrupted on disk; a full disk on a small tmpfs (root only, the suite runs as root in
 * CI). The agent never gets a complete-looking response for a broken fill, nothing half is stored, and every byte an
 * agent receives as complete is compared with the origin's (the corrupt-serve count must be 0).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, openSync, writeSync, closeSync, readSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";
import { makeTestPki } from "../peers/test-ca";
import { patternBytes, startTlsOrigin } from "../peers/tls-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { waitFor } from "../peers/helpers";
import { startRawOrigin, type RawOrigin } from "../peers/slow-client";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const BODY = patternBytes(300_000);
const BODY_SHA = new Bun.CryptoHasher("sha256").update(BODY).digest("hex");
const sha = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");
const work = mkdtempSync(join(tmpdir(), "agate-faults-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Figures for the report: faults injected, complete-looking downloads, and those whose bytes were wrong. */
const figures = { faults: 0, completeDownloads: 0, corruptServes: 0 };
afterAll(() => console.log(`fill faults: ${figures.faults} injected, ${figures.completeDownloads} complete downloads checked byte for byte, ${figures.corruptServes} corrupt serves`));

type Framing = "content-length" | "chunked" | "close-delimited";
const FRAMINGS: Framing[] = ["content-length", "chunked", "close-delimited"];

/** The whole answer for `framing`, or (cut) its head and the first 64 KB of the body, after which the origin resets. */
function answer(s: Socket<{ buf: string }>, framing: Framing, cut: boolean) {
  const cc = "Cache-Control: max-age=600\r\n";
  const part = cut ? BODY.subarray(0, 64 * 1024) : BODY;
  if (framing === "content-length") {
    s.write(`HTTP/1.1 200 OK\r\n${cc}Content-Length: ${BODY.byteLength}\r\n\r\n`);
    s.write(part);
  } else if (framing === "chunked") {
    s.write(`HTTP/1.1 200 OK\r\n${cc}Transfer-Encoding: chunked\r\n\r\n`);
    for (let off = 0; off < part.byteLength; off += 16 * 1024) {
      const c = part.subarray(off, off + 16 * 1024);
      s.write(`${c.byteLength.toString(16)}\r\n`);
      s.write(c);
      s.write("\r\n");
    }
    if (!cut) s.write("0\r\n\r\n");
  } else {
    s.write(`HTTP/1.1 200 OK\r\n${cc}Connection: close\r\n\r\n`);
    s.write(part);
  }
  // the origin's fault: a reset (RST) once its bytes are out, instead of the rest; a whole close-delimited body ends with a FIN
  if (cut) setTimeout(() => s.terminate(), 50);
  else if (framing === "close-delimited") s.end();
}

/** An origin whose first answer to each path is cut, and every later one whole. */
function faultyOrigin(framing: Framing, useTls: boolean): RawOrigin {
  const seen = new Map<string, number>();
  return startRawOrigin((s, head) => {
    const path = head.split(" ")[1]!;
    const n = (seen.get(path) ?? 0) + 1;
    seen.set(path, n);
    if (n === 1) figures.faults++;
    answer(s, framing, n === 1);
  }, useTls ? pki : undefined);
}

async function cacheGateway(ports: number[], dir?: string): Promise<{ gw: Gateway; ca: string; [Symbol.asyncDispose]: () => Promise<void> }> {
  const gw = await startGateway(
    {
      gateway: { workers: 1 },
      cache: { enabled: true, port: 0, listen: "127.0.0.1" },
      tls: { upstream_ca: pki.caPath },
      destinations: { ports },
      hosts: { [HOST]: "127.0.0.1" },
    },
    dir ? { dir } : {},
  );
  const ca = join(gw.dir, "agate-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
  return { gw, ca, [Symbol.asyncDispose]: () => gw[Symbol.asyncDispose]() };
}

let downloads = 0;
/** One agent download through the cache port: curl's exit code, the status, and the bytes it kept. */
async function fetchVia(g: { gw: Gateway; ca: string }, url: string, timeoutMs = 30_000) {
  const out = join(work, `dl-${downloads++}`);
  const r = await curl(["-o", out, "-w", "%{http_code}", "--cacert", g.ca, "-x", `http://127.0.0.1:${g.gw.ports.cache}`, url], timeoutMs);
  const bytes = (() => {
    try {
      return new Uint8Array(readFileSync(out));
    } catch {
      return new Uint8Array(0);
    }
  })();
  rmSync(out, { force: true });
  if (r.code === 0) {
    // curl saw a complete response: its bytes must be the origin's
    figures.completeDownloads++;
    if (sha(bytes) !== BODY_SHA) figures.corruptServes++;
  }
  return { code: r.code, status: r.stdout, size: bytes.byteLength, sha: sha(bytes) };
}

/** Every published blob's name is the SHA-256 of its bytes (nothing half or altered is stored). */
function blobsOf(dataDir: string): { name: string; ok: boolean; size: number }[] {
  const root = join(dataDir, "cache", "blobs");
  const out: { name: string; ok: boolean; size: number }[] = [];
  let fans: string[] = [];
  try {
    fans = readdirSync(root);
  } catch {
    return out;
  }
  for (const fan of fans) for (const name of readdirSync(join(root, fan))) {
    const b = new Uint8Array(readFileSync(join(root, fan, name)));
    out.push({ name, ok: sha(b) === name, size: b.byteLength });
  }
  return out;
}

/** Flip 16 bytes at `at` in place (same size, same name: only the hash can tell). */
function flipBytes(path: string, at: number) {
  const fd = openSync(path, "r+");
  const buf = new Uint8Array(16);
  readSync(fd, buf, 0, 16, at);
  writeSync(fd, buf.map((x) => x ^ 0xff), 0, 16, at);
  closeSync(fd);
}

describe("an origin reset mid-body: for each framing and transport, a failed fill", () => {
  for (const useTls of [false, true]) {
    for (const framing of FRAMINGS) {
      test(`${useTls ? "HTTPS inside an intercepted session" : "plain forward on the cache port"}, ${framing}: the agent's transfer is incomplete, nothing is stored, the next agent gets the whole object`, async () => {
        const origin = faultyOrigin(framing, useTls);
        try {
          await using g = await cacheGateway([origin.port]);
          const url = `${useTls ? "https" : "http"}://${HOST}:${origin.port}/obj-${framing}`;
          const first = await fetchVia(g, url);
          // curl 18 (partial file) or 56 (receive failure): the response did not look complete
          expect({ ok: first.code === 0, short: first.size < BODY.byteLength }).toEqual({ ok: false, short: true });
          const second = await fetchVia(g, url);
          expect(second).toMatchObject({ code: 0, status: "200", size: BODY.byteLength, sha: BODY_SHA });
          expect(origin.requests()).toBe(2); // the half object was not stored
          const third = await fetchVia(g, url);
          expect(third).toMatchObject({ code: 0, status: "200", sha: BODY_SHA });
          const access = await waitFor(() => {
            const a = g.gw.lines().filter((l) => l.msg === "access" && l.path === `/obj-${framing}`);
            return a.length >= 3 && a;
          }, { what: "three access lines" });
          expect(access[0].reason).toBe("failed");
          expect(blobsOf(join(g.gw.dir, "data")).every((b) => b.ok)).toBe(true);
        } finally {
          origin.stop();
        }
      }, 60_000);
    }
  }
});

describe("kill -9 during a fill, then a restart on the same data directory", () => {
  test("the store recovers, the object is refetched whole, no half object is served or stored", async () => {
    const dir = mkdtempSync(join(work, "kill-"));
    let stalled: Socket<{ buf: string }> | null = null;
    let n = 0;
    const origin = startRawOrigin((s) => {
      if (++n === 1) {
        // the first answer stops after 64 KB and holds the connection: the fill is in flight when the gateway dies
        figures.faults++;
        s.write(`HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: ${BODY.byteLength}\r\n\r\n`);
        s.write(BODY.subarray(0, 64 * 1024));
        stalled = s;
      } else answer(s, "content-length", false);
    }, pki);
    try {
      const url = `https://${HOST}:${origin.port}/killed`;
      {
        const g = await cacheGateway([origin.port], dir);
        const pending = fetchVia(g, url);
        const tmp = join(dir, "data", "cache", "tmp");
        // the fill is writing: its temp file holds the first 64 KB
        await waitFor(() => readdirSync(tmp).some((f) => statSync(join(tmp, f)).size >= 64 * 1024), { what: "a fill's temp file with 64 KB", timeoutMs: 15_000 });
        g.gw.proc.kill("SIGKILL");
        expect(await g.gw.proc.exited).not.toBe(0);
        const cut = await pending;
        expect({ ok: cut.code === 0, short: cut.size < BODY.byteLength }).toEqual({ ok: false, short: true });
        (stalled as Socket<{ buf: string }> | null)?.terminate();
      }
      await using g = await cacheGateway([origin.port], dir);
      const again = await fetchVia(g, url);
      expect(again).toMatchObject({ code: 0, status: "200", size: BODY.byteLength, sha: BODY_SHA });
      expect(n).toBe(2);
      const hit = await fetchVia(g, url);
      expect(hit).toMatchObject({ code: 0, sha: BODY_SHA });
      expect(n).toBe(2); // the whole object was stored after the restart, and served from the cache
      const blobs = blobsOf(join(dir, "data"));
      expect(blobs.map((b) => ({ ok: b.ok, size: b.size }))).toEqual([{ ok: true, size: BODY.byteLength }]);
    } finally {
      origin.stop();
    }
  }, 90_000);
});

describe("a blob corrupted on disk", () => {
  test("bytes flipped in the stored file while the gateway is stopped: detected at the first hit, dropped, refetched whole", async () => {
    const dir = mkdtempSync(join(work, "corrupt-"));
    const origin = startTlsOrigin(pki, { "/obj": () => new Response(BODY, { headers: { "cache-control": "max-age=600" } }) });
    try {
      const url = origin.url(HOST, "/obj");
      {
        await using g = await cacheGateway([origin.port], dir);
        expect(await fetchVia(g, url)).toMatchObject({ code: 0, sha: BODY_SHA });
        expect(await fetchVia(g, url)).toMatchObject({ code: 0, sha: BODY_SHA });
        expect(origin.hits.get("/obj")).toBe(1);
      }
      const [blob] = blobsOf(join(dir, "data"));
      expect(blob).toMatchObject({ name: BODY_SHA, ok: true });
      // flip 16 bytes in the middle, in place (same size, so only the hash can tell)
      const path = join(dir, "data", "cache", "blobs", BODY_SHA.slice(0, 2), BODY_SHA);
      flipBytes(path, 150_000);
      figures.faults++;
      expect(blobsOf(join(dir, "data"))[0]!.ok).toBe(false);
      await using g = await cacheGateway([origin.port], dir);
      const after = await fetchVia(g, url);
      expect(after).toMatchObject({ code: 0, status: "200", size: BODY.byteLength, sha: BODY_SHA });
      expect(origin.hits.get("/obj")).toBe(2); // refetched, not served from the corrupt file
      expect(await fetchVia(g, url)).toMatchObject({ code: 0, sha: BODY_SHA });
      expect(origin.hits.get("/obj")).toBe(2);
      expect(blobsOf(join(dir, "data")).map((b) => b.ok)).toEqual([true]);
    } finally {
      origin.stop();
    }
  }, 90_000);
});

describe("a blob corrupted on disk while the gateway runs", () => {
  test("bytes written into the stored file after it was served: the next hit sees the file changed, checks it, drops it and refetches", async () => {
    const dir = mkdtempSync(join(work, "live-"));
    const origin = startTlsOrigin(pki, { "/live": () => new Response(BODY, { headers: { "cache-control": "max-age=600" } }) });
    try {
      await using g = await cacheGateway([origin.port], dir);
      const url = origin.url(HOST, "/live");
      expect(await fetchVia(g, url)).toMatchObject({ code: 0, sha: BODY_SHA }); // the fill
      expect(await fetchVia(g, url)).toMatchObject({ code: 0, sha: BODY_SHA }); // a hit: the blob is mapped now
      expect(origin.hits.get("/live")).toBe(1);
      flipBytes(join(dir, "data", "cache", "blobs", BODY_SHA.slice(0, 2), BODY_SHA), 150_000);
      figures.faults++;
      // before the fix this hit served the flipped bytes from the mapping (the blob counted as checked for the process)
      expect(await fetchVia(g, url)).toMatchObject({ code: 0, status: "200", size: BODY.byteLength, sha: BODY_SHA });
      expect(origin.hits.get("/live")).toBe(2);
      expect(await fetchVia(g, url)).toMatchObject({ code: 0, sha: BODY_SHA });
      expect(origin.hits.get("/live")).toBe(2); // the refetched object is stored and served again
      expect(blobsOf(join(dir, "data")).map((b) => b.ok)).toEqual([true]);
    } finally {
      origin.stop();
    }
  }, 90_000);
});

describe("a full cache disk (a 64 MB tmpfs)", () => {
  const MB = 1 << 20;
  // The mount needs root (CI runs the suite as root); elsewhere the test says why it did not run.
  const why = process.getuid?.() === 0 ? null : "not root: cannot mount a 64 MB tmpfs";
  if (why) console.log(`skipping the full-disk test: ${why}`);
  test.skipIf(why !== null)("an object larger than the free space is delivered whole and not stored; later objects are served; the gateway says the disk is full", async () => {
    const dir = mkdtempSync(join(work, "full-"));
    const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dir]);
    expect(mount.exitCode).toBe(0);
    const BIG = patternBytes(80 * MB);
    const bigSha = sha(BIG);
    const origin = startTlsOrigin(pki, {
      "/big": () => new Response(BIG, { headers: { "cache-control": "max-age=600" } }),
      "/small": () => new Response(BODY, { headers: { "cache-control": "max-age=600" } }),
    });
    try {
      await using g = await cacheGateway([origin.port], dir);
      const get = async (path: string) => {
        const out = join(work, `full-dl-${downloads++}`);
        const r = await curl(["-o", out, "-w", "%{http_code}", "--cacert", g.ca, "-x", `http://127.0.0.1:${g.gw.ports.cache}`, origin.url(HOST, path)], 60_000);
        const b = new Uint8Array(readFileSync(out));
        rmSync(out, { force: true });
        return { code: r.code, status: r.stdout, size: b.byteLength, sha: sha(b) };
      };
      figures.faults++;
      figures.completeDownloads += 2;
      expect(await get("/big")).toEqual({ code: 0, status: "200", size: BIG.byteLength, sha: bigSha });
      expect(await get("/big")).toEqual({ code: 0, status: "200", size: BIG.byteLength, sha: bigSha });
      // passed through, not stored: each download came from the origin (the first one's fill is given up at the
      // origin's head, when its Content-Length shows it cannot fit, and that agent is then passed through: 3 requests)
      expect(origin.hits.get("/big")).toBeGreaterThanOrEqual(2);
      for (let i = 0; i < 2; i++) {
        // later objects are still served whole (passed through while the disk cannot take the big one)
        const small = await get("/small");
        expect(small).toEqual({ code: 0, status: "200", size: BODY.byteLength, sha: BODY_SHA });
        figures.completeDownloads++;
      }
      const phases = await waitFor(() => {
        const a = g.gw.lines().filter((l) => l.msg === "access" && (l.path === "/big" || l.path === "/small"));
        return a.length >= 4 && a.map((l) => l.phase);
      }, { what: "four access lines" });
      expect(phases).toEqual(["bypass:no-space", "bypass:no-space", "bypass:no-space", "bypass:no-space"]);
      expect(g.gw.lines().some((l) => l.msg === "cache disk full: objects are passed through and not stored until space returns")).toBe(true);
      // nothing half-written is left on the small disk
      expect(readdirSync(join(dir, "data", "cache", "tmp"))).toEqual([]);
      expect(blobsOf(join(dir, "data")).every((b) => b.ok)).toBe(true);
      // health says so (core/health.ts; the workers report their no-space state about once a second)
      const status: any = await waitFor(async () => {
        const st: any = await (await g.gw.admin("/api/status")).json();
        return st.reasons.some((r: string) => r.startsWith("the cache disk is full")) && st;
      }, { what: "a 'cache disk is full' reason in /api/status" });
      expect(status.health).toBe("Degraded");
      console.log(`full disk: /api/status health ${status.health}, reasons ${JSON.stringify(status.reasons)}`);
    } finally {
      origin.stop();
      Bun.spawnSync(["umount", "-l", dir]);
    }
  }, 180_000);
});
