/**
 * @module The CA downloads on the management port, with no token (the certificates are public by nature): the same
 * paths and answers as the agent ports (`/ca.pem`, `/ca.der`, `/ca`, `/ca.msi`, `/ca-bundle.pem`, `?next=1`),
 * decided by the one function both use (core/ca-page.ts `decideCaDownload`), so the ports cannot drift apart.
 */
import { caRouteOf, decideCaDownload, isCaRefusal } from "../core/ca-page";
import { ProxyError, statusFor } from "../core/errors";
import { makeAgentCaCache } from "../store/agent-ca";
import type { AdminDeps } from "./deps";

const agentCaOf = makeAgentCaCache();

/** The answer to a CA download, or null when `req` is not one. */
export function answerCaDownload(req: Request, url: URL, deps: AdminDeps): Response | null {
  const ask = caRouteOf(req.method, url.pathname + url.search);
  if (ask === null) return null;
  const d = decideCaDownload(agentCaOf(deps.ca), ask, req.headers.get("host"));
  if (isCaRefusal(d)) {
    const status = statusFor(new ProxyError(d.refuse, "client", d.reason));
    return new Response(JSON.stringify({ error: d.reason, code: d.refuse }, null, 2) + "\n", {
      status,
      headers: { "content-type": "application/json", "cache-control": "no-store" },
    });
  }
  const headers = new Headers(d.headers);
  // the management page's own CSP is stricter about frames; the CA page keeps its own (inline style only)
  return new Response(req.method === "HEAD" ? null : d.body, { headers });
}
