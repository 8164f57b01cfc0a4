/**
 * @module The CA as agents download it (core/ca-page.ts `AgentCa`), made from the supervisor's `CaPems`: DER,
 * SHA-256 fingerprint, the Windows package, and the next CA of a rollover. Made once per CA (the worker and the
 * management port keep the last one and remake it only when the PEMs change), never per request.
 */
import { createHash } from "node:crypto";
import type { AgentCa, AgentCaCert, AgentCaMsi } from "../core/ca-page";
import { derOfPem, type CaPems } from "./ca-store";

function makeCert(pem: string, commonName: string, notAfter: number, msi: AgentCaMsi | undefined): AgentCaCert {
  const der = derOfPem(pem);
  const hex = createHash("sha256").update(der).digest("hex").toUpperCase();
  return { pem: new TextEncoder().encode(pem), der, sha256: hex.match(/../g)!.join(":"), commonName, notAfter, msi };
}

export function makeAgentCa(ca: CaPems): AgentCa {
  const n = ca.next ?? null;
  return {
    ...makeCert(ca.rootPem, ca.commonName, ca.notAfter, ca.msi),
    next: n ? makeCert(n.rootPem, n.commonName, n.notAfter, n.msi) : null,
  };
}

/** What decides whether a remade AgentCa would differ: the PEMs and whether each has a package. */
export function agentCaKey(ca: CaPems | null): string {
  if (!ca) return "";
  const m = (x: AgentCaMsi | undefined) => (x === undefined ? "-" : "bytes" in x ? `msi:${x.bytes.byteLength}` : `no:${x.unavailable}`);
  return `${ca.rootPem}|${m(ca.msi)}|${ca.next ? `${ca.next.id}|${ca.next.rootPem}|${m(ca.next.msi)}` : ""}`;
}

/** One cached AgentCa for a caller that holds a changing `CaPems` (the management port). */
export function makeAgentCaCache(): (ca: CaPems | null) => AgentCa | null {
  let key: string | null = null;
  let value: AgentCa | null = null;
  return (ca) => {
    const k = agentCaKey(ca);
    if (k !== key) {
      key = k;
      value = ca ? makeAgentCa(ca) : null;
    }
    return value;
  };
}
