/**
 * @module `agate`, the command line for the management API: status | stats | config get/set | certs
 * list/upload/edit/delete/assign | logs | diag | reset | token | metrics. Readable tables by default, `--json` for
 * scripts. Where the API is: `--url` and `--token`, else from `--config FILE` (its [admin] section and data
 * directory), else from `--data-dir DIR` (default ./data: `admin.url`, written by the running gateway, and
 * `admin.token`). Exit codes: 0 done, 1 refused by the gateway, 2 usage, 3 cannot reach the gateway.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { parseConfig, type Config } from "../core/config";
import { VERSION } from "../version";
import { EX_CONFIG, checkConfigFile } from "./config-check";
import { openArchive, openCommand } from "../admin/diagnostics";
import { CACHE_USAGE, cacheCommand } from "./cache";
import { FLEET_USAGE, fleetCommand } from "./fleet";
import { FLEET_STEER_USAGE, exportCommand, importCommand } from "./fleet-steer";

const USAGE = `usage: agate [--url URL] [--token TOKEN] [--config FILE | --data-dir DIR] [--json] [--insecure] COMMAND

commands:
  status                          health, ports, modes, TLS, CA expiry
  stats [--range 1h|24h|7d]       counters, agents, savings, connections over time
  config get [KEY]                the running config (secrets hidden), or one key (e.g. cache.port)
  config set KEY=VALUE... [--force]  change keys, e.g. proxy.port=1081 cache.allowed_domains=microsoft.com,adobe.com
                                  (saved to data_dir/agate.auto.toml; --force saves an upstream proxy that fails its test)
  config check FILE               validate a config file offline (key and rule, line:column); exit 0 or 78
  reload                          re-read the config file and the overlay (like SIGHUP)
  certs list                      CAs: appliance, common, uploaded chains (role, validity, expiry warning)
  certs upload --root F [--intermediate F] --key F [--cn NAME] [--description TEXT]
  certs edit ID [--cn NAME] [--description TEXT]
  certs delete ID
  certs assign ID                 make it the CA that signs agents' certificates ("appliance" to go back)
  logs [--q TEXT] [--id ID] [--limit N] [--offset N]
  diag [--target HOST:PORT[,…]] [--out FILE]
                                  connectivity test of the pod's hosts (+ targets), resources, encrypted age archive
                                  (password shown once); exits 1 when a check fails, 0 when all pass
  diag open FILE --password P     decrypt an archive locally (prints JSON; or: age -d FILE, see diag's output)
  reset [--yes]                   back to unconfigured (the --config file is kept); without --yes, says what it would do
  token                           print the admin token (from the config or the data directory)
  maintenance on|off              refuse new connections with 503 (health 503 on every port), or serve again;
                                  established tunnels and downloads continue; kept across restarts
  metrics                         the Prometheus metrics
${CACHE_USAGE}
${FLEET_USAGE}
${FLEET_STEER_USAGE}
  --version                       the version of this command`;

class Usage extends Error {}
class Refused extends Error {}
class Unreachable extends Error {}

type Opts = { url?: string; token?: string; config?: string; dataDir?: string; json: boolean; insecure: boolean; rest: string[]; flags: Record<string, string | true> };

const GLOBAL_WITH_VALUE = new Set(["--url", "--token", "--config", "--data-dir"]);

function parseArgs(argv: string[]): Opts {
  const o: Opts = { json: false, insecure: false, rest: [], flags: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.startsWith("--") ? a.indexOf("=") : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const inline = eq > 0 ? a.slice(eq + 1) : undefined;
    const value = () => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new Usage(`${name} needs a value`);
      return v;
    };
    if (GLOBAL_WITH_VALUE.has(name)) {
      const v = value();
      if (name === "--url") o.url = v.replace(/\/+$/, "");
      else if (name === "--token") o.token = v;
      else if (name === "--config") o.config = v;
      else o.dataDir = v;
    } else if (name === "--json") o.json = true;
    else if (name === "--insecure") o.insecure = true;
    else if (name === "--yes" || name === "-y") o.flags.yes = true;
    else if (name === "--help" || name === "-h") o.flags.help = true;
    else if (name === "--version" || name === "-V") o.flags.version = true;
    else if (name === "--force") o.flags.force = true;
    else if (name.startsWith("--")) o.flags[name.slice(2)] = value();
    else o.rest.push(a);
  }
  return o;
}

type Target = { url: string; token: string | null; ca: string | null; dataDir: string };

const readTrim = (p: string) => (existsSync(p) ? readFileSync(p, "utf8").trim() : null);

function loadConfig(path: string): Config {
  try {
    return parseConfig(Bun.TOML.parse(readFileSync(path, "utf8")));
  } catch (e) {
    throw new Usage(`cannot use --config ${path}: ${(e as Error).message}`);
  }
}

function resolveTarget(o: Opts): Target {
  let dataDir = resolve(o.dataDir ?? "./data");
  let url: string | null = null;
  let token: string | null = null;
  if (o.config) {
    const c = loadConfig(o.config);
    dataDir = resolve(c.gateway.data_dir);
    token = c.admin.token;
    if (c.admin.port !== 0) {
      const host = c.admin.listen === "0.0.0.0" ? "127.0.0.1" : c.admin.listen === "::" ? "[::1]" : c.admin.listen.includes(":") ? `[${c.admin.listen}]` : c.admin.listen;
      url = `${c.admin.tls ? "https" : "http"}://${host}:${c.admin.port}`;
    }
  }
  // The running gateway's management port (written into data_dir at its start) before the one a file names: the
  // file may hold a change not applied yet (issue 10).
  url = o.url ?? readTrim(join(dataDir, "admin.url")) ?? url ?? "http://127.0.0.1:8443";
  token = o.token ?? token ?? readTrim(join(dataDir, "admin.token"));
  return { url, token, ca: readTrim(join(dataDir, "ca", "appliance.pem")), dataDir };
}

async function call(t: Target, o: Opts, path: string, init: RequestInit = {}): Promise<any> {
  if (!t.token) throw new Usage(`no admin token: pass --token, or --config FILE / --data-dir DIR where the gateway keeps admin.token (looked in ${t.dataDir})`);
  let r: Response;
  try {
    r = await fetch(t.url + path, {
      ...init,
      headers: { authorization: `Bearer ${t.token}`, ...(init.headers ?? {}) },
      ...(t.url.startsWith("https") ? { tls: o.insecure ? { rejectUnauthorized: false } : t.ca ? { ca: t.ca } : {} } : {}),
    } as RequestInit);
  } catch (e) {
    throw new Unreachable(`cannot reach the management API at ${t.url}: ${(e as Error).message}`);
  }
  const type = r.headers.get("content-type") ?? "";
  const body: any = type.includes("json") ? await r.json() : type.startsWith("text/") ? await r.text() : new Uint8Array(await r.arrayBuffer());
  if (!r.ok) {
    const msg = body && typeof body === "object" && "error" in body ? `${body.error}${body.field ? ` [${body.field}]` : ""}` : `HTTP ${r.status}`;
    throw new Refused(msg);
  }
  return body;
}

// ─── output ─────────────────────────────────────────────────────────────────────────────────────────────────────

function table(rows: (string | number | null | undefined)[][], header?: string[]): string {
  const all = (header ? [header, ...rows] : rows).map((r) => r.map((c) => (c === null || c === undefined ? "" : String(c))));
  const widths: number[] = [];
  for (const r of all) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  const out = all.map(line);
  if (header) out.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  return out.join("\n");
}

const bytes = (n: number) => {
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) (n /= 1024), i++;
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
};
const day = (s: string | null | undefined) => (s ? s.slice(0, 10) : "");

function flatten(o: unknown, prefix = "", out: [string, unknown][] = []): [string, unknown][] {
  if (o && typeof o === "object" && !Array.isArray(o) && Object.keys(o).length) {
    for (const [k, v] of Object.entries(o)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else out.push([prefix, o]);
  return out;
}

const show = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v));

// ─── commands ───────────────────────────────────────────────────────────────────────────────────────────────────

async function status(t: Target, o: Opts) {
  const s = await call(t, o, "/api/status");
  if (o.json) return print(s);
  print(
    table([
      ["name", `${s.name} ${s.version}`],
      ["health", s.health + (s.reasons.length ? ` (${s.reasons.join("; ")})` : "")],
      ["uptime", `${s.uptime_s} s`],
      ["workers", `${s.workers.alive}/${s.workers.total}`],
      ["proxy port", `${s.ports.proxy} on ${s.listen.proxy}`],
      ["cache port", s.modes.cache ? `${s.ports.cache} on ${s.listen.cache}` : "off"],
      ["management", `${s.ports.admin} on ${s.listen.admin}${s.admin_tls ? " (HTTPS)" : ""}`],
      ["modes", Object.entries(s.modes).filter(([, v]) => v).map(([k]) => k).join(", ")],
      ["min TLS", s.min_tls],
      ["allowed domains", s.allowed_domains.join(", ") || "(none)"],
      ["upstream proxy", s.upstream_proxy ?? "(none)"],
      ...(s.platform ? [["QAG status", linkLine(s.platform)], ...s.platform.hosts.map((h: any) => [`  ${h.host}`, linkLine(h)])] : []),
      ...(s.maintenance?.on ? [["maintenance", `on since ${s.maintenance.since ?? "(unknown)"}: new connections refused`]] : []),
      ["CA", s.ca ? `${s.ca.kind}: ${s.ca.common_name}, expires ${day(s.ca.not_after)} (${s.ca.expires_in_days} days)` : "(none)"],
      ["active tunnels", s.active_tunnels],
      ["config file", s.config_file ?? "(none: embedded defaults)"],
    ]),
  );
}

/** "Connected, connected on …, 12 ms" or "Not connected (tcp: …)": the platform link, overall or per host. */
function linkLine(l: any): string {
  const on = l.connected_on ? `, connected on ${l.connected_on}` : "";
  const err = l.status !== "Connected" && l.last_error ? ` (${l.last_error.hop}: ${l.last_error.reason})` : "";
  const ms = l.latency_ms != null ? `, ${l.latency_ms} ms` : "";
  return `${l.status}${on}${ms}${err}`;
}

