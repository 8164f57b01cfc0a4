/**
 * Issue 11, "Certificates": a second certificate with the same common name is refused (the seed: "a unique name"),
 * at upload and at edit, without case or surrounding spaces mattering; and `cache.allowed_domains` entries that
 * start with `www.` or are (inside) a platform domain are warned about (core/domain-warnings.ts), as the admin API
 * returns them beside a saved config.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig, PLATFORM_DOMAINS } from "../../src/core/config";
import { allowedDomainWarnings } from "../../src/core/domain-warnings";
import { editCertificate, isRefusal, uploadCertificate } from "../../src/admin/certificates";
import { makeAdminContext } from "../../src/admin/context";
import { handleApi } from "../../src/admin/api";
import type { AdminDeps } from "../../src/admin/deps";
import { makeCustomerChain } from "../peers/customer-chain";

describe("certificate names are unique", () => {
  const dir = mkdtempSync(join(tmpdir(), "agate-certnames-"));
  const deps = {
    config: parseConfig({ gateway: { data_dir: dir }, admin: { port: 0, token: "test-token-0123456789abcdef" } }),
    ports: { proxy: 1, cache: 2 }, startedAt: 0, draining: false, token: "test-token-0123456789abcdef", ca: null, configPath: null, dataDir: dir,
    health: () => { throw new Error("unused"); }, stats: () => { throw new Error("unused"); }, recentLogs: () => [], reloadFromFile: async () => ({ ok: true }), apply: async () => {},
    setConfigPath: () => {}, crashWorker: () => false, onClientIps: () => {},
  } satisfies AdminDeps;
  const ctx = makeAdminContext(deps);
  afterAll(() => {
    ctx.sampleNow = () => {}; // the fake deps have no stats to sample; close() still stops the sampler and cleaner timers
    ctx.close();
  });
  const chain = makeCustomerChain();
  const form = (cn?: string) => {
    const f = new FormData();
    f.set("root", readFileSync(chain.root, "utf8"));
    f.set("intermediate", readFileSync(chain.intermediate, "utf8"));
    f.set("key", readFileSync(chain.key, "utf8"));
    if (cn !== undefined) f.set("common_name", cn);
    return f;
  };

  test("a second upload under a name already taken is refused 409 naming common_name and the other certificate", async () => {
    const first = await uploadCertificate(deps, ctx, form("Corp issuing CA"));
    if (isRefusal(first)) throw new Error(first.error);
    const again = await uploadCertificate(deps, ctx, form("  corp ISSUING ca "));
    expect(isRefusal(again)).toBe(true);
    expect(again).toMatchObject({ status: 409, field: "common_name", extra: { conflict: first.id } });
    expect((again as { error: string }).error).toContain(`is already the name of certificate ${first.id}`);
    // the default name (the certificate's own CN) is checked too: the first of those is kept, the second refused
    const byCn = await uploadCertificate(deps, ctx, form());
    expect(isRefusal(byCn)).toBe(false);
    expect(await uploadCertificate(deps, ctx, form())).toMatchObject({ status: 409, field: "common_name" });
    expect(ctx.certs.list().length).toBe(2);
  });

  test("an edit to another certificate's name is refused; keeping its own name is fine", async () => {
    const [a, b] = ctx.certs.list();
    expect(editCertificate(deps, ctx, b!.id, { common_name: a!.common_name })).toMatchObject({ status: 409, field: "common_name" });
    expect(isRefusal(editCertificate(deps, ctx, b!.id, { common_name: b!.common_name, description: "same name" }))).toBe(false);
    expect(isRefusal(editCertificate(deps, ctx, b!.id, { common_name: "Lab CA" }))).toBe(false);
  });

  test("PUT /api/config?dry_run answers the allowed-domain warnings beside ok", async () => {
    const req = new Request("http://127.0.0.1/api/config?dry_run=1", {
      method: "PUT",
      headers: { authorization: "Bearer test-token-0123456789abcdef", "content-type": "application/json" },
      body: JSON.stringify({ cache: { allowed_domains: ["www.adobe.com", "microsoft.com"] } }),
    });
    const j = await (await handleApi(req, deps, ctx, "127.0.0.1")).json();
    expect(j).toMatchObject({ ok: true, dry_run: true });
    expect(j.warnings).toEqual([expect.stringContaining('cache.allowed_domains[0]: "www.adobe.com" starts with www.')]);
  });
});

describe("allowed domain warnings", () => {
  const P = [...PLATFORM_DOMAINS];
  test("www. prefix: it allows that host only, with the bare domain to write instead", () => {
    expect(allowedDomainWarnings(["www.microsoft.com"], P)).toEqual([
      'cache.allowed_domains[0]: "www.microsoft.com" starts with www.: it allows www.microsoft.com and its subdomains only, not microsoft.com; write microsoft.com to allow the whole domain',
    ]);
  });
  test("the very same domain as a platform domain changes nothing", () => {
    expect(allowedDomainWarnings(["microsoft.com", "qualys.com"], P)).toEqual([
      'cache.allowed_domains[1]: "qualys.com" is already a platform domain: this entry changes nothing (platform domains are allowed, and cached on the cache port)',
    ]);
  });
  test("a domain inside a platform domain: the cache port would tunnel it instead of caching it", () => {
    const w = allowedDomainWarnings(["cask.qg1.apps.qualys.com"], P);
    expect(w).toHaveLength(1);
    expect(w[0]).toContain("lies inside the platform domain qualys.com");
    expect(w[0]).toContain("tunnel cask.qg1.apps.qualys.com untouched instead of caching it");
  });
  test("on a label boundary only, and none for ordinary entries", () => {
    expect(allowedDomainWarnings(["evilqualys.com", "adobe.com", "wwwexample.com"], P)).toEqual([]);
  });
});
