/** @module The management port: Bun.serve on loopback 8443 by default, handing every request to api.ts. */
import type { Supervisor } from "../supervisor/supervisor";
import { apiError, handleApi } from "./api";
import { log } from "../workers/log";

export type AdminServer = { port: number; stop(): void };

export function startAdminServer(sup: Supervisor): AdminServer {
  const c = sup.config.admin;
  const server = Bun.serve({
    hostname: c.listen,
    port: c.port,
    maxRequestBodySize: 16 * 1024 * 1024,
    fetch: async (req) => {
      try {
        return await handleApi(req, sup);
      } catch (e) {
        log("error", "admin API error", { error: String((e as Error)?.stack ?? e) });
        return apiError(500, "internal error; see the log");
      }
    },
  });
  return { port: server.port ?? c.port, stop: () => server.stop(true) };
}
