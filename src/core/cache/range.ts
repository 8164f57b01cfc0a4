/**
 * @module Byte ranges (RFC 9110 §14): the Range a client asked for, the Content-Range an origin answered, and
 * If-Range. Pure. Only single ranges are served as 206; a multi-range request is answered with the whole object
 * (RFC 9110 §14.2 lets a server ignore Range).
 */

export type ByteRange = { start: number; end: number }; // inclusive

/**
 * Resolve a Range header against an object of `size` bytes: a range, "unsatisfiable" (→ 416), or null when the
 * header is absent, not bytes, malformed or multi-range (→ serve the whole object).
 */
export function parseRange(header: string | undefined, size: number): ByteRange | "unsatisfiable" | null {
  if (!header) return null;
  const m = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!m) return null;
  const specs = m[1]!.split(",").map((s) => s.trim()).filter(Boolean);
  if (specs.length !== 1) return null;
  const spec = specs[0]!;
  const r = /^(\d*)\s*-\s*(\d*)$/.exec(spec);
  if (!r || (r[1] === "" && r[2] === "")) return null;
  if (r[1] === "") {
    // suffix: the last N bytes (§14.1.2)
    const n = Number(r[2]);
    if (n === 0) return "unsatisfiable";
    return size === 0 ? "unsatisfiable" : { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(r[1]);
  let end = r[2] === "" ? Number.MAX_SAFE_INTEGER : Number(r[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return null;
  if (start >= size) return "unsatisfiable";
  if (end >= size) end = size - 1;
  return { start, end };
}

/** "bytes 0-99/1234" → { start, end, total }; total null for "*"; null when malformed. */
export function parseContentRange(v: string | undefined): { start: number; end: number; total: number | null } | null {
  if (!v) return null;
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(v);
  if (!m) return null;
  const start = Number(m[1]), end = Number(m[2]);
  const total = m[3] === "*" ? null : Number(m[3]);
  // RFC 9110 §14.4: "A Content-Range field value is invalid if it contains a range-resp that has a last-pos value
  // less than its first-pos value, or a complete-length value less than or equal to its last-pos value." Numbers
  // past 2^53 cannot be held exactly, so an offset computed from them could land anywhere: malformed too.
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return null;
  if (total !== null && (!Number.isSafeInteger(total) || total <= end)) return null;
  return { start, end, total };
}

/** A strong entity tag (no W/ prefix), usable to tie byte ranges of one representation together (§8.8.3). */
export function strongEtag(etag: string | undefined): string | null {
  if (!etag) return null;
  const t = etag.trim();
  return /^"[^"]*"$/.test(t) ? t : null;
}

/**
 * If-Range (§13.1.5): the Range applies only when the validator matches the current representation — a strong
 * ETag compared strongly, or an HTTP-date equal to Last-Modified.
 */
export function ifRangeMatches(ifRange: string | undefined, etag: string | null, lastModified: string | null): boolean {
  if (ifRange === undefined) return true;
  const v = ifRange.trim();
  if (v.startsWith('"') || v.startsWith("W/")) return etag !== null && v === etag && !v.startsWith("W/");
  return lastModified !== null && v === lastModified.trim();
}

/** The slice indexes covering [start, end] for slices of `slice` bytes. */
export function slicesFor(r: ByteRange, slice: number): { first: number; last: number } {
  return { first: Math.floor(r.start / slice), last: Math.floor(r.end / slice) };
}
