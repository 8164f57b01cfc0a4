/**
 * The cache port's access log and two defects of issue 8, end to end with curl through a started gateway:
 * - every request on the cache port leaves exactly one "access" line (hit/miss, status, exact bytes), and the
 *   admin Logs search (GET /api/logs?q=PATH) finds one line per request for an object's path;
 * - a URL containing "fallback", "revalidated" or "superseded" behaves like any other URL: cached with one origin
 *   fetch, and when the origin fails, one fetch and a 502 (fill outcomes used to travel as error text matched with
 *   regexes, so such a URL took the "look again" or "fall back" branch and fetched again), in patch mode too.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { patternBytes, startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const VENDOR = "patch.vendor.example";
const hosts = { [HOST]: "127.0.0.1", [VENDOR]: "127.0.0.1" };
const WORDS = ["fallback", "revalidated", "superseded"];
const BODY = patternBytes(100_000);

let origin: Origin;

/**
 * A plain-http origin that counts requests per path: paths containing "/fails/" get their connection closed without
 * an answer (a fill that fails before its head); others get a cacheable 200. `Connection: close` keeps the gateway
 * from pooling connections, so each request is one connection and the counts are exact.
 */
type RawOrigin = { port: number; hits: Map<string, number>; stop: () => void };
function startRawOrigin(): RawOrigin {
  const hits = new Map<string, number>();
  const server: TCPSocketListener<{ buf: string }> = Bun.listen<{ buf: string }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { buf: "" };
      },
      data(s: Socket<{ buf: string }>, d) {
        s.data.buf += Buffer.from(d).toString("latin1");
        if (!s.data.buf.includes("\r\n\r\n")) return;
        const path = s.data.buf.split(" ")[1] ?? "";
        hits.set(path, (hits.get(path) ?? 0) + 1);
        if (path.includes("/fails/")) return void s.end();
        const body = `object ${path}\n`;
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nCache-Control: max-age=600\r\nConnection: close\r\n\r\n${body}`);
        s.end();
      },
    },
  });
  return { port: server.port, hits, stop: () => server.stop(true) };
}

let raw: RawOrigin;

beforeAll(() => {
  origin = startTlsOrigin(pki, {
    "/logged/object.bin": () => new Response(BODY, { headers: { "cache-control": "max-age=600", etag: '"o1"' } }),
  });
  raw = startRawOrigin();
});
afterAll(() => {
  origin?.stop();
  raw?.stop();
});

async function cacheGateway(extra: Record<string, Record<string, unknown>> = {}) {
  const gw = await startGateway({
    cache: { enabled: true, port: 0, listen: "127.0.0.1" },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports: [origin.port, raw.port] },
    hosts,
    ...extra,
  });
  const ca = join(gw.dir, "agate-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
  return { gw, ca, [Symbol.asyncDispose]: () => gw[Symbol.asyncDispose]() };
}

const accessLines = (gw: Gateway, path: string) => gw.lines().filter((l) => l.msg === "access" && l.path === path);

describe("the access log", () => {
  test("one access line per request, miss then hit, with exact bytes; the Logs search finds one line per request", async () => {
    await using g = await cacheGateway();
    const { gw, ca } = g;
    const url = `https://${HOST}:${origin.port}/logged/object.bin`;
    for (let i = 0; i < 3; i++) {
      const r = await curl(["-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", ca, "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url]);
      expect(r.stdout).toBe(`200 ${BODY.byteLength}`);
    }
    const lines = await waitFor(() => accessLines(gw, "/logged/object.bin").length >= 3 && accessLines(gw, "/logged/object.bin"), { what: "3 access lines" });
    // two workers batch their lines separately: the order in which they arrive is not the order of the requests
    expect(lines.map((l) => [l.phase, l.status, l.host]).sort()).toEqual([
      ["hit", 200, HOST],
      ["hit", 200, HOST],
      ["miss", 200, HOST],
    ]);
    for (const l of lines) {
      expect(l.bytesOut).toBeGreaterThan(BODY.byteLength); // the body and its head, towards the agent
      expect(l.bytesIn).toBeGreaterThan(0);
      expect(typeof l.reqId).toBe("string");
    }
    expect(new Set(lines.map((l) => l.reqId)).size).toBe(3);
    expect(origin.hits.get("/logged/object.bin")).toBe(1);
    // the management port's Logs search: one line per request for the object's path
    const found: any = await waitFor(
      async () => {
        const j: any = await (await gw.admin(`/api/logs?q=${encodeURIComponent("/logged/object.bin")}`)).json();
        return j.items.length >= 3 && j;
      },
      { what: "the log search to find 3 lines" },
    );
    expect(found.items.length).toBe(3);
    expect(found.items.map((l: any) => l.phase).sort()).toEqual(["hit", "hit", "miss"]);
  });
});

