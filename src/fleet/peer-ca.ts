/**
 * @module `[fleet] peer_ca` read and checked: the file can be read, holds PEM CA certificates (core/fleet-config.ts
 * takes the key's type; this reads the disk). Used by supervisor/preflight.ts before a config is applied and by
 * fleet/heartbeat.ts when it builds the peers' TLS options.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { ConfigError } from "../core/errors";

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
/** At most this many CA certificates in `peer_ca` (one per peer, and a few more for a rollover). */
export const MAX_PEER_CAS = 2 * 64 + 8;

/**
 * The PEM text of `peer_ca` checked: the file can be read, holds at least one certificate block, every block parses
 * as an X.509 certificate and is a CA (basicConstraints CA:TRUE — a peer's management leaf pasted instead would
 * never verify anything). Returns the certificates' PEM, joined; throws a ConfigError naming `key` otherwise.
 */
export function readPeerCa(key: string, path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(key, code === "ENOENT" ? `${path} does not exist` : code === "EISDIR" ? `${path} is not a file` : `${path} cannot be read (${code ?? String(e)})`);
  }
  const blocks = text.match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new ConfigError(key, `${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); put each peer's appliance CA (its <data_dir>/ca/appliance.pem) in it`);
  if (blocks.length > MAX_PEER_CAS) throw new ConfigError(key, `${path} holds ${blocks.length} certificates, at most ${MAX_PEER_CAS}`);
  for (const [i, b] of blocks.entries()) {
    let x: X509Certificate;
    try {
      x = new X509Certificate(b);
    } catch (e) {
      throw new ConfigError(key, `${path}: certificate ${i + 1} does not parse (${(e as Error).message})`);
    }
    if (!x.ca) throw new ConfigError(key, `${path}: certificate ${i + 1} (${x.subject.replace(/\n/g, ", ")}) is not a CA certificate; peer_ca needs the CA that issued the peers' management certificates (each peer's <data_dir>/ca/appliance.pem), not a leaf`);
  }
  return blocks.join("\n") + "\n";
}
