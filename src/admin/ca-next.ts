/**
 * @module `/api/ca/next`: CA rollover without breaking agents (issue 11). The admin publishes the NEXT CA before it
 * is assigned — an existing one (the appliance CA when another is active, or an uploaded chain) or a new appliance
 * CA generated for the purpose — and agents fetch it (`/ca.pem?next=1`, `/ca-bundle.pem` = current + next) on every
 * port, so they trust both before the switch. Assigning the next CA (POST /api/certificates/{id}/assign) makes it
 * current and clears "next". Kept in `<data_dir>/ca/rollover.json` (store/ca-rollover.ts), so it survives a restart.
 * A generated next CA is kept with the uploaded chains (a root with its key, no intermediates): assigning it is then
 * the same path as for any uploaded CA. Publishing reloads the CA on the workers through `deps.apply` with the
 * running config (store/ca-store.ts `loadActiveCa` reads the next CA), one change at a time with config changes.
 */
import { X509Certificate, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { checkChain, createCa } from "../core/certs";
import type { CertRow } from "../store/cert-db";
import { readRollover, writeRollover, type Rollover } from "../store/ca-rollover";
import type { AdminDeps } from "./deps";
import type { AdminContext } from "./context";
import { listCertificates, MAX_LABEL, refuse, type CertView, type Refusal } from "./certificates";

/** CN of a generated CA: ≤ 64 characters (RFC 5280 ub-common-name). */
const CN_MAX = 64;

/** Reload the active (and next) CA on the workers with the running config, serialised with config changes. */
function pushCa(deps: AdminDeps, ctx: AdminContext): Promise<void> {
  const run = ctx.configLock.then(() => deps.apply(deps.config));
  ctx.configLock = run.catch(() => undefined);
  return run;
}

/** Write `next`, reload; on a failed reload put the previous file back (and reload that). */
async function change(deps: AdminDeps, ctx: AdminContext, next: Rollover): Promise<void | Refusal> {
  const prev = readRollover(deps.dataDir);
  writeRollover(deps.dataDir, next);
  try {
    await pushCa(deps, ctx);
  } catch (e) {
    writeRollover(deps.dataDir, prev);
    await pushCa(deps, ctx).catch(() => undefined);
    return refuse(500, `the next CA could not be loaded, nothing changed: ${(e as Error).message}`, "id");
  }
}

export function nextCaView(deps: AdminDeps, ctx: AdminContext): CertView | null {
  const id = readRollover(deps.dataDir).next?.id;
  return id ? (listCertificates(deps, ctx).find((v) => v.id === id) ?? null) : null;
}

/** POST /api/ca/next: `{ "id": … }` publishes an existing CA, `{ "generate": true, "common_name"?: … }` a new one. */
export async function publishNextCa(deps: AdminDeps, ctx: AdminContext, body: unknown, now = Date.now()): Promise<{ next: CertView; generated: boolean } | Refusal> {
  if (!body || typeof body !== "object" || Array.isArray(body))
    return refuse(400, 'expected a JSON object: { "id": "<certificate id>" } or { "generate": true }', "body");
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (k !== "id" && k !== "generate" && k !== "common_name") return refuse(400, `${k}: expected id, or generate (and common_name)`, k);
  const ro = readRollover(deps.dataDir);
  if (b.generate === true) {
    if (b.id !== undefined) return refuse(400, "give either id or generate, not both", "id");
    const made = await generateNextCa(deps, ctx, b.common_name, now);
    if ("status" in made) return made;
    const r = await change(deps, ctx, { next: { id: made.id, root: ctx.certs.files(made.id).root }, generated: [...ro.generated, made.id] });
    if (r) return r;
    return { next: nextCaView(deps, ctx)!, generated: true };
  }
  if (b.generate !== undefined && b.generate !== false) return refuse(400, "generate: expected true", "generate");
  if (b.common_name !== undefined) return refuse(400, "common_name: only with generate (an existing CA keeps its name; edit it with PATCH /api/certificates/{id})", "common_name");
  if (typeof b.id !== "string" || !b.id) return refuse(400, 'id: required (a certificate id from GET /api/certificates), or { "generate": true }', "id");
  const view = listCertificates(deps, ctx, now).find((v) => v.id === b.id);
  if (!view) return refuse(404, `no certificate ${b.id}`, "id");
  if (view.assigned) return refuse(409, `certificate ${view.id} ("${view.common_name}") is already the active CA; the next CA is the one that will replace it`, "id");
  if (view.expires_in_days < 0) return refuse(409, `certificate ${view.id} ("${view.common_name}") has expired; agents would reject it`, "id");
  const root = view.id === "appliance" ? join(deps.dataDir, "ca", "appliance.pem") : ctx.certs.files(view.id).root;
  if (!existsSync(root)) return refuse(409, `the files of certificate ${view.id} are missing; upload it again`, "id");
  const r = await change(deps, ctx, { next: { id: view.id, root }, generated: ro.generated });
  if (r) return r;
  return { next: nextCaView(deps, ctx)!, generated: false };
}

/** DELETE /api/ca/next: agents get the current CA only again (the certificate itself stays). */
export async function clearNextCa(deps: AdminDeps, ctx: AdminContext): Promise<{ cleared: string | null } | Refusal> {
  const ro = readRollover(deps.dataDir);
  if (!ro.next) return { cleared: null };
  const r = await change(deps, ctx, { next: null, generated: ro.generated });
  if (r) return r;
  return { cleared: ro.next.id };
}

async function generateNextCa(deps: AdminDeps, ctx: AdminContext, cnIn: unknown, now: number): Promise<CertRow | Refusal> {
  if (cnIn !== undefined && typeof cnIn !== "string") return refuse(400, "common_name: expected text", "common_name");
  const taken = new Set(listCertificates(deps, ctx, now).map((v) => v.common_name.trim().toLowerCase()));
  let cn: string;
  if (typeof cnIn === "string" && cnIn.trim()) {
    cn = cnIn.trim();
    if (cn.length > CN_MAX) return refuse(400, `common_name: at most ${CN_MAX} characters for a generated CA, got ${cn.length}`, "common_name");
    if (/[\x00-\x1f\x7f]/.test(cn)) return refuse(400, "common_name: no control characters", "common_name");
    if (taken.has(cn.toLowerCase())) return refuse(409, `common_name: "${cn}" is already the name of a certificate; give the next CA a unique name`, "common_name");
  } else {
    const base = `agate appliance CA (${deps.config.gateway.name}) ${new Date(now).toISOString().slice(0, 10)}`.slice(0, CN_MAX - 3);
    cn = base;
    for (let i = 2; taken.has(cn.toLowerCase()) && i < 100; i++) cn = `${base} ${i}`;
  }
  const made = await createCa({ commonName: cn, now: new Date(now), serial: randomBytes(16) });
  const check = await checkChain({ root: made.certPem, key: made.keyPem }, new Date(now));
  if (!check.ok) return refuse(500, `the generated CA does not check out: ${check.problems.map((p) => p.problem).join("; ")}`, "generate");
  const row: CertRow = {
    id: randomBytes(6).toString("hex"),
    common_name: cn.slice(0, MAX_LABEL),
    description: "appliance CA generated as the next CA",
    subject: check.commonName,
    not_before: check.ca.cert.notBefore.getTime(),
    not_after: check.notAfter.getTime(),
    fingerprint: new X509Certificate(made.certPem).fingerprint256,
    created: now,
    updated: now,
  };
  ctx.certs.add(row, { root: made.certPem, chain: null, key: made.keyPem });
  return row;
}
