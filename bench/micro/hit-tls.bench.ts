/**
 * @module Which server-side TLS termination is cheapest for a cache hit (DESIGN "verified facts": the question for the
 * benchmark): server CPU µs per keep-alive request for each variant, two alternating rounds, one JSON line each.
 * Run: `bun bench/micro/hit-tls.bench.ts [size=1024] [requests=20000] [native,upgrade,duplex,net,tlsserver,duplexb]`.
 */
import { join } from "node:path";
import { makeTestPki } from "../../test/peers/test-ca";
const pki = makeTestPki(["h.example"]);
const size = process.argv[2] ?? "1024";
const N = Number(process.argv[3] ?? 20000);
const variants = (process.argv[4] ?? "native,duplex,net,tlsserver").split(",");
for (const round of [1, 2]) for (const v of variants) {
  const p = Bun.spawn([process.execPath, join(import.meta.dir, "hit-tls-server.ts"), v, pki.certPath, pki.keyPath, size], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const rd = p.stdout.getReader(); let buf = "";
  const line = async () => { for (;;) { const i = buf.indexOf("\n"); if (i >= 0) { const l = buf.slice(0, i); buf = buf.slice(i + 1); return l; } const { value } = await rd.read(); buf += new TextDecoder().decode(value); } };
  const { port } = JSON.parse(await line());
  // warm
  await Bun.spawn([process.execPath, join(import.meta.dir, "hit-tls-client.ts"), String(port), pki.caPath, "2000", "50", size]).exited;
  p.stdin.write("reset\n"); p.stdin.flush();
  await Bun.sleep(50);
  const c = Bun.spawn([process.execPath, join(import.meta.dir, "hit-tls-client.ts"), String(port), pki.caPath, String(N), process.env.CONC ?? "50", size], { stdout: "pipe" });
  const out = JSON.parse(await new Response(c.stdout).text());
  p.stdin.write("cpu\n"); p.stdin.flush();
  const { cpuMs } = JSON.parse(await line());
  console.log(JSON.stringify({ round, v, size, rps: out.rps, done: out.done, serverCpuUsPerReq: Math.round(cpuMs * 1000 / out.done * 10) / 10 }));
  p.stdin.write("quit\n"); p.stdin.flush(); await p.exited;
}
