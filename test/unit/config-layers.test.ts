/**
 * The config's layers (core/config-layers.ts, store/config-files.ts): defaults ← the admin's file ← the overlay of API
 * changes; where each value comes from; the overlay after a change holds only what changed; TOML syntax errors carry
 * line and column.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "smol-toml";
import { mergeConfig, parseConfig } from "../../src/core/config";
import { layerRaw, overlayAfterChange, valueSources } from "../../src/core/config-layers";
import { ConfigError } from "../../src/core/errors";
import { loadLayered, readTomlFile, writeOverlay } from "../../src/store/config-files";

describe("layers", () => {
  test("the overlay merges key by key; [hosts] and [upstream_proxy] replace whole", () => {
    const file = { proxy: { port: 3128, listen: "127.0.0.1" }, hosts: { a: "10.0.0.1" }, upstream_proxy: { host: "up.example.com", port: 8080, username: "u" } };
    const overlay = { proxy: { port: 3129 }, hosts: { b: "10.0.0.2" }, upstream_proxy: { host: "other.example.com", port: 3128 } };
    const c = parseConfig(layerRaw(file, overlay));
    expect(c.proxy).toMatchObject({ port: 3129, listen: "127.0.0.1" });
    expect(c.hosts).toEqual({ b: "10.0.0.2" });
    expect(c.upstream_proxy).toMatchObject({ host: "other.example.com", port: 3128, username: null });
    const s = valueSources(c, file, overlay);
    expect([s["proxy.port"], s["proxy.listen"], s["proxy.max_connections"], s["hosts"], s["upstream_proxy"]]).toEqual(["overlay", "file", "default", "overlay", "overlay"]);
  });

  test("after a change the overlay holds the keys that changed (and those it had); a removed upstream is host = \"\"", () => {
    const prev = parseConfig({ upstream_proxy: { host: "up.example.com", port: 8080 } });
    const next = mergeConfig(prev, { cache: { allowed_domains: ["microsoft.com"] }, upstream_proxy: { host: "" } });
    const o = overlayAfterChange({ proxy: { idle_timeout_s: 60 } }, prev, next);
    expect(o).toEqual({ proxy: { idle_timeout_s: 60 }, cache: { allowed_domains: ["microsoft.com"] }, upstream_proxy: { host: "" } });
    // written and read back, it gives the same config
    expect(parseConfig(layerRaw({ upstream_proxy: { host: "up.example.com", port: 8080 } }, parse(stringify(o))))).toEqual(
      mergeConfig(next, { proxy: { idle_timeout_s: 60 } }),
    );
  });

  test("loadLayered: the file, then data_dir/agate.auto.toml; the file is only read", () => {
    const dir = mkdtempSync(join(tmpdir(), "agate-layers-"));
    const file = join(dir, "agate.toml");
    writeFileSync(file, `[gateway]\ndata_dir = "${join(dir, "data")}"\n[proxy]\nport = 3128\n`);
    expect(loadLayered(file).config.proxy.port).toBe(3128);
    mkdirSync(join(dir, "data"));
    writeOverlay(join(dir, "data"), { proxy: { port: 3129 } });
    const l = loadLayered(file);
    expect(l.config.proxy.port).toBe(3129);
    expect(l.overlayPath).toBe(join(dir, "data", "agate.auto.toml"));
  });

  test("a TOML syntax error names the file, line and column", () => {
    const dir = mkdtempSync(join(tmpdir(), "agate-layers-"));
    const f = join(dir, "bad.toml");
    writeFileSync(f, "[proxy]\nport = 1\nlisten = = 2\n");
    let err: unknown;
    try {
      readTomlFile(f);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(`${f}:3:`);
  });
});
