// Global tables (issue 18, item 4; Kafka Streams' GlobalKTable): an input declared `global` is read whole by every
// worker, outside the consumer group, into a table of its latest value per key in the worker's memory. A join step
// that names it looks each record up by its `lookup` expression, wherever it stands in the pipeline, with no
// repartition and no task state: the table as it stands when the record is processed (not as of the record's
// event time: that is the partitioned stream-table join's, join.ts).
//
// The table is read again from the topic itself at every start, from each partition's log start, and the worker
// takes no record before every partition has been read to the end it had then (as Kafka Streams bootstraps its
// global stores); after that, a refresh reads what has come since, once a second. A read that fails is tried
// again with backoff, counted and logged; the table keeps what it had.

import { errorMessage, type Logger } from "../src/log.ts";
import type { CompiledInput } from "../src/topology/compile.ts";
import { runtimeProgram } from "./cel-budget.ts";
import { decodeValue, encodeKey } from "./codec.ts";
import type { KafkaIo } from "./kafka/kafka-io.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import { scopeOf } from "./stateless.ts";

/** What a lookup step reads: a global input's value for a key, or undefined when it has none. */
export interface GlobalLookup {
  get(input: string, key: Buffer): unknown;
}

/** How often a worker reads what its global inputs' topics got since the last read. */
export const REFRESH_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;

type Program = (ctx: Record<string, unknown>) => unknown;

interface Table {
  input: CompiledInput;
  key: Program;
  /** by key (latin1 of its encoding): the value, and its encoded size */
  entries: Map<string, { value: unknown; bytes: number }>;
  bytes: number;
  /** per `topic:partition`, the next offset to read */
  next: Map<string, bigint>;
}

export class GlobalTables implements GlobalLookup {
  private readonly tables = new Map<string, Table>();
  private readonly io: KafkaIo;
  private readonly log: Logger;
  private readonly metrics: RuntimeMetrics | undefined;
  private readonly readCommitted: boolean;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** stops a read under way at stop() */
  private readonly abort = new AbortController();
  private refreshing: Promise<void> = Promise.resolve();
  private failures = 0;

  /** `inputs`: each global input, with the CEL of its join's `key` (over the input's records). */
  constructor(inputs: { input: CompiledInput; key: string }[], o: { io: KafkaIo; log: Logger; metrics?: RuntimeMetrics; readCommitted: boolean }) {
    this.io = o.io;
    this.log = o.log;
    this.metrics = o.metrics;
    this.readCommitted = o.readCommitted;
    for (const { input, key } of inputs)
      this.tables.set(input.name, { input, key: runtimeProgram("record", key), entries: new Map(), bytes: 0, next: new Map() });
  }

  get(input: string, key: Buffer): unknown {
    const t = this.tables.get(input);
    if (!t) throw new Error(`no global input is named "${input}"`);
    return t.entries.get(key.toString("latin1"))?.value;
  }

  /** Reads every global input's topics to their ends as they are now: before the worker takes any record. */
  async bootstrap(): Promise<void> {
    for (const t of this.tables.values()) {
      const t0 = performance.now();
      await this.readAll(t);
      this.log.info("global table read", { input: t.input.name, entries: t.entries.size, bytes: t.bytes, ms: Math.round(performance.now() - t0) });
    }
  }

  /** Reads what came since, every REFRESH_MS; after a failure, later, doubling up to 30 s. */
  start(): void {
    if (this.tables.size === 0 || this.stopped) return;
    const delay = this.failures === 0 ? REFRESH_MS : Math.min(MAX_BACKOFF_MS, REFRESH_MS * 2 ** this.failures);
    this.timer = setTimeout(() => {
      this.refreshing = this.refresh().finally(() => this.start());
    }, delay);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort(new Error("the worker is stopping"));
    await this.refreshing;
  }

  private async refresh(): Promise<void> {
    for (const t of this.tables.values()) {
      try {
        await this.readAll(t);
        this.failures = 0;
      } catch (err) {
        if (this.stopped) return;
        this.failures++;
        this.metrics?.globalTableReadFailures.inc({ input: t.input.name });
        this.log.warn("reading a global input failed; its table keeps what it had, and the read is tried again", {
          input: t.input.name,
          failures: this.failures,
          error: errorMessage(err),
        });
      }
    }
  }

  /** Every partition of the input's topics, from where the table is (or the log start) to its end now. */
  private async readAll(t: Table): Promise<void> {
    const counts = await this.io.partitionCounts(t.input.topics);
    for (const topic of t.input.topics) {
      const partitions = Array.from({ length: counts.get(topic) ?? 0 }, (_, p) => p);
      // from the log start of a partition not read yet, or of one whose retention passed where the table is: what
      // it deleted is gone from the topic, and a read from before the start would fail every time
      for (const [p, start] of await this.io.offsetsAt(topic, partitions, "earliest", this.readCommitted)) {
        const at = `${topic}:${p}`;
        const next = t.next.get(at);
        if (next === undefined || next < start) t.next.set(at, start);
      }
      // one request for every partition's end: a refresh reads only those that got records since
      const ends = await this.io.endOffsets(topic, partitions.length, this.readCommitted);
      for (const p of partitions) {
        if (this.stopped) return;
        const at = `${topic}:${p}`;
        if ((t.next.get(at) ?? 0n) >= (ends[p] ?? 0n)) continue;
        const { end } = await this.io.readPartition(topic, p, t.next.get(at) ?? 0n, {
          readCommitted: this.readCommitted,
          signal: this.abort.signal,
          onRecords: async (batch) => {
            for (const m of batch) this.apply(t, m);
            t.next.set(at, (batch.at(-1)?.offset ?? -1n) + 1n);
          },
        });
        t.next.set(at, end);
      }
    }
    this.metrics?.globalTableEntries.set({ input: t.input.name }, t.entries.size);
    this.metrics?.globalTableBytes.set({ input: t.input.name }, t.bytes);
  }

  /** One record: its key's value from now on, or (a tombstone) its key gone. One that cannot be read is skipped. */
  private apply(
    t: Table,
    m: { topic: string; partition: number; offset: bigint; timestamp: bigint; key?: Buffer | null; value?: Buffer | null; headers?: Map<Buffer, Buffer> },
  ): void {
    try {
      const tombstone = m.value === undefined || m.value === null || m.value.length === 0;
      const value = tombstone ? null : decodeValue(m.value, t.input.format);
      const k = encodeKey(t.key({ ...scopeOf(m), value }));
      if (k === undefined) throw new Error("the join key is null: a table record needs a key");
      const id = k.toString("latin1");
      const old = t.entries.get(id);
      if (old) t.bytes -= old.bytes;
      if (tombstone) {
        t.entries.delete(id);
        return;
      }
      const bytes = id.length + (m.value?.length ?? 0);
      t.entries.set(id, { value, bytes });
      t.bytes += bytes;
    } catch (err) {
      this.metrics?.globalTableSkipped.inc({ input: t.input.name });
      this.log.warn("a record of a global input could not be read into its table: skipped", {
        input: t.input.name,
        topic: m.topic,
        partition: m.partition,
        offset: m.offset.toString(),
        error: errorMessage(err),
      });
    }
  }
}
