/**
 * @module Micro-benchmark of the head parser on the CONNECT hot path: parseRequestHead on typical agent
 * heads (plus findHeadEnd alone, and parse + toRequest as the session does it).
 * Bounded: each case runs a fixed number of iterations (stopping early past a time cap), after a warm-up.
 * Prints one JSON object: { bench, cases: [{ name, iterations, ops_per_s, ns_per_op }] }.
 * Run: `bun bench/micro/parse-head.bench.ts [iterations]`.
 * TODO: move onto bench/harness.ts once it exists (STYLE: one hot function per file via the harness).
 */
import { toRequest } from "../../src/core/connect";
import { findHeadEnd, NEED_MORE, parseRequestHead } from "../../src/core/http1/head";

const ITERATIONS = Math.max(1000, Math.min(Number(process.argv[2] ?? 1_000_000) || 1_000_000, 20_000_000));
const WARMUP = Math.min(50_000, ITERATIONS);
const CAP_MS = 3000;

const enc = new TextEncoder();
const TYPICAL = enc.encode(
  "CONNECT qagpublic.qg1.apps.qualys.com:443 HTTP/1.1\r\nHost: qagpublic.qg1.apps.qualys.com:443\r\nUser-Agent: QualysAgent/6.1.0.28 (Linux x86_64)\r\nProxy-Connection: Keep-Alive\r\n\r\n",
);
const MINIMAL = enc.encode("CONNECT cask.qg2.apps.qualys.eu:443 HTTP/1.1\r\n\r\n");
// curl's CONNECT through an authenticating proxy, preceded by a stray CRLF, followed by the ClientHello
const WITH_AUTH = enc.encode(
  "\r\nCONNECT camsrepo.qg1.apps.qualys.co.uk:443 HTTP/1.1\r\nHost: camsrepo.qg1.apps.qualys.co.uk:443\r\nProxy-Authorization: Basic YWdlbnQ6c2VjcmV0LXBhc3N3b3Jk\r\nUser-Agent: curl/7.88.1\r\nProxy-Connection: Keep-Alive\r\n\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
);
const HALF = TYPICAL.subarray(0, TYPICAL.length >> 1);

const cases: { name: string; run: () => unknown }[] = [
  { name: "parseRequestHead typical CONNECT (4 headers)", run: () => parseRequestHead(TYPICAL) },
  { name: "parseRequestHead minimal CONNECT", run: () => parseRequestHead(MINIMAL) },
  { name: "parseRequestHead CONNECT + auth + CRLF + TLS bytes", run: () => parseRequestHead(WITH_AUTH) },
  { name: "parseRequestHead incomplete (NEED_MORE)", run: () => parseRequestHead(HALF) },
  { name: "findHeadEnd typical CONNECT", run: () => findHeadEnd(TYPICAL) },
  {
    name: "parseRequestHead + toRequest typical CONNECT",
    run: () => {
      const h = parseRequestHead(TYPICAL);
      return h === NEED_MORE ? null : toRequest(h, { allowAbsolute: false });
    },
  },
];

let sink = 0;
const results = cases.map(({ name, run }) => {
  for (let i = 0; i < WARMUP; i++) sink += run() === null ? 0 : 1;
  const start = performance.now();
  let n = 0;
  // Check the clock every 4096 iterations only, so timing does not dominate the loop.
  while (n < ITERATIONS) {
    const end = Math.min(n + 4096, ITERATIONS);
    for (; n < end; n++) sink += run() === null ? 0 : 1;
    if (performance.now() - start > CAP_MS) break;
  }
  const ms = performance.now() - start;
  return { name, iterations: n, ops_per_s: Math.round((n / ms) * 1000), ns_per_op: Number(((ms * 1e6) / n).toFixed(1)) };
});

console.log(JSON.stringify({ bench: "parse-head", iterations: ITERATIONS, sink: sink > 0, cases: results }, null, 2));
