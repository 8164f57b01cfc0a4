/**
 * certs.ts: the appliance CA, leaves under it and under customer RSA chains (checked by @peculiar/x509 and by
 * `openssl verify`), key formats, and every way an uploaded chain can be wrong. No sockets; the clock is fixed
 * (openssl-made fixtures are dated from their own notBefore, and `openssl verify -attime` uses the same instant).
 */
import "reflect-metadata"; // before anything that loads @peculiar/x509: Bun may otherwise evaluate it first
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import {
  BACKDATE_DAYS,
  LEAF_VALIDITY_DAYS,
  checkChain,
  createCa,
  loadCa,
  makeLeafKeys,
  mintLeaf,
  type Ca,
  type ChainProblem,
  type LeafKeys,
} from "../../src/core/certs";
import { ProxyError } from "../../src/core/errors";

const DAY = 86_400_000;
const NOW = new Date("2026-03-01T12:00:00Z");
const PASSPHRASE =
  "the private key is protected by a passphrase; upload it without one (openssl pkey -in key.pem -out plain.pem)";

const dir = mkdtempSync(join(tmpdir(), "agate-certs-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string) => join(dir, name);
const read = (name: string) => readFileSync(file(name), "utf8");
const write = (name: string, text: string) => writeFileSync(file(name), text);
function openssl(...args: string[]): { ok: boolean; out: string } {
  const r = Bun.spawnSync(["openssl", ...args], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  return { ok: r.exitCode === 0, out: r.stdout.toString() + r.stderr.toString() };
}
function must(...args: string[]): string {
  const r = openssl(...args);
  if (!r.ok) throw new Error(`openssl ${args.join(" ")}\n${r.out}`);
  return r.out;
}
/** `openssl verify` of a leaf at a fixed instant, as a TLS server certificate for `name`. */
function verifyLeaf(o: { root: string; untrusted?: string; leaf: string; at: Date; host?: string; ip?: string }) {
  const args = ["verify", "-attime", String(Math.floor(o.at.getTime() / 1000)), "-CAfile", o.root, "-purpose", "sslserver"];
  if (o.untrusted) args.push("-untrusted", o.untrusted);
  if (o.host) args.push("-verify_hostname", o.host);
  if (o.ip) args.push("-verify_ip", o.ip);
  return openssl(...args, o.leaf);
}
let serialN = 0;
const serial = () => Uint8Array.of(0x11, 0x22, ++serialN);
const cert = (pem: string) => new x509.X509Certificate(pem);
const hex = (b: ArrayBuffer) => Buffer.from(b).toString("hex");

// ─── openssl fixtures: a customer RSA root + intermediate, and broken variants ────────────────────────────────────────

const CNF = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[root]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[root_pathlen0]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[inter]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[notca]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[nocertsign]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
`;
const ROOT_SUBJ = "/C=US/O=Customer Inc/CN=Customer Root CA";
const INTER_SUBJ = "/C=US/O=Customer Inc/CN=Customer Issuing CA";

function makeRoot(out: string, key: string, o: { subj?: string; days?: number; ext?: string } = {}) {
  must("req", "-x509", "-config", "ca.cnf", "-extensions", o.ext ?? "root", "-key", key, "-subj", o.subj ?? ROOT_SUBJ,
    "-days", String(o.days ?? 3650), "-sha256", "-out", out);
}
function makeInter(out: string, key: string, issuer: string, issuerKey: string, o: { subj?: string; days?: number; ext?: string; md?: string } = {}) {
  must("req", "-new", "-config", "ca.cnf", "-key", key, "-subj", o.subj ?? INTER_SUBJ, "-out", `${out}.csr`);
  must("x509", "-req", "-in", `${out}.csr`, "-CA", issuer, "-CAkey", issuerKey, "-set_serial", `0x${(++serialN).toString(16)}77`,
    "-days", String(o.days ?? 1825), `-${o.md ?? "sha256"}`, "-extfile", "ca.cnf", "-extensions", o.ext ?? "inter", "-out", out);
}

/** The instant the customer fixtures are checked at: an hour after openssl made them. */
let AT: Date;
const F: Record<string, string> = {};
let DER_ROOT: Uint8Array;

beforeAll(() => {
  write("ca.cnf", CNF);
  for (const k of ["rootA", "interA", "rootB", "other"]) must("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", `${k}.key`);
  must("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.key");
  must("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "weak.key");
  makeRoot("rootA.pem", "rootA.key");
  makeRoot("rootB.pem", "rootB.key"); // same name as rootA, other key
  makeRoot("rootOther.pem", "rootB.key", { subj: "/CN=Some Other Root" });
  makeRoot("rootP0.pem", "rootA.key", { ext: "root_pathlen0" });
  makeRoot("weakRoot.pem", "weak.key", { subj: "/CN=Weak Root" });
  makeInter("interA.pem", "interA.key", "rootA.pem", "rootA.key");
  makeInter("interShort.pem", "interA.key", "rootA.pem", "rootA.key", { days: 1 });
  makeInter("interNotCa.pem", "interA.key", "rootA.pem", "rootA.key", { ext: "notca" });
  makeInter("interNoCertSign.pem", "interA.key", "rootA.pem", "rootA.key", { ext: "nocertsign" });
  makeInter("interFromB.pem", "interA.key", "rootB.pem", "rootB.key");
  makeInter("interFromOther.pem", "interA.key", "rootOther.pem", "rootB.key");
  makeInter("interUnderP0.pem", "interA.key", "rootP0.pem", "rootA.key");
  makeInter("interSha1.pem", "interA.key", "rootA.pem", "rootA.key", { md: "sha1" });
  must("pkcs8", "-topk8", "-in", "interA.key", "-passout", "pass:x", "-out", "interA.enc.key");
  must("rsa", "-in", "interA.key", "-aes128", "-traditional", "-passout", "pass:x", "-out", "interA.legacy-enc.key");
  must("pkey", "-in", "interA.key", "-traditional", "-out", "interA.pkcs1.key");
  must("x509", "-in", "rootA.pem", "-outform", "DER", "-out", "rootA.der");
  for (const f of ["rootA.pem", "rootB.pem", "rootP0.pem", "weakRoot.pem", "interA.pem", "interShort.pem", "interNotCa.pem",
    "interNoCertSign.pem", "interFromB.pem", "interFromOther.pem", "interUnderP0.pem", "interSha1.pem", "rootA.key",
    "interA.key", "other.key", "ec.key", "weak.key", "interA.enc.key", "interA.legacy-enc.key", "interA.pkcs1.key"])
    F[f] = read(f);
  DER_ROOT = new Uint8Array(readFileSync(file("rootA.der")));
  AT = new Date(cert(F["interA.pem"]).notBefore.getTime() + 3600_000);
  expect(F["interA.pkcs1.key"]).toContain("BEGIN RSA PRIVATE KEY");
  expect(F["interA.legacy-enc.key"]).toContain("Proc-Type: 4,ENCRYPTED");
});

const good = () => ({ root: F["rootA.pem"], intermediate: F["interA.pem"], key: F["interA.key"] });
async function problemsOf(files: Parameters<typeof checkChain>[0], at = AT): Promise<ChainProblem[]> {
  const r = await checkChain(files, at);
  if (r.ok) throw new Error("expected problems, the chain was accepted");
  return r.problems;
}

// ─── the appliance CA ─────────────────────────────────────────────────────────────────────────────────────────────────

describe("createCa", () => {
  test("a self-signed P-256 root: CA critical, keyCertSign|cRLSign critical, SKI, backdated, 3650 days by default", async () => {
    const { certPem, keyPem } = await createCa({ commonName: "agate CA (gw-1)", now: NOW, serial: Uint8Array.of(0x80, 1, 2) });
    expect(keyPem).toStartWith("-----BEGIN PRIVATE KEY-----\n");
    const c = cert(certPem);
    expect(c.subject).toBe("CN=agate CA (gw-1)");
    expect(c.issuer).toBe(c.subject);
    expect(await c.isSelfSigned()).toBe(true);
    expect(c.publicKey.algorithm).toMatchObject({ name: "ECDSA", namedCurve: "P-256" });
    expect(c.serialNumber).toBe("0102"); // top bit cleared, leading zero dropped: positive and minimal
    const bc = c.getExtension(x509.BasicConstraintsExtension)!;
    expect([bc.ca, bc.critical]).toEqual([true, true]);
    const ku = c.getExtension(x509.KeyUsagesExtension)!;
    expect([ku.usages, ku.critical]).toEqual([x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true]);
    expect(c.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).toMatch(/^[0-9a-f]{40}$/);
    expect(c.notBefore.getTime()).toBe(NOW.getTime() - BACKDATE_DAYS * DAY);
    expect(c.notAfter.getTime()).toBe(NOW.getTime() + 3650 * DAY);
    write("appliance.pem", certPem);
    const self = openssl("verify", "-attime", String(NOW.getTime() / 1000), "-CAfile", "appliance.pem", "appliance.pem");
    expect(self.out).toContain("appliance.pem: OK");
    const text = must("x509", "-in", "appliance.pem", "-noout", "-text");
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
  });

  test("validityDays and the common name are checked", async () => {
    const c = cert((await createCa({ commonName: "x", now: NOW, validityDays: 30, serial: serial() })).certPem);
    expect(c.notAfter.getTime()).toBe(NOW.getTime() + 30 * DAY);
    await expect(createCa({ commonName: "  ", now: NOW, serial: serial() })).rejects.toThrow(/common name/);
    await expect(createCa({ commonName: "a".repeat(65), now: NOW, serial: serial() })).rejects.toThrow(/1–64/);
    await expect(createCa({ commonName: "x", now: NOW, validityDays: 0, serial: serial() })).rejects.toThrow(/validity/);
    await expect(createCa({ commonName: "x", now: NOW, serial: new Uint8Array(0) })).rejects.toThrow(/serial/);
  });
});

// ─── leaves under the appliance CA ────────────────────────────────────────────────────────────────────────────────────

describe("mintLeaf under an EC appliance CA", () => {
  let ca: Ca, other: Ca, keys: LeafKeys;
  beforeAll(async () => {
    const made = await createCa({ commonName: "agate appliance CA", now: NOW, serial: serial() });
    write("appliance-ca.pem", made.certPem);
    ca = await loadCa("appliance", { cert: made.certPem, key: made.keyPem });
    const o = await createCa({ commonName: "agate appliance CA", now: NOW, serial: serial() });
    other = await loadCa("appliance", { cert: o.certPem, key: o.keyPem });
    keys = await makeLeafKeys();
  });

  test("loadCa: the CA signs its own leaves, chainPem is the CA, no chain", () => {
    expect(ca.kind).toBe("appliance");
    expect(ca.chain).toEqual([]);
    expect(ca.chainPem).toBe(ca.certPem);
    expect(ca.key.extractable).toBe(false);
    expect(ca.key.type).toBe("private");
  });

  test("the leaf verifies with the CA's key and not with another CA's of the same name", async () => {
    const leaf = cert((await mintLeaf(ca, keys, "updates.example.com", NOW, serial())).certPem);
    expect(await leaf.verify({ publicKey: ca.cert, signatureOnly: true })).toBe(true);
    expect(await leaf.verify({ publicKey: other.cert, signatureOnly: true })).toBe(false);
  });

  test("SAN, CN, EKU serverAuth, keyUsage, cA=false, AKI = CA SKI, issuer = CA subject byte for byte", async () => {
    const leaf = cert((await mintLeaf(ca, keys, "Updates.Example.COM.", NOW, serial())).certPem);
    expect(leaf.subject).toBe("CN=updates.example.com");
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.toJSON()).toEqual([{ type: "dns", value: "updates.example.com" }]);
    expect(san.critical).toBe(false);
    expect(leaf.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([x509.ExtendedKeyUsage.serverAuth]);
    expect(leaf.getExtension(x509.KeyUsagesExtension)?.usages).toBe(x509.KeyUsageFlags.digitalSignature);
    expect(leaf.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!;
    expect(aki.keyId).toBe(ca.cert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
    expect(hex(leaf.issuerName.toArrayBuffer())).toBe(hex(ca.cert.subjectName.toArrayBuffer()));
    expect(leaf.signatureAlgorithm).toMatchObject({ name: "ECDSA", hash: { name: "SHA-256" } });
  });

  test("valid from now − BACKDATE_DAYS for LEAF_VALIDITY_DAYS; the returned notAfter is the certificate's", async () => {
    const now = new Date(NOW.getTime() + 1234); // milliseconds are dropped: X.509 time has whole seconds
    const minted = await mintLeaf(ca, keys, "a.example", now, serial());
    const leaf = cert(minted.certPem);
    expect(BACKDATE_DAYS).toBe(2);
    expect(LEAF_VALIDITY_DAYS).toBe(199);
    expect(leaf.notBefore.getTime()).toBe(NOW.getTime() - 2 * DAY + 1000);
    expect(leaf.notAfter.getTime()).toBe(NOW.getTime() + 199 * DAY + 1000);
    expect(minted.notAfter.getTime()).toBe(leaf.notAfter.getTime());
  });

  test("never valid beyond the CA: notAfter clamps to the CA's, notBefore to the CA's notBefore", async () => {
    const short = await createCa({ commonName: "short CA", now: NOW, validityDays: 30, serial: serial() });
    const sca = await loadCa("appliance", { cert: short.certPem, key: short.keyPem });
    const minted = await mintLeaf(sca, keys, "a.example", new Date(NOW.getTime() + 10 * DAY), serial());
    const leaf = cert(minted.certPem);
    expect(leaf.notAfter.getTime()).toBe(sca.cert.notAfter.getTime());
    expect(minted.notAfter.getTime()).toBe(sca.cert.notAfter.getTime());
    const early = cert((await mintLeaf(sca, keys, "a.example", new Date(NOW.getTime() - DAY), serial())).certPem);
    expect(early.notBefore.getTime()).toBe(sca.cert.notBefore.getTime()); // now − 2 d would precede the CA
  });

  test("openssl verifies the leaf as a TLS server certificate for its host, and not for another host or CA", async () => {
    write("leaf-a.pem", (await mintLeaf(ca, keys, "updates.example.com", NOW, serial())).certPem);
    const ok = verifyLeaf({ root: "appliance-ca.pem", leaf: "leaf-a.pem", at: NOW, host: "updates.example.com" });
    expect(ok.out).toContain("leaf-a.pem: OK");
    expect(ok.ok).toBe(true);
    expect(verifyLeaf({ root: "appliance-ca.pem", leaf: "leaf-a.pem", at: NOW, host: "evil.example.com" }).ok).toBe(false);
    write("other-ca.pem", other.certPem);
    expect(verifyLeaf({ root: "other-ca.pem", leaf: "leaf-a.pem", at: NOW }).ok).toBe(false);
    // outside its validity, openssl refuses it too
    expect(verifyLeaf({ root: "appliance-ca.pem", leaf: "leaf-a.pem", at: new Date(NOW.getTime() + 200 * DAY) }).ok).toBe(false);
  });

  test("IP literals get an IP SAN (v4, v6, v4-mapped v6) that openssl accepts", async () => {
    for (const [host, ip] of [["10.1.2.3", "10.1.2.3"], ["[2001:db8::1]", "2001:db8::1"], ["::ffff:10.0.0.1", "::ffff:10.0.0.1"]]) {
      const leaf = cert((await mintLeaf(ca, keys, host, NOW, serial())).certPem);
      const names = leaf.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON();
      expect(names.map((n) => n.type)).toEqual(["ip"]);
      write("leaf-ip.pem", leaf.toString("pem"));
      expect(verifyLeaf({ root: "appliance-ca.pem", leaf: "leaf-ip.pem", at: NOW, ip }).ok).toBe(true);
      expect(verifyLeaf({ root: "appliance-ca.pem", leaf: "leaf-ip.pem", at: NOW, ip: "192.0.2.99" }).ok).toBe(false);
    }
  });

  test("a host longer than 64 characters: no CN, critical SAN, still verifies", async () => {
    const host = `${"a".repeat(60)}.example.com`;
    const minted = await mintLeaf(ca, keys, host, NOW, serial());
    const leaf = cert(minted.certPem);
    expect(leaf.subject).toBe("");
    expect(leaf.getExtension(x509.SubjectAlternativeNameExtension)?.critical).toBe(true);
    write("leaf-long.pem", minted.certPem);
    expect(verifyLeaf({ root: "appliance-ca.pem", leaf: "leaf-long.pem", at: NOW, host }).ok).toBe(true);
  });

  test("every leaf carries the one leaf key, and keyPem is its private half", async () => {
    const a = await mintLeaf(ca, keys, "a.example", NOW, serial());
    const b = await mintLeaf(ca, keys, "b.example", NOW, serial());
    expect(a.keyPem).toBe(b.keyPem);
    expect(a.keyPem).toStartWith("-----BEGIN PRIVATE KEY-----\n");
    const spki = await crypto.subtle.exportKey("spki", keys.publicKey);
    expect(hex(cert(a.certPem).publicKey.rawData)).toBe(hex(spki));
    expect(hex(cert(b.certPem).publicKey.rawData)).toBe(hex(spki));
    const priv = await crypto.subtle.importKey("pkcs8", x509.PemConverter.decodeFirst(a.keyPem), { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
    const data = new TextEncoder().encode("handshake");
    const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, priv, data);
    expect(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, keys.publicKey, sig, data)).toBe(true);
    const otherKeys = await makeLeafKeys();
    expect(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, otherKeys.publicKey, sig, data)).toBe(false);
  });

  test("serial numbers are the caller's, positive and at most 20 octets", async () => {
    expect(cert((await mintLeaf(ca, keys, "a.example", NOW, Uint8Array.of(0xff, 0xee))).certPem).serialNumber).toBe("7fee");
    const twenty = new Uint8Array(20).fill(0xab);
    expect(cert((await mintLeaf(ca, keys, "a.example", NOW, twenty)).certPem).serialNumber).toBe("2b" + "ab".repeat(19));
    // top bit set after a leading zero: a 0x00 sign octet keeps it positive (openssl would print a negative serial)
    write("leaf-serial.pem", (await mintLeaf(ca, keys, "a.example", NOW, Uint8Array.of(0x00, 0x80, 0x01))).certPem);
    expect(must("x509", "-in", "leaf-serial.pem", "-noout", "-serial").trim()).toBe("serial=8001");
    const buf = Buffer.from([0xf0, 0x01]); // node's randomBytes() gives Buffers, whose slice() is a view
    expect(cert((await mintLeaf(ca, keys, "a.example", NOW, buf)).certPem).serialNumber).toBe("7001");
    expect([...buf]).toEqual([0xf0, 0x01]);
    await expect(mintLeaf(ca, keys, "a.example", NOW, new Uint8Array(21))).rejects.toThrow(/1–20 bytes/);
    await expect(mintLeaf(ca, keys, "a.example", NOW, Uint8Array.of(0x80, 0))).rejects.toThrow(/zero/);
  });

  test("hosts that are neither DNS names nor IP literals are refused with PX_BAD_HOST", async () => {
    for (const host of ["", ".", "a b.example", "bad/host", "x..example", "-a.example", "300.1.1.1", "[::g]", `${"a".repeat(64)}.example`]) {
      const err = await mintLeaf(ca, keys, host, NOW, serial()).then(() => null, (e) => e);
      expect(err).toBeInstanceOf(ProxyError);
      expect((err as ProxyError).code).toBe("PX_BAD_HOST");
    }
  });

  test("an expired or not yet valid CA mints nothing", async () => {
    const after = new Date(ca.cert.notAfter.getTime() + 1000);
    await expect(mintLeaf(ca, keys, "a.example", after, serial())).rejects.toMatchObject({ code: "PX_CA_EXPIRED" });
    const before = new Date(ca.cert.notBefore.getTime() - 1000);
    await expect(mintLeaf(ca, keys, "a.example", before, serial())).rejects.toMatchObject({ code: "PX_CA_NOT_YET_VALID" });
  });
});

// ─── customer chains ──────────────────────────────────────────────────────────────────────────────────────────────────

describe("checkChain accepts a good customer chain", () => {
  test("RSA root + intermediate + PKCS#8 key: the intermediate signs, chainPem carries it (not the root)", async () => {
    const r = await checkChain(good(), AT);
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    expect(r.ca.kind).toBe("customer");
    expect(r.ca.cert.subject).toBe("C=US, O=Customer Inc, CN=Customer Issuing CA");
    expect(r.ca.chain.map((c) => c.subject)).toEqual([r.ca.cert.subject]);
    expect(x509.PemConverter.decode(r.ca.chainPem).length).toBe(1);
    expect(r.ca.chainPem).toBe(r.ca.certPem);
    expect(r.commonName).toBe("Customer Issuing CA");
    const interAfter = cert(F["interA.pem"]).notAfter;
    expect(r.notAfter.getTime()).toBe(interAfter.getTime()); // the intermediate expires before the root
    expect(r.expiresInDays).toBe(Math.floor((interAfter.getTime() - AT.getTime()) / DAY));
    expect(r.ca.key.extractable).toBe(false);
  });

  test("a leaf minted from it verifies with openssl -CAfile root -untrusted inter, and not without the intermediate", async () => {
    const r = await checkChain(good(), AT);
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    const keys = await makeLeafKeys();
    const minted = await mintLeaf(r.ca, keys, "agents.customer.example", AT, serial());
    const leaf = cert(minted.certPem);
    expect(leaf.signatureAlgorithm).toMatchObject({ name: "RSASSA-PKCS1-v1_5", hash: { name: "SHA-256" } });
    expect(await leaf.verify({ publicKey: r.ca.cert, signatureOnly: true })).toBe(true);
    expect(leaf.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(
      cert(F["interA.pem"]).getExtension(x509.SubjectKeyIdentifierExtension)!.keyId,
    );
    write("cust-leaf.pem", minted.certPem);
    write("cust-chain.pem", r.ca.chainPem);
    const ok = verifyLeaf({ root: "rootA.pem", untrusted: "interA.pem", leaf: "cust-leaf.pem", at: AT, host: "agents.customer.example" });
    expect(ok.out).toContain("cust-leaf.pem: OK");
    expect(verifyLeaf({ root: "rootA.pem", untrusted: "cust-chain.pem", leaf: "cust-leaf.pem", at: AT }).ok).toBe(true);
    expect(verifyLeaf({ root: "rootA.pem", leaf: "cust-leaf.pem", at: AT }).ok).toBe(false);
    expect(verifyLeaf({ root: "rootB.pem", untrusted: "interA.pem", leaf: "cust-leaf.pem", at: AT }).ok).toBe(false);
  });

  test("the root alone can be the issuer; the root repeated at the end of the intermediate file is ignored", async () => {
    const alone = await checkChain({ root: F["rootA.pem"], key: F["rootA.key"] }, AT);
    if (!alone.ok) throw new Error(JSON.stringify(alone.problems));
    expect(alone.ca.cert.subject).toBe("C=US, O=Customer Inc, CN=Customer Root CA");
    expect(alone.ca.chain).toEqual([]);
    const full = await checkChain({ ...good(), intermediate: F["interA.pem"] + F["rootA.pem"] }, AT);
    if (!full.ok) throw new Error(JSON.stringify(full.problems));
    expect(full.ca.chain.length).toBe(1);
    // an empty intermediate upload means "no intermediate"
    expect((await checkChain({ root: F["rootA.pem"], intermediate: " \n", key: F["rootA.key"] }, AT)).ok).toBe(true);
  });

  test("CRLF line endings and bytes (not strings) are fine", async () => {
    const crlf = (s: string) => s.replace(/\n/g, "\r\n");
    const enc = (s: string) => new TextEncoder().encode(s);
    const r = await checkChain({ root: enc(crlf(F["rootA.pem"])), intermediate: enc(F["interA.pem"]), key: crlf(F["interA.key"]) }, AT);
    expect(r.ok).toBe(true);
  });
});

describe("checkChain reports what is wrong, naming the file", () => {
  test("the key of another certificate", async () => {
    const p = await problemsOf({ ...good(), key: F["other.key"] });
    expect(p).toEqual([{ file: "key", problem: expect.stringMatching(/does not belong to the issuing certificate "Customer Issuing CA"/) }]);
  });

  test("an EC key for an RSA certificate", async () => {
    const p = await problemsOf({ ...good(), key: F["ec.key"] });
    expect(p).toEqual([{ file: "key", problem: expect.stringMatching(/EC P-256 key, but .* holds an RSA 2048-bit key/) }]);
  });

  test("the root's key uploaded for a chain with an intermediate", async () => {
    const p = await problemsOf({ ...good(), key: F["rootA.key"] });
    expect(p.map((o) => o.file)).toEqual(["key"]);
  });

  test("an expired intermediate, with its notAfter", async () => {
    const at = new Date(AT.getTime() + 2 * DAY);
    const inter = cert(F["interShort.pem"]);
    const p = await problemsOf({ ...good(), intermediate: F["interShort.pem"] }, at);
    expect(p).toEqual([
      { file: "intermediate", problem: `intermediate certificate "Customer Issuing CA" expired: notAfter ${inter.notAfter.toISOString()}` },
    ]);
    // the same chain was fine a day earlier
    expect((await checkChain({ ...good(), intermediate: F["interShort.pem"] }, AT)).ok).toBe(true);
  });

  test("a chain not valid yet, with the notBefore", async () => {
    const before = new Date(cert(F["rootA.pem"]).notBefore.getTime() - DAY);
    const p = await problemsOf(good(), before);
    expect(p.map((o) => o.file).sort()).toEqual(["intermediate", "root"]);
    expect(p.every((o) => /not valid yet: notBefore \d{4}-/.test(o.problem))).toBe(true);
  });

  test("an intermediate that is not a CA (basicConstraints cA false)", async () => {
    const p = await problemsOf({ ...good(), intermediate: F["interNotCa.pem"] });
    expect(p).toContainEqual({ file: "intermediate", problem: expect.stringMatching(/is not a CA: basicConstraints cA is false/) });
    expect(p.every((o) => o.file === "intermediate")).toBe(true);
  });

  test("an intermediate whose keyUsage lacks keyCertSign", async () => {
    const p = await problemsOf({ ...good(), intermediate: F["interNoCertSign.pem"] });
    expect(p).toEqual([{ file: "intermediate", problem: expect.stringMatching(/keyUsage lacks keyCertSign/) }]);
  });

  test("a root whose pathLen 0 forbids the intermediate", async () => {
    const p = await problemsOf({ root: read("rootP0.pem"), intermediate: read("interUnderP0.pem"), key: F["interA.key"] });
    expect(p).toEqual([{ file: "root", problem: expect.stringMatching(/allows 0 intermediate\(s\) below it \(pathLen\), but the chain has 1/) }]);
  });

  test("an intermediate signed with SHA-1", async () => {
    const p = await problemsOf({ ...good(), intermediate: F["interSha1.pem"] });
    expect(p).toEqual([{ file: "intermediate", problem: expect.stringMatching(/signed with SHA-1/) }]);
  });

  test("a passphrase-protected key, PKCS#8 or legacy PEM", async () => {
    expect(await problemsOf({ ...good(), key: F["interA.enc.key"] })).toEqual([{ file: "key", problem: PASSPHRASE }]);
    expect(await problemsOf({ ...good(), key: F["interA.legacy-enc.key"] })).toEqual([{ file: "key", problem: PASSPHRASE }]);
  });

  test("DER instead of PEM, as bytes or as text", async () => {
    const want = /^not PEM: .*upload PEM \(-----BEGIN CERTIFICATE-----\)$/;
    expect(await problemsOf({ ...good(), root: DER_ROOT })).toEqual([{ file: "root", problem: expect.stringMatching(want) }]);
    const asText = new TextDecoder().decode(DER_ROOT);
    expect(await problemsOf({ ...good(), root: asText })).toEqual([{ file: "root", problem: expect.stringMatching(want) }]);
    const p = await problemsOf({ ...good(), intermediate: "just some text\n" });
    expect(p).toEqual([{ file: "intermediate", problem: expect.stringMatching(/^not PEM: the intermediate file has no "-----BEGIN" line/) }]);
    expect(await problemsOf({ ...good(), key: DER_ROOT })).toEqual([
      { file: "key", problem: expect.stringMatching(/^not PEM: .*upload PEM \(-----BEGIN PRIVATE KEY-----\)$/) },
    ]);
  });

  test("a 4 MB file, named with its size", async () => {
    const big = F["rootA.pem"] + "#".repeat(4 * 1024 * 1024 - F["rootA.pem"].length);
    expect(await problemsOf({ ...good(), root: big })).toEqual([
      { file: "root", problem: "the root file is 4.0 MB (4194304 bytes); the limit is 3.0 MB" },
    ]);
    const p = await problemsOf({ ...good(), key: F["interA.key"] + " ".repeat(4 * 1024 * 1024) });
    expect(p).toEqual([{ file: "key", problem: expect.stringMatching(/^the key file is 4\.0 MB/) }]);
    // 3 MB exactly is allowed
    const atLimit = F["interA.pem"] + "\n".repeat(3 * 1024 * 1024 - F["interA.pem"].length);
    expect((await checkChain({ ...good(), intermediate: atLimit }, AT)).ok).toBe(true);
  });

  test("an intermediate signed by another root of the same name", async () => {
    const p = await problemsOf({ ...good(), intermediate: F["interFromB.pem"] });
    expect(p).toEqual([{ file: "intermediate", problem: expect.stringMatching(/signature does not verify with the root certificate "Customer Root CA"'s key/) }]);
  });

  test("an intermediate issued by a differently named root", async () => {
    const p = await problemsOf({ ...good(), intermediate: F["interFromOther.pem"] });
    expect(p).toEqual([{ file: "intermediate", problem: expect.stringMatching(/was issued by "CN=Some Other Root", not by the root certificate/) }]);
  });

  test("an intermediate uploaded as the root: not self-signed", async () => {
    const p = await problemsOf({ root: F["interA.pem"], key: F["interA.key"] });
    expect(p).toEqual([{ file: "root", problem: expect.stringMatching(/is not self-signed: it was issued by "C=US, O=Customer Inc, CN=Customer Root CA"/) }]);
  });

  test("the whole chain pasted into the root file", async () => {
    const p = await problemsOf({ root: F["interA.pem"] + F["rootA.pem"], key: F["interA.key"] });
    expect(p).toEqual([{ file: "root", problem: expect.stringMatching(/holds 2 certificates; it must hold only the root/) }]);
  });

  test("an RSA key under 2048 bits", async () => {
    const p = await problemsOf({ root: F["weakRoot.pem"], key: F["weak.key"] });
    expect(p).toEqual([{ file: "key", problem: expect.stringMatching(/RSA 1024-bit key; clients refuse RSA keys under 2048 bits/) }]);
  });

  test("a key file without a private key, and a certificate file with one", async () => {
    expect(await problemsOf({ ...good(), key: F["interA.pem"] })).toEqual([
      { file: "key", problem: expect.stringMatching(/holds "CERTIFICATE" but no private key/) },
    ]);
    const p = await problemsOf({ ...good(), intermediate: F["interA.pem"] + F["interA.key"] });
    expect(p).toEqual([{ file: "intermediate", problem: expect.stringMatching(/holds a private key \("PRIVATE KEY"\); upload it as the key file/) }]);
  });

  test("a broken PEM block is reported, not skipped", async () => {
    const broken = F["interA.pem"].replace(/\n-----END CERTIFICATE-----\n?$/, "\n");
    const p = await problemsOf({ ...good(), intermediate: broken });
    expect(p).toEqual([{ file: "intermediate", problem: expect.stringMatching(/1 of 1 PEM blocks could not be decoded/) }]);
  });

  test("every problem at once, each with its file", async () => {
    const at = new Date(AT.getTime() + 2 * DAY);
    const p = await problemsOf({ root: DER_ROOT, intermediate: F["interShort.pem"], key: F["interA.enc.key"] }, at);
    expect(p).toEqual([
      { file: "root", problem: expect.stringMatching(/^not PEM/) },
      { file: "key", problem: PASSPHRASE },
      { file: "intermediate", problem: expect.stringMatching(/expired: notAfter/) },
    ]);
    const q = await problemsOf({ root: F["rootA.pem"], intermediate: F["interNotCa.pem"], key: F["other.key"] });
    expect(new Set(q.map((o) => o.file))).toEqual(new Set(["key", "intermediate"]));
  });
});

// ─── loading stored CAs in other key formats ──────────────────────────────────────────────────────────────────────────

describe("loadCa", () => {
  test("a customer CA from root + chain + key equals what checkChain built", async () => {
    const ca = await loadCa("customer", { cert: F["rootA.pem"], chain: F["interA.pem"], key: F["interA.key"] });
    expect(ca.cert.subject).toBe("C=US, O=Customer Inc, CN=Customer Issuing CA");
    expect(ca.chain.length).toBe(1);
    expect(ca.chainPem).toBe(ca.certPem);
  });

  test("PKCS#1 'BEGIN RSA PRIVATE KEY' is converted and signs leaves openssl accepts", async () => {
    const ca = await loadCa("customer", { cert: F["rootA.pem"], chain: F["interA.pem"], key: F["interA.pkcs1.key"] });
    write("pkcs1-leaf.pem", (await mintLeaf(ca, await makeLeafKeys(), "h.example", AT, serial())).certPem);
    expect(verifyLeaf({ root: "rootA.pem", untrusted: "interA.pem", leaf: "pkcs1-leaf.pem", at: AT, host: "h.example" }).ok).toBe(true);
  });

  test("SEC1 'BEGIN EC PRIVATE KEY' (P-384) is converted and signs leaves openssl accepts", async () => {
    must("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "ec384.key");
    must("req", "-x509", "-config", "ca.cnf", "-extensions", "root", "-key", "ec384.key", "-subj", "/CN=EC Root", "-days", "30", "-out", "ec384.pem");
    expect(read("ec384.key")).toContain("BEGIN EC PRIVATE KEY");
    const ca = await loadCa("common", { cert: read("ec384.pem"), key: read("ec384.key") });
    expect(ca.key.algorithm).toMatchObject({ name: "ECDSA", namedCurve: "P-384" });
    const at = new Date(ca.cert.notBefore.getTime() + 3600_000);
    write("ec384-leaf.pem", (await mintLeaf(ca, await makeLeafKeys(), "h.example", at, serial())).certPem);
    expect(verifyLeaf({ root: "ec384.pem", leaf: "ec384-leaf.pem", at, host: "h.example" }).ok).toBe(true);
  });

  test("a key that does not match, a passphrase, or an unusable key type: PX_CA_INVALID with the reason", async () => {
    const err = (p: Promise<unknown>) => p.then(() => null, (e) => e as ProxyError);
    const wrong = await err(loadCa("customer", { cert: F["rootA.pem"], chain: F["interA.pem"], key: F["other.key"] }));
    expect(wrong?.code).toBe("PX_CA_INVALID");
    expect(wrong?.message).toMatch(/does not belong to the issuing certificate/);
    const enc = await err(loadCa("customer", { cert: F["rootA.pem"], chain: F["interA.pem"], key: F["interA.enc.key"] }));
    expect(enc?.message).toContain(PASSPHRASE);
    must("genpkey", "-algorithm", "ED25519", "-out", "ed.key");
    const ed = await err(loadCa("appliance", { cert: F["rootA.pem"], key: read("ed.key") }));
    expect(ed?.message).toMatch(/Ed25519; only RSA and EC/);
    must("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-param_enc", "explicit", "-out", "explicit.key");
    const explicit = await err(loadCa("appliance", { cert: F["rootA.pem"], key: read("explicit.key") }));
    expect(explicit?.message).toMatch(/curve parameters .* openssl /);
    const der = await err(loadCa("appliance", { cert: new TextDecoder().decode(DER_ROOT), key: F["rootA.key"] }));
    expect(der?.message).toMatch(/not PEM/);
  });
});
