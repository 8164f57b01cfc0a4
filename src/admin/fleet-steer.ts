/**
 * @module Steering the fleet from any gateway's management port (issue 14).
 *
 * For the admin (admin token): `POST /api/fleet/chain` — a customer chain (multipart: root, intermediate, key,
 * common_name, description, gateways) checked once here with `checkChain`, then applied on each chosen gateway;
 * `POST /api/fleet/config` — `{gateways, change}`, a config part of the pushable keys (core/fleet-steer.ts).
 * Both answer one result per gateway: applied / refused (with the receiver's own reason) / unreachable.
 *
 * For peers (fleet token, and only from a `[fleet] peers` address, the doors of `/api/fleet/self`):
 * `POST /api/fleet/peer/chain` and `POST /api/fleet/peer/config`. The receiver runs its OWN checks — the same
 * functions as its own upload / assign / PUT /api/config (admin/certificates.ts, admin/config-change.ts:
 * validation, live apply, the overlay file) — and writes its own audit entry. "applied" is answered only after
 * every live worker thread confirmed the switch (`deps.confirmWorkers`, supervisor/pool.ts, bounded at 5 s);
 * past that the answer is `applied: false` with the worker named ("unconfirmed" in the sender's results).
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { checkChain } from "../core/certs";
import { mergeConfig } from "../core/config";
import { ConfigError } from "../core/errors";
import { checkConfigPart, parseTargets, summarize, type SteerResult } from "../core/fleet-steer";
import { PEER_CHAIN_PATH, PEER_CONFIG_PATH, pushToPeer, steer } from "../fleet/steer";
import type { AdminDeps } from "./deps";
import type { AdminContext } from "./context";
import { assignCertificate, isRefusal, refuse, uploadCertificate, type Refusal } from "./certificates";
import { commitConfig } from "./config-change";
import { BodyTooLarge, MAX_JSON_BODY, MAX_UPLOAD_BODY, checkToken, decideDoor, readBodyLimited, tokenFingerprint } from "./guard";
import { log } from "../log";

export const FLEET_CHAIN_PATH = "/api/fleet/chain";
export const FLEET_CONFIG_PATH = "/api/fleet/config";
/** A chain pushed as JSON: three PEM texts of ≤3 MB each, JSON-escaped. */
const MAX_PEER_CHAIN_BODY = 2 * MAX_UPLOAD_BODY;

type Pems = { root: string; intermediate: string | null; key: string };
type Labels = { common_name: string | null; description: string | null };

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body, null, 2) + "\n", { status, headers: { "content-type": "application/json", "cache-control": "no-store", ...headers } });
const fromRefusal = (r: Refusal) => json(r.status, { error: r.error, ...(r.field ? { field: r.field } : {}), ...(r.extra ?? {}) });

export const isPeerSteerPath = (p: string) => p === PEER_CHAIN_PATH || p === PEER_CONFIG_PATH;
export const isSteerPath = (p: string) => p === FLEET_CHAIN_PATH || p === FLEET_CONFIG_PATH;

const text = (p: string | null) => (p && existsSync(p) ? readFileSync(p, "utf8") : null);

/**
 * Apply a chain on this gateway: reuse an uploaded copy of the very same chain (a second push is not a duplicate),
 * else upload it (checkChain, unique name), then assign it (the config-change path: apply live, overlay).
 */
export async function applyChainHere(deps: AdminDeps, ctx: AdminContext, pems: Pems, labels: Labels): Promise<{ id: string; common_name: string; restart_required: string[]; reused: boolean } | Refusal> {
  let id: string | null = null;
  for (const row of ctx.certs.list()) {
    const f = ctx.certs.files(row.id);
    if (text(f.root) === pems.root && (text(f.chain) ?? null) === (pems.intermediate || null) && text(f.key) === pems.key) id = row.id;
  }
  const reused = id !== null;
  if (!id) {
    const form = new FormData();
    form.set("root", pems.root);
    if (pems.intermediate) form.set("intermediate", pems.intermediate);
    form.set("key", pems.key);
    if (labels.common_name) form.set("common_name", labels.common_name);
    if (labels.description) form.set("description", labels.description);
    const up = await uploadCertificate(deps, ctx, form);
    if (isRefusal(up)) return up;
    id = up.id;
  }
  try {
    const a = await assignCertificate(deps, ctx, id);
    if (isRefusal(a)) return a;
    return { id, common_name: a.assigned.common_name, restart_required: a.restart_required, reused };
  } catch (e) {
    if (e instanceof ConfigError) return refuse(400, e.message, e.key);
    return refuse(500, `the chain was kept as certificate ${id} but could not be assigned: ${(e as Error).message}`, "id");
  }
}

