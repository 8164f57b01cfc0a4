/**
 * `[fleet] peer_ca` at the door (its type in core/fleet-config.ts, its file in supervisor/preflight.ts): the file must exist and hold PEM CA
 * certificates, every error naming the key; and how peer TLS is described (src/fleet/heartbeat.ts `peerTls`,
 * `describePeerError`): verified only with `[admin] tls` and peer_ca, otherwise the note says why not.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCa, loadCa, makeLeafKeys, mintLeaf } from "../../src/core/certs";
import { mergeConfig, parseConfig } from "../../src/core/config";
import { ConfigError } from "../../src/core/errors";
import { checkConfigFiles } from "../../src/supervisor/preflight";
import { TLS_NOTE_PLAIN, TLS_NOTE_UNVERIFIED, describePeerError, peerTls } from "../../src/fleet/heartbeat";

const dir = mkdtempSync(join(tmpdir(), "agate-peer-ca-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const TOKEN = "fleet-token-0123456789abcdef-0123456789";
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const ca1 = await createCa({ commonName: "agate appliance CA (gw-a)", now: new Date(), serial: randomBytes(16) });
const ca2 = await createCa({ commonName: "agate appliance CA (gw-b)", now: new Date(), serial: randomBytes(16) });
const leaf = await mintLeaf(await loadCa("appliance", { cert: ca1.certPem, key: ca1.keyPem }), await makeLeafKeys(), "127.0.0.1", new Date(), randomBytes(16));

function errorOf(fn: () => unknown): { key: string; message: string } | null {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return { key: e.key, message: e.message };
    throw e;
  }
  return null;
}
const withCa = (peer_ca: unknown, admin: Record<string, unknown> = {}) =>
  parseConfig({ fleet: { peers: ["127.0.0.1:9443"], token: TOKEN, peer_ca }, admin });
/** parsed, then its files checked, as every path that applies a config does (supervisor/preflight.ts) */
const applicable = (peer_ca: unknown, admin: Record<string, unknown> = {}) => {
  const c = withCa(peer_ca, admin);
  checkConfigFiles(c);
  return c;
};

describe("[fleet] peer_ca at the door", () => {
  test("unset is null (the default); empty is unset", () => {
    expect(parseConfig({}).fleet.peer_ca).toBeNull();
    expect(withCa("").fleet.peer_ca).toBeNull();
  });

  test("a file of one or several PEM CA certificates is taken", () => {
    const one = file("one.pem", ca1.certPem);
    expect(applicable(one).fleet.peer_ca).toBe(one);
    const both = file("both.pem", `# gw-a\n${ca1.certPem}\n# gw-b\n${ca2.certPem}`);
    expect(applicable(both).fleet.peer_ca).toBe(both);
  });

  test("a missing file, a directory, no certificate, a damaged one, a leaf, not a string: refused naming fleet.peer_ca", () => {
    const cases: [unknown, RegExp][] = [
      [join(dir, "nope.pem"), /nope\.pem does not exist/],
      [dir, /is not a file/],
      [file("empty.pem", "nothing here\n"), /holds no PEM certificate/],
      [file("key.pem", ca1.keyPem), /holds no PEM certificate/],
      [file("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), /certificate 1 does not parse/],
      [file("leaf.pem", ca1.certPem + leaf.certPem), /certificate 2 .*is not a CA certificate/],
      [42, /expected the path of a PEM file/],
    ];
    for (const [v, msg] of cases) {
      const e = errorOf(() => applicable(v));
      expect(e?.key).toBe("fleet.peer_ca");
      expect(e?.message).toMatch(msg);
    }
  });

  test("checked again on a change (API, reload): a file removed since is refused by the next preflight", () => {
    const p = file("gone.pem", ca1.certPem);
    const c = withCa(p);
    rmSync(p);
    expect(errorOf(() => checkConfigFiles(mergeConfig(c, { fleet: { location: "rack 2" } })))?.key).toBe("fleet.peer_ca");
  });
});

describe("peer TLS as the fleet view describes it", () => {
  test("[admin] tls off: plain HTTP, not verified", () => {
    const t = peerTls(withCa(""));
    expect(t).toMatchObject({ scheme: "http", verified: false, note: TLS_NOTE_PLAIN });
    expect(t.tls).toBeUndefined();
  });

  test("[admin] tls on without peer_ca: encrypted, not verified, and the note says how to fix it", () => {
    const t = peerTls(withCa("", { tls: true }));
    expect(t).toMatchObject({ scheme: "https", verified: false, note: TLS_NOTE_UNVERIFIED, tls: { rejectUnauthorized: false } });
    expect(t.note).toContain("[fleet] peer_ca");
  });

  test("[admin] tls on with peer_ca: verified against its certificates", () => {
    const p = file("verify.pem", ca1.certPem + ca2.certPem);
    const t = peerTls(withCa(p, { tls: true }));
    expect(t).toMatchObject({ scheme: "https", verified: true, note: null, tls: { rejectUnauthorized: true } });
    expect(t.tls?.ca).toContain(ca1.certPem.trim());
    expect(t.tls?.ca).toContain(ca2.certPem.trim());
    expect(t.error).toBeUndefined();
  });

  test("a peer_ca file broken after validation fails every peer call with the key, never falls back to unverified", () => {
    const p = file("later.pem", ca1.certPem);
    const c = withCa(p, { tls: true });
    writeFileSync(p, "replaced by something else, and longer than before\n");
    const t = peerTls(c);
    expect(t.verified).toBe(true);
    expect(t.tls?.rejectUnauthorized).toBe(true);
    expect(t.error).toMatch(/^fleet\.peer_ca cannot be used now: .*holds no PEM certificate/);
  });

  test("certificate failures are named as such; other failures stay their code", () => {
    const t = peerTls(withCa(file("d.pem", ca1.certPem), { tls: true }));
    const err = (code: string, message = "") => Object.assign(new TypeError(message), { code });
    expect(describePeerError(err("SELF_SIGNED_CERT_IN_CHAIN", "self signed certificate in certificate chain"), "10.0.0.5:8443", t)).toBe(
      "certificate not trusted: 10.0.0.5:8443's management certificate is not issued by a CA in [fleet] peer_ca (SELF_SIGNED_CERT_IN_CHAIN: self signed certificate in certificate chain)",
    );
    expect(describePeerError(err("UNABLE_TO_GET_ISSUER_CERT"), "10.0.0.5:8443", t)).toStartWith("certificate not trusted: ");
    expect(describePeerError(err("ERR_TLS_CERT_ALTNAME_INVALID", 'ERR_TLS_CERT_ALTNAME_INVALID fetching "https://10.0.0.5:8443/"'), "10.0.0.5:8443", t)).toStartWith(
      "certificate name mismatch: 10.0.0.5:8443's management certificate is not for 10.0.0.5",
    );
    expect(describePeerError(err("CERT_HAS_EXPIRED"), "10.0.0.5:8443", t)).toStartWith("certificate not valid now: ");
    expect(describePeerError(err("ConnectionRefused", "Unable to connect"), "10.0.0.5:8443", t)).toBe("ConnectionRefused");
  });
});
