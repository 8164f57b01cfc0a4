/**
 * @module Reading certificates and keys for the CAs (`certs.ts`) and the uploaded-chain check (`cert-chain.ts`): PEM
 * text and blocks, the three private-key encodings (PKCS#8, SEC1, PKCS#1) as PKCS#8 plus the WebCrypto algorithm,
 * key ↔ certificate and name ↔ name comparisons, signature checks, and the `Ca` value both build. Every problem is a
 * message for the admin that names the file. Pure (STYLE §1–2): text in, values out; ASN.1 only through
 * `@peculiar/x509` and the `@peculiar/asn1-*` schemas.
 */
import "reflect-metadata"; // @peculiar/x509 (tsyringe) needs it loaded first
import * as x509 from "@peculiar/x509";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { PrivateKeyInfo } from "@peculiar/asn1-pkcs8";
import { ECParameters, ECPrivateKey, id_ecPublicKey, id_secp256r1, id_secp384r1, id_secp521r1 } from "@peculiar/asn1-ecc";
import { id_rsaEncryption } from "@peculiar/asn1-rsa";
import * as asn1X509 from "@peculiar/asn1-x509";

/** DESIGN: each uploaded file is at most 3 MB. */
export const MAX_UPLOAD_BYTES = 3 * 1024 * 1024;
/** DESIGN: a certificate's common name, as shown and edited by admins, is at most 100 characters. */
export const DISPLAY_NAME_MAX = 100;
export const DAY_MS = 86_400_000;

export type CaKind = "appliance" | "common" | "customer";
export type Ca = {
  kind: CaKind;
  /** the certificate that signs leaves: the root for appliance/common, the first intermediate for customer chains */
  cert: X509Certificate;
  /** intermediates up to (excluding) the root, leaf-issuer first (so `chain[0] === cert` when non-empty); empty for appliance/common */
  chain: X509Certificate[];
  /** private, signing, not extractable */
  key: CryptoKey;
  /** PEM of `cert` */
  certPem: string;
  /** issuer cert + intermediates, PEM: what a TLS server sends after the leaf */
  chainPem: string;
};
export type X509Certificate = x509.X509Certificate;

// WebCrypto dictionaries, spelled out here: tsconfig has no DOM lib.
export type SignAlg = { name: "RSASSA-PKCS1-v1_5"; hash: "SHA-256" } | { name: "ECDSA"; namedCurve: string };
export type KeyAlg = { name: string; namedCurve?: string; modulusLength?: number; hash?: { name: string } };
export type KeyInfo = { alg: SignAlg; pkcs8: ArrayBuffer; label: string };

/** A key file we cannot use; the message is for the admin. */
export class KeyFileError extends Error {}

export const PASSPHRASE =
  "the private key is protected by a passphrase; upload it without one (openssl pkey -in key.pem -out plain.pem)";
export const PKCS8_HINT = "convert it to PKCS#8 with: openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-pkcs8.pem";
export const WANT_CERT = "-----BEGIN CERTIFICATE-----";
export const WANT_KEY = "-----BEGIN PRIVATE KEY-----";


export function makeCa(kind: CaKind, cert: x509.X509Certificate, chain: x509.X509Certificate[], key: CryptoKey): Ca {
  const certPem = pemOf(cert);
  return { kind, cert, chain, key, certPem, chainPem: chain.length ? chain.map(pemOf).join("") : certPem };
}

export function pemOf(cert: x509.X509Certificate): string {
  return cert.toString("pem").trimEnd() + "\n";
}

export function pemBlock(der: ArrayBuffer, tag: string): string {
  return x509.PemConverter.encode(der, tag).trimEnd() + "\n";
}

/** The CN, or the whole subject when there is none. */
export function displayName(cert: x509.X509Certificate): string {
  return cert.subjectName.getField("CN")[0] ?? cert.subject;
}

export function isBlank(input: string | Uint8Array): boolean {
  return typeof input === "string" ? input.trim() === "" : input.every((o) => o === 0x20 || (o >= 0x09 && o <= 0x0d));
}

