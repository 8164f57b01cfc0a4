/**
 * @module Patch mode's cache: vendors' large files, stored on the secondary volume in fixed-size slices (like
 * nginx's slice module). A request — whole or Range — is served slice by slice: each slice comes from the store
 * or from one upstream Range request collapsed across every waiter in every worker, and streams as it arrives.
 * The object's validator (strong ETag, else Last-Modified) is part of every slice's key and is sent upstream
 * with If-Match / If-Unmodified-Since, so a changed object is detected and its old slices are dropped, never mixed
 * with new ones. Objects whose origin does not do ranges (or has no validator) fall back to the whole-object cache.
 * The store, the verified-slice set and the counters live in the WorkerRuntime; fills end with FillOutcome values.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { resolve } from "node:path";
import { patchDir } from "../store/cache/paths";
import { patchBudget } from "../store/patch-volume";
import type { Config } from "../core/config";
import { ProxyError } from "../core/errors";
import { type Headers, getHeader } from "../core/http1/head";
import { type CacheDefaults, CACHE_DEFAULTS, isStorable, makeStoredHeaders, updateStoredHeaders } from "../core/cache/freshness";
import { lookupPhase } from "../core/cache/plan";
import { normaliseUrl } from "../core/cache/key";
import { type ByteRange, ifRangeMatches, parseContentRange, parseRange, strongEtag } from "../core/cache/range";
import { type Entry, FillError, type FillWriter, Store } from "../store/cache/store";
import type { HttpRequest, Responder } from "./http-session";
import type { ExchangeHandle } from "./origin-client";
import type { WorkerRuntime } from "./runtime";
import { claimOrWait, failWith, isLookAgain, toStored } from "./fill";
import { log } from "../log";

/** What the gateway knows about one object version. */
type Meta = {
  url: string;
  etag: string | null;
  lastModified: string | null;
  total: number;
  /** the origin's headers for the whole object (Content-Type, Cache-Control, ETag, Last-Modified …) */
  headers: Headers;
};

const DROP_UP = new Set(["range", "if-range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since"]);
const DROP_DOWN = new Set(["content-length", "content-range", "transfer-encoding", "connection", "keep-alive", "age", "accept-ranges"]);

export type PatchCounters = {
  bytes_fetched: number;
  bytes_served: number;
  slice_hits: number;
  slice_misses: number;
  slice_collapsed: number;
  objects_changed: number;
  fallbacks: number;
  errors: number;
  by_host: Record<string, { fetched: number; served: number }>;
};

/** The worker's patch counters (rt.counters.patch), created on first use. */
export function patchCounters(rt: WorkerRuntime): PatchCounters {
  const zero: PatchCounters = { bytes_fetched: 0, bytes_served: 0, slice_hits: 0, slice_misses: 0, slice_collapsed: 0, objects_changed: 0, fallbacks: 0, errors: 0, by_host: {} };
  return (rt.counters.patch ??= zero) as PatchCounters;
}

const MAX_HOSTS = 200;
function hostCount(rt: WorkerRuntime, host: string) {
  const counters = patchCounters(rt);
  let h = counters.by_host[host];
  if (!h) {
    if (Object.keys(counters.by_host).length >= MAX_HOSTS) host = "(other)";
    h = counters.by_host[host] ??= { fetched: 0, served: 0 };
  }
  return h;
}

/** Patch mode on: open the sliced store on the volume (kept when it is the same directory); off: close it. */
export function applyPatchMode(rt: WorkerRuntime, config: Config): void {
  if (!config.cache.enabled || !config.patch.enabled) return closePatchStore(rt);
  const dir = resolve(patchDir(config));
  if (rt.patchStore && rt.patchStore.dir === dir) return;
  closePatchStore(rt); // a new volume: the old store goes
  rt.patchStore = Store.open(dir, {
    maxBytes: patchBudget(config), // below the volume's high-water mark, whatever else is on it (issue 10)
    highWater: 0.9,
    lowWater: 0.85,
    owner: `${process.pid}:${rt.index}:patch`,
    bootId: rt.bootId,
    recover: false,
    mapCacheEntries: 16, // slices are large: keep few mapped so serving a 1 GB file keeps RSS bounded
  });
}

export function closePatchStore(rt: WorkerRuntime): void {
  rt.patchStore?.close();
  rt.patchStore = null;
  rt.patchVerified.clear();
}