async function maintenance(t: Target, o: Opts) {
  const arg = o.rest[1];
  if (arg !== "on" && arg !== "off") throw new Usage("maintenance needs on or off: agate maintenance on|off");
  const r = await call(t, o, "/api/maintenance", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ on: arg === "on" }) });
  print(o.json ? r : r.on ? `maintenance on since ${r.since}: ${r.effect}` : "maintenance off: serving again");
}

async function stats(t: Target, o: Opts) {
  const range = typeof o.flags.range === "string" ? o.flags.range : "1h";
  const s = await call(t, o, `/api/stats?range=${encodeURIComponent(range)}`);
  if (o.json) return print(s);
  const sv = s.bandwidth_savings_30d;
  print(
    table([
      ["active tunnels", s.active_tunnels],
      ["tunnels since start", s.totals.totalTunnels],
      ["bytes up / down", `${bytes(s.totals.bytesUp)} / ${bytes(s.totals.bytesDown)}`],
      ["unique IPs (60 min)", s.unique_ips_60m],
      ["active agents (60 min)", s.active_agents_60m],
      ["total agents (7 days)", s.total_agents_7d],
      ["unique IPs (7 days)", s.unique_ips_7d],
      ["bandwidth saved (30 days)", `${bytes(sv.saved_bytes)} (${bytes(sv.served_bytes)} served from cache, ${bytes(sv.fetched_bytes)} fetched)`],
      ["cache hits / misses", `${s.cache.hits} / ${s.cache.misses}`],
      ["refusals", Object.entries(s.totals.refusals).map(([k, v]) => `${k}=${v}`).join(", ") || "0"],
      ["errors", Object.entries(s.totals.errors).map(([k, v]) => `${k}=${v}`).join(", ") || "0"],
    ]),
  );
  const pts = (s.series.points as { t: number; proxy_ips: number; cache_ips: number; connections: number }[]).filter((p) => p.proxy_ips || p.cache_ips || p.connections);
  if (pts.length) {
    print(`\nconnections over time (${s.series.range}, busy buckets only):`);
    print(table(pts.slice(-20).map((p) => [new Date(p.t).toISOString().slice(0, 16).replace("T", " "), p.proxy_ips, p.cache_ips, p.connections]), ["time (UTC)", "proxy IPs", "agent IPs", "connections"]));
  }
}

