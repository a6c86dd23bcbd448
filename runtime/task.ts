// A window task: one partition of the repartition topic, its store on the state volume (read and written through
// the worker's state cache), its window operator, and the watermarks of the source partitions it has heard from.
// Every store write also goes to the changelog topic (same partition), and reaches the store once committed;
// closed windows go from the store with their time segment, by one range delete, and from the changelog with its
// retention. On open it restores into the store, never into memory: from a local checkpoint when the volume still
// holds the state and a close left one (a crash leaves none), otherwise from an empty directory and the
// changelog's start.
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { decodeInternal } from "./codec.ts";
import type { KafkaIo } from "./kafka/kafka-io.ts";
import type { OutRecord } from "./stages.ts";
import type { StateCache } from "./state/cache.ts";
import { sessionIndexKey, WindowStore, withSessionIndex } from "./state/window-store.ts";
import { openRocksStore, type Store } from "./store.ts";
import { LoggedTable, type Marker, WatermarkTable } from "./watermarks.ts";
import { droppableBefore, endKey, endOfKey, holdsValues, STATE_RANGE, WindowOperator, type WindowResult, type WindowStep } from "./window.ts";

/** The watermark table lives beside the windows, so a moved task does not reopen closed windows. */
export const META_WATERMARKS = Buffer.from([0x02, 0x77]);
/** While a watermark's windows are still coming out, a part per batch: the store key they have got to. A restart
 * goes on from it; absent (a tombstone) once they all have. */
const META_CLOSING = Buffer.from([0x02, 0x63]);
/** Present once a session store's index by key (state/window-store.ts) holds every window: a store that an
 * earlier version kept has none, and gets it when it opens. Never in the changelog. */
const META_SESSION_INDEX = Buffer.from([0x02, 0x69]);
const CHECKPOINT_FILE = ".checkpoint";
/** While a restore runs, its checkpoint moves on every this many changelog offsets. */
export const RESTORE_CHECKPOINT_OFFSETS = 10_000n;

/** The marker whose watermark closed a task's windows: it stamps their results, also those of a later batch. */
export interface ClosingTrigger {
  topic: string;
  offset: bigint;
  timestamp: bigint;
}

/** Written on a close: the changelog offset the store is in step with, and which changelog that is. */
interface Checkpoint {
  offset: string;
  changelogId: string;
}

/** What a task's store needs, and the watermarks its table follows: a window task's and a join task's alike. */
export interface StatefulTaskOptions extends Omit<RestoreOptions, "changelogTopic"> {
  expectedSources: string[];
  /** the source topics of the configuration now: markers and saved entries of any other are ignored */
  sourceTopics: string[];
}

export interface TaskOptions extends StatefulTaskOptions {
  step: WindowStep;
  /** the worker's state cache, shared by its tasks */
  cache: StateCache;
  ttlMs?: number;
  /** told each time the task drops closed segments from its store */
  onSegmentsDropped?: () => void;
}

export interface RestoreReport {
  /** changelog records read */
  records: number;
  /** of those, the windows already closed when read (the changelog keeps them until its retention): not stored */
  closedSkipped: number;
  from: bigint;
  fromCheckpoint: boolean;
  /**
   * Changelog offsets below its log start that this restore needed and could not read: retention (or a
   * DeleteRecords) removed them. 0 when restoring from a checkpoint at or past the log start.
   */
  retentionSkipped: bigint;
  /** a checkpoint was found but lay before the log start: the local state was discarded, as Kafka Streams does */
  staleCheckpoint: boolean;
  ms: number;
}

export class WindowTask {
  readonly partition: number;
  readonly operator: WindowOperator;
  /** the watermarks of the source partitions it has heard from, as its store and changelog keep them */
  private readonly watermarks: LoggedTable;
  private readonly state: TaskStore;
  private readonly store: Store;
  private readonly windows: WindowStore;
  private readonly options: TaskOptions;
  /** where closing had got to, as last taken for the changelog, and as last committed */
  private takenClosing: string | undefined;
  private committedClosing: string | undefined;
  /** the end below which the store holds no window: its segments were dropped */
  private droppedBefore = Number.NEGATIVE_INFINITY;
  /** the marker of the last watermark advance: the trigger of the results it closed (onMarker, closeMore) */
  private trigger?: ClosingTrigger;

  /** the watermarks of the source partitions it has heard from */
  get table(): WatermarkTable {
    return this.watermarks.table;
  }

  private constructor(o: TaskOptions, state: TaskStore) {
    this.partition = o.partition;
    this.state = state;
    this.store = state.store;
    this.options = o;
    this.windows = new WindowStore(state.store, o.cache, { session: o.step.window.type === "session", valueSized: holdsValues(o.step) });
    this.operator = new WindowOperator(o.step, this.windows, o.ttlMs === undefined ? {} : { ttlMs: o.ttlMs });
    this.watermarks = new LoggedTable(o.expectedSources, o.sourceTopics);
  }

