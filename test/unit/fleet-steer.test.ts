/**
 * Steering the fleet and the export archive (issue 14), the pure parts: which gateways and which config keys a push
 * may name, what a receiver's answer means per gateway, the CLI's KEY=VALUE parsing, the config an import applies
 * (never [admin] nor data_dir), and the archive's open failures told apart (wrong passphrase / damaged / not age).
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkConfigPart, decidePeerAnswer, parseTargets, summarize, unreachable } from "../../src/core/fleet-steer";
import { parseAssignments } from "../../src/cli/fleet-steer";
import { importedPart } from "../../src/admin/export";
import { DEFAULTS, mergeConfig } from "../../src/core/config";
import { ARCHIVE_FORMAT, checkPassphrase, collectArchive, openGatewayArchive, sealGatewayArchive } from "../../src/store/gateway-archive";
import { CertDb } from "../../src/store/cert-db";

const PEERS = ["10.0.0.2:8443", "10.0.0.3:8443"];

describe("parseTargets", () => {
  test("self and [fleet] peers, each once, from a list or a comma text", () => {
    expect(parseTargets(["self", "10.0.0.2:8443", "SELF", " 10.0.0.2:8443 "], PEERS)).toEqual({ ok: true, targets: ["self", "10.0.0.2:8443"] });
    expect(parseTargets("10.0.0.3:8443,self", PEERS)).toEqual({ ok: true, targets: ["10.0.0.3:8443", "self"] });
  });
  test("a gateway not in peers, nothing, or a wrong type is refused with what may be chosen", () => {
    const r = parseTargets(["10.9.9.9:8443"], PEERS);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error).toContain('"10.9.9.9:8443" is not "self" nor one of [fleet] peers (10.0.0.2:8443, 10.0.0.3:8443)');
    expect(parseTargets([], PEERS)).toMatchObject({ ok: false });
    expect(parseTargets("", PEERS)).toMatchObject({ ok: false });
    expect(parseTargets(undefined, PEERS)).toMatchObject({ ok: false });
    expect(parseTargets([42], PEERS)).toMatchObject({ ok: false });
  });
});

describe("checkConfigPart", () => {
  test("allowed domains, min TLS, cache rules are pushable", () => {
    const part = { cache: { allowed_domains: ["example.com"], min_tls: "1.3", rules: [] } };
    expect(checkConfigPart(part)).toEqual({ ok: true, part });
  });
  test("per-gateway keys are refused naming the key; an empty change too", () => {
    expect(checkConfigPart({ cache: { port: 8080 } })).toMatchObject({ ok: false, field: "cache.port" });
    expect(checkConfigPart({ fleet: { token: "x".repeat(40) } })).toMatchObject({ ok: false, field: "fleet" });
    expect(checkConfigPart({ admin: { token: "x" } })).toMatchObject({ ok: false, field: "admin" });
    expect(checkConfigPart({ tls: { ca: "appliance" } })).toMatchObject({ ok: false, field: "tls" });
    expect(checkConfigPart({})).toMatchObject({ ok: false, field: "change" });
    expect(checkConfigPart({ cache: {} })).toMatchObject({ ok: false, field: "cache" });
    expect(checkConfigPart([1])).toMatchObject({ ok: false, field: "change" });
    const r = checkConfigPart({ proxy: { port: 1 } });
    expect(!r.ok && r.error).toContain("pushable keys: cache.allowed_domains, cache.min_tls, cache.rules");
  });
});

describe("decidePeerAnswer", () => {
  test("2xx applied; any other answer is the receiver refusing, with its reason and field; no answer is unreachable", () => {
    expect(decidePeerAnswer("p", 200, { ok: true, id: "x" })).toEqual({ gateway: "p", result: "applied", reason: null, http_status: 200, detail: { ok: true, id: "x" } });
    expect(decidePeerAnswer("p", 409, { error: "common_name: taken", field: "common_name" })).toEqual({ gateway: "p", result: "refused", reason: "common_name: taken", http_status: 409, field: "common_name" });
    expect(decidePeerAnswer("p", 403, { error: "127.0.0.1 is not one of this gateway's [fleet] peers", field: "fleet.peers" })).toMatchObject({ result: "refused", field: "fleet.peers" });
    expect(decidePeerAnswer("p", 502, null)).toEqual({ gateway: "p", result: "refused", reason: "HTTP 502 without a reason", http_status: 502 });
    expect(unreachable("p", "ECONNREFUSED")).toEqual({ gateway: "p", result: "unreachable", reason: "ECONNREFUSED" });
  });
  test("summarize", () => {
    expect(summarize([decidePeerAnswer("a", 200, {}), decidePeerAnswer("b", 200, {}), unreachable("c", "x")])).toBe("2 applied, 1 unreachable");
    expect(summarize([])).toBe("nothing");
  });
});

describe("the CLI's SECTION.KEY=VALUE", () => {
  test("JSON values as JSON, allowed domains as a comma list, min_tls as text", () => {
    expect(parseAssignments(["cache.min_tls=1.3", "cache.allowed_domains=a.com, b.com", 'cache.rules=[{"host":"h","path":"/p","max_age_s":60}]'])).toEqual({
      cache: { min_tls: "1.3", allowed_domains: ["a.com", "b.com"], rules: [{ host: "h", path: "/p", max_age_s: 60 }] },
    });
    expect(parseAssignments(["min_tls"])).toContain("expected SECTION.KEY=VALUE");
    expect(parseAssignments([])).toContain("at least one");
  });
});

describe("the config an import applies", () => {
  test("every section of the export but [admin] and gateway.data_dir; [tls] names this gateway's files", () => {
    const exported = mergeConfig(DEFAULTS, { gateway: { name: "old", data_dir: "/old/data" }, admin: { port: 9443, token: "old-admin-token-0123456789" }, cache: { allowed_domains: ["example.com"] } });
    const part = importedPart(exported, { ca: "customer", ca_cert: "/new/data/ca/uploaded/x/root.pem", ca_chain: null, ca_key: "/new/data/ca/uploaded/x/key.pem" });
    expect(part.admin).toBeUndefined();
    expect((part.gateway as any).data_dir).toBeUndefined();
    expect((part.gateway as any).name).toBe("old");
    expect((part.cache as any).allowed_domains).toEqual(["example.com"]);
    expect(part.tls).toMatchObject({ ca: "customer", ca_cert: "/new/data/ca/uploaded/x/root.pem" });
    const here = mergeConfig(DEFAULTS, { gateway: { data_dir: "/new/data" }, admin: { port: 8443 } });
    const next = mergeConfig(here, importedPart(exported, { ca: "appliance", ca_cert: null, ca_chain: null, ca_key: null }));
    expect(next.admin.port).toBe(8443);
    expect(next.gateway.data_dir).toBe("/new/data");
    expect(next.gateway.name).toBe("old");
  });
});

describe("the export archive", () => {
  test("passphrase rules", () => {
    expect(checkPassphrase("x".repeat(12))).toBeNull();
    expect(checkPassphrase("short")).toContain("at least 12 characters");
    expect(checkPassphrase(undefined)).toContain("required");
    expect(checkPassphrase("x".repeat(1025))).toContain("at most 1024");
  });
  test("sealed and opened; a wrong passphrase, a damaged file and a file that is not age are told apart", async () => {
    const dir = mkdtempSync(join(tmpdir(), "agate-archive-"));
    const certs = new CertDb(dir);
    const c = mergeConfig(DEFAULTS, { gateway: { data_dir: dir, name: "unit" } });
    const a = collectArchive(c, dir, null, join(dir, "agate.auto.toml"), certs, "0.0.0", new Date(0));
    certs.close();
    expect(a).toMatchObject({ format: ARCHIVE_FORMAT, gateway: "unit", assigned: "appliance", uploaded: [], config: { file: null, overlay: null } });
    const sealed = await sealGatewayArchive(a, "unit passphrase 1", 10); // a low work factor: this test is about the format
    expect(await openGatewayArchive(sealed, "unit passphrase 1")).toMatchObject({ format: ARCHIVE_FORMAT, gateway: "unit" });
    expect(await openGatewayArchive(sealed, "other passphrase 1")).toMatchObject({ reason: "wrong-passphrase" });
    const bad = sealed.slice();
    bad[bad.length - 5] = bad[bad.length - 5]! ^ 1;
    expect(await openGatewayArchive(bad, "unit passphrase 1")).toMatchObject({ reason: "damaged" });
    expect(await openGatewayArchive(sealed.subarray(0, sealed.length - 40), "unit passphrase 1")).toMatchObject({ reason: "damaged" });
    expect(await openGatewayArchive(new TextEncoder().encode("PK\x03\x04 a zip"), "unit passphrase 1")).toMatchObject({ reason: "not-age" });
  });
});
