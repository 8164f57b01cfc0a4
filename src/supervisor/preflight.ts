/**
 * @module Can this config be applied here, now? The checks `parseConfig` cannot make because they need the machine:
 * every port the change would bind is free and permitted, and every file it names exists and can be read. They run
 * before a change is applied (admin API, reload) and at start, so that a port another process holds is refused with
 * its key instead of "saved and applied" while the old port keeps listening, and a missing `tls.upstream_ca` is an
 * error at start (exit 78) instead of a 502 on every request later.
 */
import { accessSync, constants, statSync } from "node:fs";
import type { Config } from "../core/config";
import { ConfigError } from "../core/errors";
import type { ServicePorts } from "../admin/deps";
import { readPeerCa } from "../fleet/peer-ca";

/** What is bound now (none at start): ports that stay the same are held by our own workers and are not probed. */
export type Running = { config: Config; ports: ServicePorts & { admin?: number } };

/** Bind and release at once: the kernel's answer is the truth about "in use" and "permitted" (bind(2) EADDRINUSE / EACCES). */
export function probeBind(hostname: string, port: number): null | string {
  try {
    const l = Bun.listen({ hostname, port, socket: { data() {} } });
    l.stop(true);
    return null;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === "EADDRINUSE") return `port ${port} on ${hostname} is in use by another process`;
    if (code === "EACCES" || code === "EPERM")
      return `port ${port} on ${hostname} is not permitted: ports below 1024 need root or CAP_NET_BIND_SERVICE`;
    if (code === "EADDRNOTAVAIL") return `${hostname} is not an address of this machine`;
    return `cannot listen on ${hostname}:${port}: ${(e as Error).message}`;
  }
}

function checkPorts(next: Config, running: Running | null) {
  const want: [string, "proxy" | "cache" | "admin", boolean][] = [
    ["proxy.port", "proxy", true],
    ["cache.port", "cache", next.cache.enabled],
    ["admin.port", "admin", true],
  ];
  for (const [key, name, used] of want) {
    if (!used) continue;
    const sec = next[name];
    if (sec.port === 0) continue; // "any free port" (tests): chosen when bound
    if (running) {
      const was = running.config[name];
      const wasOn = name !== "cache" || running.config.cache.enabled;
      // unchanged: our own listeners hold it (the admin port is bound once; a change to it applies at the next start)
      if (wasOn && was.port === sec.port && was.listen === sec.listen) continue;
      if (name !== "admin" && running.ports[name] === sec.port && was.listen === sec.listen && wasOn) continue;
    }
    const why = probeBind(sec.listen, sec.port);
    if (why) throw new ConfigError(key, why);
  }
  // HAProxy's agent-check listens on the proxy port's address (agent-check.ts): a port another process holds is
  // refused like the others, not only logged while HAProxy's checks go to that other process.
  const ac = next.admin.agent_check_port;
  if (ac !== null && ac !== 0) {
    const was = running?.config;
    if (was && was.admin.agent_check_port === ac && was.proxy.listen === next.proxy.listen) return; // ours already
    const why = probeBind(next.proxy.listen, ac);
    if (why) throw new ConfigError("admin.agent_check_port", why);
  }
}

/** A file the config names: it exists, is a regular file and can be read by this process. */
export function checkReadableFile(key: string, path: string) {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new ConfigError(key, `${path} does not exist`);
  }
  if (!st.isFile()) throw new ConfigError(key, `${path} is not a file`);
  try {
    accessSync(path, constants.R_OK);
  } catch {
    throw new ConfigError(key, `${path} cannot be read by this process (uid ${process.getuid?.() ?? "?"}): check its permissions`);
  }
}

/** Every file the config names exists, can be read, and (`fleet.peer_ca`) holds what it must. */
export function checkConfigFiles(c: Config) {
  if (c.tls.upstream_ca) checkReadableFile("tls.upstream_ca", c.tls.upstream_ca);
  if (c.fleet.peer_ca) readPeerCa("fleet.peer_ca", c.fleet.peer_ca);
  if (c.tls.ca !== "appliance") {
    if (c.tls.ca_cert) checkReadableFile("tls.ca_cert", c.tls.ca_cert);
    if (c.tls.ca_key) checkReadableFile("tls.ca_key", c.tls.ca_key);
    if (c.tls.ca_chain) checkReadableFile("tls.ca_chain", c.tls.ca_chain);
  }
}

/** Throws a ConfigError naming the first key that cannot be applied, and why. */
export function checkApplicable(next: Config, running: Running | null) {
  checkConfigFiles(next);
  checkPorts(next, running);
}