const defaultsOf = (rt: WorkerRuntime): CacheDefaults => ({ ...CACHE_DEFAULTS, rules: rt.config.cache.rules });
const sliceSize = (rt: WorkerRuntime) => rt.config.patch.slice_bytes;

const metaKey = (url: string) => `meta ${url}`;
const validatorOf = (m: Meta) => m.etag ?? `lm:${m.lastModified}`;
const sliceKey = (m: Meta, i: number) => `slice ${validatorOf(m)} ${i} ${m.url}`;

/** How the patch path answered: from slices (`fetched`: some came from the origin), or "fallback" to whole objects. */
export type PatchResult = { done: true; fetched: boolean } | { done: false; outcome: "fallback" };

/** The patch path: "fallback" when the object must go through the whole-object cache instead. */
export async function servePatch(rt: WorkerRuntime, s: Store, req: HttpRequest, res: Responder): Promise<PatchResult> {
  const url = normaliseUrl(req.url);
  const note = { fetched: false };
  for (let attempt = 0; attempt < 2; attempt++) {
    const meta = await getMeta(rt, s, url, req);
    if (meta === "fallback") {
      patchCounters(rt).fallbacks++;
      return { done: false, outcome: "fallback" };
    }
    if (meta.fetched) note.fetched = true;
    const r = await serveSlices(rt, s, meta.meta, req, res, note);
    if (r !== "changed-before-send") return { done: true, fetched: note.fetched };
  }
  failWith(res, new ProxyError("PX_FILL_FAILED", "upstream", `${url} kept changing while it was being fetched`));
  return { done: true, fetched: note.fetched };
}

// ---- the object's metadata: one tiny Range request (bytes=0-0), collapsed, stored, revalidated --------------------

async function getMeta(rt: WorkerRuntime, s: Store, url: string, req: HttpRequest): Promise<{ meta: Meta; fetched: boolean } | "fallback"> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const entry = s.lookup(metaKey(url), []);
    let stale: { entry: Entry; meta: Meta } | null = null;
    if (entry) {
      const body = s.body(entry);
      if (body) {
        const meta = JSON.parse(new TextDecoder().decode(body)) as Meta;
        const phase = lookupPhase(toStored(entry), req.headers, rt.now(), defaultsOf(rt));
        if (phase.phase !== "revalidate") return { meta, fetched: false };
        stale = { entry, meta };
      }
    }
    const c = claimOrWait(s, metaKey(url), (fill) => void runMetaFill(rt, s, fill, url, req, stale), stale === null);
    if (!c.ok) continue; // stored between our lookup and our claim: look again
    const tail = c.tail;
    try {
      const h = await tail.head();
      if (!h.ok) {
        if (h.outcome === "fallback") return "fallback";
        if (isLookAgain(h.outcome)) continue;
        throw new ProxyError("PX_UPSTREAM_UNREACHABLE", "upstream", h.detail || `the metadata of ${url} could not be fetched`);
      }
      const parts: Uint8Array[] = [];
      for await (const part of tail) parts.push(part.slice());
      return { meta: JSON.parse(Buffer.concat(parts).toString("utf8")) as Meta, fetched: c.filler };
    } catch (e) {
      if (e instanceof FillError) {
        if (isLookAgain(e.outcome)) continue;
        throw new ProxyError("PX_UPSTREAM_UNREACHABLE", "upstream", e.detail || `the metadata of ${url} could not be fetched`);
      }
      throw e;
    } finally {
      tail.close();
    }
  }
  return "fallback";
}

function upstreamHeaders(req: HttpRequest): Headers {
  return req.headers.filter(([k]) => !DROP_UP.has(k.toLowerCase()));
}