/**
 * The text of an uploaded file, or undefined with the reason pushed to `problems`: too big, empty, binary (DER),
 * or without a PEM BEGIN line. Carriage returns and trailing blanks are removed (PemConverter is strict about them).
 */
export function readText(
  input: string | Uint8Array,
  what: string,
  maxBytes: number,
  want: string,
  derHint: string,
  problems: string[],
): string | undefined {
  const bytes = typeof input === "string" ? new TextEncoder().encode(input).byteLength : input.byteLength;
  if (bytes > maxBytes) {
    problems.push(`${what} is ${mb(bytes)} (${bytes} bytes); the limit is ${mb(maxBytes)}`);
    return undefined;
  }
  if (bytes === 0) {
    problems.push(`not PEM: ${what} is empty; upload PEM (${want})`);
    return undefined;
  }
  const text = typeof input === "string" ? input : new TextDecoder("utf-8").decode(input);
  // DER read as text: NULs, replacement characters, control bytes.
  if (/[\u0000-\u0008\u000e-\u001f\ufffd]/.test(text)) {
    problems.push(
      `not PEM: ${what} holds binary data (DER?); convert it with "${derHint}" and upload PEM (${want})`,
    );
    return undefined;
  }
  if (!/-----BEGIN [^\n-]+-----/.test(text)) {
    problems.push(`not PEM: ${what} has no "-----BEGIN" line; upload PEM (${want})`);
    return undefined;
  }
  return text.replace(/\r/g, "").replace(/[ \t]+$/gm, "");
}

export function mb(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

type PemBlock = { type: string; headers: { key: string; value: string }[]; rawData: ArrayBuffer };

export function readBlocks(text: string, problems: string[]): PemBlock[] {
  let blocks: PemBlock[];
  try {
    blocks = x509.PemConverter.decodeWithHeaders(text);
  } catch (e) {
    problems.push(`the PEM could not be decoded (${(e as Error).message})`);
    return [];
  }
  const begins = text.match(/^-----BEGIN [^\n]*$/gm)?.length ?? 0;
  if (blocks.length < begins)
    problems.push(
      `${begins - blocks.length} of ${begins} PEM blocks could not be decoded (broken base64, or a BEGIN line without its END line)`,
    );
  return blocks;
}

export function readCerts(text: string, what: string, problems: string[]): x509.X509Certificate[] {
  const certs: x509.X509Certificate[] = [];
  let n = 0;
  for (const b of readBlocks(text, problems)) {
    if (b.type !== "CERTIFICATE") {
      problems.push(
        /PRIVATE KEY/.test(b.type)
          ? `${what} holds a private key ("${b.type}"); upload it as the key file, and only certificates here`
          : `${what} holds a "${b.type}" block; it takes certificates only (${WANT_CERT})`,
      );
      continue;
    }
    n++;
    try {
      certs.push(new x509.X509Certificate(b.rawData));
    } catch (e) {
      problems.push(`certificate #${n} is not a valid X.509 certificate (${(e as Error).message})`);
    }
  }
  return certs;
}

/** A customer may paste the root at the end of the intermediate file too; that copy is not an intermediate. */
export function dropRoot(chain: x509.X509Certificate[], root: x509.X509Certificate | undefined): x509.X509Certificate[] {
  return root ? chain.filter((c) => !c.equal(root)) : chain;
}

/** The signing key in a key file, as PKCS#8 plus the WebCrypto algorithm to import it with. Throws KeyFileError. */
export function readKey(pem: string | Uint8Array, what: string, maxBytes: number): KeyInfo {
  const problems: string[] = [];
  const text = readText(pem, what, maxBytes, WANT_KEY, "openssl pkey -inform DER -in key.der -out key.pem", problems);
  if (text === undefined) throw new KeyFileError(problems[0]);
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(text) || /^Proc-Type:\s*4,\s*ENCRYPTED/im.test(text))
    throw new KeyFileError(PASSPHRASE);
  const blocks = readBlocks(text, problems);
  if (problems.length) throw new KeyFileError(problems[0]);
  const keys = blocks.filter((b) => /^(|EC |RSA )PRIVATE KEY$/.test(b.type));
  if (keys.length === 0) {
    const types = blocks.map((b) => `"${b.type}"`).join(", ") || "nothing readable";
    throw new KeyFileError(`${what} holds ${types} but no private key; upload PEM (${WANT_KEY})`);
  }
  if (keys.length > 1)
    throw new KeyFileError(`${what} holds ${keys.length} private keys; upload only the issuing certificate's key`);
  const { type, rawData } = keys[0];
  try {
    if (type === "PRIVATE KEY") return fromPkcs8(rawData);
    if (type === "EC PRIVATE KEY") return fromSec1(rawData);
    return fromPkcs1(rawData);
  } catch (e) {
    if (e instanceof KeyFileError) throw e;
    throw new KeyFileError(`the "${type}" block is not a valid private key (${(e as Error).message}); ${PKCS8_HINT}`);
  }
}

