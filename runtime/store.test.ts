import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { MEMTABLE_BUDGET_BYTES, openRocksStore } from "./store.ts";
import { lastWrites } from "./task.ts";

const b = (s: string) => Buffer.from(s);

describe("the RocksDB store", () => {
  const dir = mkdtempSync(join(tmpdir(), "conveyor-store-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("puts and deletes in one write, multi-get, ordered range scans and range deletes", async () => {
    const s = await openRocksStore(join(dir, "a"), { blockCacheBytes: 8 << 20 });
    await s.write([
      [b("w|2|k"), b("2")],
      [b("w|1|k"), b("1")],
      [b("w|1|j"), b("0")],
      [b("x|1|k"), b("other")],
    ]);
    assert.deepEqual(
      (await s.getMany([b("w|1|k"), b("missing"), b("x|1|k")])).map((v) => v?.toString()),
      ["1", undefined, "other"],
    );
    const scan = async (gte: string, lt: string) => {
      const out: string[] = [];
      for await (const [k, v] of s.range(b(gte), b(lt))) out.push(`${k}=${v}`);
      return out;
    };
    assert.deepEqual(await scan("w|", "w}"), ["w|1|j=0", "w|1|k=1", "w|2|k=2"], "in key order, bounds respected");
    await s.write([[b("w|3|k"), b("3")]], [b("w|2|k")]);
    assert.deepEqual(await scan("w|", "w}"), ["w|1|j=0", "w|1|k=1", "w|3|k=3"]);
    await s.deleteRange(b("w|1|"), b("w|2|"));
    assert.deepEqual(await scan("w|", "w}"), ["w|3|k=3"], "a segment dropped whole");
    assert.deepEqual(await scan("x|", "x}"), ["x|1|k=other"], "nothing outside the range");
    assert.ok(s.sizeBytes() > 0, "it reports its size");
    await s.close();
  });

  test("what was written survives a close and a reopen", async () => {
    const path = join(dir, "b");
    const s = await openRocksStore(path, { blockCacheBytes: 8 << 20 });
    await s.write([[b("k"), b("v")]]);
    await s.close();
    const again = await openRocksStore(path, { blockCacheBytes: 8 << 20 });
    assert.equal((await again.getMany([b("k")]))[0]?.toString(), "v");
    await again.close();
  });

  test("the memtables stay within 1.5 times their budget, however much is written, and all of it reads back", async () => {
    const s = await openRocksStore(join(dir, "c"), { blockCacheBytes: 8 << 20 });
    const value = Buffer.alloc(100, 1);
    let peak = 0;
    // 64 MiB of keys and values: four times the budget, where RocksDB's default memtables held half of it
    const batches = 256;
    const perBatch = 2_000;
    for (let i = 0; i < batches; i++) {
      const puts: [Buffer, Buffer][] = [];
      for (let j = 0; j < perBatch; j++) puts.push([b(`k${String(((i * perBatch + j) * 7919) % 1_000_003).padStart(7, "0")}-${j}`), value]);
      await s.write(puts);
      peak = Math.max(peak, s.memtableBytes());
    }
    assert.ok(peak > 0, "writes go through the memtables");
    assert.ok(peak <= 1.5 * MEMTABLE_BUDGET_BYTES, `memtables peaked at ${peak} bytes, over 1.5 x ${MEMTABLE_BUDGET_BYTES}`);
    const probe = [0, 12_345, batches * perBatch - 1].map((n) => b(`k${String((n * 7919) % 1_000_003).padStart(7, "0")}-${n % perBatch}`));
    assert.deepEqual(
      (await s.getMany(probe)).map((v) => v?.length),
      [100, 100, 100],
    );
    await s.close();
  });
});

describe("lastWrites: a changelog batch as one store write", () => {
  test("a key put and then deleted in one batch is deleted; deleted and then put is put; the last put wins", () => {
    const k = (s: string) => Buffer.from(s);
    const { puts, deletes } = lastWrites([
      { key: k("merged-away"), value: k("v1") },
      { key: k("merged-away"), value: null },
      { key: k("back"), value: null },
      { key: k("back"), value: k("v2") },
      { key: k("updated"), value: k("a") },
      { key: k("updated"), value: k("b") },
    ]);
    assert.deepEqual(
      puts.map(([key, v]) => [key.toString(), v.toString()]),
      [
        ["back", "v2"],
        ["updated", "b"],
      ],
    );
    assert.deepEqual(
      deletes.map((key) => key.toString()),
      ["merged-away"],
    );
  });
});
