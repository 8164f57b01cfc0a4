/**
 * `freePort` (test/peers/helpers.ts) gives ports outside the kernel's ephemeral range, where the local ports of the
 * connections other test files open meanwhile come from. A port from `port: 0` is in that range, and CI once saw a
 * gateway refuse to start with "admin.port: port 36937 on 127.0.0.1 is in use by another process".
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { freePort } from "../peers/helpers";

test("100 ports from freePort: none in ip_local_port_range, each one bindable when given", () => {
  const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
  const inRange: number[] = [];
  for (let i = 0; i < 100; i++) {
    const p = freePort();
    if (p >= low! && p <= high!) inRange.push(p);
    const l = Bun.listen({ hostname: "127.0.0.1", port: p, socket: { data() {} } });
    expect(l.port).toBe(p);
    l.stop(true);
  }
  expect(inRange).toEqual([]);
});