  /**
   * The watermarks as the store holds them: what the last committed batch left. The windows they closed stay
   * closed (nothing is emitted twice), and the segments they closed are dropped from the store. The windows
   * themselves stay on disk: a batch reads those it needs.
   */
  private async load(): Promise<void> {
    const [saved, indexed, closing] = await this.store.getMany([META_WATERMARKS, META_SESSION_INDEX, META_CLOSING]);
    if (saved) this.watermarks.load(saved);
    this.operator.resume(this.table.current(), closing?.toString("latin1"));
    this.committedClosing = this.takenClosing = this.operator.closingFrom;
    const { dropBefore } = this.operator.takeChanges();
    if (dropBefore !== undefined) await this.drop(dropBefore);
    if (this.options.step.window.type === "session" && !indexed) await this.indexSessions();
  }

  /** Writes the session index of every stored window: a store kept by a version without it. */
  private async indexSessions(): Promise<void> {
    const empty = Buffer.alloc(0);
    let puts: [Buffer, Buffer][] = [];
    for await (const [k] of this.store.range(STATE_RANGE.gte, STATE_RANGE.lt)) {
      puts.push([sessionIndexKey(k), empty]);
      if (puts.length >= 10_000) {
        await this.store.write(puts);
        puts = [];
      }
    }
    await this.store.write([...puts, [META_SESSION_INDEX, Buffer.from("1")]]);
  }

  /** Drops the store's segments that end before `end`, whole: one range delete. */
  private async drop(end: number): Promise<void> {
    if (end <= this.droppedBefore) return;
    await this.store.deleteRange(STATE_RANGE.gte, endKey(end));
    this.droppedBefore = end;
    this.options.onSegmentsDropped?.();
  }

  /**
   * Drops what the batches not committed did to the windows and the watermarks: the store holds the committed
   * state (it is written only after a commit), and the batches' records will be read again.
   */
  rollback(): void {
    this.operator.rollback();
    this.watermarks.rollback();
    this.takenClosing = this.committedClosing;
  }

  /**
   * A watermark marker read from the task's repartition partition, at `at`: the table takes it, and when the
   * task's watermark moves, the windows it passed close (a part of them, when there are more than one batch
   * takes: closeMore goes on). The marker is the trigger of their results: its time stamps them.
   */
  async onMarker(marker: Marker, at: ClosingTrigger): Promise<{ watermark: number; closed: WindowResult[] } | undefined> {
    this.table.update(marker);
    const wm = this.table.current();
    if (wm <= this.operator.watermark) return undefined;
    this.trigger = at;
    return { watermark: wm, closed: await this.operator.advance(wm) };
  }

  /**
   * The next part of a close that one batch could not take, with its trigger: the marker that moved the
   * watermark, or, for a close a restart goes on with, `fallback`.
   */
  async closeMore(fallback: ClosingTrigger): Promise<{ trigger: ClosingTrigger; closed: WindowResult[] }> {
    return { trigger: this.trigger ?? fallback, closed: await this.operator.closeMore() };
  }

  /** Opens the store and restores it from the changelog before the task may process anything. */
  static async open(o: TaskOptions): Promise<{ task: WindowTask; restore: RestoreReport }> {
    const t0 = performance.now();
    // The changelog keeps a closed window until its retention passes: those the watermark read so far has
    // closed are not written to the store, which would only drop them again.
    const seen = new WatermarkTable(o.expectedSources, o.sourceTopics);
    let closedSkipped = 0;
    let closingFrom: Buffer | undefined;
    const restored = await restoreStore({ ...o, changelogTopic: o.step.changelogTopic }, async (store, puts, deletes) => {
      const table = puts.find(([k]) => k.equals(META_WATERMARKS));
      if (table) seen.restore(decodeInternal(table[1]) as Parameters<WatermarkTable["restore"]>[0]);
      const closing = puts.find(([k]) => k.equals(META_CLOSING));
      if (closing) closingFrom = closing[1];
      else if (deletes.some((k) => k.equals(META_CLOSING))) closingFrom = undefined;
      const before = droppableBefore(o.step, seen.current());
      // a closed window is skipped once it has come out: below where a close cut short had got to
      const gone = (k: Buffer) => endOfKey(k) < (before as number) && (closingFrom === undefined || Buffer.compare(k, closingFrom) < 0);
      const open = before === undefined ? puts : puts.filter(([k]) => k[0] !== STATE_RANGE.gte[0] || !gone(k));
      closedSkipped += puts.length - open.length;
      const w = o.step.window.type === "session" ? withSessionIndex(open, deletes) : { puts: open, deletes };
      await store.write(w.puts, w.deletes);
    });
    const { state, records, from, fromCheckpoint, retentionSkipped, staleCheckpoint } = restored;
    const task = new WindowTask(o, state);
    // a store restored from the changelog's start has its session index (written with each record above)
    if (!fromCheckpoint && o.step.window.type === "session") await state.store.write([[META_SESSION_INDEX, Buffer.from("1")]]);
    await task.load();
    return { task, restore: { records, closedSkipped, from, fromCheckpoint, retentionSkipped, staleCheckpoint, ms: Math.round(performance.now() - t0) } };
  }

