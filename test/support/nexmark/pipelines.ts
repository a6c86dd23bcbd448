// The Nexmark queries as StreamPipelines (examples/nexmark/qN.yaml), and what each must write: the batch
// computation of queries.ts, in the shape the pipeline writes it. The integration test and the benchmark both
// run the examples as they are, with the broker, topics and sink of their own.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Producer } from "@platformatic/kafka";
import { load } from "js-yaml";
import type { StreamPipelineSpec } from "../../../src/api-types.gen.ts";
import type { Bid, NexmarkDataSet } from "./generator.ts";
import { formatDay, q0, q1, q2, q5, q7, q11, q14, q15, q16, q17, q18, q19, q21, q22 } from "./queries.ts";

const EXAMPLES = join(import.meta.dirname, "../../../examples/nexmark");

/**
 * How a query's output is read: `stateless` and `windowed` queries write each row once; a `table` writes each
 * change of its rows, keyed, and its answer is the sink's last value per key (finalRows).
 */
export type NexmarkKind = "stateless" | "windowed" | "table";

/** The queries the examples express, each with the batch computation of its output. */
export const NEXMARK_PIPELINES = {
  q0: { kind: "stateless", expected: (d: NexmarkDataSet) => q0(d) },
  q1: { kind: "stateless", expected: (d: NexmarkDataSet) => q1(d) },
  q2: { kind: "stateless", expected: (d: NexmarkDataSet) => q2(d) },
  q5: { kind: "windowed", expected: (d: NexmarkDataSet) => q5(d) },
  q7: { kind: "windowed", expected: (d: NexmarkDataSet) => q7(d) },
  q11: { kind: "windowed", expected: (d: NexmarkDataSet) => q11(d) },
  q14: { kind: "stateless", expected: (d: NexmarkDataSet) => q14(d) },
  // the pipelines write the day as its window's start, in ms, and q16's minute as minutes into the day: the
  // batch's "YYYY-MM-DD" and "HH:mm" are compared with those (normalizedRow)
  q15: { kind: "windowed", expected: (d: NexmarkDataSet) => q15(d) },
  q16: { kind: "windowed", expected: (d: NexmarkDataSet) => q16(d) },
  q17: { kind: "windowed", expected: (d: NexmarkDataSet) => q17(d) },
  q18: { kind: "table", expected: (d: NexmarkDataSet) => q18(d) },
  q19: { kind: "table", expected: (d: NexmarkDataSet) => q19(d) },
  q21: { kind: "stateless", expected: (d: NexmarkDataSet) => q21(d) },
  q22: { kind: "stateless", expected: (d: NexmarkDataSet) => q22(d) },
} as const satisfies Record<string, { kind: NexmarkKind; expected: (d: NexmarkDataSet) => object[] }>;

export type NexmarkQuery = keyof typeof NEXMARK_PIPELINES;

/** An example's spec as the file has it. */
export function nexmarkSpec(q: NexmarkQuery): StreamPipelineSpec {
  const doc = load(readFileSync(join(EXAMPLES, `${q}.yaml`), "utf8")) as { spec: StreamPipelineSpec };
  return doc.spec;
}

/** The example's spec on another broker, reading `bids` and writing `sink`. */
export function nexmarkSpecFor(q: NexmarkQuery, o: { bootstrap: string; bids: string; sink: string }): StreamPipelineSpec {
  const spec = nexmarkSpec(q);
  return {
    ...spec,
    kafka: { ...spec.kafka, bootstrapServers: [o.bootstrap] },
    source: { ...spec.source, topics: [o.bids] },
    sink: { ...spec.sink, topic: o.sink },
  };
}

/**
 * A table query's answer from its sink records, in the order they were written (per partition): the last value
 * of each key; a tombstone (no value) removes its key.
 */
export function finalRows(records: readonly { key?: Buffer | null; value?: Buffer | null }[]): Buffer[] {
  const last = new Map<string, Buffer | undefined>();
  for (const r of records) last.set(r.key?.toString("latin1") ?? "", r.value && r.value.length > 0 ? r.value : undefined);
  return [...last.values()].filter((v): v is Buffer => v !== undefined);
}

/** A sink record's value as the batch computation's row: the day from its window start, q16's minute as HH:mm. */
export function normalizedRow(q: NexmarkQuery, row: Record<string, unknown>): Record<string, unknown> {
  if (q === "q15" || q === "q17") return { ...row, day: formatDay(row.day as number) };
  if (q === "q16") {
    const m = row.minute as number;
    return { ...row, day: formatDay(row.day as number), minute: `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}` };
  }
  return row;
}

/**
 * The bids that end a replay: one per partition of the bids topic, at `at` (past every window of the data), so
 * that every partition's watermark passes the data's last windows. Their own windows stay open; a query without
 * a window passes them on, and the comparison leaves them out (isFlushRow).
 */
const FLUSH = "flush";

function flushBid(at: number): Bid {
  // auction 1: no multiple of 123 (q2); price 1 cent: under q14's range; channel and extra say what it is
  return { auction: 1, bidder: 0, price: 1, channel: FLUSH, url: "", dateTime: at, extra: FLUSH };
}

/** A row a flush bid gave: every query's row without a window carries the bid's extra or its channel. */
export function isFlushRow(row: Record<string, unknown>): boolean {
  return row.extra === FLUSH || row.channel === FLUSH;
}

/**
 * Writes the bids into `topic` (keyed by auction, 5,000 a request), then a flush bid into each of its
 * `partitions`, a minute ago: past every window (and day) of the data, not ahead of the workers' clocks.
 */
export async function writeBids(bootstrap: string, topic: string, partitions: number, bids: readonly Bid[], clientId: string): Promise<void> {
  const producer = new Producer({ clientId, bootstrapBrokers: [bootstrap], acks: -1, idempotent: true });
  try {
    for (let i = 0; i < bids.length; i += 5_000)
      await producer.send({
        messages: bids.slice(i, i + 5_000).map((b) => ({ topic, key: Buffer.from(String(b.auction)), value: Buffer.from(JSON.stringify(b)) })),
      });
    const flush = JSON.stringify(flushBid(Date.now() - 60_000));
    for (let p = 0; p < partitions; p++) await producer.send({ messages: [{ topic, partition: p, key: Buffer.from("1"), value: Buffer.from(flush) }] });
  } finally {
    await producer.close();
  }
}
