/**
 * Reset returns to unconfigured without breaking the start (issue 10): it removes what the gateway made (overlay,
 * CAs, uploaded chains, logs, stats, stores, the generated admin token) and never the admin's --config file, so the
 * same start command still starts; the confirmation says what will happen; stats and savings start from zero.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { BUN, ROOT, curl, startGateway } from "../peers/gateway";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const hosts = { [HOST]: "127.0.0.1" };
let origin: Origin;
beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

/** The same start command again, to its "listening" line (bounded); then SIGTERM. Resolves to the line or the exit. */
async function startsAgain(configPath: string): Promise<{ listening: boolean; code: number | null; err: string }> {
  const p = Bun.spawn([BUN, join(ROOT, "src/main.ts"), "--config", configPath], { stdout: "pipe", stderr: "pipe" });
  const errText = new Response(p.stderr).text();
  const reader = p.stdout.getReader();
  const dec = new TextDecoder();
  let out = "";
  const deadline = setTimeout(() => p.kill("SIGKILL"), 20_000);
  let listening = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += dec.decode(value, { stream: true });
    if (out.split("\n").some((l) => l.includes('"msg":"listening"'))) {
      listening = true;
      break;
    }
  }
  p.kill("SIGTERM");
  const code = await p.exited;
  clearTimeout(deadline);
  return { listening, code: listening ? null : code, err: await errText };
}

describe("reset", () => {
  test("keeps the --config file (the same start command still starts), removes the overlay, back to the file's values; confirmation says what happens", async () => {
    await using g = await startGateway({ destinations: { ports: [origin.port] }, hosts, cache: { allowed_domains: ["adobe.com"] } });
    const fileText = readFileSync(g.configPath, "utf8");
    const put = await g.admin("/api/config", { method: "PUT", body: JSON.stringify({ cache: { allowed_domains: ["microsoft.com"] } }) });
    expect(put.status).toBe(200);
    const overlay = join(g.dir, "data", "agate.auto.toml");
    expect(existsSync(overlay)).toBe(true);

    // the confirmation: what will happen, before anything does
    const plan = await (await g.admin("/api/reset")).json();
    expect(plan.will.join(" ")).toContain("new appliance CA");
    expect(plan.will.join(" ")).toContain(g.configPath);
    expect(plan.removes).toContain(overlay);
    expect(plan.keeps).toContain(g.configPath);
    const no = await g.admin("/api/reset", { method: "POST", body: "{}" });
    expect(no.status).toBe(400);
    const nob = await no.json();
    expect(nob.field).toBe("confirm");
    expect(nob.error).toContain("every agent");
    expect(existsSync(overlay)).toBe(true);

    const r = await g.admin("/api/reset", { method: "POST", body: JSON.stringify({ confirm: "RESET" }) });
    expect(r.status).toBe(200);
    expect(existsSync(g.configPath)).toBe(true);
    expect(readFileSync(g.configPath, "utf8")).toBe(fileText);
    expect(existsSync(overlay)).toBe(false);
    const c = await (await g.admin("/api/config")).json();
    expect(c.cache.allowed_domains).toEqual(["adobe.com"]); // the file's value, not the defaults' []
    expect(c.proxy.listen).toBe("127.0.0.1");
    await g.stop();

    const again = await startsAgain(g.configPath);
    expect(again).toMatchObject({ listening: true });
  }, 60_000);

  test("stats and savings start from zero; a generated admin token is replaced (the answer carries it)", async () => {
    await using g = await startGateway({ destinations: { ports: [origin.port] }, hosts, admin: { token: "" } });
    const tokenFile = join(g.dir, "data", "admin.token");
    const old = readFileSync(tokenFile, "utf8").trim();
    const call = (t: string, path: string, init: RequestInit = {}) =>
      fetch(`http://127.0.0.1:${g.ports.admin}${path}`, { ...init, headers: { authorization: `Bearer ${t}` } });
    const r1 = await curl(["-x", `http://127.0.0.1:${g.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/one")]);
    expect(r1.stdout).toBe("hello from origin /one\n");
    await waitFor(async () => (await (await call(old, "/api/stats")).json()).totals.totalTunnels >= 1, { what: "the tunnel counted" });

    const r = await call(old, "/api/reset", { method: "POST", body: JSON.stringify({ confirm: "RESET" }) });
    expect(r.status).toBe(200);
    const b = await r.json();
    expect(typeof b.token).toBe("string");
    expect(b.token).not.toBe(old);
    expect(readFileSync(tokenFile, "utf8").trim()).toBe(b.token);
    expect((await call(old, "/api/status")).status).toBe(401);
    const s = await (await call(b.token, "/api/stats")).json();
    expect(s.totals.totalTunnels).toBe(0);
    expect(s.unique_ips_60m).toBe(0);
    expect(s.total_agents_7d).toBe(0);
    expect(s.bandwidth_savings_30d.saved_bytes).toBe(0);
  }, 60_000);

  test("maintenance is turned off in the running gateway, not only its file removed: health and /healthz say so", async () => {
    await using g = await startGateway({ destinations: { ports: [origin.port] }, hosts });
    const on = await g.admin("/api/maintenance", { method: "POST", headers: { "content-type": "application/json" }, body: '{"on": true}' });
    expect(on.status).toBe(200);
    await waitFor(async () => (await fetch(`http://127.0.0.1:${g.ports.proxy}/healthz`)).status === 503, { what: "maintenance on the proxy port" });
    const maintFile = join(g.dir, "data", "maintenance.json");
    expect(existsSync(maintFile)).toBe(true);

    const r = await g.admin("/api/reset", { method: "POST", body: JSON.stringify({ confirm: "RESET" }) });
    expect(r.status).toBe(200);
    expect(existsSync(maintFile)).toBe(false);
    expect(await (await g.admin("/api/maintenance")).json()).toEqual({ on: false, since: null });
    const st = await (await g.admin("/api/status")).json();
    expect(st.maintenance.on).toBe(false);
    expect(JSON.stringify(st.problems ?? st.reasons)).not.toContain("maintenance");
    // the workers got the new answer: the proxy port serves again (a restart would have kept it on had the file stayed)
    await waitFor(async () => (await fetch(`http://127.0.0.1:${g.ports.proxy}/healthz`)).status === 200, { what: "the proxy port serving after the reset" });
    const t = await curl(["-x", `http://127.0.0.1:${g.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/after")]);
    expect(t.stdout).toBe("hello from origin /after\n");
  }, 60_000);
});
