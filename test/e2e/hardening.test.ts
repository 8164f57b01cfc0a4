/**
 * @module Issue 12's defects end to end, against a started gateway in cache mode and raw origins on 127.0.0.1:
 * chunked-trailer smuggling (plain and inside TLS), a silent CONNECT closed after `proxy.handshake_timeout_s`,
 * a slow head inside TLS answered 408, a reset mid-body stores nothing and cuts the agent, two Host fields 400
 * and not logged as a tunnel, and the admin door that no token-less client can lock.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import tls from "node:tls";
import net from "node:net";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket, TCPSocketListener } from "bun";
import { makeTestPki } from "../peers/test-ca";
import { patternBytes, startTlsOrigin } from "../peers/tls-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { openTunnel, rawExchange } from "../peers/fake-client";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);

/** A raw HTTP/1.1 origin: records every byte it received and answers with `answer` (which may reset the socket). */
type RawOrigin = { port: number; received: () => string; requests: () => number; stop: () => void };
function startRawOrigin(answer: (s: Socket<{ buf: string }>, req: string) => void, useTls = false): RawOrigin {
  let all = "";
  let requests = 0;
  const l: TCPSocketListener<{ buf: string }> = Bun.listen<{ buf: string }>({
    hostname: "127.0.0.1",
    port: 0,
    ...(useTls ? { tls: { cert: pki.certPem, key: pki.keyPem } } : {}),
    socket: {
      open(s) {
        s.data = { buf: "" };
      },
      data(s, d) {
        const t = Buffer.from(d).toString("latin1");
        all += t;
        s.data.buf += t;
        // one answer per request head seen (bodies of the scripts here are tiny)
        let i;
        while ((i = s.data.buf.indexOf("\r\n\r\n")) >= 0) {
          const head = s.data.buf.slice(0, i);
          s.data.buf = s.data.buf.slice(i + 4);
          if (!/^[A-Z]+ \S+ HTTP\/1\.[01]/.test(head)) continue; // trailer or body bytes
          requests++;
          answer(s, head);
        }
      },
    },
  });
  return { port: l.port, received: () => all, requests: () => requests, stop: () => l.stop(true) };
}

const SMUGGLE = (port: number, abs: boolean) =>
  `POST ${abs ? `http://${HOST}:${port}` : ""}/x HTTP/1.1\r\nHost: ${HOST}${abs ? `:${port}` : ""}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n` +
  `GET ${abs ? `http://${HOST}:${port}` : ""}/smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;

