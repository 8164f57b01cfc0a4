/**
 * @module Shared pieces of the property-based suites (issue 12): the fixed seeds, `check` (fast-check's assert with a
 * seed and a bounded run count, the seed printed on failure), byte helpers, and generators for the HTTP/1.1 grammar
 * (RFC 9110 §5.6.2 tokens, §5.5 field values, RFC 9112 §7.1 chunked bodies) from which the parsers' inputs are built.
 * Every run is deterministic: change FUZZ_SEED (env) to explore, and a failure names the seed and path to replay.
 */
import fc from "fast-check";
import { ConfigError, ProxyError } from "../../src/core/errors";

/** One seed for every suite; `FUZZ_SEED=123 bun test test/fuzz` explores another part of the space. */
export const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed_12);

/**
 * Run `prop` `numRuns` times from SEED (+ a per-property offset so properties do not share inputs). fast-check's
 * own message carries `seed` and `path` for a replay; the prefix here says which property and how to rerun it.
 */
export function check<Ts extends [unknown, ...unknown[]]>(name: string, prop: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>, numRuns: number, offset = 0) {
  const seed = SEED + offset;
  try {
    return fc.assert(prop as fc.IProperty<Ts>, { seed, numRuns, endOnFailure: false });
  } catch (e) {
    throw new Error(`property "${name}" failed (seed ${seed}; rerun with FUZZ_SEED=${SEED}): ${(e as Error).message}`);
  }
}

/** The only errors a parser may throw on peer input: anything else (TypeError, RangeError…) is a bug. */
export function expectOnlyProxyError(fn: () => unknown): { ok: true; value: unknown } | { ok: false; error: ProxyError } {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof ProxyError) return { ok: false, error: e };
    throw e;
  }
}

export function expectOnlyConfigError(fn: () => unknown): { ok: true; value: unknown } | { ok: false; error: ConfigError | ProxyError } {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof ConfigError || e instanceof ProxyError) return { ok: false, error: e };
    throw e;
  }
}

/** One byte per char (ISO-8859-1), the inverse of the head parser's decoding. */
export const bytes = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
export const text = (b: Uint8Array): string => String.fromCharCode(...b);
export const concatBytes = (parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), (o += p.byteLength));
  return out;
};

/** Cut `b` at the given points (any numbers: taken modulo the length, sorted, deduplicated). */
export function splitAt(b: Uint8Array, cuts: number[]): Uint8Array[] {
  if (b.length === 0) return [b];
  const pts = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let last = 0;
  for (const p of pts) {
    out.push(b.subarray(last, p));
    last = p;
  }
  out.push(b.subarray(last));
  return out.filter((p) => p.length > 0);
}

export const cuts = fc.array(fc.nat({ max: 1 << 16 }), { maxLength: 8 });

const TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/** RFC 9110 §5.6.2 token. */
export const token = (maxLength = 12) => fc.string({ unit: fc.constantFrom(...TCHARS), minLength: 1, maxLength });

/** RFC 9110 §5.5 field-vchar: VCHAR and obs-text (what a latin1 head can carry besides SP/HTAB). */
const VCHARS = [...Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)), ...Array.from({ length: 0x80 }, (_, i) => String.fromCharCode(0x80 + i))];
export const vchar = fc.constantFrom(...VCHARS);

/** A field value as the parser returns it: field-vchars with inner SP/HTAB, none at either end (may be empty). */
export const fieldValue = fc
  .array(fc.oneof({ weight: 6, arbitrary: vchar }, { weight: 1, arbitrary: fc.constantFrom(" ", "\t") }), { maxLength: 24 })
  .map((cs) => cs.join("").replace(/^[ \t]+|[ \t]+$/g, ""));

/** A request target: any non-empty run of bytes above SP except DEL (what the request line allows). */
export const target = fc
  .array(vchar, { minLength: 1, maxLength: 40 })
  .map((cs) => cs.join(""));

/** Header lists that avoid framing and Host fields (those have suites of their own). */
export const plainHeaders = fc.array(
  fc.tuple(
    token().filter((n) => !/^(content-length|transfer-encoding|host)$/i.test(n)),
    fieldValue,
  ),
  { maxLength: 8 },
);

/** RFC 9110 §5.6.4 quoted-string: qdtext and quoted-pairs. */
export const quotedString = fc
  .array(
    fc.oneof(
      vchar.filter((c) => c !== '"' && c !== "\\"),
      fc.constantFrom(" ", "\t"),
      vchar.map((c) => `\\${c}`),
    ),
    { maxLength: 10 },
  )
  .map((cs) => `"${cs.join("")}"`);

const bws = fc.constantFrom("", "", " ", "\t", " \t");

/** RFC 9112 §7.1.1 chunk-ext: *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ). */
export const chunkExt = fc
  .array(
    fc.tuple(bws, bws, token(8), fc.option(fc.tuple(bws, bws, fc.oneof(token(8), quotedString)), { nil: undefined })),
    { maxLength: 3 },
  )
  .map((exts) => exts.map(([a, b, n, v]) => `${a};${b}${n}${v ? `${v[0]}=${v[1]}${v[2]}` : ""}`).join(""));

/** A chunked body as segments: `framing` bytes (size lines, CRLFs, trailers) and `data` bytes (the payload). */
export type Segment = { framing: boolean; s: string };
export const chunkedBody = fc
  .record({
    chunks: fc.array(fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.nat({ max: 3 }), fc.boolean(), chunkExt), { maxLength: 5 }),
    lastZeros: fc.nat({ max: 3 }),
    lastExt: chunkExt,
    trailers: fc.array(fc.tuple(token(10), fieldValue), { maxLength: 3 }),
    trailerOws: fc.constantFrom("", " ", "\t"),
  })
  .map(({ chunks, lastZeros, lastExt, trailers, trailerOws }) => {
    const segs: Segment[] = [];
    for (const [data, zeros, upper, ext] of chunks) {
      let hex = "0".repeat(zeros) + data.length.toString(16);
      if (upper) hex = hex.toUpperCase();
      segs.push({ framing: true, s: `${hex}${ext}\r\n` }, { framing: false, s: text(data) }, { framing: true, s: "\r\n" });
    }
    segs.push({ framing: true, s: `${"0".repeat(lastZeros + 1)}${lastExt}\r\n` });
    for (const [n, v] of trailers) segs.push({ framing: true, s: `${n}:${trailerOws}${v}${trailerOws}\r\n` });
    segs.push({ framing: true, s: "\r\n" });
    const body = concatBytes(chunks.map(([d]) => d));
    return { segs, wire: segs.map((g) => g.s).join(""), body, trailers: trailers.length };
  });
