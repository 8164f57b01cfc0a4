/**
 * `cache.min_tls` on the cache port, against the real openssl client (issue 11): each setting (1.0, 1.1, 1.2, 1.3)
 * accepts every version at or above it and refuses those below, and an HTTP request inside a TLS 1.0 connection
 * is relayed from the origin. Debian's openssl refuses TLS < 1.2 itself at its default security level, so the old
 * versions are asked with `-cipher DEFAULT:@SECLEVEL=0`: a refusal below is then the gateway's, not the client's.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { startGateway, type Gateway } from "../peers/gateway";
import { MIN_TLS_VERSIONS, type MinTls } from "../../src/core/config";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
let origin: Origin;
const gws = new Map<MinTls, { gw: Gateway; caPath: string }>();

beforeAll(async () => {
  origin = startTlsOrigin(pki);
  await Promise.all(
    MIN_TLS_VERSIONS.map(async (v) => {
      const gw = await startGateway({
        gateway: { workers: 1 },
        cache: { enabled: true, port: 0, min_tls: v },
        tls: { upstream_ca: pki.caPath },
        destinations: { ports: [origin.port] },
        hosts: { [HOST]: "127.0.0.1" },
      });
      const caPath = join(gw.dir, "gateway-ca.pem");
      writeFileSync(caPath, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
      gws.set(v, { gw, caPath });
    }),
  );
});
afterAll(async () => {
  await Promise.all([...gws.values()].map((g) => g.gw.stop()));
  origin?.stop();
});

/** The client's flags per version; "Protocol version" is what `-brief` prints once a handshake completed. */
const CLIENT: Record<MinTls, { flags: string[]; name: string }> = {
  "1.0": { flags: ["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"], name: "TLSv1" },
  "1.1": { flags: ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], name: "TLSv1.1" },
  "1.2": { flags: ["-tls1_2"], name: "TLSv1.2" },
  "1.3": { flags: ["-tls1_3"], name: "TLSv1.3" },
};

async function sClient(setting: MinTls, client: MinTls, send = "") {
  const { gw, caPath } = gws.get(setting)!;
  const p = Bun.spawn(
    ["openssl", "s_client", ...CLIENT[client].flags, "-proxy", `127.0.0.1:${gw.ports.cache}`, "-connect", `${HOST}:${origin.port}`, "-servername", HOST, "-CAfile", caPath, "-brief", ...(send ? ["-ign_eof"] : [])],
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" },
  );
  p.stdin.write(send);
  p.stdin.end();
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out, text: out + err };
}

const rank = (v: MinTls) => MIN_TLS_VERSIONS.indexOf(v);
const cases = MIN_TLS_VERSIONS.flatMap((setting) => MIN_TLS_VERSIONS.map((client) => [setting, client] as const));

describe("cache.min_tls against openssl s_client", () => {
  test.each(cases)("min_tls %s, client %s: accepted exactly when the client's version is at or above the setting", async (setting, client) => {
    const r = await sClient(setting, client);
    if (rank(client) >= rank(setting)) {
      expect(r.text).toContain(`Protocol version: ${CLIENT[client].name}\n`);
      expect(r.text).toContain("Verification: OK");
    } else {
      expect(r.code).not.toBe(0);
      expect(r.text).not.toContain("Protocol version:");
      // the gateway's TLS stack said no (an alert), not the client's own security level
      expect(r.text).toMatch(/alert protocol version|unsupported protocol|wrong version number/i);
    }
  });

  test("a request inside a TLS 1.0 connection is relayed from the origin, with the SHA-1 CBC suite TLS 1.0 needs", async () => {
    const r = await sClient("1.0", "1.0", `GET /legacy HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
    expect(r.text).toContain("Protocol version: TLSv1\n");
    expect(r.text).toContain("Ciphersuite: ECDHE-ECDSA-AES256-SHA");
    expect(r.out).toContain("HTTP/1.1 200 ");
    expect(r.out).toContain("hello from origin /legacy");
  });
});
