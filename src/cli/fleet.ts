/**
 * @module `agate fleet` (issue 14): every gateway of the fleet as `GET /api/fleet` has it — status (online /
 * degraded / offline), name, location, version, health and reasons, the platform link, last heartbeat, missed
 * heartbeats, active agents 60 min / 24 h, savings, connections against capacity. Exit 0 whatever the peers' state:
 * like `/api/fleet`, a peer's trouble is shown, not made this gateway's failure.
 */
import type { CliIo } from "./cache";
import { fleetSteerCommand } from "./fleet-steer";

export const FLEET_USAGE = `  fleet                           every gateway of the fleet ([fleet] peers and this one) and its status`;

export async function fleetCommand(args: string[], io: CliIo): Promise<void> {
  if (args[0] === "assign-chain" || args[0] === "push-config") return fleetSteerCommand(args[0], args.slice(1), io);
  if (args.length) throw io.usage(`agate fleet takes no arguments but assign-chain or push-config, got: ${args.join(" ")}`);
  const f = await io.call("/api/fleet");
  if (io.json) return io.print(f);
  const ago = (s: string | null) => (s ? `${Math.max(0, Math.round((Date.now() - Date.parse(s)) / 1000))} s ago` : "never");
  const rows = f.gateways.map((g: any) => {
    const m = g.member;
    return [
      g.status,
      g.self ? "(this gateway)" : g.peer,
      m?.name ?? "(never answered)",
      m?.location ?? "",
      m?.version ?? "",
      m ? m.health + (m.reasons.length ? ` (${m.reasons.join("; ")})` : "") : "",
      m ? `${m.platform.status}${m.platform.connected_on ? `, connected on ${m.platform.connected_on}` : ""}` : "",
      g.self ? "" : ago(g.last_heartbeat) + (g.last_error ? ` (${g.last_error})` : ""),
      g.missed_heartbeats,
      m ? `${m.active_agents_60m} / ${m.active_agents_24h}` : "",
      m ? io.bytes(m.savings_30d.saved_bytes) : "",
      m ? `${m.open_connections} / ${m.capacity}` : "",
    ];
  });
  io.print(io.table(rows, ["STATUS", "GATEWAY", "NAME", "LOCATION", "VERSION", "HEALTH", "PLATFORM LINK", "LAST HEARTBEAT", "MISSED", "AGENTS 60M/24H", "SAVED 30D", "CONNECTIONS"]));
  io.print(`heartbeat every ${f.heartbeat_s} s, offline after ${f.missed_heartbeats} missed; webhook: ${f.webhook.configured ? `${f.webhook.sent} sent, ${f.webhook.failed} failed, ${f.webhook.pending} pending` : "none"}`);
}
