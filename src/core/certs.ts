/**
 * @module The CAs agents are asked to trust and the leaf certificates minted under them (DESIGN "TLS towards
 * agents", STYLE §13, after mitmproxy `certs.py`). Three kinds of CA sign leaves: the **appliance** CA made for this
 * gateway (`createCa`), the **common** CA shared by many gateways, and a **customer**-signed chain uploaded by the
 * admin, which this module does not trust until `checkChain` has said what, if anything, is wrong with it.
 *
 * Pure (STYLE §1–2): time and serial numbers are arguments, nothing touches the disk (`store/ca-store.ts` does),
 * and all ASN.1 goes through `@peculiar/x509` and the `@peculiar/asn1-*` schemas it is built on (never by hand).
 * Keys are WebCrypto `CryptoKey`s. One P-256 leaf key pair serves every leaf of a process (`makeLeafKeys`), so a
 * mint is one signature; callers cache leaves by host (`cert-cache.ts`).
 */
import "reflect-metadata"; // @peculiar/x509 (tsyringe) needs it loaded first
import * as x509 from "@peculiar/x509";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { PrivateKeyInfo } from "@peculiar/asn1-pkcs8";
import {
  ECParameters,
  ECPrivateKey,
  ecdsaWithSHA256,
  id_ecPublicKey,
  id_secp256r1,
  id_secp384r1,
  id_secp521r1,
} from "@peculiar/asn1-ecc";
import { id_rsaEncryption, id_sha256WithRSAEncryption } from "@peculiar/asn1-rsa";
import * as asn1X509 from "@peculiar/asn1-x509";
import { ProxyError, printable } from "./errors";

/** Short: clients (Apple, Chrome) reject long-lived leaves; 199 days stays under the 200-day rule of 2026. */
export const LEAF_VALIDITY_DAYS = 199;
/** Leaves (and the appliance CA) start this many days in the past, for agents whose clocks run slow. */
export const BACKDATE_DAYS = 2;
export const CA_VALIDITY_DAYS = 3650;
/** DESIGN: each uploaded file is at most 3 MB. */
export const MAX_UPLOAD_BYTES = 3 * 1024 * 1024;
/** RFC 5280 §4.1.2.2: at most 20 octets (the top bit is cleared, so 20 random bytes need no 0x00 sign octet). */
export const MAX_SERIAL_BYTES = 20;
/** RFC 5280 ub-common-name. */
const CN_MAX = 64;
/** DESIGN: a certificate's common name, as shown and edited by admins, is at most 100 characters. */
const DISPLAY_NAME_MAX = 100;
const DAY_MS = 86_400_000;

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
/** One P-256 pair per process; every leaf carries its public key. */
export type LeafKeys = CryptoKeyPair;
export type ChainProblem = { file: "root" | "intermediate" | "key"; problem: string };
export type ChainCheck =
  | { ok: true; ca: Ca; notAfter: Date; commonName: string; expiresInDays: number }
  | { ok: false; problems: ChainProblem[] };

// WebCrypto dictionaries, spelled out here: tsconfig has no DOM lib.
type SignAlg = { name: "RSASSA-PKCS1-v1_5"; hash: "SHA-256" } | { name: "ECDSA"; namedCurve: string };
type KeyAlg = { name: string; namedCurve?: string; modulusLength?: number; hash?: { name: string } };
type KeyInfo = { alg: SignAlg; pkcs8: ArrayBuffer; label: string };

/** A key file we cannot use; the message is for the admin. */
class KeyFileError extends Error {}

const PASSPHRASE =
  "the private key is protected by a passphrase; upload it without one (openssl pkey -in key.pem -out plain.pem)";
const PKCS8_HINT = "convert it to PKCS#8 with: openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-pkcs8.pem";
const WANT_CERT = "-----BEGIN CERTIFICATE-----";
const WANT_KEY = "-----BEGIN PRIVATE KEY-----";

// ─── creating the appliance CA ────────────────────────────────────────────────────────────────────────────────────────

/**
 * A self-signed ECDSA P-256 root: basicConstraints cA critical, keyUsage keyCertSign|cRLSign critical, SKI.
 * Valid from `now` − BACKDATE_DAYS (so leaves backdated the same way still nest inside it) for `validityDays`.
 * The key is PKCS#8 PEM ("BEGIN PRIVATE KEY"); the store writes it with mode 0600.
 */
