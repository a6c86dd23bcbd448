// The table-table join on event time (issue 18, item 4; Kafka Streams' KTable-KTable join, Flink's regular join
// of two updating tables): the records that reach the step are a table too, each its key's latest value (null:
// its deletion), and so are the input's (a tombstone: a deletion). Whenever either side of a key changes, the
// join of the two sides' latest values comes out: for inner, while both have one; for left, while the step's own
// side has one. A change that ends a result gives its deletion (a tombstone at the sink).
//
// Both sides are held until the watermark passes their event time, then taken in one order, by event time, then
// repartition offset (as window-join.ts does): the results and their event times (the change's) do not depend
// on which topic was read first, and each key's results come in its event-time order.
//
// State, in the task's store (written after a commit, as join.ts's): the held records by time and by side and
// key (window-join.ts's layout), and each side's latest value per key (0x15).
import { celTypeOf, decodeInternal, encodeInternal } from "./codec.ts";
import type { HeldRecord, JoinOutput } from "./join.ts";
import type { Store } from "./store.ts";
import { groupOf, HeldJoin, isMap, type Kept, keyPrefix, type Side } from "./window-join.ts";

const LATEST_PREFIX = 0x15;

export interface TableJoinStepLike {
  name: string;
  as: string;
  type: "inner" | "left";
}

function latestKey(side: Side, keyBytes: Buffer): Buffer {
  const b = keyPrefix(side, keyBytes);
  b[0] = LATEST_PREFIX;
  return b;
}

export class TableJoinOperator extends HeldJoin {
  readonly step: TableJoinStepLike;

  constructor(step: TableJoinStepLike, store: Store) {
    super(store);
    this.step = step;
  }

  /** Every change still to come out is above the watermark it took records up to. */
  get forwardable(): number {
    return this.wm;
  }

  /** A value of the step's own side is a map, or null (a deletion). */
  refuses(value: unknown): string | undefined {
    if (value === null || isMap(value)) return undefined;
    return `join "${this.step.name}" is a table-table join: each record is its key's latest value, a map, or null to delete it, not ${celTypeOf(value)}`;
  }

  /** A change of the input's table (value undefined or null: the key's deletion). */
  override other(r: HeldRecord): { late: boolean } {
    return this.hold(1, { ...r, value: r.value ?? null });
  }

  /** The task's watermark moves: the changes it passed are applied in order, each giving its key's new result. */
  async advance(watermark: number): Promise<JoinOutput[]> {
    if (watermark <= this.wm) return [];
    const out: JoinOutput[] = [];
    for (const { timeKey, key, kept } of await this.due(watermark)) {
      const x = kept as Kept;
      this.pending.put("t", timeKey, null);
      this.pending.put(groupOf(key), key, null);
      const keys = [latestKey(0, x.r.keyBytes), latestKey(1, x.r.keyBytes)];
      const [l, r] = (await this.pending.getMany(() => "l", keys)).map((b) => (b ? (decodeInternal(b) as Record<string, unknown>) : undefined));
      const before = this.result(l, r);
      const value = x.r.value === null ? undefined : x.r.value;
      this.pending.put("l", keys[x.side] as Buffer, value === undefined ? null : encodeInternal(value));
      const now = x.side === 0 ? this.result(value as Record<string, unknown> | undefined, r) : this.result(l, value);
      if (now) out.push({ ok: true, record: x.r, value: now });
      else if (before) out.push({ ok: true, record: x.r, deleted: true, last: before });
    }
    this.wm = watermark;
    return out;
  }

  /** The join of a key's two latest values, if it has one: inner needs both, left its own side's. */
  private result(left: Record<string, unknown> | undefined, right: unknown): Record<string, unknown> | undefined {
    if (left === undefined) return undefined;
    if (right === undefined && this.step.type === "inner") return undefined;
    return { ...left, [this.step.as]: right ?? null };
  }
}
