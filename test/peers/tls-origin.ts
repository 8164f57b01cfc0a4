/**
 * A TLS origin on 127.0.0.1 for end-to-end tests: counts requests per path, serves deterministic bodies,
 * and can stream large or slow responses. Stop it with `stop()` (or `using`).
 */
import type { Server } from "bun";
import type { TestPki } from "./test-ca";

export type Origin = {
  port: number;
  url: (host: string, path: string) => string;
  hits: Map<string, number>;
  requests: { method: string; path: string; headers: Record<string, string>; bodyBytes: number; sni?: string }[];
  stop(): void;
  [Symbol.dispose](): void;
};

/** Deterministic bytes: byte i of a body is (i * 31 + 7) & 255. */
export function patternBytes(n: number, offset = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = ((offset + i) * 31 + 7) & 255;
  return b;
}

export function startTlsOrigin(pki: TestPki | null, routes: Record<string, (req: Request) => Response | Promise<Response>> = {}): Origin {
  const hits = new Map<string, number>();
  const requests: Origin["requests"] = [];
  const server: Server<unknown> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: pki ? { cert: pki.certPem, key: pki.keyPem } : undefined,
    idleTimeout: 30,
    async fetch(req) {
      const u = new URL(req.url);
      hits.set(u.pathname, (hits.get(u.pathname) ?? 0) + 1);
      // /raw/* routes get the request unread (to stream large bodies); the others see it buffered.
      if (u.pathname.startsWith("/raw/") && routes[u.pathname]) {
        requests.push({ method: req.method, path: u.pathname, headers: Object.fromEntries(req.headers), bodyBytes: -1 });
        return routes[u.pathname]!(req);
      }
      const body = req.body ? new Uint8Array(await req.arrayBuffer()) : new Uint8Array(0);
      requests.push({ method: req.method, path: u.pathname, headers: Object.fromEntries(req.headers), bodyBytes: body.byteLength });
      const route = routes[u.pathname];
      if (route) return route(req);
      if (u.pathname.startsWith("/bytes/")) {
        const n = Number(u.pathname.slice(7));
        return new Response(patternBytes(n), { headers: { "content-type": "application/octet-stream" } });
      }
      if (u.pathname === "/echo") return new Response(body, { headers: { "x-echo-bytes": String(body.byteLength) } });
      if (u.pathname === "/stream") {
        // /stream?n=N&ms=M: N lines "tick i", one every M ms (a long-lived download to watch through a tunnel)
        const n = Number(u.searchParams.get("n") ?? 100);
        const ms = Number(u.searchParams.get("ms") ?? 50);
        let i = 0;
        return new Response(
          new ReadableStream({
            async pull(ctrl) {
              if (i >= n) return ctrl.close();
              await Bun.sleep(ms); // the scenario: a slow download, one line every ms
              ctrl.enqueue(new TextEncoder().encode(`tick ${i++}\n`));
            },
          }),
          { headers: { "content-type": "text/plain" } },
        );
      }
      return new Response(`hello from origin ${u.pathname}\n`, { headers: { "content-type": "text/plain" } });
    },
  });
  const o: Origin = {
    port: server.port!,
    url: (host, path) => `${pki ? "https" : "http"}://${host}:${server.port}${path}`,
    hits,
    requests,
    stop: () => server.stop(true),
    [Symbol.dispose]: () => server.stop(true),
  };
  return o;
}
