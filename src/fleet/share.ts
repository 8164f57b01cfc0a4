/**
 * @module `[fleet] share_cache` in the supervisor (issue 14): follows the heartbeats (src/fleet/heartbeat.ts) and
 * pushes the live sharers — peers that answer, share, and have a name of their own — with the peers' resolved
 * addresses to every worker as a `{ t: "fleet" }` message (workers/protocol.ts), the way health reaches them: on
 * every change, and to a worker that (re)starts. The workers do the rest on the cache port (workers/peer-fill.ts).
 */
import type { Config } from "../core/config";
import { parsePeer } from "../core/fleet-config";
import { type ShareView, decideSharePeers, sameShareView } from "../core/fleet-share";
import type { SupervisorToWorker } from "../workers/protocol";
import type { FleetMonitor } from "./heartbeat";
import { log } from "../log";

export type ShareSend = { broadcast(m: SupervisorToWorker): void; send(index: number, m: SupervisorToWorker): void };

export class FleetShare {
  private view: ShareView | null = null;
  private warned = "";

  constructor(
    private fleet: FleetMonitor,
    private getConfig: () => Config,
    private out: ShareSend,
  ) {
    fleet.onChange(() => this.update());
    this.update();
  }

  /** The view the workers have now (null: share_cache off, or cache mode off). */
  current(): ShareView | null {
    return this.view;
  }

  /** Recompute from the heartbeats and the config; push to the workers when it changed. */
  update() {
    const c = this.getConfig();
    let next: ShareView | null = null;
    if (c.fleet.share_cache && c.cache.enabled && c.fleet.token) {
      const { peers, duplicates } = decideSharePeers(c.gateway.name, this.fleet.report().peers, (p) => parsePeer("fleet.peers", p).host);
      const dup = duplicates.join(",");
      if (dup !== this.warned) {
        this.warned = dup;
        if (dup) log("warn", "fleet: gateways share a name; share_cache leaves them out (give each gateway its own [gateway] name)", { names: duplicates });
      }
      next = { peers, addrs: this.fleet.peerAddrs().sort() };
    }
    if (sameShareView(next, this.view)) return;
    const was = this.view?.peers.map((p) => p.name) ?? [];
    this.view = next;
    log("info", "fleet: cache sharers", { live: next?.peers.map((p) => p.name) ?? null, was });
    this.out.broadcast({ t: "fleet", share: next });
  }

  /** A (re)started worker gets the current view (it starts with none). */
  onReady(index: number) {
    if (this.view) this.out.send(index, { t: "fleet", share: this.view });
  }
}
