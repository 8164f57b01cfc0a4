/**
 * @module What stands at the management port's door: the bearer token (constant-time compare), slowing down an
 * address that keeps getting it wrong, request body limits, and the audit log of every change (who, what, when).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { appendFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

/** After this many failures from one address within FAIL_WINDOW_MS, it gets 429 until the window clears. */
export const MAX_FAILURES = 5;
export const FAIL_WINDOW_MS = 60_000;
/** JSON bodies (config changes, edits): far more than any real one. */
export const MAX_JSON_BODY = 256 * 1024;
/** A certificate upload: three files of at most 3 MB each, plus the form's own bytes. */
export const MAX_UPLOAD_BODY = 3 * 3 * 1024 * 1024 + 64 * 1024;

/** What a request presented: the right token, a wrong one, or none at all (no `Authorization: Bearer …`). */
export type TokenCheck = "right" | "wrong" | "missing";

export function checkToken(req: Request, token: string): TokenCheck {
  const h = req.headers.get("authorization");
  if (h === null || h.trim() === "") return "missing";
  return tokenMatches(req, token) ? "right" : "wrong";
}

/**
 * The door's answer, in this order (issue 12, defect 7): the right token always passes (a throttle must never lock
 * out the CLI because a scrape job on the same address has no token); no token is a 401 that is not counted (it
 * guesses nothing); only a wrong token that was presented counts, and an address over the limit gets 429.
 */
export type DoorAnswer = { pass: true } | { pass: false; status: 401 | 429; retryAfter: number };

export function decideDoor(check: TokenCheck, throttle: FailureThrottle, addr: string, now: number): DoorAnswer {
  // The failures are not forgotten on a success: someone else guessing from the same address stays slowed down.
  if (check === "right") return { pass: true };
  if (check === "missing") return { pass: false, status: 401, retryAfter: 0 };
  const wait = throttle.retryAfter(addr, now);
  if (wait > 0) return { pass: false, status: 429, retryAfter: wait };
  throttle.fail(addr, now);
  return { pass: false, status: 401, retryAfter: 0 };
}

export function tokenMatches(req: Request, token: string): boolean {
  const h = req.headers.get("authorization") ?? "";
  const m = /^Bearer\s+(.+)$/i.exec(h);
  if (!m) return false;
  const a = Buffer.from(m[1]!.trim());
  const b = Buffer.from(token);
  // Compare equal-length buffers only; a length mismatch still costs one compare.
  return a.length === b.length ? timingSafeEqual(a, b) : (timingSafeEqual(b, b), false);
}

/** A short, non-reversible name for a token in the audit log: which token acted, never the token. */
export const tokenFingerprint = (token: string) => "sha256:" + createHash("sha256").update(token).digest("hex").slice(0, 12);

/** Failures per remote address in a sliding window. Time is passed in. */
export class FailureThrottle {
  private fails = new Map<string, number[]>();
  constructor(
    readonly max = MAX_FAILURES,
    readonly windowMs = FAIL_WINDOW_MS,
  ) {}

  private recent(addr: string, now: number): number[] {
    const list = (this.fails.get(addr) ?? []).filter((t) => t > now - this.windowMs);
    if (list.length) this.fails.set(addr, list);
    else this.fails.delete(addr);
    return list;
  }

  /** Seconds the address must wait, or 0 when it may try. */
  retryAfter(addr: string, now: number): number {
    const list = this.recent(addr, now);
    if (list.length < this.max) return 0;
    return Math.max(1, Math.ceil((list[list.length - this.max]! + this.windowMs - now) / 1000));
  }

  fail(addr: string, now: number) {
    const list = this.recent(addr, now);
    list.push(now);
    this.fails.set(addr, list);
    if (this.fails.size > 10_000) for (const k of [...this.fails.keys()].slice(0, 1000)) this.fails.delete(k); // bounded
  }

  succeed(addr: string) {
    this.fails.delete(addr);
  }
}

export class BodyTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`request body over ${limit} bytes`);
  }
}

/** The body as bytes, refusing (before buffering it whole) anything over `limit`. */
export async function readBodyLimited(req: Request, limit: number): Promise<Uint8Array> {
  const len = Number(req.headers.get("content-length") ?? NaN);
  if (Number.isFinite(len) && len > limit) throw new BodyTooLarge(limit);
  if (!req.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of req.body as unknown as AsyncIterable<Uint8Array>) {
    n += c.byteLength;
    if (n > limit) throw new BodyTooLarge(limit);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

export type AuditEntry = {
  t: string;
  who: { addr: string; token: string };
  method: string;
  path: string;
  action: string;
  status: number;
  detail?: Record<string, unknown>;
};

/** JSON lines in `<data_dir>/audit.log`, appended synchronously: a change is on disk before it is answered. */
export class AuditLog {
  constructor(readonly path: string) {}
  write(e: AuditEntry) {
    try {
      mkdirSync(dirname(this.path), { recursive: true });
      appendFileSync(this.path, JSON.stringify(e) + "\n", { mode: 0o600 });
    } catch {
      // TODO: surface an unwritable audit log in health; it must not block the admin from fixing the disk.
    }
  }
}
