/**
 * @module Peers for the adversarial suites (issue 12): a recording origin that keeps every byte each connection sent
 * and splits them into requests with a strict parser of its own reading (so a desync shows as a second request or a
 * parse failure), a cache-mode gateway pointed at such origins, and a client that speaks raw bytes inside an
 * intercepted TLS session (CONNECT, then a TLS handshake verified against the gateway's CA).
 */
import net from "node:net";
import tls from "node:tls";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket, TCPSocketListener } from "bun";
import { BodyDecoder, framingForRequest } from "../../src/core/http1/body";
import { NEED_MORE, parseRequestHead } from "../../src/core/http1/head";
import { startGateway, type Gateway } from "./gateway";
import type { TestPki } from "./test-ca";

export const HOST = "qagpublic.qg1.apps.qualys.com";

/** One request as the origin read it: its head's bytes exactly, and its de-framed body. */
export type Seen = { head: string; method: string; path: string; body: string; wire: string };

export type RecordingOrigin = {
  port: number;
  /** every byte received, per connection, in arrival order */
  raw: () => string[];
  seen: () => Seen[];
  /** the origin could not read what the gateway sent (a desync, or a framing the origin refuses) */
  errors: () => string[];
  reset: () => void;
  stop: () => void;
};

type Conn = { buf: Uint8Array; idx: number; dec: BodyDecoder | null; cur: Seen | null; noise: boolean };

/**
 * An origin on 127.0.0.1 (TLS with `pki`) answering each request `true:<path>` with `Cache-Control: max-age=3600`,
 * so a cacheable GET is stored: a poisoned cache would serve another body for that path.
 */
export function startRecordingOrigin(pki: TestPki | null): RecordingOrigin {
  let raws: string[] = [];
  let seen: Seen[] = [];
  let errors: string[] = [];
  const answer = (s: Socket<Conn>, r: Seen) => {
    const body = `true:${r.path}`;
    s.write(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=3600\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  };
  const pump = (s: Socket<Conn>) => {
    const c = s.data;
    for (let guard = 0; guard < 1000 && c.buf.length; guard++) {
      if (c.dec && c.cur) {
        const r = c.dec.push(c.buf);
        for (const ch of r.chunks) c.cur.body += Buffer.from(ch).toString("latin1");
        const used = c.buf.length - (r.rest?.length ?? 0);
        c.cur.wire += Buffer.from(c.buf.subarray(0, used)).toString("latin1");
        c.buf = r.rest ?? new Uint8Array(0);
        if (!r.done) return;
        seen.push(c.cur);
        answer(s, c.cur);
        c.dec = null;
        c.cur = null;
        continue;
      }
      const h = parseRequestHead(c.buf);
      if (h === NEED_MORE) return;
      const framing = framingForRequest(h.headers);
      const head = Buffer.from(c.buf.subarray(0, h.headBytes)).toString("latin1");
      const cur: Seen = { head, method: h.method, path: h.target, body: "", wire: head };
      c.buf = c.buf.subarray(h.headBytes);
      c.dec = new BodyDecoder(framing, "client");
      c.cur = cur;
      if (framing.kind === "none") {
        seen.push(cur);
        answer(s, cur);
        c.dec = null;
        c.cur = null;
      }
    }
  };
  const l: TCPSocketListener<Conn> = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    ...(pki ? { tls: { cert: pki.certPem, key: pki.keyPem } } : {}),
    socket: {
      open(s) {
        s.data = { buf: new Uint8Array(0), idx: raws.push("") - 1, dec: null, cur: null, noise: false };
      },
      data(s, d) {
        // the gateway's platform-link probe opens TLS to mapped platform hosts on the allowed ports: not a request
        if (!pki && s.data.buf.length === 0 && raws[s.data.idx] === "" && new Uint8Array(d)[0] === 0x16) s.data.noise = true;
        if (s.data.noise) return;
        raws[s.data.idx] += Buffer.from(d).toString("latin1");
        const b = new Uint8Array(s.data.buf.length + d.byteLength);
        b.set(s.data.buf);
        b.set(new Uint8Array(d), s.data.buf.length);
        s.data.buf = b;
        try {
          pump(s);
        } catch (e) {
          errors.push(`${(e as Error).message} in ${JSON.stringify(raws[s.data.idx]!.slice(0, 200))}`);
          s.end();
        }
      },
    },
  });
  return {
    port: l.port,
    raw: () => raws.filter((r) => r !== "" && r.charCodeAt(0) !== 0x16),
    seen: () => seen,
    errors: () => errors,
    reset: () => ((raws = []), (seen = []), (errors = [])),
    stop: () => l.stop(true),
  };
}

