/**
 * NTLM to the upstream proxy, end to end: curl → agate (upstream_proxy.auth = "ntlm") → Debian's squid with its
 * `ntlm_fake_auth` helper → a loopback TLS origin. The helper runs the three-message exchange on the CONNECT
 * connection and takes the user name from the AUTHENTICATE message, but verifies no password, so the refusal path
 * runs against a small in-test proxy that checks the NTLMv2 proof (MS-NLMP §3.3.2) with node:crypto itself.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway } from "../peers/gateway";
import { openTunnel, rawExchange } from "../peers/fake-client";
import { squidNtlmMissing, startSquid, type Squid } from "../peers/squid";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const hosts = { [HOST]: "127.0.0.1" };
const PASSWORD = "Ntlm-S3cret!";
let origin: Origin;

beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

const missing = squidNtlmMissing();
if (missing) console.warn(`[skip] NTLM squid tests: ${missing}`);

describe.skipIf(!!missing)("through squid requiring NTLM (ntlm_fake_auth)", () => {
  let squid: Squid;
  beforeAll(async () => {
    squid = await startSquid(hosts, "unused", "unused", { auth: "ntlm" });
  });
  afterAll(async () => {
    await squid?.stop();
  });

  const accessLine = (what: string) =>
    waitFor(
      () => {
        const text = readFileSync(join(squid.dir, "access.log"), "utf8");
        return text.split("\n").find((l) => l.includes(" CONNECT ") && l.includes(what));
      },
      { what: `squid's access.log line with ${what}` },
    );

  test.each(["AGATE\\ntlmuser", "upnuser@corp.example"])("curl → agate → squid (NTLM as %s) → origin", async (username) => {
    await using gw = await startGateway({
      destinations: { ports: [origin.port] },
      hosts,
      upstream_proxy: { host: "127.0.0.1", port: squid.port, auth: "ntlm", username, password: PASSWORD },
    });
    const path = `/ntlm-${username.replace(/\W/g, "")}`;
    const r = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, path)]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(`hello from origin ${path}\n`);
    // squid logs the user its helper read out of our AUTHENTICATE message: the exchange really ran.
    const user = username.includes("\\") ? username.split("\\")[1]! : username;
    const line = await accessLine(user);
    expect(line).toContain(`CONNECT ${HOST}:${origin.port}`);
    expect(line).toContain("TCP_TUNNEL/200");
    const tl = await gw.waitForLine((l) => l.msg === "tunnel" && l.dest === `${HOST}:${origin.port}`);
    expect(tl.via).toBe("upstream-proxy");
    expect(JSON.stringify(gw.lines())).not.toContain(PASSWORD);
  });

  test("auth = basic against the NTLM squid: 502 says to set upstream_proxy.auth = \"ntlm\"", async () => {
    await using gw = await startGateway({
      destinations: { ports: [origin.port] },
      hosts,
      upstream_proxy: { host: "127.0.0.1", port: squid.port, username: "AGATE\\ntlmuser", password: PASSWORD },
    });
    const raw = await rawExchange(gw.ports.proxy, `CONNECT ${HOST}:${origin.port} HTTP/1.1\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 502 ");
    expect(raw).toContain("407");
    expect(raw).toContain('upstream_proxy.auth = "ntlm"');
    expect(JSON.stringify(gw.lines())).not.toContain(PASSWORD);
  });
});

// ---- a proxy that checks the NTLMv2 proof -----------------------------------------------------------------

const CHALLENGE = Buffer.from(
  "4e544c4d53535000020000000c000c003800000035828ae20123456789abcdef0000000000000000240024004400000006007017" +
    "0000000f530065007200760065007200" +
    "02000c0044006f006d00610069006e0001000c00530065007200760065007200" +
    "00000000",
  "hex",
);
const u16 = (s: string) => Buffer.from(s, "utf16le");

/** Does this AUTHENTICATE prove `password` for its own user and domain? (MS-NLMP §3.3.2, computed independently.) */
function proves(auth: Buffer, password: string): boolean {
  const f = (k: number) => auth.subarray(auth.readUInt32LE(12 + k * 8 + 4), auth.readUInt32LE(12 + k * 8 + 4) + auth.readUInt16LE(12 + k * 8));
  const nt = f(1), domain = f(2).toString("utf16le"), user = f(3).toString("utf16le");
  const key = createHmac("md5", createHash("md4").update(u16(password)).digest()).update(u16(user.toUpperCase() + domain)).digest();
  const proof = createHmac("md5", key).update(Buffer.concat([CHALLENGE.subarray(24, 32), nt.subarray(16)])).digest();
  return proof.equals(nt.subarray(0, 16));
}

