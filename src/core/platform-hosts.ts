/**
 * @module The platform hosts of a pod: what the diagnostics and the platform link probe, and nothing more.
 *
 * DESIGN.md "Connection security": platform hosts follow `{qagpublic,camspublic,camspm,camsrepo,cask}.<pod>`, with
 * the pod written as its apps domain (`qg1.apps.qualys.com`). Not every pod has every host (issue 11: US4 and KSA1
 * have no `cask`), so a probe of a host the pod does not have would report a failure that is not one. Pure: a table
 * and a lookup; a pod this table does not know (a private or test pod) gets the whole pattern.
 */
import type { Config } from "./config";

/** DESIGN.md: every host a pod may have, in the order the dashboard lists them. */
export const PLATFORM_HOST_PREFIXES = ["qagpublic", "camspublic", "camspm", "camsrepo", "cask"] as const;
export type PlatformHostPrefix = (typeof PLATFORM_HOST_PREFIXES)[number];

const ALL: readonly PlatformHostPrefix[] = PLATFORM_HOST_PREFIXES;
const NO_CASK: readonly PlatformHostPrefix[] = PLATFORM_HOST_PREFIXES.filter((p) => p !== "cask");

/** The known pods: name → apps domain and the hosts it has (issue 11: US4 and KSA1 have no `cask`). */
export const PODS: Readonly<Record<string, { domain: string; hosts: readonly PlatformHostPrefix[] }>> = {
  US1: { domain: "qg1.apps.qualys.com", hosts: ALL },
  US2: { domain: "qg2.apps.qualys.com", hosts: ALL },
  US3: { domain: "qg3.apps.qualys.com", hosts: ALL },
  US4: { domain: "qg4.apps.qualys.com", hosts: NO_CASK },
  EU1: { domain: "qg1.apps.qualys.eu", hosts: ALL },
  EU2: { domain: "qg2.apps.qualys.eu", hosts: ALL },
  IN1: { domain: "qg1.apps.qualys.in", hosts: ALL },
  CA1: { domain: "qg1.apps.qualys.ca", hosts: ALL },
  AE1: { domain: "qg1.apps.qualys.ae", hosts: ALL },
  UK1: { domain: "qg1.apps.qualys.co.uk", hosts: ALL },
  AU1: { domain: "qg1.apps.qualys.com.au", hosts: ALL },
  KSA1: { domain: "qg1.apps.qualysksa.com", hosts: NO_CASK },
};

const BY_DOMAIN: ReadonlyMap<string, readonly PlatformHostPrefix[]> = new Map(Object.values(PODS).map((p) => [p.domain, p.hosts]));

/** The host prefixes the pod has: its row in PODS, or the whole pattern for a pod the table does not know. */
export function podHostPrefixes(pod: string): readonly PlatformHostPrefix[] {
  return BY_DOMAIN.get(pod.toLowerCase()) ?? ALL;
}

/** The port platform hosts are probed on: 443 when the destinations allow it, else the first allowed port. */
export function platformPort(config: Config): number {
  return config.destinations.ports.includes(443) ? 443 : config.destinations.ports[0]!;
}

/** The hosts the configured `[platform] pod` has, each with the port to probe. */
export function podHosts(config: Config): { host: string; port: number }[] {
  const port = platformPort(config);
  return podHostPrefixes(config.platform.pod).map((p) => ({ host: `${p}.${config.platform.pod}`, port }));
}
