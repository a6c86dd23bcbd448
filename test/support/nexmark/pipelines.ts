// The Nexmark queries as StreamPipelines (examples/nexmark/qN.yaml), and what each must write: the batch
// computation of queries.ts, in the shape the pipeline writes it. The integration test and the benchmark both
// run the examples as they are, with the broker, topics and sink of their own.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { load } from "js-yaml";
import { Producer } from "../../../runtime/kafka/client.ts";
import type { StreamPipelineSpec } from "../../../src/api-types.gen.ts";
import type { Auction, Bid, NexmarkDataSet, Person } from "./generator.ts";
import { formatDay, q0, q1, q2, q3AsOf, q5, q7, q8, q9, q11, q14, q15, q16, q17, q18, q19, q20AsOf, q21, q22 } from "./queries.ts";

const EXAMPLES = join(import.meta.dirname, "../../../examples/nexmark");

/**
 * How a query's output is read: `stateless`, `windowed` and `join` queries write each row once; a `table` writes
 * each change of its rows, keyed, and its answer is the sink's last value per key (finalRows). A window's rows and
 * a join's come out as the watermark passes them.
 */
export type NexmarkKind = "stateless" | "windowed" | "join" | "table";

/** The queries the examples express, each with the batch computation of its output. */
export const NEXMARK_PIPELINES = {
  q0: { kind: "stateless", expected: (d: NexmarkDataSet) => q0(d) },
  q1: { kind: "stateless", expected: (d: NexmarkDataSet) => q1(d) },
  q2: { kind: "stateless", expected: (d: NexmarkDataSet) => q2(d) },
  // a stream-table join on event time: the batch's as-of variant of the SQL's regular join (queries.ts)
  q3: { kind: "join", expected: (d: NexmarkDataSet) => q3AsOf(d) },
  q5: { kind: "windowed", expected: (d: NexmarkDataSet) => q5(d) },
  q7: { kind: "windowed", expected: (d: NexmarkDataSet) => q7(d) },
  q8: { kind: "windowed", expected: (d: NexmarkDataSet) => q8(d) },
  // a join, then a table of each auction's best bid: the SQL's regular join, as the auction ids are unique
  q9: { kind: "table", expected: (d: NexmarkDataSet) => q9(d) },
  q11: { kind: "windowed", expected: (d: NexmarkDataSet) => q11(d) },
  q14: { kind: "stateless", expected: (d: NexmarkDataSet) => q14(d) },
  // the pipelines write the day as its window's start, in ms, and q16's minute as minutes into the day: the
  // batch's "YYYY-MM-DD" and "HH:mm" are compared with those (normalizedRow)
  q15: { kind: "windowed", expected: (d: NexmarkDataSet) => q15(d) },
  q16: { kind: "windowed", expected: (d: NexmarkDataSet) => q16(d) },
  q17: { kind: "windowed", expected: (d: NexmarkDataSet) => q17(d) },
  q18: { kind: "table", expected: (d: NexmarkDataSet) => q18(d) },
  q19: { kind: "table", expected: (d: NexmarkDataSet) => q19(d) },
  q20: { kind: "join", expected: (d: NexmarkDataSet) => q20AsOf(d) },
  q21: { kind: "stateless", expected: (d: NexmarkDataSet) => q21(d) },
  q22: { kind: "stateless", expected: (d: NexmarkDataSet) => q22(d) },
} as const satisfies Record<string, { kind: NexmarkKind; expected: (d: NexmarkDataSet) => object[] }>;

export type NexmarkQuery = keyof typeof NEXMARK_PIPELINES;

/** An example's spec as the file has it. */
export function nexmarkSpec(q: NexmarkQuery): StreamPipelineSpec {
  const doc = load(readFileSync(join(EXAMPLES, `${q}.yaml`), "utf8")) as { spec: StreamPipelineSpec };
  return doc.spec;
}

/** The three Nexmark topics, by kind. */
export type NexmarkTopics = Record<NexmarkTopicKind, string>;
export type NexmarkTopicKind = "persons" | "auctions" | "bids";

/** The topics the examples read, as they name them. */
export const NEXMARK_TOPICS: NexmarkTopics = { persons: "nexmark-persons", auctions: "nexmark-auctions", bids: "nexmark-bids" };

/** The kind of an example's topic. */
function kindOf(q: NexmarkQuery, topic: string): NexmarkTopicKind {
  const kind = (Object.keys(NEXMARK_TOPICS) as NexmarkTopicKind[]).find((k) => NEXMARK_TOPICS[k] === topic);
  if (!kind) throw new Error(`examples/nexmark/${q}.yaml reads ${topic}, not one of ${Object.values(NEXMARK_TOPICS).join(", ")}`);
  return kind;
}

