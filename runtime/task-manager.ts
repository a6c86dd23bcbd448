// The task manager (after Kafka Streams' TaskManager): from an assignment to tasks. One per window, table or join
// step: it keeps one task per partition of that step's repartition topic the worker holds, closes those an assignment
// takes away (with a checkpoint), restores the new ones in the background, one after another, and drops the
// stores of a replaced state schema. The stream thread asks it which tasks there are and which still restore; it
// tells the thread, through `hold` and `release`, when a task's partition must be left out of the fetches and
// when it may be read again.
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../src/log.ts";
import type { CompiledTopology } from "../src/topology/compile.ts";
import type { JoinStep } from "./graph.ts";
import { MAX_VERSIONS } from "./join.ts";
import { JoinTask } from "./join-task.ts";
import type { KafkaIo } from "./kafka/kafka-io.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import type { StateCache } from "./state/cache.ts";
import { WindowTask } from "./task.ts";
import type { WindowStep } from "./window.ts";

/** A stateful step's task: a window's (or table's), or a join's. */
export type Task = WindowTask | JoinTask;

/** No task's block cache is smaller than this, however many tasks share the worker's. */
const MIN_TASK_CACHE_BYTES = 4 * 1024 * 1024;

export interface TaskManagerOptions {
  topology: CompiledTopology;
  /** the sub-topology's window (or table) or join */
  step: WindowStep | JoinStep;
  /** the topics whose markers the tasks' watermarks follow: the sources, or the repartition topic before theirs */
  markerTopics: string[];
  /** where the tasks keep their stores: the pod's state volume */
  stateDir: string;
  /** the state cache the tasks share (state/cache.ts) */
  cache: StateCache;
  io: KafkaIo;
  log: Logger;
  metrics: RuntimeMetrics;
  /** a task starts to restore: its partition is left out of every fetch until `release` */
  hold: (partition: number) => void;
  /** a task's partition may be fetched again: caught up with its changelog, or its restore was stopped */
  release: (partition: number, caughtUp: boolean) => void;
  /** a restore failed (not stopped): the worker cannot go on */
  fail: (err: Error) => void;
}

/** Which tasks an assignment closes and which it opens, given the tasks open now. */
export function taskChanges(open: Iterable<number>, wanted: ReadonlySet<number>, continuous: boolean): { close: number[]; open: number[] } {
  const close: number[] = [];
  const kept = new Set<number>();
  for (const p of open) {
    // A task kept from the last assignment stays open only if no generation came between (followsOn).
    if (wanted.has(p) && continuous) kept.add(p);
    else close.push(p);
  }
  return {
    close: close.sort((x, y) => x - y),
    open: [...wanted].filter((p) => !kept.has(p)).sort((x, y) => x - y),
  };
}

export class TaskManager {
  private readonly opts: TaskManagerOptions;
  private readonly tasks = new Map<number, Task>();
  /** tasks restoring in the background: their partitions are held out of every fetch */
  private readonly restoring = new Set<number>();
  private restores?: { abort: AbortController; done: Promise<void> };
  /** every partition upstream there is, `topic:partition`: a task's watermark waits for all of them */
  private expectedSources: string[] = [];

  constructor(opts: TaskManagerOptions) {
    this.opts = opts;
  }

  private get stepName(): string {
    return this.opts.step.name;
  }

  private labels(partition: number): { step: string; partition: string } {
    return { step: this.opts.step.name, partition: String(partition) };
  }

  /** The partitions upstream a restored task's watermark table expects, as read at the worker's start. */
  expectSources(ids: string[]): void {
    this.expectedSources = ids;
  }

  get(partition: number): Task | undefined {
    return this.tasks.get(partition);
  }

  entries(): IterableIterator<[number, Task]> {
    return this.tasks.entries();
  }

  values(): IterableIterator<Task> {
    return this.tasks.values();
  }

  get size(): number {
    return this.tasks.size;
  }

  isRestoring(partition: number): boolean {
    return this.restoring.has(partition);
  }

  /** Tasks still restoring: `/readyz` waits for none. */
  get restoringCount(): number {
    return this.restoring.size;
  }

  /** Stores of this step under another state-schema hash belong to a topology that a reset replaced. */
  dropStaleStores(): void {
    const { stateDir, step } = this.opts;
    if (!existsSync(stateDir)) return;
    for (const entry of readdirSync(stateDir)) {
      const hash = entry.startsWith(`${step.name}-`) ? entry.slice(step.name.length + 1) : "";
      if (/^[0-9a-f]{16}$/.test(hash) && entry !== storeDirName(step)) {
        rmSync(join(stateDir, entry), { recursive: true, force: true });
        this.opts.log.info("removed the stores of a replaced state schema", { dir: entry });
      }
    }
  }

  /**
   * A new assignment: closes the tasks it takes away, and those of a member that a generation may have passed
   * by (not `continuous`), and says which to open. The caller sets the read positions, then calls restore.
   */
  async assign(wanted: ReadonlySet<number>, continuous: boolean): Promise<number[]> {
    const changes = taskChanges(this.tasks.keys(), wanted, continuous);
    for (const p of changes.close) {
      const task = this.tasks.get(p) as Task;
      this.tasks.delete(p);
      await this.closeTask(task);
    }
    return changes.open;
  }

  /**
   * Restores the given tasks, one after another, while the stream reads the worker's other partitions: a
   * restoring task's repartition partition is held out of every fetch, and once its store has caught up with
   * the changelog it is released, to be read from its committed offset. Kafka Streams' active tasks go on
   * processing in the same way while others restore.
   */
  restore(partitions: number[], taskCount: number): void {
    if (partitions.length === 0) return;
    for (const p of partitions) {
      this.restoring.add(p);
      this.opts.hold(p);
    }
    const abort = new AbortController();
    const done = (async () => {
      for (const p of partitions) {
        if (abort.signal.aborted) return;
        await this.restoreTask(p, taskCount, abort.signal);
        this.restoring.delete(p);
        this.opts.release(p, true);
      }
    })().catch((err: unknown) => {
      if (!abort.signal.aborted) this.opts.fail(err instanceof Error ? err : new Error(String(err)));
    });
    this.restores = { abort, done };
  }