/** Apply a config part on this gateway through its own config-change path (parseConfig, apply, overlay). */
export async function applyConfigHere(deps: AdminDeps, ctx: AdminContext, change: unknown): Promise<{ restart_required: string[]; file: string } | Refusal> {
  const part = checkConfigPart(change);
  if (!part.ok) return refuse(400, part.error, part.field);
  try {
    const r = await commitConfig(deps, ctx, (cur) => mergeConfig(cur, part.part));
    return { restart_required: r.restart_required, file: r.file };
  } catch (e) {
    if (e instanceof ConfigError) return refuse(400, e.message, e.key);
    return refuse(500, (e as Error).message, "change");
  }
}

const asResult = (gateway: string, r: Refusal | Record<string, unknown>, w: WorkersConfirm = { confirmed: true }): SteerResult =>
  isRefusal(r)
    ? { gateway, result: "refused", reason: r.error, http_status: r.status, ...(r.field ? { field: r.field } : {}) }
    : w.confirmed
      ? { gateway, result: "applied", reason: null, detail: r }
      : { gateway, result: "unconfirmed", reason: w.reason, detail: r };

type WorkersConfirm = { confirmed: true } | { confirmed: false; reason: string };
/** Did this gateway's workers switch? (deps.apply already waited; this reads the outcome, bounded.) */
const confirmHere = async (deps: AdminDeps): Promise<WorkersConfirm> => (await deps.confirmWorkers?.()) ?? { confirmed: true };
/** The answer's `applied`, `reason` for a peer's push. */
const confirmFields = (w: WorkersConfirm) => (w.confirmed ? { applied: true } : { ok: false, applied: false, reason: w.reason });

/** Self: apply, then the workers' confirmation. */
const selfResult = async (deps: AdminDeps, r: Refusal | Record<string, unknown>): Promise<SteerResult> => asResult("self", r, isRefusal(r) ? undefined : await confirmHere(deps));

function fleetReady(deps: AdminDeps): Refusal | null {
  if (!deps.config.fleet.token) return refuse(409, "no fleet here: set [fleet] token and peers first (only \"self\" could be chosen)", "fleet.token");
  return null;
}

/** POST /api/fleet/chain (multipart). */
async function assignChain(req: Request, deps: AdminDeps, ctx: AdminContext, note: (d: Record<string, unknown>) => void): Promise<Response> {
  const type = req.headers.get("content-type") ?? "";
  if (!/^multipart\/form-data/i.test(type))
    return json(415, { error: "upload the chain as multipart/form-data (fields gateways, common_name, description; files root, intermediate, key)", field: "body" });
  const bytes = await readBodyLimited(req, MAX_UPLOAD_BODY);
  let form: FormData;
  try {
    form = (await new Response(bytes, { headers: { "content-type": type } }).formData()) as unknown as FormData;
  } catch (e) {
    return json(400, { error: `the multipart body could not be read: ${(e as Error).message}`, field: "body" });
  }
  const targets = parseTargets(form.getAll("gateways").map(String).join(","), deps.config.fleet.peers);
  if (!targets.ok) return json(400, { error: targets.error, field: "gateways" });
  if (targets.targets.some((t) => t !== "self")) {
    const nf = fleetReady(deps);
    if (nf) return fromRefusal(nf);
  }
  const read = async (f: string) => {
    const v = form.get(f);
    if (v === null || v === "") return null;
    const t = typeof v === "string" ? v : await (v as Blob).text();
    return t.trim() ? t : null;
  };
  const root = await read("root");
  const intermediate = await read("intermediate");
  const key = await read("key");
  if (!root) return json(400, { error: "root: required (the root certificate, PEM)", field: "root" });
  if (!key) return json(400, { error: "key: required (the issuing certificate's private key, PEM, no passphrase)", field: "key" });
  // checked once, here: a chain that does not check out goes nowhere
  const check = await checkChain({ root, intermediate: intermediate ?? undefined, key }, new Date());
  if (!check.ok)
    return json(400, { error: check.problems.map((p) => `${p.file}: ${p.problem}`).join("; "), field: check.problems[0]!.file, problems: check.problems, results: [] });
  const labels: Labels = { common_name: (await read("common_name"))?.trim() ?? null, description: (await read("description"))?.trim() ?? null };
  const pems: Pems = { root, intermediate, key };
  const results = await steer(
    targets.targets,
    async () => selfResult(deps, await applyChainHere(deps, ctx, pems, labels)),
    (p) => pushToPeer(p, PEER_CHAIN_PATH, { ...pems, ...labels }, deps.config),
  );
  const checked = { subject: check.commonName, not_after: check.notAfter.toISOString(), fingerprint_sha256: new X509Certificate(root).fingerprint256 };
  note({ chain: checked, results: results.map((r) => ({ gateway: r.gateway, result: r.result, reason: r.reason })) });
  log("info", "fleet: chain assigned", { subject: check.commonName, gateways: targets.targets, summary: summarize(results) });
  return json(200, { ok: results.every((r) => r.result === "applied"), summary: summarize(results), checked, results });
}

