/**
 * @module The cache port's entry after the policy said "intercept": answer the CONNECT (done by the listener),
 * terminate TLS with a leaf for the CONNECT host, and run HTTP/1.1 inside; plain absolute-form requests skip TLS.
 */
import type { Socket } from "bun";
import type { ClientConn } from "./listener";
import { SocketDuplex, contextFor, terminateTls } from "./intercept";
import { HttpSession } from "./http-session";
import { log } from "../log";

export function onIntercept(sock: Socket<ClientConn>, early: Uint8Array | null) {
  const c = sock.data;
  const duplex = new SocketDuplex(sock);
  c.intercept = duplex;
  if (early && early.byteLength) duplex.onData(early);
  if (c.verdict === null) {
    // absolute-form plain HTTP: no TLS
    new HttpSession(duplex, c, "http", null);
    return;
  }
  const host = c.target!.host;
  contextFor(host).then(
    (ctx) => {
      if (c.closed) return;
      const t = terminateTls(duplex, ctx);
      new HttpSession(t, c, "https", c.target, duplex);
    },
    (e) => {
      log("error", "cannot mint a certificate", { id: c.id, host, error: (e as Error).message });
      c.endReason = "mint-failed";
      sock.terminate();
    },
  );
}
