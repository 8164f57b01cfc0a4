/**
 * "npm start and npm test leave a fresh clone clean" (issue 10): their install step, scripts/ensure-deps.mjs, used to
 * run `npm install`, which rewrote package-lock.json with msgpackr-extract's optional platform packages; it now runs
 * `npm ci`, which installs exactly the lock and never writes it. Proved end to end: `git clone` this checkout's HEAD
 * into a temp dir (uncommitted changes do not matter: the test is about what the install step writes), run the step
 * there, and `git status --porcelain` must print nothing. npm's cache makes it quick; the time is printed (a figure,
 * not an assertion).
 */
import { expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../peers/gateway";

const which = (cmd: string) => Bun.which(cmd);
const missing = !which("git") ? "git is not installed" : !which("node") || !which("npm") ? "node/npm are not installed" : null;
if (missing) console.warn(`[skip] fresh-clone test: ${missing}`);

/** Run to the exit, bounded (SIGKILL at the deadline): code, output. */
async function run(cmd: string[], cwd: string, timeoutMs: number) {
  const p = Bun.spawn(cmd, { cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, npm_config_update_notifier: "false" } });
  const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(t);
  return { code, out, err };
}

test.skipIf(!!missing)("a fresh clone stays clean after the install step of npm start / npm test (scripts/ensure-deps.mjs)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "agate-clone-"));
  try {
    const repo = join(dir, "agate");
    const c = await run(["git", "clone", "-q", "--no-hardlinks", ROOT, repo], dir, 60_000);
    expect(c).toMatchObject({ code: 0 });
    expect(existsSync(join(repo, "node_modules"))).toBe(false); // really fresh: the step has to install
    const t0 = performance.now();
    const d = await run(["node", "scripts/ensure-deps.mjs"], repo, 180_000);
    const ms = Math.round(performance.now() - t0);
    console.log(JSON.stringify({ figure: "ensure-deps.mjs in a fresh clone (npm ci, warm npm cache)", ms }));
    expect({ code: d.code, err: d.code === 0 ? "" : d.err.slice(-2000) }).toEqual({ code: 0, err: "" });
    expect(existsSync(join(repo, "node_modules/.bin/bun"))).toBe(true);
    const s = await run(["git", "status", "--porcelain"], repo, 30_000);
    expect(s.code).toBe(0);
    expect(s.out).toBe(""); // nothing written into the tree: package-lock.json as committed
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 240_000);
