/**
 * @module The one copy of the small helpers every test layer shares: `waitFor` (a bounded poll for a
 * condition, instead of a fixed sleep), `freePort` (a loopback port nobody listens on right now) and
 * `errorOf` (the ProxyError a pure function throws, so tests compare codes, never messages).
 */
import { ProxyError } from "../../src/core/errors";

/** What a condition returns when it holds: `cond() && value` waits for the value. */
export type Truthy<T> = Exclude<T, false | null | undefined | 0 | "">;

export type WaitOpts = { timeoutMs?: number; what?: string; everyMs?: number };

/**
 * Poll `cond` until it returns a truthy value and return that value; throw after `timeoutMs`, naming `what`.
 * A condition that throws counts as "not yet" (a server still starting refuses connections), and the last
 * such error goes into the timeout message.
 */
export async function waitFor<T>(cond: () => T | Promise<T>, opts: WaitOpts = {}): Promise<Truthy<T>> {
  const { timeoutMs = 10_000, what = "condition", everyMs = 25 } = opts;
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as Truthy<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= end) break;
    await Bun.sleep(everyMs); // the poll interval, not a wait for an outcome
  }
  const why = last === undefined ? "" : ` (last error: ${last instanceof Error ? last.message : String(last)})`;
  throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${why}`);
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for programs that cannot be told `port: 0`
 * (squid, haproxy, chromium's debugging port). Another process may take it in between; that is rare on
 * loopback and shows up as a clear "address in use" from the program.
 */
export function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = l.port;
  l.stop(true);
  return p;
}

/** What `errorOf` returns when nothing was thrown: a code that fails any comparison with a real one. */
export type NoError = { code: string; side: string; message: string };

/**
 * The ProxyError that `fn` throws, or a stand-in whose `code` says "no error" (and what came back,
 * described by `describe`) so that `expect(errorOf(f).code).toBe("PX_…")` fails readably. Anything
 * thrown that is not a ProxyError is rethrown: it is a bug, not an outcome.
 */
export function errorOf(fn: () => unknown, describe?: (returned: unknown) => string): ProxyError | NoError {
  try {
    const v = fn();
    return { code: describe ? `no error (returned ${describe(v)})` : "no error", side: "", message: "" };
  } catch (e) {
    if (e instanceof ProxyError) return e;
    throw e;
  }
}
