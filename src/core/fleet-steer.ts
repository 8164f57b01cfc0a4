/**
 * @module Steering the fleet (issue 14), the pure rules: which gateways a change may go to (this one, "self", and
 * the `[fleet] peers`, nothing else), which config keys a push may carry (the agent-facing policy: allowed
 * domains, minimum TLS, cache rules and the cache's timing knobs — never ports, tokens, the fleet itself or the
 * CA, which are per gateway), and what a peer's answer means for the per-gateway result (applied / refused with
 * the receiver's reason / unreachable). No I/O: src/fleet/steer.ts sends, src/admin/fleet-steer.ts applies.
 */

/** One gateway's outcome of a fleet change. */
/** "unconfirmed": the receiver took the change (config, overlay, audit) but a worker thread did not confirm it switched */
export type SteerOutcome = "applied" | "unconfirmed" | "refused" | "unreachable";
export type SteerResult = {
  /** "self" or a peer's "host:port" as in [fleet] peers */
  gateway: string;
  result: SteerOutcome;
  /** the receiver's own reason (refused) or why it could not be reached; null when applied */
  reason: string | null;
  /** the config key or form field the receiver named, when it did */
  field?: string;
  /** the receiver's HTTP status (refused, applied) */
  http_status?: number;
  /** what the receiver answered when applied (certificate id, restart_required …) */
  detail?: Record<string, unknown>;
};

/**
 * The keys a config push may set, by section. The policy agents meet, identical across a pool behind one load
 * balancer; everything else (ports, listen addresses, tokens, peers, CA files, data_dir, workers) belongs to one
 * machine and a push of it is refused naming the key.
 */
export const PUSHABLE: Readonly<Record<string, readonly string[]>> = {
  cache: ["allowed_domains", "min_tls", "rules", "stale_if_error_s", "origin_timeout_s", "negative_ttl_s"],
};

export const SELF = "self";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === "object" && !Array.isArray(v);

/** A config part to push: only PUSHABLE keys, at least one. Values are checked by each receiver's parseConfig. */
export function checkConfigPart(part: unknown): { ok: true; part: Obj } | { ok: false; error: string; field: string } {
  if (!isObj(part) || Object.keys(part).length === 0)
    return { ok: false, field: "change", error: `change: expected a JSON object of config sections, e.g. {"cache":{"min_tls":"1.3"}}; pushable keys: ${pushableList()}` };
  for (const [sec, v] of Object.entries(part)) {
    const allowed = PUSHABLE[sec];
    if (!allowed) return { ok: false, field: sec, error: `${sec}: not pushable to other gateways (per-gateway setting); pushable keys: ${pushableList()}` };
    if (!isObj(v) || Object.keys(v).length === 0) return { ok: false, field: sec, error: `${sec}: expected an object of keys, e.g. {"min_tls":"1.3"}` };
    for (const k of Object.keys(v))
      if (!allowed.includes(k)) return { ok: false, field: `${sec}.${k}`, error: `${sec}.${k}: not pushable to other gateways (per-gateway setting); pushable keys: ${pushableList()}` };
  }
  return { ok: true, part };
}

export const pushableList = () => Object.entries(PUSHABLE).flatMap(([s, ks]) => ks.map((k) => `${s}.${k}`)).join(", ");

/**
 * The chosen gateways: a list (or a comma-separated text) of "self" and `[fleet] peers` entries, each once, at
 * least one. A name not in `peers` is refused: a push goes only where heartbeats go, authenticated the same way.
 */
export function parseTargets(v: unknown, peers: readonly string[]): { ok: true; targets: string[] } | { ok: false; error: string } {
  const raw = typeof v === "string" ? v.split(",") : Array.isArray(v) ? v : null;
  if (!raw) return { ok: false, error: `gateways: expected a list of "self" and [fleet] peers ("host:port"), got ${JSON.stringify(v) ?? "nothing"}` };
  const out: string[] = [];
  for (const x of raw) {
    if (typeof x !== "string") return { ok: false, error: `gateways: expected "self" or "host:port", got ${JSON.stringify(x)}` };
    const t = x.trim().toLowerCase();
    if (!t) continue;
    if (t !== SELF && !peers.includes(t))
      return { ok: false, error: `gateways: ${JSON.stringify(x.trim().slice(0, 80))} is not "self" nor one of [fleet] peers (${peers.join(", ") || "none"})` };
    if (!out.includes(t)) out.push(t);
  }
  if (out.length === 0) return { ok: false, error: `gateways: choose at least one ("self" or one of [fleet] peers: ${peers.join(", ") || "none"})` };
  return { ok: true, targets: out };
}

/**
 * What a receiver's HTTP answer means. 2xx: applied. Any other answer is the receiver speaking, so it is refused
 * with its reason — including 401/403 (it does not count this gateway as a peer, or the tokens differ), which say
 * the fleet is misconfigured, not down. Only no answer at all (network error, timeout) is unreachable.
 */
export function decidePeerAnswer(gateway: string, status: number, body: unknown): SteerResult {
  const b = isObj(body) ? body : {};
  if (status >= 200 && status < 300) {
    // `applied: false`: the receiver says its workers did not all confirm (pool.confirm) — not "applied"
    if (b.applied === false) return { gateway, result: "unconfirmed", reason: typeof b.reason === "string" ? b.reason.slice(0, 2000) : "the receiver's workers did not confirm", http_status: status, detail: b };
    return { gateway, result: "applied", reason: null, http_status: status, detail: b };
  }
  const err = typeof b.error === "string" && b.error ? b.error.slice(0, 2000) : `HTTP ${status} without a reason`;
  const r: SteerResult = { gateway, result: "refused", reason: err, http_status: status };
  if (typeof b.field === "string") r.field = b.field;
  return r;
}

export const unreachable = (gateway: string, why: string): SteerResult => ({ gateway, result: "unreachable", reason: why });

/** A one-line summary for logs and the CLI: "3 applied", "1 applied, 1 refused, 1 unreachable". */
export function summarize(results: readonly SteerResult[]): string {
  const n = (o: SteerOutcome) => results.filter((r) => r.result === o).length;
  return (["applied", "unconfirmed", "refused", "unreachable"] as const)
    .filter((o) => n(o) > 0)
    .map((o) => `${n(o)} ${o}`)
    .join(", ") || "nothing";
}
