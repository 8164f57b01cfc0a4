/**
 * @module Entry point: `bun src/main.ts [--config FILE]` starts the gateway (embedded defaults without a file).
 * Signals: SIGHUP reloads the config file; SIGTERM/SIGINT drain and exit 0.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DEFAULTS, type Config } from "./core/config";
import { loadConfigFile, startSupervisor } from "./supervisor/supervisor";

function usage(): never {
  console.error("usage: bun src/main.ts [--config FILE]");
  process.exit(2);
}

const args = process.argv.slice(2);
let configPath: string | null = null;
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  if (a === "--config" || a === "-c") configPath = args[++i] ?? usage();
  else if (a.startsWith("--config=")) configPath = a.slice("--config=".length);
  else if (a === "--help" || a === "-h") usage();
  else {
    console.error(`unknown argument: ${a}`);
    usage();
  }
}

// Without --config, a config saved by the admin API into the default data directory is used (it was written
// there because the gateway had started on the embedded defaults).
if (!configPath) {
  const saved = join(DEFAULTS.gateway.data_dir, "agate.toml");
  if (existsSync(saved)) configPath = saved;
}

let config: Config;
try {
  config = configPath ? loadConfigFile(configPath) : DEFAULTS;
} catch (e) {
  console.error(`agate: bad config: ${(e as Error).message}`);
  process.exit(78); // EX_CONFIG
}

// Signal handlers go in before the "listening" line, so that a SIGHUP right after it is never fatal.
let sup: Awaited<ReturnType<typeof startSupervisor>> | null = null;
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  while (!sup) await Bun.sleep(20);
  await sup.drain();
  process.exit(0);
};
process.on("SIGHUP", () => void sup?.reloadFromFile());
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

try {
  sup = await startSupervisor({ config, configPath });
} catch (e) {
  console.error(`agate: cannot start: ${(e as Error).message}`);
  process.exit(1);
}
