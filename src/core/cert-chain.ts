/**
 * @module The check of an uploaded customer-signed chain (DESIGN "TLS towards agents"): everything wrong with it,
 * each problem naming its file, before the gateway trusts it; on success the `Ca` that signs leaves. Pure: `now`
 * is an argument. `certs.ts` re-exports `checkChain` for its callers.
 */
import "reflect-metadata"; // @peculiar/x509 (tsyringe) needs it loaded first
import * as x509 from "@peculiar/x509";
import {
  DAY_MS,
  DISPLAY_NAME_MAX,
  MAX_UPLOAD_BYTES,
  WANT_CERT,
  displayName,
  dropRoot,
  importSigningKey,
  isBlank,
  keyMismatch,
  makeCa,
  readCerts,
  readKey,
  readText,
  sameName,
  signatureHash,
  signedBy,
  type Ca,
  type KeyAlg,
  type KeyInfo,
} from "./cert-pem";

export type ChainProblem = { file: "root" | "intermediate" | "key"; problem: string };
export type ChainCheck =
  | { ok: true; ca: Ca; notAfter: Date; commonName: string; expiresInDays: number }
  | { ok: false; problems: ChainProblem[] };

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