async function runMetaFill(rt: WorkerRuntime, s: Store, fill: FillWriter, url: string, req: HttpRequest, stale: { entry: Entry; meta: Meta } | null) {
  const requestTime = rt.now();
  const headers = upstreamHeaders(req);
  headers.push(["Range", "bytes=0-0"]);
  if (stale?.meta.etag) headers.push(["If-None-Match", stale.meta.etag]);
  let ex: ExchangeHandle | null = null;
  let settled = false;
  const settle = (f: () => void) => {
    if (settled) return;
    settled = true;
    f();
  };
  try {
    ex = await rt.origins.start(
      { scheme: req.scheme, target: req.target, method: "GET", path: req.path, headers, body: { kind: "none" } },
      {
        onHead(h) {
          const responseTime = rt.now();
          // Only the head matters (bytes=0-0 is one byte, but a server without ranges sends the whole file).
          queueMicrotask(() => ex?.abort());
          if (stale && h.status === 304) {
            s.updateHeaders(stale.entry, updateStoredHeaders(stale.entry.headers, h.headers), requestTime, responseTime);
            return settle(() => fill.fail("revalidated"));
          }
          const cr = parseContentRange(getHeader(h.headers, "content-range"));
          const etag = strongEtag(getHeader(h.headers, "etag"));
          const lastModified = getHeader(h.headers, "last-modified") ?? null;
          const storable = isStorable("GET", req.headers, 200, h.headers, { url, rules: rt.config.cache.rules });
          if (h.status !== 206 || !cr || cr.total === null || (!etag && !lastModified) || !storable.ok) {
            // No ranges, no validator to tie slices together, or not storable: the whole-object path decides.
            return settle(() => fill.fail("fallback"));
          }
          const full = makeStoredHeaders(h.headers).filter(([k]) => !DROP_DOWN.has(k.toLowerCase()));
          const meta: Meta = { url, etag, lastModified, total: cr.total, headers: full };
          if (stale && validatorOf(stale.meta) !== validatorOf(meta)) dropVersion(rt, s, stale.meta);
          settle(() => {
            const body = new TextEncoder().encode(JSON.stringify(meta));
            fill.setHead(200, full, { requestTime, responseTime });
            fill.write(body);
            fill.commit({ vkey: "", url, reqHeaders: [], vary: null, status: 200, headers: full, requestTime, responseTime });
          });
        },
        onData: () => true,
        onEnd: () => settle(() => fill.fail("fallback")),
        onError: (e) => settle(() => fill.fail("failed", e.message)),
      },
      { config: rt.config, policy: rt.policy },
    );
    if (settled) ex.abort(); // we only wanted the head (and onHead has run)
  } catch (e) {
    settle(() => fill.fail("failed", (e as Error).message));
  }
}

/** The object changed upstream: forget its metadata and every slice of the old version. */
function dropVersion(rt: WorkerRuntime, s: Store, m: Meta) {
  patchCounters(rt).objects_changed++;
  s.delete(metaKey(m.url));
  const n = Math.ceil(m.total / sliceSize(rt));
  for (let i = 0; i < n; i++) s.delete(sliceKey(m, i));
  log("info", "patch object changed; old slices dropped", { url: m.url, validator: validatorOf(m) });
}

// ---- serving ------------------------------------------------------------------------------------------------------