/** KEY=VALUE → a partial config, typed after the current value (numbers, booleans, lists split on commas). */
export function partialFromAssignments(current: Record<string, any>, pairs: string[]): Record<string, any> {
  const partial: Record<string, any> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new Usage(`expected KEY=VALUE, got ${JSON.stringify(pair)}`);
    const key = pair.slice(0, eq).trim();
    const raw = pair.slice(eq + 1);
    const dot = key.indexOf(".");
    if (dot <= 0) throw new Usage(`${key}: expected SECTION.KEY, e.g. proxy.port`);
    const section = key.slice(0, dot);
    const name = key.slice(dot + 1);
    const cur = current[section];
    if (section === "hosts") {
      // [hosts] is replaced whole: start from the current mappings; an empty value removes one.
      partial.hosts ??= { ...(cur ?? {}) };
      if (raw === "") delete partial.hosts[name];
      else partial.hosts[name] = raw;
      continue;
    }
    if (section === "upstream_proxy") partial.upstream_proxy ??= { ...(cur ?? {}) }; // replaced whole too
    partial[section] ??= {};
    const was = cur && typeof cur === "object" ? cur[name] : undefined;
    partial[section][name] = typedValue(raw, was, key);
  }
  return partial;
}

function typedValue(raw: string, was: unknown, key = ""): unknown {
  const t = raw.trim();
  if (Array.isArray(was)) {
    if (t.startsWith("[")) return JSON.parse(t);
    const items = t === "" ? [] : t.split(",").map((x) => x.trim()).filter(Boolean);
    const numeric = typeof was[0] === "number" || /ports$/.test(key);
    return numeric ? items.map((x) => (/^\d+$/.test(x) ? Number(x) : x)) : items;
  }
  if (typeof was === "number") return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : t;
  if (typeof was === "boolean") return t === "true" ? true : t === "false" ? false : t;
  if (was === null && t === "") return null;
  if (was === undefined) {
    try {
      return JSON.parse(t);
    } catch {
      return raw;
    }
  }
  return raw;
}

