/**
 * The fleet's pure rules (core/fleet.ts) and the `[fleet]` section at the door (core/fleet-config.ts via parseConfig),
 * with a fixed clock: a peer's status from its heartbeats, when a notice is due, and the rendezvous owner of a key.
 */
import { describe, expect, test } from "bun:test";
import { parseConfig, redactConfig } from "../../src/core/config";
import { ConfigError } from "../../src/core/errors";
import { type Beat, type PeerState, decideNotice, decidePeerStatus, hash32, initialPeerState, onBeat, ownerOf } from "../../src/core/fleet";

const TOKEN = "f".repeat(32);
const NOW = 1_767_000_000_000;

function keyOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.key;
    throw e;
  }
  return "(no error)";
}
const fleet = (f: Record<string, unknown>, admin: Record<string, unknown> = {}) => parseConfig({ fleet: f, admin });

describe("[fleet] at the door", () => {
  test("defaults: no peers, heartbeat 180 s with a 60 s floor, 3 missed, no shared cache, no webhook", () => {
    expect(parseConfig({}).fleet).toEqual({ peers: [], token: null, location: "", heartbeat_s: 180, min_heartbeat_s: 60, missed_heartbeats: 3, share_cache: false, webhook_url: null, peer_ca: null });
  });
  test("a full, valid section", () => {
    const c = fleet({ peers: ["10.0.0.5:8443", "GW2.Example.com:8443", "[fd00::5]:8443"], token: TOKEN, location: "Paris DC1", heartbeat_s: 60, missed_heartbeats: 5, share_cache: false, webhook_url: "https://hooks.example.com/x" });
    expect(c.fleet.peers).toEqual(["10.0.0.5:8443", "gw2.example.com:8443", "[fd00::5]:8443"]);
    expect(redactConfig(c).fleet.token).toBe("(set)");
  });
  test.each([
    [{ peers: ["10.0.0.5"], token: TOKEN }, "fleet.peers[0]"],
    [{ peers: ["10.0.0.5:0"], token: TOKEN }, "fleet.peers[0]"],
    [{ peers: ["https://10.0.0.5:8443"], token: TOKEN }, "fleet.peers[0]"],
    [{ peers: ["a.example:1", "A.example:1"], token: TOKEN }, "fleet.peers"],
    [{ peers: "10.0.0.5:8443", token: TOKEN }, "fleet.peers"],
    [{ peers: ["10.0.0.5:8443"] }, "fleet.token"],
    [{ token: "f".repeat(31) }, "fleet.token"],
    [{ token: "f".repeat(31) + " x" }, "fleet.token"],
    [{ location: "x".repeat(256) }, "fleet.location"],
    [{ heartbeat_s: 59 }, "fleet.heartbeat_s"],
    [{ heartbeat_s: 3601, min_heartbeat_s: 1 }, "fleet.heartbeat_s"],
    [{ min_heartbeat_s: 0 }, "fleet.min_heartbeat_s"],
    [{ missed_heartbeats: 0 }, "fleet.missed_heartbeats"],
    [{ missed_heartbeats: 6 }, "fleet.missed_heartbeats"],
    [{ share_cache: "yes" }, "fleet.share_cache"],
    [{ webhook_url: "ftp://x.example/" }, "fleet.webhook_url"],
    [{ webhook_url: "not a url" }, "fleet.webhook_url"],
    [{ bogus: 1 }, "fleet.bogus"],
  ])("%j is refused, naming %s", (f, key) => {
    expect(keyOf(() => fleet(f))).toBe(key);
  });
  test("share_cache = true is accepted (one origin download per object across the pool)", () => {
    expect(fleet({ share_cache: true }).fleet.share_cache).toBe(true);
  });
  test("the fleet token must differ from the admin token", () => {
    expect(keyOf(() => fleet({ token: TOKEN }, { token: TOKEN }))).toBe("fleet.token");
  });
  test("heartbeat_s down to the floor the admin sets (tests: 1 s)", () => {
    expect(fleet({ heartbeat_s: 1, min_heartbeat_s: 1 }).fleet.heartbeat_s).toBe(1);
    expect(fleet({ heartbeat_s: 3600 }).fleet.heartbeat_s).toBe(3600);
  });
});

