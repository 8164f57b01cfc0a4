/**
 * @module The splice(2) relay thread of bench/micro/splice-relay.ts (a measurement, not product code): given a
 * client fd and an upstream fd (dup'ed, so Bun closing its handles cannot pull them away), it moves bytes both ways
 * kernel-side through a 1 MiB pipe per direction, with its own edge-triggered epoll, over bun:ffi (libc.so.6), and
 * posts `{id, up, down}` when both directions are done.
 */
import { dlopen, FFIType, ptr, read } from "bun:ffi";
declare const self: Worker;
const libc = dlopen("libc.so.6", {
  pipe2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  splice: { args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.u32], returns: FFIType.i64 },
  epoll_create1: { args: [FFIType.i32], returns: FFIType.i32 },
  epoll_ctl: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  epoll_wait: { args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
  dup: { args: [FFIType.i32], returns: FFIType.i32 },
  fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  shutdown: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
});
const S = libc.symbols;
const errno = () => read.i32(S.__errno_location()!, 0);
const EAGAIN = 11;
const F = 1 | 2; // MOVE | NONBLOCK
const ep = S.epoll_create1(0);
type Dir = { src: number; dst: number; pr: number; pw: number; inPipe: number; eof: boolean; done: boolean; bytes: number };
type Pair = { id: number; a: number; b: number; up: Dir; down: Dir };
const byFd = new Map<number, Pair>();
function mkDir(src: number, dst: number): Dir {
  const fds = new Int32Array(2);
  if (S.pipe2(ptr(fds), 2048) !== 0) throw new Error("pipe2");
  S.fcntl(fds[1]!, 1031, 1 << 20);
  return { src, dst, pr: fds[0]!, pw: fds[1]!, inPipe: 0, eof: false, done: false, bytes: 0 };
}
function step(d: Dir): void {
  for (let i = 0; i < 64 && !d.done; i++) {
    let progressed = false;
    if (!d.eof && d.inPipe < 1 << 20) {
      const n = Number(S.splice(d.src, null, d.pw, null, 1 << 20, F));
      if (n > 0) { d.inPipe += n; progressed = true; }
      else if (n === 0) { d.eof = true; progressed = true; }
      else if (errno() !== EAGAIN) { d.eof = true; }
    }
    if (d.inPipe > 0) {
      const n = Number(S.splice(d.pr, null, d.dst, null, d.inPipe, F));
      if (n > 0) { d.inPipe -= n; d.bytes += n; progressed = true; }
      else if (n < 0 && errno() !== EAGAIN) { d.done = true; d.inPipe = 0; }
    }
    if (d.eof && d.inPipe === 0) { S.shutdown(d.dst, 1); d.done = true; }
    if (!progressed) return;
  }
}
const ev = new Uint8Array(12);
const evv = new DataView(ev.buffer);
function add(fd: number) {
  evv.setUint32(0, 1 | 4 | 0x2000 | 0x80000000, true);
  evv.setBigUint64(4, BigInt(fd), true);
  S.epoll_ctl(ep, 1, fd, ptr(ev));
}
const queue: Pair[] = [];
self.onmessage = (m: MessageEvent<{ id: number; a: number; b: number }>) => {
  const a = S.dup(m.data.a), b = S.dup(m.data.b);
  const p: Pair = { id: m.data.id, a, b, up: mkDir(a, b), down: mkDir(b, a) };
  byFd.set(a, p); byFd.set(b, p); add(a); add(b);
  queue.push(p);
};
const evs = new Uint8Array(12 * 64);
const evsv = new DataView(evs.buffer);
function loop() {
  for (const p of queue.splice(0)) { step(p.up); step(p.down); }
  for (let spins = 0; spins < 1000; spins++) {
    const n = S.epoll_wait(ep, ptr(evs), 64, byFd.size ? 20 : 0);
    if (n <= 0) break;
    for (let i = 0; i < n; i++) {
      const fd = Number(evsv.getBigUint64(i * 12 + 4, true));
      const p = byFd.get(fd);
      if (!p) continue;
      step(p.up); step(p.down);
      if (p.up.done && p.down.done) {
        byFd.delete(p.a); byFd.delete(p.b);
        for (const f of [p.a, p.b, p.up.pr, p.up.pw, p.down.pr, p.down.pw]) S.close(f);
        postMessage({ id: p.id, up: p.up.bytes, down: p.down.bytes });
      }
    }
  }
  setTimeout(loop, byFd.size ? 0 : 5);
}
loop();
