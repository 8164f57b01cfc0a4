/**
 * The concurrency benchmark: can one gateway hold thousands of agents' tunnels at once, at what cost,
 * and does it refuse the excess politely?
 *
 *   bun bench/e2e/concurrency.ts [--conns 3000,9000 | --skip-load] [--requests 5] [--rounds 3] [--batch 200] [--client bun|node]
 *                                [--skip-admission] [--admission-limit 3000] [--admission-over 500]
 *                                [--skip-throughput] [--throughput-mb 256] [--throughput-tries 3]
 *                                [--workers N] [--max-connections N] [--no-warmup] [--out DIR]
 *
 * Processes (each in its own, so no process needs more than ~19,000 of the 20,000 descriptors it may open):
 *   this one          orchestration, sampling /proc/<gateway>/{status,stat,fd} every 100 ms, curl for throughput
 *   origin-fixture.ts TLS origin on 127.0.0.1 (Bun.serve, keep-alive, small answers, /stream/<MB>)
 *   the gateway       `bun src/main.ts --config FILE` via test/peers/gateway.ts, one worker per CPU
 *   load-fixture.ts   the clients: C connections in batches, a barrier, then R keep-alive GETs each
 *
 * Phases, each with a fresh gateway and origin (so each has its own idle RSS baseline):
 *   load C        (for each C) warm-up, then --rounds rounds of: C tunnels through the proxy (CONNECT → 200 →
 *                 TLS inside) held open together, R requests each, and the same workload straight to the
 *                 origin (order alternating by round). Latencies are medians over rounds and the ratios the
 *                 median of per-round ratios (the box is shared, one round is noisy); RSS per tunnel comes
 *                 from round 1, as later rounds start from a heap the first one already grew.
 *   admission     max_connections = L, L + X connections send CONNECT and hold: exactly X refused with 503 and
 *                 Retry-After, each within 1 s, none timing out; L admitted with 200
 *   throughput    one 256 MB download with curl through the tunnel vs direct, best of 3 each, interleaved
 *
 * Output: the JSON document on stdout and in bench/results/concurrency-<timestamp>.json, a human summary on
 * stderr. Exit 0 when every gate passes, 1 when one fails, 2 on bad arguments, 3 when the harness broke.
 * Gates: 0 errors at every C; admission exact and fast. Targets (reported pass/miss, not gated):
 * single stream ≥ 0.95× direct, p99 through ≤ 1.5× direct at 3,000, ≤ 20 KB gateway RSS per tunnel.
 */
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { ROOT } from "../../test/peers/gateway";
import { makeTestPki } from "../../test/peers/test-ca";
import { docHead, finishRun, forEachFlag, machineInfo, makeUsage, onInterrupt, resultFile } from "./harness";
import { HOST, type Options, cleanup, inPhase, log } from "./concurrency-kit";
import { runLoad } from "./concurrency-load";
import { runAdmission, runThroughput } from "./concurrency-phases";
import { judge, summary } from "./concurrency-report";

// ---- options ----------------------------------------------------------------------------------------------

const usage: (msg?: string) => never = makeUsage(
  "concurrency",
  "usage: bun bench/e2e/concurrency.ts [--conns 3000,9000 | --skip-load] [--requests 5] [--rounds 3] [--batch 200] [--client bun|node]\n" +
    "         [--skip-admission] [--admission-limit 3000] [--admission-over 500]\n" +
    "         [--skip-throughput] [--throughput-mb 256] [--throughput-tries 3] [--workers N] [--max-connections N] [--no-warmup] [--out DIR]",
);

function parseOptions(argv: string[]): Options {
  const o: Options = {
    conns: [3000, 9000],
    requests: 5,
    rounds: 3,
    batch: 200,
    client: "bun",
    admission: true,
    admissionLimit: 3000,
    admissionOver: 500,
    throughput: true,
    throughputMb: 256,
    throughputTries: 3,
    workers: availableParallelism(),
    maxConnections: 0,
    warmup: true,
    out: join(ROOT, "bench/results"),
  };
  forEachFlag(argv, usage, o, ({ flag, arg: a, value: v, int }) => {
    switch (flag) {
      case "--conns":
        o.conns = v()
          .split(",")
          .map((s) => Number(s.trim()));
        if (!o.conns.length || o.conns.some((n) => !Number.isInteger(n) || n < 1 || n > 9500)) usage("--conns: integers 1–9500, comma-separated");
        break;
      case "--requests": o.requests = int(1, 1000); break;
      case "--rounds": o.rounds = int(1, 20); break;
      case "--batch": o.batch = int(1, 5000); break;
      case "--client": {
        const c = v();
        if (c !== "bun" && c !== "node") usage("--client: bun or node");
        o.client = c;
        break;
      }
      case "--skip-load": o.conns = []; break;
      case "--skip-admission": o.admission = false; break;
      case "--admission-limit": o.admissionLimit = int(1, 9000); break;
      case "--admission-over": o.admissionOver = int(1, 5000); break;
      case "--skip-throughput": o.throughput = false; break;
      case "--throughput-mb": o.throughputMb = int(1, 4096); break;
      case "--throughput-tries": o.throughputTries = int(1, 20); break;
      case "--max-connections": o.maxConnections = int(1, 100_000); break;
      case "--no-warmup": o.warmup = false; break;
      default:
        usage(`unknown argument ${a}`);
    }
  });
  if (o.admissionLimit + o.admissionOver > 9500) usage("--admission-limit + --admission-over must stay ≤ 9500 (descriptor limit)");
  return o;
}
// ---- main -------------------------------------------------------------------------------------------------

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const { started, file } = resultFile(opts.out, "concurrency");
  const doc: any = {
    ...docHead("concurrency", started, machineInfo({}, { nofile: Number(Bun.spawnSync(["sh", "-c", "ulimit -n"], { stdout: "pipe" }).stdout.toString().trim()) || null }), opts),
    load: [],
    admission: null,
    throughput: null,
  };
  let harnessError: string | null = null;
  onInterrupt(log, "interrupted: stopping children", cleanup);
  try {
    const pki = makeTestPki([HOST]);
    const base = { opts, pki };
    for (const c of opts.conns) doc.load.push(await inPhase(base, (env) => runLoad(env, c)));
    if (opts.admission) doc.admission = await inPhase(base, runAdmission);
    if (opts.throughput) doc.throughput = await inPhase(base, runThroughput);
  } catch (e) {
    harnessError = String((e as Error)?.stack ?? e);
  } finally {
    await cleanup();
  }
  finishRun(doc, { started, file, error: harnessError, ...judge(doc, opts), summary });
}

await main();
