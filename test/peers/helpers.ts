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
 * (squid, haproxy, chromium's debugging port, gateways that must know each other's ports up front).
 *
 * It is picked at random below the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`,
 * 32768–60999 here), not with `port: 0`: a port the kernel hands out for `port: 0` comes from that range, and so
 * does the local port of every outgoing connection the other test files open meanwhile, which is how CI once saw
 * "admin.port: port 36937 on 127.0.0.1 is in use by another process" (test/e2e/fleet-steer.test.ts). Below the
 * range only another test's `freePort` can collide, and a random pick out of ~12,000 makes that rare.
 */
export function freePort(): number {
  for (let i = 0; i < 200; i++) {
    const p = FREE_PORT_LOW + Math.floor(Math.random() * (FREE_PORT_HIGH - FREE_PORT_LOW));
    if (canBind(p)) return p;
  }
  throw new Error(`no free port on 127.0.0.1 in ${FREE_PORT_LOW}–${FREE_PORT_HIGH} after 200 tries`);
}
const FREE_PORT_LOW = 20_000;
const FREE_PORT_HIGH = 32_000;
function canBind(port: number): boolean {
  try {
    const l = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
    l.stop(true);
    return true;
  } catch {
    return false;
  }
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
