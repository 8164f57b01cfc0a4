/**
 * @module Layer 2's decisions, pure (STYLE "A request, top to bottom"; issue 8 §2). TODO(issue 8): planLookup and
 * planOriginResponse; for now the outcome union that fills report across threads.
 */

/**
 * How a fill ended, as every waiter (in any worker) learns it. Stored in the fills table's own `outcome` column
 * where it crosses threads, never inside an error message (a URL may contain any of these words).
 * - stored: committed to the store · delivered: streamed to the waiters, not stored (not storable)
 * - revalidated: a 304 freshened the stored entry; look again · superseded: the object was stored meanwhile; look again
 * - fallback: (patch) the object cannot be sliced; use the whole-object path · changed: (patch) the object changed upstream
 * - failed: the download failed · stale: the filler stopped beating (died); claim again · idle: no progress for too long
 */
export type FillOutcome = "stored" | "delivered" | "revalidated" | "superseded" | "fallback" | "changed" | "failed" | "stale" | "idle";
/** The outcomes a filler reports with `fail(outcome, detail)`; "stale" and "idle" are the store's own verdicts. */
export type FillEndOutcome = Exclude<FillOutcome, "stored" | "delivered" | "stale" | "idle">;
