/**
 * The set-up rate client, spawned by bench/e2e/throughput.ts in its own process: N new connections, K at a time,
 * each closed as soon as it is set up, and the rate of set-ups per second.
 *
 *   bun bench/e2e/setup-client.ts --mode tunnel|tcp --port P [--origin-port O] [--n 5000] [--concurrency 50]
 *
 *   tunnel  TCP to the proxy, CONNECT 127.0.0.1-named host:O, read the answer head: 200 counts (no TLS)
 *   tcp     a new TCP connection to P (the origin), counted once it is established
 * Prints one JSON line `{ ev: "done", ok, failed, ms, perSecond, errors }`. Every connection has a 10 s deadline.
 */
import type { Socket } from "bun";
import { emitLine } from "./child-io";
import { connectHead, readHead } from "./tls-client";

const argv = process.argv.slice(2);
const arg = (name: string, dflt?: string) => {
  const i = argv.indexOf(name);
  const v = i >= 0 ? argv[i + 1] : dflt;
  if (v === undefined) {
    console.error(`setup-client: ${name} is required`);
    process.exit(2);
  }
  return v;
};
const mode = arg("--mode");
if (mode !== "tunnel" && mode !== "tcp") {
  console.error("setup-client: --mode tunnel|tcp");
  process.exit(2);
}
const port = Number(arg("--port"));
const originPort = Number(arg("--origin-port", "0"));
const host = arg("--host", "qagpublic.qg1.apps.qualys.com");
const n = Number(arg("--n", "5000"));
const concurrency = Number(arg("--concurrency", "50"));
const HEAD = connectHead(`${host}:${originPort}`, "agate-bench");
const DEADLINE_MS = 10_000;

type C = { buf: Uint8Array | null; done: ((err: string | null) => void) | null; timer: ReturnType<typeof setTimeout> | null };
const errors: Record<string, number> = {};

function finish(c: C, s: Socket<C> | null, err: string | null) {
  const d = c.done;
  if (!d) return;
  c.done = null;
  if (c.timer) clearTimeout(c.timer);
  s?.terminate();
  d(err);
}

const handlers = {
  open(s: Socket<C>) {
    if (mode === "tcp") return finish(s.data, s, null);
    s.write(HEAD);
  },
  data(s: Socket<C>, d: Uint8Array) {
    const h = readHead(s.data, d);
    if (!h) return;
    finish(s.data, s, h.head.startsWith("HTTP/1.1 200") || h.head.startsWith("HTTP/1.0 200") ? null : `status-${h.head.slice(9, 12)}`);
  },
  close(s: Socket<C>) {
    finish(s.data, null, "closed-early");
  },
  error() {},
  connectError(s: Socket<C>) {
    finish(s.data, null, "tcp-connect");
  },
};

function one(): Promise<string | null> {
  return new Promise((res) => {
    const c: C = { buf: null, done: res, timer: null };
    c.timer = setTimeout(() => finish(c, null, "timeout"), DEADLINE_MS);
    Bun.connect<C>({ hostname: "127.0.0.1", port, data: c, socket: handlers } as never).catch(() => finish(c, null, "tcp-connect"));
  });
}

let ok = 0;
let failed = 0;
let next = 0;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < n) {
      next++;
      const e = await one();
      if (e) {
        failed++;
        errors[e] = (errors[e] ?? 0) + 1;
      } else ok++;
    }
  }),
);
const ms = performance.now() - t0;
emitLine({ ev: "done", mode, ok, failed, ms: Math.round(ms), perSecond: Math.round(ok / (ms / 1000)), errors });
process.exit(0);
