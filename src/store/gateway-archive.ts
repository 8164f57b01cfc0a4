/**
 * @module A gateway's export archive (issue 14, the appliance docs' "Replace an appliance"): the config (the admin's
 * --config file and the overlay as written, and the effective config with its secrets), the appliance CA with its
 * key, a CA named by the config's `[tls]` files, and every uploaded chain with its key and labels — one JSON
 * document, gzip'd, sealed in the age format with the admin's passphrase (scrypt recipient), as the diagnostics
 * archive is (admin/diagnostics.ts), so `age -d -o export.json.gz FILE` opens it (Debian's age 1.1.1:
 * test/e2e/gateway-export.test.ts). Opening tells a wrong passphrase from a damaged file. Nothing here logs.
 *
 * Restoring files is reversible until the caller commits: `restoreFiles` returns an undo that puts back what it
 * replaced (the appliance CA, the rollover file) and removes what it added (uploaded chains, imported CA files).
 *
 * A published next CA (rollover, store/ca-rollover.ts) is carried as `ca.next` (its id; its certificate and key
 * travel with the uploaded chains it is kept with, or as the appliance CA) and `ca.generated` (which uploaded
 * certificates the gateway generated itself); an import publishes it again here — the next CA's root as written on
 * this machine — so agents keep getting `/ca-bundle.pem` = current + next from the replacement. An archive without
 * a next CA leaves this gateway's rollover as it is.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { join, resolve } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import type { AgeAnswer, AgeJob } from "./age-thread";
import type { Config } from "../core/config";
import type { CertDb, CertRow } from "./cert-db";
import { readRollover, rolloverPath, writeRollover } from "./ca-rollover";

export const ARCHIVE_FORMAT = "agate-gateway/1";
/**
 * age's default scrypt work factor (log2 N = 18): unlike the diagnostics archive's one-time password (≈200 bits),
 * an export's passphrase is a person's, so brute force must stay expensive. Sealing or opening costs 3–4 s of CPU
 * in age-encryption's JS scrypt (export 4.4 s, import 3.1 s at load 5.8: test/e2e/gateway-export.test.ts's figure
 * line), so it runs in a thread of its own (store/age-thread.ts), never on the management port's thread.
 */
export const EXPORT_SCRYPT_LOG_N = 18;
export const MIN_PASSPHRASE = 12;
export const MAX_PASSPHRASE = 1024;

export type Pem3 = { cert: string; chain: string | null; key: string };
export type ArchivedChain = { row: CertRow; root: string; chain: string | null; key: string };
export type GatewayArchive = {
  format: typeof ARCHIVE_FORMAT;
  created: string;
  version: string;
  gateway: string;
  config: {
    /** the admin's --config file as written, and where it was */
    file: { path: string; text: string } | null;
    /** `<data_dir>/agate.auto.toml` as written */
    overlay: string | null;
    /** the running config, secrets included (the archive is encrypted) */
    effective: Config;
  };
  ca: {
    appliance: Pem3 | null;
    /** the [tls] ca_cert/ca_chain/ca_key files when they are not one of the uploaded chains */
    configured: (Pem3 & { kind: string }) | null;
    /** the published next CA of a rollover: "appliance" or the id of one of `uploaded` (absent in older archives) */
    next?: { id: string } | null;
    /** the uploaded ids this gateway generated itself (a next CA made with `generate`) */
    generated?: string[];
  };
  uploaded: ArchivedChain[];
  /** which CA signs agents' leaves: "appliance", "common", "customer" (configured files) or an uploaded id */
  assigned: string;
};

export type OpenFailure = { reason: "not-age" | "wrong-passphrase" | "damaged" | "not-an-export"; error: string };

const read = (p: string | null) => (p && existsSync(p) ? readFileSync(p, "utf8") : null);
const same = (a: string | null, b: string | null) => !!a && !!b && resolve(a) === resolve(b);

