/**
 * Upstream chaining: through Debian's squid with Basic auth, through a second agate (nesting), and the
 * upstream's refusals and silences turned into 502/504 with the reason.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway } from "../peers/gateway";
import { rawExchange } from "../peers/fake-client";
import { squidMissing, startSquid, type Squid } from "../peers/squid";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const hosts = { [HOST]: "127.0.0.1" };
let origin: Origin;

beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

const missing = squidMissing();
if (missing) console.warn(`[skip] squid tests: ${missing}`);

describe.skipIf(!!missing)("through squid with Basic auth", () => {
  let squid: Squid;
  beforeAll(async () => {
    squid = await startSquid(hosts);
  });
  afterAll(async () => {
    await squid?.stop();
  });

  test("curl → agate → squid (Basic) → origin works, and squid sees the host name, not an IP", async () => {
    await using gw = await startGateway({
      destinations: { ports: [origin.port] },
      hosts,
      upstream_proxy: { host: "127.0.0.1", port: squid.port, username: squid.user, password: squid.password },
    });
    const r = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/via-squid")]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("hello from origin /via-squid\n");
    // squid writes its access.log line when the tunnel closes, a moment after curl is done.
    const access = await waitFor(
      () => {
        const text = readFileSync(join(squid.dir, "access.log"), "utf8");
        return text.includes(" CONNECT ") && text;
      },
      { what: "squid's access.log line for the tunnel" },
    );
    expect(access).toContain(`CONNECT ${HOST}:${origin.port}`);
    expect(access).not.toContain(`CONNECT 127.0.0.1:${origin.port}`);
    const line = await gw.waitForLine((l) => l.msg === "tunnel" && l.dest === `${HOST}:${origin.port}`);
    expect(line.via).toBe("upstream-proxy");
    // The password never appears in the gateway's logs.
    expect(JSON.stringify(gw.lines())).not.toContain(squid.password);
  });

  test("a wrong password surfaces as 502 naming the upstream's 407", async () => {
    await using gw = await startGateway({
      destinations: { ports: [origin.port] },
      hosts,
      upstream_proxy: { host: "127.0.0.1", port: squid.port, username: squid.user, password: "wrong-password" },
    });
    const raw = await rawExchange(gw.ports.proxy, `CONNECT ${HOST}:${origin.port} HTTP/1.1\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 502 ");
    expect(raw).toContain("407");
    expect(raw).toContain("upstream_proxy.username");
    expect(JSON.stringify(gw.lines())).not.toContain("wrong-password");
  });
});

describe("nesting and upstream failures", () => {
  test("an edge agate whose upstream proxy is a parent agate's proxy port", async () => {
    // disposed in reverse order: the edge stops first, then the parent
    await using parent = await startGateway({ destinations: { ports: [origin.port] }, hosts });
    await using edge = await startGateway({
      destinations: { ports: [origin.port, 8443] },
      hosts: { ...hosts, "parent.gateway.local": "127.0.0.1" },
      upstream_proxy: { host: "parent.gateway.local", port: parent.ports.proxy },
    });
    const r = await curl(["-x", `http://127.0.0.1:${edge.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/nested")]);
    expect(r.stdout).toBe("hello from origin /nested\n");
    const pl = await parent.waitForLine((l) => l.msg === "tunnel" && l.dest === `${HOST}:${origin.port}`);
    expect(pl.via).toBe("direct");
    const el = await edge.waitForLine((l) => l.msg === "tunnel");
    expect(el.via).toBe("upstream-proxy");
    // The parent's refusal comes back as the edge's 502 with the reason.
    const raw = await rawExchange(edge.ports.proxy, `CONNECT ${HOST}:8443 HTTP/1.1\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 502 ");
    expect(raw).toContain("403");
    expect(raw).toContain("port 8443 is not an allowed destination port");
  });

  test("an upstream proxy that accepts but never answers → 504", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      await using gw = await startGateway({
        destinations: { ports: [origin.port] },
        hosts,
        proxy: { connect_timeout_s: 0.5 },
        upstream_proxy: { host: "127.0.0.1", port: silent.port },
      });
      const raw = await rawExchange(gw.ports.proxy, `CONNECT ${HOST}:${origin.port} HTTP/1.1\r\n\r\n`);
      expect(raw).toStartWith("HTTP/1.1 504 ");
    } finally {
      silent.stop(true);
    }
  });
});
