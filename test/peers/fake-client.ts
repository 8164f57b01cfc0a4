/** Raw TCP clients for tests: send exact bytes, read exact answers, hold tunnels open. */
import type { Socket } from "bun";

/** Write `text`, collect everything until the server closes (or `waitMs`). */
export async function rawExchange(port: number, text: string | Uint8Array, opts: { waitMs?: number } = {}): Promise<string> {
  const chunks: Uint8Array[] = [];
  const dec = new TextDecoder("latin1");
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (s?: Socket) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s?.end();
      resolve(dec.decode(Buffer.concat(chunks)));
    };
    let sock: Socket | undefined;
    const t = setTimeout(() => finish(sock), opts.waitMs ?? 5000);
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          sock = s;
          s.write(text);
        },
        data(_s, d) {
          chunks.push(new Uint8Array(d));
        },
        close() {
          finish();
        },
        error() {
          finish();
        },
      },
    }).catch((e) => {
      // A refused connection is an answer too (e.g. a draining gateway that closed its listener).
      clearTimeout(t);
      done = true;
      resolve(`(connect failed: ${(e as { code?: string }).code ?? (e as Error).message})`);
    });
  });
}

export type Tunnel = {
  head: string;
  write: (b: string | Uint8Array) => void;
  received: () => string;
  receivedBytes: () => number;
  closed: Promise<boolean>;
  destroy: () => void;
  socket: Socket;
};

/** Send CONNECT and wait for the answer's head; the returned tunnel keeps reading. */
export async function openTunnel(port: number, authority: string, extraHeaders = ""): Promise<Tunnel> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  let head = "";
  let headBuf = "";
  let resolveHead!: (h: string) => void;
  let resolveClosed!: (b: boolean) => void;
  const headP = new Promise<string>((r) => (resolveHead = r));
  const closed = new Promise<boolean>((r) => (resolveClosed = r));
  const dec = new TextDecoder("latin1");
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      open(s) {
        s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${extraHeaders}\r\n`);
      },
      data(_s, d) {
        if (!head) {
          headBuf += dec.decode(d);
          const i = headBuf.indexOf("\r\n\r\n");
          if (i >= 0) {
            head = headBuf.slice(0, i + 4);
            const rest = headBuf.slice(i + 4);
            if (rest) {
              chunks.push(new TextEncoder().encode(rest));
              total += rest.length;
            }
            resolveHead(head);
          }
          return;
        }
        chunks.push(new Uint8Array(d));
        total += d.byteLength;
      },
      close() {
        if (!head) resolveHead(headBuf);
        resolveClosed(true);
      },
      error() {},
    },
  });
  // bounds, not waits: a gateway that never answers or never closes fails the test instead of hanging it
  const h = await Promise.race([headP, Bun.sleep(10_000).then(() => "(no answer within 10s)")]);
  return {
    head: h,
    write: (b) => void sock.write(b),
    received: () => dec.decode(Buffer.concat(chunks)),
    receivedBytes: () => total,
    closed: Promise.race([closed, Bun.sleep(10_000).then(() => false)]),
    destroy: () => sock.terminate(),
    socket: sock,
  };
}