  /** Stops the restores under way and waits for them: each closes its store where it got to. */
  async stopRestores(): Promise<void> {
    const r = this.restores;
    if (!r) return;
    this.restores = undefined;
    r.abort.abort(new Error("the assignment changed, or the worker stops: the restore goes on at the next one"));
    await r.done;
    for (const p of this.restoring) this.opts.release(p, false);
    this.restoring.clear();
  }

  private async restoreTask(p: number, taskCount: number, signal: AbortSignal): Promise<void> {
    const { topology: t, step, metrics } = this.opts;
    metrics.restoring.inc();
    try {
      const common = {
        partition: p,
        dir: join(this.opts.stateDir, storeDirName(step), String(p)),
        // The pipeline's block cache is the worker's, shared out among the tasks it holds.
        blockCacheBytes: Math.max(MIN_TASK_CACHE_BYTES, Math.floor(t.state.blockCacheBytes / taskCount)),
        expectedSources: this.expectedSources,
        sourceTopics: this.opts.markerTopics,
        io: this.opts.io,
        readCommitted: true,
        signal,
        onRestoreProgress: (remaining: bigint) => metrics.restoreRemaining.set(this.labels(p), Number(remaining)),
      };
      const { task, restore } =
        step.kind === "join"
          ? await JoinTask.open({
              ...common,
              step,
              ...(t.state.ttlMs !== undefined ? { ttlMs: t.state.ttlMs } : {}),
              onVersionsOverflowed: (count) => {
                metrics.joinVersionsOverflowed.inc(this.labels(p), count);
                this.opts.log.warn(
                  "a table key changed more often than its versions can hold: the oldest went, and a record that needed one meets the oldest kept",
                  {
                    step: this.stepName,
                    partition: p,
                    dropped: count,
                    maxVersions: MAX_VERSIONS,
                  },
                );
              },
            })
          : await WindowTask.open({
              ...common,
              step,
              cache: this.opts.cache,
              ...(t.state.ttlMs !== undefined ? { ttlMs: t.state.ttlMs } : {}),
              onSegmentsDropped: () => metrics.segmentsDropped.inc(this.labels(p)),
            });
      this.tasks.set(p, task);
      // A restored task reports the watermark it had reached, before any marker moves it; -Inf until it has
      // heard from every source partition (the operator's status tells such a task from one not held).
      metrics.taskWatermark.set(this.labels(p), task.operator.watermark);
      metrics.restoredRecords.inc(this.labels(p), restore.records);
      metrics.restoreClosedSkipped.inc(this.labels(p), restore.closedSkipped);
      metrics.restoreRetentionSkipped.inc(this.labels(p), Number(restore.retentionSkipped));
      this.opts.log.info("task restored", {
        step: this.stepName,
        partition: p,
        ...restore,
        from: restore.from.toString(),
        retentionSkipped: restore.retentionSkipped.toString(),
        stillRestoring: this.restoring.size - 1,
      });
    } finally {
      metrics.restoring.dec();
    }
  }

  /** Drops what the tasks hold beyond their last commit: a discarded batch is read again. */
  rollback(): void {
    for (const task of this.tasks.values()) task.rollback();
  }

  /** Records a commit's changelog ends, per partition (record-collector.ts, write). */
  wrote(written: ReadonlyMap<number, bigint>): void {
    for (const [p, offset] of written) this.tasks.get(p)?.stored.wrote(offset);
  }

  /** State bytes on disk and in memtables, per task, after a commit. */
  reportSizes(): void {
    for (const [p, task] of this.tasks) {
      this.opts.metrics.stateBytes.set(this.labels(p), task.stored.sizeBytes());
      this.opts.metrics.stateMemtableBytes.set(this.labels(p), task.stored.memtableBytes());
    }
  }

  /** Whether a watermark closed more windows than one batch takes: the next flush goes on with them. */
  get closing(): boolean {
    for (const task of this.tasks.values()) if (task instanceof WindowTask && task.operator.closing) return true;
    return false;
  }

  /** Closes every task with a checkpoint: a clean stop. */
  async closeAll(): Promise<void> {
    for (const task of this.tasks.values()) await this.closeTask(task);
    this.tasks.clear();
  }

  /** Forgets the tasks without a checkpoint: the worker failed, and the next start restores from the last one. */
  forget(): void {
    this.tasks.clear();
  }

  /**
   * Closes a task's store, revoked or on a clean stop, with a checkpoint: the changelog offset just past this
   * worker's last committed write there (where the store is in step), never the changelog's end, which a new
   * owner may already have moved. The next restore here reads from the checkpoint whatever came after.
   */
  private async closeTask(task: Task): Promise<void> {
    // Its watermark is its next owner's to report now.
    const labels = this.labels(task.partition);
    this.opts.metrics.taskWatermark.remove(labels);
    this.opts.metrics.stateBytes.remove(labels);
    this.opts.metrics.stateMemtableBytes.remove(labels);
    const checkpoint = await task.close();
    this.opts.log.info("task closed", { step: this.stepName, partition: task.partition, checkpoint: checkpoint.toString() });
  }
}

/** A step's stores live under `<step>-<state-schema hash>/<partition>` on the state volume. */
function storeDirName(step: WindowStep | JoinStep): string {
  return `${step.name}-${step.stateSchemaHash}`;
}
