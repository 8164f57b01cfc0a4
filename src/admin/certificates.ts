/**
 * @module /api/certificates: the CAs this gateway can issue agents' leaves with. The appliance CA (generated) and a
 * configured common or customer CA appear with the uploaded customer-signed chains; each says its role, whether it
 * is assigned (the active CA), its validity, created and updated, and warns EXPIRY_WARNING_DAYS before it expires.
 * Uploads are multipart (common_name, description, files root, intermediate, key), PEM only, ≤3 MB each, no
 * passphrase, and are checked with `checkChain` before they are kept; its problems name the file.
 */
import { X509Certificate, createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { checkChain, MAX_UPLOAD_BYTES } from "../core/certs";
import { mergeConfig } from "../core/config";
import type { AdminDeps } from "./deps";
import type { CertRow } from "../store/cert-db";
import type { AdminContext } from "./context";
import { commitConfig } from "./config-change";
import { clearNextIfAssigned, readRollover } from "../store/ca-rollover";

export const EXPIRY_WARNING_DAYS = 30;
export const MAX_LABEL = 100;
const DAY = 86_400_000;

export type Refusal = { status: number; error: string; field?: string; extra?: Record<string, unknown> };
export const refuse = (status: number, error: string, field?: string, extra?: Record<string, unknown>): Refusal => ({ status, error, field, extra });
export const isRefusal = (x: unknown): x is Refusal => !!x && typeof x === "object" && "status" in x && "error" in x;

export type CertView = {
  id: string;
  role: "appliance" | "common" | "customer";
  source: "generated" | "config" | "upload";
  gateway: string;
  assigned: boolean;
  /** published as the next CA of a rollover (`/ca.pem?next=1`, `/ca-bundle.pem`; /api/ca/next) */
  next: boolean;
  common_name: string;
  description: string;
  subject: string;
  not_before: string;
  not_after: string;
  expires_in_days: number;
  expiry_warning: string | null;
  fingerprint_sha256: string;
  created: string;
  updated: string;
  editable: boolean;
  deletable: boolean;
};

function expiryWarning(role: string, cn: string, days: number, notAfter: Date): string | null {
  if (days < 0) return `the ${role} CA "${cn}" expired ${-days} days ago: agents reject every intercepted connection`;
  if (days <= EXPIRY_WARNING_DAYS) return `the ${role} CA "${cn}" expires in ${days} days (${notAfter.toISOString().slice(0, 10)}): replace it before agents break`;
  return null;
}

function describePem(pemPath: string): { subject: string; cn: string; notBefore: Date; notAfter: Date; fingerprint: string; mtime: Date; birth: Date } | null {
  try {
    const text = readFileSync(pemPath, "utf8");
    const x = new X509Certificate(text);
    const st = statSync(pemPath);
    const cn = /(?:^|\n|,\s*)CN=([^\n,]+)/.exec(x.subject)?.[1] ?? x.subject;
    return {
      subject: x.subject.replace(/\n/g, ", "),
      cn,
      notBefore: new Date(x.validFrom),
      notAfter: new Date(x.validTo),
      fingerprint: x.fingerprint256,
      mtime: st.mtime,
      birth: st.birthtime.getTime() > 0 ? st.birthtime : st.mtime,
    };
  } catch {
    return null;
  }
}

const same = (a: string | null, b: string | null) => !!a && !!b && resolve(a) === resolve(b);

export function listCertificates(deps: AdminDeps, ctx: AdminContext, now = Date.now()): CertView[] {
  const c = deps.config;
  const out: CertView[] = [];
  const gateway = c.gateway.name;
  const app = describePem(join(deps.dataDir, "ca", "appliance.pem"));
  if (app) {
    const days = Math.floor((app.notAfter.getTime() - now) / DAY);
    out.push({
      id: "appliance",
      role: "appliance",
      source: "generated",
      gateway,
      assigned: c.tls.ca === "appliance",
      next: readRollover(deps.dataDir).next?.id === "appliance",
      common_name: app.cn,
      description: "generated for this gateway",
      subject: app.subject,
      not_before: app.notBefore.toISOString(),
      not_after: app.notAfter.toISOString(),
      expires_in_days: days,
      expiry_warning: expiryWarning("appliance", app.cn, days, app.notAfter),
      fingerprint_sha256: app.fingerprint,
      created: app.birth.toISOString(),
      updated: app.mtime.toISOString(),
      editable: false,
      deletable: false,
    });
  }
  const uploaded = ctx.certs.list();
  const isUploaded = uploaded.some((r) => same(ctx.certs.files(r.id).root, c.tls.ca_cert));
  if ((c.tls.ca === "common" || (c.tls.ca === "customer" && !isUploaded)) && c.tls.ca_cert) {
    const d = describePem(c.tls.ca_cert);
    const active = deps.ca;
    if (d) {
      const notAfter = active && active.kind === c.tls.ca ? new Date(active.notAfter) : d.notAfter;
      const days = Math.floor((notAfter.getTime() - now) / DAY);
      out.push({
        id: c.tls.ca,
        role: c.tls.ca,
        source: "config",
        gateway,
        assigned: true,
        next: false,
        common_name: d.cn,
        description: c.tls.ca === "common" ? "the common CA shared by several gateways (config file)" : "customer-signed chain named in the config file",
        subject: d.subject,
        not_before: d.notBefore.toISOString(),
        not_after: notAfter.toISOString(),
        expires_in_days: days,
        expiry_warning: expiryWarning(c.tls.ca, d.cn, days, notAfter),
        fingerprint_sha256: d.fingerprint,
        created: d.birth.toISOString(),
        updated: d.mtime.toISOString(),
        editable: false,
        deletable: false,
      });
    }
  }
  for (const r of uploaded) out.push(uploadedView(deps, ctx, r, now));
  return out;
}

function uploadedView(deps: AdminDeps, ctx: AdminContext, r: CertRow, now: number): CertView {
  const c = deps.config;
  const assigned = c.tls.ca === "customer" && same(ctx.certs.files(r.id).root, c.tls.ca_cert);
  const days = Math.floor((r.not_after - now) / DAY);
  const ro = readRollover(deps.dataDir);
  const next = ro.next?.id === r.id;
  return {
    id: r.id,
    role: "customer",
    // a next CA generated here (admin/ca-next.ts) is kept with the uploads, as a root with its key
    source: ro.generated.includes(r.id) ? "generated" : "upload",
    gateway: c.gateway.name,
    assigned,
    next,
    common_name: r.common_name,
    description: r.description,
    subject: r.subject,
    not_before: new Date(r.not_before).toISOString(),
    not_after: new Date(r.not_after).toISOString(),
    expires_in_days: days,
    expiry_warning: expiryWarning("customer", r.common_name, days, new Date(r.not_after)),
    fingerprint_sha256: r.fingerprint,
    created: new Date(r.created).toISOString(),
    updated: new Date(r.updated).toISOString(),
    editable: true,
    deletable: !assigned && !next,
  };
}

function label(field: string, v: unknown, required: boolean): string | Refusal {
  if (v === undefined || v === null) return required ? refuse(400, `${field}: required`, field) : "";
  if (typeof v !== "string") return refuse(400, `${field}: expected text`, field);
  const s = v.trim();
  if (required && !s) return refuse(400, `${field}: must not be empty`, field);
  if (s.length > MAX_LABEL) return refuse(400, `${field}: at most ${MAX_LABEL} characters, got ${s.length}`, field);
  if (/[\x00-\x1f\x7f]/.test(s)) return refuse(400, `${field}: no control characters`, field);
  return s;
}

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;

/** POST /api/certificates: the parsed form → a kept certificate, or what is wrong with it. */
export async function uploadCertificate(deps: AdminDeps, ctx: AdminContext, form: FormData, now = Date.now()): Promise<CertView | Refusal> {
  const texts: Record<"root" | "intermediate" | "key", string | null> = { root: null, intermediate: null, key: null };
  for (const f of ["root", "intermediate", "key"] as const) {
    const v = form.get(f);
    if (v === null || v === "") continue;
    const size = typeof v === "string" ? Buffer.byteLength(v) : v.size;
    if (size > MAX_UPLOAD_BYTES) return refuse(413, `${f}: the file is ${mb(size)}; each file may be at most ${mb(MAX_UPLOAD_BYTES)}`, f);
    const text = typeof v === "string" ? v : await v.text();
    if (text.trim()) texts[f] = text;
  }
  if (!texts.root) return refuse(400, "root: required (the root certificate, PEM)", "root");
  if (!texts.key) return refuse(400, "key: required (the issuing certificate's private key, PEM, no passphrase)", "key");
  const check = await checkChain({ root: texts.root, intermediate: texts.intermediate ?? undefined, key: texts.key }, new Date(now));
  if (!check.ok) {
    const first = check.problems[0]!;
    return refuse(
      400,
      check.problems.map((p) => `${p.file}: ${p.problem}`).join("; "),
      first.file,
      { problems: check.problems },
    );
  }
  const cnIn = form.get("common_name");
  const cn = label("common_name", typeof cnIn === "string" && cnIn.trim() ? cnIn : check.commonName.slice(0, MAX_LABEL), true);
  if (isRefusal(cn)) return cn;
  const taken = nameTaken(deps, ctx, cn, null, now);
  if (taken) return taken;
  const desc = label("description", form.get("description") ?? "", false);
  if (isRefusal(desc)) return desc;
  const rootX = new X509Certificate(texts.root);
  const row: CertRow = {
    id: randomBytes(6).toString("hex"),
    common_name: cn,
    description: desc,
    subject: check.commonName,
    not_before: check.ca.cert.notBefore.getTime(),
    not_after: check.notAfter.getTime(),
    fingerprint: rootX.fingerprint256,
    created: now,
    updated: now,
  };
  ctx.certs.add(row, { root: texts.root, chain: texts.intermediate, key: texts.key });
  return uploadedView(deps, ctx, row, now);
}

/**
 * The seed's rule: each certificate has a unique name, so an admin picking one to assign cannot pick the wrong one.
 * Compared without case and surrounding spaces, against every listed certificate but `self` (an edit keeping its
 * own name is fine). 409: the request is sound, the name collides with what is there.
 */
function nameTaken(deps: AdminDeps, ctx: AdminContext, name: string, self: string | null, now: number): Refusal | null {
  const want = name.trim().toLowerCase();
  const other = listCertificates(deps, ctx, now).find((v) => v.id !== self && v.common_name.trim().toLowerCase() === want);
  if (!other) return null;
  return refuse(409, `common_name: "${name}" is already the name of certificate ${other.id} (${other.role}); give this one a unique name`, "common_name", { conflict: other.id });
}

/** PATCH: common_name and description only. */
export function editCertificate(deps: AdminDeps, ctx: AdminContext, id: string, body: unknown, now = Date.now()): CertView | Refusal {
  if (!body || typeof body !== "object" || Array.isArray(body)) return refuse(400, "expected a JSON object { common_name?, description? }", "body");
  for (const k of Object.keys(body)) if (k !== "common_name" && k !== "description") return refuse(400, `${k}: only common_name and description can be edited`, k);
  if (id === "appliance" || id === "common" || id === "customer") return refuse(409, `the ${id} CA's names come from the CA itself and the config file; only uploaded certificates can be edited`, "id");
  if (!ctx.certs.get(id)) return refuse(404, `no certificate ${id}`, "id");
  const b = body as Record<string, unknown>;
  const fields: { common_name?: string; description?: string } = {};
  if (b.common_name !== undefined) {
    const v = label("common_name", b.common_name, true);
    if (isRefusal(v)) return v;
    const taken = nameTaken(deps, ctx, v, id, now);
    if (taken) return taken;
    fields.common_name = v;
  }
  if (b.description !== undefined) {
    const v = label("description", b.description, false);
    if (isRefusal(v)) return v;
    fields.description = v;
  }
  return uploadedView(deps, ctx, ctx.certs.update(id, fields, now)!, now);
}

export function deleteCertificate(deps: AdminDeps, ctx: AdminContext, id: string): { id: string } | Refusal {
  if (id === "appliance" || id === "common" || id === "customer") return refuse(409, `the ${id} CA cannot be deleted here`, "id");
  const row = ctx.certs.get(id);
  if (!row) return refuse(404, `no certificate ${id}`, "id");
  const c = deps.config;
  if (c.tls.ca === "customer" && same(ctx.certs.files(id).root, c.tls.ca_cert))
    return refuse(409, `certificate ${id} ("${row.common_name}") is assigned: assign another CA first`, "id");
  if (readRollover(deps.dataDir).next?.id === id)
    return refuse(409, `certificate ${id} ("${row.common_name}") is published as the next CA: unpublish it first (DELETE /api/ca/next)`, "id");
  ctx.certs.remove(id);
  return { id };
}

/** Make it the active CA through the same path as PUT /api/config, so that it persists in the config file. */
export async function assignCertificate(deps: AdminDeps, ctx: AdminContext, id: string): Promise<{ assigned: CertView; restart_required: string[] } | Refusal> {
  let tls: Record<string, unknown>;
  if (id === "appliance") tls = { ca: "appliance", ca_cert: null, ca_chain: null, ca_key: null };
  else if (id === "common" || id === "customer") {
    if (deps.config.tls.ca !== id) return refuse(404, `no ${id} CA is configured`, "id");
    tls = {};
  } else {
    if (!ctx.certs.get(id)) return refuse(404, `no certificate ${id}`, "id");
    const f = ctx.certs.files(id);
    if (!existsSync(f.root) || !existsSync(f.key)) return refuse(409, `the files of certificate ${id} are missing; upload it again`, "id");
    tls = { ca: "customer", ca_cert: f.root, ca_chain: f.chain, ca_key: f.key };
  }
  const r = await commitConfig(deps, ctx, (c) => mergeConfig(c, { tls }));
  clearNextIfAssigned(deps.dataDir, id); // the next CA became current: a rollover is over
  const view = listCertificates(deps, ctx).find((v) => v.id === id)!;
  return { assigned: view, restart_required: r.restart_required };
}

/** For the archive and the fingerprint of uploaded chains. */
export const sha256Hex = (b: string | Uint8Array) => createHash("sha256").update(b).digest("hex");
