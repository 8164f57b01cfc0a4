/**
 * Issue 9 end to end: curl through the cache port of a started gateway to a raw TLS origin (test/peers/raw-origin.ts)
 * that sends Age, odd Cache-Control, an unknown status, 103 Early Hints, a body cut short, and goes down. Checks
 * what a real agent sees: Age (RFC 9111 §5.1), Cache-Status (RFC 9211), 206 from the store and from the one fill
 * (RFC 9110 §14), interim responses in order (§15.2), stale-while-revalidate and stale-if-error (RFC 5861), and
 * that a truncated body is never stored.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { type RawOrigin, rawResponse, startRawOrigin } from "../peers/raw-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com"; // a platform domain: [cache] stale_if_error_s applies
const pki = makeTestPki([HOST]);
const MANIFEST = "m".repeat(1024);
const BLOB = "0123456789abcdefghijklmnopqrstuvwxyz";
let origin: RawOrigin;
let gw: Gateway;
let ca: string;

const asked = (path: string) => origin.requests.filter((r) => r.path === path);

beforeAll(async () => {
  origin = startRawOrigin(pki, {
    "/manifest": () => ({ bytes: rawResponse(200, [["Date", new Date().toUTCString()], ["Age", "7200"], ["Cache-Control", "max-age=10800"]], MANIFEST) }),
    "/odd-status": () => ({ bytes: rawResponse(299, [["Cache-Control", "max-age=600"]], "two-nine-nine") }),
    "/odd-cc": () => ({ bytes: rawResponse(200, [["Cache-Control", "max-age=1.5"]], "not fresh by it") }),
    "/hints": () => ({ bytes: rawResponse(200, [["Cache-Control", "max-age=600"]], "hinted", ["HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"]) }),
    "/blob": () => ({ bytes: rawResponse(200, [["Cache-Control", "max-age=600"], ["ETag", '"b1"']], BLOB) }),
    "/short": () => ({ bytes: `HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 100\r\n\r\n${"x".repeat(50)}`, close: true }),
    "/short-chunked": () => ({ bytes: `HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`, close: true }),
    "/swr": (q) =>
      q.headers["if-none-match"] === '"s1"'
        ? { bytes: rawResponse(304, [["Cache-Control", "max-age=1, stale-while-revalidate=600"], ["ETag", '"s1"'], ["Content-Length", "0"]]) }
        : { bytes: rawResponse(200, [["Cache-Control", "max-age=1, stale-while-revalidate=600"], ["ETag", '"s1"']], "swr body") },
    "/sie": () => ({ bytes: rawResponse(200, [["Cache-Control", "max-age=1, stale-if-error=600"]], "kept through the outage") }),
    "/must": () => ({ bytes: rawResponse(200, [["Cache-Control", "max-age=1, must-revalidate"]], "must revalidate") }),
  });
  gw = await startGateway({
    cache: { enabled: true, port: 0, listen: "127.0.0.1" },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports: [origin.port] },
    hosts: { [HOST]: "127.0.0.1" },
  });
  ca = join(gw.dir, "agate-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
});
afterAll(async () => {
  await gw?.stop();
  origin?.stop();
});

/** curl -i through the cache port: every head (interim ones too) and the body. */
async function get(path: string, extra: string[] = []) {
  const r = await curl(["-i", "--suppress-connect-headers", "-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", ca, ...extra, origin.url(HOST, path)]);
  const heads: { status: number; headers: Map<string, string> }[] = [];
  let rest = r.stdout;
  for (let i = 0; i < 10 && /^HTTP\/1\.1 \d{3}/.test(rest); i++) {
    const end = rest.indexOf("\r\n\r\n");
    const [line, ...lines] = rest.slice(0, end).split("\r\n");
    heads.push({ status: Number(line!.split(" ")[1]), headers: new Map(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()])) });
    rest = rest.slice(end + 4);
  }
  const last = heads[heads.length - 1];
  return { code: r.code, stderr: r.stderr, heads, status: last?.status ?? 0, h: (n: string) => last?.headers.get(n), body: rest };
}