export async function createCa(opts: {
  commonName: string;
  now: Date;
  validityDays?: number;
  serial: Uint8Array;
}): Promise<{ certPem: string; keyPem: string }> {
  const cn = opts.commonName.trim();
  if (cn.length === 0 || cn.length > CN_MAX)
    throw new ProxyError("PX_CA_NAME", "client", `CA common name: expected 1–${CN_MAX} characters, got ${cn.length}`);
  const days = opts.validityDays ?? CA_VALIDITY_DAYS;
  if (!Number.isInteger(days) || days < 1)
    throw new ProxyError("PX_CA_VALIDITY", "client", `CA validity: expected a whole number of days ≥ 1, got ${days}`);
  const keys = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
  const t = opts.now.getTime();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialHex(opts.serial),
    name: [{ CN: [cn] }],
    notBefore: new Date(t - BACKDATE_DAYS * DAY_MS),
    notAfter: new Date(t + days * DAY_MS),
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" } as { name: string },
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  return { certPem: pemOf(cert), keyPem: pemBlock(pkcs8, "PRIVATE KEY") };
}

// ─── leaves ───────────────────────────────────────────────────────────────────────────────────────────────────────────

export async function makeLeafKeys(): Promise<LeafKeys> {
  // extractable: mintLeaf hands the private key to the TLS layer as PEM
  return (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
}

type LeafPrep = { spki: asn1X509.SubjectPublicKeyInfo; keyPem: string };
type CaPrep = {
  issuer: asn1X509.Name;
  aki: asn1X509.Extension;
  sigAlg: asn1X509.AlgorithmIdentifier;
  sign: (tbs: ArrayBuffer) => Promise<ArrayBuffer>;
  cn: string;
};
// Work done once per key pair / per CA rather than once per mint: mints build the certificate straight from the
// asn1-x509 schema with these parts (≈3× faster than X509CertificateGenerator, which re-parses every extension).
const leafPreps = new WeakMap<CryptoKey, Promise<LeafPrep>>();
const caPreps = new WeakMap<Ca, Promise<CaPrep>>();
const asnExt = (e: x509.Extension) => AsnConvert.parse(e.rawData, asn1X509.Extension);
const LEAF_EXTENSIONS = [
  asnExt(new x509.BasicConstraintsExtension(false, undefined, true)),
  asnExt(new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)),
  asnExt(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false)),
];
const EC_SIGNATURE = new x509.AsnEcSignatureFormatter();

function prepLeaf(keys: LeafKeys): Promise<LeafPrep> {
  let p = leafPreps.get(keys.privateKey);
  if (!p) {
    p = (async () => ({
      spki: AsnConvert.parse(await crypto.subtle.exportKey("spki", keys.publicKey), asn1X509.SubjectPublicKeyInfo),
      keyPem: pemBlock(await crypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY"),
    }))();
    leafPreps.set(keys.privateKey, p);
  }
  return p;
}

function prepCa(ca: Ca): Promise<CaPrep> {
  let p = caPreps.get(ca);
  if (!p) {
    p = (async () => {
      // The AKI must repeat the CA's own SKI (customer CAs may not use the SHA-1 method); compute it only when absent.
      const ski = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
      const aki = ski
        ? new x509.AuthorityKeyIdentifierExtension(ski.keyId)
        : await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey);
      const key = ca.key;
      let sigAlg: asn1X509.AlgorithmIdentifier, sign: CaPrep["sign"];
      if (key.algorithm.name === "ECDSA") {
        const algorithm = { name: "ECDSA", namedCurve: (key.algorithm as KeyAlg).namedCurve };
        sigAlg = ecdsaWithSHA256;
        // WebCrypto gives r‖s; X.509 wants the DER ECDSA-Sig-Value (RFC 5758 §3.2).
        sign = async (tbs) =>
          EC_SIGNATURE.toAsnSignature(algorithm, await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, tbs))!;
      } else if (key.algorithm.name === "RSASSA-PKCS1-v1_5") {
        const hash = (key.algorithm as KeyAlg).hash?.name;
        // the hash is fixed when the key is imported; the OID below must say the same
        if (hash !== "SHA-256") throw new ProxyError("PX_CA_INVALID", "internal", `CA key imported for ${hash}, not SHA-256`);
        // Not asn1-rsa's `sha256WithRSAEncryption` constant: in 2.11.1 it carries the sha512-256 OID (…1.1.16).
        sigAlg = new asn1X509.AlgorithmIdentifier({ algorithm: id_sha256WithRSAEncryption, parameters: null });
        sign = (tbs) => crypto.subtle.sign({ name: "RSASSA-PKCS1-v1_5" }, key, tbs);
      } else {
        throw new ProxyError("PX_CA_INVALID", "internal", `CA key algorithm ${key.algorithm.name} cannot sign leaves`);
      }
      return {
        // Issuer = the CA's subject, byte for byte: Go's chain builder matches RawIssuer to RawSubject exactly.
        issuer: AsnConvert.parse(ca.cert.subjectName.toArrayBuffer(), asn1X509.Name),
        aki: asnExt(aki),
        sigAlg,
        sign,
        cn: displayName(ca.cert),
      };
    })();
    caPreps.set(ca, p);
  }
  return p;
}

