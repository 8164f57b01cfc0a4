/**
 * @module Worker thread entry: on init, listen on the proxy port (and the cache port when cache mode is on)
 * with reusePort so the kernel spreads agents across workers; report counters every second; follow config
 * pushes (re-listening only when a port changes, so established tunnels stay up); drain on request.
 * It builds the one WorkerRuntime (runtime.ts) at init and passes it down; a config push updates it in place.
 */
import type { TCPSocketListener } from "bun";
import hyperid from "hyperid";
import { STORE_WRITES_SLOT, type SupervisorToWorker, type WorkerToSupervisor, decode, emptyCounters, encode } from "./protocol";
import { shareWriteCount } from "../store/cache/index-db";
import { makeListener, type Listener } from "./listener";
import type { ClientConn, WorkerRuntime } from "./runtime";
import { log, setLogSink } from "../log";
import type { CaPems } from "../store/ca-store";
import type { Config } from "../core/config";
import { compilePolicy } from "../core/policy";
import { runPrefill } from "./prefill";
import { applyCacheMode, cacheReport, makeCacheServices } from "./cache-request";
import { agentCaKey, makeAgentCa } from "../store/agent-ca";

/** The one runtime of this worker, and its listening side; both made at init. */
let rt: WorkerRuntime;
let listener: Listener;

function makeRuntime(m: Extract<SupervisorToWorker, { t: "init" }>, admission: SharedArrayBuffer | undefined): WorkerRuntime {
  return {
    // layer 2's services: no store open, no CA, an empty origin pool (applyCacheMode fills them in)
    ...makeCacheServices(),
    index: m.index,
    bootId: m.bootId,
    config: m.config,
    policy: compilePolicy(m.config),
    draining: false,
    admission: admission ? new Int32Array(admission) : null,
    intercepting: false,
    // Exact time: durations in the logs are what the agent saw (the 1-second coarse clock made them up to 1 s off).
    now: Date.now,
    makeId: hyperid({ urlSafe: true }),
    counters: emptyCounters(),
    proxyIps: new Set(),
    cacheIps: new Set(),
    platformSeen: new Set(),
    health: null,
    random: Math.random,
  };
}

function setConfig(config: Config) {
  rt.config = config;
  rt.policy = compilePolicy(config);
}

/** Cache mode: the active CA for leaves, and interception on the cache port; the CA agents download either way. */
async function applyCache(config: Config, ca: CaPems | null) {
  await applyCacheMode(rt, config, ca); // sets rt.intercepting too
  const key = agentCaKey(ca); // the root, its package and the next CA (store/agent-ca.ts)
  if (key !== agentCaFrom) {
    rt.agentCa = ca ? makeAgentCa(ca) : null;
    agentCaFrom = key;
  }
}

let agentCaFrom: string | undefined;

declare const self: Worker;

const post = (m: WorkerToSupervisor) => self.postMessage(encode(m));

let logBatch: string[] = [];
setLogSink((line) => {
  logBatch.push(line);
  if (logBatch.length >= 256) flushLogs();
}, "worker");
function flushLogs() {
  if (!logBatch.length) return;
  post({ t: "log", lines: logBatch });
  logBatch = [];
}

const listeners: { proxy: TCPSocketListener<ClientConn> | null; cache: TCPSocketListener<ClientConn> | null } = {
  proxy: null,
  cache: null,
};
const bound = { proxy: 0, cache: 0 };
let timers: ReturnType<typeof setInterval>[] = [];

function listen(kind: "proxy" | "cache", hostname: string, port: number) {
  const handlers = kind === "proxy" ? listener.proxyHandlers : listener.cacheHandlers;
  // reusePort spreads agents across workers (Linux); bun-types does not declare it on the TCP options yet.
  const opts: Bun.TCPSocketListenOptions<ClientConn> & { reusePort: boolean } = { hostname, port, reusePort: true, allowHalfOpen: true, socket: handlers };
  return Bun.listen<ClientConn>(opts);
}

