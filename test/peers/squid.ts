/**
 * Debian's squid as an upstream proxy on 127.0.0.1 that requires Basic auth (the default) or NTLM (`{ auth: "ntlm" }`,
 * with squid's `ntlm_fake_auth` helper: it runs the NEGOTIATE → CHALLENGE → AUTHENTICATE exchange and takes the
 * user name from the AUTHENTICATE message, but checks no password or response), with its own hosts file so the test
 * names resolve to loopback. `squidMissing()` says why squid cannot run here (null: it can).
 */
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort, waitFor } from "./helpers";

export type Squid = { dir: string; port: number; user: string; password: string; proc: Subprocess; stop: () => Promise<void> };

const SQUID_BINS = ["/usr/sbin/squid", "/usr/bin/squid"];
const AUTH_HELPER = "/usr/lib/squid/basic_ncsa_auth";
const NTLM_HELPER = "/usr/lib/squid/ntlm_fake_auth";

export type SquidOptions = { auth?: "basic" | "ntlm" };

export function squidMissing(): string | null {
  if (!SQUID_BINS.some((b) => Bun.file(b).size > 0)) return "squid is not installed (apt-get install squid)";
  if (!(Bun.file(AUTH_HELPER).size > 0)) return `${AUTH_HELPER} is missing`;
  if (!Bun.which("htpasswd")) return "htpasswd is missing (apt-get install apache2-utils)";
  return null;
}

/** Why the NTLM-requiring squid cannot run here (null: it can). */
export function squidNtlmMissing(): string | null {
  if (!SQUID_BINS.some((b) => Bun.file(b).size > 0)) return "squid is not installed (apt-get install squid)";
  if (!(Bun.file(NTLM_HELPER).size > 0)) return `${NTLM_HELPER} is missing (dpkg -L squid | grep ntlm)`;
  return null;
}

export async function startSquid(
  hosts: Record<string, string>,
  user = "agent",
  password = "s3cret-pass",
  opts: SquidOptions = {},
): Promise<Squid> {
  const dir = mkdtempSync(join(tmpdir(), "agate-squid-"));
  chmodSync(dir, 0o777);
  const port = freePort(); // squid cannot be told port 0
  const bin = SQUID_BINS.find((b) => Bun.file(b).size > 0)!;
  if (opts.auth !== "ntlm") {
    const r = Bun.spawnSync(["htpasswd", "-bc", join(dir, "passwd"), user, password]);
    if (r.exitCode !== 0) throw new Error(`htpasswd failed: ${r.stderr}`);
    chmodSync(join(dir, "passwd"), 0o644);
  }
  const auth =
    opts.auth === "ntlm"
      ? [`auth_param ntlm program ${NTLM_HELPER}`, `auth_param ntlm children 2`, `auth_param ntlm keep_alive on`]
      : [`auth_param basic program ${AUTH_HELPER} ${dir}/passwd`, `auth_param basic children 2`, `auth_param basic realm agate-test`];
  writeFileSync(join(dir, "hosts"), Object.entries(hosts).map(([n, ip]) => `${ip} ${n}`).join("\n") + "\n");
  writeFileSync(
    join(dir, "squid.conf"),
    [
      `http_port 127.0.0.1:${port}`,
      `pid_filename ${dir}/squid.pid`,
      `cache_log ${dir}/cache.log`,
      `access_log ${dir}/access.log`,
      `cache deny all`,
      `cache_mem 8 MB`,
      `hosts_file ${dir}/hosts`,
      `dns_nameservers 127.0.0.1`,
      ...auth,
      `acl authed proxy_auth REQUIRED`,
      `http_access allow authed`,
      `http_access deny all`,
      `shutdown_lifetime 0 seconds`,
      `coredump_dir ${dir}`,
      `max_filedescriptors 4096`,
      "",
    ].join("\n"),
  );
  const proc = Bun.spawn([bin, "-N", "-f", join(dir, "squid.conf")], { stdout: "pipe", stderr: "pipe", cwd: dir });
  // Ready when the port accepts connections (or squid gave up: then say why).
  const state = await waitFor(
    async () =>
      proc.exitCode !== null
        ? "exited"
        : await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } }).then(
            (s) => (s.end(), "listening"),
            () => false,
          ),
    { timeoutMs: 15_000, what: `squid listening on ${port}`, everyMs: 100 },
  );
  if (state === "exited") throw new Error(`squid exited ${proc.exitCode}: ${await new Response(proc.stderr).text()} ${await Bun.file(join(dir, "cache.log")).text().catch(() => "")}`);
  return {
    dir,
    port,
    user,
    password,
    proc,
    stop: async () => {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}
