/**
 * @module The CLI's side of steering the fleet and of export / import (issue 14), over the same API as the Fleet tab:
 *   agate fleet assign-chain --to self,HOST:PORT… --root F [--intermediate F] --key F [--cn NAME] [--description T]
 *   agate fleet push-config --to self,HOST:PORT… cache.min_tls=1.3 cache.allowed_domains=a.com,b.com …
 *   agate export --passphrase-file F [--output FILE]     (the passphrase is read from a file, never from the command line)
 *   agate import FILE --passphrase-file F
 * Each push prints one line per gateway (applied / refused with the receiver's reason / unreachable) and exits 1
 * unless every gateway applied it.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import type { CliIo } from "./cache";

export const FLEET_STEER_USAGE = `  fleet assign-chain --to self,HOST:PORT... --root F [--intermediate F] --key F [--cn NAME]
                                  one customer chain, checked here, assigned on each chosen gateway
  fleet push-config --to self,HOST:PORT... cache.KEY=VALUE...
                                  allowed domains, min TLS, cache rules on chosen gateways (their own checks)
  export --passphrase-file F [--output FILE]   config, CAs with keys, uploaded chains in one age-encrypted archive
  import FILE --passphrase-file F        restore an export on this gateway ("Replace an appliance")`;

const str = (io: CliIo, k: string) => (typeof io.flags[k] === "string" ? (io.flags[k] as string) : undefined);

function file(io: CliIo, p: string): Blob {
  if (!existsSync(p)) throw io.usage(`${p}: no such file`);
  return new Blob([readFileSync(p)]);
}

function passphrase(io: CliIo): string {
  const f = str(io, "passphrase-file");
  if (!f) throw io.usage("--passphrase-file FILE is required (a passphrase on the command line would show in ps and shell history)");
  if (!existsSync(f)) throw io.usage(`${f}: no such file`);
  return readFileSync(f, "utf8").replace(/\r?\n$/, "");
}

function printResults(io: CliIo, r: any) {
  if (io.json) return io.print(r);
  io.print(io.table(r.results.map((x: any) => [x.gateway, x.result, x.reason ?? ""]), ["GATEWAY", "RESULT", "REASON"]));
  io.print(r.summary);
  if (!r.ok) throw io.refused(`not applied everywhere: ${r.summary}`);
}

/** `cache.allowed_domains=a.com,b.com` → {cache: {allowed_domains: [...]}}; a value that parses as JSON is taken as JSON. */
export function parseAssignments(args: string[]): Record<string, Record<string, unknown>> | string {
  const out: Record<string, Record<string, unknown>> = {};
  for (const a of args) {
    const m = /^([a-z_]+)\.([a-z_]+)=(.*)$/s.exec(a);
    if (!m) return `expected SECTION.KEY=VALUE (e.g. cache.min_tls=1.3), got ${JSON.stringify(a)}`;
    const [, sec, key, raw] = m as unknown as [string, string, string, string];
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch {
      v = key === "allowed_domains" ? raw.split(",").map((s) => s.trim()).filter(Boolean) : raw;
    }
    if (key === "min_tls" && typeof v === "number") v = raw; // 1.3 is a version, not a number
    (out[sec] ??= {})[key] = v;
  }
  return Object.keys(out).length ? out : "name at least one SECTION.KEY=VALUE (e.g. cache.min_tls=1.3)";
}

export async function fleetSteerCommand(sub: string, args: string[], io: CliIo): Promise<void> {
  const to = str(io, "to");
  if (!to) throw io.usage(`fleet ${sub} --to self,HOST:PORT... (the gateways: "self" and [fleet] peers)`);
  if (sub === "assign-chain") {
    const root = str(io, "root"), key = str(io, "key"), inter = str(io, "intermediate");
    if (!root || !key) throw io.usage("fleet assign-chain --to ... --root FILE [--intermediate FILE] --key FILE [--cn NAME]");
    const form = new FormData();
    form.append("root", file(io, root), basename(root));
    if (inter) form.append("intermediate", file(io, inter), basename(inter));
    form.append("key", file(io, key), basename(key));
    if (str(io, "cn")) form.append("common_name", str(io, "cn")!);
    if (str(io, "description")) form.append("description", str(io, "description")!);
    form.append("gateways", to);
    return printResults(io, await io.call("/api/fleet/chain", { method: "POST", body: form }));
  }
  const change = parseAssignments(args);
  if (typeof change === "string") throw io.usage(`fleet push-config: ${change}`);
  const r = await io.call("/api/fleet/config", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ gateways: to.split(","), change }) });
  return printResults(io, r);
}

export async function exportCommand(args: string[], io: CliIo): Promise<void> {
  if (args.length) throw io.usage(`agate export takes no arguments, got: ${args.join(" ")}`);
  const bytes: Uint8Array = await io.call("/api/export", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ passphrase: passphrase(io) }) });
  const out = str(io, "output") ?? `agate-export-${new Date().toISOString().slice(0, 10)}.age`;
  writeFileSync(out, bytes, { mode: 0o600 });
  io.print(`wrote ${out} (${bytes.byteLength} bytes); open it with: age -d -o export.json.gz ${out}; restore it with: agate import ${out} --passphrase-file FILE`);
}

export async function importCommand(args: string[], io: CliIo): Promise<void> {
  const [path, ...extra] = args;
  if (!path || extra.length) throw io.usage("import FILE --passphrase-file F");
  const form = new FormData();
  form.append("archive", file(io, path), basename(path));
  form.append("passphrase", passphrase(io));
  const r = await io.call("/api/import", { method: "POST", body: form });
  if (io.json) return io.print(r);
  io.print(`imported ${r.from.gateway}'s export of ${r.from.created}: CA ${r.assigned}, ${r.uploaded.length} uploaded chain(s); kept here: ${r.kept.join(", ")}`);
  if (r.restart_required.length) io.print(`restart to apply: ${r.restart_required.join(", ")}`);
}
