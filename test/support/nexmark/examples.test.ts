// The Nexmark examples compile as the webhook would compile them; those without a window write, record for
// record, what the batch computation gives, and the tables end in its answer, run here in one process through
// the source stage, the keyed stage and a table operator on a store in memory (every query runs on the bed in
// test/integration/nexmark.test.ts).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { graphOf, type JoinStep, type KeyedSubTopology, keyedSubTopologies, windowSteps } from "../../../runtime/graph.ts";
import { joinOperatorOf } from "../../../runtime/join-task.ts";
import { eventTimeOf, KeyedStage, type OutRecord, SourceStage } from "../../../runtime/stages.ts";
import { StateCache } from "../../../runtime/state/cache.ts";
import { memoryStore } from "../../../runtime/state/memory-store.ts";
import { WindowStore } from "../../../runtime/state/window-store.ts";
import { SinkEncoder, type SinkRecord } from "../../../runtime/stateless.ts";
import { WindowOperator, type WindowStep } from "../../../runtime/window.ts";
import { compile, formatCompileError } from "../../../src/topology/compile.ts";
import { nexmarkDataSet } from "./generator.ts";
import { finalRows, NEXMARK_PIPELINES, type NexmarkQuery, nexmarkSpec, normalizedRow } from "./pipelines.ts";
import { sortedRows } from "./queries.ts";

const data = nexmarkDataSet({ seed: 7, events: 20_000 });

function compiled(q: NexmarkQuery) {
  const r = compile(nexmarkSpec(q), { namespace: "nexmark", name: `nexmark-${q}` });
  assert.ok(r.ok, r.ok ? "" : r.errors.map(formatCompileError).join("; "));
  return r.topology;
}

/** Every bid through the source stage, as read from one partition of the bids topic. */
function* sourceOutcomes(stage: SourceStage) {
  for (const [i, b] of data.bids.entries()) {
    const o = stage.process({
      topic: "nexmark-bids",
      partition: 0,
      offset: BigInt(i),
      timestamp: BigInt(b.dateTime),
      key: Buffer.from(String(b.auction)),
      value: Buffer.from(JSON.stringify(b)),
    });
    assert.ok(o.ok, o.ok ? "" : o.error);
    yield o;
  }
}

/**
 * Repartition records through a table's sub-topology, in one task that holds every key: the batch is the whole
 * data set, so each key comes out once, with its last value.
 */
async function tableRows(g: ReturnType<typeof graphOf>, sub: KeyedSubTopology, sink: SinkEncoder, records: readonly OutRecord[]): Promise<SinkRecord[]> {
  const keyed = new KeyedStage(g, sub, sink);
  const op = new WindowOperator(windowSteps(g)[0] as WindowStep, new WindowStore(memoryStore(), new StateCache(64 << 20), { session: false }));
  for (const r of records) {
    const rec = { topic: r.topic, partition: 0, offset: 0n, timestamp: r.timestamp ?? 0n, key: r.key ?? null, value: r.value ?? null, headers: r.headers };
    await op.prefetch([{ keyBytes: r.key ?? Buffer.alloc(0), ts: eventTimeOf(rec) }]);
    const out = keyed.process(rec, { window: op });
    assert.ok(out.ok, out.ok ? "" : out.error);
    assert.equal(out.sink.length, 0, "a table writes at the batch's end, not per record");
  }
  const emitted = keyed.emit(op.takeUpdates(), { topic: "rp", partition: 0n, offset: -1n, headers: {} }, 0n);
  assert.deepEqual(emitted.dead, []);
  const keys = new Set(emitted.sink.map((w) => w.key?.toString()));
  assert.equal(keys.size, emitted.sink.length, "one row per key: every change of the batch de-duplicated");
  assert.ok(
    emitted.sink.every((w) => w.key !== undefined),
    "every row keyed: the sink compacts to the answer",
  );
  return emitted.sink;
}

