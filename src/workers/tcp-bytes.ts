/**
 * @module The bytes this process wrote to one TCP socket, asked of the kernel (Linux `TCP_INFO`), for connections
 * whose TLS runs inside Bun's native socket: there the application writes plaintext and Bun encrypts below it, so
 * the ciphertext bytes the agent received (what the connection's log line reports, test/e2e/conn-log.test.ts)
 * are known only to the kernel.
 *
 * written = tcpi_bytes_sent − tcpi_bytes_retrans + tcpi_notsent_bytes: what went out once, plus what still waits in
 * the send queue (linux/tcp.h; the offsets below are those of `struct tcp_info` since Linux 4.19). A FIN carries no
 * data and is not counted. Measured 2026-12-02 on Linux 6.18 with a counting relay between curl and a Bun.listen
 * socket upgraded with `upgradeTLS` (`bun bench/micro/tls-upgrade-probe.ts`): 31,391 = the relay's 31,391 bytes
 * towards curl, sampled after our close_notify; once the fd is closed (Bun's `close` handlers run after close(2))
 * getsockopt fails with EBADF — so the sample is taken before (NativeTlsIo.settle).
 */
import { dlopen, FFIType, ptr } from "bun:ffi";

const IPPROTO_TCP = 6;
const TCP_INFO = 11;
const OFF_NOTSENT = 144; // u32 tcpi_notsent_bytes
const OFF_SENT = 200; // u64 tcpi_bytes_sent
const OFF_RETRANS = 208; // u64 tcpi_bytes_retrans
const INFO_LEN = 256;

type Libc = { getsockopt: (fd: number, level: number, name: number, val: unknown, len: unknown) => number };
let libc: Libc | null | undefined;
const info = new Uint8Array(INFO_LEN);
const view = new DataView(info.buffer);
const len = new Uint32Array(1);

function open(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const lib = dlopen("libc.so.6", {
      getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
    });
    libc = lib.symbols as unknown as Libc;
  } catch {
    libc = null; // not glibc Linux: callers fall back to what they counted themselves
  }
  return libc;
}

/** Bytes written to `fd` so far (see the module note), or null when the kernel cannot say (closed fd, old kernel). */
export function tcpBytesWritten(fd: number): number | null {
  if (!(fd >= 0)) return null;
  const c = open();
  if (!c) return null;
  len[0] = INFO_LEN;
  if (c.getsockopt(fd, IPPROTO_TCP, TCP_INFO, ptr(info), ptr(len)) !== 0) return null;
  if (len[0]! < OFF_RETRANS + 8) return null;
  const sent = Number(view.getBigUint64(OFF_SENT, true));
  const retrans = Number(view.getBigUint64(OFF_RETRANS, true));
  return sent - retrans + view.getUint32(OFF_NOTSENT, true);
}