/** NEGOTIATE → 407 with CHALLENGE (connection kept) → AUTHENTICATE → 200 if the proof holds, else 407. */
function startCheckingProxy(password: string) {
  const seen: string[] = [];
  const server = Bun.listen<{ buf: string }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { buf: "" };
      },
      data(s, d) {
        s.data.buf += d.toString("latin1");
        const end = s.data.buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = s.data.buf.slice(0, end);
        s.data.buf = s.data.buf.slice(end + 4);
        const m = /\r\nProxy-Authorization: NTLM (\S+)/i.exec(head);
        const msg = m ? Buffer.from(m[1]!, "base64") : null;
        seen.push(msg ? `type${msg.readUInt32LE(8)}` : "none");
        const body = "authentication required\n";
        const deny = (extra: string) =>
          void s.write(`HTTP/1.1 407 Proxy Authentication Required\r\n${extra}Content-Length: ${body.length}\r\n\r\n${body}`);
        if (!msg) return deny("Proxy-Authenticate: NTLM\r\n");
        if (msg.readUInt32LE(8) === 1) return deny(`Proxy-Authenticate: NTLM ${CHALLENGE.toString("base64")}\r\n`);
        if (proves(msg, password)) return void s.write("HTTP/1.1 200 Connection established\r\n\r\n");
        deny("Proxy-Authenticate: NTLM\r\nConnection: close\r\n");
        s.end();
      },
    },
  });
  return { port: server.port, seen, stop: () => server.stop(true) };
}

/** A gateway whose upstream proxy on 127.0.0.1:`port` is told to expect NTLM from Domain\User. */
const ntlmGateway = (port: number) =>
  startGateway({
    destinations: { ports: [origin.port] },
    hosts,
    upstream_proxy: { host: "127.0.0.1", port, auth: "ntlm", username: "Domain\\User", password: PASSWORD },
  });

describe("NTLM refusals", () => {
  test("the checking proxy accepts the right password (so the wrong-password test below can fail)", async () => {
    const proxy = startCheckingProxy(PASSWORD);
    try {
      await using gw = await ntlmGateway(proxy.port);
      const t = await openTunnel(gw.ports.proxy, `${HOST}:${origin.port}`);
      t.destroy();
      expect(t.head).toStartWith("HTTP/1.1 200 ");
      expect(proxy.seen).toEqual(["type1", "type3"]);
    } finally {
      proxy.stop();
    }
  });

  test("a wrong password: 502 naming the user and the settings to check, the same in the log, never the password", async () => {
    const proxy = startCheckingProxy("the-real-one");
    try {
      await using gw = await ntlmGateway(proxy.port);
      const raw = await rawExchange(gw.ports.proxy, `CONNECT ${HOST}:${origin.port} HTTP/1.1\r\n\r\n`);
      expect(raw).toStartWith("HTTP/1.1 502 ");
      expect(raw).toContain("407");
      expect(raw).toContain("rejected the NTLM credentials of Domain\\User");
      expect(raw).toContain("upstream_proxy.password");
      expect(proxy.seen).toEqual(["type1", "type3"]);
      const line = await gw.waitForLine((l) => JSON.stringify(l).includes("rejected the NTLM credentials"));
      expect(JSON.stringify(line)).toContain("Domain");
      expect(JSON.stringify(gw.lines())).not.toContain(PASSWORD);
      expect(raw).not.toContain(PASSWORD);
    } finally {
      proxy.stop();
    }
  });

  test("a proxy that offers only Basic: 502 says to set upstream_proxy.auth = \"basic\"", async () => {
    const basicOnly = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s) {
          s.write('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n');
        },
      },
    });
    try {
      await using gw = await ntlmGateway(basicOnly.port);
      const raw = await rawExchange(gw.ports.proxy, `CONNECT ${HOST}:${origin.port} HTTP/1.1\r\n\r\n`);
      expect(raw).toStartWith("HTTP/1.1 502 ");
      expect(raw).toContain("does not offer NTLM");
      expect(raw).toContain("upstream_proxy.auth");
    } finally {
      basicOnly.stop(true);
    }
  });
});
