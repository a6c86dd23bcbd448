// A join task: one partition of a join's repartition topic, where both sides of its keys meet (the stream's
// records and the table input's). Its store holds the join's state (join.ts) and the watermarks of the source
// partitions it has heard from; every store write goes to the changelog first and reaches the store once
// committed, as a window task's (task.ts, which opens and restores the store the same way).
import type { JoinStep } from "./graph.ts";
import { JoinOperator, type JoinOutput } from "./join.ts";
import type { OutRecord } from "./stages.ts";
import type { Store } from "./store.ts";
import { TableJoinOperator } from "./table-join.ts";
import { type ClosingTrigger, META_WATERMARKS, type RestoreReport, restoreStore, type StatefulTaskOptions, type TaskStore } from "./task.ts";
import { LoggedTable, type Marker, type WatermarkTable } from "./watermarks.ts";
import { WindowJoinOperator } from "./window-join.ts";

/** A join task's operator: stream-table (join.ts), windowed stream-stream (window-join.ts) or table-table (table-join.ts). */
export type AnyJoinOperator = JoinOperator | WindowJoinOperator | TableJoinOperator;

export interface JoinTaskOptions extends StatefulTaskOptions {
  step: JoinStep;
  /** state.ttl: a table key not updated for this long (processing time) goes */
  ttlMs?: number;
  /** told, once a batch is committed, of the versions it dropped past MAX_VERSIONS */
  onVersionsOverflowed?: (count: number) => void;
}

export class JoinTask {
  readonly partition: number;
  readonly operator: AnyJoinOperator;
  /** the watermarks of the source partitions it has heard from, as its store and changelog keep them */
  private readonly watermarks: LoggedTable;
  private readonly state: TaskStore;
  private readonly onVersionsOverflowed: ((count: number) => void) | undefined;
  /** the watermarks of the source partitions it has heard from */
  get table(): WatermarkTable {
    return this.watermarks.table;
  }

  private constructor(o: JoinTaskOptions, state: TaskStore) {
    this.partition = o.partition;
    this.state = state;
    this.onVersionsOverflowed = o.onVersionsOverflowed;
    this.operator = joinOperatorOf(o.step, state.store, o.ttlMs);
    this.watermarks = new LoggedTable(o.expectedSources, o.sourceTopics);
  }

  /** Opens the store and restores it from the changelog before the task may process anything. */
  static async open(o: JoinTaskOptions): Promise<{ task: JoinTask; restore: RestoreReport }> {
    const t0 = performance.now();
    const r = await restoreStore({ ...o, changelogTopic: o.step.changelogTopic }, (store, puts, deletes) => store.write(puts, deletes));
    const task = new JoinTask(o, r.state);
    const [saved] = await r.state.store.getMany([META_WATERMARKS]);
    if (saved) task.watermarks.load(saved);
    await task.operator.resume();
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
    this.watermarks.rollback();
  }

  /** What to write since the last call: changelog records now, and the store write once they are acknowledged. */
  changes(): { changelog: OutRecord[]; apply: () => Promise<void> } {
    const taken = this.operator.takeChanges();
    const table = this.watermarks.take();
    const changelog = this.state.records(taken.deletes, table.value ? [...taken.puts, [META_WATERMARKS, table.value]] : taken.puts);
    return {
      changelog,
      apply: async () => {
        await taken.apply();
        if (table.value) await this.state.store.write([[META_WATERMARKS, table.value]]);
        table.commit();
        if (taken.overflowed > 0) this.onVersionsOverflowed?.(taken.overflowed);
      },
    };
  }

  /** The store, and how it stands with the changelog: the task manager records commits and sizes through it. */
  get stored(): TaskStore {
    return this.state;
  }

  /** Closes the store and leaves a checkpoint where it is in step with the changelog. */
  close(): Promise<bigint> {
    return this.state.close();
  }
}

/** A join step's operator: a windowed stream-stream join's with `within`, a table-table join's, or a stream-table join's. */
export function joinOperatorOf(step: JoinStep, store: Store, ttlMs: number | undefined): AnyJoinOperator {
  const { withinMs, graceMs, type } = step;
  if (withinMs !== undefined) return new WindowJoinOperator({ ...step, withinMs, graceMs: graceMs ?? 0 }, store);
  // the compiler refuses it: an outer join needs within
  if (type === "outer") throw new Error(`join "${step.name}": an outer join needs within`);
  if (step.table) return new TableJoinOperator({ ...step, type }, store);
  return new JoinOperator({ ...step, type }, store, ttlMs !== undefined ? { ttlMs } : {});
}
