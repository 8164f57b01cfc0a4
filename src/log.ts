/**
 * @module JSON-line logging (STYLE §10). Lines are built here and handed to a sink: in the supervisor
 * the sink writes stdout and the log file; in a worker it batches lines to the supervisor.
 * Secrets never reach this module: callers pass ids, hosts and counts, never credentials.
 */
export type Level = "debug" | "info" | "warn" | "error";
export type LogSink = (line: string) => void;

let sink: LogSink = (line) => process.stdout.write(line + "\n");
let component = "main";

export function setLogSink(s: LogSink, comp?: string) {
  sink = s;
  if (comp) component = comp;
}

export function log(level: Level, msg: string, fields: Record<string, unknown> = {}) {
  sink(JSON.stringify({ t: new Date().toISOString(), level, c: component, msg, ...fields }));
}

export const logInfo = (msg: string, f?: Record<string, unknown>) => log("info", msg, f);
export const logWarn = (msg: string, f?: Record<string, unknown>) => log("warn", msg, f);
export const logError = (msg: string, f?: Record<string, unknown>) => log("error", msg, f);
