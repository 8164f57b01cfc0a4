/** @module Plain data shared across core: targets, clients, verdicts. No behaviour. */

/** Where a client asked to go. `host` is lower-case, without a trailing dot, IPv6 without brackets. */
export type Target = {
  host: string;
  port: number;
  /** true when host is an IP literal (v4 or v6) */
  isIp: boolean;
};

export type ClientInfo = {
  ip: string;
  port: "proxy" | "cache";
  userAgent?: string;
};

export type VerdictAction = "tunnel" | "intercept" | "deny";

/** Every decision carries the rule that made it (STYLE §9). */
export type Verdict = {
  action: VerdictAction;
  rule: string;
  /** for deny: one line a person can act on */
  reason?: string;
  /** an address the admin mapped the name to in [hosts] */
  mappedIp?: string;
  /** true when the request may be cached (platform domains in cache mode) */
  cacheable?: boolean;
};
