import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decodeInternal, encodeInternal, encodeValue, replacerJson } from "./codec.ts";

/** A small seeded generator: the same values on every run. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const STRINGS = ["", "a", "user-17", 'q"uote', "back\\slash", "line\nbreak", "nul\u0000", "\u0000d", "é✓", "\ud83d\ude00", "lone \ud800", "tab\t", "</script>"];
const NUMBERS = [0, -0, 1, -1, 1.5, -2.25, 1e21, 1e-7, 2 ** 53, 2 ** 53 + 2, Number.MAX_VALUE, Number.MIN_VALUE, Infinity, -Infinity, Number.NaN];
const BIGINTS = [0n, 1n, -1n, 42n, 2n ** 53n - 1n, 2n ** 53n, -(2n ** 53n), 2n ** 63n - 1n, -(2n ** 64n)];

/** A value as records and state hold them, with now and then one the fast path must leave to the replacer. */
function value(r: () => number, depth: number): unknown {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const kind = Math.floor(r() * (depth > 3 ? 6 : 10));
  switch (kind) {
    case 0:
      return pick(STRINGS);
    case 1:
      return pick(NUMBERS);
    case 2:
      return pick(BIGINTS);
    case 3:
      return r() < 0.5;
    case 4:
      return null;
    case 5:
      return r() < 0.9 ? pick(STRINGS) : pick([new Date(1_700_000_000_123), new Uint8Array([1, 2, 255]), undefined]);
    case 6:
    case 7:
      return Array.from({ length: Math.floor(r() * 4) }, () => value(r, depth + 1));
    case 8: {
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(r() * 4); i > 0; i--) o[pick([...STRINGS, "10", "2", "toJSON", "__proto__x"])] = value(r, depth + 1);
      return o;
    }
    default:
      return r() < 0.7 ? { user: pick(STRINGS), amount: pick(BIGINTS), ts: 1_700_000_000_000n } : new Map([["m", value(r, depth + 1)]]);
  }
}

const attempt = (f: () => unknown): { ok: true; v: unknown } | { ok: false; error: string } => {
  try {
    return { ok: true, v: f() };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
};

describe("the JSON writers' fast path", () => {
  test("writes every value byte for byte as JSON.stringify's replacer does, or leaves it to the replacer", () => {
    const r = rng(17);
    for (let i = 0; i < 20_000; i++) {
      const v = value(r, 0);
      const internal = attempt(() => encodeInternal(v).toString("utf8"));
      const internalRef = attempt(() => replacerJson(v, true));
      assert.deepEqual(internal, internalRef, `internal encoding of value ${i}`);
      const json = attempt(() => encodeValue(v, "json")?.toString("utf8"));
      const jsonRef = attempt(() => replacerJson(v, false));
      assert.equal(json.ok, jsonRef.ok, `json encoding of value ${i}: both write or both refuse`);
      if (json.ok && jsonRef.ok) assert.equal(json.v, jsonRef.v, `json encoding of value ${i}`);
    }
  });

  test("keeps CEL's types across a round trip: ints, integral doubles, ints past 2^53", () => {
    const v = { n: 5n, d: 5, f: 1.5, big: 2n ** 60n, list: [1n, 2.5, "x"], nested: { ok: true, none: null } };
    assert.deepEqual(decodeInternal(encodeInternal(v)), v);
    assert.equal(encodeInternal({ user: "u1", amount: 12n }).toString(), '{"user":"u1","amount":12}');
  });
});
