/**
 * @module Export / import of a gateway (issue 14, "Replace an appliance"), on the management port (admin token).
 *
 * `POST /api/export` `{passphrase}` → the archive (store/gateway-archive.ts: config, CAs with keys, uploaded chains;
 * age format, scrypt, the admin's passphrase), as a download. `POST /api/import` (multipart: `archive` file,
 * `passphrase`) restores one on this gateway: it is opened and every CA in it checked BEFORE anything is written;
 * then the CA files are put in place and the exported config goes through this gateway's own config-change path
 * (admin/config-change.ts: validation, live apply, overlay). Kept from this gateway, never imported: `[admin]` (the
 * management port, its TLS and token you are talking to) and `gateway.data_dir`. A refused import puts back the
 * files it replaced: nothing changed. The passphrase and the keys are never logged nor written to the audit log.
 */
import { checkChain, loadCa } from "../core/certs";
import { mergeConfig, redactConfig, type Config } from "../core/config";
import { ConfigError } from "../core/errors";
import type { AdminDeps } from "./deps";
import type { AdminContext } from "./context";
import { checkApiChange, commitConfig } from "./config-change";
import { readBodyLimited } from "./guard";
import { overlayPath } from "../store/config-files";
import { checkPassphrase, collectArchive, openGatewayArchive, restoreFiles, sealGatewayArchive, type GatewayArchive } from "../store/gateway-archive";
import { VERSION } from "../version";
import { log } from "../log";

export const EXPORT_PATH = "/api/export";
export const IMPORT_PATH = "/api/import";
/** An export with many uploaded chains (3 files of ≤3 MB each) stays well under this. */
export const MAX_IMPORT_BODY = 64 * 1024 * 1024;

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body, null, 2) + "\n", { status, headers: { "content-type": "application/json", "cache-control": "no-store", ...headers } });

export const isArchivePath = (p: string) => p === EXPORT_PATH || p === IMPORT_PATH;

/** `agate-<name>-<yyyy-mm-dd>.age`, the name kept to safe characters for a Content-Disposition. */
export const exportName = (name: string, now: Date) => `agate-${name.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 60)}-${now.toISOString().slice(0, 10)}.age`;

async function doExport(req: Request, deps: AdminDeps, ctx: AdminContext, note: (d: Record<string, unknown>) => void): Promise<Response> {
  const bytes = await readBodyLimited(req, 64 * 1024);
  let body: any = {};
  try {
    body = JSON.parse(new TextDecoder().decode(bytes) || "{}");
  } catch {
    return json(400, { error: 'expected a JSON body {"passphrase": "…"}', field: "body" });
  }
  const bad = checkPassphrase(body?.passphrase);
  if (bad) return json(400, { error: bad, field: "passphrase" });
  const now = new Date();
  const a = collectArchive(deps.config, deps.dataDir, deps.configPath, overlayPath(deps.dataDir), ctx.certs, VERSION, now);
  const sealed = await sealGatewayArchive(a, body.passphrase);
  const name = exportName(deps.config.gateway.name, now);
  note({ file: name, bytes: sealed.byteLength, uploaded: a.uploaded.map((u) => u.row.id), assigned: a.assigned });
  log("info", "gateway exported", { file: name, bytes: sealed.byteLength, uploaded: a.uploaded.length, assigned: a.assigned });
  return new Response(sealed, {
    headers: { "content-type": "application/octet-stream", "content-disposition": `attachment; filename="${name}"`, "cache-control": "no-store", "x-agate-open-command": `age -d -o export.json.gz ${name} && gunzip export.json.gz` },
  });
}

/** The exported config as a change for this gateway: every section but [admin], and not gateway.data_dir. */
export function importedPart(effective: Config, tls: Record<string, string | null>): Record<string, unknown> {
  const { admin: _admin, gateway, ...rest } = JSON.parse(JSON.stringify(effective)) as Record<string, any>;
  void _admin;
  const { data_dir: _dd, ...gw } = gateway ?? {};
  void _dd;
  return { ...rest, gateway: gw, tls: { ...(rest.tls ?? {}), ...tls } };
}

/** Every CA in the archive checks out (the assigned one must; an unassigned chain that does not is left out). */
async function checkArchiveCas(a: GatewayArchive): Promise<{ error: string } | { skipped: string[] }> {
  if (a.ca.appliance) {
    try {
      await loadCa("appliance", { cert: a.ca.appliance.cert, key: a.ca.appliance.key });
    } catch (e) {
      return { error: `the archive's appliance CA does not check out: ${(e as Error).message}` };
    }
  }
  const skipped: string[] = [];
  for (const u of a.uploaded) {
    const c = await checkChain({ root: u.root, intermediate: u.chain ?? undefined, key: u.key }, new Date());
    if (c.ok) continue;
    const why = c.problems.map((p) => `${p.file}: ${p.problem}`).join("; ");
    if (u.row.id === a.assigned) return { error: `the archive's assigned chain ${u.row.id} ("${u.row.common_name}") does not check out here: ${why}` };
    skipped.push(u.row.id);
  }
  return { skipped };
}

