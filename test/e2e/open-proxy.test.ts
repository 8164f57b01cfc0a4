/**
 * @module Never an open proxy (issue 12; DESIGN.md "Connection security"): destinations outside the allowed domains,
 * IP literals in every spelling (decimal, octal, hex, short forms, IPv6, IPv4-mapped), names that resolve to loopback,
 * the management port reached through the proxy, userinfo and trailing-dot tricks, an inner Host or SNI other than the
 * CONNECT authority, and patch mode's client rules against X-Forwarded-For / Forwarded. Each probe goes to the proxy
 * port (CONNECT), the cache port (CONNECT) and the cache port's plain forward requests (absolute-form); each must be
 * refused with its status, logged with a reason, and never reach the loopback listener that stands in for an
 * internal service. Controls (the mapped platform host, with and without a trailing dot) must get through, so the
 * suite fails if everything is simply refused.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import tls from "node:tls";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TCPSocketListener } from "bun";
import { makeTestPki } from "../peers/test-ca";
import { HOST, type CacheGateway, cacheGateway, exchange, tcp, tlsThrough } from "../peers/adversary";
import { rawExchange } from "../peers/fake-client";
import { startGateway } from "../peers/gateway";
import { waitFor } from "../peers/helpers";

const pki = makeTestPki([HOST]);

/** A loopback TCP service that counts who reached it: an internal service the gateway must never dial for a probe. */
function startSentinel(hostname: string, port = 0): { port: number; hits: () => number; stop: () => void } | null {
  let hits = 0;
  try {
    const l: TCPSocketListener = Bun.listen({ hostname, port, socket: { open: () => void hits++, data() {} } });
    return { port: l.port, hits: () => hits, stop: () => l.stop(true) };
  } catch {
    return null; // no IPv6 loopback here: the v4 sentinel still judges every probe
  }
}

/** Spellings of loopback (and of 0.0.0.0, which Linux connects to the host itself). */
const loopback = (p: number) => [
  `127.0.0.1:${p}`, `2130706433:${p}`, `0177.0.0.1:${p}`, `0x7f.1:${p}`, `0x7f000001:${p}`, `127.1:${p}`, `127.0.1:${p}`, `0x7F.0.0.1:${p}`,
  `017700000001:${p}`, `127.000.000.001:${p}`, `127.0.0.1.:${p}`, `[::1]:${p}`, `[::ffff:127.0.0.1]:${p}`, `[::ffff:7f00:1]:${p}`,
  `[0:0:0:0:0:0:0:1]:${p}`, `[::127.0.0.1]:${p}`, `[::1%25lo]:${p}`, `0.0.0.0:${p}`, `0:${p}`, `[::]:${p}`, `localhost:${p}`, `LOCALHOST.:${p}`,
  `a.localhost:${p}`, `10.0.0.1:${p}`, `192.168.1.1:${p}`, `169.254.169.254:${p}`, `[fe80::1]:${p}`, `[fd00::1]:${p}`, `[64:ff9b::7f00:1]:${p}`,
];
/** Names under the allowed domains in form only. */
const tricks = (p: number) => [
  `user@${HOST}:${p}`, `${HOST}@127.0.0.1:${p}`, `evil.example@${HOST}:${p}`, `${HOST}.evil.example:${p}`,
  `qualys.com.evil.example:${p}`, `evilqualys.com:${p}`, `${HOST}..:${p}`, `.${HOST}:${p}`, `${HOST}%2f@evil.example:${p}`,
  `${HOST}\\@evil.example:${p}`, `${HOST}:${p}:${p}`, `${HOST}:0${p}`, `${HOST}:+${p}`, `xn--qualys-\u00e9.com:${p}`, `${HOST}\t:${p}`,
];

type Probe = { via: "proxy" | "cache" | "plain"; authority: string };
type Outcome = { status: number; head: string };

function requestFor(p: Probe): string {
  if (p.via === "plain") return `GET http://${p.authority}/probe HTTP/1.1\r\nHost: ${p.authority}\r\n\r\n`;
  return `CONNECT ${p.authority} HTTP/1.1\r\nHost: ${p.authority}\r\n\r\n`;
}

