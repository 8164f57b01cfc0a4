/**
 * The benchmark's TLS origin, in its own process so its sockets and CPU are not the gateway's or the load
 * generator's: `bun bench/e2e/origin-fixture.ts --cert FILE --key FILE`.
 *   GET /stream/<MB>  MB × 1 MiB of deterministic bytes (test/peers/tls-origin.ts patternBytes, one 1 MiB
 *                     buffer sent again and again) for the single-stream throughput phase
 *   GET anything else a small keep-alive answer, "hello from origin <path>\n", like test/peers/tls-origin.ts
 * Not startTlsOrigin itself: that helper closes connections idle for 30 s (a 9,000-connection ramp keeps the
 * first ones waiting at the barrier longer than that) and records every request in memory; here idle
 * connections stay open and nothing is kept per request.
 * Prints one JSON line `{ "ev": "listening", "port": N, "pid": P }`; stops on SIGTERM or when stdin closes.
 */
import { readFileSync } from "node:fs";
import { patternBytes } from "../../test/peers/tls-origin";

const MIB = 1024 * 1024;
const MAX_STREAM_MB = 4096;

function arg(name: string): string {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (!v) {
    console.error(`usage: bun bench/e2e/origin-fixture.ts --cert FILE --key FILE (missing ${name})`);
    process.exit(2);
  }
  return v;
}

const CHUNK = patternBytes(MIB);
const SMALL_HEADERS = { "content-type": "text/plain" };

function streamResponse(path: string): Response {
  const mb = Number(path.slice("/stream/".length));
  if (!Number.isInteger(mb) || mb < 1 || mb > MAX_STREAM_MB) return new Response(`bad size (1..${MAX_STREAM_MB} MiB)\n`, { status: 400 });
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= mb) return controller.close();
      sent++;
      controller.enqueue(CHUNK);
    },
  });
  return new Response(body, { headers: { "content-type": "application/octet-stream", "content-length": String(mb * MIB) } });
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  tls: { cert: readFileSync(arg("--cert"), "utf8"), key: readFileSync(arg("--key"), "utf8") },
  idleTimeout: 0, // never close a connection for idleness: the load generator holds them at a barrier
  fetch(req) {
    const url = req.url;
    const path = url.slice(url.indexOf("/", url.indexOf("//") + 2));
    if (path.startsWith("/stream/")) return streamResponse(path);
    return new Response(`hello from origin ${path}\n`, { headers: SMALL_HEADERS });
  },
});
console.log(JSON.stringify({ ev: "listening", port: server.port, pid: process.pid }));

let stopped = false;
const stop = () => {
  if (stopped) return;
  stopped = true;
  server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
// The parent holds our stdin open; when it goes away, so do we (no orphaned origin after a crashed run).
void (async () => {
  for await (const _ of Bun.stdin.stream()) {
    /* input is ignored */
  }
  stop();
})();
