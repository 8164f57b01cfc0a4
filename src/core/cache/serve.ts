/**
 * @module How a stored complete response answers one GET/HEAD (pure): 304 to a matching conditional, 206 / 416 to
 * a byte range, else the whole response — in the order RFC 9110 §13.2.2 evaluates preconditions (If-None-Match,
 * else If-Modified-Since, then If-Range + Range). workers/fill.ts carries the plan out with the stored bytes, and
 * the same rules answer an agent's Range while a fill is still arriving (`planRange` with the Content-Length).
 *
 * Multiple ranges (`bytes=0-1,5-9`): answered with the whole 200 — RFC 9110 §14.2 lets a server ignore Range, and
 * agents fetch one range at a time; multipart/byteranges would only add a format nobody here reads.
 */
import { type Headers, getAll, parseHttpDate } from "./freshness";
import { type ByteRange, ifRangeMatches, parseRange, strongEtag } from "./range";

export type ServePlan =
  /** RFC 9110 §15.4.5: 304 with these headers (no body) */
  | { do: "notModified"; headers: Headers }
  /** RFC 9110 §15.3.7: 206 with `Content-Range: bytes start-end/size` */
  | { do: "partial"; range: ByteRange; contentRange: string }
  /** RFC 9110 §15.5.17: 416 with `Content-Range: bytes *\/size` */
  | { do: "unsatisfiable"; contentRange: string }
  | { do: "whole" };

const first = (h: Headers, name: string): string | undefined => getAll(h, name)[0];
const isWs = (c: string) => c === " " || c === "\t";

/**
 * RFC 9110 §15.4.5: a 304 carries Content-Location, Date, ETag, Vary, Cache-Control and Expires as a 200 would,
 * and no other representation metadata — except Last-Modified when there is no ETag ("useful if the response does
 * not have an ETag field"). The caller adds Age (RFC 9111 §5.1) and Cache-Status.
 */
const NOT_MODIFIED_FIELDS = new Set(["content-location", "date", "etag", "vary", "cache-control", "expires"]);
export function makeNotModifiedHeaders(stored: Headers): Headers {
  const hasEtag = first(stored, "etag") !== undefined;
  return stored.filter(([k]) => {
    const l = k.toLowerCase();
    return NOT_MODIFIED_FIELDS.has(l) || (!hasEtag && l === "last-modified");
  });
}

/**
 * RFC 9110 §14.2, §13.1.5: the range of a `status` response of `size` bytes this request gets. Range applies to
 * GET of a 200 only; If-Range that does not match the stored validators means "send it all".
 */
export function planRange(method: string, reqHeaders: Headers, status: number, stored: Headers, size: number): Exclude<ServePlan, { do: "notModified" }> {
  if (method !== "GET" || status !== 200) return { do: "whole" };
  const range = getAll(reqHeaders, "range");
  if (range.length !== 1) return { do: "whole" }; // none, or two Range lines (malformed: ignored, §14.2)
  const r = parseRange(range[0], size);
  if (r === null) return { do: "whole" };
  const ifRange = first(reqHeaders, "if-range");
  if (!ifRangeMatches(ifRange, strongEtag(first(stored, "etag")), first(stored, "last-modified") ?? null)) return { do: "whole" };
  if (r === "unsatisfiable") return { do: "unsatisfiable", contentRange: `bytes */${size}` };
  return { do: "partial", range: r, contentRange: `bytes ${r.start}-${r.end}/${size}` };
}

/** The whole order for a stored response: conditionals first (RFC 9110 §13.2.2 steps 3–4), then Range (step 5). */
export function planServe(method: string, reqHeaders: Headers, status: number, stored: Headers, size: number): ServePlan {
  if (answerConditional(reqHeaders, stored, status) === 304) return { do: "notModified", headers: makeNotModifiedHeaders(stored) };
  return planRange(method, reqHeaders, status, stored, size);
}

// ───────────────────────────── the agent's own conditionals (RFC 9110 §13) ─────────────────────────────

/** Entity tags of an If-None-Match value; `*` stays `*`. Commas inside a quoted tag do not split (RFC 9110 §8.8.3). */
function parseEntityTags(v: string): string[] {
  const out: string[] = [];
  let i = 0;
  const n = v.length;
  while (i < n) {
    while (i < n && (isWs(v[i]!) || v[i] === ",")) i++;
    if (i >= n) break;
    const start = i;
    if (v.startsWith("W/", i)) i += 2;
    if (v[i] === '"') {
      i++;
      while (i < n && v[i] !== '"') i++;
      i++;
    } else {
      while (i < n && v[i] !== ",") i++;
    }
    out.push(v.slice(start, i).trim());
  }
  return out;
}

/** RFC 9110 §8.8.3.2 weak comparison: opaque tags equal, W/ ignored on both sides. */
function weakMatch(a: string, b: string): boolean {
  const strip = (t: string) => (t.startsWith("W/") ? t.slice(2) : t);
  return strip(a) === strip(b);
}

/**
 * Answer an agent's conditional GET/HEAD from a stored response (RFC 9111 §4.3.2, RFC 9110 §13.1–13.2):
 * If-None-Match (weak comparison, `*`, lists) decides when present; otherwise If-Modified-Since is compared with
 * Last-Modified, or with Date when there is none (§4.3.2). 304 when the stored response matches, else null (send
 * the full response). Preconditions are ignored for a stored status outside 2xx (RFC 9110 §13.2.1). The caller only
 * asks for GET and HEAD: for other methods If-None-Match means 412, which is the origin's call.
 */
export function answerConditional(reqHeaders: Headers, stored: Headers, storedStatus = 200): 304 | null {
  if (storedStatus < 200 || storedStatus > 299) return null;
  const inm = getAll(reqHeaders, "if-none-match");
  if (inm.length > 0) {
    const tags = inm.flatMap(parseEntityTags);
    if (tags.includes("*")) return 304;
    const etag = first(stored, "etag")?.trim();
    if (etag === undefined || etag === "") return null;
    return tags.some((t) => weakMatch(t, etag)) ? 304 : null;
  }
  const ims = parseHttpDate(first(reqHeaders, "if-modified-since"));
  if (ims === null) return null; // RFC 9110 §13.1.3: an invalid date is ignored
  const lm = parseHttpDate(first(stored, "last-modified")) ?? parseHttpDate(first(stored, "date"));
  if (lm === null) return null;
  return lm <= ims ? 304 : null;
}
