/**
 * `bin/agate` against a running gateway: it finds the management port and the token from the config file or the
 * data directory, prints readable tables (or --json), and exits 1 with the gateway's reason when refused,
 * 2 on a usage error, 3 when the gateway cannot be reached.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { ROOT, curl, startGateway, type Gateway } from "../peers/gateway";
import { makeCustomerChain } from "../peers/customer-chain";
import { freePort, waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
let origin: Origin;
let gw: Gateway;

beforeAll(async () => {
  origin = startTlsOrigin(pki);
  // No [admin] token: the gateway generates data_dir/admin.token, which the CLI reads.
  gw = await startGateway({ destinations: { ports: [origin.port] }, hosts: { [HOST]: "127.0.0.1" }, admin: { token: "" } });
});
afterAll(async () => {
  await gw?.stop();
  origin?.stop();
});

async function agate(args: string[], opts: { dataDir?: boolean } = { dataDir: true }) {
  const p = Bun.spawn([join(ROOT, "bin/agate"), ...(opts.dataDir ? ["--data-dir", join(gw.dir, "data")] : []), ...args], {
    cwd: gw.dir,
    stdout: "pipe",
    stderr: "pipe",
  });
  const t = setTimeout(() => p.kill(), 30_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(t);
  return { out, err, code };
}

describe("agate CLI", () => {
  test("token: printed from data_dir/admin.token (mode 0600), and from a config file's [admin] token", async () => {
    const file = join(gw.dir, "data", "admin.token");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const r = await agate(["token"]);
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe((await Bun.file(file).text()).trim());
    expect(r.out.trim().length).toBeGreaterThanOrEqual(32);
    const cfg = join(gw.dir, "other.toml");
    await Bun.write(cfg, `[admin]\ntoken = "configured-token-0123456789"\n`);
    const c = await agate(["--config", cfg, "token"], { dataDir: false });
    expect(c.out.trim()).toBe("configured-token-0123456789");
  });

  test("status and stats as tables and as JSON; counters move after traffic", async () => {
    const s = await agate(["status"]);
    expect(s.code).toBe(0);
    expect(s.out).toMatch(/^health\s+Normal$/m);
    expect(s.out).toMatch(new RegExp(`^proxy port\\s+${gw.ports.proxy} on 127.0.0.1$`, "m"));
    expect(s.out).toMatch(/^CA\s+appliance: agate appliance CA/m);
    const j = JSON.parse((await agate(["status", "--json"])).out);
    expect(j.ports.proxy).toBe(gw.ports.proxy);

    await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/cli")]);
    // workers report their counters about once a second
    const st: any = await waitFor(
      async () => {
        const now = JSON.parse((await agate(["stats", "--json"])).out);
        return now.totals.totalTunnels >= 1 && now;
      },
      { what: "the tunnel counted in agate stats", everyMs: 200 },
    );
    expect(st.totals.totalTunnels).toBeGreaterThanOrEqual(1);
    const t = await agate(["stats"]);
    expect(t.out).toMatch(/^tunnels since start\s+[1-9]/m);
    expect(t.out).toContain("bandwidth saved (30 days)");
  });

  test("config get/set: typed values, the gateway's validation message and exit 1 on a refusal", async () => {
    expect((await agate(["config", "get", "cache.port"])).out.trim()).toBe("8080");
    const bad = await agate(["config", "set", "proxy.port=22"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("proxy.port: port 22 is reserved [proxy.port]");
    const eleven = await agate(["config", "set", `cache.allowed_domains=${"abcdefghijk".split("").map((c) => `${c}.com`).join(",")}`]);
    expect(eleven.code).toBe(1);
    expect(eleven.err).toContain("cache.allowed_domains: 11 entries, at most 10");
    const ok = await agate(["config", "set", "cache.allowed_domains=microsoft.com,adobe.com", "proxy.head_timeout_s=5"]);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain(`saved to ${join(gw.dir, "data", "agate.auto.toml")}`);
    expect(JSON.parse((await agate(["config", "get", "cache.allowed_domains", "--json"])).out)).toEqual(["microsoft.com", "adobe.com"]);
    const all = await agate(["config", "get"]);
    expect(all.out).toMatch(/^proxy\.head_timeout_s\s+5$/m);
    expect(all.out).toMatch(/^admin\.token\s+null$/m);
  });

  test("certs: upload, list, edit, assign, refuse deleting the assigned one, delete", async () => {
    const chain = makeCustomerChain("CLI Corp Issuing CA");
    const up = await agate(["certs", "upload", "--root", chain.root, "--intermediate", chain.intermediate, "--key", chain.key, "--cn", "CLI chain", "--description", "from the CLI"]);
    expect(up.code).toBe(0);
    const id = /uploaded ([0-9a-f]+):/.exec(up.out)![1]!;
    const list = await agate(["certs", "list"]);
    expect(list.out).toMatch(/^id\s+role\s+assigned\s+common name/m);
    expect(list.out).toMatch(new RegExp(`^${id}\\s+customer\\s+CLI chain\\s+from the CLI`, "m"));
    expect(list.out).toMatch(/^appliance\s+appliance\s+yes/m);
    expect((await agate(["certs", "edit", id, "--description", "edited"])).out).toContain("edited");
    const big = await agate(["certs", "edit", id, "--cn", "x".repeat(101)]);
    expect(big.code).toBe(1);
    expect(big.err).toContain("[common_name]");
    expect((await agate(["certs", "assign", id])).code).toBe(0);
    const del = await agate(["certs", "delete", id]);
    expect(del.code).toBe(1);
    expect(del.err).toContain("is assigned");
    expect((await agate(["certs", "assign", "appliance"])).code).toBe(0);
    expect((await agate(["certs", "delete", id])).code).toBe(0);
    const enc = join(chain.dir, "enc.pem");
    Bun.spawnSync(["openssl", "pkcs8", "-topk8", "-in", join(chain.dir, "inter.key"), "-passout", "pass:x", "-out", enc]);
    const pass = await agate(["certs", "upload", "--root", chain.root, "--intermediate", chain.intermediate, "--key", enc]);
    expect(pass.code).toBe(1);
    expect(pass.err).toContain("passphrase");
  });

  test("logs: search, most recent first", async () => {
    const r = await agate(["logs", "--q", "tunnel", "--limit", "5"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("tunnel");
    const times = r.out.trim().split("\n").filter((l) => /^\d{4}-/.test(l)).map((l) => l.slice(0, 23));
    expect(times).toEqual([...times].sort().reverse());
  });

  test("diag: results, an archive saved to a file, its password once; diag open decrypts it", async () => {
    const out = join(gw.dir, "diag.age");
    const r = await agate(["diag", "--out", out]);
    // no tls.upstream_ca (qagpublic fails TLS) and only qagpublic is mapped: checks fail, so diag exits 1 (issue 10)
    expect(r.code).toBe(1);
    expect(r.out).toMatch(new RegExp(`qagpublic\\.qg1\\.apps\\.qualys\\.com:${origin.port}\\s+platform\\s+FAIL \\(tls\\)`));
    expect(r.out).toMatch(/camspm\.qg1\.apps\.qualys\.com:\d+\s+platform\s+FAIL/);
    expect(r.out).toContain(`open it with: age -d -o ${join(gw.dir, "diag.json.gz")} ${out} && gunzip`);
    const pw = /one-time password \(shown only now\): (\S+)/.exec(r.out)![1]!;
    expect(existsSync(out)).toBe(true);
    const open = await agate(["diag", "open", out, "--password", pw], { dataDir: false });
    expect(open.code).toBe(0);
    expect(JSON.parse(open.out).format).toBe("agate-diagnostics/1");
    const wrong = await agate(["diag", "open", out, "--password", "nope"], { dataDir: false });
    expect(wrong.code).toBe(1);
    expect(wrong.err).toContain("wrong password");
  }, 30_000);

  test("usage errors exit 2, an unreachable gateway 3, reset needs --yes", async () => {
    expect((await agate(["frobnicate"])).code).toBe(2);
    const noYes = await agate(["reset"]);
    expect(noYes.code).toBe(2);
    expect(noYes.err).toContain("agate reset --yes");
    const down = await agate(["--url", "http://127.0.0.1:1", "--token", "x", "status"], { dataDir: false });
    expect(down.code).toBe(3);
    expect(down.err).toContain("cannot reach the management API");
    const reset = await agate(["reset", "--yes"]);
    expect(reset.code).toBe(0);
    expect(reset.out).toContain(`the values in ${gw.configPath} (kept)`); // the --config file is never removed (issue 10)
    expect(existsSync(gw.configPath)).toBe(true);
    expect((await agate(["config", "get", "cache.allowed_domains", "--json"])).out.trim()).toBe("[]");
  });
});

describe("tools that match (issue 10)", () => {
  test("config check FILE: offline; OK exits 0; a syntax error gives line:column, a broken rule the key, a missing file the key; exit 78", async () => {
    const dir = gw.dir;
    const good = join(dir, "check-good.toml");
    writeFileSync(good, `[proxy]\nport = 3128\n`);
    const ok = await agate(["config", "check", good], { dataDir: false });
    expect(ok).toMatchObject({ code: 0 });
    expect(ok.out).toContain(`${good}: OK`);
    const syntax = join(dir, "check-syntax.toml");
    writeFileSync(syntax, `[proxy]\nport = 3128\nlisten = = "x"\n`);
    const s = await agate(["config", "check", syntax], { dataDir: false });
    expect(s.code).toBe(78);
    expect(s.err).toContain(`${syntax}:3:`);
    const rule = join(dir, "check-rule.toml");
    writeFileSync(rule, `[proxy]\nport = 22\n`);
    const r = await agate(["config", "check", rule], { dataDir: false });
    expect(r.code).toBe(78);
    expect(r.err).toContain("proxy.port: port 22 is reserved");
    const missing = join(dir, "check-missing.toml");
    writeFileSync(missing, `[tls]\nupstream_ca = "${join(dir, "nope.pem")}"\n`);
    const m = await agate(["config", "check", missing], { dataDir: false });
    expect(m.code).toBe(78);
    expect(m.err).toContain("tls.upstream_ca");
    expect((await agate(["config", "check", join(dir, "no-such.toml")], { dataDir: false })).code).toBe(78);
  });

  test("--version prints the version and exits 0", async () => {
    const { VERSION } = await import("../../src/version");
    const v = await agate(["--version"], { dataDir: false });
    expect(v).toMatchObject({ code: 0, out: `agate ${VERSION}\n` });
  });

  test("the CLI talks to the running gateway's management port, not the one a not-yet-applied file names; reload applies the file", async () => {
    const other = join(gw.dir, "edited.toml");
    // the admin edited the file (a new management port, applied only at the next start) but did not restart
    writeFileSync(other, `[gateway]\ndata_dir = "${join(gw.dir, "data")}"\n[admin]\nport = ${freePort()}\n`);
    const s = await agate(["--config", other, "status", "--json"], { dataDir: false });
    expect(s.code).toBe(0);
    expect(JSON.parse(s.out).ports.admin).toBe(gw.ports.admin);
    // reload: the gateway re-reads its own --config file
    const text = readFileSync(gw.configPath, "utf8").replace("[proxy]\n", '[proxy]\n"head_timeout_s" = 7\n');
    writeFileSync(gw.configPath, text);
    const r = await agate(["reload"]);
    expect(r.code).toBe(0);
    expect((await agate(["config", "get", "proxy.head_timeout_s"])).out.trim()).toBe("7");
  });
});
