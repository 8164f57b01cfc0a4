/**
 * The admin's operations on the cache (issue 9), end to end with curl through the cache port against a TLS origin on
 * loopback: purge by url / host / prefix / all (then the origin is asked again), a stream in flight during a purge
 * finishes byte-exact, prefill of 3 URLs makes agents' requests hits with one download each, an agent's request
 * during a prefill joins its fill, usage in GET /api/cache, /api/stats and /metrics, bad bodies refused with the
 * field, and the store on the patch volume when one is configured (and back to data_dir on a config change).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { patternBytes, startTlsOrigin, type Origin } from "../peers/tls-origin";
import { ROOT, curl, startGateway, type Gateway } from "../peers/gateway";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const HOST2 = "camsrepo.qg1.apps.qualys.com";
const pki = makeTestPki([HOST, HOST2]);
const hosts = { [HOST]: "127.0.0.1", [HOST2]: "127.0.0.1" };
const BIG = patternBytes(6_000_000, 3);
let origin: Origin;
let openGate: () => void = () => {};
const gate = new Promise<void>((r) => (openGate = r));

beforeAll(() => {
  const obj = (body: string | Uint8Array) => () => new Response(body, { headers: { "cache-control": "max-age=600" } });
  origin = startTlsOrigin(pki, {
    "/dir/x": obj("x\n"),
    "/dir/y": obj("y\n"),
    "/other": obj("other\n"),
    "/h2": obj("on host 2\n"),
    "/big": obj(BIG),
    "/p1": obj(patternBytes(100_000, 1)),
    "/p2": obj(patternBytes(200_000, 2)),
    "/p3": obj(patternBytes(300_000, 3)),
    // the origin holds its answer until the test opens the gate: an agent's request arrives while the fill waits
    "/gated": async () => {
      await gate;
      return new Response(patternBytes(500_000, 9), { headers: { "cache-control": "max-age=600" } });
    },
    "/moved": obj("the same object, wherever the store lives\n"),
    "/cli-object": obj("from the CLI\n"),
  });
});
afterAll(() => origin?.stop());

const hits = (p: string) => origin.hits.get(p) ?? 0;

async function cacheGateway(extra: Record<string, Record<string, unknown>> = {}) {
  const gw = await startGateway({
    cache: { enabled: true, port: 0, listen: "127.0.0.1" },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports: [origin.port] },
    hosts,
    ...extra,
  });
  const ca = join(gw.dir, "agate-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
  return { gw, ca };
}

const post = (gw: Gateway, path: string, body: unknown) =>
  gw.admin(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

describe("cache operations", () => {
  let gw: Gateway;
  let ca: string;
  beforeAll(async () => {
    ({ gw, ca } = await cacheGateway());
  });
  afterAll(async () => {
    await gw?.stop();
  });
  const get = (path: string, extra: string[] = [], host = HOST) => curl(["-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", ca, ...extra, origin.url(host, path)]);

  test("purge by url, prefix, host and all: answered with objects and bytes; the origin is asked again", async () => {
    for (const p of ["/dir/x", "/dir/y", "/other"]) expect((await get(p)).code).toBe(0);
    expect((await get("/h2", [], HOST2)).stdout).toBe("on host 2\n");
    for (const p of ["/dir/x", "/dir/y", "/other", "/h2"]) expect(hits(p)).toBe(1);

    // one URL (HEAD and GET share its key): only it goes
    let r: any = await (await post(gw, "/api/cache/purge", { url: origin.url(HOST, "/dir/x") })).json();
    expect(r).toMatchObject({ objects: 1, bytes: 2 });
    expect((await get("/dir/x")).stdout).toBe("x\n");
    expect(hits("/dir/x")).toBe(2);
    expect((await get("/dir/y")).stdout).toBe("y\n");
    expect(hits("/dir/y")).toBe(1); // still a hit

    // a path prefix: both objects under /dir/, nothing else
    r = await (await post(gw, "/api/cache/purge", { prefix: origin.url(HOST, "/dir/") })).json();
    expect(r).toMatchObject({ objects: 2, bytes: 4 });
    await get("/dir/x");
    await get("/dir/y");
    await get("/other");
    expect([hits("/dir/x"), hits("/dir/y"), hits("/other")]).toEqual([3, 2, 1]);

    // a host: every object of HOST2, none of HOST
    r = await (await post(gw, "/api/cache/purge", { host: HOST2 })).json();
    expect(r).toMatchObject({ objects: 1, bytes: 10 });
    await get("/h2", [], HOST2);
    await get("/other");
    expect([hits("/h2"), hits("/other")]).toEqual([2, 1]);

    // everything: what GET /api/cache counted is what goes
    const before: any = await (await gw.admin("/api/cache")).json();
    expect(before.entries).toBeGreaterThanOrEqual(4);
    r = await (await post(gw, "/api/cache/purge", { all: true })).json();
    expect(r).toMatchObject({ objects: before.entries, bytes: before.bytes });
    const after: any = await (await gw.admin("/api/cache")).json();
    expect([after.entries, after.bytes]).toEqual([0, 0]);
    await get("/other");
    expect(hits("/other")).toBe(2);
  });

  test("a stream that is reading an object when it is purged finishes byte-exact; the next request refetches", async () => {
    const out1 = join(gw.dir, "big-1");
    expect((await get("/big", ["-o", out1])).code).toBe(0);
    expect(hits("/big")).toBe(1);
    // a slow agent (--limit-rate): the hit takes ~3 s, and the purge lands in the middle of it
    const out2 = join(gw.dir, "big-2");
    const slow = get("/big", ["--limit-rate", "2M", "-o", out2]);
    await waitFor(() => existsSync(out2) && statSync(out2).size > 0, { what: "the slow stream to start", everyMs: 20 });
    const r: any = await (await post(gw, "/api/cache/purge", { url: origin.url(HOST, "/big") })).json();
    expect(r).toMatchObject({ objects: 1, bytes: BIG.byteLength });
    expect(statSync(out2).size).toBeLessThan(BIG.byteLength); // the purge happened mid-stream
    expect((await slow).code).toBe(0);
    expect(Buffer.compare(readFileSync(out2), Buffer.from(BIG))).toBe(0);
    expect(hits("/big")).toBe(1); // the stream was a hit…
    const out3 = join(gw.dir, "big-3");
    await get("/big", ["-o", out3]);
    expect(hits("/big")).toBe(2); // …and after the purge the origin is asked again
    expect(Buffer.compare(readFileSync(out3), Buffer.from(BIG))).toBe(0);
  });

  test("prefill of 3 URLs: progress in the API, then agents' requests are hits; the origin saw one download each", async () => {
    const urls = ["/p1", "/p2", "/p3"].map((p) => origin.url(HOST, p));
    const res = await post(gw, "/api/cache/prefill", { urls });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as any;
    expect(typeof id).toBe("string");
    const job: any = await waitFor(
      async () => {
        const all: any = await (await gw.admin("/api/cache/prefill")).json();
        const j = all.jobs.find((x: any) => x.id === id);
        return j?.finished && j;
      },
      { what: "the prefill job to finish", everyMs: 50 },
    );
    expect(job).toMatchObject({ done: 3, failed: 0, bytes: 600_000 });
    expect(job.items.map((i: any) => [i.state, i.status, i.stored])).toEqual([["done", 200, true], ["done", 200, true], ["done", 200, true]]);
    for (const [i, p] of ["/p1", "/p2", "/p3"].entries()) {
      const f = join(gw.dir, `p${i}`);
      expect((await get(p, ["-o", f])).code).toBe(0);
      expect(Buffer.compare(readFileSync(f), Buffer.from(patternBytes((i + 1) * 100_000, i + 1)))).toBe(0);
    }
    expect([hits("/p1"), hits("/p2"), hits("/p3")]).toEqual([1, 1, 1]);
    // the agents' requests were hits, in the access log
    const lines = await waitFor(() => {
      const l = gw.lines().filter((x) => x.msg === "access" && ["/p1", "/p2", "/p3"].includes(x.path) && !String(x.client).startsWith("prefill"));
      return l.length === 3 && l;
    }, { what: "the agents' access lines" });
    expect(lines.map((l: any) => l.phase)).toEqual(["hit", "hit", "hit"]);
  });

  test("an agent's request during a prefill joins the prefill's fill: the origin sees one request", async () => {
    const res = await post(gw, "/api/cache/prefill", { urls: [origin.url(HOST, "/gated")] });
    expect(res.status).toBe(202);
    await waitFor(() => hits("/gated") === 1, { what: "the prefill's fill to reach the origin" });
    const before: any = await (await gw.admin("/api/stats")).json();
    const collapsed0 = before.totals.cache?.collapsed ?? 0;
    const f = join(gw.dir, "gated");
    const agent = get("/gated", ["-o", f]);
    // the agent's request is waiting on the fill (counted as collapsed) before the origin answers
    await waitFor(async () => ((await (await gw.admin("/api/stats")).json()) as any).totals.cache?.collapsed > collapsed0, {
      what: "the agent's request to join the fill",
      everyMs: 100,
    });
    openGate();
    expect((await agent).code).toBe(0);
    expect(Buffer.compare(readFileSync(f), Buffer.from(patternBytes(500_000, 9)))).toBe(0);
    expect(hits("/gated")).toBe(1);
  });

  test("usage: entries, bytes, capacity, evictions, largest and most served, hit ratio by host — API, stats, metrics", async () => {
    const u: any = await (await gw.admin("/api/cache")).json();
    expect(u.enabled).toBe(true);
    expect(u.location).toBe("data-dir");
    expect(u.dir).toBe(join(gw.dir, "data", "cache"));
    expect(u.entries).toBeGreaterThan(0);
    expect(u.capacity).toBeGreaterThan(u.bytes);
    expect(u.evictions).toEqual({ objects: 0, bytes: 0 });
    expect(u.largest[0].size).toBeGreaterThanOrEqual(u.largest.at(-1).size);
    expect(u.most_served.length).toBeGreaterThan(0);
    const h = await waitFor(async () => {
      const x: any = await (await gw.admin("/api/cache")).json();
      return x.by_host.find((r: any) => r.host === HOST && r.hits >= 3);
    }, { what: "the workers' per-host counts" });
    expect(h.hit_ratio).toBeGreaterThan(0);
    expect(h.hit_ratio).toBeLessThanOrEqual(1);
    const st: any = await (await gw.admin("/api/stats")).json();
    expect(st.cache_store).toMatchObject({ entries: u.entries, capacity: u.capacity });
    const m = await (await gw.admin("/metrics")).text();
    expect(m).toContain(`agate_cache_store_entries ${u.entries}`);
    expect(m).toMatch(new RegExp(`agate_cache_host_requests_total\\{host="${HOST.replace(/\./g, "\\.")}",result="hit"\\} \\d+`));
  });

  test("the CLI: agate cache prefill draws progress and ends with the job's result; cache purge; cache (usage)", async () => {
    const agate = async (args: string[]) => {
      const p = Bun.spawn([join(ROOT, "bin/agate"), "--url", `http://127.0.0.1:${gw.ports.admin}`, "--token", gw.token, ...args], { stdout: "pipe", stderr: "pipe" });
      const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { stdout, stderr, code };
    };
    const url = origin.url(HOST, "/cli-object");
    let r = await agate(["cache", "prefill", url]);
    expect([r.code, r.stderr]).toEqual([0, expect.stringContaining("[##############################] 1/1 done 1 failed 0")]);
    expect(r.stdout).toContain("1 done, 0 failed");
    expect(hits("/cli-object")).toBe(1);
    expect((await get("/cli-object")).stdout).toBe("from the CLI\n");
    expect(hits("/cli-object")).toBe(1); // the agent's request was a hit
    r = await agate(["cache"]);
    expect([r.code, r.stdout]).toEqual([0, expect.stringMatching(/entries\s+\d+/)]);
    expect(r.stdout).toContain(HOST);
    r = await agate(["cache", "purge", "url", url]);
    expect([r.code, r.stdout.trim()]).toEqual([0, "purged 1 object, 13 B"]);
    r = await agate(["cache", "purge", "everything"]);
    expect(r.code).toBe(2); // usage
    // a failed URL (the policy refuses the host) makes the command fail, and says why
    r = await agate(["cache", "prefill", "https://evil.example.test/x"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("refused by the policy");
  });

  test("bad bodies are refused with the field at fault", async () => {
    const cases: [string, unknown, string][] = [
      ["/api/cache/purge", {}, "body"],
      ["/api/cache/purge", { url: "ftp://x/y" }, "url"],
      ["/api/cache/purge", { host: "https://x/" }, "host"],
      ["/api/cache/purge", { all: "yes" }, "all"],
      ["/api/cache/purge", { url: origin.url(HOST, "/a"), host: HOST }, "body"],
      ["/api/cache/prefill", { urls: [] }, "urls"],
      ["/api/cache/prefill", { urls: ["not a url"] }, "urls[0]"],
    ];
    for (const [path, body, field] of cases) {
      const r = await post(gw, path, body);
      expect([path, JSON.stringify(body), r.status]).toEqual([path, JSON.stringify(body), 400]);
      expect(((await r.json()) as any).field).toBe(field);
    }
    expect((await gw.admin("/api/cache/purge")).status).toBe(405);
    expect((await gw.admin("/api/cache/prefill/nope")).status).toBe(404);
  });
});

test("with [patch] volume set, cache-mode objects live on the volume; removing it moves the store and keeps serving", async () => {
  const vol = mkdtempSync(join(tmpdir(), "agate-vol-"));
  const { gw, ca } = await cacheGateway({ patch: { volume: vol, min_volume_bytes: 1, allow_same_device: true } });
  try {
    const get = () => curl(["-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", ca, origin.url(HOST, "/moved")]);
    expect((await get()).stdout).toBe("the same object, wherever the store lives\n");
    expect((await get()).stdout).toBe("the same object, wherever the store lives\n");
    expect(hits("/moved")).toBe(1);
    let u: any = await (await gw.admin("/api/cache")).json();
    expect(u).toMatchObject({ location: "patch-volume", dir: join(vol, "agate-patch"), entries: 1 });
    expect(existsSync(join(vol, "agate-patch", "index.db"))).toBe(true);
    expect(existsSync(join(gw.dir, "data", "cache", "index.db"))).toBe(false);
    // one budget with patch files: patch mode's (patch-volume.ts patchBudget), within the volume
    expect(u.capacity).toBeGreaterThan(0);
    expect(u.capacity).toBeLessThanOrEqual(statfsSize(vol));

    // the volume goes away from the config: the store moves to data_dir, the object is refetched there
    gw.writeConfig({ cache: { enabled: true, port: gw.ports.cache }, tls: { upstream_ca: pki.caPath }, destinations: { ports: [origin.port] }, hosts });
    expect((await gw.admin("/api/reload", { method: "POST" })).status).toBe(200);
    u = await waitFor(async () => {
      const x: any = await (await gw.admin("/api/cache")).json();
      return x.location === "data-dir" && x;
    }, { what: "the store to move" });
    expect(u.dir).toBe(join(gw.dir, "data", "cache"));
    const r = await waitFor(async () => {
      const x = await get();
      return hits("/moved") === 2 && x;
    }, { what: "the object to be refetched into the new store", everyMs: 100 });
    expect(r.stdout).toBe("the same object, wherever the store lives\n");
    expect((await get()).stdout).toBe("the same object, wherever the store lives\n");
    expect(hits("/moved")).toBe(2); // stored again, in data_dir
    expect(((await (await gw.admin("/api/cache")).json()) as any).entries).toBe(1);
  } finally {
    await gw.stop();
  }
});

function statfsSize(p: string): number {
  const s = require("node:fs").statfsSync(p);
  return s.blocks * s.bsize;
}