/** POST /api/fleet/config (JSON {gateways, change}). */
async function pushConfig(req: Request, deps: AdminDeps, ctx: AdminContext, note: (d: Record<string, unknown>) => void): Promise<Response> {
  const body = await readJsonBody(req, MAX_JSON_BODY);
  if (isRefusal(body)) return fromRefusal(body);
  const b = (body ?? {}) as Record<string, unknown>;
  const targets = parseTargets(b.gateways, deps.config.fleet.peers);
  if (!targets.ok) return json(400, { error: targets.error, field: "gateways" });
  if (targets.targets.some((t) => t !== "self")) {
    const nf = fleetReady(deps);
    if (nf) return fromRefusal(nf);
  }
  const part = checkConfigPart(b.change);
  if (!part.ok) return json(400, { error: part.error, field: part.field, results: [] });
  note({ change: part.part, gateways: targets.targets });
  const results = await steer(
    targets.targets,
    async () => selfResult(deps, await applyConfigHere(deps, ctx, part.part)),
    (p) => pushToPeer(p, PEER_CONFIG_PATH, { change: part.part }, deps.config),
  );
  note({ change: part.part, results: results.map((r) => ({ gateway: r.gateway, result: r.result, reason: r.reason })) });
  log("info", "fleet: config pushed", { keys: Object.entries(part.part).flatMap(([s, v]) => Object.keys(v as object).map((k) => `${s}.${k}`)), gateways: targets.targets, summary: summarize(results) });
  return json(200, { ok: results.every((r) => r.result === "applied"), summary: summarize(results), results });
}

async function readJsonBody(req: Request, limit: number): Promise<unknown | Refusal> {
  let bytes: Uint8Array;
  try {
    bytes = await readBodyLimited(req, limit);
  } catch (e) {
    if (e instanceof BodyTooLarge) return refuse(413, `the request body is larger than ${e.limit} bytes`, "body");
    throw e;
  }
  const t = new TextDecoder().decode(bytes).trim();
  if (!t) return {};
  try {
    return JSON.parse(t);
  } catch (e) {
    return refuse(400, `not valid JSON: ${(e as Error).message}`, "body");
  }
}

/** The admin's routes (after the admin token's door); api.ts writes their audit entries. */
export async function handleSteerApi(req: Request, path: string, deps: AdminDeps, ctx: AdminContext, note: (d: Record<string, unknown>) => void): Promise<Response> {
  if (req.method !== "POST") return json(405, { error: `${req.method} is not allowed on ${path}; use POST`, field: "method" }, { allow: "POST" });
  return path === FLEET_CHAIN_PATH ? assignChain(req, deps, ctx, note) : pushConfig(req, deps, ctx, note);
}

/**
 * A peer's push (before the admin token's door): a fleet here (else 404), the caller's address one of the peers'
 * (else 403), the fleet token (else 401; wrong ones feed the shared throttle). Then the receiver's own checks and
 * its own audit entry, refused or not. The admin token does not open these routes, nor the fleet token any other.
 */
