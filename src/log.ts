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

/** the ISO time of the last line's millisecond: a burst of lines within one ms formats the time once */
let isoMs = -1;
let iso = "";

/**
 * One JSON line: `t`, `level`, `c`, `msg`, then the fields in their order. The fields object is serialised as it is
 * and joined on, not spread into a new object first (a hit's access line has ~25 fields; the copy showed in the
 * worker's profile as `copyDataProperties`). A field named like a fixed key repeats it later in the line, and a JSON
 * reader takes the last one, as the spread used to.
 */
export function log(level: Level, msg: string, fields: Record<string, unknown> = {}) {
  const ms = Date.now();
  if (ms !== isoMs) (isoMs = ms), (iso = new Date(ms).toISOString());
  const head = `{"t":"${iso}","level":"${level}","c":${JSON.stringify(component)},"msg":${JSON.stringify(msg)}`;
  const rest = JSON.stringify(fields);
  sink(rest.length > 2 ? `${head},${rest.slice(1)}` : `${head}}`);
}

export const logInfo = (msg: string, f?: Record<string, unknown>) => log("info", msg, f);
export const logWarn = (msg: string, f?: Record<string, unknown>) => log("warn", msg, f);
export const logError = (msg: string, f?: Record<string, unknown>) => log("error", msg, f);
