/**
 * @module concurrency.ts's verdict and summary: the gates (0 errors at every C, admission exact and fast, downloads
 * complete) and targets (reported, not gated), and the human summary on stderr.
 */
import { type Check, checkLines, p50p99, verdictLines } from "./harness";
import { type Options, REFUSAL_FAST_MS } from "./concurrency-kit";

const TARGET_THROUGHPUT_RATIO = 0.95;
const TARGET_P99_RATIO = 1.5;
const TARGET_P99_AT = 3000;
const TARGET_RSS_PER_TUNNEL_KB = 20;

// ---- gates, targets, summary ------------------------------------------------------------------------------

export function judge(doc: any, opts: Options) {
  const gates: Check[] = [];
  const targets: Check[] = [];
  for (const l of doc.load) {
    const t = l.tunnel;
    const d = l.direct;
    const rounds = l.rounds > 1 ? ` (every one of ${l.rounds} rounds)` : "";
    gates.push({
      name: `${l.conns} concurrent through the proxy: all open together, 0 errors${rounds}`,
      pass: t.clean,
      value: { openedMin: t.openedMin, requestsOk: t.requestsOk, requestsExpected: t.requestsExpected, errors: t.errors },
      want: `${l.conns} open at the barrier and ${l.conns * l.requests} requests ok in each round, no errors`,
    });
    gates.push({
      name: `${l.conns} concurrent straight to the origin (baseline sanity): 0 errors${rounds}`,
      pass: d.clean,
      value: { openedMin: d.openedMin, requestsOk: d.requestsOk, requestsExpected: d.requestsExpected, errors: d.errors },
      want: "the baseline itself is clean",
    });
    if (l.conns === TARGET_P99_AT || (opts.conns.length === 1 && !opts.conns.includes(TARGET_P99_AT))) {
      targets.push({
        name: `p99 request latency at ${l.conns}: through ≤ ${TARGET_P99_RATIO}× direct`,
        pass: l.ratios.latencyP99 !== null && l.ratios.latencyP99 <= TARGET_P99_RATIO,
        value: `${t.latencyMs.p99} ms vs ${d.latencyMs.p99} ms; median of per-round ratios ${l.ratios.latencyP99}× (rounds: ${l.perRound.map((r: any) => r.ratios.latencyP99).join(", ")})`,
        want: `≤ ${TARGET_P99_RATIO}×`,
      });
    }
    targets.push({
      name: `gateway RSS per tunnel at ${l.conns}`,
      pass: l.gateway.rssPerTunnelKB <= TARGET_RSS_PER_TUNNEL_KB,
      value: `${l.gateway.rssPerTunnelKB} KB ((peak ${l.gateway.peakRssKB} − idle ${l.gateway.idleRssKB}) / ${l.conns})`,
      want: `≤ ${TARGET_RSS_PER_TUNNEL_KB} KB`,
    });
  }
  if (doc.admission) {
    const a = doc.admission;
    gates.push({
      name: `admission: ${a.attempted} against max_connections ${a.limit}`,
      pass: Object.values(a.checks).every(Boolean),
      value: { admitted: a.admitted, refused: a.refused, retryAfter: a.refusedWithRetryAfter, refusalMaxMs: a.refusalMs?.max, timeouts: a.timeouts, checks: a.checks },
      want: `exactly ${a.attempted - a.limit} refused with 503 + Retry-After within ${REFUSAL_FAST_MS} ms, ${a.limit} admitted, none timing out`,
    });
  }
  if (doc.throughput) {
    const t = doc.throughput;
    gates.push({
      name: "throughput downloads complete (harness sanity)",
      pass: t.failures === 0,
      value: t.failures,
      want: "every curl download 200 with every byte",
    });
    targets.push({
      name: `single-stream ${opts.throughputMb} MiB: through ≥ ${TARGET_THROUGHPUT_RATIO}× direct`,
      pass: t.ratio !== null && t.ratio >= TARGET_THROUGHPUT_RATIO,
      value: `${t.tunnelMBps} MB/s vs ${t.directMBps} MB/s = ${t.ratio}×`,
      want: `≥ ${TARGET_THROUGHPUT_RATIO}×`,
    });
  }
  return { gates, targets };
}