async function config(t: Target, o: Opts) {
  const sub = o.rest[1];
  if (sub === "get") {
    const c = await call(t, o, "/api/config");
    const key = o.rest[2];
    if (key) {
      let v: any = c;
      for (const part of key.split(".")) {
        if (v === null || typeof v !== "object" || !(part in v)) throw new Refused(`${key}: no such key`);
        v = v[part];
      }
      return print(o.json ? v : typeof v === "object" && v !== null ? JSON.stringify(v, null, 2) : show(v));
    }
    if (o.json) return print(c);
    return print(table(flatten(c).map(([k, v]) => [k, show(v)])));
  }
  if (sub === "set") {
    const pairs = o.rest.slice(2);
    if (!pairs.length) throw new Usage("config set needs KEY=VALUE arguments, e.g. agate config set proxy.port=1081");
    const current = await call(t, o, "/api/config");
    const partial = partialFromAssignments(current, pairs);
    const q = o.flags.force ? "?force=1" : "";
    const r = await call(t, o, `/api/config${q}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(partial) });
    if (o.json) return print(r);
    print(`saved to ${r.file} and applied (open tunnels are untouched)`);
    if (r.upstream_test) print(r.upstream_test.ok ? `upstream proxy ${r.upstream_test.via}: reaches ${r.upstream_test.host}` : `WARNING: upstream proxy ${r.upstream_test.via} does not reach ${r.upstream_test.host} (${r.upstream_test.hop}: ${r.upstream_test.reason})`);
    if (r.restart_required.length) print(`takes effect at the next start: ${r.restart_required.join(", ")}`);
    return;
  }
  throw new Usage("config get [KEY] | config set KEY=VALUE... | config check FILE");
}

async function certs(t: Target, o: Opts) {
  const sub = o.rest[1];
  const id = o.rest[2];
  const str = (k: string) => (typeof o.flags[k] === "string" ? (o.flags[k] as string) : undefined);
  if (sub === "list" || sub === undefined) {
    const { certificates } = await call(t, o, "/api/certificates");
    if (o.json) return print(certificates);
    print(
      table(
        certificates.map((c: any) => [c.id, c.role, c.assigned ? "yes" : "", c.common_name, c.description, day(c.not_before), day(c.not_after), c.expires_in_days, day(c.created), day(c.updated)]),
        ["id", "role", "assigned", "common name", "description", "not before", "not after", "days left", "created", "updated"],
      ),
    );
    for (const c of certificates) if (c.expiry_warning) print(`WARNING: ${c.expiry_warning}`);
    return;
  }
  if (sub === "upload") {
    const root = str("root"), key = str("key"), inter = str("intermediate");
    if (!root || !key) throw new Usage("certs upload --root FILE [--intermediate FILE] --key FILE [--cn NAME] [--description TEXT]");
    const form = new FormData();
    const file = (p: string) => {
      if (!existsSync(p)) throw new Usage(`${p}: no such file`);
      return new Blob([readFileSync(p)]);
    };
    form.append("root", file(root), basename(root));
    if (inter) form.append("intermediate", file(inter), basename(inter));
    form.append("key", file(key), basename(key));
    if (str("cn")) form.append("common_name", str("cn")!);
    if (str("description")) form.append("description", str("description")!);
    const c = await call(t, o, "/api/certificates", { method: "POST", body: form });
    if (o.json) return print(c);
    print(`uploaded ${c.id}: "${c.common_name}", valid until ${day(c.not_after)}; assign it with: agate certs assign ${c.id}`);
    return;
  }
  if (!id) throw new Usage(`certs ${sub} ID`);
  if (sub === "edit") {
    const body: Record<string, string> = {};
    if (str("cn") !== undefined) body.common_name = str("cn")!;
    if (str("description") !== undefined) body.description = str("description")!;
    if (!Object.keys(body).length) throw new Usage("certs edit ID [--cn NAME] [--description TEXT]");
    const c = await call(t, o, `/api/certificates/${encodeURIComponent(id)}`, { method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    return print(o.json ? c : `updated ${c.id}: "${c.common_name}" — ${c.description}`);
  }
  if (sub === "delete") {
    const r = await call(t, o, `/api/certificates/${encodeURIComponent(id)}`, { method: "DELETE" });
    return print(o.json ? r : `deleted ${id}`);
  }
  if (sub === "assign") {
    const r = await call(t, o, `/api/certificates/${encodeURIComponent(id)}/assign`, { method: "POST" });
    return print(o.json ? r : `assigned ${id}: new agent connections get certificates from "${r.assigned.common_name}"`);
  }
  throw new Usage("certs list | upload | edit | delete | assign");
}

async function logs(t: Target, o: Opts) {
  const p = new URLSearchParams();
  for (const k of ["q", "id", "limit", "offset"]) if (typeof o.flags[k] === "string") p.set(k, o.flags[k] as string);
  const r = await call(t, o, `/api/logs?${p}`);
  if (o.json) return print(r);
  for (const l of r.items) {
    const { t: time, level, msg, c: _c, ...rest } = l;
    print(`${String(time ?? "").replace("T", " ").slice(0, 23)}  ${String(level ?? "").padEnd(5)}  ${msg ?? l.raw ?? ""}  ${Object.keys(rest).length ? JSON.stringify(rest) : ""}`.trimEnd());
  }
  if (r.more) print(`… more: --offset ${r.offset + r.items.length}`);
}

async function diag(t: Target, o: Opts): Promise<number> {
  if (o.rest[1] === "open") {
    const file = o.rest[2];
    const pw = o.flags.password;
    if (!file || typeof pw !== "string") throw new Usage("diag open FILE --password PASSWORD");
    let content: unknown;
    try {
      content = await openArchive(readFileSync(file), pw);
    } catch (e) {
      throw new Refused((e as Error).message);
    }
    const out = typeof o.flags.out === "string" ? o.flags.out : null;
    if (out) {
      writeFileSync(out, JSON.stringify(content, null, 2) + "\n", { mode: 0o600 });
      return print(`decrypted into ${out}`), 0;
    }
    return print(content), 0;
  }
  const target = typeof o.flags.target === "string" ? o.flags.target : undefined;
  const r = await call(t, o, "/api/diagnostics", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(target ? { target } : {}) });
  const bin: Uint8Array = await call(t, o, r.archive.url);
  const out = typeof o.flags.out === "string" ? o.flags.out : r.archive.name;
  writeFileSync(out, bin, { mode: 0o600 });
  const code = r.connectivity.ok ? 0 : 1; // a failed check is a failed diag (issue 10), for scripts and monitoring
  if (o.json) return print({ ...r, archive: { ...r.archive, saved_to: resolve(out), open_command: openCommand(out) } }), code;
  const c = r.connectivity;
  print(`connectivity (pod ${c.pod}, ${c.via === "upstream" ? `through upstream proxy ${c.upstream_proxy}` : "direct"}): ${c.ok ? "all checks passed" : `${c.failed} of ${c.results.length} checks FAILED`}`);
  print(table(c.results.map((x: any) => [`${x.host}:${x.port}`, x.check, x.ok ? `ok ${x.tlsVersion ?? ""}` : `FAIL (${x.hop}${x.status ? ` ${x.status}` : ""})`, `${x.ms} ms`, x.reason ?? ""]), ["host", "check", "result", "time", "problem"]));
  const p = r.resources.process;
  print(`\nresources: process RSS ${bytes(p.rss_bytes)}, CPU ${p.cpu_user_s.toFixed(1)} s user + ${p.cpu_system_s.toFixed(1)} s system`);
  print(table(r.resources.workers.map((w: any) => [`worker ${w.index}`, w.cpu_s === null ? "?" : `${w.cpu_s} s CPU`])));
  print(`\narchive: ${resolve(out)} (${bytes(bin.byteLength)}, age format, passphrase)`);
  print(`one-time password (shown only now): ${r.archive.password}`);
  print(`open it with: ${openCommand(out)}   (age asks for the password)`);
  print(`         or: agate diag open ${out} --password ${r.archive.password}`);
  return code;
}

async function reset(t: Target, o: Opts) {
  if (!o.flags.yes) {
    const plan = t.token ? await call(t, o, "/api/reset").catch(() => null) : null;
    const will = plan ? `reset will:\n${plan.will.map((w: string) => `  - ${w}`).join("\n")}\n` : "reset removes what the gateway made (overlay, CAs, certificates, logs, stats, stores); the --config file is kept\n";
    throw new Usage(`${will}run: agate reset --yes`);
  }
  const r = await call(t, o, "/api/reset", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ confirm: "RESET" }) });
  if (o.json) return print(r);
  print(`reset: ${r.removed.length} items removed; the gateway runs on ${r.config_file ? `the values in ${r.config_file} (kept)` : "the embedded defaults"}`);
  if (r.token) print(`a new admin token was made: ${join(t.dataDir, "admin.token")} (agate token prints it)`);
}

async function reload(t: Target, o: Opts) {
  const r = await call(t, o, "/api/reload", { method: "POST" });
  print(o.json ? r : "reloaded: the config file and the overlay are applied (open tunnels are untouched)");
}

function token(t: Target) {
  if (!t.token) throw new Usage(`no token found: ${join(t.dataDir, "admin.token")} does not exist (start the gateway once, or pass --config FILE)`);
  print(t.token);
}

let printed = "";
function print(v: unknown) {
  const s = typeof v === "string" ? v : JSON.stringify(v, null, 2);
  printed += s + "\n";
  process.stdout.write(s + "\n");
}

export async function main(argv: string[]): Promise<number> {
  let o: Opts;
  try {
    o = parseArgs(argv);
    if (o.flags.version) {
      print(`agate ${VERSION}`);
      return 0;
    }
    if (o.rest[0] === "config" && o.rest[1] === "check") {
      // offline: no gateway, no token
      const file = o.rest[2];
      if (!file) throw new Usage("config check FILE");
      const r = checkConfigFile(file);
      for (const l of r.lines) (r.ok ? print : (x: string) => console.error(`agate: ${x}`))(l);
      return r.ok ? 0 : EX_CONFIG;
    }
    if (o.flags.help || !o.rest.length) {
      console.log(USAGE);
      return o.rest.length || o.flags.help ? 0 : 2;
    }
    const t = resolveTarget(o);
    switch (o.rest[0]) {
      case "status":
        await status(t, o);
        break;
      case "stats":
        await stats(t, o);
        break;
      case "config":
        await config(t, o);
        break;
      case "certs":
      case "certificates":
        await certs(t, o);
        break;
      case "logs":
        await logs(t, o);
        break;
      case "diag":
      case "diagnostics":
        return await diag(t, o);
      case "reset":
        await reset(t, o);
        break;
      case "reload":
        await reload(t, o);
        break;
      case "token":
        token(t);
        break;
      case "maintenance":
        await maintenance(t, o);
        break;
      case "cache":
        await cacheCommand(o.rest.slice(1), {
          call: (path, init) => call(t, o, path, init),
          print,
          table,
          bytes,
          json: o.json,
          flags: o.flags,
          usage: (m) => new Usage(m),
          refused: (m) => new Refused(m),
        });
        break;
      case "fleet":
        await fleetCommand(o.rest.slice(1), { call: (path, init) => call(t, o, path, init), print, table, bytes, json: o.json, flags: o.flags, usage: (m) => new Usage(m), refused: (m) => new Refused(m) });
        break;
      case "export":
      case "import": {
        const io = { call: (path: string, init?: RequestInit) => call(t, o, path, init), print, table, bytes, json: o.json, flags: o.flags, usage: (m: string) => new Usage(m), refused: (m: string) => new Refused(m) };
        await (o.rest[0] === "export" ? exportCommand : importCommand)(o.rest.slice(1), io);
        break;
      }
      case "metrics":
        print(await call(t, o, "/metrics"));
        break;
      default:
        throw new Usage(`unknown command: ${o.rest[0]}`);
    }
    return 0;
  } catch (e) {
    if (e instanceof Usage) {
      console.error(`agate: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    if (e instanceof Refused) {
      console.error(`agate: refused: ${e.message}`);
      return 1;
    }
    if (e instanceof Unreachable) {
      console.error(`agate: ${e.message}`);
      return 3;
    }
    console.error(`agate: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
