/**
 * @module `agate cache …`, the CLI's side of the cache operations (issue 9), over the same API as the dashboard:
 *   agate cache                              usage: entries, bytes, capacity, evictions, top objects, hit ratio by host
 *   agate cache purge url URL | host HOST | prefix URL | all
 *   agate cache prefill URL… [--wait no]     start a job and draw its progress until it ends (exit 1 if a URL failed)
 *   agate cache jobs                         prefill jobs and their progress
 * main.ts hands in how to call the API and print, so this file holds no connection logic of its own.
 */
export type CliIo = {
  call(path: string, init?: RequestInit): Promise<any>;
  print(v: unknown): void;
  table(rows: (string | number | null | undefined)[][], header?: string[]): string;
  bytes(n: number): string;
  json: boolean;
  flags: Record<string, string | true>;
  usage(msg: string): Error;
  refused(msg: string): Error;
};

export const CACHE_USAGE = `  cache                           cache usage: entries, bytes, capacity, evictions, top objects, hit ratio by host
  cache purge url URL | host HOST | prefix URL | all
  cache prefill URL... [--wait no] warm the cache (progress bar until the job ends)
  cache jobs                      prefill jobs and their progress`;

const POLL_MS = 200;
const pct = (r: number | null) => (r === null ? "" : `${(r * 100).toFixed(1)}%`);

export async function cacheCommand(args: string[], io: CliIo): Promise<void> {
  const [sub, ...rest] = args;
  if (sub === undefined) return usage(io);
  if (sub === "purge") return purge(rest, io);
  if (sub === "prefill") return prefill(rest, io);
  if (sub === "jobs") {
    const r = await io.call("/api/cache/prefill");
    if (io.json) return io.print(r);
    return io.print(r.jobs.length ? io.table(r.jobs.map((j: any) => [j.id, j.created.slice(0, 19), j.items.length, j.done, j.failed, io.bytes(j.bytes), j.finished ? "finished" : "running"]), ["JOB", "CREATED", "URLS", "DONE", "FAILED", "BYTES", "STATE"]) : "no prefill jobs");
  }
  throw io.usage(`unknown cache command: ${sub} (purge, prefill, jobs)`);
}

async function usage(io: CliIo) {
  const u = await io.call("/api/cache");
  if (io.json) return io.print(u);
  const lines = [
    `store     ${u.dir ?? "(none)"} (${u.location === "patch-volume" ? "on the patch volume, one budget with patch files" : "in data_dir"})${u.enabled ? "" : " — cache mode is off"}`,
    `entries   ${u.entries}`,
    `used      ${io.bytes(u.bytes)} of ${io.bytes(u.capacity)}${u.capacity ? ` (${((u.bytes / u.capacity) * 100).toFixed(1)}%)` : ""}`,
    `evicted   ${u.evictions.objects} objects, ${io.bytes(u.evictions.bytes)}`,
  ];
  if (u.largest.length) lines.push("", "largest objects", io.table(u.largest.map((o: any) => [io.bytes(o.size), o.hits, o.url]), ["SIZE", "HITS", "URL"]));
  if (u.most_served.length) lines.push("", "most served", io.table(u.most_served.map((o: any) => [io.bytes(o.bytes_served), o.hits, o.url]), ["SERVED", "HITS", "URL"]));
  if (u.by_host.length) lines.push("", "by host", io.table(u.by_host.map((h: any) => [h.host, h.hits, h.misses, h.bypass, pct(h.hit_ratio)]), ["HOST", "HITS", "MISSES", "BYPASS", "HIT RATIO"]));
  io.print(lines.join("\n"));
}

async function purge(rest: string[], io: CliIo) {
  const [what, value] = rest;
  let body: Record<string, unknown>;
  if (what === "all" && value === undefined) body = { all: true };
  else if ((what === "url" || what === "host" || what === "prefix") && value !== undefined && rest.length === 2) body = { [what]: value };
  else throw io.usage("cache purge url URL | host HOST | prefix URL | all");
  const r = await io.call("/api/cache/purge", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  io.print(io.json ? r : `purged ${r.objects} object${r.objects === 1 ? "" : "s"}, ${io.bytes(r.bytes)}`);
}

function bar(j: any, width = 30): string {
  const n = j.items.length;
  const fill = Math.round(((j.done + j.failed) / Math.max(1, n)) * width);
  return `[${"#".repeat(fill)}${"-".repeat(width - fill)}] ${j.done + j.failed}/${n} done ${j.done} failed ${j.failed} ${(j.bytes / 1e6).toFixed(1)} MB`;
}

async function prefill(urls: string[], io: CliIo) {
  if (urls.length === 0) throw io.usage("cache prefill URL... (absolute https URLs)");
  const started = await io.call("/api/cache/prefill", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ urls }) });
  if (io.flags.wait === "no") return io.print(io.json ? started : `prefill job ${started.id} started (${urls.length} URLs): agate cache jobs`);
  const tty = process.stderr.isTTY === true;
  let last = "";
  let job = started.job;
  for (;;) {
    const line = bar(job);
    if (line !== last) {
      // a bar redrawn in place on a terminal; one line per change in a log or a pipe
      process.stderr.write(tty ? `\r${line}` : `${line}\n`);
      last = line;
    }
    if (job.finished) break;
    await Bun.sleep(POLL_MS); // the poll interval of a progress display
    job = await io.call(`/api/cache/prefill/${started.id}`);
  }
  if (tty) process.stderr.write("\n");
  if (io.json) io.print(job);
  else {
    io.print(io.table(job.items.map((i: any) => [i.state, i.status || "", i.stored ? "stored" : "", io.bytes(i.bytes), i.url, i.error ?? ""]), ["STATE", "STATUS", "STORED", "BYTES", "URL", "ERROR"]));
    io.print(`prefill ${job.id}: ${job.done} done, ${job.failed} failed, ${io.bytes(job.bytes)}`);
  }
  if (job.failed > 0) throw io.refused(`${job.failed} of ${job.items.length} URLs failed`);
}
