/** Sliding windows for visibility: distinct keys within a window, buckets over time. Fixed clock. */
import { expect, test } from "bun:test";
import { BucketSeries, UniqueWindow } from "../../src/core/stats-window";

const MIN = 60_000;

test("unique IPs over 60 minutes: a re-seen IP stays, an old one drops out", () => {
  const w = new UniqueWindow(60 * MIN);
  w.add("10.0.0.1", 0);
  w.add("10.0.0.2", 10 * MIN);
  w.add("10.0.0.1", 30 * MIN); // seen again: its clock restarts
  expect(w.count(30 * MIN)).toBe(2);
  expect(w.count(70 * MIN + 1)).toBe(1); // .2 last seen at 10 min
  expect(w.keys(70 * MIN + 1)).toEqual(["10.0.0.1"]);
  expect(w.count(91 * MIN)).toBe(0);
});

test("bucket series counts distinct keys per bucket and keeps the last N", () => {
  const s = new BucketSeries(MIN, 3);
  s.add("a", 0);
  s.add("a", 1000);
  s.add("b", 2000);
  s.add("a", MIN + 5);
  s.add("c", 3 * MIN);
  expect(s.series(3 * MIN)).toEqual([
    { t: MIN, n: 1 },
    { t: 2 * MIN, n: 0 },
    { t: 3 * MIN, n: 1 },
  ]);
});