async function serveSlices(rt: WorkerRuntime, s: Store, meta: Meta, req: HttpRequest, res: Responder, note: { fetched: boolean }): Promise<"done" | "changed-before-send"> {
  const counters = patchCounters(rt);
  const sliceBytes = sliceSize(rt);
  const total = meta.total;
  const honourRange = ifRangeMatches(getHeader(req.headers, "if-range"), meta.etag, meta.lastModified);
  const asked = honourRange ? parseRange(getHeader(req.headers, "range"), total) : null;
  const headers: Headers = [...meta.headers, ["Accept-Ranges", "bytes"]];
  if (asked === "unsatisfiable") {
    res.head(416, [["Content-Range", `bytes */${total}`]], 0);
    res.end();
    return "done";
  }
  const range: ByteRange = asked ?? { start: 0, end: total - 1 };
  const status = asked ? 206 : 200;
  if (asked) headers.push(["Content-Range", `bytes ${range.start}-${range.end}/${total}`]);
  const length = total === 0 ? 0 : range.end - range.start + 1;
  if (req.method === "HEAD") {
    headers.push(["Content-Length", String(length)]);
    res.head(status, headers, null);
    res.end();
    return "done";
  }
  let started = false;
  const host = hostCount(rt, req.target.host);
  if (total === 0) {
    res.head(status, headers, 0);
    res.end();
    return "done";
  }
  const first = Math.floor(range.start / sliceBytes);
  const last = Math.floor(range.end / sliceBytes);
  for (let i = first; i <= last && !res.closed; i++) {
    const sliceStart = i * sliceBytes;
    const from = Math.max(range.start, sliceStart) - sliceStart;
    const to = Math.min(range.end, Math.min(sliceStart + sliceBytes, total) - 1) - sliceStart; // inclusive, within the slice
    let offset = 0; // end of the bytes of this slice seen so far
    try {
      for await (const { at, bytes: chunk } of sliceBytesOf(rt, s, meta, i, req, from, to, note)) {
        const cStart = at;
        const cEnd = at + chunk.byteLength - 1;
        offset = cEnd + 1;
        if (cStart > to) break;
        if (cEnd < from) continue;
        const part = chunk.subarray(Math.max(0, from - cStart), Math.min(chunk.byteLength, to - cStart + 1));
        if (!started) {
          res.head(status, headers, length);
          started = true;
        }
        counters.bytes_served += part.byteLength;
        host.served += part.byteLength;
        if (!res.write(part)) await new Promise<void>((r) => res.onDrain(r));
        if (res.closed) break;
      }
    } catch (e) {
      const changed = e instanceof FillError && e.outcome === "changed";
      if (!started && changed) return "changed-before-send";
      counters.errors++;
      const why = e instanceof FillError ? e.detail || e.outcome : (e as Error).message;
      failWith(res, new ProxyError("PX_FILL_FAILED", "upstream", `patch download of ${meta.url} failed at slice ${i}: ${why}`));
      return "done";
    }
    if (!res.closed && offset < to + 1) {
      counters.errors++;
      failWith(res, new ProxyError("PX_FILL_FAILED", "upstream", `slice ${i} of ${meta.url} is short (${offset} bytes)`));
      return "done";
    }
  }
  if (!started) res.head(status, headers, length);
  res.end();
  return "done";
}

/** The bytes of slice i: from the store, or from the one fill of that slice (started here if nobody has). */
async function* sliceBytesOf(
  rt: WorkerRuntime,
  s: Store,
  meta: Meta,
  i: number,
  req: HttpRequest,
  from: number,
  to: number,
  note: { fetched: boolean },
): AsyncGenerator<{ at: number; bytes: Uint8Array }> {
  const counters = patchCounters(rt);
  const key = sliceKey(meta, i);
  for (let attempt = 0; attempt < 3; attempt++) {
    const entry = s.lookup(key, []);
    if (entry) {
      const fd = openQuiet(entry.blobPath);
      if (fd !== null) {
        counters.slice_hits++;
        s.touch(entry, entry.size);
        yield* readSlice(rt, s, key, entry, fd, from, to);
        return;
      }
      s.delete(key); // the index named a file that is gone
    }
    const c = claimOrWait(s, key, (fill) => void runSliceFill(rt, s, fill, meta, i, req), true);
    if (!c.ok) continue; // the slice was stored between our lookup and our claim: look again
    if (c.filler) {
      counters.slice_misses++;
      note.fetched = true;
    } else counters.slice_collapsed++;
    const tail = c.tail;
    try {
      const h = await tail.head();
      if (!h.ok) {
        if (isLookAgain(h.outcome)) continue;
        throw new FillError(key, h.outcome, h.detail);
      }
      let at = 0;
      for await (const part of tail) {
        yield { at, bytes: part };
        at += part.byteLength;
        if (at > to) return; // the rest of the slice is not wanted here (the fill goes on for the others)
      }
      return;
    } catch (e) {
      // its filler died (take over), or a claim that found the slice already stored gave way: look again
      if (e instanceof FillError && isLookAgain(e.outcome) && tail.received === 0) continue;
      throw e;
    } finally {
      tail.close();
    }
  }
  throw new ProxyError("PX_FILL_FAILED", "upstream", `slice ${i} could not be fetched`);
}

/**
 * A stored slice, read in 1 MB pieces (not mapped: mapped pages of a 10 GB file would all count as resident).
 * The first read of a blob in this worker also checks its SHA-256; a mismatch drops the slice and cuts the
 * download, so the agent retries and the slice is fetched again.
 */
