/**
 * The handshake client, spawned by bench/e2e/handshakes.ts in its own process: N TLS handshakes, K at a time, each
 * connection closed once the handshake is done; the rate, and how many the server resumed.
 *
 *   bun bench/e2e/handshake-client.ts --via cache|direct --port P --host H --origin-port O --ca FILE
 *                                     [--n 2000] [--concurrency 20] [--resume] [--tls12]
 *
 *   cache   TCP to the cache port P, CONNECT H:O, 200, then TLS inside (the agent's path)
 *   direct  TLS straight to the origin on P
 *   --resume  one full handshake first; every later one offers its session (RFC 5077 ticket / session id)
 *   --tls12   cap the client at TLS 1.2: Bun's node:tls client does not surface TLS 1.3 tickets (measured against a
 *             node:tls server in Bun 1.4.5: over TLS 1.3 'session' never fired in 3 connections, over TLS 1.2 it
 *             fired and connections 2 and 3 resumed; without --tls12, --resume exits 3 "no session"), so resumption
 *             is measured over TLS 1.2 (openssl s_client resumes TLS 1.3 too: test/e2e/tls-resumption.test.ts)
 * Prints `{ ev: "done", ok, failed, resumed, ms, perSecond, errors }`. Every handshake has a 10 s deadline.
 */
import net from "node:net";
import tls from "node:tls";
import { readFileSync } from "node:fs";
import { emitLine } from "./child-io";
import { connectHead, readHead } from "./tls-client";

const argv = process.argv.slice(2);
const arg = (name: string, dflt?: string) => {
  const i = argv.indexOf(name);
  const v = i >= 0 ? argv[i + 1] : dflt;
  if (v === undefined) {
    console.error(`handshake-client: ${name} is required`);
    process.exit(2);
  }
  return v;
};
const via = arg("--via");
if (via !== "cache" && via !== "direct") {
  console.error("handshake-client: --via cache|direct");
  process.exit(2);
}
const port = Number(arg("--port"));
const host = arg("--host");
const originPort = Number(arg("--origin-port", "0"));
const ca = readFileSync(arg("--ca"), "utf8");
const n = Number(arg("--n", "2000"));
const concurrency = Number(arg("--concurrency", "20"));
const resume = argv.includes("--resume");
const maxVersion: tls.SecureVersion = argv.includes("--tls12") ? "TLSv1.2" : "TLSv1.3";
const HEAD = connectHead(`${host}:${originPort}`, "agate-bench");
const DEADLINE_MS = 10_000;

let session: Buffer | undefined;
const errors: Record<string, number> = {};

/** One handshake; resolves with whether it resumed, or an error code. */
function one(offer: Buffer | undefined): Promise<{ err: string | null; resumed: boolean }> {
  return new Promise((res) => {
    let settled = false;
    let t: tls.TLSSocket | null = null;
    let raw: net.Socket | null = null;
    const done = (err: string | null, resumed = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      t?.destroy();
      raw?.destroy();
      res({ err, resumed });
    };
    const timer = setTimeout(() => done("timeout"), DEADLINE_MS);
    const secure = (opts: tls.ConnectionOptions) => {
      t = tls.connect({ ...opts, servername: host, ca, maxVersion, session: offer });
      t.on("session", (s: Buffer) => (session ??= s));
      t.once("secureConnect", () => {
        const reused = t!.isSessionReused();
        // the first full handshake's ticket may come just after it: wait a moment for it, once
        if (resume && !session) setTimeout(() => done(null, reused), 50);
        else done(null, reused);
      });
      t.on("error", () => done("tls"));
    };
    if (via === "direct") return secure({ host: "127.0.0.1", port });
    raw = net.connect({ host: "127.0.0.1", port });
    const st = { buf: null as Uint8Array | null };
    raw.once("connect", () => raw!.write(HEAD));
    const onData = (d: Buffer) => {
      const h = readHead(st, d);
      if (!h) return;
      raw!.off("data", onData);
      if (!/^HTTP\/1\.[01] 200/.test(h.head)) return done(`status-${h.head.slice(9, 12)}`);
      secure({ socket: raw! });
    };
    raw.on("data", onData);
    raw.on("error", () => done("tcp"));
  });
}

if (resume) {
  const first = await one(undefined);
  if (first.err || !session) {
    emitLine({ ev: "error", message: `no session from the first handshake (${first.err ?? "no ticket"})` });
    process.exit(3);
  }
}
let ok = 0;
let failed = 0;
let resumed = 0;
let next = 0;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < n) {
      next++;
      const r = await one(resume ? session : undefined);
      if (r.err) {
        failed++;
        errors[r.err] = (errors[r.err] ?? 0) + 1;
      } else {
        ok++;
        if (r.resumed) resumed++;
      }
    }
  }),
);
const ms = performance.now() - t0;
emitLine({ ev: "done", via, resume, maxVersion, ok, failed, resumed, ms: Math.round(ms), perSecond: Math.round(ok / (ms / 1000)), errors });
process.exit(0);