/**
 * A leaf for `host` signed by `ca`: SAN DNS:host (IP SAN for IP literals), CN = host (omitted when longer than
 * 64 characters, the SAN is then critical), EKU serverAuth, keyUsage digitalSignature, basicConstraints cA=false,
 * AKI = the CA's SKI. Valid from `now` − BACKDATE_DAYS (not before the CA) for LEAF_VALIDITY_DAYS, clamped to the
 * CA's notAfter. Signed ECDSA-SHA256 by EC CA keys, RSASSA-PKCS1-v1_5-SHA256 by RSA ones.
 * `host` is lower-cased, loses a trailing dot and IPv6 brackets. Throws PX_BAD_HOST for a host that is not a DNS
 * name or IP literal, PX_CA_EXPIRED / PX_CA_NOT_YET_VALID when the CA cannot sign anything valid at `now`.
 */
export async function mintLeaf(
  ca: Ca,
  leafKeys: LeafKeys,
  host: string,
  now: Date,
  serial: Uint8Array,
): Promise<{ certPem: string; keyPem: string; notAfter: Date }> {
  const name = parseHost(host);
  const serialNumber = serialOctets(serial);
  const [prep, leaf] = await Promise.all([prepCa(ca), prepLeaf(leafKeys)]);
  const t = now.getTime();
  const caFrom = ca.cert.notBefore.getTime();
  const caUntil = ca.cert.notAfter.getTime();
  if (t >= caUntil)
    throw new ProxyError(
      "PX_CA_EXPIRED",
      "internal",
      `the ${ca.kind} CA "${prep.cn}" expired on ${ca.cert.notAfter.toISOString()}; no leaf can be minted`,
    );
  if (t < caFrom)
    throw new ProxyError(
      "PX_CA_NOT_YET_VALID",
      "internal",
      `the ${ca.kind} CA "${prep.cn}" is valid only from ${ca.cert.notBefore.toISOString()}`,
    );
  // X.509 times have whole seconds; truncate here so the returned notAfter is the one in the certificate.
  const notBefore = new Date(wholeSeconds(Math.max(t - BACKDATE_DAYS * DAY_MS, caFrom)));
  const notAfter = new Date(wholeSeconds(Math.min(t + LEAF_VALIDITY_DAYS * DAY_MS, caUntil)));
  const withCn = name.value.length <= CN_MAX;
  const san = new asn1X509.SubjectAlternativeName([
    new asn1X509.GeneralName(name.type === "dns" ? { dNSName: name.value } : { iPAddress: name.value }),
  ]);
  const tbs = new asn1X509.TBSCertificate({
    version: asn1X509.Version.v3,
    serialNumber,
    signature: prep.sigAlg,
    issuer: prep.issuer,
    validity: new asn1X509.Validity({ notBefore, notAfter }),
    subject: new asn1X509.Name(
      withCn
        ? [
            new asn1X509.RelativeDistinguishedName([
              new asn1X509.AttributeTypeAndValue({ type: id_at_commonName, value: new asn1X509.AttributeValue({ utf8String: name.value }) }),
            ]),
          ]
        : [],
    ),
    subjectPublicKeyInfo: leaf.spki,
    extensions: new asn1X509.Extensions([
      ...LEAF_EXTENSIONS,
      // RFC 5280 §4.2.1.6: with an empty subject the SAN must be critical.
      new asn1X509.Extension({
        extnID: asn1X509.id_ce_subjectAltName,
        critical: !withCn,
        extnValue: new OctetString(AsnConvert.serialize(san)),
      }),
      prep.aki,
    ]),
  });
  const signatureValue = await prep.sign(AsnConvert.serialize(tbs));
  const der = AsnConvert.serialize(
    new asn1X509.Certificate({ tbsCertificate: tbs, signatureAlgorithm: prep.sigAlg, signatureValue }),
  );
  return { certPem: pemBlock(der, "CERTIFICATE"), keyPem: leaf.keyPem, notAfter };
}

