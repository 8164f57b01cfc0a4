/**
 * @module HAProxy's agent-check on `[admin] agent_check_port` (off when unset): HAProxy connects, reads one line and
 * the connection closes (HAProxy configuration manual, "agent-check"). The line comes from core/health.ts
 * `agentCheckReply`: `up ready N%` with the weight from load (open connections against `proxy.max_connections`),
 * `drain`, `maint`, or `down#reason`. It listens on the proxy port's address: the load balancer that reaches the
 * agent ports reaches this one. It says only what /healthz says, so it needs no token.
 */
import type { TCPSocketListener } from "bun";
import type { Config } from "../core/config";
import { type HealthDecision, agentCheckReply } from "../core/health";
import { log } from "../log";

export type AgentCheck = { readonly port: number | null; apply(c: Config): void; stop(): void };

export function startAgentCheck(getConfig: () => Config, decide: () => HealthDecision, openConnections: () => number): AgentCheck {
  let server: TCPSocketListener<undefined> | null = null;
  let bound: { port: number; host: string } | null = null;
  const handlers = {
    open(s: import("bun").Socket<undefined>) {
      const c = getConfig();
      s.end(agentCheckReply(decide(), { open: openConnections(), max: c.proxy.max_connections }));
    },
    data() {},
    error() {},
  };
  const api: AgentCheck = {
    get port() {
      return bound?.port ?? null;
    },
    apply(c: Config) {
      const want = c.admin.agent_check_port;
      if (bound && want === bound.port && c.proxy.listen === bound.host) return;
      server?.stop(true);
      server = null;
      bound = null;
      if (want === null) return;
      try {
        server = Bun.listen({ hostname: c.proxy.listen, port: want, socket: handlers });
        bound = { port: want, host: c.proxy.listen };
        log("info", "agent-check listening", { port: want, listen: c.proxy.listen });
      } catch (e) {
        log("error", "agent-check cannot listen", { port: want, error: (e as Error).message });
      }
    },
    stop() {
      server?.stop(true);
      server = null;
      bound = null;
    },
  };
  api.apply(getConfig());
  return api;
}
