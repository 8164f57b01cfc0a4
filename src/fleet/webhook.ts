/**
 * @module The fleet's webhook (issue 14): each notice is a JSON POST to `[fleet] webhook_url`, retried with
 * exponential back-off (1, 2, 4, 8, 16, 32 s) when the receiver fails or cannot be reached, and given up after
 * that with one log line. Never blocking: `send` only queues, the queue is bounded (the oldest notice goes first),
 * and every attempt has a timeout. The URL is never logged whole — Slack- and Teams-style URLs carry their secret
 * in the path — only its origin.
 */
import { log } from "../log";

export const RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 16000, 32000];
export const MAX_QUEUED = 100;
const ATTEMPT_TIMEOUT_MS = 10_000;

type Pending = { body: string; attempt: number; id: string };

export class WebhookSender {
  sent = 0;
  failed = 0;
  lastError: string | null = null;
  private queue: Pending[] = [];
  private busy = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(private url: string | null, private delays: readonly number[] = RETRY_DELAYS_MS) {}

  setUrl(url: string | null) {
    this.url = url;
  }

  get pending(): number {
    return this.queue.length;
  }

  get origin(): string | null {
    try {
      return this.url ? new URL(this.url).origin : null;
    } catch {
      return null;
    }
  }

  /** Queue a notice; returns at once. */
  send(notice: Record<string, unknown>, id: string) {
    if (!this.url || this.stopped) return;
    if (this.queue.length >= MAX_QUEUED) {
      const dropped = this.queue.shift()!;
      this.failed++;
      log("warn", "fleet webhook: queue full, oldest notice dropped", { id: dropped.id, to: this.origin });
    }
    this.queue.push({ body: JSON.stringify(notice), attempt: 0, id });
    void this.pump();
  }

  stop() {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private async pump() {
    if (this.busy || this.stopped) return;
    this.busy = true;
    try {
      while (this.queue.length && !this.stopped && this.url) {
        const p = this.queue[0]!;
        const err = await this.attempt(p.body);
        if (err === null) {
          this.queue.shift();
          this.sent++;
          log("info", "fleet webhook: notice delivered", { id: p.id, to: this.origin, attempts: p.attempt + 1 });
          continue;
        }
        this.lastError = err;
        const delay = this.delays[p.attempt];
        if (delay === undefined) {
          this.queue.shift();
          this.failed++;
          log("error", "fleet webhook: notice given up", { id: p.id, to: this.origin, attempts: p.attempt + 1, error: err });
          continue;
        }
        p.attempt++;
        log("warn", "fleet webhook: delivery failed, will retry", { id: p.id, to: this.origin, attempt: p.attempt, retry_in_ms: delay, error: err });
        // Back off before the next attempt; other notices wait behind this one (they are in order of events).
        this.timer = setTimeout(() => {
          this.timer = null;
          void this.pump();
        }, delay);
        return;
      }
    } finally {
      this.busy = false;
    }
  }

  /** One POST: null on a 2xx, else the reason. */
  private async attempt(body: string): Promise<string | null> {
    try {
      const r = await fetch(this.url!, {
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "agate-fleet" },
        body,
        signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS),
        redirect: "manual",
      });
      await r.arrayBuffer().catch(() => undefined);
      return r.status >= 200 && r.status < 300 ? null : `HTTP ${r.status}`;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code ?? (e as Error).name ?? String(e);
    }
  }
}
