/**
 * @module Micro-benchmark of leaf minting (src/core/certs.ts mintLeaf) under an EC P-256 appliance CA and an
 * RSA-2048 customer-style CA, plus a LeafCache hit for scale. One leaf key pair, distinct hosts, as a worker does.
 * Bounded: each case runs a fixed number of iterations (stopping early past a time cap), after a warm-up.
 * Prints one JSON object: { bench, first_mint_ms, cases: [{ name, iterations, ops_per_s, ms_per_op, p50_ms, p99_ms }] }.
 * Run: `bun bench/micro/mint-leaf.bench.ts [iterations]`.
 * TODO: move onto bench/harness.ts once it exists (STYLE: one hot function per file via the harness).
 */
import "reflect-metadata"; // before @peculiar/x509, which this file also loads
import * as x509 from "@peculiar/x509";
import { LeafCache } from "../../src/core/cert-cache";
import { type Ca, createCa, loadCa, makeLeafKeys, mintLeaf } from "../../src/core/certs";

const ITERATIONS = Math.max(100, Math.min(Number(process.argv[2] ?? 2_000) || 2_000, 100_000));
const WARMUP = Math.min(200, ITERATIONS);
const CAP_MS = 5_000;
const NOW = new Date(Date.UTC(2026, 2, 1, 12));
const serial = (i: number) => Uint8Array.of(0x01, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);

async function rsaCa(): Promise<Ca> {
  const keys = (await crypto.subtle.generateKey(
    { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
    true,
    ["sign", "verify"],
  )) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=Bench RSA Root",
    notBefore: new Date(NOW.getTime() - 86_400_000),
    notAfter: new Date(NOW.getTime() + 3650 * 86_400_000),
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const key = x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY");
  return loadCa("customer", { cert: cert.toString("pem"), key });
}

type Result = { name: string; iterations: number; ops_per_s: number; ms_per_op: number; p50_ms: number; p99_ms: number };

async function measure(name: string, run: (i: number) => Promise<unknown>): Promise<Result> {
  for (let i = 0; i < WARMUP; i++) await run(-1 - i);
  const times: number[] = [];
  const start = performance.now();
  for (let i = 0; i < ITERATIONS; i++) {
    const t0 = performance.now();
    await run(i);
    times.push(performance.now() - t0);
    if (performance.now() - start > CAP_MS) break;
  }
  const total = performance.now() - start;
  times.sort((a, b) => a - b);
  const q = (p: number) => Number(times[Math.min(times.length - 1, Math.floor(p * times.length))].toFixed(4));
  return {
    name,
    iterations: times.length,
    ops_per_s: Math.round((times.length / total) * 1000),
    ms_per_op: Number((total / times.length).toFixed(4)),
    p50_ms: q(0.5),
    p99_ms: q(0.99),
  };
}

const made = await createCa({ commonName: "Bench appliance CA", now: NOW, serial: Uint8Array.of(1) });
const ec = await loadCa("appliance", { cert: made.certPem, key: made.keyPem });
const rsa = await rsaCa();
const keys = await makeLeafKeys();

// The first mint also exports the leaf key and prepares the CA (done once per process / CA).
const t0 = performance.now();
await mintLeaf(ec, keys, "first.example.com", NOW, serial(0));
const firstMintMs = Number((performance.now() - t0).toFixed(3));

const cache = new LeafCache({ cap: 10_000 });
const leaf = await mintLeaf(ec, keys, "cached.example.com", NOW, serial(1));
cache.set("cached.example.com", { ...leaf, notAfter: leaf.notAfter.getTime() });

const cases = [
  await measure("mintLeaf, EC P-256 CA (ECDSA-SHA256)", (i) => mintLeaf(ec, keys, `h${i}.example.com`, NOW, serial(i & 0xffffff))),
  await measure("mintLeaf, RSA-2048 CA (RSASSA-PKCS1-v1_5-SHA256)", (i) =>
    mintLeaf(rsa, keys, `h${i}.example.com`, NOW, serial(i & 0xffffff)),
  ),
  await measure("LeafCache.getOrMint hit", () =>
    cache.getOrMint("cached.example.com", NOW.getTime(), () => Promise.reject(new Error("unexpected mint"))),
  ),
];
console.log(JSON.stringify({ bench: "mint-leaf", first_mint_ms: firstMintMs, cases }, null, 2));
