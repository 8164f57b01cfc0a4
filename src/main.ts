/**
 * @module Entry point: `bun src/main.ts [--config FILE]` starts the gateway (embedded defaults without a file):
 * args → load and parse the config → `startSupervisor` → `startAdminServer(deps = the supervisor)`; signals.
 * This is the one place that knows both the supervisor and the admin plane (neither imports the other).
 * Signals: SIGHUP reloads the config file (and the overlay); SIGTERM/SIGINT drain and exit 0. A config that cannot
 * be used (a rule broken, a port in use or not permitted, a named file missing) exits 78 (EX_CONFIG) with the key.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DEFAULTS, type Config } from "./core/config";
import { startSupervisor, type Supervisor } from "./supervisor/supervisor";
import { checkApplicable } from "./supervisor/preflight";
import { loadLayered } from "./store/config-files";
import { startAdminServer, type AdminServer } from "./admin/server";
import { log } from "./log";
import { VERSION } from "./version";

export type Gateway = {
  supervisor: Supervisor;
  admin: AdminServer;
  /** Drain the supervisor (health answers 503 meanwhile), then close the management port. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
};

/** The supervisor and then the management port with the supervisor as its deps; logs the "listening" line. */
export async function startGateway(opts: { config: Config; configPath: string | null }): Promise<Gateway> {
  const supervisor = await startSupervisor(opts);
  let admin: AdminServer;
  try {
    admin = await startAdminServer(supervisor);
  } catch (e) {
    await supervisor.drain(); // no connection is open yet: this only stops the workers
    throw e;
  }
  const ports = supervisor.ports;
  log("info", "listening", {
    proxy: ports.proxy,
    cache: supervisor.config.cache.enabled ? ports.cache : null,
    admin: admin.port,
    workers: supervisor.workerCount,
    data_dir: supervisor.dataDir,
    version: VERSION,
  });
  let stopping: Promise<void> | null = null;
  const stop = () =>
    (stopping ??= (async () => {
      await supervisor.drain();
      admin.stop();
    })());
  return { supervisor, admin, stop, [Symbol.asyncDispose]: stop };
}

function usage(): never {
  console.error("usage: bun src/main.ts [--config FILE] [--version]");
  process.exit(2);
}

async function main(args: string[]) {
  let configPath: string | null = null;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--config" || a === "-c") configPath = args[++i] ?? usage();
    else if (a.startsWith("--config=")) configPath = a.slice("--config=".length);
    else if (a === "--help" || a === "-h") usage();
    else if (a === "--version" || a === "-V") {
      console.log(`agate ${VERSION}`);
      process.exit(0);
    }
    else {
      console.error(`unknown argument: ${a}`);
      usage();
    }
  }

  // Without --config, a config an earlier version's admin API saved into the default data directory is still read
  // (changes made through the API now go to the overlay <data_dir>/agate.auto.toml instead).
  if (!configPath) {
    const saved = join(DEFAULTS.gateway.data_dir, "agate.toml");
    if (existsSync(saved)) configPath = saved;
  }

  let config: Config;
  try {
    // the admin's file (or the defaults), the admin API's overlay <data_dir>/agate.auto.toml on top
    config = loadLayered(configPath).config;
    checkApplicable(config, null); // ports free and permitted, named files readable: refused now, not per request later
  } catch (e) {
    console.error(`agate: bad config: ${(e as Error).message}`);
    process.exit(78); // EX_CONFIG
  }

  // Signal handlers go in before the "listening" line, so that a SIGHUP right after it is never fatal.
  // A stop signal during start-up waits for the start to finish, then drains.
  let started: Promise<Gateway> | null = null;
  let running: Gateway | null = null;
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const gw = await started?.catch(() => null); // a failed start exits 1 below
    if (!gw) return;
    await gw.stop();
    process.exit(0);
  };
  process.on("SIGHUP", () => void running?.supervisor.reloadFromFile());
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);

  try {
    started = startGateway({ config, configPath });
    running = await started;
  } catch (e) {
    console.error(`agate: cannot start: ${(e as Error).message}`);
    process.exit(1);
  }
}

if (import.meta.main) await main(process.argv.slice(2));
