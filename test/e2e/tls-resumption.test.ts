/**
 * TLS session resumption on the cache port (issue 13), against the real openssl client: a session (a TLS 1.3 ticket,
 * RFC 8446 §4.6.1; a TLS 1.2 ticket, RFC 5077) got from one connection resumes on the next ones, and the request
 * inside is answered as on a full handshake. One worker: node:tls in Bun 1.4.5 keeps the ticket key per secure context
 * and ignores `ticketKeys` (intercept.ts contextFor), so with 2 workers about half of the sessions land on the other
 * worker and do a full handshake — bench/e2e/handshakes.ts reports that share.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { startGateway, type Gateway } from "../peers/gateway";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const scratch = mkdtempSync(join(tmpdir(), "agate-resume-"));
let origin: Origin;
let gw: Gateway;
let caPath: string;

beforeAll(async () => {
  origin = startTlsOrigin(pki);
  gw = await startGateway({
    gateway: { workers: 1 },
    cache: { enabled: true, port: 0 },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports: [origin.port] },
    hosts: { [HOST]: "127.0.0.1" },
  });
  caPath = join(gw.dir, "gateway-ca.pem");
  writeFileSync(caPath, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
});
afterAll(async () => {
  await gw?.stop();
  origin?.stop();
});

/** One `openssl s_client` through the cache port; `send` is written after the handshake (-ign_eof waits for the answer). */
async function sClient(version: "-tls1_2" | "-tls1_3", sess: string[], send: string) {
  const p = Bun.spawn(
    ["openssl", "s_client", version, "-proxy", `127.0.0.1:${gw.ports.cache}`, "-connect", `${HOST}:${origin.port}`, "-servername", HOST, "-CAfile", caPath, "-ign_eof", ...sess],
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" },
  );
  p.stdin.write(send);
  p.stdin.end();
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, text: out + err };
}

const GET = `GET /resume HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`;

describe("TLS session resumption on the cache port", () => {
  test.each([["-tls1_3", "TLSv1.3"], ["-tls1_2", "TLSv1.2"]] as const)("%s: a session from one connection resumes on the next 8", async (flag, name) => {
    const sess = join(scratch, `${flag}.pem`);
    // The first connection makes a request, so it reads past the handshake and gets the ticket (TLS 1.3 sends it after).
    const first = await sClient(flag, ["-sess_out", sess], GET);
    expect(first.text).toContain(`New, ${name}`);
    expect(first.text).toContain("hello from origin");
    const lines: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await sClient(flag, ["-sess_in", sess], GET);
      expect(r.text).toContain("hello from origin");
      lines.push(/^(New|Reused), TLS[^,]*/m.exec(r.text)?.[0] ?? "no handshake line");
    }
    expect(lines).toEqual(Array(8).fill(`Reused, ${name}`));
  });
});
