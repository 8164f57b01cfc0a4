/** A customer-signed chain made with openssl: an RSA root, an intermediate that may sign, and its key (PKCS#8). */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type CustomerChain = { dir: string; root: string; intermediate: string; key: string; rootPem: string };

function run(cmd: string[], cwd: string) {
  const r = Bun.spawnSync(cmd, { cwd, stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
}

export function makeCustomerChain(cn = "Example Corp Issuing CA"): CustomerChain {
  const dir = mkdtempSync(join(tmpdir(), "agate-customer-"));
  run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key", "-out", "root.pem", "-days", "365", "-subj", "/CN=Example Corp Root CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir);
  writeFileSync(join(dir, "inter.ext"), "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
  run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "inter.key", "-out", "inter.csr", "-subj", `/CN=${cn}`], dir);
  run(["openssl", "x509", "-req", "-in", "inter.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial", "-out", "inter.pem", "-days", "200", "-extfile", "inter.ext"], dir);
  run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", "inter.key", "-out", "inter.pk8.pem"], dir);
  return { dir, root: join(dir, "root.pem"), intermediate: join(dir, "inter.pem"), key: join(dir, "inter.pk8.pem"), rootPem: readFileSync(join(dir, "root.pem"), "utf8") };
}