/** Everything a replacement needs, read from disk now. */
export function collectArchive(c: Config, dataDir: string, configPath: string | null, overlayFile: string, certs: CertDb, version: string, now: Date): GatewayArchive {
  const appCert = read(join(dataDir, "ca", "appliance.pem"));
  const appKey = read(join(dataDir, "ca", "appliance.key"));
  const uploaded: ArchivedChain[] = [];
  let assigned: string = c.tls.ca;
  for (const row of certs.list()) {
    const f = certs.files(row.id);
    const root = read(f.root);
    const key = read(f.key);
    if (!root || !key) continue; // files gone: the certificates page says so; nothing to carry
    uploaded.push({ row, root, chain: read(f.chain), key });
    if (c.tls.ca === "customer" && same(f.root, c.tls.ca_cert)) assigned = row.id;
  }
  let configured: GatewayArchive["ca"]["configured"] = null;
  if (c.tls.ca !== "appliance" && assigned === c.tls.ca) {
    const cert = read(c.tls.ca_cert);
    const key = read(c.tls.ca_key);
    if (cert && key) configured = { kind: c.tls.ca, cert, chain: read(c.tls.ca_chain), key };
  }
  // the next CA is carried when its certificate and key are: the appliance CA, or one of the uploaded chains
  const ro = readRollover(dataDir);
  const nextId = ro.next?.id ?? null;
  const next = nextId !== null && (nextId === "appliance" ? appCert !== null && appKey !== null : uploaded.some((u) => u.row.id === nextId)) ? { id: nextId } : null;
  const generated = ro.generated.filter((id) => uploaded.some((u) => u.row.id === id));
  return {
    format: ARCHIVE_FORMAT,
    created: now.toISOString(),
    version,
    gateway: c.gateway.name,
    config: { file: configPath && existsSync(configPath) ? { path: configPath, text: readFileSync(configPath, "utf8") } : null, overlay: read(overlayFile), effective: c },
    ca: { appliance: appCert && appKey ? { cert: appCert, chain: null, key: appKey } : null, configured, next, generated },
    uploaded,
    assigned,
  };
}

export function checkPassphrase(p: unknown): string | null {
  if (typeof p !== "string" || !p) return `passphrase: required (at least ${MIN_PASSPHRASE} characters; you will need it to import or to open the file with age -d)`;
  if (p.length < MIN_PASSPHRASE) return `passphrase: at least ${MIN_PASSPHRASE} characters (the archive holds the CA keys), got ${p.length}`;
  if (p.length > MAX_PASSPHRASE) return `passphrase: at most ${MAX_PASSPHRASE} characters, got ${p.length}`;
  return null;
}

/** An age-encryption job in a thread of its own (store/age-thread.ts): scrypt must not stall the management port. */
const AGE_THREAD = new URL("./age-thread.ts", import.meta.url).href;
/** A bound on one job: scrypt at log2 N = 18 is seconds; a hung thread is ended, not waited on. */
const AGE_JOB_MS = 60_000;

export function runAgeJob(job: AgeJob): Promise<AgeAnswer> {
  return new Promise((res) => {
    const w = new Worker(AGE_THREAD);
    const done = (a: AgeAnswer) => {
      clearTimeout(t);
      w.terminate();
      res(a);
    };
    const t = setTimeout(() => done({ ok: false, error: `the age job did not finish within ${AGE_JOB_MS / 1000} s` }), AGE_JOB_MS);
    w.onmessage = (ev: MessageEvent<AgeAnswer>) => done(ev.data);
    w.onerror = (ev) => done({ ok: false, error: `the age thread failed: ${(ev as ErrorEvent).message ?? "error"}` });
    w.postMessage(job);
  });
}

export async function sealGatewayArchive(a: GatewayArchive, passphrase: string, logN = EXPORT_SCRYPT_LOG_N): Promise<Uint8Array> {
  const r = await runAgeJob({ op: "seal", bytes: new Uint8Array(gzipSync(JSON.stringify(a))), passphrase, logN });
  if (!r.ok) throw new Error(`the export could not be sealed: ${r.error}`);
  return r.bytes;
}

/** The archive, or why it cannot be opened: age's "no identity matched" is the scrypt stanza refusing the passphrase. */
export async function openGatewayArchive(bytes: Uint8Array, passphrase: string): Promise<GatewayArchive | OpenFailure> {
  const head = new TextDecoder().decode(bytes.subarray(0, 22));
  if (head !== "age-encryption.org/v1\n") return { reason: "not-age", error: "not an agate export: the file is not in the age format (it starts with age-encryption.org/v1)" };
  const r = await runAgeJob({ op: "open", bytes, passphrase, logN: 0 });
  let plain: Uint8Array;
  if (r.ok) plain = r.bytes;
  else {
    const m = r.error;
    if (/no identity matched/i.test(m)) return { reason: "wrong-passphrase", error: "the passphrase does not open this archive (wrong passphrase)" };
    return { reason: "damaged", error: `the archive is damaged or truncated (${m.slice(0, 200)})` };
  }
  let a: Partial<GatewayArchive>;
  try {
    a = JSON.parse(gunzipSync(plain).toString("utf8"));
  } catch {
    return { reason: "not-an-export", error: "the archive opens but holds no agate export (not gzip'd JSON): is it a diagnostics archive?" };
  }
  if (!a || a.format !== ARCHIVE_FORMAT)
    return { reason: "not-an-export", error: `the archive opens but is not an agate gateway export (format ${JSON.stringify(a?.format ?? null)}, expected ${ARCHIVE_FORMAT})` };
  if (!a.config?.effective || !a.ca || !Array.isArray(a.uploaded) || typeof a.assigned !== "string")
    return { reason: "not-an-export", error: "the export is incomplete (config, ca, uploaded, assigned)" };
  return a as GatewayArchive;
}

