/**
 * Debian's `age` (/usr/bin/age) as a test peer. age reads a passphrase only from the terminal (never stdin), so it runs
 * under a pseudo-terminal made by python3's pty module: the passphrase is typed when age prints "Enter passphrase",
 * bounded by a deadline. (`script -qec` was the other candidate; python's pty needs no tty of our own and gives the
 * child's exit status directly.) `ageMissing()` says why it cannot run here (null: it can).
 */
const AGE = "/usr/bin/age";

const DRIVER = `
import os, pty, sys, select, time
pw, args = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(args[0], args)
out = b""; sent = False; deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    r, _, _ = select.select([fd], [], [], 0.5)
    if fd in r:
        try: d = os.read(fd, 4096)
        except OSError: break
        if not d: break
        out += d
        if not sent and b"passphrase" in out.lower():
            os.write(fd, pw.encode() + b"\\n"); sent = True
if time.monotonic() >= deadline: os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
`;

export function ageMissing(): string | null {
  if (!(Bun.file(AGE).size > 0)) return `${AGE} is missing (apt-get install age)`;
  if (!Bun.which("python3")) return "python3 is missing (it drives age through a pty)";
  return null;
}

/** `age -d -o OUT FILE`, typing `passphrase` at its prompt: age's exit code and what it printed on the terminal. */
export async function ageDecrypt(file: string, out: string, passphrase: string): Promise<{ code: number; tty: string }> {
  const p = Bun.spawn(["python3", "-c", DRIVER, passphrase, AGE, "-d", "-o", out, file], { stdout: "pipe", stderr: "pipe" });
  const kill = setTimeout(() => p.kill(9), 40_000);
  const [tty, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(kill);
  return { code, tty: tty + err };
}
