// A join task: one partition of a join's repartition topic, where both sides of its keys meet (the stream's
// records and the table input's). Its store holds the join's state (join.ts) and the watermarks of the source
// partitions it has heard from; every store write goes to the changelog first and reaches the store once
// committed, as a window task's (task.ts, which opens and restores the store the same way).
import { decodeInternal, encodeInternal } from "./codec.ts";
import type { JoinStep } from "./graph.ts";
import { JoinOperator, type JoinOutput } from "./join.ts";
import type { KafkaIo } from "./kafka/kafka-io.ts";
import type { OutRecord } from "./stages.ts";
import type { Store } from "./store.ts";
import { type ClosingTrigger, META_WATERMARKS, type RestoreReport, restoreStore, writeCheckpoint } from "./task.ts";
import { type Marker, WatermarkTable } from "./watermarks.ts";

export interface JoinTaskOptions {
  step: JoinStep;
  partition: number;
  dir: string;
  blockCacheBytes: number;
  expectedSources: string[];
  /** the source topics of the configuration now: markers and saved entries of any other are ignored */
  sourceTopics: string[];
  io: KafkaIo;
  readCommitted: boolean;
  onRestoreProgress?: (remaining: bigint) => void;
  restoreStallMs?: number;
  signal?: AbortSignal;
}

type SavedTable = Parameters<WatermarkTable["restore"]>[0];

export class JoinTask {
  readonly partition: number;
  readonly operator: JoinOperator;
  table: WatermarkTable;
  private readonly store: Store;
  private readonly changelog: string;
  private readonly changelogId: string;
  private readonly options: JoinTaskOptions;
  /** the watermark table as last taken for the changelog, and as last committed */
  private takenTable = "";
  private committedTable = "";
  /** the changelog offset the store is in step with (task.ts, WindowTask.inStepWith) */
  private inStepWith = 0n;

  private constructor(o: JoinTaskOptions, store: Store, changelogId: string) {
    this.partition = o.partition;
    this.options = o;
    this.store = store;
    this.changelog = o.step.changelogTopic;
    this.changelogId = changelogId;
    this.operator = new JoinOperator(o.step, store);
    this.table = new WatermarkTable(o.expectedSources, o.sourceTopics);
  }

  /** Opens the store and restores it from the changelog before the task may process anything. */
  static async open(o: JoinTaskOptions): Promise<{ task: JoinTask; restore: RestoreReport }> {
    const t0 = performance.now();
    const r = await restoreStore({ ...o, changelogTopic: o.step.changelogTopic }, (store, puts, deletes) => store.write(puts, deletes));
    const task = new JoinTask(o, r.store, r.changelogId);
    const [saved] = await r.store.getMany([META_WATERMARKS]);
    if (saved) {
      task.table.restore(decodeInternal(saved) as SavedTable);
      task.committedTable = task.takenTable = saved.toString("utf8");
    }
    await task.operator.resume();
    task.inStepWith = r.end;
    const { records, from, fromCheckpoint, retentionSkipped, staleCheckpoint } = r;
    return { task, restore: { records, closedSkipped: 0, from, fromCheckpoint, retentionSkipped, staleCheckpoint, ms: Math.round(performance.now() - t0) } };
  }

  /**
   * A watermark marker read from the task's partition: the table takes it, and when the task's watermark moves,
   * the held records it passed are released, joined.
   */
  async onMarker(marker: Marker, _at: ClosingTrigger): Promise<{ watermark: number; released: JoinOutput[] } | undefined> {
    this.table.update(marker);
    const wm = this.table.current();
    if (wm <= this.operator.watermark) return undefined;
    return { watermark: wm, released: await this.operator.advance(wm) };
  }

  /** Drops what the batches not committed did: the store holds the committed state. */
  rollback(): void {
    this.operator.rollback();
    this.table = new WatermarkTable(this.options.expectedSources, this.options.sourceTopics);
    if (this.committedTable) this.table.restore(decodeInternal(Buffer.from(this.committedTable, "utf8")) as SavedTable);
    this.takenTable = this.committedTable;
  }

  /** What to write since the last call: changelog records now, and the store write once they are acknowledged. */
  changes(): { changelog: OutRecord[]; apply: () => Promise<void> } {
    const taken = this.operator.takeChanges();
    const table = encodeInternal(this.table.toJSON());
    const tableText = table.toString("utf8");
    const tableChanged = tableText !== this.takenTable;
    this.takenTable = tableText;
    const changelog: OutRecord[] = [
      ...taken.deletes.map((k) => ({ topic: this.changelog, partition: this.partition, key: k })),
      ...taken.puts.map(([k, v]) => ({ topic: this.changelog, partition: this.partition, key: k, value: v })),
      ...(tableChanged ? [{ topic: this.changelog, partition: this.partition, key: META_WATERMARKS, value: table }] : []),
    ];
    return {
      changelog,
      apply: async () => {
        await taken.apply();
        if (tableChanged) await this.store.write([[META_WATERMARKS, table]]);
        this.committedTable = tableText;
      },
    };
  }

  /** The store now holds this task's writes up to `end` (exclusive). */
  wrote(end: bigint): void {
    if (end > this.inStepWith) this.inStepWith = end;
  }

  memtableBytes(): number {
    return this.store.memtableBytes();
  }

  sizeBytes(): number {
    return this.store.sizeBytes();
  }

  /** Closes the store and leaves a checkpoint where it is in step with the changelog. */
  async close(): Promise<bigint> {
    await this.store.close();
    writeCheckpoint(this.options.dir, this.inStepWith, this.changelogId);
    return this.inStepWith;
  }
}