const CURVES: Record<string, string> = { [id_secp256r1]: "P-256", [id_secp384r1]: "P-384", [id_secp521r1]: "P-521" };
const KEY_OIDS: Record<string, string> = {
  "1.3.101.112": "Ed25519",
  "1.3.101.113": "Ed448",
  "1.2.840.113549.1.1.10": "RSA-PSS",
  "1.2.840.10040.4.1": "DSA",
};
const EXPLICIT_CURVE =
  "the EC key spells out its curve parameters instead of naming the curve; re-export it with: openssl pkey -in key.pem -ec_param_enc named_curve -out key-pkcs8.pem";

function fromPkcs8(der: ArrayBuffer): KeyInfo {
  const pki = AsnConvert.parse(der, PrivateKeyInfo);
  const oid = pki.privateKeyAlgorithm.algorithm;
  if (oid === id_rsaEncryption) return rsaInfo(der);
  if (oid === id_ecPublicKey) {
    const params = pki.privateKeyAlgorithm.parameters;
    const curveOid = params ? AsnConvert.parse(params, ECParameters).namedCurve : undefined;
    if (!curveOid) throw new KeyFileError(EXPLICIT_CURVE);
    return ecInfo(der, curveOid);
  }
  throw new KeyFileError(
    `the private key is ${KEY_OIDS[oid] ?? `of type ${oid}`}; only RSA and EC (P-256, P-384, P-521) keys can sign certificates here`,
  );
}

/** SEC1 "EC PRIVATE KEY" → PKCS#8 (RFC 5915 inside RFC 5208's PrivateKeyInfo). */
function fromSec1(der: ArrayBuffer): KeyInfo {
  const ec = AsnConvert.parse(der, ECPrivateKey);
  const curveOid = ec.parameters?.namedCurve;
  if (!curveOid) throw new KeyFileError(`${EXPLICIT_CURVE} (or ${PKCS8_HINT})`);
  const pkcs8 = AsnConvert.serialize(
    new PrivateKeyInfo({
      privateKeyAlgorithm: new asn1X509.AlgorithmIdentifier({
        algorithm: id_ecPublicKey,
        parameters: AsnConvert.serialize(new ECParameters({ namedCurve: curveOid })),
      }),
      privateKey: new OctetString(der),
    }),
  );
  return ecInfo(pkcs8, curveOid);
}

/** PKCS#1 "RSA PRIVATE KEY" → PKCS#8 (RFC 8017 key inside RFC 5208's PrivateKeyInfo, parameters NULL). */
function fromPkcs1(der: ArrayBuffer): KeyInfo {
  const pkcs8 = AsnConvert.serialize(
    new PrivateKeyInfo({
      privateKeyAlgorithm: new asn1X509.AlgorithmIdentifier({ algorithm: id_rsaEncryption, parameters: null }),
      privateKey: new OctetString(der),
    }),
  );
  return rsaInfo(pkcs8);
}

function ecInfo(pkcs8: ArrayBuffer, curveOid: string): KeyInfo {
  const namedCurve = CURVES[curveOid];
  if (!namedCurve) throw new KeyFileError(`the EC key is on curve ${curveOid}; only P-256, P-384 and P-521 are supported`);
  return { alg: { name: "ECDSA", namedCurve }, pkcs8, label: `an EC ${namedCurve} key` };
}

