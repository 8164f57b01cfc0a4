/**
 * Maintenance mode (issue 10): `POST /api/maintenance {"on": true}` (and `agate maintenance on|off`) turns /healthz
 * 503 on every port and refuses new connections with 503 + Retry-After, while a download already under way finishes;
 * it survives a restart until turned off.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { ROOT, startGateway } from "../peers/gateway";
import { rawExchange } from "../peers/fake-client";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
let origin: Origin;
let started = false;
let release: () => void = () => {};
const gate = new Promise<void>((r) => (release = r));

beforeAll(() => {
  origin = startTlsOrigin(pki, {
    // a download that sends half, waits for the test, then sends the rest
    "/slow": () =>
      new Response(
        new ReadableStream({
          async start(ctrl) {
            ctrl.enqueue(new TextEncoder().encode("first-half\n"));
            started = true;
            await gate;
            ctrl.enqueue(new TextEncoder().encode("second-half\n"));
            ctrl.close();
          },
        }),
      ),
  });
});
afterAll(() => {
  release();
  origin?.stop();
});

const agate = async (gw: { ports: { admin: number }; token: string }, ...args: string[]) => {
  const p = Bun.spawn([join(ROOT, "bin/agate"), "--url", `http://127.0.0.1:${gw.ports.admin}`, "--token", gw.token, ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { out, err, code };
};

test("maintenance: 503 everywhere for new connections, a download under way finishes, kept across a restart, off again", async () => {
  const cfg = { hosts: { [HOST]: "127.0.0.1" }, destinations: { ports: [origin.port] } };
  const gw = await startGateway(cfg);
  const connect = `CONNECT ${HOST}:${origin.port} HTTP/1.1\r\nHost: ${HOST}:${origin.port}\r\n\r\n`;
  try {
    expect((await fetch(`http://127.0.0.1:${gw.ports.proxy}/healthz`)).status).toBe(200);
    // a download under way through a tunnel
    const dl = Bun.spawn(["curl", "-sS", "--max-time", "30", "-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, `https://${HOST}:${origin.port}/slow`], { stdout: "pipe", stderr: "pipe" });
    await waitFor(() => started, { what: "the download to start" });

    const on = await gw.admin("/api/maintenance", { method: "POST", headers: { "content-type": "application/json" }, body: '{"on": true}' });
    expect(on.status).toBe(200);
    expect(await on.json()).toMatchObject({ ok: true, on: true });
    // the workers hear it at once (pushed on the change), so no wait is needed, but the push crosses a thread
    const hz: any = await waitFor(async () => {
      const r = await fetch(`http://127.0.0.1:${gw.ports.proxy}/healthz`);
      return r.status === 503 && r.json();
    }, { what: "/healthz 503 in maintenance" });
    expect(hz.reasons.join(" ")).toContain("maintenance");
    expect((await fetch(`http://127.0.0.1:${gw.ports.admin}/healthz`)).status).toBe(503);
    const ans = await rawExchange(gw.ports.proxy, connect);
    expect(ans.split("\r\n")[0]).toBe("HTTP/1.1 503 Service Unavailable");
    expect(Number(/\r\nRetry-After: (\d+)\r\n/i.exec(ans)?.[1])).toBeGreaterThanOrEqual(30);
    expect(ans).toContain("maintenance");
    const st: any = await (await gw.admin("/api/status")).json();
    expect(st).toMatchObject({ health: "Down", maintenance: { on: true } });

    // the download under way is untouched
    release();
    const [body, code] = await Promise.all([new Response(dl.stdout).text(), dl.exited]);
    expect(code).toBe(0);
    expect(body).toBe("first-half\nsecond-half\n");
    // bad input: a clear 400 naming the field
    const bad = await gw.admin("/api/maintenance", { method: "POST", body: '{"on": "yes"}' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).field).toBe("on");
  } finally {
    await gw.stop();
  }

  // a restart keeps it on
  await using gw2 = await startGateway(cfg, { dir: gw.dir });
  const r2 = await fetch(`http://127.0.0.1:${gw2.ports.proxy}/healthz`);
  expect(r2.status).toBe(503);
  expect((await rawExchange(gw2.ports.proxy, connect)).split("\r\n")[0]).toBe("HTTP/1.1 503 Service Unavailable");
  const s2 = await agate(gw2, "status");
  expect(s2.out).toContain("maintenance");

  // off with the CLI: serving again
  const off = await agate(gw2, "maintenance", "off");
  expect(off.code).toBe(0);
  expect(off.out).toContain("maintenance off");
  await waitFor(async () => (await fetch(`http://127.0.0.1:${gw2.ports.proxy}/healthz`)).status === 200, { what: "/healthz 200 after maintenance off" });
  // the tunnel stays open after its 200: read for a second, then hang up
  expect((await rawExchange(gw2.ports.proxy, connect, { waitMs: 1000 })).split("\r\n")[0]).toBe("HTTP/1.1 200 Connection established");
  expect((await agate(gw2, "maintenance", "sideways")).code).toBe(2);
}, 90_000);