export async function answerPeerSteer(req: Request, path: string, deps: AdminDeps, ctx: AdminContext, addr: string): Promise<Response> {
  const f = deps.config.fleet;
  if (req.method !== "POST") return json(405, { error: `${req.method} is not allowed on ${path}; use POST`, field: "method" }, { allow: "POST" });
  if (!f.token) return json(404, { error: "no fleet here: [fleet] token and peers are not set", field: "fleet.token" });
  if (!deps.isFleetPeer?.(addr)) {
    log("warn", "fleet: a push was refused, caller is not a peer", { addr, path });
    return json(403, { error: `${addr} is not one of this gateway's [fleet] peers`, field: "fleet.peers" });
  }
  const check = checkToken(req, f.token);
  const door = decideDoor(check, ctx.throttle, addr, Date.now());
  if (!door.pass) {
    if (door.status === 429) return json(429, { error: `too many wrong tokens from ${addr}; try again in ${door.retryAfter} s`, field: "authorization" }, { "retry-after": String(door.retryAfter) });
    log("warn", `fleet: a push with a ${check} fleet token`, { addr, path });
    return json(401, { error: `${check} fleet token (the peers' shared [fleet] token)`, field: "authorization" }, { "www-authenticate": 'Bearer realm="agate-fleet"' });
  }
  const from = (req.headers.get("x-agate-fleet-from") ?? "").slice(0, 100);
  const audit = (status: number, action: string, detail: Record<string, unknown>) =>
    ctx.audit.write({ t: new Date().toISOString(), who: { addr, token: `fleet:${tokenFingerprint(f.token!)}` }, method: "POST", path, action, status, detail: { from, ...detail } });
  const body = await readJsonBody(req, path === PEER_CHAIN_PATH ? MAX_PEER_CHAIN_BODY : MAX_JSON_BODY);
  if (isRefusal(body)) {
    audit(body.status, path === PEER_CHAIN_PATH ? "fleet.chain.receive" : "fleet.config.receive", { refused: body.error });
    return fromRefusal(body);
  }
  const b = (body ?? {}) as Record<string, unknown>;
  if (path === PEER_CHAIN_PATH) {
    const s = (k: string) => (typeof b[k] === "string" && (b[k] as string).trim() ? (b[k] as string) : null);
    const root = s("root");
    const key = s("key");
    const r: Refusal | Awaited<ReturnType<typeof applyChainHere>> =
      !root ? refuse(400, "root: required (the root certificate, PEM)", "root") : !key ? refuse(400, "key: required", "key") : await applyChainHere(deps, ctx, { root, intermediate: s("intermediate"), key }, { common_name: s("common_name"), description: s("description") });
    if (isRefusal(r)) {
      audit(r.status, "fleet.chain.receive", { refused: r.error });
      log("warn", "fleet: a pushed chain was refused", { addr, from, error: r.error });
      return fromRefusal(r);
    }
    const w = await confirmHere(deps);
    audit(200, "fleet.chain.receive", { id: r.id, common_name: r.common_name, reused: r.reused, ...(w.confirmed ? {} : { unconfirmed: w.reason }) });
    log(w.confirmed ? "info" : "warn", "fleet: a pushed chain was assigned", { addr, from, id: r.id, common_name: r.common_name, ...(w.confirmed ? {} : { unconfirmed: w.reason }) });
    return json(200, { ok: true, ...r, ...confirmFields(w) });
  }
  const r = await applyConfigHere(deps, ctx, b.change);
  if (isRefusal(r)) {
    audit(r.status, "fleet.config.receive", { change: b.change ?? null, refused: r.error });
    log("warn", "fleet: a pushed config change was refused", { addr, from, error: r.error });
    return fromRefusal(r);
  }
  const w = await confirmHere(deps);
  audit(200, "fleet.config.receive", { change: b.change, ...(w.confirmed ? {} : { unconfirmed: w.reason }) });
  log(w.confirmed ? "info" : "warn", "fleet: a pushed config change was applied", { addr, from, keys: Object.keys(b.change as object), ...(w.confirmed ? {} : { unconfirmed: w.reason }) });
  return json(200, { ok: true, ...r, ...confirmFields(w) });
}