function writeSecret(path: string, text: string) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** Where an imported configured CA (common / customer files of the old machine) is written on this one. */
export const importedCaDir = (dataDir: string) => join(dataDir, "ca", "imported");

/**
 * Put the archive's CA files into this gateway's data_dir: the appliance CA (replacing this one's, which is kept
 * aside for the undo), the uploaded chains under their ids (an id already here is left as is), a configured CA
 * under ca/imported/. Returns the [tls] paths the config should name now, and the undo.
 */
export function restoreFiles(
  a: GatewayArchive,
  dataDir: string,
  certs: CertDb,
): { tls: Record<string, string | null>; added: string[]; next: string | null; undo: () => void } {
  const caDir = join(dataDir, "ca");
  mkdirSync(caDir, { recursive: true, mode: 0o700 });
  const undos: (() => void)[] = [];
  if (a.ca.appliance) {
    const cert = join(caDir, "appliance.pem");
    const key = join(caDir, "appliance.key");
    const oldCert = read(cert);
    const oldKey = read(key);
    writeSecret(key, a.ca.appliance.key);
    writeFileSync(cert, a.ca.appliance.cert, { mode: 0o644 });
    undos.push(() => {
      if (oldCert && oldKey) {
        writeSecret(key, oldKey);
        writeFileSync(cert, oldCert, { mode: 0o644 });
      } else {
        rmSync(cert, { force: true });
        rmSync(key, { force: true });
      }
    });
  }
  const added: string[] = [];
  for (const u of a.uploaded) {
    if (certs.get(u.row.id)) continue;
    certs.add(u.row, { root: u.root, chain: u.chain, key: u.key });
    added.push(u.row.id);
    undos.push(() => certs.remove(u.row.id));
  }
  const next = restoreNext(a, dataDir, certs, undos);
  let tls: Record<string, string | null> = { ca: "appliance", ca_cert: null, ca_chain: null, ca_key: null };
  const up = a.uploaded.find((u) => u.row.id === a.assigned);
  if (up) {
    const f = certs.files(up.row.id);
    tls = { ca: "customer", ca_cert: f.root, ca_chain: f.chain, ca_key: f.key };
  } else if (a.ca.configured) {
    const dir = importedCaDir(dataDir);
    const existed = existsSync(dir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, "cert.pem"), a.ca.configured.cert, { mode: 0o644 });
    if (a.ca.configured.chain) writeFileSync(join(dir, "chain.pem"), a.ca.configured.chain, { mode: 0o644 });
    writeSecret(join(dir, "key.pem"), a.ca.configured.key);
    if (!existed) undos.push(() => rmSync(dir, { recursive: true, force: true }));
    tls = { ca: a.ca.configured.kind, ca_cert: join(dir, "cert.pem"), ca_chain: a.ca.configured.chain ? join(dir, "chain.pem") : null, ca_key: join(dir, "key.pem") };
  }
  return {
    tls,
    added,
    next,
    undo: () => {
      for (const u of undos.reverse()) {
        try {
          u();
        } catch {
          // best effort: the caller reports the import failed
        }
      }
    },
  };
}

/**
 * Publish the archive's next CA here (rollover.json naming its root on this machine), when its files are here now:
 * the appliance CA just restored, or an uploaded chain (restored, or the same id already here). A next CA left out
 * (its chain failed the import's check) is not published. The generated ids are merged with this gateway's own.
 */
function restoreNext(a: GatewayArchive, dataDir: string, certs: CertDb, undos: (() => void)[]): string | null {
  const id = a.ca.next?.id ?? null;
  if (id === null) return null;
  let root: string | null = null;
  if (id === "appliance") root = a.ca.appliance ? join(dataDir, "ca", "appliance.pem") : null;
  else if (certs.get(id)) root = certs.files(id).root;
  if (root === null || !existsSync(root)) return null;
  const p = rolloverPath(dataDir);
  const before = read(p);
  const cur = readRollover(dataDir);
  const generated = [...new Set([...cur.generated, ...(a.ca.generated ?? []).filter((g) => certs.get(g))])];
  writeRollover(dataDir, { next: { id, root }, generated });
  undos.push(() => {
    if (before === null) rmSync(p, { force: true });
    else writeFileSync(p, before, { mode: 0o644 });
  });
  return id;
}
