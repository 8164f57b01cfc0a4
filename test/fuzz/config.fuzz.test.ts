/**
 * @module Property tests of `parseConfig` (STYLE §7: validated once, at the door): random tables built from the real
 * section and key names (plus `__proto__`, `constructor` and unknown ones) with values of every type never throw
 * anything but ConfigError; an accepted config is frozen, parses to itself again, and compiles into a policy.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { DEFAULTS, parseConfig, type Config } from "../../src/core/config";
import { compilePolicy } from "../../src/core/policy";
import { parse as parseToml } from "smol-toml";
import { check, expectOnlyConfigError } from "./arbitraries";

const SECTIONS = Object.keys(DEFAULTS) as (keyof Config)[];
const keysOf = (s: keyof Config): string[] => {
  const d = DEFAULTS[s] as unknown;
  if (s === "upstream_proxy") return ["host", "port", "username", "password", "auth", "domain", "workstation"];
  if (s === "hosts") return ["qagpublic.qg1.apps.qualys.com", "constructor", "__proto__", "toString", "a.b", "Evil.COM.", "x..y"];
  return d && typeof d === "object" ? Object.keys(d) : [];
};

const scalar = fc.oneof(
  fc.integer({ min: -2, max: 70000 }),
  fc.constantFrom(0, 1, 22, 443, 8080, 65535, 65536, -1, 0.5, 1e21, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER + 2),
  fc.boolean(),
  fc.constantFrom(
    "", " ", "127.0.0.1", "0.0.0.0", "::1", "10.0.0.0/8", "fd00::/8", "10.0.0.0/33", "qualys.com", "microsoft.com", "https://x.com/",
    "*.x.com", "x.com:443", "a..b", "xn--bcher-kva.example", "b\u00fccher.example", "1.2", "1.3", "appliance", "customer", "basic", "ntlm",
    "QualysAgent", "*", "domain\\user", "./data", "/tmp/agate-fuzz", "\u0000", "constructor", "__proto__", "x".repeat(300),
  ),
  fc.string({ maxLength: 12 }),
);
const value = fc.oneof({ weight: 4, arbitrary: scalar }, { weight: 1, arbitrary: fc.array(scalar, { maxLength: 12 }) }, { weight: 1, arbitrary: fc.dictionary(fc.constantFrom("host", "path", "max_age_s", "x"), scalar, { maxKeys: 3 }) });

const rawConfig = fc
  .array(
    fc.tuple(
      fc.oneof({ weight: 10, arbitrary: fc.constantFrom(...SECTIONS) }, { weight: 1, arbitrary: fc.constantFrom("nope", "__proto__", "constructor") }),
      fc.array(fc.tuple(fc.nat(), value), { maxLength: 4 }),
      fc.boolean(),
    ),
    { maxLength: 5 },
  )
  .map((secs) => {
    const raw: Record<string, unknown> = {};
    for (const [s, kvs, asScalar] of secs) {
      if (asScalar && s === "upstream_proxy") {
        raw[s] = kvs.length ? kvs[0]![1] : "proxy.example:3128";
        continue;
      }
      const keys = [...keysOf(s as keyof Config), "unknown_key", "__proto__"];
      const sec: Record<string, unknown> = Object.create(null);
      for (const [k, v] of kvs) sec[keys[k % keys.length]!] = v;
      Object.defineProperty(raw, s, { value: sec, enumerable: true, configurable: true, writable: true });
    }
    return raw;
  });

function deepFrozen(v: unknown): boolean {
  if (v === null || typeof v !== "object") return true;
  return Object.isFrozen(v) && Object.values(v).every(deepFrozen);
}

describe("parseConfig", () => {
  test("random tables: a frozen Config or a ConfigError naming a key; accepted ones parse to themselves and compile", () => {
    let accepted = 0;
    check(
      "config",
      fc.property(rawConfig, (raw) => {
        const r = expectOnlyConfigError(() => parseConfig(raw));
        if (!r.ok) {
          expect(r.error.message.length).toBeGreaterThan(0);
          return;
        }
        accepted++;
        const c = r.value as Config;
        expect(deepFrozen(c)).toBe(true);
        expect(parseConfig(JSON.parse(JSON.stringify(c)))).toEqual(c);
        expectOnlyConfigError(() => compilePolicy(c));
      }),
      2500,
      31,
    );
    expect(accepted).toBeGreaterThan(50); // the generator reaches valid configs, not only refusals
  });

  test("a table where a string belongs, as smol-toml parses it (null prototype): a ConfigError, not a TypeError", () => {
    for (const toml of ["[cache]\nmin_tls = {}\n", "[cache]\nmin_tls = []\n", "[cache]\nmin_tls = 1.2\n"]) {
      const r = expectOnlyConfigError(() => parseConfig(parseToml(toml)));
      expect(r.ok ? "accepted" : r.error.name).toBe(toml.includes("1.2") ? "accepted" : "ConfigError");
    }
  });

  test("not a table at all: a ConfigError for the root", () => {
    for (const raw of [null, undefined, 1, "x", [], [{}], true]) {
      const r = expectOnlyConfigError(() => parseConfig(raw));
      expect(r.ok).toBe(false);
    }
  });
});