export function summary(doc: any): string {
  const out: string[] = [];
  const ms = p50p99;
  out.push(
    `agate concurrency benchmark (${doc.machine.cpus} CPUs, ${doc.options.workers} workers, client ${doc.options.client}, ${doc.elapsedS}s; ` +
      `load average ${doc.machine.loadAvgStart?.[0]} before, ${doc.machine.loadAvgEnd?.[0]} after)`,
  );
  for (const l of doc.load) {
    const t = l.tunnel;
    const d = l.direct;
    const errs = (x: any) => (x.errorCount ? JSON.stringify(x.errors) : "none");
    out.push(`\n${l.conns} concurrent connections × ${l.requests} requests, ${l.rounds} round(s) (figures: medians over rounds)`);
    out.push(`  through proxy: ≥${t.openedMin} open (ramp ${t.rampMs} ms), ${t.requestsOk}/${t.requestsExpected} requests ok, errors ${errs(t)}`);
    out.push(`  direct:        ≥${d.openedMin} open (ramp ${d.rampMs} ms), ${d.requestsOk}/${d.requestsExpected} requests ok, errors ${errs(d)}`);
    out.push(`  request latency  through ${ms(t.latencyMs)}   direct ${ms(d.latencyMs)}   ratio p50 ${l.ratios.latencyP50}× p99 ${l.ratios.latencyP99}×`);
    out.push(`  requests/s       through ${t.requestsPerSecond}   direct ${d.requestsPerSecond}`);
    out.push(`  TLS handshake    through ${ms(t.handshakeMs)}   direct ${ms(d.handshakeMs)}   (CONNECT answer ${ms(t.connectAnswerMs)})`);
    const g = l.gateway;
    out.push(
      `  gateway RSS: idle ${g.idleRssKB} kB, all open ${g.allOpenRssKB} kB, peak ${g.peakRssKB} kB → ${g.rssPerTunnelKB} KB/tunnel ` +
        `(${g.rssPerTunnelAllOpenKB} KB at the barrier); ${g.fdsAllOpen} fds; tunnels per worker ${JSON.stringify(g.stats?.perWorker)}`,
    );
    out.push(
      `  gateway CPU: ramp ${g.cpuS.ramp}s (${g.cpuMsPerTunnelSetup} ms/tunnel), requests ${g.cpuS.requests}s (${g.cpuUsPerRequest} µs/request), ` +
        `teardown ${g.cpuS.teardown}s; user ${g.cpuS.user}s / sys ${g.cpuS.sys}s`,
    );
  }
  if (doc.admission) {
    const a = doc.admission;
    out.push(
      `\nadmission: ${a.attempted} vs limit ${a.limit}: ${a.admitted} admitted (200; ${a.stillOpenAfterHold} still open after ${a.holdMs} ms), ` +
        `${a.refused} refused (503, ${a.refusedWithRetryAfter} with Retry-After), refusal ${ms(a.refusalMs)} max ${a.refusalMs?.max} ms, ${a.timeouts} timeouts; ` +
        `gateway counted refusals ${JSON.stringify(a.gatewayStats?.refusals)}`,
    );
  }
  if (doc.throughput) {
    const t = doc.throughput;
    out.push(
      `\nthroughput (${doc.options.throughputMb} MiB, best of ${doc.options.throughputTries}): through ${t.tunnelMBps} MB/s, direct ${t.directMBps} MB/s, ratio ${t.ratio}× ` +
        `(medians ${t.tunnelMedianMBps} / ${t.directMedianMBps} = ${t.medianRatio}×; gateway CPU per download user ${t.gatewayCpuSPerDownload.user}s sys ${t.gatewayCpuSPerDownload.sys}s)`,
    );
  }
  out.push(...checkLines(doc, true), ...verdictLines(doc));
  return out.join("\n");
}