function* readSlice(rt: WorkerRuntime, s: Store, key: string, entry: Entry, fd: number, from: number, to: number): Generator<{ at: number; bytes: Uint8Array }> {
  const verified = rt.patchVerified;
  try {
    if (!verified.has(entry.blobPath)) {
      // First read of this slice in this worker since start: check all of it before sending a byte of it.
      const whole = readRange(fd, entry, 0, entry.size);
      if (new Bun.CryptoHasher("sha256").update(whole).digest("hex") !== entry.sha256) {
        s.delete(key);
        throw new ProxyError("PX_STORE_CORRUPT", "internal", `slice ${key} failed its SHA-256 check and was dropped`);
      }
      verified.add(entry.blobPath);
      if (verified.size > 100_000) verified.clear();
      for (let off = from; off <= Math.min(to, entry.size - 1); off += PIECE) yield { at: off, bytes: whole.subarray(off, Math.min(off + PIECE, to + 1, entry.size)) };
      return;
    }
    // Verified: read only where the range lies, a piece at a time.
    const end = Math.min(entry.size, to + 1);
    for (let off = from; off < end; off += PIECE) yield { at: off, bytes: readRange(fd, entry, off, Math.min(off + PIECE, end)) };
  } finally {
    closeSync(fd);
  }
}

const PIECE = 1024 * 1024;

function readRange(fd: number, entry: Entry, start: number, end: number): Uint8Array {
  const buf = new Uint8Array(end - start);
  let n = 0;
  while (n < buf.byteLength) {
    const got = readSync(fd, buf, n, buf.byteLength - n, start + n);
    if (got <= 0) throw new ProxyError("PX_STORE_SHORT", "internal", `slice file ${entry.blobPath} is shorter than its ${entry.size} bytes`);
    n += got;
  }
  return buf;
}

function openQuiet(path: string): number | null {
  try {
    return openSync(path, "r");
  } catch {
    return null;
  }
}

async function runSliceFill(rt: WorkerRuntime, s: Store, fill: FillWriter, meta: Meta, i: number, req: HttpRequest) {
  const counters = patchCounters(rt);
  const sliceBytes = sliceSize(rt);
  const start = i * sliceBytes;
  const end = Math.min(start + sliceBytes, meta.total) - 1;
  const headers = upstreamHeaders(req);
  headers.push(["Range", `bytes=${start}-${end}`]);
  // Tie the slice to the version we know: a changed object answers 412 instead of mixing bytes.
  if (meta.etag) headers.push(["If-Match", meta.etag]);
  else headers.push(["If-Unmodified-Since", meta.lastModified!]);
  const host = hostCount(rt, req.target.host);
  let ok = false;
  let ex: ExchangeHandle | null = null;
  try {
    ex = await rt.origins.start(
      { scheme: req.scheme, target: req.target, method: "GET", path: req.path, headers, body: { kind: "none" } },
      {
        onHead(h) {
          const cr = parseContentRange(getHeader(h.headers, "content-range"));
          const etag = strongEtag(getHeader(h.headers, "etag"));
          const lm = getHeader(h.headers, "last-modified") ?? null;
          const same = meta.etag ? etag === meta.etag : lm === meta.lastModified;
          if (h.status !== 206 || !cr || cr.start !== start || cr.end !== end || cr.total !== meta.total || !same) {
            dropVersion(rt, s, meta);
            fill.fail("changed", `answer ${h.status}${cr ? ` ${cr.start}-${cr.end}/${cr.total}` : ""}`);
            ex?.abort();
            return;
          }
          ok = true;
          fill.setHead(206, [["Content-Range", `bytes ${start}-${end}/${meta.total}`]]);
        },
        onData(chunk) {
          if (!ok) return true;
          counters.bytes_fetched += chunk.byteLength;
          host.fetched += chunk.byteLength;
          fill.write(chunk);
          return true;
        },
        onEnd() {
          if (!ok) return;
          if (fill.size !== end - start + 1) {
            counters.errors++;
            fill.fail("failed", `slice ${i}: ${fill.size} of ${end - start + 1} bytes`);
            return;
          }
          try {
            fill.commit({ vkey: "", url: meta.url, reqHeaders: [], vary: null, status: 206, headers: [["Content-Range", `bytes ${start}-${end}/${meta.total}`]] });
            s.evictIfNeeded();
          } catch (e) {
            counters.errors++;
            fill.fail("failed", (e as Error).message);
          }
        },
        onError(e) {
          counters.errors++;
          fill.fail("failed", e.message);
        },
      },
      { config: rt.config, policy: rt.policy },
    );
  } catch (e) {
    counters.errors++;
    fill.fail("failed", (e as Error).message);
  }
}