/** The kinds of topic a query's example reads, its source's and its inputs': bids for most, persons and auctions for q8. */
export function nexmarkInputs(q: NexmarkQuery): NexmarkTopicKind[] {
  const spec = nexmarkSpec(q);
  return [...spec.source.topics, ...(spec.inputs ?? []).flatMap((i) => i.topics)].map((t) => kindOf(q, t));
}

/** The example's spec on another broker, reading `topics` in place of the examples' and writing `sink`. */
export function nexmarkSpecFor(q: NexmarkQuery, o: { bootstrap: string; topics: NexmarkTopics; sink: string }): StreamPipelineSpec {
  const spec = nexmarkSpec(q);
  const mapped = (topics: string[]) => topics.map((t) => o.topics[kindOf(q, t)]);
  return {
    ...spec,
    kafka: { ...spec.kafka, bootstrapServers: [o.bootstrap] },
    source: { ...spec.source, topics: mapped(spec.source.topics) },
    ...(spec.inputs ? { inputs: spec.inputs.map((i) => ({ ...i, topics: mapped(i.topics) })) } : {}),
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
 * The events that end a replay: one of each kind per partition of its topic, at `at` (past every window of the
 * data), so that every partition's watermark passes the data's last windows. Their own windows stay open; a query
 * without a window passes them on, and the comparison leaves them out (isFlushRow).
 */
const FLUSH = "flush";

function flushBid(at: number): Bid {
  // auction 1: no multiple of 123 (q2); price 1 cent: under q14's range; channel and extra say what it is
  return { auction: 1, bidder: 0, price: 1, channel: FLUSH, url: "", dateTime: at, extra: FLUSH };
}

function flushPerson(at: number): Person {
  return { id: 0, name: FLUSH, emailAddress: "", creditCard: "", city: "", state: "", dateTime: at, extra: FLUSH };
}

function flushAuction(at: number): Auction {
  return { id: 0, itemName: FLUSH, description: "", initialBid: 1, reserve: 2, dateTime: at, expires: at + 1, seller: 0, category: 0, extra: FLUSH };
}

/** A row a flush event gave: every query's row without a window carries its extra, its channel or its name. */
export function isFlushRow(row: Record<string, unknown>): boolean {
  return row.extra === FLUSH || row.channel === FLUSH || row.name === FLUSH;
}

/** Each kind's events, with the key it is written under and the flush event that ends it. */
const EVENTS = {
  persons: { of: (d: NexmarkDataSet) => d.persons, key: (p: Person) => p.id, flush: flushPerson },
  auctions: { of: (d: NexmarkDataSet) => d.auctions, key: (a: Auction) => a.id, flush: flushAuction },
  bids: { of: (d: NexmarkDataSet) => d.bids, key: (b: Bid) => b.auction, flush: flushBid },
} as const;

/** How many records `writeEvents` writes into a kind's topic: its events and one flush event per partition. */
export function eventCount(data: NexmarkDataSet, kind: NexmarkTopicKind, partitions: number): number {
  return EVENTS[kind].of(data).length + partitions;
}

/**
 * Writes each kind of event into its topic (persons and auctions keyed by id, bids by auction; 5,000 a request),
 * then a flush event into each of the topic's `partitions`, a minute ago: past every window (and day) of the
 * data, not ahead of the workers' clocks.
 */
export async function writeEvents(bootstrap: string, topics: NexmarkTopics, partitions: number, data: NexmarkDataSet, clientId: string): Promise<void> {
  const producer = new Producer({ clientId, bootstrapBrokers: [bootstrap], acks: -1, idempotent: true });
  const write = async <T>(topic: string, events: readonly T[], key: (e: T) => number, flush: (at: number) => T) => {
    for (let i = 0; i < events.length; i += 5_000)
      await producer.send({
        messages: events.slice(i, i + 5_000).map((e) => ({ topic, key: Buffer.from(String(key(e))), value: Buffer.from(JSON.stringify(e)) })),
      });
    const last = flush(Date.now() - 60_000);
    for (let p = 0; p < partitions; p++)
      await producer.send({ messages: [{ topic, partition: p, key: Buffer.from(String(key(last))), value: Buffer.from(JSON.stringify(last)) }] });
  };
  try {
    await write(topics.persons, EVENTS.persons.of(data), EVENTS.persons.key, EVENTS.persons.flush);
    await write(topics.auctions, EVENTS.auctions.of(data), EVENTS.auctions.key, EVENTS.auctions.flush);
    await write(topics.bids, EVENTS.bids.of(data), EVENTS.bids.key, EVENTS.bids.flush);
  } finally {
    await producer.close();
  }
}
