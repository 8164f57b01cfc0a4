/**
 * @module Pass-through on the cache port: a request the cache does not answer (unsafe method, a body, a rule that
 * does not cache, a fill that kept giving way) goes to the origin as it came — its body streamed as it arrives, the
 * answer streamed back — with back-pressure both ways and nothing buffered whole. The origin is `rt.origins`.
 */
import { type Headers, getHeader } from "../core/http1/head";
import { ProxyError, statusFor } from "../core/errors";
import type { ExchangeHandle } from "./origin-client";
import { stripHopByHop } from "./origin-client";
import type { HttpRequest, RequestBody, Responder } from "./http-session";
import type { WorkerRuntime } from "./runtime";

/**
 * Forward `req` and stream the answer to `res`. `onHead` sees the origin's status and headers before the agent
 * does (cache-request uses it to invalidate after an unsafe method, RFC 9111 §4.4). Resolves when the answer
 * ended (or failed: the agent then got an error, or a cut connection mid-body); rejects when the origin could not
 * be reached (the caller answers with `statusFor`).
 */
export function forward(
  rt: WorkerRuntime,
  req: HttpRequest,
  res: Responder,
  body: RequestBody,
  onHead?: (status: number, headers: Headers) => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let exchange: ExchangeHandle | null = null;
    rt.origins
      .start(
        { scheme: req.scheme, target: req.target, method: req.method, path: req.path, headers: req.headers, body: req.body },
        {
          onInterim: (h) => res.interim?.(h.status, stripHopByHop(h.headers)),
          onHead: (h) => {
            onHead?.(h.status, h.headers);
            const noBody = req.method === "HEAD" || h.status === 204 || h.status === 304;
            if (noBody) return res.head(h.status, stripHopByHop(h.headers), null, h.reason); // Content-Length kept as the origin said
            const len = getHeader(h.headers, "content-length");
            const headers = stripHopByHop(h.headers).filter(([k]) => k.toLowerCase() !== "content-length");
            res.head(h.status, headers, len !== undefined && /^\d+$/.test(len) ? Number(len) : null, h.reason);
          },
          onData: (chunk) => {
            const ok = res.write(chunk);
            if (!ok) res.onDrain(() => exchange?.resume());
            return ok;
          },
          onEnd: () => {
            res.end();
            resolve();
          },
          onError: (e: ProxyError) => {
            if (!res.closed) res.error(statusFor(e), e.message);
            resolve();
          },
        },
        { config: rt.config, policy: rt.policy },
      )
      .then((ex) => {
        exchange = ex;
        body.pipeTo(ex);
      }, reject);
  });
}
