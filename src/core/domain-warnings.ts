/**
 * @module Warnings (not refusals) about `cache.allowed_domains` (issue 11, "Certificates"): an entry that starts
 * with `www.` (it matches that host and its subdomains only, not the bare domain the admin most likely meant), and
 * an entry that is already a platform domain, or lies inside one. Policy (core/policy.ts) matches on a label
 * boundary and the longest listed domain wins, with the very same domain in both lists counting as platform: so
 * an equal entry changes nothing, and an entry inside a platform domain takes that host out of the cache (it is
 * tunnelled untouched). Pure; the admin API returns these beside a saved config. Domains come normalised
 * (config.ts normalizeDomain: lower case, no trailing dot).
 */

/** `d` is `parent` or one of its subdomains, on a label boundary (`evilqualys.com` is not inside `qualys.com`). */
const within = (d: string, parent: string) => d === parent || d.endsWith(`.${parent}`);

export function allowedDomainWarnings(allowed: readonly string[], platform: readonly string[]): string[] {
  const out: string[] = [];
  allowed.forEach((d, i) => {
    const key = `cache.allowed_domains[${i}]`;
    if (d.startsWith("www.") && d.length > 4)
      out.push(`${key}: "${d}" starts with www.: it allows ${d} and its subdomains only, not ${d.slice(4)}; write ${d.slice(4)} to allow the whole domain`);
    // the most specific platform domain that holds it, as policy would pick
    const holder = platform.filter((p) => within(d, p)).sort((a, b) => b.length - a.length)[0];
    if (holder === d) out.push(`${key}: "${d}" is already a platform domain: this entry changes nothing (platform domains are allowed, and cached on the cache port)`);
    else if (holder !== undefined)
      out.push(`${key}: "${d}" lies inside the platform domain ${holder}, which is already allowed: listing it here makes the cache port tunnel ${d} untouched instead of caching it`);
  });
  return out;
}
