/**
 * Cache mode end to end with curl through the cache port: hits, one upstream fetch for 200 concurrent first
 * requests across workers, revalidation with 304, no-store, Vary, HEAD from GET, agents' conditionals,
 * only-if-cached, invalidation, restart persistence, a corrupted blob refetched, an allowed domain never cached.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { patternBytes, startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, reportedStats, startGateway, type Gateway } from "../peers/gateway";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const MS = "download.microsoft.com";
const pki = makeTestPki([HOST, MS]);
const hosts = { [HOST]: "127.0.0.1", [MS]: "127.0.0.1" };
let origin: Origin;
let version = 1;

const MANIFEST = patternBytes(2_000_000);

beforeAll(() => {
  origin = startTlsOrigin(pki, {
    "/manifest": () => new Response(MANIFEST, { headers: { "cache-control": "max-age=600", etag: '"m1"' } }),
    "/slow-manifest": async () => {
      await Bun.sleep(2000); // the scenario: a slow origin, so the first requests arrive while the one fill is still waiting
      return new Response(patternBytes(1_000_000), { headers: { "cache-control": "max-age=600" } });
    },
    "/short-lived": (req) => {
      const inm = req.headers.get("if-none-match");
      // max-age=2: ages are whole seconds and Date has a 1 s grain, so 1 s could already be stale on arrival
      if (inm === `"v${version}"`) return new Response(null, { status: 304, headers: { etag: `"v${version}"`, "cache-control": "max-age=2", "x-revalidated": "yes" } });
      return new Response(`version ${version}\n`, { headers: { "cache-control": "max-age=2", etag: `"v${version}"` } });
    },
    "/always-revalidate": (req) =>
      req.headers.get("if-none-match") === '"ar1"'
        ? new Response(null, { status: 304, headers: { etag: '"ar1"', "cache-control": "max-age=0, must-revalidate" } })
        : new Response("big manifest\n".repeat(1000), { headers: { etag: '"ar1"', "cache-control": "max-age=0, must-revalidate" } }),
    "/no-store": () => new Response("secret\n", { headers: { "cache-control": "no-store" } }),
    "/vary": (req) => new Response(`lang ${req.headers.get("accept-language")}\n`, { headers: { "cache-control": "max-age=600", vary: "Accept-Language" } }),
    "/head-me": () => new Response("0123456789", { headers: { "cache-control": "max-age=600", etag: '"h"' } }),
    "/invalidate-me": () => new Response(`fresh ${Date.now()}\n`, { headers: { "cache-control": "max-age=600" } }),
    "/corrupt-me": () => new Response(patternBytes(300_000, 5), { headers: { "cache-control": "max-age=600" } }),
  });
});
afterAll(() => origin?.stop());

type CacheGateway = { gw: Gateway; ca: string; [Symbol.asyncDispose]: () => Promise<void> };

/** A gateway in cache mode and its CA file; `await using` stops it. */
async function cacheGateway(dir?: string): Promise<CacheGateway> {
  const gw = await startGateway(
    {
      cache: { enabled: true, port: 0, listen: "127.0.0.1", allowed_domains: ["microsoft.com"] },
      tls: { upstream_ca: pki.caPath },
      destinations: { ports: [origin.port] },
      hosts,
    },
    dir ? { dir } : {},
  );
  const ca = join(gw.dir, "agate-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
  return { gw, ca, [Symbol.asyncDispose]: () => gw[Symbol.asyncDispose]() };
}

const hits = (p: string) => origin.hits.get(p) ?? 0;

describe("a running cache", () => {
  let gw: Gateway;
  let ca: string;
  beforeAll(async () => {
    ({ gw, ca } = await cacheGateway());
  });
  afterAll(async () => {
    await gw?.stop();
  });
  // Each curl here opens exactly one tunnel; the count tells when the workers' reports cover them all.
  let tunnels = 0;
  const through = (args: string[]) => (tunnels++, curl(["-x", `http://127.0.0.1:${gw.ports.cache}`, ...args]));
  const get = (path: string, extra: string[] = [], host = HOST) => through(["--cacert", ca, ...extra, origin.url(host, path)]);
  /** GET `path` until the origin sees one more request for it than `before` (the entry went stale), bounded. */
  const getUntilOriginAsked = (path: string, before: number) =>
    waitFor(
      async () => {
        const r = await get(path);
        return origin.requests.filter((q) => q.path === path).length > before && r;
      },
      { timeoutMs: 10_000, what: `${path} to go stale and reach the origin`, everyMs: 200 },
    );

  test("a second request is a hit: the origin saw one request, the bytes are identical", async () => {
    const f1 = join(gw.dir, "m1"), f2 = join(gw.dir, "m2");
    await get("/manifest", ["-o", f1]);
    await get("/manifest", ["-o", f2]);
    expect(hits("/manifest")).toBe(1);
    expect(Buffer.compare(readFileSync(f1), Buffer.from(MANIFEST))).toBe(0);
    expect(Buffer.compare(readFileSync(f2), Buffer.from(MANIFEST))).toBe(0);
  });

  test("200 concurrent first requests, spread over the workers, cost the origin one request", async () => {
    // A gateway of its own: its counters hold these 200 requests only (curl may reuse tunnels, so count requests).
    await using own = await cacheGateway();
    const urls = Array.from({ length: 200 }, () => origin.url(HOST, "/slow-manifest"));
    const r = await curl(["-x", `http://127.0.0.1:${own.gw.ports.cache}`, "--cacert", own.ca, "-Z", "--parallel-max", "200", "-w", "%{http_code} %{size_download}\n", ...urls.flatMap((u) => [u, "-o", "/dev/null"])], 60_000);
    const lines = r.stdout.trim().split("\n");
    expect(lines.length).toBe(200);
    expect(lines.every((l) => l === "200 1000000")).toBe(true);
    expect(hits("/slow-manifest")).toBe(1);
    // Workers report their counters about once a second: wait until the reports account for all 200.
    const st = await waitFor(
      async () => {
        const now: any = await (await own.gw.admin("/api/stats")).json();
        const c = now.totals.cache;
        return c && c.hits + c.misses + c.collapsed >= 200 && now;
      },
      { what: "stats covering the 200 requests", everyMs: 100 },
    );
    const perWorker = st.workers.map((w: any) => (w.counters?.cache?.collapsed ?? 0) + (w.counters?.cache?.misses ?? 0));
    expect(perWorker.filter((n: number) => n > 0).length).toBe(2); // both workers took part
    // most of them waited on the one fill rather than finding it done (the origin held the answer for 2 s)
    expect(st.totals.cache.collapsed).toBeGreaterThan(100);
  });

  test("a stale entry revalidates with If-None-Match and the origin's 304 freshens it", async () => {
    version = 1;
    expect((await get("/short-lived")).stdout).toBe("version 1\n");
    // Past max-age=2 the next request goes to the origin; until then each request is a hit (instead of sleeping 3 s).
    const before = origin.requests.filter((r) => r.path === "/short-lived").length;
    expect((await getUntilOriginAsked("/short-lived", before)).stdout).toBe("version 1\n");
    const reqs = origin.requests.filter((r) => r.path === "/short-lived");
    expect(reqs.length).toBe(before + 1);
    expect(reqs.at(-1)!.headers["if-none-match"]).toBe('"v1"');
    // a changed object after it goes stale again is fetched whole
    version = 2;
    expect((await getUntilOriginAsked("/short-lived", before + 1)).stdout).toBe("version 2\n");
  });

  test("max-age=0, must-revalidate: every request costs one conditional request and a 304, not a download", async () => {
    expect((await get("/always-revalidate")).stdout.length).toBe(13_000);
    for (let i = 0; i < 3; i++) expect((await get("/always-revalidate")).stdout.length).toBe(13_000);
    const reqs = origin.requests.filter((r) => r.path === "/always-revalidate");
    expect(reqs.length).toBe(4);
    expect(reqs.slice(1).every((r) => r.headers["if-none-match"] === '"ar1"')).toBe(true);
  });

  test("no-store is never stored", async () => {
    await get("/no-store");
    await get("/no-store");
    expect(hits("/no-store")).toBe(2);
  });

  test("Vary: each Accept-Language is its own entry", async () => {
    expect((await get("/vary", ["-H", "Accept-Language: de"])).stdout).toBe("lang de\n");
    expect((await get("/vary", ["-H", "Accept-Language: fr"])).stdout).toBe("lang fr\n");
    expect((await get("/vary", ["-H", "Accept-Language: de"])).stdout).toBe("lang de\n");
    expect(hits("/vary")).toBe(2);
  });

  test("HEAD is served from a stored GET; an agent's If-None-Match gets 304 from the cache", async () => {
    await get("/head-me");
    const head = await get("/head-me", ["-I"]);
    expect(head.stdout).toMatch(/content-length: 10/i);
    const cond = await get("/head-me", ["-H", 'If-None-Match: "h"', "-w", "%{http_code}", "-o", "/dev/null"]);
    expect(cond.stdout).toBe("304");
    expect(hits("/head-me")).toBe(1);
  });

  test("only-if-cached: 504 for what is not stored", async () => {
    const r = await get("/never-fetched", ["-H", "Cache-Control: only-if-cached", "-w", "%{http_code}", "-o", "/dev/null"]);
    expect(r.stdout).toBe("504");
    expect(hits("/never-fetched")).toBe(0);
  });

  test("a POST to a URL invalidates its stored GET (RFC 9111 §4.4)", async () => {
    const a = (await get("/invalidate-me")).stdout;
    expect((await get("/invalidate-me")).stdout).toBe(a);
    await get("/invalidate-me", ["--data-binary", "x"]);
    await get("/invalidate-me");
    expect(hits("/invalidate-me")).toBe(3); // GET, POST, GET again
  });

  test("an allowed domain passes through and is never cached", async () => {
    await through(["--cacert", pki.caPath, origin.url(MS, "/manifest")]);
    const before = hits("/manifest");
    await through(["--cacert", pki.caPath, origin.url(MS, "/manifest")]);
    expect(hits("/manifest")).toBe(before + 1);
  });

  test("the supervisor's stats count hits, misses, collapsed waiters and savings", async () => {
    const st = await reportedStats(gw, { tunnels });
    const c = st.totals.cache;
    expect(c.hits).toBeGreaterThan(3);
    expect(c.misses).toBeGreaterThan(5);
    expect(c.bytes_served).toBeGreaterThan(c.bytes_fetched);
    expect(st.active_agents_60m).toBe(1);
    // per object: the 2 MB manifest was fetched once and served more than once
    const m = st.cache_objects.find((o: any) => o.url.endsWith("/manifest") && o.url.includes(HOST));
    expect(m.bytes_fetched).toBe(2_000_000);
    expect(m.hits).toBeGreaterThan(0);
    const h = await (await fetch(`http://127.0.0.1:${gw.ports.admin}/healthz`)).json();
    expect(h.cache.savings).toBe(c.bytes_served - c.bytes_fetched);
  });
});

describe("the store across restarts", () => {
  test("a restart keeps the entries; a blob corrupted on disk is detected and refetched", async () => {
    await using first = await cacheGateway();
    const dir = first.gw.dir;
    const get = (g: { gw: Gateway; ca: string }, path: string, out: string) =>
      curl(["-x", `http://127.0.0.1:${g.gw.ports.cache}`, "--cacert", g.ca, "-o", out, origin.url(HOST, path)]);
    await get(first, "/manifest", join(dir, "a"));
    await get(first, "/corrupt-me", join(dir, "b"));
    const m0 = hits("/manifest"), c0 = hits("/corrupt-me");
    await first.gw.stop(); // stopped here, for the restart; disposing it again at the end is a no-op

    // Flip one byte of the /corrupt-me blob (the 300,000-byte one).
    const blobs: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) e.isDirectory() ? walk(join(d, e.name)) : blobs.push(join(d, e.name));
    };
    walk(join(dir, "data", "cache", "blobs"));
    const victim = blobs.find((b) => statSync(b).size === 300_000)!;
    expect(victim).toBeDefined();
    const bytes = readFileSync(victim);
    bytes[1234] ^= 0xff;
    writeFileSync(victim, bytes);

    await using second = await cacheGateway(dir);
    await get(second, "/manifest", join(dir, "a2"));
    expect(hits("/manifest")).toBe(m0); // kept across the restart
    expect(Buffer.compare(readFileSync(join(dir, "a2")), Buffer.from(MANIFEST))).toBe(0);
    await get(second, "/corrupt-me", join(dir, "b2"));
    expect(hits("/corrupt-me")).toBe(c0 + 1); // detected, refetched
    expect(Buffer.compare(readFileSync(join(dir, "b2")), Buffer.from(patternBytes(300_000, 5)))).toBe(0);
    await get(second, "/corrupt-me", join(dir, "b3"));
    expect(hits("/corrupt-me")).toBe(c0 + 1); // and stored again
  });
});
