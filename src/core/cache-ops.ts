/**
 * @module The admin's operations on the cache, as plain data and pure rules: which stored objects a purge names
 * (`PurgeSelector`, `matchesPurge`), what a prefill job looks like (`PrefillJob`), what the usage report holds
 * (`CacheUsage`), and the checks of the API's request bodies (`parsePurgeBody`, `parsePrefillBody`) — one place, so
 * the API, the CLI and the dashboard refuse the same inputs with the same words. Pure: no clock, no I/O.
 */
import { normaliseUrl } from "./cache/key";

/** What a purge removes: one URL (every variant, GET and HEAD share it), one host, a URL prefix, or everything. */
export type PurgeSelector = { url: string } | { host: string } | { prefix: string } | { all: true };

/** What a purge removed: stored objects (variants and patch slices count one each) and their blob bytes. */
export type PurgeResult = { objects: number; bytes: number };

export type PrefillItemState = "queued" | "running" | "done" | "failed";

export type PrefillItem = {
  url: string;
  state: PrefillItemState;
  /** body bytes received so far */
  bytes: number;
  /** the status the cache port answered (0 before the head) */
  status: number;
  /** whether the object is in the store afterwards (a `no-store` answer is done but not stored) */
  stored: boolean;
  /** why it failed, for a person */
  error: string | null;
};

export type PrefillJob = {
  id: string;
  created: string;
  /** the worker that runs it */
  worker: number;
  finished: boolean;
  done: number;
  failed: number;
  bytes: number;
  items: PrefillItem[];
};

export type ObjectUsage = { url: string; size: number; hits: number; bytes_served: number };
export type HostUsage = { host: string; hits: number; misses: number; bypass: number; hit_ratio: number | null };

/** GET /api/cache: what the store holds and how it is used. */
export type CacheUsage = {
  enabled: boolean;
  /** the store's directory: `<patch volume>/agate-patch` when [patch] volume is set and usable, else `<data_dir>/cache` */
  dir: string | null;
  location: "patch-volume" | "data-dir" | null;
  entries: number;
  bytes: number;
  capacity: number;
  evictions: { objects: number; bytes: number };
  largest: ObjectUsage[];
  most_served: ObjectUsage[];
  by_host: HostUsage[];
};

/** Most URLs one prefill job takes (a rollout's artifacts, not a crawl). */
export const PREFILL_MAX_URLS = 1000;
/** URLs one worker fetches at a time for a job. */
export const PREFILL_CONCURRENCY = 4;
/** Per-host counters kept by a worker; the rest is counted as "(other)". */
export const MAX_HOSTS = 200;

export type BodyCheck<T> = { ok: true; value: T } | { ok: false; error: string; field: string };

const isObj = (b: unknown): b is Record<string, unknown> => typeof b === "object" && b !== null && !Array.isArray(b);

function httpsUrl(v: unknown, field: string): BodyCheck<string> {
  if (typeof v !== "string" || v === "") return { ok: false, field, error: `${field}: expected an absolute https:// URL, got ${JSON.stringify(v ?? null)}` };
  let norm: string;
  try {
    norm = normaliseUrl(v);
  } catch {
    return { ok: false, field, error: `${field}: not an absolute URL: ${JSON.stringify(v.slice(0, 200))}` };
  }
  // TODO: http:// objects (patch mode's plain-http vendors) — prefill only reaches them once the story accepts a
  // synthetic absolute-form request without a client address to check.
  if (!norm.startsWith("https://")) return { ok: false, field, error: `${field}: only https:// URLs are cached through interception, got ${JSON.stringify(v.slice(0, 200))}` };
  return { ok: true, value: norm };
}

