/**
 * Is splice(2) the lever for single-stream tunnel throughput (issue 13)? One 256 MiB HTTPS download by curl,
 * straight to bench/e2e/origin-fixture.ts, through a bare JS CONNECT relay and through a splice(2) relay
 * (splice-relay-fwd.ts, splice-relay-thread.ts), order rotating by round; prints each download with the
 * relay's CPU seconds (utime + stime from /proc) and a JSON line of median ratios against direct.
 *   bun bench/micro/splice-relay.ts [MB=256] [ROUNDS=3]
 */
import { join } from "node:path";
import { makeTestPki } from "../../test/peers/test-ca";
const HERE = import.meta.dir;
const HOST = "qagpublic.qg1.apps.qualys.com";
const MB = Number(process.argv[2] ?? 256), ROUNDS = Number(process.argv[3] ?? 3);
const pki = makeTestPki([HOST]);
const BUN = process.execPath;
async function lineOf(p: any): Promise<any> { const r = p.stdout.getReader(); let s = ""; for (;;) { const { value } = await r.read(); s += new TextDecoder().decode(value); const i = s.indexOf("\n"); if (i >= 0) { r.releaseLock(); return JSON.parse(s.slice(0, i)); } } }
const origin = Bun.spawn([BUN, join(HERE, "../e2e/origin-fixture.ts"), "--cert", pki.certPath, "--key", pki.keyPath], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
const ol = await lineOf(origin); const oport = Number(ol.port);
const fj = Bun.spawn([BUN, join(HERE, "splice-relay-fwd.ts"), "js", String(oport)], { stdout: "pipe", stderr: "inherit" });
const fs = Bun.spawn([BUN, join(HERE, "splice-relay-fwd.ts"), "splice", String(oport)], { stdout: "pipe", stderr: "inherit" });
const pj = (await lineOf(fj)).listening, ps = (await lineOf(fs)).listening;
const url = `https://${HOST}:${oport}/stream/${MB}`;
const common = ["--cacert", pki.caPath, "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}", url];
const ways: Record<string, string[]> = { direct: ["--resolve", `${HOST}:${oport}:127.0.0.1`, ...common], js: ["-x", `http://127.0.0.1:${pj}`, ...common], splice: ["-x", `http://127.0.0.1:${ps}`, ...common] };
const cpu = (pid: number) => { const f = require("fs").readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); return (Number(f[11]) + Number(f[12])) / 100; };
const res: Record<string, number[]> = { direct: [], js: [], splice: [] };
const order = ["direct", "js", "splice"];
for (let k = 0; k < ROUNDS; k++) {
  for (let i = 0; i < 3; i++) {
    const w = order[(i + k) % 3]!;
    const pid = w === "js" ? fj.pid : w === "splice" ? fs.pid : origin.pid;
    const c0 = cpu(pid);
    const p = Bun.spawn(["curl", "-sS", ...ways[w]!], { stdout: "pipe" });
    const out = (await new Response(p.stdout).text()).trim().split(" ");
    const sp = Number(out[2]) / 1e6;
    console.log(w, out[0], out[1] === String(MB * 1048576) ? "ok" : "SHORT " + out[1], sp.toFixed(0), "MB/s", "cpu(proc)", (cpu(pid) - c0).toFixed(2));
    res[w]!.push(sp);
  }
}
const med = (a: number[]) => a.slice().sort((x, y) => x - y)[a.length >> 1]!;
console.log(JSON.stringify({ js: med(res.js!) / med(res.direct!), splice: med(res.splice!) / med(res.direct!), perRound: order.map((w) => [w, res[w]]) }));
for (const p of [origin, fj, fs]) p.kill();
