/**
 * @module The CONNECT forwarder of bench/micro/splice-relay.ts: `bun bench/micro/splice-relay-fwd.ts js|splice
 * <originPort>` answers a CONNECT with 200, dials the origin port, then relays either in JS (Bun socket
 * `data` → `write`, pausing the reader while the writer has bytes pending) or by handing both fds to
 * splice-relay-thread.ts. Prints `{"listening": port}`.
 */
const mode = process.argv[2]!; const originPort = Number(process.argv[3]);
const thread = mode === "splice" ? new Worker(new URL("./splice-relay-thread.ts", import.meta.url).href) : null;
const socks = new Map<number, { c: any; u: any }>();
let nextId = 1;
thread?.addEventListener("message", (m: MessageEvent<any>) => { const s = socks.get(m.data.id); s?.c.end(); s?.u.end(); socks.delete(m.data.id); });
type C = { u: any; pend: Uint8Array | null; head: boolean };
const l = Bun.listen<C>({
  hostname: "127.0.0.1", port: 0,
  socket: {
    open(s) { s.data = { u: null, pend: null, head: false }; },
    async data(s, d) {
      if (!s.data.head) {
        s.data.head = true; s.pause();
        const u = await Bun.connect<{ c: any }>({ hostname: "127.0.0.1", port: originPort, socket: {
          data(u, d) { const n = s.write(d); if (n < d.byteLength) { s.data.pend = d.slice(n); u.pause(); } },
          drain() {}, close() { s.end(); }, error() {},
        }, data: { c: s } });
        s.data.u = u;
        s.write("HTTP/1.1 200 Connection established\r\n\r\n");
        if (thread) { u.pause(); const id = nextId++; socks.set(id, { c: s, u }); thread.postMessage({ id, a: (s as unknown as { fd: number }).fd, b: (u as unknown as { fd: number }).fd }); }
        else s.resume();
        return;
      }
      s.data.u.write(d);
    },
    drain(s) { if (s.data.pend) { const n = s.write(s.data.pend); s.data.pend = n < s.data.pend.byteLength ? s.data.pend.subarray(n) : null; if (!s.data.pend) s.data.u.resume(); } },
    close(s) { s.data.u?.end(); }, error() {},
  },
});
console.log(JSON.stringify({ listening: l.port }));
