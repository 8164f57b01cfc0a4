/**
 * @module A worker thread that seals or opens one age file with a passphrase, for the gateway export
 * (store/gateway-archive.ts). age-encryption runs scrypt synchronously in JavaScript: at log2 N = 18 that is 3–4 s
 * of CPU (measured: 4.4 s export, 3.1 s import at load 5.8, test/e2e/gateway-export.test.ts's figure line), and on
 * the supervisor's thread it would stall heartbeats, /healthz and the whole management port for as long — a load
 * balancer's health check would take a healthy gateway out during an export. Here it blocks only this thread.
 * Messages are plain data: in {op, bytes, passphrase, logN}, out {ok: true, bytes} | {ok: false, error}.
 */
import { Decrypter, Encrypter } from "age-encryption";

declare const self: Worker;

export type AgeJob = { op: "seal" | "open"; bytes: Uint8Array; passphrase: string; logN: number };
export type AgeAnswer = { ok: true; bytes: Uint8Array } | { ok: false; error: string };

self.onmessage = async (ev: MessageEvent<AgeJob>) => {
  const j = ev.data;
  try {
    if (j.op === "seal") {
      const e = new Encrypter();
      e.setPassphrase(j.passphrase);
      e.setScryptWorkFactor(j.logN);
      self.postMessage({ ok: true, bytes: await e.encrypt(j.bytes) } satisfies AgeAnswer);
    } else {
      const d = new Decrypter();
      d.addPassphrase(j.passphrase);
      self.postMessage({ ok: true, bytes: await d.decrypt(j.bytes) } satisfies AgeAnswer);
    }
  } catch (e) {
    self.postMessage({ ok: false, error: (e as Error).message } satisfies AgeAnswer);
  }
};
