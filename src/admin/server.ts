/**
 * @module The management port: Bun.serve on loopback 8443 by default, handing every request to api.ts.
 * `[admin] tls = true` serves HTTPS with leaves minted from the appliance CA: one for 127.0.0.1 (or the listen
 * address), the default for clients that send no SNI, and one for the machine's name, chosen by SNI.
 * It also writes `<data_dir>/admin.url` so that `agate` (the CLI) finds a port chosen at start (`port = 0`).
 */
import "reflect-metadata";
import { randomBytes } from "node:crypto";
import { unlinkSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { AdminDeps } from "./deps";
import { apiError, handleApi } from "./api";
import { makeAdminContext } from "./context";
import { loadCa, makeLeafKeys, mintLeaf } from "../core/certs";
import { loadOrCreateApplianceCa } from "../store/ca-store";
import { log } from "../log";

export type AdminServer = { port: number; url: string; stop(): void };

type TlsEntry = { cert: string; key: string; serverName?: string };

async function adminTls(deps: AdminDeps): Promise<TlsEntry[]> {
  const c = deps.config;
  const pems = await loadOrCreateApplianceCa(deps.dataDir, c.gateway.name);
  const ca = await loadCa("appliance", { cert: pems.certPem, key: pems.keyPem });
  const keys = await makeLeafKeys();
  const now = new Date();
  const ip = c.admin.listen === "0.0.0.0" || c.admin.listen === "::" ? "127.0.0.1" : c.admin.listen;
  const names = [...new Set([ip, "127.0.0.1", "localhost", hostname().toLowerCase()])];
  const out: TlsEntry[] = [];
  for (const [i, name] of names.entries()) {
    try {
      const leaf = await mintLeaf(ca, keys, name, now, randomBytes(16));
      out.push(i === 0 ? { cert: leaf.certPem + pems.certPem, key: leaf.keyPem } : { cert: leaf.certPem + pems.certPem, key: leaf.keyPem, serverName: name });
    } catch (e) {
      log("warn", "admin TLS: no certificate for this name", { name, error: (e as Error).message });
    }
  }
  return out;
}

export async function startAdminServer(deps: AdminDeps): Promise<AdminServer> {
  const c = deps.config.admin;
  const ctx = makeAdminContext(deps);
  const tls = c.tls ? await adminTls(deps) : undefined;
  const server = Bun.serve({
    hostname: c.listen,
    port: c.port,
    // The API checks each route's own limit (JSON 256 KB, uploads 3 × 3 MB) before reading, and answers 413 as JSON;
    // Bun's own wall (a bare 413) is kept far above it so that only absurd bodies meet it.
    maxRequestBodySize: 1024 * 1024 * 1024,
    idleTimeout: 120, // diagnostics wait for five TLS probes
    ...(tls ? { tls } : {}),
    fetch: async (req, srv) => {
      const addr = srv.requestIP(req)?.address ?? "unknown";
      try {
        return await handleApi(req, deps, ctx, addr);
      } catch (e) {
        log("error", "admin API error", { error: String((e as Error)?.stack ?? e) });
        return apiError(500, "internal error; see the log");
      }
    },
    error(e) {
      log("error", "admin server error", { error: String(e?.stack ?? e) });
      return apiError(500, "internal error; see the log");
    },
  });
  const port = server.port ?? c.port;
  ctx.port = port;
  const host = c.listen === "0.0.0.0" ? "127.0.0.1" : c.listen === "::" ? "[::1]" : c.listen.includes(":") ? `[${c.listen}]` : c.listen;
  const url = `${tls ? "https" : "http"}://${host}:${port}`;
  const urlFile = join(deps.dataDir, "admin.url");
  try {
    writeFileSync(urlFile, url + "\n");
  } catch {
    // the CLI then needs --url
  }
  return {
    port,
    url,
    stop: () => {
      server.stop(true);
      ctx.close();
      try {
        unlinkSync(urlFile);
      } catch {
        // gone already
      }
    },
  };
}