export type CacheGateway = { gw: Gateway; ca: string; [Symbol.asyncDispose]: () => Promise<void> };

/** A cache-mode gateway (2 workers unless told) that maps HOST to loopback and allows `ports`; its CA is saved. */
export async function cacheGateway(pki: TestPki, ports: number[], extra: Record<string, Record<string, unknown>> = {}): Promise<CacheGateway> {
  const gw = await startGateway({
    ...extra,
    cache: { enabled: true, port: 0, listen: "127.0.0.1", ...(extra.cache ?? {}) },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports },
    hosts: { [HOST]: "127.0.0.1", ...(extra.hosts ?? {}) },
  });
  const ca = join(gw.dir, "agate-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
  return { gw, ca, [Symbol.asyncDispose]: () => gw[Symbol.asyncDispose]() };
}

/** CONNECT `authority` on `port`, then a TLS handshake for `servername` verified against `caPem`. */
export async function tlsThrough(port: number, caPem: string, authority: string, servername = HOST): Promise<tls.TLSSocket> {
  const raw = net.connect(port, "127.0.0.1");
  await new Promise<void>((r, j) => (raw.once("connect", () => r()), raw.once("error", j)));
  raw.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  let head = "";
  await new Promise<void>((r, j) => {
    const t = setTimeout(() => j(new Error(`no CONNECT answer within 10 s: ${JSON.stringify(head)}`)), 10_000);
    const on = (d: Buffer) => {
      head += d.toString("latin1");
      if (head.includes("\r\n\r\n")) (raw.off("data", on), clearTimeout(t), r());
    };
    raw.on("data", on);
  });
  if (!head.startsWith("HTTP/1.1 200")) throw new Error(`CONNECT ${authority} answered ${JSON.stringify(head.slice(0, 400))}`);
  const t = tls.connect({ socket: raw, servername, ca: caPem });
  await new Promise<void>((r, j) => (t.once("secureConnect", () => r()), t.once("error", j)));
  return t;
}

/**
 * Write `bytes` into a duplex (TLS socket or TCP) and collect the answer until the peer closes or `until` holds,
 * bounded by `ms` (a gateway that neither answers nor closes shows as `timedOut`).
 */
export async function exchange(
  sock: net.Socket,
  bytes: string | Uint8Array,
  until: (got: string) => boolean,
  ms = 8000,
): Promise<{ got: string; closed: boolean; timedOut: boolean }> {
  let got = "";
  let closed = false;
  return new Promise((resolve) => {
    const done = (timedOut: boolean) => {
      clearTimeout(t);
      sock.off("data", on);
      resolve({ got, closed, timedOut });
    };
    const on = (d: Buffer) => {
      got += d.toString("latin1");
      if (until(got)) done(false);
    };
    const t = setTimeout(() => done(true), ms);
    sock.on("data", on);
    sock.once("close", () => ((closed = true), done(false)));
    sock.on("error", () => {});
    sock.write(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes);
  });
}

/** A plain TCP connection to 127.0.0.1:port. */
export async function tcp(port: number): Promise<net.Socket> {
  const s = net.connect(port, "127.0.0.1");
  await new Promise<void>((r, j) => (s.once("connect", () => r()), s.once("error", j)));
  return s;
}

/** How many complete responses `got` holds, reading Content-Length / chunked framing (our own answers use both). */
export function countResponses(got: string, firstIsHead = false): number {
  let n = 0;
  let i = 0;
  for (let guard = 0; guard < 100; guard++) {
    const e = got.indexOf("\r\n\r\n", i);
    if (e < 0 || !got.startsWith("HTTP/1.", i)) return n;
    const head = got.slice(i, e);
    const status = Number(head.slice(9, 12));
    const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
    let end = e + 4;
    if (status === 100 || status === 304 || status === 204) {
      if (status === 100) {
        i = end;
        continue;
      }
    } else if (firstIsHead && n === 0) {
      // the answer to a HEAD has no body, whatever its Content-Length says (RFC 9110 §9.3.2)
    } else if (cl) end += Number(cl[1]);
    else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
      const last = got.indexOf("\r\n0\r\n\r\n", e);
      if (last < 0) return n;
      end = last + 7;
    }
    if (end > got.length) return n;
    n++;
    i = end;
  }
  return n;
}
