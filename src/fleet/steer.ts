/**
 * @module Pushing a change to peers (issue 14, "Steering the fleet"): one POST per chosen peer to its
 * `/api/fleet/peer/*` route on the management port — https when `[admin] tls` is on, `Authorization: Bearer`
 * with the fleet token, as the heartbeats (src/fleet/heartbeat.ts) — all peers at once, each bounded by
 * PUSH_TIMEOUT_MS. The answer becomes a per-gateway result with core/fleet-steer.ts. The body may hold a CA key:
 * it is never logged here, and it is sent only to a peer whose certificate verifies when `[fleet] peer_ca` is set
 * (heartbeat.ts `peerTls`: the chain against peer_ca and the host name; a failure is "unreachable" with
 * "certificate not trusted: …", nothing sent).
 */
import type { Config } from "../core/config";
import { decidePeerAnswer, unreachable, type SteerResult } from "../core/fleet-steer";
import { describePeerError, peerTls } from "./heartbeat";

export const PEER_CHAIN_PATH = "/api/fleet/peer/chain";
export const PEER_CONFIG_PATH = "/api/fleet/peer/config";
/** Generous: the receiver checks a chain, applies it and writes its overlay (a few hundred ms when loaded). */
export const PUSH_TIMEOUT_MS = 20_000;

export async function pushToPeer(peer: string, path: string, body: unknown, c: Config, timeoutMs = PUSH_TIMEOUT_MS): Promise<SteerResult> {
  const t = peerTls(c);
  if (t.error) return unreachable(peer, t.error);
  let r: Response;
  try {
    r = await fetch(`${t.scheme}://${peer}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${c.fleet.token}`, "content-type": "application/json", "user-agent": "agate-fleet", "x-agate-fleet-from": c.gateway.name },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
      redirect: "manual",
      ...(t.tls ? { tls: t.tls } : {}),
    } as RequestInit);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.name === "TimeoutError") return unreachable(peer, `no answer within ${timeoutMs} ms`);
    const said = describePeerError(e, peer, t);
    if (said.startsWith("certificate ")) return unreachable(peer, said);
    const code = err.code ?? err.name ?? "error";
    const msg = (err.message ?? "").replace(new RegExp(`^${code}:\\s*`), "").slice(0, 200);
    return unreachable(peer, msg ? `${code}: ${msg}` : code);
  }
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(await r.text());
  } catch {
    // not JSON: decidePeerAnswer says the status
  }
  return decidePeerAnswer(peer, r.status, parsed);
}

/** Every target at once; "self" is applied by `self()`, the others pushed. Results in the order of `targets`. */
export async function steer(targets: string[], self: () => Promise<SteerResult>, peer: (p: string) => Promise<SteerResult>): Promise<SteerResult[]> {
  return Promise.all(targets.map((t) => (t === "self" ? self() : peer(t))));
}