const id_at_commonName = "2.5.4.3";
const wholeSeconds = (ms: number) => Math.floor(ms / 1000) * 1000;

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const DNS_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** host → the SAN we put in the leaf. Lower-cases, drops brackets around IPv6 and a trailing dot. */
function parseHost(host: string): { type: "dns" | "ip"; value: string } {
  const bad = (why: string) =>
    new ProxyError("PX_BAD_HOST", "client", `cannot mint a certificate for "${printable(host)}": ${why}`);
  let h = host.trim().toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  else if (h.endsWith(".")) h = h.slice(0, -1);
  if (h.length === 0) throw bad("empty host");
  const v4 = IPV4.exec(h);
  if (v4) {
    if (v4.slice(1).some((o) => Number(o) > 255)) throw bad("not an IPv4 address");
    return { type: "ip", value: v4.slice(1).map(Number).join(".") };
  }
  if (h.includes(":")) {
    if (!/^[0-9a-f:.]+$/.test(h)) throw bad("not an IPv6 address");
    // IpConverter knows only hex groups: turn an embedded IPv4 tail (::ffff:1.2.3.4) into two groups.
    const tail = /^(.*:)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/.exec(h);
    if (tail) {
      const b = tail[2].split(".").map(Number);
      if (b.some((o) => o > 255)) throw bad("not an IPv6 address");
      h = `${tail[1]}${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
    }
    try {
      new x509.GeneralName("ip", h); // validates the address
    } catch (e) {
      throw bad(`not an IPv6 address (${(e as Error).message})`);
    }
    return { type: "ip", value: h };
  }
  if (h.length > 253) throw bad("longer than 253 characters");
  for (const label of h.split(".")) if (!DNS_LABEL.test(label)) throw bad("not a DNS name");
  return { type: "dns", value: h };
}

// ─── loading a stored CA ──────────────────────────────────────────────────────────────────────────────────────────────

/**
 * A CA from its stored PEM files. `cert` is the CA (appliance/common) or the customer root; `chain`, for customer
 * CAs, holds the intermediates leaf-issuer first — its first certificate is then the one that signs leaves and the
 * one `key` must belong to. The key may be PKCS#8 ("BEGIN PRIVATE KEY"), SEC1 ("BEGIN EC PRIVATE KEY") or
 * PKCS#1 ("BEGIN RSA PRIVATE KEY"). Throws PX_CA_INVALID with a message for the admin.
 */
export async function loadCa(kind: CaKind, pems: { cert: string; key: string; chain?: string }): Promise<Ca> {
  const fail = (msg: string, cause?: unknown) =>
    new ProxyError("PX_CA_INVALID", "internal", `${kind} CA: ${msg}`, cause === undefined ? undefined : { cause });
  const readAll = (what: string, pem: string): x509.X509Certificate[] => {
    const problems: string[] = [];
    const text = readText(pem, what, MAX_UPLOAD_BYTES, WANT_CERT, "openssl x509 -inform DER -in cert.der -out cert.pem", problems);
    const certs = text === undefined ? [] : readCerts(text, what, problems);
    if (problems.length === 0 && certs.length === 0) problems.push(`${what} holds no certificate`);
    if (problems.length) throw fail(problems.join("; "));
    return certs;
  };
  const root = readAll("the certificate file", pems.cert)[0];
  let chain = pems.chain !== undefined && pems.chain.trim() !== "" ? readAll("the chain file", pems.chain) : [];
  chain = dropRoot(chain, root);
  const issuing = chain[0] ?? root;
  let info: KeyInfo, priv: CryptoKey;
  try {
    info = readKey(pems.key, "the key file", MAX_UPLOAD_BYTES);
    priv = await importSigningKey(info, true);
  } catch (e) {
    throw fail((e as Error).message, e);
  }
  const mismatch = await keyMismatch(info, priv, issuing);
  if (mismatch) throw fail(mismatch);
  return makeCa(kind, issuing, chain, await importSigningKey(info, false));
}

// ─── checking an uploaded customer chain ──────────────────────────────────────────────────────────────────────────────

/**
 * Validates an uploaded customer-signed chain and says everything that is wrong with it, each problem naming its
 * file: sizes, PEM, passphrase-free key, key ↔ issuing certificate (the first intermediate, or the root), links
 * issuing → … → root by name and signature, a self-signed root, validity at `now`, CA flags (basicConstraints,
 * keyCertSign, pathLen, EKU allowing serverAuth), and weak keys or SHA-1 signatures clients refuse.
 * The intermediate file may end with the root itself; that copy is ignored.
 * On success `notAfter` is the earliest expiry in the chain and `expiresInDays` counts whole days to it, so the
 * caller can warn the admin before agents break silently.
 */
export async function checkChain(
  files: { root: string | Uint8Array; intermediate?: string | Uint8Array; key: string | Uint8Array },
  now: Date,
  limits: { maxBytes: number } = { maxBytes: MAX_UPLOAD_BYTES },
): Promise<ChainCheck> {
  const problems: ChainProblem[] = [];
  const add = (file: ChainProblem["file"]) => (problem: string) => problems.push({ file, problem });
  const DER_CERT = "openssl x509 -inform DER -in cert.der -out cert.pem";

  // Files one by one: what is in them.
  const rootMsgs: string[] = [];
  const rootText = readText(files.root, "the root file", limits.maxBytes, WANT_CERT, DER_CERT, rootMsgs);
  const roots = rootText === undefined ? [] : readCerts(rootText, "the root file", rootMsgs);
  let root: x509.X509Certificate | undefined = roots[0];
  if (rootMsgs.length === 0 && roots.length === 0) rootMsgs.push(`the root file holds no certificate; upload PEM (${WANT_CERT})`);
  if (roots.length > 1) {
    rootMsgs.push(
      `the root file holds ${roots.length} certificates; it must hold only the root (put intermediates in the intermediate file)`,
    );
    root = undefined;
  }
  rootMsgs.forEach(add("root"));
  if (rootMsgs.length) root = undefined;

  const hasInter = files.intermediate !== undefined && !isBlank(files.intermediate);
  const interMsgs: string[] = [];
  let inters: x509.X509Certificate[] = [];
  if (hasInter) {
    const what = "the intermediate file";
    const text = readText(files.intermediate!, what, limits.maxBytes, WANT_CERT, DER_CERT, interMsgs);
    inters = text === undefined ? [] : readCerts(text, what, interMsgs);
    if (interMsgs.length === 0 && inters.length === 0) interMsgs.push(`${what} holds no certificate; upload PEM (${WANT_CERT})`);
    interMsgs.forEach(add("intermediate"));
    if (root) inters = dropRoot(inters, root);
  }
  const intersOk = !hasInter || interMsgs.length === 0;

  if (!intersOk) inters = []; // a half-read intermediate file would only add misleading link errors

  const keyMsgs: string[] = [];
  let info: KeyInfo | undefined;
  let priv: CryptoKey | undefined;
  try {
    info = readKey(files.key, "the key file", limits.maxBytes);
    priv = await importSigningKey(info, true);
  } catch (e) {
    keyMsgs.push((e as Error).message);
  }
  if (info && priv && info.alg.name === "RSASSA-PKCS1-v1_5" && (priv.algorithm as KeyAlg).modulusLength! < 2048)
    keyMsgs.push(`the private key is ${info.label}; clients refuse RSA keys under 2048 bits`);
  keyMsgs.forEach(add("key"));

  // The path, leaf-issuer first: what is there of it.
  type Link = { cert: x509.X509Certificate; file: "root" | "intermediate"; label: string };
  const path: Link[] = inters.map((cert, i) => ({
    cert,
    file: "intermediate",
    label: `intermediate certificate ${inters.length > 1 ? `#${i + 1} ` : ""}"${displayName(cert)}"`,
  }));
  if (root) path.push({ cert: root, file: "root", label: `root certificate "${displayName(root)}"` });

  // The key signs leaves, so it must belong to the issuing certificate.
  const issuing = hasInter ? inters[0] : root;
  if (info && priv && issuing) {
    const mismatch = await keyMismatch(info, priv, issuing);
    if (mismatch) add("key")(mismatch);
  }

  // Each certificate on its own.
  const t = now.getTime();
  for (const [i, { cert, file, label }] of path.entries()) {
    const say = add(file);
    if (t < cert.notBefore.getTime()) say(`${label} is not valid yet: notBefore ${cert.notBefore.toISOString()}`);
    if (t > cert.notAfter.getTime()) say(`${label} expired: notAfter ${cert.notAfter.toISOString()}`);
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    if (!bc) say(`${label} is not a CA: it has no basicConstraints extension, so it may not sign certificates`);
    else if (!bc.ca) say(`${label} is not a CA: basicConstraints cA is false, so it may not sign certificates`);
    // pathLen counts the CA certificates below this one, not the leaf: the issuing certificate may have 0.
    else if (bc.pathLength !== undefined && bc.pathLength < i)
      say(`${label} allows ${bc.pathLength} intermediate(s) below it (pathLen), but the chain has ${i}`);
    const ku = cert.getExtension(x509.KeyUsagesExtension);
    if (ku && !(ku.usages & x509.KeyUsageFlags.keyCertSign))
      say(`${label} may not sign certificates: its keyUsage lacks keyCertSign`);
    // Windows, Go and Chrome apply a CA's EKU to the leaves below it.
    const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
    if (eku && !eku.usages.some((u) => u === x509.ExtendedKeyUsage.serverAuth || u === "2.5.29.37.0"))
      say(`${label} restricts extendedKeyUsage to ${eku.usages.join(", ")}; serverAuth is needed for TLS servers`);
    const hash = signatureHash(cert);
    if (file !== "root" && (hash === "SHA-1" || hash === "MD5"))
      say(`${label} is signed with ${hash}, which clients refuse`);
  }

  // Links: each certificate names the next as issuer and carries its valid signature.
  for (let i = 0; i < path.length - 1; i++) {
    const child = path[i], parent = path[i + 1];
    if (!sameName(child.cert.issuerName, parent.cert.subjectName)) {
      add(child.file)(
        `${child.label} was issued by "${child.cert.issuer}", not by the ${parent.label} ("${parent.cert.subject}")` +
          (child.file === "intermediate" && parent.file === "intermediate" ? "; list intermediates leaf-issuer first" : ""),
      );
    } else if (!(await signedBy(child.cert, parent.cert))) {
      add(child.file)(
        `${child.label} names "${child.cert.issuer}" as issuer, but its signature does not verify with the ${parent.label}'s key (signed by another CA of the same name?)`,
      );
    }
  }
  if (root) {
    const label = `root certificate "${displayName(root)}"`;
    if (!sameName(root.issuerName, root.subjectName))
      add("root")(
        `${label} is not self-signed: it was issued by "${root.issuer}"; the root file must hold the top of the chain`,
      );
    else if (!(await signedBy(root, root)))
      add("root")(`${label} names itself as issuer, but its signature does not verify with its own key`);
  }

  if (problems.length || !info || !issuing || !root) {
    if (problems.length === 0) add("key")("the chain could not be checked"); // unreachable: every gap above reports
    return { ok: false, problems };
  }
  const notAfter = new Date(Math.min(...path.map((o) => o.cert.notAfter.getTime())));
  const ca = makeCa("customer", issuing, inters, await importSigningKey(info, false));
  return {
    ok: true,
    ca,
    notAfter,
    commonName: displayName(issuing).slice(0, DISPLAY_NAME_MAX),
    expiresInDays: Math.floor((notAfter.getTime() - t) / DAY_MS),
  };
}