async function cacheGateway(ports: number[], proxy: Record<string, unknown> = {}, dir?: string, workers?: number): Promise<{ gw: Gateway; ca: string; [Symbol.asyncDispose]: () => Promise<void> }> {
  const gw = await startGateway(
    {
      ...(workers ? { gateway: { workers } } : {}),
      cache: { enabled: true, port: 0, listen: "127.0.0.1" },
      tls: { upstream_ca: pki.caPath },
      destinations: { ports },
      hosts: { [HOST]: "127.0.0.1" },
      proxy,
    },
    dir ? { dir } : {},
  );
  const ca = join(gw.dir, "agate-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
  return { gw, ca, [Symbol.asyncDispose]: () => gw[Symbol.asyncDispose]() };
}

/** A TLS client inside a CONNECT through the cache port (the gateway's leaf, verified against its CA). */
async function tlsThrough(cachePort: number, ca: string, authority: string): Promise<tls.TLSSocket> {
  const raw = net.connect(cachePort, "127.0.0.1");
  await new Promise<void>((r, j) => (raw.once("connect", () => r()), raw.once("error", j)));
  raw.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  let head = "";
  await new Promise<void>((r) => {
    const on = (d: Buffer) => {
      head += d.toString("latin1");
      if (head.includes("\r\n\r\n")) (raw.off("data", on), r());
    };
    raw.on("data", on);
  });
  expect(head).toStartWith("HTTP/1.1 200");
  const t = tls.connect({ socket: raw, servername: HOST, ca: Bun.file(ca).size ? await Bun.file(ca).text() : undefined });
  await new Promise<void>((r, j) => (t.once("secureConnect", () => r()), t.once("error", j)));
  return t;
}

const collect = (t: tls.TLSSocket) => {
  let got = "";
  let closed = false;
  t.on("data", (d: Buffer) => (got += d.toString("latin1")));
  t.on("close", () => (closed = true));
  t.on("error", () => {});
  return { text: () => got, closed: () => closed };
};

describe("defect 1: chunked trailers ended by a bare LF", () => {
  let origin: RawOrigin;
  let tlsOrigin: RawOrigin;
  beforeAll(() => {
    origin = startRawOrigin((s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    tlsOrigin = startRawOrigin((s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), true);
  });
  afterAll(() => (origin.stop(), tlsOrigin.stop()));

  test("plain forward and inside TLS: 400, and the origin never sees the smuggled request", async () => {
    await using g = await cacheGateway([origin.port, tlsOrigin.port]);
    const plain = await rawExchange(g.gw.ports.cache!, SMUGGLE(origin.port, true));
    expect(plain).toContain(" 400 ");
    const t = await tlsThrough(g.gw.ports.cache!, g.ca, `${HOST}:${tlsOrigin.port}`);
    const c = collect(t);
    t.write(SMUGGLE(tlsOrigin.port, false));
    await waitFor(() => c.closed() || c.text().includes(" 400 "), { what: "the answer inside TLS" });
    expect(c.text()).toContain(" 400 ");
    t.destroy();
    expect({ plain: origin.received().includes("/smuggled"), tls: tlsOrigin.received().includes("/smuggled") }).toEqual({ plain: false, tls: false });
  }, 60_000);
});

describe("defects 2 and 3: silent and slow clients", () => {
  test("a CONNECT answered 200 whose agent never starts TLS is closed after handshake_timeout_s", async () => {
    await using g = await cacheGateway([443], { handshake_timeout_s: 1 });
    const tun = await openTunnel(g.gw.ports.cache!, `${HOST}:443`);
    expect(tun.head).toStartWith("HTTP/1.1 200");
    // bounded (openTunnel's `closed` is false after 10 s): before the fix it stayed open for idle_timeout_s (3,600 s)
    expect(await tun.closed).toBe(true);
    const line = await g.gw.waitForLine((l) => l.msg === "tunnel" && l.end === "handshake-timeout");
    expect(line.port).toBe("cache");
  }, 60_000);

  test("a finished handshake is not cut by the handshake deadline: the agent may send its request later", async () => {
    const origin = startRawOrigin((s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), true);
    try {
      // One worker: its sweep judges both connections below.
      await using g = await cacheGateway([origin.port], { handshake_timeout_s: 1, head_timeout_s: 30 }, undefined, 1);
      const t = await tlsThrough(g.gw.ports.cache!, g.ca, `${HOST}:${origin.port}`);
      const c = collect(t);
      // The agent stays quiet after its handshake. A control CONNECT opened after ours never starts TLS: once the
      // sweep has cut it for its (later) handshake deadline, our deadline has passed in the same worker too.
      const control = await openTunnel(g.gw.ports.cache!, `${HOST}:${origin.port}`);
      expect(await control.closed).toBe(true);
      expect(c.closed()).toBe(false);
      t.write(`GET /later HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
      await waitFor(() => c.text().includes("\r\n\r\nok") || c.closed(), { what: "the answer" });
      expect(c.text()).toStartWith("HTTP/1.1 200 ");
      t.destroy();
    } finally {
      origin.stop();
    }
  }, 60_000);

  test("inside TLS, a head sent one byte at a time is answered 408", async () => {
    const origin = startRawOrigin((s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    try {
      await using g = await cacheGateway([origin.port], { head_timeout_s: 1 });
      const t = await tlsThrough(g.gw.ports.cache!, g.ca, `${HOST}:${origin.port}`);
      const c = collect(t);
      const head = `GET /slow HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${"x".repeat(200)}\r\n\r\n`;
      for (const ch of head) {
        if (c.text() || c.closed()) break;
        t.write(ch);
        await Bun.sleep(100); // the slow client's pace, not a wait for an outcome
      }
      await waitFor(() => c.text() || c.closed(), { what: "an answer to the slow head" });
      expect(c.text()).toStartWith("HTTP/1.1 408 ");
      expect(origin.requests()).toBe(0);
      t.destroy();
    } finally {
      origin.stop();
    }
  }, 60_000);
});

describe("defect 4: a reset mid-body is a failed fill", () => {
  test("no length, some bytes, then RST: the agent's transfer fails, nothing is stored, the next agent goes to the origin", async () => {
    const origin = startRawOrigin((s) => {
      // close-delimited (no Content-Length, no chunked), cacheable, then a reset instead of a FIN
      s.write(`HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nConnection: close\r\n\r\n${"a".repeat(5000)}`);
      setTimeout(() => s.terminate(), 100); // the origin's fault happens after the bytes: a pause, not a wait in the test
    }, true);
    try {
      await using g = await cacheGateway([origin.port]);
      const url = `https://${HOST}:${origin.port}/half`;
      const args = ["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "--cacert", g.ca, "-x", `http://127.0.0.1:${g.gw.ports.cache}`, url];
      const first = await curl(args);
      expect(first.code).not.toBe(0); // chunked towards the agent, with no last chunk: curl reports a broken transfer
      const second = await curl(args);
      expect(second.code).not.toBe(0);
      expect(origin.requests()).toBe(2); // nothing was stored: the second agent was not served the half body
      const access = await waitFor(() => {
        const a = g.gw.lines().filter((l) => l.msg === "access" && l.path === "/half");
        return a.length >= 2 && a;
      }, { what: "both access lines" });
      expect(access.map((l) => l.reason)).toEqual(["failed", "failed"]);
    } finally {
      origin.stop();
    }
  }, 60_000);
});

describe("defect 5: a full cache disk", () => {
  const MB = 1 << 20;
  const BIG = patternBytes(96 * MB);
  // The mount needs root (CI runs the suite as root); elsewhere the test says why it did not run.
  const why = process.getuid?.() === 0 ? null : "not root: cannot mount a 64 MB tmpfs";
  if (why) console.log(`skipping the full-disk test: ${why}`);
  test.skipIf(why !== null)("a 96 MB object on a 64 MB data disk is delivered whole, every time, and nothing is stored", async () => {
    const dir = mkdtempSync(join(tmpdir(), "agate-full-"));
    const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dir]);
    expect(mount.exitCode).toBe(0);
    const origin = startTlsOrigin(pki, {
      "/big": () => new Response(BIG, { headers: { "cache-control": "max-age=600" } }),
      // no length (chunked): only a write can tell the disk is full
      "/raw/big-chunked": () =>
        new Response(
          new ReadableStream({
            start(c) {
              for (let off = 0; off < BIG.byteLength; off += 4 * MB) c.enqueue(BIG.subarray(off, off + 4 * MB));
              c.close();
            },
          }),
          { headers: { "cache-control": "max-age=600" } },
        ),
    });
    try {
      await using g = await cacheGateway([origin.port], {}, dir);
      const get = (path: string) =>
        curl(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "--cacert", g.ca, "-x", `http://127.0.0.1:${g.gw.ports.cache}`, `https://${HOST}:${origin.port}${path}`], 60_000);
      for (let i = 0; i < 2; i++) expect(await get("/big")).toMatchObject({ code: 0, stdout: `200 ${BIG.byteLength}` });
      // once the disk is known to be full, an object without a length is passed through too
      expect(await get("/raw/big-chunked")).toMatchObject({ code: 0, stdout: `200 ${BIG.byteLength}` });
      expect((origin.hits.get("/big") ?? 0) >= 2).toBe(true); // not stored: each agent's copy came from the origin
      const access = await waitFor(() => {
        const a = g.gw.lines().filter((l) => l.msg === "access" && (l.path === "/big" || l.path === "/raw/big-chunked"));
        return a.length >= 3 && a;
      }, { what: "three access lines" });
      expect(access.map((l) => l.phase)).toEqual(["bypass:no-space", "bypass:no-space", "bypass:no-space"]);
      expect(g.gw.lines().some((l) => l.msg === "cache disk full: objects are passed through and not stored until space returns")).toBe(true);
      const blobs = join(dir, "data", "cache", "blobs");
      const stored = (() => {
        try {
          return readdirSync(blobs, { recursive: true }).filter((f) => String(f).length > 10);
        } catch {
          return [];
        }
      })();
      expect(stored).toEqual([]);
    } finally {
      origin.stop();
      Bun.spawnSync(["umount", "-l", dir]);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});

describe("defect 9: Host on the cache port", () => {
  test("two Host fields or none on a plain request: 400, the origin sees nothing, and no tunnel line says 'forward'", async () => {
    const origin = startRawOrigin((s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    try {
      await using g = await cacheGateway([origin.port]);
      const abs = `http://${HOST}:${origin.port}/two`;
      const two = await rawExchange(g.gw.ports.cache!, `GET ${abs} HTTP/1.1\r\nHost: ${HOST}\r\nHost: evil.example\r\n\r\n`);
      const none = await rawExchange(g.gw.ports.cache!, `GET ${abs} HTTP/1.1\r\nAccept: */*\r\n\r\n`);
      expect([two.split("\r\n")[0], none.split("\r\n")[0]]).toEqual(["HTTP/1.1 400 Bad Request", "HTTP/1.1 400 Bad Request"]);
      expect(origin.requests()).toBe(0);
      await g.gw.waitForLine((l) => l.msg === "connection" && l.mode === "http");
      expect(g.gw.lines().filter((l) => l.msg === "tunnel" && l.decision === "forward")).toEqual([]);
    } finally {
      origin.stop();
    }
  }, 60_000);
});

describe("defect 7: the admin door", () => {
  test("ten token-less requests (a scrape job) do not lock out the right token; they are 401 each", async () => {
    await using gw = await startGateway({});
    const base = `http://127.0.0.1:${gw.ports.admin}`;
    const statuses = [];
    for (let i = 0; i < 10; i++) statuses.push((await fetch(`${base}/api/status`)).status);
    expect(statuses).toEqual(Array(10).fill(401));
    expect((await gw.admin("/api/status")).status).toBe(200);
  }, 30_000);
});