/** Bind what the config asks for; a port that changed gets a new listener, the old one stops accepting only. */
function applyPorts(ports: { proxy: number; cache: number }) {
  const c = rt.config;
  if (!listeners.proxy || bound.proxy !== ports.proxy) {
    const next = listen("proxy", c.proxy.listen, ports.proxy);
    listeners.proxy?.stop(false);
    listeners.proxy = next;
    bound.proxy = ports.proxy;
  }
  if (c.cache.enabled) {
    if (!listeners.cache || bound.cache !== ports.cache) {
      const next = listen("cache", c.cache.listen, ports.cache);
      listeners.cache?.stop(false);
      listeners.cache = next;
      bound.cache = ports.cache;
    }
  } else if (listeners.cache) {
    listeners.cache.stop(false);
    listeners.cache = null;
    bound.cache = 0;
  }
}

function report() {
  const counters = { ...rt.counters, refusals: { ...rt.counters.refusals }, errors: { ...rt.counters.errors }, ...cacheReport(rt) };
  post({
    t: "stats",
    index: rt.index,
    counters,
    proxyIps: [...rt.proxyIps],
    cacheIps: [...rt.cacheIps],
    rss: undefined,
    cacheNoSpace: rt.cacheNoSpace ? rt.cacheNoSpace.needed : null,
    platformSeen: [...rt.platformSeen],
  });
  rt.proxyIps.clear();
  rt.cacheIps.clear();
  rt.platformSeen.clear();
}

self.onmessage = async (ev: MessageEvent) => {
  const { msg, admission } = ev.data as { msg: Uint8Array; admission?: SharedArrayBuffer };
  const m = decode<SupervisorToWorker>(msg);
  switch (m.t) {
    case "init": {
      rt = makeRuntime(m, admission);
      shareWriteCount(rt.admission, STORE_WRITES_SLOT); // before any store opens: hits see every write in the process
      listener = makeListener(rt);
      try {
        await applyCache(m.config, m.ca);
        applyPorts(m.ports);
      } catch (e) {
        post({ t: "listen-error", index: m.index, message: (e as Error).message });
        return;
      }
      timers.push(setInterval(() => listener.sweep(rt.now()), 1000));
      timers.push(setInterval(report, 1000));
      timers.push(setInterval(flushLogs, 100));
      post({ t: "ready", index: rt.index, ports: { ...bound } });
      return;
    }
    case "config": {
      setConfig(m.config);
      try {
        await applyCache(m.config, m.ca);
        applyPorts(m.ports);
        post({ t: "config-applied", index: rt.index, gen: m.gen }); // the supervisor answers "applied" only after this
      } catch (e) {
        log("error", "listen failed after config change", { error: (e as Error).message });
        post({ t: "config-applied", index: rt.index, gen: m.gen, error: (e as Error).message });
      }
      return;
    }
    case "health":
      rt.health = m.health; // conn-session reads it for /healthz and fail fast
      return;
    case "fleet":
      rt.share = m.share; // the live sharers: a miss asks its key's owner (workers/peer-fill.ts)
      return;
    case "drain": {
      listeners.proxy?.stop(false);
      listeners.cache?.stop(false);
      listener.startDrain();
      report();
      flushLogs();
      return;
    }
    case "prefill":
      // warm the cache through the cache port's own story; progress snapshots go back as they come
      void runPrefill(rt, m.urls, m.concurrency, (items, finished) => post({ t: "prefill-progress", index: rt.index, job: m.job, items, finished }));
      return;
    case "crash":
      // The restart path must be exercised for real: an uncaught error, like a bug would cause.
      setTimeout(() => {
        throw new Error(`worker ${rt.index} crashed on request`);
      }, 0);
      return;
    case "stop": {
      listener.closeAll("shutdown");
      listeners.proxy?.stop(true);
      listeners.cache?.stop(true);
      report();
      flushLogs();
      for (const t of timers) clearInterval(t);
      post({ t: "drained", index: rt.index });
      return;
    }
    default: {
      const never: never = m;
      throw new Error(`unknown message ${(never as { t: string }).t}`);
    }
  }
};
