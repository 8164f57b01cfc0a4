/**
 * A TLS origin that writes exactly the bytes a route returns — for what Bun.serve cannot send: interim 1xx
 * responses (100, 102, 103), unknown status codes, odd Cache-Control and Age values, and bodies cut short (a
 * Content-Length it never honours, a chunked body without its last chunk, a close mid-body). Keep-alive, one request
 * at a time per connection. `stop()` closes the listener and every connection: the origin is then "down".
 */
import type { Socket, TCPSocketListener } from "bun";
import type { TestPki } from "./test-ca";

export type RawAnswer = {
  /** the whole answer, as bytes on the wire (head, interim heads, body) */
  bytes: string | Uint8Array;
  /** close the connection after writing (a cut body, or Connection: close) */
  close?: boolean;
};
export type RawRoute = (req: { method: string; path: string; headers: Record<string, string> }) => RawAnswer;

export type RawOrigin = {
  port: number;
  url: (host: string, path: string) => string;
  requests: { method: string; path: string; headers: Record<string, string> }[];
  stop(): void;
  [Symbol.dispose](): void;
};

type Conn = { buf: string };

/** `HTTP/1.1 <status> X\r\n<headers>\r\n\r\n<body>` with a Content-Length unless `headers` frames the body. */
export function rawResponse(status: number, headers: [string, string][], body = "", interim: string[] = []): string {
  const framed = headers.some(([k]) => /^(content-length|transfer-encoding)$/i.test(k));
  const h = framed ? headers : [...headers, ["Content-Length", String(Buffer.byteLength(body))] as [string, string]];
  return interim.join("") + `HTTP/1.1 ${status} X\r\n` + h.map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n" + body;
}

export function startRawOrigin(pki: TestPki, routes: Record<string, RawRoute>): RawOrigin {
  const requests: RawOrigin["requests"] = [];
  const open = new Set<Socket<Conn>>();
  const listener: TCPSocketListener<Conn> = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: pki.certPem, key: pki.keyPem },
    socket: {
      open(s) {
        s.data = { buf: "" };
        open.add(s);
      },
      close(s) {
        open.delete(s);
      },
      data(s, d) {
        s.data.buf += Buffer.from(d).toString("latin1");
        for (let guard = 0; guard < 100; guard++) {
          const end = s.data.buf.indexOf("\r\n\r\n");
          if (end < 0) return;
          const head = s.data.buf.slice(0, end);
          s.data.buf = s.data.buf.slice(end + 4); // GETs only: no request bodies here
          const [line, ...lines] = head.split("\r\n");
          const [method = "", path = ""] = line!.split(" ");
          const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
          const req = { method, path, headers };
          requests.push(req);
          const route = routes[path.split("?")[0]!];
          const a = route ? route(req) : { bytes: rawResponse(404, [], "no route\n") };
          s.write(a.bytes);
          if (a.close) {
            s.end();
            return;
          }
        }
      },
    },
  });
  const stop = () => {
    listener.stop(true);
    for (const s of open) s.end();
  };
  return {
    port: listener.port,
    url: (host, path) => `https://${host}:${listener.port}${path}`,
    requests,
    stop,
    [Symbol.dispose]: stop,
  };
}