  /**
   * What to write since the last call: changelog records to produce now, and the store write to apply once
   * they are acknowledged (the changelog is never behind the store).
   */
  changes(): { changelog: OutRecord[]; apply: () => Promise<void> } {
    const taken = this.operator.takeChanges();
    const table = this.watermarks.take();
    const closing = this.operator.closingFrom;
    const closingChanged = closing !== this.takenClosing;
    this.takenClosing = closing;
    const closingValue = closing === undefined ? undefined : Buffer.from(closing, "latin1");
    const changelog = this.state.records(taken.deletes, [
      ...taken.puts,
      ...(table.value ? [[META_WATERMARKS, table.value] as [Buffer, Buffer]] : []),
      ...(closingChanged ? [[META_CLOSING, closingValue] as [Buffer, Buffer | undefined]] : []),
    ]);
    return {
      changelog,
      apply: async () => {
        await taken.apply();
        const puts: [Buffer, Buffer][] = table.value ? [[META_WATERMARKS, table.value]] : [];
        if (closingChanged && closingValue) puts.push([META_CLOSING, closingValue]);
        await this.store.write(puts, closingChanged && !closingValue ? [META_CLOSING] : []);
        table.commit();
        this.committedClosing = closing;
        if (taken.dropBefore !== undefined) await this.drop(taken.dropBefore);
      },
    };
  }

  /** The store, and how it stands with the changelog: the task manager records commits and sizes through it. */
  get stored(): TaskStore {
    return this.state;
  }

  /** Closes the window cache and the store, with a checkpoint. */
  async close(): Promise<bigint> {
    this.windows.close();
    return this.state.close();
  }
}

/**
 * A task's store and where it stands with its changelog, whatever the task keeps in it: every write goes to the
 * changelog (the task's own partition of it) first, and reaches the store once committed.
 */
export class TaskStore {
  readonly store: Store;
  private readonly topic: string;
  private readonly partition: number;
  private readonly dir: string;
  private readonly changelogId: string;
  /**
   * The changelog offset the store is in step with: where its restore ended, then after each committed write,
   * just past this task's last record. A checkpoint is this offset, not the changelog's end: by the time a
   * worker closes a task, another owner may have written there, and those writes are read on the next restore.
   */
  private inStepWith: bigint;

  constructor(o: { store: Store; topic: string; partition: number; dir: string; changelogId: string; inStepWith: bigint }) {
    this.store = o.store;
    this.topic = o.topic;
    this.partition = o.partition;
    this.dir = o.dir;
    this.changelogId = o.changelogId;
    this.inStepWith = o.inStepWith;
  }

  /** The changelog records of store writes (a delete as a tombstone), to the task's partition. */
  records(deletes: Buffer[], puts: [Buffer, Buffer | undefined][]): OutRecord[] {
    return [
      ...deletes.map((k) => ({ topic: this.topic, partition: this.partition, key: k })),
      ...puts.map(([k, v]) => ({ topic: this.topic, partition: this.partition, key: k, ...(v ? { value: v } : {}) })),
    ];
  }

  /** The store now holds this task's writes up to `end` (exclusive): they are committed and applied. */
  wrote(end: bigint): void {
    if (end > this.inStepWith) this.inStepWith = end;
  }

  /** bytes in memtables: the writes not yet flushed to disk */
  memtableBytes(): number {
    return this.store.memtableBytes();
  }

  sizeBytes(): number {
    return this.store.sizeBytes();
  }

  /** Closes the store and leaves a checkpoint: the next restore reads the changelog from where the store is in step. */
  async close(): Promise<bigint> {
    await this.store.close();
    writeFileSync(join(this.dir, CHECKPOINT_FILE), JSON.stringify({ offset: this.inStepWith.toString(), changelogId: this.changelogId } satisfies Checkpoint));
    return this.inStepWith;
  }
}

/** What opening a task's store from its changelog needs, whatever the task keeps in it. */
export interface RestoreOptions {
  changelogTopic: string;
  partition: number;
  dir: string;
  blockCacheBytes: number;
  io: KafkaIo;
  readCommitted: boolean;
  /** told, while the task restores, how many changelog records are left to read */
  onRestoreProgress?: (remaining: bigint) => void;
  /** a restore fails after this long without a record (default: RESTORE_STALL_MS) */
  restoreStallMs?: number;
  /** stops a restore half way: the store is closed, and its checkpoint says where the next restore goes on */
  signal?: AbortSignal;
}

