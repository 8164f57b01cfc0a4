/**
 * A vendor's download server for patch-mode tests: serves files from disk with strong ETags, single byte ranges
 * (206 + Content-Range), If-Match (412 when the file changed) and If-None-Match, optionally over TLS, and counts
 * the body bytes it sent so tests can assert what the gateway cost the origin.
 */
import { openSync, readSync, closeSync, statSync, writeFileSync, openSync as open2, writeSync } from "node:fs";
import type { TestPki } from "./test-ca";
import { patternBytes } from "./tls-origin";

export type RangeOrigin = {
  port: number;
  bytesSent: () => number;
  requests: { path: string; range: string | null; status: number }[];
  setFile: (path: string, file: string, etag: string) => void;
  /** per-chunk delay for paths, to make fills slow */
  throttle: Map<string, number>;
  url: (host: string, path: string) => string;
  stop: () => void;
};

/** Write `size` deterministic bytes (pattern offset `seed`) to `file`, 8 MB at a time. */
export function writePatternFile(file: string, size: number, seed = 0) {
  const fd = open2(file, "w");
  const CH = 8 * 1024 * 1024;
  for (let off = 0; off < size; off += CH) {
    const n = Math.min(CH, size - off);
    writeSync(fd, patternBytes(n, off + seed));
  }
  closeSync(fd);
}

export async function sha256OfPattern(size: number, start = 0, seed = 0): Promise<string> {
  const h = new Bun.CryptoHasher("sha256");
  const CH = 8 * 1024 * 1024;
  for (let off = 0; off < size; off += CH) h.update(patternBytes(Math.min(CH, size - off), start + off + seed));
  return h.digest("hex");
}

export function startRangeOrigin(pki: TestPki | null): RangeOrigin {
  const files = new Map<string, { file: string; etag: string }>();
  const requests: RangeOrigin["requests"] = [];
  const throttle = new Map<string, number>();
  let sent = 0;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: pki ? { cert: pki.certPem, key: pki.keyPem } : undefined,
    idleTimeout: 60,
    fetch(req) {
      const u = new URL(req.url);
      const f = files.get(u.pathname);
      const range = req.headers.get("range");
      const done = (r: Response) => (requests.push({ path: u.pathname, range, status: r.status }), r);
      if (!f) return done(new Response("not found\n", { status: 404 }));
      const size = statSync(f.file).size;
      const base = { etag: f.etag, "accept-ranges": "bytes", "cache-control": "max-age=3600", "content-type": "application/octet-stream" };
      const ifMatch = req.headers.get("if-match");
      if (ifMatch && ifMatch !== f.etag) return done(new Response(null, { status: 412, headers: { etag: f.etag } }));
      if (req.headers.get("if-none-match") === f.etag) return done(new Response(null, { status: 304, headers: base }));
      let start = 0, end = size - 1, status = 200;
      const m = range && /^bytes=(\d*)-(\d*)$/.exec(range);
      if (m) {
        if (m[1] === "") start = Math.max(0, size - Number(m[2]));
        else {
          start = Number(m[1]);
          end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
        }
        if (start >= size) return done(new Response(null, { status: 416, headers: { "content-range": `bytes */${size}` } }));
        status = 206;
      }
      const len = end - start + 1;
      const delay = throttle.get(u.pathname) ?? 0;
      let off = start;
      const fd = openSync(f.file, "r");
      const body = new ReadableStream({
        type: "bytes",
        async pull(ctrl) {
          if (off > end) {
            closeSync(fd);
            return ctrl.close();
          }
          if (delay) await Bun.sleep(delay); // the scenario: a throttled origin (throttle())
          const n = Math.min(1024 * 1024, end - off + 1);
          const buf = new Uint8Array(n);
          readSync(fd, buf, 0, n, off);
          off += n;
          sent += n;
          ctrl.enqueue(buf);
        },
        cancel() {
          closeSync(fd);
        },
      });
      const headers: Record<string, string> = { ...base, "content-length": String(len) };
      if (status === 206) headers["content-range"] = `bytes ${start}-${end}/${size}`;
      return done(new Response(req.method === "HEAD" ? null : body, { status, headers }));
    },
  });
  return {
    port: server.port!,
    bytesSent: () => sent,
    requests,
    throttle,
    setFile: (path, file, etag) => files.set(path, { file, etag }),
    url: (host, path) => `${pki ? "https" : "http"}://${host}:${server.port}${path}`,
    stop: () => server.stop(true),
  };
}