describe("URLs that contain the words of fill outcomes", () => {
  test.each(WORDS)("a URL containing %p is cached like any other (one origin fetch, then hits)", async (word) => {
    await using g = await cacheGateway();
    const path = `/ok/${word}/pkg-${word}.cab`;
    for (let i = 0; i < 2; i++) {
      const r = await curl(["-x", `http://127.0.0.1:${g.gw.ports.cache}`, "-w", " %{http_code}", `http://${HOST}:${raw.port}${path}`]);
      expect(r.stdout).toBe(`object ${path}\n 200`);
    }
    expect(raw.hits.get(path)).toBe(1);
    const lines = await waitFor(() => accessLines(g.gw, path).length >= 2 && accessLines(g.gw, path), { what: "2 access lines" });
    // two workers batch their lines separately: the order in which they arrive is not the order of the requests
    expect(lines.map((l) => l.phase).sort()).toEqual(["hit", "miss"]);
  });

  test("a failing origin: a URL with those words costs one fetch and a 502, like a plain URL", async () => {
    await using g = await cacheGateway();
    for (const name of ["plain", ...WORDS]) {
      const path = `/fails/${name}/object-${name}.bin`;
      const r = await curl(["-x", `http://127.0.0.1:${g.gw.ports.cache}`, "-o", "/dev/null", "-w", "%{http_code}", `http://${HOST}:${raw.port}${path}`]);
      expect({ name, status: r.stdout, fetches: raw.hits.get(path) }).toEqual({ name, status: "502", fetches: 1 });
    }
  });

  test("patch mode: a failing origin costs one metadata fetch for a URL containing \"fallback\", as for a plain URL", async () => {
    const volume = mkdtempSync(join(tmpdir(), "agate-access-patch-"));
    await using g = await cacheGateway({ patch: { enabled: true, volume, min_volume_bytes: 1, allow_same_device: true, client_networks: ["127.0.0.0/8"] } });
    for (const name of ["plain", ...WORDS]) {
      const path = `/fails/patch-${name}/update-${name}.msu`;
      const r = await curl(["-x", `http://127.0.0.1:${g.gw.ports.cache}`, "-o", "/dev/null", "-w", "%{http_code}", `http://${VENDOR}:${raw.port}${path}`]);
      expect({ name, status: r.stdout, fetches: raw.hits.get(path) }).toEqual({ name, status: "502", fetches: 1 });
    }
    const patchLines = () => g.gw.lines().filter((l) => l.msg === "access" && String(l.path).startsWith("/fails/patch-"));
    const lines = await waitFor(() => patchLines().length >= 4 && patchLines(), { what: "4 access lines" });
    // the patch path answered (its metadata fetch failed), not the whole-object path after a false "fallback"
    expect(lines.map((l) => [l.status, l.phase, l.reason])).toEqual(Array(4).fill([502, "miss", "PX_UPSTREAM_UNREACHABLE"]));
    rmSync(volume, { recursive: true, force: true });
  });
});