describe("RFC 9111 / 9211 / 5861 through the cache port", () => {
  test("§5.1: the origin's Age is kept — on the first, forwarded response and on hits; Cache-Status says what happened", async () => {
    const first = await get("/manifest");
    expect([first.status, first.body.length]).toEqual([200, 1024]);
    expect(Number(first.h("age"))).toBeGreaterThanOrEqual(7200);
    expect(first.h("cache-status")).toMatch(/^agate; fwd=uri-miss; fwd-status=200; stored; ttl=\d+$/);
    const hit = await get("/manifest");
    expect(Number(hit.h("age"))).toBeGreaterThanOrEqual(7200);
    expect(hit.h("cache-status")).toMatch(/^agate; hit; ttl=(3[0-9]{3})$/);
    expect(asked("/manifest").length).toBe(1);
  });

  test("§3: an unknown status with max-age is stored and served; an invalid max-age is not fresh by it", async () => {
    await get("/odd-status");
    const again = await get("/odd-status");
    expect([again.status, again.body, asked("/odd-status").length]).toEqual([299, "two-nine-nine", 1]);
    expect(again.h("cache-status")).toStartWith("agate; hit");
    await get("/odd-cc");
    const cc = await get("/odd-cc");
    expect(cc.h("cache-status")).toStartWith("agate; fwd=");
    expect(asked("/odd-cc").length).toBe(2);
  });

  test("RFC 9110 §15.2: 103 Early Hints reach curl before the 200, and are not replayed from the store", async () => {
    const r = await get("/hints");
    expect(r.heads.map((h) => h.status)).toEqual([103, 200]);
    expect(r.heads[0]!.headers.get("link")).toBe("</s.css>; rel=preload");
    expect(r.body).toBe("hinted");
    const hit = await get("/hints");
    expect(hit.heads.map((h) => h.status)).toEqual([200]);
  });

  test("RFC 9110 §14: a Range on a miss fills the whole object once; later ranges come from the store; 416 past the end", async () => {
    const first = await get("/blob", ["-r", "10-19"]);
    expect([first.status, first.h("content-range"), first.body]).toEqual([206, "bytes 10-19/36", BLOB.slice(10, 20)]);
    expect(asked("/blob")[0]!.headers.range).toBeUndefined();
    const suffix = await get("/blob", ["-r", "-6"]);
    expect([suffix.status, suffix.h("content-range"), suffix.body]).toEqual([206, "bytes 30-35/36", BLOB.slice(30)]);
    const bad = await get("/blob", ["-H", "Range: bytes=99-"]);
    expect([bad.status, bad.h("content-range")]).toEqual([416, "bytes */36"]);
    const ifRange = await get("/blob", ["-r", "0-1", "-H", 'If-Range: "other"']);
    expect([ifRange.status, ifRange.body]).toEqual([200, BLOB]);
    expect(asked("/blob").length).toBe(1);
  });

  test("a body cut short (Content-Length, chunked without its last chunk) is never stored; curl sees the cut", async () => {
    for (const p of ["/short", "/short-chunked"]) {
      const r = await get(p);
      expect(r.code).not.toBe(0); // curl: (18) transfer closed with outstanding read data remaining
      await get(p);
      expect(asked(p).length).toBe(2);
    }
  });

  test("RFC 5861 §3: stale-while-revalidate serves the stored body and revalidates behind it", async () => {
    await get("/swr");
    const stale = await waitFor(async () => {
      const r = await get("/swr");
      return r.h("cache-status")?.includes("detail=stale-while-revalidate") && r;
    }, { timeoutMs: 10_000, what: "/swr to be served stale", everyMs: 200 });
    expect(stale.body).toBe("swr body");
    await waitFor(() => asked("/swr").some((q) => q.headers["if-none-match"] === '"s1"'), { timeoutMs: 5_000, what: "the background revalidation" });
  });

  test("RFC 5861 §4: with the origin down, stale-if-error serves the stored body; must-revalidate gets an error", async () => {
    await get("/sie");
    await get("/must");
    origin.stop();
    const stale = await waitFor(async () => {
      const r = await get("/sie");
      return r.h("cache-status")?.includes("detail=stale-if-error") && r;
    }, { timeoutMs: 10_000, what: "/sie served stale with the origin down", everyMs: 200 });
    expect([stale.status, stale.body]).toEqual([200, "kept through the outage"]);
    const must = await waitFor(async () => {
      const r = await get("/must");
      return r.status >= 500 && r;
    }, { timeoutMs: 10_000, what: "/must to fail once stale", everyMs: 200 });
    expect(must.h("cache-status")).toContain("agate; fwd=stale");
    const line = await gw.waitForLine((l) => l.msg === "access" && l.path === "/sie" && l.reason === "stale-if-error");
    expect(line).toMatchObject({ phase: "stale", cacheStatus: expect.stringContaining("detail=stale-if-error") });
  });
});