function rsaInfo(pkcs8: ArrayBuffer): KeyInfo {
  return { alg: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, pkcs8, label: "an RSA key" };
}

/** Also fills in the RSA size in `info.label`: it is known only once the key is imported. */
export async function importSigningKey(info: KeyInfo, extractable: boolean): Promise<CryptoKey> {
  let key: CryptoKey;
  try {
    key = await crypto.subtle.importKey("pkcs8", info.pkcs8, info.alg, extractable, ["sign"]);
  } catch (e) {
    throw new KeyFileError(`the private key could not be read (${(e as Error).message}); ${PKCS8_HINT}`);
  }
  if (key.algorithm.name === "RSASSA-PKCS1-v1_5")
    info.label = `an RSA ${(key.algorithm as KeyAlg).modulusLength}-bit key`;
  return key;
}

/** "SHA-256", "SHA-1", … of a certificate's signature, "" when it has none we know. */
export function signatureHash(cert: x509.X509Certificate): string {
  try {
    return (cert.signatureAlgorithm.hash?.name ?? "").toUpperCase();
  } catch {
    return "";
  }
}

/** "RSA 2048-bit" / "EC P-256" / the algorithm name, for messages. */
export function certKeyLabel(cert: x509.X509Certificate): string {
  const a = cert.publicKey.algorithm as KeyAlg;
  if (a.name === "ECDSA") return `an EC ${a.namedCurve} key`;
  if (a.name === "RSASSA-PKCS1-v1_5") return `an RSA ${a.modulusLength}-bit key`;
  return `a ${a.name} key`;
}

/**
 * Why `priv` (extractable, read from `info`) is not the private half of `cert`'s key, or undefined when it is. Both
 * public keys go through WebCrypto and are compared as SPKI bytes, so encoding quirks in the certificate do not matter.
 */
export async function keyMismatch(info: KeyInfo, priv: CryptoKey, cert: x509.X509Certificate): Promise<string | undefined> {
  const certAlg = cert.publicKey.algorithm as KeyAlg;
  const what = `the issuing certificate "${displayName(cert)}"`;
  const sameType =
    certAlg.name === info.alg.name && (certAlg.name !== "ECDSA" || certAlg.namedCurve === (info.alg as KeyAlg).namedCurve);
  if (!sameType) return `the private key is ${info.label}, but ${what} holds ${certKeyLabel(cert)}: they do not belong together`;
  const jwk = await crypto.subtle.exportKey("jwk", priv);
  const pubJwk =
    jwk.kty === "EC" ? { kty: "EC", crv: jwk.crv, x: jwk.x, y: jwk.y } : { kty: "RSA", n: jwk.n, e: jwk.e };
  const fromKey = await crypto.subtle.exportKey(
    "spki",
    await crypto.subtle.importKey("jwk", pubJwk, info.alg, true, ["verify"]),
  );
  const fromCert = await crypto.subtle.exportKey("spki", await cert.publicKey.export(info.alg, ["verify"]));
  if (!sameBytes(fromKey, fromCert)) return `the private key does not belong to ${what} (their public keys differ)`;
  return undefined;
}

export function sameBytes(a: ArrayBuffer, b: ArrayBuffer): boolean {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a), y = new Uint8Array(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** RFC 5280 §7.1 compares names after normalising; DER bytes first, then a case- and space-folded string. */
export function sameName(a: x509.Name, b: x509.Name): boolean {
  if (sameBytes(a.toArrayBuffer(), b.toArrayBuffer())) return true;
  const fold = (n: x509.Name) => n.toString().toLowerCase().replace(/\s+/g, " ").trim();
  return fold(a) === fold(b);
}

export async function signedBy(child: x509.X509Certificate, issuer: x509.X509Certificate): Promise<boolean> {
  try {
    return await child.verify({ publicKey: issuer, signatureOnly: true });
  } catch {
    return false; // unsupported algorithm, malformed signature: not a verified link either way
  }
}