describe("never an open proxy", () => {
  let g: CacheGateway;
  let v4: ReturnType<typeof startSentinel>;
  let v6: ReturnType<typeof startSentinel>;
  let origin: TCPSocketListener;
  let originPort = 0;
  beforeAll(async () => {
    // a TLS origin on an allowed port for the controls; the sentinels listen on another allowed port on 127.0.0.1 and
    // ::1, where every probe is aimed (HOST is mapped to 127.0.0.1 too: a trick that ends up at HOST hits a sentinel);
    // the admin port is probed as itself
    origin = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: pki.certPem, key: pki.keyPem },
      socket: { data: (s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") },
    });
    originPort = origin.port;
    v4 = startSentinel("127.0.0.1");
    v6 = startSentinel("::1", v4!.port);
    g = await cacheGateway(pki, [originPort, v4!.port], { cache: { allowed_domains: ["a.localhost", "example.org"] } });
  });
  afterAll(async () => {
    await g?.[Symbol.asyncDispose]();
    v4?.stop();
    v6?.stop();
    origin?.stop(true);
  });

  async function run(p: Probe): Promise<Outcome> {
    const port = p.via === "proxy" ? g.gw.ports.proxy : g.gw.ports.cache!;
    const got = await rawExchange(port, requestFor(p), { waitMs: 5000 });
    return { status: Number(got.slice(9, 12)) || 0, head: got.slice(0, 200) };
  }

  test("IP literals in every spelling, private names and form tricks: refused on every port, logged with a reason, never dialled", async () => {
    const sentinelPort = v4!.port;
    const probes: Probe[] = [];
    for (const via of ["proxy", "cache", "plain"] as const) {
      for (const a of [...loopback(sentinelPort), ...tricks(sentinelPort)]) probes.push({ via, authority: a });
      // the management port, through the proxy, by address and by name
      for (const a of [`127.0.0.1:${g.gw.ports.admin}`, `localhost:${g.gw.ports.admin}`, `a.localhost:${g.gw.ports.admin}`, `${HOST}:${g.gw.ports.admin}`, `[::1]:${g.gw.ports.admin}`])
        probes.push({ via, authority: a });
    }
    const bad: string[] = [];
    const statuses: Record<string, number> = {};
    for (const p of probes) {
      const o = await run(p);
      statuses[o.status] = (statuses[o.status] ?? 0) + 1;
      if (o.status !== 400 && o.status !== 403 && o.status !== 405) bad.push(`${p.via} ${JSON.stringify(p.authority)}: ${JSON.stringify(o.head)}`);
    }
    console.log(`open-proxy probes: ${probes.length} tried, statuses ${JSON.stringify(statuses)}, ${bad.length} not refused`);
    expect(bad).toEqual([]);
    expect({ v4: v4!.hits(), v6: v6?.hits() ?? 0 }).toEqual({ v4: 0, v6: 0 });
    // every refusal is logged with its reason: a "refused" line (layer 1: rule + reason) or an "access" line (layer 2,
    // plain requests the cache port's HTTP layer refused: status + reason code), one per probe
    const refusals = () => g.gw.lines().filter((l) => (l.msg === "refused" || l.msg === "access") && [400, 403, 405].includes(l.status));
    await waitFor(() => refusals().length >= probes.length, { what: `${probes.length} refusal log lines`, timeoutMs: 15_000 });
    expect(refusals().filter((l) => typeof l.reason !== "string" || l.reason === "")).toEqual([]);
    console.log(`open-proxy refusals logged: ${refusals().length} (${refusals().filter((l) => l.msg === "refused").length} at layer 1, rules ${JSON.stringify([...new Set(refusals().map((l) => l.rule ?? l.reason))])})`);
  }, 120_000);

  test("controls: the mapped platform host, also with a trailing dot, gets through on both ports", async () => {
    for (const a of [`${HOST}:${originPort}`, `${HOST}.:${originPort}`, `${HOST.toUpperCase()}:${originPort}`]) {
      for (const port of [g.gw.ports.proxy, g.gw.ports.cache!]) {
        const sock = await tcp(port);
        const r = await exchange(sock, `CONNECT ${a} HTTP/1.1\r\nHost: ${a}\r\n\r\n`, (got) => got.includes("\r\n\r\n"));
        sock.destroy();
        expect({ a, port, head: r.got.slice(0, 12) }).toEqual({ a, port, head: "HTTP/1.1 200" });
      }
    }
  }, 60_000);

  test("a name under an allowed domain that resolves to loopback is refused after DNS (deny-private-address)", async () => {
    for (const port of [g.gw.ports.proxy, g.gw.ports.cache!]) {
      const got = await rawExchange(port, `CONNECT a.localhost:${v4!.port} HTTP/1.1\r\nHost: a.localhost\r\n\r\n`);
      expect(got.slice(0, 12)).toBe("HTTP/1.1 403");
      // the rule travels to the answer as a value too (RFC 9209 Proxy-Status), and the body says why
      expect(got).toContain('Proxy-Status: agate; error=destination_ip_prohibited; details="deny-private-address"');
      expect(got).toContain("resolves to 127.0.0.1, a loopback address");
    }
    // Bun.dns resolves *.localhost to 127.0.0.1 (RFC 6761 §6.3; measured: bun -e 'console.log(await Bun.dns.lookup("a.localhost"))')
    for (const port of ["proxy", "cache"]) {
      const line = await g.gw.waitForLine((l) => l.msg === "refused" && l.port === port && l.dest === `a.localhost:${v4!.port}`);
      // the rule as a value, not the error code PX_POLICY_DENY (upstream.ts used to throw a bare ProxyError)
      expect({ status: line.status, rule: line.rule, reason: String(line.reason) }).toEqual({
        status: 403,
        rule: "deny-private-address",
        reason: expect.stringContaining("resolves to 127.0.0.1, a loopback address"),
      });
    }
    expect(v4!.hits()).toBe(0);
  }, 60_000);

  test("inside TLS: a Host or an absolute target other than the CONNECT authority is 421, an SNI other than it is refused", async () => {
    const caPem = await Bun.file(g.ca).text();
    for (const req of [`GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n`, `GET http://127.0.0.1:${v4!.port}/ HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, `GET / HTTP/1.1\r\nHost: ${HOST}.evil.example\r\n\r\n`]) {
      const t = await tlsThrough(g.gw.ports.cache!, caPem, `${HOST}:${originPort}`);
      const r = await exchange(t as never, req, (got) => got.includes("\r\n\r\n"));
      t.destroy();
      expect({ req, status: r.got.slice(0, 12) }).toEqual({ req, status: "HTTP/1.1 421" });
    }
    // SNI for another name than the CONNECT authority: no session for it
    const raw = await tcp(g.gw.ports.cache!);
    const head = await exchange(raw, `CONNECT ${HOST}:${originPort} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, (got) => got.includes("\r\n\r\n"));
    expect(head.got.slice(0, 12)).toBe("HTTP/1.1 200");
    const t = tls.connect({ socket: raw, servername: "evil.example", ca: caPem });
    const outcome = await new Promise<string>((r) => (t.once("secureConnect", () => r("connected")), t.once("error", (e) => r(`error: ${e.message}`)), t.once("close", () => r("closed"))));
    t.destroy();
    expect(outcome).not.toBe("connected");
    expect(v4!.hits()).toBe(0);
  }, 60_000);
});

