/**
 * Regenerates test/fixtures/client-hello-*.bin: the first TLS record real clients send, captured on a
 * plain TCP listener that never answers (so no handshake happens and nothing is decrypted).
 *   bun scripts/capture-client-hello.ts
 * Needs `openssl` and `curl` on PATH. The capture stops at the end of the first record, judged from the
 * record header alone, so the fixtures do not depend on the parser they test.
 */
import { join } from "node:path";

const SNI = "qagpublic.qg1.apps.qualys.com";
const OUT = join(import.meta.dir, "..", "test", "fixtures");

type Capture = { file: string; cmd: (port: number) => string[] };
const CAPTURES: Capture[] = [
  { file: "client-hello-openssl-sni.bin", cmd: (p) => ["openssl", "s_client", "-connect", `127.0.0.1:${p}`, "-servername", SNI] },
  { file: "client-hello-openssl-nosni.bin", cmd: (p) => ["openssl", "s_client", "-connect", `127.0.0.1:${p}`, "-noservername"] },
  {
    file: "client-hello-openssl-tls12.bin",
    cmd: (p) => ["openssl", "s_client", "-connect", `127.0.0.1:${p}`, "-tls1_2", "-servername", SNI, "-alpn", "http/1.1"],
  },
  {
    file: "client-hello-curl-alpn.bin",
    cmd: (p) => ["curl", "-sk", "--max-time", "5", "--resolve", `${SNI}:${p}:127.0.0.1`, `https://${SNI}:${p}/`],
  },
];

/** Listen once, run `cmd` against the port, resolve with the first complete TLS record it sent. */
export async function captureFirstRecord(cmd: (port: number) => string[]): Promise<Uint8Array> {
  const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
  let got = new Uint8Array(0);
  const server = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(socket, chunk) {
        const next = new Uint8Array(got.length + chunk.length);
        next.set(got);
        next.set(chunk, got.length);
        got = next;
        if (got.length >= 5) {
          const end = 5 + ((got[3] << 8) | got[4]);
          if (got.length >= end) {
            resolve(got.slice(0, end));
            socket.end();
          }
        }
      },
    },
  });
  const argv = cmd(server.port);
  const child = Bun.spawn(argv, { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  const timer = setTimeout(() => reject(new Error(`no complete record from ${argv[0]} within 10 s`)), 10_000);
  try {
    return await promise;
  } finally {
    clearTimeout(timer);
    child.kill();
    await child.exited;
    server.stop(true);
  }
}

if (import.meta.main) {
  for (const c of CAPTURES) {
    const bytes = await captureFirstRecord(c.cmd);
    await Bun.write(join(OUT, c.file), bytes);
    console.log(JSON.stringify({ file: c.file, bytes: bytes.length, cmd: c.cmd(0).join(" ") }));
  }
}
