/**
 * The patch benchmark's vendor download server, in its own process so its CPU is neither the gateway's nor the
 * clients': two test/peers/range-origin.ts servers (Range, ETag, If-Match; they count the body bytes they send),
 * one over TLS with the test PKI and one plain HTTP, both on 127.0.0.1.
 *
 *   bun bench/e2e/patch-origin-fixture.ts --cert FILE --key FILE
 *
 * stdout: `{ "ev": "listening", "https": PORT, "http": PORT, "pid": P }`, then one JSON line per command.
 * stdin, one JSON command per line:
 *   { "cmd": "set", "path": "/kb/x.msu", "file": "/tmp/…", "etag": "\"v1\"" }  → { "ev": "set" } (both servers)
 *   { "cmd": "stats" }  → { "ev": "stats", "https": Count, "http": Count }, Count = { bytes, requests, ranged,
 *                         byPath: { "<path>": { requests, ranged, statuses: { "200": n, … } } } }
 * Stops when stdin closes or on SIGTERM.
 */
import { readFileSync } from "node:fs";
import { startRangeOrigin, type RangeOrigin } from "../../test/peers/range-origin";
import type { TestPki } from "../../test/peers/test-ca";
import { emitLine as emit, stdinLines } from "./child-io";

function arg(name: string): string {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (!v) {
    console.error(`usage: bun bench/e2e/patch-origin-fixture.ts --cert FILE --key FILE (missing ${name})`);
    process.exit(2);
  }
  return v;
}

// startRangeOrigin only reads certPem and keyPem from the PKI.
const pki = { certPem: readFileSync(arg("--cert"), "utf8"), keyPem: readFileSync(arg("--key"), "utf8") } as TestPki;
const servers = { https: startRangeOrigin(pki), http: startRangeOrigin(null) };

function count(o: RangeOrigin) {
  const byPath: Record<string, { requests: number; ranged: number; statuses: Record<string, number> }> = {};
  let ranged = 0;
  for (const r of o.requests) {
    const p = (byPath[r.path] ??= { requests: 0, ranged: 0, statuses: {} });
    p.requests++;
    if (r.range) (p.ranged++, ranged++);
    p.statuses[r.status] = (p.statuses[r.status] ?? 0) + 1;
  }
  return { bytes: o.bytesSent(), requests: o.requests.length, ranged, byPath };
}

function stop() {
  servers.https.stop();
  servers.http.stop();
  process.exit(0);
}
process.on("SIGTERM", stop);

emit({ ev: "listening", https: servers.https.port, http: servers.http.port, pid: process.pid });

for await (const line of stdinLines()) {
  if (!line) continue;
  try {
    const c = JSON.parse(line);
    if (c.cmd === "set") {
      for (const s of Object.values(servers)) s.setFile(String(c.path), String(c.file), String(c.etag));
      emit({ ev: "set" });
    } else if (c.cmd === "stats") emit({ ev: "stats", https: count(servers.https), http: count(servers.http) });
    else emit({ ev: "error", message: `unknown command ${JSON.stringify(c.cmd)}` });
  } catch (e) {
    emit({ ev: "error", message: String(e) });
  }
}
stop();