async function doImport(req: Request, deps: AdminDeps, ctx: AdminContext, note: (d: Record<string, unknown>) => void): Promise<Response> {
  const type = req.headers.get("content-type") ?? "";
  if (!/^multipart\/form-data/i.test(type)) return json(415, { error: "send the archive as multipart/form-data: file archive, field passphrase", field: "body" });
  const bytes = await readBodyLimited(req, MAX_IMPORT_BODY);
  let form: FormData;
  try {
    form = (await new Response(bytes, { headers: { "content-type": type } }).formData()) as unknown as FormData;
  } catch (e) {
    return json(400, { error: `the multipart body could not be read: ${(e as Error).message}`, field: "body" });
  }
  const pass = form.get("passphrase");
  const bad = checkPassphrase(typeof pass === "string" ? pass : null);
  if (bad) return json(400, { error: bad, field: "passphrase" });
  const file = form.get("archive");
  if (!file || typeof file === "string") return json(400, { error: "archive: required (the file from POST /api/export or agate export)", field: "archive" });
  const opened = await openGatewayArchive(new Uint8Array(await (file as Blob).arrayBuffer()), pass as string);
  if ("reason" in opened) {
    note({ refused: opened.reason });
    log("warn", "import refused: the archive does not open", { reason: opened.reason });
    return json(400, { error: `${opened.error}; nothing was changed`, field: opened.reason === "wrong-passphrase" ? "passphrase" : "archive", reason: opened.reason });
  }
  const a = opened;
  const cas = await checkArchiveCas(a);
  if ("error" in cas) {
    note({ refused: "ca" });
    return json(400, { error: `${cas.error}; nothing was changed`, field: "archive" });
  }
  const valid = { ...a, uploaded: a.uploaded.filter((u) => !cas.skipped.includes(u.row.id)) };
  // the config's own rules before any file is written (the CA files are checked by deps.apply after)
  try {
    const dry = mergeConfig(deps.config, importedPart(a.config.effective, { ca: "appliance", ca_cert: null, ca_chain: null, ca_key: null }));
    checkApiChange(deps.config, dry);
  } catch (e) {
    if (e instanceof ConfigError) return json(400, { error: `the archive's config is refused here: ${e.message}; nothing was changed`, field: e.key });
    throw e;
  }
  const restored = restoreFiles(valid, deps.dataDir, ctx.certs);
  let committed: Awaited<ReturnType<typeof commitConfig>>;
  try {
    committed = await commitConfig(deps, ctx, (cur) => mergeConfig(cur, importedPart(a.config.effective, restored.tls)));
  } catch (e) {
    restored.undo();
    try {
      await deps.apply(deps.config); // the CA files are back: reload them in case a failed overlay write re-applied
    } catch {
      // the running config was never changed
    }
    note({ refused: (e as Error).message.slice(0, 300) });
    const key = e instanceof ConfigError ? e.key : "archive";
    return json(400, { error: `the archive's config is refused here: ${(e as Error).message}; nothing was changed`, field: key });
  }
  note({ from: a.gateway, created: a.created, assigned: a.assigned, uploaded: restored.added, skipped: cas.skipped });
  log("info", "gateway imported", { from: a.gateway, created: a.created, assigned: a.assigned, uploaded: restored.added.length, skipped: cas.skipped.length });
  return json(200, {
    ok: true,
    from: { gateway: a.gateway, created: a.created, version: a.version },
    assigned: a.assigned,
    uploaded: restored.added,
    skipped: cas.skipped,
    kept: ["admin.*", "gateway.data_dir"],
    file: committed.file,
    restart_required: committed.restart_required,
    config: redactConfig(deps.config),
  });
}

export async function handleArchiveApi(req: Request, path: string, deps: AdminDeps, ctx: AdminContext, note: (d: Record<string, unknown>) => void): Promise<Response> {
  if (req.method !== "POST") return json(405, { error: `${req.method} is not allowed on ${path}; use POST`, field: "method" }, { allow: "POST" });
  return path === EXPORT_PATH ? doExport(req, deps, ctx, note) : doImport(req, deps, ctx, note);
}
