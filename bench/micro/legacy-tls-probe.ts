/**
 * @module Probe: which TLS versions does agate's cache-port path (a Bun.listen socket → intercept.ts SocketDuplex →
 * node:tls TLSSocket({ isServer: true })) really negotiate, per context option set? It serves one P-256 leaf minted
 * by src/core/certs.ts, the way a worker does, and asks `openssl s_client` for each version.
 * Variants: `net` (node:net socket, DESIGN's measurement), `duplex` (agate's path, agate's context options) and
 * `duplex+seclevel0` (agate's path with `ciphers: "DEFAULT:@SECLEVEL=0"`).
 * Run: `bun bench/micro/legacy-tls-probe.ts` — prints one line per variant × client version. Measured 2026-12-01,
 * Bun 1.4.5, OpenSSL 3.0.19 client:
 *   net               -tls1 → TLSv1 ECDHE-ECDSA-AES256-SHA     -tls1_1 → TLSv1.1 ECDHE-ECDSA-AES256-SHA
 *   duplex            -tls1 → TLSv1 ECDHE-ECDSA-AES256-SHA     -tls1_1 → TLSv1.1 ECDHE-ECDSA-AES256-SHA
 *   duplex+seclevel0  createSecureContext throws ERR_SSL_INVALID_COMMAND: BoringSSL has no @SECLEVEL, and needs none
 * So neither the Duplex nor the context options stopped TLS 1.0/1.1: the only thing in agate's path that did was
 * config.ts refusing `cache.min_tls` 1.0 and 1.1 at the door. SECLEVEL=0 belongs on the *client* (Debian's openssl
 * refuses TLS < 1.2 at its default level 2 before sending anything).
 */
import "reflect-metadata";
import net from "node:net";
import tls from "node:tls";
import { createCa, makeLeafKeys, mintLeaf } from "../../src/core/certs";
import { SocketDuplex } from "../../src/workers/intercept";
import type { ClientConn } from "../../src/workers/runtime";

const NOW = new Date();
const made = await createCa({ commonName: "probe CA", now: NOW, serial: Uint8Array.of(1) });
const { loadCa } = await import("../../src/core/certs");
const ca = await loadCa("appliance", { cert: made.certPem, key: made.keyPem });
const leaf = await mintLeaf(ca, await makeLeafKeys(), "probe.example", NOW, Uint8Array.of(2));

type Variant = { name: string; opts: tls.SecureContextOptions; via: "net" | "duplex" };
const VARIANTS: Variant[] = [
  { name: "net", via: "net", opts: { minVersion: "TLSv1" } },
  { name: "duplex", via: "duplex", opts: { minVersion: "TLSv1" } },
  { name: "duplex+seclevel0", via: "duplex", opts: { minVersion: "TLSv1", ciphers: "DEFAULT:@SECLEVEL=0" } },
];
const CLIENTS: [string, string[]][] = [
  ["-tls1", ["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"]],
  ["-tls1_1", ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]],
  ["-tls1_2", ["-tls1_2"]],
  ["-tls1_3", ["-tls1_3"]],
];

function serve(v: Variant): Promise<{ port: number; stop: () => void }> {
  // Throws for the seclevel0 variant (caught below): BoringSSL does not know "@SECLEVEL".
  const ctx = tls.createSecureContext({ cert: leaf.certPem + ca.chainPem, key: leaf.keyPem, ...v.opts });
  const onTls = (t: tls.TLSSocket) => {
    t.on("error", () => {});
    t.on("secure", () => t.end("ok\n"));
  };
  if (v.via === "net") {
    const srv = net.createServer((s) => onTls(new tls.TLSSocket(s, { isServer: true, secureContext: ctx })));
    return new Promise((r) => srv.listen(0, "127.0.0.1", () => r({ port: (srv.address() as net.AddressInfo).port, stop: () => srv.close() })));
  }
  const l = Bun.listen<ClientConn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(sock) {
        sock.data = { pending: null, bytesOut: 0, lastActive: 0 } as unknown as ClientConn;
        const d = new SocketDuplex(sock, Date.now);
        (sock.data as any).duplex = d;
        onTls(new tls.TLSSocket(d, { isServer: true, secureContext: ctx, ALPNProtocols: ["http/1.1"] } as tls.TLSSocketOptions));
      },
      data: (sock, b) => (sock.data as any).duplex.onData(b),
      drain: (sock) => (sock.data as any).duplex.onDrain(),
      end: (sock) => (sock.data as any).duplex.push(null),
      close: (sock) => (sock.data as any).duplex.destroy(),
    },
  });
  return Promise.resolve({ port: l.port, stop: () => l.stop(true) });
}

for (const v of VARIANTS) {
  let s;
  try {
    s = await serve(v);
  } catch (e) {
    console.log(`${v.name.padEnd(18)} ${JSON.stringify(v.opts).padEnd(52)} createSecureContext throws ${(e as { code?: string }).code}`);
    continue;
  }
  for (const [label, args] of CLIENTS) {
    const p = Bun.spawn(["openssl", "s_client", "-connect", `127.0.0.1:${s.port}`, "-servername", "probe.example", ...args], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    p.stdin.end();
    const out = (await new Response(p.stdout).text()) + (await new Response(p.stderr).text());
    await p.exited;
    const proto = /Protocol\s*:\s*(\S+)/.exec(out)?.[1] ?? /New, (\S+), Cipher is (\S+)/.exec(out)?.[1];
    const cipher = /Cipher\s*(?:is|:)\s*(\S+)/.exec(out)?.[1];
    const alert = /alert [a-z ]+|no protocols available|wrong version number/.exec(out)?.[0];
    const ok = cipher && cipher !== "(NONE)" && cipher !== "0000";
    console.log(`${v.name.padEnd(18)} ${JSON.stringify(v.opts).padEnd(52)} ${label.padEnd(8)} → ${ok ? `${proto} ${cipher}` : `refused (${alert ?? "no handshake"})`}`);
  }
  s.stop();
}
process.exit(0);
