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
 *
 * With `--artifacts` (the savings benchmark, bench/e2e/savings.ts) it also serves cacheable artifacts and counts
 * what it sent, per path (query included), so the benchmark's upstream figures are the origin's own:
 *   GET /artifact/<name>?size=<bytes>&delay_ms=<ms>&max_age=<s>  artifactBytes(name, size) (bench/e2e/artifact.ts)
 *                     with Cache-Control: max-age, a strong ETag and Last-Modified; If-None-Match → 304; the answer
 *                     waits delay_ms first (the cold stampede uses it so the first requests overlap)
 *   stdin "stats"     prints `{ "ev": "stats", "artifacts": { "<path>": { requests, full, notModified, bytes } } }`
 * Without the flag those paths are answered like any other and stdin is only watched for closing, as before.
 */
import { readFileSync } from "node:fs";
import { patternBytes } from "../../test/peers/tls-origin";
import { artifactBytes, artifactEtag, sha256Hex } from "./artifact";
import { stdinLines } from "./child-io";

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
const ARTIFACTS = process.argv.includes("--artifacts");
const MAX_ARTIFACT_BYTES = 256 * MIB;
const MAX_DELAY_MS = 60_000;
/** Fixed, so a revalidation could compare it; the artifacts never change during a run. */
const LAST_MODIFIED = new Date(Date.now() - 86_400_000).toUTCString();

type ArtifactCount = { requests: number; full: number; notModified: number; bytes: number };
const artifactCounts = new Map<string, ArtifactCount>();
const artifactBodies = new Map<string, { body: Uint8Array; etag: string }>();

async function artifactResponse(req: Request, pathWithQuery: string): Promise<Response> {
  const q = pathWithQuery.indexOf("?");
  const name = decodeURIComponent(pathWithQuery.slice("/artifact/".length, q < 0 ? undefined : q));
  const params = new URLSearchParams(q < 0 ? "" : pathWithQuery.slice(q + 1));
  const size = Number(params.get("size") ?? 2 * MIB);
  const delayMs = Number(params.get("delay_ms") ?? 0);
  const maxAge = Number(params.get("max_age") ?? 3600);
  if (!name || !Number.isInteger(size) || size < 1 || size > MAX_ARTIFACT_BYTES) return new Response(`bad artifact name or size (1..${MAX_ARTIFACT_BYTES})\n`, { status: 400 });
  if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > MAX_DELAY_MS || !Number.isInteger(maxAge) || maxAge < 0) return new Response("bad delay_ms or max_age\n", { status: 400 });
  let count = artifactCounts.get(pathWithQuery);
  if (!count) artifactCounts.set(pathWithQuery, (count = { requests: 0, full: 0, notModified: 0, bytes: 0 }));
  count.requests++;
  const key = `${name}\0${size}`;
  let a = artifactBodies.get(key);
  if (!a) {
    const body = artifactBytes(name, size);
    artifactBodies.set(key, (a = { body, etag: artifactEtag(sha256Hex(body)) }));
  }
  if (delayMs) await Bun.sleep(delayMs);
  const headers = { "cache-control": `max-age=${maxAge}`, etag: a.etag, "last-modified": LAST_MODIFIED, "content-type": "application/octet-stream" };
  const inm = req.headers.get("if-none-match");
  if (inm && inm.split(",").some((t) => t.trim().replace(/^W\//, "") === a.etag)) {
    count.notModified++;
    return new Response(null, { status: 304, headers });
  }
  count.full++;
  count.bytes += a.body.byteLength;
  return new Response(a.body, { headers });
}
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
    if (ARTIFACTS && path.startsWith("/artifact/")) return artifactResponse(req, path);
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
  for await (const cmd of stdinLines()) {
    if (!ARTIFACTS) continue; // input is ignored
    if (cmd === "stats") console.log(JSON.stringify({ ev: "stats", artifacts: Object.fromEntries(artifactCounts) }));
  }
  stop();
})();