// ─── shared helpers ───────────────────────────────────────────────────────────────────────────────────────────────────

function makeCa(kind: CaKind, cert: x509.X509Certificate, chain: x509.X509Certificate[], key: CryptoKey): Ca {
  const certPem = pemOf(cert);
  return { kind, cert, chain, key, certPem, chainPem: chain.length ? chain.map(pemOf).join("") : certPem };
}

function pemOf(cert: x509.X509Certificate): string {
  return cert.toString("pem").trimEnd() + "\n";
}

function pemBlock(der: ArrayBuffer, tag: string): string {
  return x509.PemConverter.encode(der, tag).trimEnd() + "\n";
}

/** The CN, or the whole subject when there is none. */
function displayName(cert: x509.X509Certificate): string {
  return cert.subjectName.getField("CN")[0] ?? cert.subject;
}

/** Caller's random bytes → a positive, minimally encoded INTEGER of at most 20 octets (RFC 5280 §4.1.2.2). */
function serialOctets(serial: Uint8Array): ArrayBuffer {
  if (serial.length === 0 || serial.length > MAX_SERIAL_BYTES)
    throw new ProxyError("PX_BAD_SERIAL", "internal", `serial: expected 1–${MAX_SERIAL_BYTES} bytes, got ${serial.length}`);
  let s = Uint8Array.from(serial); // a copy even for a Buffer, whose slice() is a view: the caller's bytes stay put
  s[0] &= 0x7f; // keeps 20 random bytes within 20 octets: no 0x00 sign octet is needed
  const first = s.findIndex((o) => o !== 0);
  if (first < 0) throw new ProxyError("PX_BAD_SERIAL", "internal", "serial: must not be zero");
  s = s.subarray(first);
  if (s[0] & 0x80) s = Uint8Array.of(0, ...s);
  return s.slice().buffer;
}

