/**
 * @module The CAs on disk. The appliance CA is generated at first start into `<data_dir>/ca/` (key mode 0600);
 * a common CA and a customer-signed chain come from the files the config names and are checked before use.
 * The supervisor loads the active CA here and hands its PEMs to the workers, which mint leaves themselves.
 */
import "reflect-metadata";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Config } from "../core/config";
import { checkChain, createCa, loadCa, type CaKind } from "../core/certs";
import { ConfigError } from "../core/errors";
import { X509Certificate } from "node:crypto";
import { loadOrBuildCaMsi, type CaMsi } from "./ca-msi";
import { readRollover } from "./ca-rollover";
import { log } from "../log";

/** What workers need to mint leaves: plain strings, safe to send between threads. */
export type CaPems = {
  kind: CaKind;
  certPem: string; // the issuing certificate
  keyPem: string; // its private key
  chainPem: string; // the intermediates file as configured (customer); empty for appliance/common
  rootPem: string; // what agents install: the root (for appliance/common: the CA itself)
  commonName: string;
  notAfter: number;
  /** `GET /ca.msi`: the Windows package for `rootPem` (store/ca-msi.ts); set by `loadActiveCa` */
  msi?: CaMsi;
  /** the CA published to come next (rollover, store/ca-rollover.ts); null or absent: none */
  next?: NextCaPems | null;
};

/** The next CA as agents get it ahead of the switch: its root (no key: it signs nothing until it is assigned). */
export type NextCaPems = { id: string; rootPem: string; commonName: string; notAfter: number; msi: CaMsi };

/** The first certificate of a PEM text, as DER. */
export function derOfPem(pem: string): Uint8Array {
  const m = /-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/.exec(pem);
  return new Uint8Array(Buffer.from((m?.[1] ?? "").replace(/\s+/g, ""), "base64"));
}

function writeSecret(path: string, text: string) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** The appliance CA: created once, then reused across restarts. */
export async function loadOrCreateApplianceCa(dataDir: string, name: string): Promise<CaPems> {
  const dir = join(dataDir, "ca");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const certPath = join(dir, "appliance.pem");
  const keyPath = join(dir, "appliance.key");
  if (!existsSync(certPath) || !existsSync(keyPath)) {
    const made = await createCa({ commonName: `agate appliance CA (${name})`.slice(0, 64), now: new Date(), serial: randomBytes(16) });
    writeSecret(keyPath, made.keyPem);
    writeFileSync(certPath, made.certPem, { mode: 0o644 });
  }
  const certPem = readFileSync(certPath, "utf8");
  const keyPem = readFileSync(keyPath, "utf8");
  const ca = await loadCa("appliance", { cert: certPem, key: keyPem });
  return {
    kind: "appliance",
    certPem,
    keyPem,
    chainPem: "",
    rootPem: certPem,
    commonName: ca.cert.subjectName.getField("CN")[0] ?? "agate appliance CA",
    notAfter: ca.cert.notAfter.getTime(),
  };
}

function readConfigured(key: string, path: string | null): string {
  if (!path) throw new ConfigError(key, "not set");
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(key, `cannot read ${path}: ${(e as Error).message}`);
  }
}

/**
 * The CA the config asks for, checked, with what agents download beside it: its Windows package (built once per
 * CA, store/ca-msi.ts) and the next CA when one is published (store/ca-rollover.ts). A next CA whose file is gone
 * or unreadable, or that is the active one (it was just assigned), is left out rather than failing the start.
 */
export async function loadActiveCa(config: Config): Promise<CaPems> {
  const ca = await loadConfiguredCa(config);
  const dataDir = config.gateway.data_dir;
  const der = derOfPem(ca.rootPem);
  ca.msi = await loadOrBuildCaMsi(dataDir, { der, commonName: ca.commonName });
  ca.next = await loadNextCa(dataDir, der);
  return ca;
}

async function loadNextCa(dataDir: string, activeDer: Uint8Array): Promise<NextCaPems | null> {
  const ref = readRollover(dataDir).next;
  if (!ref) return null;
  try {
    const rootPem = readFileSync(ref.root, "utf8");
    const x = new X509Certificate(rootPem);
    const der = new Uint8Array(x.raw);
    if (Buffer.from(der).equals(Buffer.from(activeDer))) return null;
    const commonName = /(?:^|\n)CN=([^\n]+)/.exec(x.subject)?.[1] ?? x.subject;
    return { id: ref.id, rootPem, commonName, notAfter: Date.parse(x.validTo), msi: await loadOrBuildCaMsi(dataDir, { der, commonName }) };
  } catch (e) {
    log("warn", "the published next CA cannot be read; agents get the current CA only", { id: ref.id, file: ref.root, error: (e as Error).message });
    return null;
  }
}

/** The CA the config asks for, checked; errors name the config key and what is wrong with the file. */
async function loadConfiguredCa(config: Config): Promise<CaPems> {
  const t = config.tls;
  if (t.ca === "appliance") return loadOrCreateApplianceCa(config.gateway.data_dir, config.gateway.name);
  const cert = readConfigured("tls.ca_cert", t.ca_cert);
  const key = readConfigured("tls.ca_key", t.ca_key);
  const chain = t.ca === "customer" && t.ca_chain ? readConfigured("tls.ca_chain", t.ca_chain) : undefined;
  const check = await checkChain({ root: cert, intermediate: chain, key }, new Date());
  if (!check.ok) {
    const names = { root: "tls.ca_cert", intermediate: "tls.ca_chain", key: "tls.ca_key" } as const;
    const first = check.problems[0]!;
    throw new ConfigError(names[first.file], check.problems.map((p) => `${names[p.file]}: ${p.problem}`).join("; "));
  }
  const ca = check.ca;
  return {
    kind: t.ca,
    certPem: ca.certPem,
    keyPem: key,
    chainPem: chain ?? "",
    rootPem: cert,
    commonName: check.commonName,
    notAfter: check.notAfter.getTime(),
  };
}