/** A store opened and in step with its changelog, and how it got there. */
export interface RestoredStore {
  state: TaskStore;
  records: number;
  from: bigint;
  fromCheckpoint: boolean;
  retentionSkipped: bigint;
  staleCheckpoint: boolean;
}

/**
 * Opens a task's store and restores it from its changelog: from the checkpoint a clean close left, when the volume
 * holds it and the changelog still reaches back to it, else from an empty directory and the changelog's start.
 * `write` puts each batch of changelog records (the last of each key, lastWrites) into the store.
 */
export async function restoreStore(
  o: RestoreOptions,
  write: (store: Store, puts: [Buffer, Buffer][], deletes: Buffer[]) => Promise<void>,
): Promise<RestoredStore> {
  const checkpointPath = join(o.dir, CHECKPOINT_FILE);
  const changelogId = await o.io.topicId(o.changelogTopic);
  // Where the changelog starts now: retention (it is compact,delete) and DeleteRecords move it past 0. A
  // restore reads from there, never from 0 and never from the end: a reader told to start below the log start
  // would otherwise jump to the end and restore nothing.
  const logStart = (await o.io.offsetsAt(o.changelogTopic, [o.partition], "earliest", false)).get(o.partition) ?? 0n;
  let from = logStart;
  let fromCheckpoint = false;
  let staleCheckpoint = false;
  const checkpoint = existsSync(checkpointPath) ? (JSON.parse(readFileSync(checkpointPath, "utf8")) as Partial<Checkpoint>) : undefined;
  const at = checkpoint?.offset !== undefined && checkpoint.changelogId === changelogId ? BigInt(checkpoint.offset) : undefined;
  if (at !== undefined && at >= logStart) {
    from = at;
    fromCheckpoint = true;
  } else {
    // No clean close, a changelog created anew since (a state reset), or a checkpoint the changelog has moved
    // past (a kept volume back late: what came between is gone): the local files may hold what the changelog
    // does not, or miss what it no longer has. Start over from the changelog's start.
    staleCheckpoint = at !== undefined;
    rmSync(o.dir, { recursive: true, force: true });
  }
  const retentionSkipped = fromCheckpoint ? 0n : logStart;
  const store = await openRocksStore(o.dir, { blockCacheBytes: o.blockCacheBytes });
  // The checkpoint stays while the restore runs, and moves with it: a restore that fails or is killed half way
  // (a large changelog, a stall) goes on from where it got to, not from the start, which could fail the same
  // way every time. It goes once the restore has finished: from then on the store runs ahead of any checkpoint.
  let savedAt = from;
  const read = o.io.readPartition(o.changelogTopic, o.partition, from, {
    readCommitted: o.readCommitted,
    ...(o.restoreStallMs !== undefined ? { stallMs: o.restoreStallMs } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
    onProgress: (next, end) => {
      o.onRestoreProgress?.(end > next ? end - next : 0n);
      if (next - savedAt >= RESTORE_CHECKPOINT_OFFSETS) {
        savedAt = next;
        writeFileSync(checkpointPath, JSON.stringify({ offset: next.toString(), changelogId } satisfies Checkpoint));
      }
    },
    onRecords: async (batch) => {
      const { puts, deletes } = lastWrites(batch);
      await write(store, puts, deletes);
    },
  });
  const { records, end } = await read.catch(async (err: unknown) => {
    // stopped or failed half way: the store is closed and keeps what it has, which the checkpoint (if the
    // restore got that far) lets the next restore go on from
    await store.close();
    throw err;
  });
  rmSync(checkpointPath, { force: true });
  const state = new TaskStore({ store, topic: o.changelogTopic, partition: o.partition, dir: o.dir, changelogId, inStepWith: end });
  return { state, records, from, fromCheckpoint, retentionSkipped, staleCheckpoint };
}

/**
 * A batch of changelog records as one store write: the last record of each key wins, a tombstone as a delete.
 * The store applies a write's deletes before its puts, so a key put and then deleted within one batch (a
 * session that merged into a longer one) would come back to life if both went in as they are.
 */
export function lastWrites(batch: { key: Buffer; value?: Buffer | null }[]): { puts: [Buffer, Buffer][]; deletes: Buffer[] } {
  const last = new Map<string, { key: Buffer; value?: Buffer | null }>();
  for (const m of batch) last.set(m.key.toString("latin1"), m);
  const puts: [Buffer, Buffer][] = [];
  const deletes: Buffer[] = [];
  for (const m of last.values()) {
    if (m.value === undefined || m.value === null || m.value.length === 0) deletes.push(m.key);
    else puts.push([m.key, m.value]);
  }
  return { puts, deletes };
}
