/**
 * @module Uploaded customer-signed certificate chains on disk: `<data_dir>/ca/uploaded/<id>/{root,chain,key}.pem`
 * (key mode 0600, directory 0700) plus their metadata in `<data_dir>/certs.db` (bun:sqlite): the admin-editable
 * common name and description (≤100 characters each), the chain's subject, validity, fingerprint, created and
 * updated times. The chain is checked before it gets here (`core/certs.ts` `checkChain`); this file only keeps it.
 * Which certificate is assigned is not stored here: the config's `[tls]` section says so, and the admin API
 * compares paths.
 */
import { Database } from "bun:sqlite";
import { chmodSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const SCHEMA_VERSION = 1;

export type CertRow = {
  id: string;
  common_name: string;
  description: string;
  subject: string;
  not_before: number;
  not_after: number;
  fingerprint: string;
  created: number;
  updated: number;
};

export type CertFiles = { root: string; chain: string | null; key: string };

export class CertDb {
  private db: Database;
  readonly dir: string;

  constructor(readonly dataDir: string) {
    this.dir = join(dataDir, "ca", "uploaded");
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.db = new Database(join(dataDir, "certs.db"), { create: true });
    this.db.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 2000;");
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS certificates (
        id TEXT PRIMARY KEY, common_name TEXT NOT NULL, description TEXT NOT NULL, subject TEXT NOT NULL,
        not_before INTEGER NOT NULL, not_after INTEGER NOT NULL, fingerprint TEXT NOT NULL,
        created INTEGER NOT NULL, updated INTEGER NOT NULL);
    `);
    const v = this.db.query<{ v: string }, []>("SELECT v FROM meta WHERE k = 'schema'").get();
    if (!v) this.db.run("INSERT INTO meta (k, v) VALUES ('schema', ?)", [String(SCHEMA_VERSION)]);
    else if (Number(v.v) !== SCHEMA_VERSION) throw new Error(`certs.db: schema ${v.v}, this build reads ${SCHEMA_VERSION}`);
  }

  /** Where a certificate's files live (whether or not they exist). */
  files(id: string): CertFiles {
    const d = join(this.dir, id);
    const chain = join(d, "chain.pem");
    return { root: join(d, "root.pem"), chain: existsSync(chain) ? chain : null, key: join(d, "key.pem") };
  }

  /** Store the files first (temp directory → rename), then the row: a crash leaves no row without files. */
  add(row: CertRow, pems: { root: string; chain: string | null; key: string }) {
    const final = join(this.dir, row.id);
    const tmp = `${final}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { mode: 0o700 });
    writeFileSync(join(tmp, "root.pem"), pems.root, { mode: 0o644 });
    if (pems.chain) writeFileSync(join(tmp, "chain.pem"), pems.chain, { mode: 0o644 });
    writeFileSync(join(tmp, "key.pem"), pems.key, { mode: 0o600 });
    chmodSync(join(tmp, "key.pem"), 0o600);
    renameSync(tmp, final);
    this.db.run(
      "INSERT INTO certificates (id, common_name, description, subject, not_before, not_after, fingerprint, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      [row.id, row.common_name, row.description, row.subject, row.not_before, row.not_after, row.fingerprint, row.created, row.updated],
    );
  }

  list(): CertRow[] {
    return this.db.query<CertRow, []>("SELECT * FROM certificates ORDER BY created").all();
  }

  get(id: string): CertRow | null {
    return this.db.query<CertRow, [string]>("SELECT * FROM certificates WHERE id = ?").get(id) ?? null;
  }

  /** Only the two admin-editable fields change. */
  update(id: string, fields: { common_name?: string; description?: string }, now: number): CertRow | null {
    const cur = this.get(id);
    if (!cur) return null;
    this.db.run("UPDATE certificates SET common_name = ?, description = ?, updated = ? WHERE id = ?", [
      fields.common_name ?? cur.common_name,
      fields.description ?? cur.description,
      now,
      id,
    ]);
    return this.get(id);
  }

  remove(id: string): boolean {
    const r = this.db.run("DELETE FROM certificates WHERE id = ?", [id]);
    rmSync(join(this.dir, id), { recursive: true, force: true });
    return r.changes > 0;
  }

  close() {
    try {
      this.db.close();
    } catch {
      // already closed
    }
  }
}