type R = { health: "Normal" | "Degraded" | "Down" };
const RULES = { missedHeartbeats: 2 };
const ok = (at: number, health: R["health"] = "Normal"): Beat<R> => ({ ok: true, at, health, report: { health } });
const fail = (at: number): Beat<R> => ({ ok: false, at, error: "ECONNREFUSED" });
const fold = (beats: Beat<R>[]) => {
  let s: PeerState<R> = initialPeerState("p:1");
  const out: PeerState<R>[] = [];
  for (const b of beats) {
    s = onBeat(s, b, RULES, (r) => r.health);
    out.push(s);
  }
  return out;
};

describe("a peer's status from its heartbeats", () => {
  test("offline until it first answers, then online; offline after missed_heartbeats failures in a row", () => {
    const s = fold([fail(NOW), ok(NOW + 1000), fail(NOW + 2000), fail(NOW + 3000), ok(NOW + 4000)]);
    expect(s.map((x) => x.status)).toEqual(["offline", "online", "online", "offline", "online"]);
    expect(s.map((x) => x.missed)).toEqual([1, 0, 1, 2, 0]);
    expect(s[3]!.lastHeartbeatAt).toBe(NOW + 1000);
    expect(s[3]!.report).toEqual({ health: "Normal" }); // as last seen
  });
  test("a peer that answers with Degraded or Down health is degraded", () => {
    expect(fold([ok(NOW, "Degraded"), ok(NOW + 1, "Down")]).map((x) => x.status)).toEqual(["degraded", "degraded"]);
    expect(decidePeerStatus(1, true, "Degraded", RULES)).toBe("degraded");
    expect(decidePeerStatus(2, true, "Normal", { missedHeartbeats: 3 })).toBe("online");
  });
  test("a notice when a seen peer turns offline or degraded, never at start nor for a recovery nor twice", () => {
    const states = fold([fail(NOW), ok(NOW + 1), fail(NOW + 2), fail(NOW + 3), fail(NOW + 4), ok(NOW + 5), ok(NOW + 6, "Degraded")]);
    const prevs = [initialPeerState<R>("p:1"), ...states.slice(0, -1)];
    const notices = states.map((s, i) => decideNotice(prevs[i]!, s));
    expect(notices.map((n) => n?.event ?? null)).toEqual([null, null, null, "peer-offline", null, null, "peer-degraded"]);
  });
});

describe("ownerOf: rendezvous hashing", () => {
  const peers = ["10.0.0.1:8443", "10.0.0.2:8443", "10.0.0.3:8443", "10.0.0.4:8443"];
  const keys = Array.from({ length: 4000 }, (_, i) => `https://cdn.example/obj/${i}`);
  test("the same owner whatever the order of the list; null with no live peer", () => {
    for (const k of keys.slice(0, 200)) expect(ownerOf(k, [...peers].reverse())).toBe(ownerOf(k, peers));
    expect(ownerOf("k", [])).toBeNull();
  });
  test("keys spread over the peers (each within ±20% of a fair share)", () => {
    const n = new Map<string, number>();
    for (const k of keys) n.set(ownerOf(k, peers)!, (n.get(ownerOf(k, peers)!) ?? 0) + 1);
    for (const p of peers) expect(Math.abs((n.get(p) ?? 0) - keys.length / 4)).toBeLessThan(keys.length / 4 / 5);
  });
  test("a peer leaving moves only its own keys", () => {
    const gone = peers[2]!;
    const left = peers.filter((p) => p !== gone);
    for (const k of keys) {
      const before = ownerOf(k, peers);
      if (before !== gone) expect(ownerOf(k, left)).toBe(before);
    }
  });
  test("the hash is passed in or plain TS (FNV-1a + fmix32), 32-bit unsigned", () => {
    expect(hash32("")).toBe(hash32(""));
    expect(hash32("a")).not.toBe(hash32("b"));
    expect(hash32("x") >>> 0).toBe(hash32("x"));
    expect(ownerOf("k", ["a", "b"], (s) => (s.startsWith("b") ? 2 : 1))).toBe("b");
  });
});
