/**
 * @module Worker thread entry: on init, listen on the proxy port (and the cache port when cache mode is on)
 * with reusePort so the kernel spreads agents across workers; report counters every second; follow config
 * pushes (re-listening only when a port changes, so established tunnels stay up); drain on request.
 */
import type { TCPSocketListener } from "bun";
import { type SupervisorToWorker, type WorkerToSupervisor, decode, encode } from "./protocol";
import { type ClientConn, cacheHandlers, closeAll, proxyHandlers, rt, setConfig, startDrain, sweep } from "./listener";
import { log, setLogSink } from "../log";
import { leafMints, setTlsConfig } from "./intercept";
import { originReuses } from "./origin-client";
import { onIntercept } from "./cache-port";
import type { CaPems } from "../store/ca-store";
import type { Config } from "../core/config";
import { cacheCounters, closeCacheStore, openCacheStore, serveCacheable } from "./fill";
import { closePatchStore, openPatchStore, patchCounters } from "./patch";
import { setCacheLayer } from "./http-session";

let bootId = "";

/** Cache mode: the active CA for leaves, and the interception entry point on the cache port. */
async function applyCache(config: Config, ca: CaPems | null) {
  if (config.cache.enabled && ca) {
    await setTlsConfig(ca, config.cache.min_tls, config.gateway.data_dir);
    openCacheStore(config, rt.index, bootId);
    if (config.patch.enabled) openPatchStore(config, rt.index, bootId);
    else closePatchStore();
    setCacheLayer(serveCacheable);
    rt.onIntercept = onIntercept;
  } else {
    // Cache mode off (or reset): release the stores so their directories can be removed or reused.
    rt.onIntercept = null;
    closeCacheStore();
    closePatchStore();
  }
}

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
  const handlers = kind === "proxy" ? proxyHandlers : cacheHandlers;
  const l = Bun.listen<ClientConn>({ hostname, port, reusePort: true, allowHalfOpen: true, socket: handlers } as Parameters<
    typeof Bun.listen<ClientConn>
  >[0]);
  return l;
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
  const counters = { ...rt.counters, refusals: { ...rt.counters.refusals }, errors: { ...rt.counters.errors }, cache: { ...cacheCounters(), leaf_mints: leafMints(), origin_reuses: originReuses() }, patch: JSON.parse(JSON.stringify(patchCounters())) };
  post({
    t: "stats",
    index: rt.index,
    counters,
    proxyIps: [...rt.proxyIps],
    cacheIps: [...rt.cacheIps],
    rss: undefined,
  });
  rt.proxyIps.clear();
  rt.cacheIps.clear();
}

self.onmessage = async (ev: MessageEvent) => {
  const { msg, admission } = ev.data as { msg: Uint8Array; admission?: SharedArrayBuffer };
  const m = decode<SupervisorToWorker>(msg);
  switch (m.t) {
    case "init": {
      rt.index = m.index;
      bootId = m.bootId;
      if (admission) rt.admission = new Int32Array(admission);
      setConfig(m.config);
      try {
        await applyCache(m.config, m.ca);
        applyPorts(m.ports);
      } catch (e) {
        post({ t: "listen-error", index: m.index, message: (e as Error).message });
        return;
      }
      timers.push(setInterval(() => sweep(Date.now()), 1000));
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
      } catch (e) {
        log("error", "listen failed after config change", { error: (e as Error).message });
      }
      return;
    }
    case "drain": {
      listeners.proxy?.stop(false);
      listeners.cache?.stop(false);
      startDrain();
      report();
      flushLogs();
      return;
    }
    case "crash":
      // The restart path must be exercised for real: an uncaught error, like a bug would cause.
      setTimeout(() => {
        throw new Error(`worker ${rt.index} crashed on request`);
      }, 0);
      return;
    case "stop": {
      closeAll("shutdown");
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
