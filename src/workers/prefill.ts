/**
 * @module Prefill in a worker (warm the cache before a rollout): each URL of a job becomes one GET on the cache
 * port's own story, `onCacheRequest` (cache-request.ts) — the same route, policy, lookup, plan and single fill as an
 * agent's request, so an agent asking for the same object meanwhile joins that fill (and a prefill of something
 * already stored is a hit). Only the two ends are synthetic: the request comes from here instead of a socket, and the
 * answer goes to a Responder that counts the body and drops it. At most `concurrency` URLs run at once; progress goes
 * to the supervisor as snapshots of the job's items (every `PROGRESS_MS` while it runs, and at the end).
 */
import { type PrefillItem } from "../core/cache-ops";
import { parseAuthority } from "../core/connect";
import { decide } from "../core/policy";
import { primaryKey } from "../core/cache/key";
import { framingForRequest } from "../core/http1/body";
import type { Headers, RequestHead } from "../core/http1/head";
import { VERSION } from "../version";
import { onCacheRequest } from "./cache-request";
import type { IncomingRequest, RequestBody, Responder } from "./http-session";
import type { WorkerRuntime } from "./runtime";

const PROGRESS_MS = 250;
const USER_AGENT = `agate-prefill/${VERSION}`;

export type PrefillPost = (items: PrefillItem[], finished: boolean) => void;

/** Run one job's URLs through the cache port's story; resolves when every URL is done or failed. */
export async function runPrefill(rt: WorkerRuntime, urls: readonly string[], concurrency: number, post: PrefillPost): Promise<void> {
  const items: PrefillItem[] = urls.map((url) => ({ url, state: "queued", bytes: 0, status: 0, stored: false, error: null }));
  const timer = setInterval(() => post(items, false), PROGRESS_MS);
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < items.length; i = next++) await prefillOne(rt, items[i]!);
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, lane));
  } finally {
    clearInterval(timer);
    post(items, true);
  }
}

async function prefillOne(rt: WorkerRuntime, item: PrefillItem): Promise<void> {
  item.state = "running";
  const fail = (why: string) => {
    item.state = "failed";
    item.error = why;
  };
  try {
    if (!rt.intercepting || rt.cacheStore === null) return fail("cache mode is off in this worker (no store or no CA)");
    const u = new URL(item.url);
    const target = parseAuthority(u.host, 443);
    // The CONNECT decision an agent's tunnel would get; the story then routes the request inside it.
    const verdict = decide(rt.policy, target, { ip: "127.0.0.1", port: "cache", userAgent: USER_AGENT });
    if (verdict.action === "deny") return fail(`refused by the policy (${verdict.rule}): ${verdict.reason ?? "not allowed"}`);
    if (verdict.action !== "intercept") return fail(`${target.host} is not cached (rule ${verdict.rule}): agents' requests to it pass through untouched`);
    const headers: Headers = [
      ["Host", u.host],
      ["User-Agent", USER_AGENT],
      ["Accept", "*/*"],
    ];
    const head: RequestHead = { method: "GET", target: u.pathname + u.search, version: "1.1", headers, headBytes: 0 };
    const inc: IncomingRequest = { head, scheme: "https", connectTarget: target, connectVerdict: verdict, connId: "prefill", clientIp: "prefill", clientPort: 0 };
    const res = new CountingResponder(item);
    await onCacheRequest(rt, inc, res, noBody(head));
    if (res.failure !== null) return fail(res.failure);
    if (res.status < 200 || res.status > 299) return fail(`the cache port answered ${res.status}`);
    item.stored = rt.cacheStore?.lookup(primaryKey("GET", item.url), headers) != null;
    item.state = "done";
  } catch (e) {
    fail(String((e as Error)?.message ?? e));
  }
}

const noBody = (head: RequestHead): RequestBody => ({
  framing: framingForRequest(head.headers),
  bytes: 0,
  pipeTo: (sink) => sink.endBody(),
});

/** The answer's sink: counts body bytes into the item, never pushes back, remembers an error. */
class CountingResponder implements Responder {
  status = 0;
  bytesOut = 0;
  failure: string | null = null;
  #ended = false;
  constructor(readonly item: PrefillItem) {}
  get closed() {
    return this.#ended;
  }
  head(status: number) {
    this.status = status;
    this.item.status = status;
  }
  write(chunk: Uint8Array) {
    this.bytesOut += chunk.byteLength;
    this.item.bytes += chunk.byteLength;
    return true;
  }
  end() {
    this.#ended = true;
  }
  onDrain(f: () => void) {
    queueMicrotask(f);
  }
  error(status: number, reason: string) {
    if (this.#ended) return;
    this.#ended = true;
    // mid-body (head sent) the story cuts the connection: the object arrived short
    this.failure = this.status !== 0 ? `cut after ${this.item.bytes} bytes: ${reason}` : `${status}: ${reason}`;
    if (this.status === 0) {
      this.status = status;
      this.item.status = status;
    }
  }
}