describe("the Nexmark examples", () => {
  for (const q of Object.keys(NEXMARK_PIPELINES) as NexmarkQuery[]) {
    const kind = NEXMARK_PIPELINES[q].kind;
    test(`${q} compiles`, () => {
      assert.equal(graphOf(compiled(q)).eventTime, kind !== "stateless");
    });
    if (kind === "windowed") continue;
    if (graphOf(compiled(q)).joins.length > 0) {
      for (const order of ["the table's topic first", "the stream's topic first"] as const)
        test(`${q} ${kind === "table" ? "ends in" : "writes"} the batch computation's rows, ${order}`, async () => {
          const t = compiled(q);
          const g = graphOf(t);
          const sink = new SinkEncoder(t.sink);
          const stage = new SourceStage(t, g, sink, () => Date.now());
          const [first, next] = keyedSubTopologies(g) as [KeyedSubTopology, KeyedSubTopology | undefined];
          const keyed = new KeyedStage(g, first, sink);
          const op = joinOperatorOf(g.joins[0] as JoinStep, memoryStore(), undefined);
          const spec = nexmarkSpec(q);
          const tableTopic = spec.inputs?.[0]?.topics[0] as string;
          const topics = order === "the table's topic first" ? [tableTopic, ...spec.source.topics] : [...spec.source.topics, tableTopic];
          let offset = 0n;
          for (const topic of topics) {
            const events: { dateTime: number }[] = topic === "nexmark-persons" ? data.persons : topic === "nexmark-auctions" ? data.auctions : data.bids;
            for (const e of events) {
              const o = stage.process({
                topic,
                partition: 0,
                offset: offset++,
                timestamp: BigInt(e.dateTime),
                key: null,
                value: Buffer.from(JSON.stringify(e)),
              });
              assert.ok(o.ok, o.ok ? "" : o.error);
              for (const r of o.repartition) {
                const rec = {
                  topic: r.topic,
                  partition: 0,
                  offset: offset++,
                  timestamp: r.timestamp ?? 0n,
                  key: r.key ?? null,
                  value: r.value ?? null,
                  headers: r.headers,
                };
                await op.prefetch([r.key ?? Buffer.alloc(0)]);
                const out = keyed.process(rec, { join: op });
                assert.ok(out.ok, out.ok ? "" : out.error);
                assert.equal(out.sink.length, 0, "a join writes once the watermark passes a record, not as it comes");
              }
            }
          }
          const released = await op.advance(Number.POSITIVE_INFINITY);
          const emitted = keyed.emitJoined(released, 0);
          assert.deepEqual(emitted.dead, []);
          // a table after the join: its keyBy's records, through the next sub-topology
          if (kind === "table") assert.ok(next, `${q}: its table after the join needs a keyBy of its own`);
          const written = next ? finalRows(await tableRows(g, next, sink, emitted.repartition)) : emitted.sink.map((w) => w.value as Buffer);
          const rows = written.map((v) => JSON.parse(v.toString()) as Record<string, unknown>);
          const expected = NEXMARK_PIPELINES[q].expected(data) as object[];
          assert.ok(expected.length > 0);
          assert.deepEqual(sortedRows(rows), sortedRows(expected));
        });
      continue;
    }
    test(`${q} ${kind === "table" ? "ends in" : "writes"} the batch computation's rows`, async () => {
      const t = compiled(q);
      const g = graphOf(t);
      const sink = new SinkEncoder(t.sink);
      const stage = new SourceStage(t, g, sink);
      const written: SinkRecord[] = [];
      if (kind === "stateless") for (const o of sourceOutcomes(stage)) written.push(...o.sink);
      else
        written.push(
          ...(await tableRows(
            g,
            keyedSubTopologies(g)[0] as KeyedSubTopology,
            sink,
            [...sourceOutcomes(stage)].flatMap((o) => o.repartition),
          )),
        );
      const rows = (kind === "table" ? finalRows(written) : written.map((w) => w.value as Buffer)).map((v) =>
        normalizedRow(q, JSON.parse(v.toString()) as Record<string, unknown>),
      );
      const expected = NEXMARK_PIPELINES[q].expected(data) as object[];
      assert.ok(expected.length > 0);
      assert.deepEqual(sortedRows(rows), sortedRows(expected));
    });
  }
});