/** `{"url"}`, `{"host"}`, `{"prefix"}` or `{"all": true}`: exactly one. */
export function parsePurgeBody(b: unknown): BodyCheck<PurgeSelector> {
  const hint = 'send one of {"url": "https://host/path?query"}, {"host": "host"}, {"prefix": "https://host/path/"}, {"all": true}';
  if (!isObj(b)) return { ok: false, field: "body", error: `expected a JSON object: ${hint}` };
  const keys = Object.keys(b).filter((k) => b[k] !== undefined);
  const known: string[] = keys.filter((k) => k === "url" || k === "host" || k === "prefix" || k === "all");
  if (known.length !== 1 || keys.length !== 1) return { ok: false, field: keys.find((k) => !known.includes(k)) ?? "body", error: `exactly one selector: ${hint}` };
  const k = known[0]!;
  if (k === "all") return b.all === true ? { ok: true, value: { all: true } } : { ok: false, field: "all", error: `all: expected true, got ${JSON.stringify(b.all)}` };
  if (k === "host") {
    // the default ports are dropped from keys (normaliseUrl), so "host:443" means "host"
    const h = typeof b.host === "string" ? b.host.trim().toLowerCase().replace(/\.$/, "").replace(/:(443|80)$/, "") : "";
    // a host name or host:port, nothing that looks like a URL (a common slip: {"host": "https://x/"})
    if (!/^[a-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$/.test(h))
      return { ok: false, field: "host", error: `host: expected a host name such as "download.example.com" (no scheme, no path), got ${JSON.stringify(b.host ?? null)}` };
    return { ok: true, value: { host: h } };
  }
  const u = httpsUrl(b[k], k);
  if (!u.ok) return u;
  return { ok: true, value: k === "url" ? { url: u.value } : { prefix: u.value } };
}

/** `{"urls": [...]}`: 1 to PREFILL_MAX_URLS https URLs, normalised and deduplicated in order. */
export function parsePrefillBody(b: unknown): BodyCheck<string[]> {
  if (!isObj(b) || !Array.isArray(b.urls)) return { ok: false, field: "urls", error: 'expected {"urls": ["https://host/path", …]}' };
  if (b.urls.length === 0) return { ok: false, field: "urls", error: "urls: give at least one URL" };
  if (b.urls.length > PREFILL_MAX_URLS) return { ok: false, field: "urls", error: `urls: at most ${PREFILL_MAX_URLS} per job, got ${b.urls.length}` };
  const out: string[] = [];
  for (let i = 0; i < b.urls.length; i++) {
    const u = httpsUrl(b.urls[i], `urls[${i}]`);
    if (!u.ok) return u;
    if (!out.includes(u.value)) out.push(u.value);
  }
  return { ok: true, value: out };
}

/** The selector in key form (`normaliseUrl`; host lower-case, default port dropped); throws PX_BAD_REQUEST for a bad URL. */
export function normalisePurge(sel: PurgeSelector): PurgeSelector {
  if ("url" in sel) return { url: normaliseUrl(sel.url) };
  if ("prefix" in sel) return { prefix: normaliseUrl(sel.prefix) };
  if ("host" in sel) return { host: sel.host.toLowerCase().replace(/\.$/, "").replace(/:(443|80)$/, "") };
  return sel;
}

/**
 * Whether the stored object whose URL is `storedUrl` is one the selector (in key form: `normalisePurge`) names. The
 * stored URL is compared in key form too, so `%7e` and `~`, or `:443`, name the same object as the cache key does
 * (RFC 9111 §2).
 * A host without a port names that host on every port.
 */
export function matchesPurge(sel: PurgeSelector, storedUrl: string): boolean {
  if ("all" in sel) return true;
  let norm: string;
  try {
    norm = normaliseUrl(storedUrl);
  } catch {
    return false;
  }
  if ("url" in sel) return norm === sel.url;
  if ("prefix" in sel) return norm.startsWith(sel.prefix);
  const rest = norm.slice(norm.indexOf("//") + 2);
  const authority = rest.slice(0, rest.search(/[/?]|$/));
  if (sel.host.includes(":") && !sel.host.startsWith("[")) return authority === sel.host;
  const host = authority.startsWith("[") ? authority.slice(0, authority.indexOf("]") + 1) : authority.replace(/:\d+$/, "");
  return host === sel.host || authority === sel.host;
}

/** Totals of a job's items. */
export function summariseJob(items: readonly PrefillItem[]): Pick<PrefillJob, "done" | "failed" | "bytes" | "finished"> {
  let done = 0;
  let failed = 0;
  let bytes = 0;
  for (const it of items) {
    if (it.state === "done") done++;
    else if (it.state === "failed") failed++;
    bytes += it.bytes;
  }
  return { done, failed, bytes, finished: done + failed === items.length };
}

/** Host hit ratios from per-host counters, busiest first. */
export function hostUsage(c: Readonly<Record<string, { hits: number; misses: number; bypass: number }>>): HostUsage[] {
  return Object.entries(c)
    .map(([host, v]) => ({ host, hits: v.hits, misses: v.misses, bypass: v.bypass, hit_ratio: v.hits + v.misses > 0 ? v.hits / (v.hits + v.misses) : null }))
    .sort((a, b) => b.hits + b.misses + b.bypass - (a.hits + a.misses + a.bypass) || (a.host < b.host ? -1 : 1));
}
