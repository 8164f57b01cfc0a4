/**
 * @module Probe of what src/workers/intercept.ts's native path relies on (Bun 1.4.5): `socket.upgradeTLS` on a socket
 * accepted by a plain `Bun.listen` acts as the TLS server after a `200 Connection established`; it takes node:tls's
 * SSL context (`tls.createSecureContext(…).context`, with its `minVersion`); sessions resume across connections; and
 * the kernel's count (src/workers/tcp-bytes.ts) equals the bytes a counting relay saw towards the client.
 * Run: `bun bench/micro/tls-upgrade-probe.ts` — prints one JSON line per check and exits 1 if one fails.
 * (DESIGN's "verified facts" say upgradeTLS is client-side only; this shows it is not.)
 */
import tls from "node:tls";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../../test/peers/test-ca";
import { tcpBytesWritten } from "../../src/workers/tcp-bytes";

const HOST = "probe.example";
const pki = makeTestPki([HOST]);
const BODY = 30_000;
let failed = false;
const report = (check: string, ok: boolean, detail: Record<string, unknown>) => {
  if (!ok) failed = true;
  console.log(JSON.stringify({ check, ok, ...detail }));
};

type S = { up: boolean; fd: number; sent: number | null };
function server(minVersion: tls.SecureVersion) {
  const ctx = tls.createSecureContext({ cert: pki.certPem, key: pki.keyPem, minVersion });
  const inner = (ctx as unknown as { context: unknown }).context;
  const seen: { sent: number | null; reused: boolean }[] = [];
  const srv = Bun.listen<S>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { up: false, fd: (s as unknown as { fd: number }).fd, sent: null };
      },
      data(s) {
        if (s.data.up) return; // ciphertext, for the TLS layer
        s.data.up = true;
        s.write("HTTP/1.1 200 Connection established\r\n\r\n");
        const raw = s;
        s.upgradeTLS<S>({
          data: raw.data,
          tls: { secureContext: inner } as never,
          socket: {
            data(t: import("bun").Socket<S>) {
              t.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BODY}\r\n\r\n${"x".repeat(BODY)}`);
            },
            end(t: import("bun").Socket<S>) {
              t.shutdown();
              seen.push({ sent: tcpBytesWritten(raw.data.fd), reused: t.isSessionReused() });
              t.end();
            },
            close() {},
            error() {},
          },
        } as never);
      },
      close() {},
    },
  });
  return { port: srv.port, seen, stop: () => srv.stop(true) };
}

/** A relay counting the bytes towards the client. */
function relay(to: number) {
  const rec = { down: 0 };
  type R = { o: import("bun").Socket<R> | null; q: Uint8Array[]; c?: import("bun").Socket<R> };
  const srv = Bun.listen<R>({
    hostname: "127.0.0.1",
    port: 0,
    allowHalfOpen: true,
    socket: {
      end(c) {
        c.data.o?.shutdown();
      },
      open(c) {
        c.data = { o: null, q: [] };
        void Bun.connect<R>({
          hostname: "127.0.0.1",
          port: to,
          allowHalfOpen: true, // the server's close_notify comes after the client's FIN

          socket: {
            open(o) {
              o.data = { o: null, q: [], c };
              c.data.o = o;
              for (const b of c.data.q) o.write(b);
            },
            data(o, d) {
              rec.down += d.byteLength;
              o.data.c!.write(d);
            },
            close(o) {
              o.data.c!.end();
            },
          },
        });
      },
      data(c, d) {
        if (c.data.o) c.data.o.write(d);
        else c.data.q.push(d.slice());
      },
      close(c) {
        c.data.o?.end();
      },
    },
  });
  return { port: srv.port, rec, stop: () => srv.stop(true) };
}

async function run(cmd: string[]) {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  await p.exited;
  return out + err;
}

const dir = mkdtempSync(join(tmpdir(), "agate-probe-"));
try {
  {
    const s = server("TLSv1.2");
    const r = relay(s.port);
    const out = await run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--cacert", pki.caPath, "--resolve", `${HOST}:443:127.0.0.1`, "-x", `http://127.0.0.1:${r.port}`, `https://${HOST}/`]);
    for (let i = 0; i < 100 && s.seen.length < 1; i++) await Bun.sleep(10);
    await Bun.sleep(50); // the relay's last bytes
    report("server-side upgradeTLS after CONNECT, curl through it", out.trim() === String(BODY), { curl: out.trim() });
    report("kernel byte count = relay's count towards the client", s.seen[0]?.sent === r.rec.down, { kernel: s.seen[0]?.sent, relay: r.rec.down });
    r.stop();
    s.stop();
  }
  {
    const s = server("TLSv1");
    const sess = join(dir, "sess");
    const ossl = (extra: string[]) =>
      run(["sh", "-c", `(printf 'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n'; sleep 0.3) | timeout 5 openssl s_client -proxy 127.0.0.1:${s.port} -connect ${HOST}:443 -servername ${HOST} ${extra.join(" ")} 2>&1`]);
    const v10 = await ossl(["-tls1", "-cipher", "'DEFAULT:@SECLEVEL=0'"]);
    report("TLS 1.0 through a context with minVersion TLSv1", /New, TLSv1(\.0)?, Cipher is ECDHE-ECDSA-AES\d+-SHA/.test(v10), { saw: /^(New|Reused),.*$/m.exec(v10)?.[0] ?? v10.slice(0, 200) });
    await ossl(["-tls1_3", "-sess_out", sess]);
    const again = await ossl(["-tls1_3", "-sess_in", sess]);
    report("TLS 1.3 session resumes on the next connection", /^Reused, TLSv1\.3/m.test(again), { saw: /^(New|Reused),.*$/m.exec(again)?.[0] ?? again.slice(0, 200) });
    s.stop();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
