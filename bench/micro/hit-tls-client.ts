/** @module Probe client for bench/micro/hit-tls.bench.ts: C keep-alive connections with Bun native TLS, N requests in all. */
const [portS, caPath, nS, concS, sizeS] = process.argv.slice(2);
const port = Number(portS), N = Number(nS), C = Number(concS), SIZE = Number(sizeS);
const ca = await Bun.file(caPath!).text();
const req = new TextEncoder().encode("GET /m HTTP/1.1\r\nHost: h.example\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n");
let done = 0;
const t0 = performance.now();
await Promise.all(Array.from({ length: C }, () => new Promise<void>((res) => {
  let got = 0, need = -1, count = 0, headBuf = "";
  const per = Math.ceil(N / C);
  Bun.connect({ hostname: "127.0.0.1", port, tls: { ca, serverName: "h.example" }, socket: {
    open(s) { s.write(req); },
    data(s, d) {
      let i = 0;
      while (i < d.byteLength) {
        if (need < 0) { headBuf += Buffer.from(d.subarray(i)).toString("latin1"); const e = headBuf.indexOf("\r\n\r\n"); if (e < 0) return; const m = /content-length: (\d+)/i.exec(headBuf)!; need = Number(m[1]); const consumed = e + 4 - (headBuf.length - (d.byteLength - i)); i += consumed; headBuf = ""; got = 0; continue; }
        const take = Math.min(need - got, d.byteLength - i); got += take; i += take;
        if (got === need) { need = -1; count++; done++; if (count >= per) { s.end(); res(); return; } s.write(req); }
      }
    }, close() { res(); }, error() { res(); } } });
})));
const ms = performance.now() - t0;
console.log(JSON.stringify({ done, rps: Math.round(done / ms * 1000) }));
export {};
