import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, test } from "node:test";
import { createRecordsBatch, Reader, readRecordsBatch } from "@platformatic/kafka";
import { libraryVarLong, varLong, varLongCorrected } from "./client.ts";

const root = join(import.meta.dirname, "..", "..");

/** A varlong by its definition, in arithmetic rather than bit operations: zigzag, then base 128, lowest first. */
function reference(v: bigint): number[] {
  let u = v >= 0n ? 2n * v : -2n * v - 1n;
  const out: number[] = [];
  do {
    const digit = Number(u % 128n);
    u /= 128n;
    out.push(u > 0n ? digit + 128 : digit);
  } while (u > 0n);
  return out;
}

function projectFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.name === "node_modules" || e.name.startsWith(".")) return [];
    const p = join(dir, e.name);
    return e.isDirectory() ? projectFiles(p) : e.name.endsWith(".ts") ? [p] : [];
  });
}

describe("the Kafka client's record timestamps", () => {
  test("varLong is the record format's: zigzag over 64 bits, 7 bits a byte", () => {
    const values = [
      0n,
      1n,
      -1n,
      63n,
      -64n,
      64n,
      2n ** 31n - 1n,
      2n ** 31n,
      -(2n ** 31n) - 1n,
      2n ** 32n,
      2n ** 32n + 5n,
      -108_339_495_064n,
      2n ** 63n - 1n,
      -(2n ** 63n),
    ];
    for (const v of values) assert.deepEqual([...varLong(v)], reference(v), `${v}`);
    assert.equal(varLong(-(2n ** 63n)).length, 10);
  });

  test("the library writes a delta past 2^31 ms wrongly (once this fails, client.ts's correction can go)", () => {
    assert.deepEqual([...libraryVarLong(1_000n)], reference(1_000n), "a small delta is right");
    assert.notDeepEqual([...libraryVarLong(-108_339_495_064n)], reference(-108_339_495_064n), "a delta of 3.4 years back");
    assert.notDeepEqual([...libraryVarLong(2n ** 32n + 5n)], reference(2n ** 32n + 5n), "bits 7 to 31 all zero");
    assert.equal(varLongCorrected, true);
  });

  test("a batch mixing timestamps years apart reads back exact, through the library's own batch writer and reader", () => {
    const now = 1_796_509_245_064n;
    const old = 1_688_169_750_000n;
    const messages = [now, old, now + 1n, 0n, 2n ** 40n].map((timestamp, i) => ({
      topic: "t",
      partition: 0,
      key: Buffer.from(`k${i}`),
      value: Buffer.from("v"),
      timestamp,
    }));
    const batch = readRecordsBatch(Reader.from(createRecordsBatch(messages)));
    assert.deepEqual(
      batch.records.map((r) => batch.firstTimestamp + r.timestampDelta),
      messages.map((m) => m.timestamp),
    );
  });

  test("every producer of the project comes from client.ts, so that the correction is in its process", () => {
    const offenders: string[] = [];
    for (const file of projectFiles(root)) {
      const rel = relative(root, file);
      if (rel === join("runtime", "kafka", "client.ts")) continue;
      for (const m of readFileSync(file, "utf8").matchAll(/import\s*\{([^}]*)\}\s*from\s*"@platformatic\/kafka"/g)) {
        const names = (m[1] ?? "").split(",").map((s) => s.trim());
        if (names.includes("Producer")) offenders.push(rel);
      }
    }
    assert.deepEqual(offenders, [], "import { Producer } from runtime/kafka/client.ts instead");
  });
});
