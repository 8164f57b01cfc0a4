/**
 * @module What of a request target may go into a log line (issue 12: "no secret ever logged"). Agents' URLs carry
 * credentials in two places a log must not keep: the query (signed URLs, `?token=…`, `?sig=…`) and the userinfo of an
 * absolute-form target (`http://user:password@host/`, RFC 3986 §3.2.1, deprecated by RFC 9110 §4.2.4 but still sent).
 * Like Squid's `strip_query_terms on` (its default), query values are dropped; unlike it the names stay, because
 * they say what kind of URL it was. Pure.
 */

/** A query value's stand-in in logs. */
export const REDACTED = "*";

/** `target` (origin-form or absolute-form, any bytes) with userinfo removed and every query value replaced. */
export function logTarget(target: string): string {
  let t = target;
  const scheme = t.indexOf("://");
  if (scheme > 0) {
    // the authority ends at the first "/", "?" or "#" after "//"; an "@" inside it ends the userinfo
    const start = scheme + 3;
    let end = t.length;
    for (const c of ["/", "?", "#"]) {
      const i = t.indexOf(c, start);
      if (i !== -1 && i < end) end = i;
    }
    const at = t.lastIndexOf("@", end - 1);
    if (at >= start) t = t.slice(0, start) + t.slice(at + 1);
  }
  const q = t.indexOf("?");
  if (q === -1) return t;
  const hash = t.indexOf("#", q);
  const query = t.slice(q + 1, hash === -1 ? undefined : hash);
  const names = query.split("&").map((kv) => {
    const eq = kv.indexOf("=");
    if (eq === -1) return kv === "" ? kv : REDACTED; // a bare value (`?SECRET`) is a value, not a name
    return `${kv.slice(0, eq)}=${REDACTED}`;
  });
  return `${t.slice(0, q)}?${names.join("&")}`;
}
