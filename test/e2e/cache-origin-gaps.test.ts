/**
 * Issue 9's gaps, end to end with curl through the cache port to a raw TLS origin (test/peers/raw-origin.ts):
 * an origin that accepts and says nothing, or stops mid-head, fails the exchange after `cache.origin_timeout_s`
 * (1 s here) — 504 with the reason when nothing is stored, the stored response when stale-if-error allows it
 * (RFC 5861 §4 "times out"); and a 404 without freshness is kept for `cache.negative_ttl_s`, so 100 agents asking
 * for a missing file cost the origin one request (RFC 9111 §4.2.2, Squid's negative_ttl).
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
let origin: RawOrigin;
let gw: Gateway;
let ca: string;
/** the origin's mood for /manifest: answers, or accepts the request and stays silent */
let silent = false;

const asked = (path: string) => origin.requests.filter((r) => r.path === path);

beforeAll(async () => {
  origin = startRawOrigin(pki, {
    "/silent": () => ({ bytes: "" }), // accepts, reads the request, never answers
    "/half-head": () => ({ bytes: "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Le" }), // stalls mid-head
    "/manifest": () => (silent ? { bytes: "" } : { bytes: rawResponse(200, [["Cache-Control", "max-age=1"]], "last manifest") }),
    "/missing.cab": () => ({ bytes: rawResponse(404, [["Content-Type", "text/plain"]], "no such file") }),
  });
  gw = await startGateway({
    cache: { enabled: true, port: 0, listen: "127.0.0.1", origin_timeout_s: 1 },
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

async function get(path: string) {
  const r = await curl(["-s", "-i", "--suppress-connect-headers", "-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", ca, origin.url(HOST, path)]);
  const end = r.stdout.indexOf("\r\n\r\n");
  const [line, ...lines] = r.stdout.slice(0, end).split("\r\n");
  const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  return { code: r.code, status: Number(line?.split(" ")[1] ?? 0), h: (n: string) => headers.get(n), body: r.stdout.slice(end + 4) };
}

describe("origin response-head deadline (cache.origin_timeout_s)", () => {
  test("an origin that accepts and stays silent: 504 with the reason, and the access line says so", async () => {
    const r = await get("/silent");
    expect(r.status).toBe(504);
    expect(r.body).toContain("sent no response within 1s");
    expect(r.h("cache-status")).toContain("agate; fwd=uri-miss");
    expect(asked("/silent").length).toBe(1);
    const line = await gw.waitForLine((l) => l.msg === "access" && l.path === "/silent");
    expect(line).toMatchObject({ status: 504, phase: "miss", reason: "idle" });
  });

  test("an origin that stops mid-head: 504 too", async () => {
    const r = await get("/half-head");
    expect(r.status).toBe(504);
    expect(r.body).toContain("stopped after");
  });

  test("RFC 5861 §4: a stored platform object is served stale when its origin times out", async () => {
    expect((await get("/manifest")).body).toBe("last manifest");
    silent = true;
    // max-age=1: once stale, the revalidation meets the silent origin and the stored body answers
    const stale = await waitFor(async () => {
      const r = await get("/manifest");
      return r.h("cache-status")?.includes("detail=stale-if-error") && r;
    }, { timeoutMs: 20_000, what: "/manifest served stale with the origin silent", everyMs: 200 });
    expect([stale.status, stale.body]).toEqual([200, "last manifest"]);
    const line = await gw.waitForLine((l) => l.msg === "access" && l.path === "/manifest" && l.reason === "stale-if-error");
    expect(line.phase).toBe("stale");
  });
});

describe("negative answers (cache.negative_ttl_s, RFC 9111 §4.2.2)", () => {
  test("100 agents ask for a missing file: the origin sees one request while the 404 is fresh", async () => {
    const first = await get("/missing.cab");
    expect([first.status, first.body]).toEqual([404, "no such file"]);
    expect(first.h("cache-status")).toMatch(/stored; ttl=60$/);
    // 99 more agents, 20 at a time, after the first answer was stored
    const url = origin.url(HOST, "/missing.cab");
    const r = await curl(["-s", "-Z", "--parallel-max", "20", "-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", ca, "-w", "%{http_code}\\n", ...Array.from({ length: 99 }, () => ["-o", "/dev/null", url]).flat()], 60_000);
    expect(r.stdout.trim().split("\n").filter((c) => c === "404").length).toBe(99);
    expect(asked("/missing.cab").length).toBe(1);
    const hit = await get("/missing.cab");
    expect(hit.h("cache-status")).toMatch(/^agate; hit; ttl=\d+$/);
  });
});
