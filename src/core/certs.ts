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
import { ecdsaWithSHA256 } from "@peculiar/asn1-ecc";
import { id_sha256WithRSAEncryption } from "@peculiar/asn1-rsa";
import * as asn1X509 from "@peculiar/asn1-x509";
import { ProxyError, printable } from "./errors";
import {
  DAY_MS,
  MAX_UPLOAD_BYTES,
  WANT_CERT,
  dropRoot,
  displayName,
  importSigningKey,
  keyMismatch,
  makeCa,
  pemBlock,
  pemOf,
  readCerts,
  readKey,
  readText,
  type Ca,
  type CaKind,
  type KeyAlg,
  type KeyInfo,
} from "./cert-pem";

// The callers' one door: the CA and chain types and the chain check live next door, re-exported here.
export { MAX_UPLOAD_BYTES, type Ca, type CaKind, type X509Certificate } from "./cert-pem";
export { checkChain, type ChainCheck, type ChainProblem } from "./cert-chain";

/** Short: clients (Apple, Chrome) reject long-lived leaves; 199 days stays under the 200-day rule of 2026. */
export const LEAF_VALIDITY_DAYS = 199;
/** Leaves (and the appliance CA) start this many days in the past, for agents whose clocks run slow. */
export const BACKDATE_DAYS = 2;
export const CA_VALIDITY_DAYS = 3650;
/** RFC 5280 §4.1.2.2: at most 20 octets (the top bit is cleared, so 20 random bytes need no 0x00 sign octet). */
export const MAX_SERIAL_BYTES = 20;
/** RFC 5280 ub-common-name. */
const CN_MAX = 64;

/** One P-256 pair per process; every leaf carries its public key. */
export type LeafKeys = CryptoKeyPair;

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
