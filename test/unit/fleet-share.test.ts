/**
 * `[fleet] share_cache`'s pure rules (core/fleet-share.ts): the owner of a key among the live sharers with a fixed
 * live set, one gateway leaving moves only its own keys (and its coming back moves exactly those back), a peer's
 * request is never passed on, and which heartbeat rows count as live sharers.
 */
import { describe, expect, test } from "bun:test";
import { type PeerRowLike, type SharePeer, type ShareView, decideFillRoute, decideNextOwner, decideSharePeers, normalizeAddr } from "../../src/core/fleet-share";
import { ownerOf } from "../../src/core/fleet";

const peer = (name: string, i: number): SharePeer => ({ name, peer: `10.0.0.${i}:8443`, host: `10.0.0.${i}`, cachePort: 8080, caPem: `ca-${name}` });
const view = (...names: string[]): ShareView => ({ peers: names.map(peer), addrs: names.map((_, i) => `10.0.0.${i}`) });
const keys = Array.from({ length: 3000 }, (_, i) => `GET https://camsrepo.qg1.apps.qualys.com/pkg/${i}.bin`);
const ownerName = (k: string, self: string, v: ShareView) => {
  const r = decideFillRoute(k, self, v, "agent");
  return r.from === "peer" ? r.owner.name : r.from === "copy" ? self : null;
};

describe("decideFillRoute: the owner among the live sharers", () => {
  test("every gateway picks the same owner for a key with the same live set, whatever its own name and the order", () => {
    const all = ["gw-a", "gw-b", "gw-c"];
    for (const k of keys.slice(0, 300)) {
      const owners = all.map((self) => ownerName(k, self, view(...all.filter((n) => n !== self).reverse())));
      expect(new Set(owners).size).toBe(1);
      expect(owners[0]).toBe(ownerOf(k, all)!);
    }
  });

  test("a fixed live set: known owners for known keys (stable across releases: peers route alike only if this holds)", () => {
    const got = [0, 1, 2, 3, 4].map((i) => ownerName(keys[i]!, "gw-a", view("gw-b", "gw-c")));
    expect(got).toEqual([0, 1, 2, 3, 4].map((i) => ownerOf(keys[i]!, ["gw-a", "gw-b", "gw-c"])));
    // each of the three owns roughly a third of 3000 keys
    const n = new Map<string, number>();
    for (const k of keys) n.set(ownerName(k, "gw-a", view("gw-b", "gw-c"))!, (n.get(ownerName(k, "gw-a", view("gw-b", "gw-c"))!) ?? 0) + 1);
    for (const name of ["gw-a", "gw-b", "gw-c"]) expect(n.get(name)!).toBeGreaterThan(800);
  });

  test("one peer leaving moves only its own keys; coming back moves exactly those back", () => {
    const before = keys.map((k) => ownerName(k, "gw-a", view("gw-b", "gw-c", "gw-d")));
    const after = keys.map((k) => ownerName(k, "gw-a", view("gw-b", "gw-d"))); // gw-c left
    let moved = 0;
    keys.forEach((_, i) => {
      if (before[i] !== "gw-c") expect(after[i]).toBe(before[i]);
      else (moved++, expect(after[i]).not.toBe("gw-c"));
    });
    expect(moved).toBeGreaterThan(500);
    const back = keys.map((k) => ownerName(k, "gw-a", view("gw-b", "gw-c", "gw-d")));
    expect(back).toEqual(before);
  });

  test("a peer's request is never passed on as a fill: only a copy from the runner-up; no live peers: the origin", () => {
    const k = keys.find((x) => ownerOf(x, ["gw-a", "gw-b", "gw-c"]) === "gw-b")!;
    const runnerUp = ownerOf(k, ["gw-b", "gw-c"]);
    // gw-a, asked by a peer, sees gw-b as the owner: it still does not ask gw-b to fill (no chains, no waits on each other)
    const asked = decideFillRoute(k, "gw-a", view("gw-b", "gw-c"), "peer");
    expect(asked).toEqual({ from: "copy", peer: peer(runnerUp!, runnerUp === "gw-b" ? 0 : 1) });
    expect(decideFillRoute(k, "gw-a", view("gw-b", "gw-c"), "agent")).toEqual({ from: "peer", owner: peer("gw-b", 0) });
    expect(decideFillRoute(keys[0]!, "gw-a", null, "agent")).toEqual({ from: "origin", why: "no-peers" });
    expect(decideFillRoute(keys[0]!, "gw-a", view(), "peer")).toEqual({ from: "origin", why: "no-peers" });
  });

  test("an owner's miss asks the runner-up — the owner the key had while this gateway was away — for a copy", () => {
    for (const k of keys.slice(0, 300)) {
      const r = decideFillRoute(k, "gw-a", view("gw-b", "gw-c"), "agent");
      if (r.from !== "copy") continue;
      // the owner the other two computed while gw-a was offline
      expect(r.peer.name).toBe(ownerName(k, "gw-b", view("gw-c"))!);
    }
  });
});