describe("patch mode: the client rules are the connection's address, never what a header claims", () => {
  for (const networks of [["10.0.0.0/8"], ["127.0.0.0/8"]])
    test(`client_networks = ${JSON.stringify(networks)}: X-Forwarded-For / Forwarded / X-Real-IP do not change who the client is`, async () => {
      const volume = mkdtempSync(join(tmpdir(), "agate-patch-vol-"));
      await using gw = await startGateway({
        cache: { enabled: true, port: 0, listen: "127.0.0.1" },
        patch: { enabled: true, volume, min_volume_bytes: 1, allow_same_device: true, client_networks: networks },
        tls: { upstream_ca: pki.caPath },
        destinations: { ports: [443, 80] },
      });
      const spoof = "X-Forwarded-For: 10.1.2.3\r\nForwarded: for=10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\nClient-IP: 10.1.2.3\r\n";
      const connect = await rawExchange(gw.ports.cache!, `CONNECT vendor.example:443 HTTP/1.1\r\nHost: vendor.example:443\r\n${spoof}\r\n`, { waitMs: 1500 });
      const plain = await rawExchange(gw.ports.cache!, `GET http://vendor.example/x HTTP/1.1\r\nHost: vendor.example\r\n${spoof}\r\n`, { waitMs: 3000 });
      if (networks[0] === "10.0.0.0/8") {
        expect({ connect: connect.slice(0, 12), plain: plain.slice(0, 12) }).toEqual({ connect: "HTTP/1.1 403", plain: "HTTP/1.1 403" });
        const line = await gw.waitForLine((l) => l.rule === "deny-client-network" || (typeof l.reason === "string" && l.reason.includes("patch.client_networks")));
        expect(`${line.reason ?? ""} ${line.error ?? ""}`).toContain("127.0.0.1"); // the conn-session line says it in reason, the access line in error
      } else {
        // the control: the loopback client is admitted (the CONNECT is answered 200; the plain request goes on to DNS,
        // which cannot resolve vendor.example here: 502, not 403)
        expect(connect.slice(0, 12)).toBe("HTTP/1.1 200");
        expect(plain.slice(0, 12)).toBe("HTTP/1.1 502");
      }
    }, 60_000);
});
