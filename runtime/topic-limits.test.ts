import assert from "node:assert/strict";
import { test } from "node:test";
import { refit } from "./dead-letter.ts";
import { BATCH_OVERHEAD_BYTES, DEFAULT_TOPIC_LIMITS, limitsFrom, refusal } from "./topic-limits.ts";

const NOW = Date.parse("2026-12-04T12:00:00Z");
const rec = (bytes: number, ts = NOW) => ({ topic: "out", key: Buffer.from("k"), value: Buffer.alloc(bytes, "x"), timestamp: BigInt(ts) });

test("a topic's configuration: what it sets, Kafka's defaults for the rest", () => {
  assert.deepEqual(limitsFrom(new Map()), DEFAULT_TOPIC_LIMITS);
  const l = limitsFrom(
    new Map<string, string | null>([
      ["max.message.bytes", "20000"],
      ["message.timestamp.type", "CreateTime"],
      ["message.timestamp.before.max.ms", "86400000"],
      ["message.timestamp.after.max.ms", null],
    ]),
  );
  assert.deepEqual(l, { maxMessageBytes: 20_000, logAppendTime: false, beforeMaxMs: 86_400_000, afterMaxMs: 3_600_000 });
  assert.equal(limitsFrom(new Map([["message.timestamp.before.max.ms", "9223372036854775807"]])).beforeMaxMs, Number.MAX_SAFE_INTEGER);
});

test("defect 5: a record the topic would refuse, for its size or its timestamp, is named with the broker's reason", () => {
  const l = { ...DEFAULT_TOPIC_LIMITS, maxMessageBytes: 20_000, beforeMaxMs: 86_400_000 };
  assert.equal(refusal(rec(1_000), l, NOW), undefined);
  assert.match(refusal(rec(20_000), l, NOW) ?? "", /over out's max.message.bytes \(20000\).*RECORD_TOO_LARGE/);
  assert.equal(refusal(rec(20_000 - BATCH_OVERHEAD_BYTES - 1 - 1), l, NOW), undefined, "the key and the batch's overhead count too");
  assert.match(refusal(rec(10, NOW + 3_600_001), l, NOW) ?? "", /INVALID_TIMESTAMP/);
  assert.match(refusal(rec(10, NOW - 86_400_001), l, NOW) ?? "", /INVALID_TIMESTAMP/);
  assert.equal(refusal(rec(10, NOW - 86_400_001), { ...l, logAppendTime: true }, NOW), undefined, "LogAppendTime takes any timestamp");
});

test("a dead letter is cut to the DLQ's own limit: the value, then the headers not the runtime's, then the key", () => {
  const headers = new Map([
    [Buffer.from("trace"), Buffer.alloc(3_000, "t")],
    [Buffer.from("conveyor.error"), Buffer.from("why")],
  ]);
  const d = refit({ key: Buffer.alloc(2_000, "k"), value: Buffer.alloc(10_000, "v"), headers, timestamp: 1n }, 4_000);
  let size = (d.key?.length ?? 0) + (d.value?.length ?? 0);
  for (const [k, v] of d.headers) size += k.length + v.length;
  assert.ok(size <= 4_000, `${size} bytes`);
  const names = [...d.headers.keys()].map((k) => k.toString());
  assert.ok(names.includes("conveyor.error") && !names.includes("trace"), "the reasons stay, the producer's headers go");
  assert.deepEqual(
    names.filter((n) => n.startsWith("conveyor.error.")),
    ["conveyor.error.value-truncated", "conveyor.error.headers-dropped"],
  );
  const same = { key: Buffer.from("k"), value: Buffer.from("v"), headers: new Map(), timestamp: 1n };
  assert.equal(refit(same, 4_000), same, "a letter that fits is left as it is");
});