describe("decideSharePeers: who counts as a live sharer", () => {
  const row = (p: string, status: PeerRowLike["status"], name: string, health = "Normal", share: boolean | null = true): PeerRowLike => ({
    peer: p,
    status,
    member: share === null ? null : { name, health, share: share ? { cache_port: 9000, ca_pem: "pem" } : null },
  });
  const hostOf = (p: string) => p.replace(/:\d+$/, "");
  test("answering, sharing and not Down, with a name of its own", () => {
    const rows = [
      row("10.0.0.2:8443", "online", "gw-b"),
      row("10.0.0.3:8443", "degraded", "gw-c", "Degraded"),
      row("10.0.0.4:8443", "offline", "gw-d"), // last seen, now offline
      row("10.0.0.5:8443", "degraded", "gw-e", "Down"), // maintenance: answers but serves no agents
      row("10.0.0.6:8443", "online", "gw-f", "Normal", false), // share_cache off there
      row("10.0.0.7:8443", "offline", "gw-g", "Normal", null), // never answered
    ];
    const r = decideSharePeers("gw-a", rows, hostOf);
    expect(r.peers).toEqual([
      { name: "gw-b", peer: "10.0.0.2:8443", host: "10.0.0.2", cachePort: 9000, caPem: "pem" },
      { name: "gw-c", peer: "10.0.0.3:8443", host: "10.0.0.3", cachePort: 9000, caPem: "pem" },
    ]);
    expect(r.duplicates).toEqual([]);
  });
  test("a name two gateways report is left out (both would own the same keys), this gateway's own name included", () => {
    const r = decideSharePeers("gw-a", [row("10.0.0.2:8443", "online", "gw-a"), row("10.0.0.3:8443", "online", "gw-x"), row("10.0.0.4:8443", "online", "gw-x"), row("10.0.0.5:8443", "online", "gw-y")], hostOf);
    expect(r.peers.map((p) => p.name)).toEqual(["gw-y"]);
    expect(r.duplicates.sort()).toEqual(["gw-a", "gw-x"]);
  });
  test("addresses compare as the socket gives them", () => {
    expect(normalizeAddr("::ffff:10.0.0.5")).toBe("10.0.0.5");
    expect(normalizeAddr("[FD00::5]")).toBe("fd00::5");
  });
});

describe("decideNextOwner: where a miss goes when its owner does not answer", () => {
  test("the owner every gateway picks without the failed one; null when that is this gateway", () => {
    for (const k of keys.slice(0, 300)) {
      const owner = ownerOf(k, ["gw-a", "gw-b", "gw-c"]);
      if (owner === "gw-a") continue;
      const next = decideNextOwner(k, "gw-a", view("gw-b", "gw-c"), owner!);
      const without = ownerOf(k, ["gw-a", "gw-b", "gw-c"].filter((n) => n !== owner));
      expect(next?.name ?? "gw-a").toBe(without!);
      // the other survivor agrees
      const other = owner === "gw-b" ? "gw-c" : "gw-b";
      expect(decideNextOwner(k, other, view("gw-a", owner!), owner!)?.name ?? other).toBe(without!);
    }
  });
});