function serialHex(serial: Uint8Array): string {
  return Array.from(new Uint8Array(serialOctets(serial)), (o) => o.toString(16).padStart(2, "0")).join("");
}

function isBlank(input: string | Uint8Array): boolean {
  return typeof input === "string" ? input.trim() === "" : input.every((o) => o === 0x20 || (o >= 0x09 && o <= 0x0d));
}

/**
 * The text of an uploaded file, or undefined with the reason pushed to `problems`: too big, empty, binary (DER),
 * or without a PEM BEGIN line. Carriage returns and trailing blanks are removed (PemConverter is strict about them).
 */
function readText(
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

function mb(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

type PemBlock = { type: string; headers: { key: string; value: string }[]; rawData: ArrayBuffer };

function readBlocks(text: string, problems: string[]): PemBlock[] {
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

function readCerts(text: string, what: string, problems: string[]): x509.X509Certificate[] {
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
function dropRoot(chain: x509.X509Certificate[], root: x509.X509Certificate | undefined): x509.X509Certificate[] {
  return root ? chain.filter((c) => !c.equal(root)) : chain;
}

/** The signing key in a key file, as PKCS#8 plus the WebCrypto algorithm to import it with. Throws KeyFileError. */
function readKey(pem: string | Uint8Array, what: string, maxBytes: number): KeyInfo {
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
async function importSigningKey(info: KeyInfo, extractable: boolean): Promise<CryptoKey> {
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
function signatureHash(cert: x509.X509Certificate): string {
  try {
    return (cert.signatureAlgorithm.hash?.name ?? "").toUpperCase();
  } catch {
    return "";
  }
}

/** "RSA 2048-bit" / "EC P-256" / the algorithm name, for messages. */
function certKeyLabel(cert: x509.X509Certificate): string {
  const a = cert.publicKey.algorithm as KeyAlg;
  if (a.name === "ECDSA") return `an EC ${a.namedCurve} key`;
  if (a.name === "RSASSA-PKCS1-v1_5") return `an RSA ${a.modulusLength}-bit key`;
  return `a ${a.name} key`;
}

/**
 * Why `priv` (extractable, read from `info`) is not the private half of `cert`'s key, or undefined when it is. Both
 * public keys go through WebCrypto and are compared as SPKI bytes, so encoding quirks in the certificate do not matter.
 */
async function keyMismatch(info: KeyInfo, priv: CryptoKey, cert: x509.X509Certificate): Promise<string | undefined> {
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

function sameBytes(a: ArrayBuffer, b: ArrayBuffer): boolean {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a), y = new Uint8Array(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** RFC 5280 §7.1 compares names after normalising; DER bytes first, then a case- and space-folded string. */
function sameName(a: x509.Name, b: x509.Name): boolean {
  if (sameBytes(a.toArrayBuffer(), b.toArrayBuffer())) return true;
  const fold = (n: x509.Name) => n.toString().toLowerCase().replace(/\s+/g, " ").trim();
  return fold(a) === fold(b);
}

async function signedBy(child: x509.X509Certificate, issuer: x509.X509Certificate): Promise<boolean> {
  try {
    return await child.verify({ publicKey: issuer, signatureOnly: true });
  } catch {
    return false; // unsupported algorithm, malformed signature: not a verified link either way
  }
}
