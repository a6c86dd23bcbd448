// The differential test of the windowed runtime on the real broker. A seeded generator writes keyed,
// timestamped records into 3 source partitions, each partition out of order by up to 4 s (the pipeline allows
// 5 s). The worker re-keys them through the repartition topic and aggregates them in tumbling, hopping or
// session windows. The output equals a batch computation in this test, window for window, for both emit modes;
// records injected an hour behind are exactly the late ones; bad records reach the DLQ; the counts balance.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type Admin } from "@platformatic/kafka";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import { Producer } from "../../runtime/kafka/client.ts";
import type { StepSpec, StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createInternalTopics, createTopic, type KeyedRecord, readToEnd } from "../support/kafka.ts";
import { prng } from "../support/prng.ts";
import { compiled, type RuntimeProcess, startRuntime, userWindowSpec } from "../support/runtime.ts";

const PARTITIONS = 3;
const PER_PARTITION = 1_500;
const USERS = 12;
// In the past: a broker refuses record timestamps more than an hour ahead of its clock.
const T0 = Math.floor((Date.now() - 3 * 3_600_000) / 60_000) * 60_000;
const DISORDER_MS = 4_000;
const FLUSH_KEY = "zz-flush";

interface Event {
  user: string;
  ts: number;
  amount: number;
  partition: number;
}

/** Per partition: event times rising 100 ms a record, each shifted back by up to 4 s. */
function generate(seed: number): Event[][] {
  const rand = prng(seed);
  return Array.from({ length: PARTITIONS }, (_, p) =>
    Array.from({ length: PER_PARTITION }, (_, i) => ({
      user: `user-${Math.floor(rand() * USERS)}`,
      ts: T0 + p * 7_000 + i * 100 - Math.floor(rand() * DISORDER_MS),
      amount: 1 + Math.floor(rand() * 100),
      partition: p,
    })),
  );
}

type Window = { key: string; start: number; end: number; n: number; total: number; lo: number; hi: number };
const id = (w: { key: string; start: number; end: number }) => `${w.key}|${w.start}|${w.end}`;

function fold(groups: Map<string, { key: string; start: number; end: number; events: Event[] }>): Map<string, Window> {
  const out = new Map<string, Window>();
  for (const [k, g] of groups) {
    const amounts = g.events.map((e) => e.amount);
    out.set(k, {
      key: g.key,
      start: g.start,
      end: g.end,
      n: amounts.length,
      total: amounts.reduce((a, b) => a + b, 0),
      lo: Math.min(...amounts),
      hi: Math.max(...amounts),
    });
  }
  return out;
}

/** The batch computation: every event, in any order, into the windows it belongs to. */
function reference(events: Event[], shape: { tumbling?: number; hopping?: [number, number]; session?: number }): Map<string, Window> {
  const groups = new Map<string, { key: string; start: number; end: number; events: Event[] }>();
  const add = (key: string, start: number, end: number, e: Event) => {
    const k = id({ key, start, end });
    const g = groups.get(k) ?? { key, start, end, events: [] };
    g.events.push(e);
    groups.set(k, g);
  };
  if (shape.session !== undefined) {
    const gap = shape.session;
    const byUser = new Map<string, Event[]>();
    for (const e of events) byUser.set(e.user, [...(byUser.get(e.user) ?? []), e]);
    for (const [user, es] of byUser) {
      es.sort((a, b) => a.ts - b.ts);
      let cur: Event[] = [];
      const close = () => {
        if (cur.length === 0) return;
        for (const e of cur) add(user, cur[0]?.ts ?? 0, (cur.at(-1)?.ts ?? 0) + gap, e);
        cur = [];
      };
      for (const e of es) {
        if (cur.length > 0 && e.ts >= (cur.at(-1)?.ts ?? 0) + gap) close();
        cur.push(e);
      }
      close();
    }
    return fold(groups);
  }
  for (const e of events) {
    if (shape.tumbling !== undefined) {
      const start = Math.floor(e.ts / shape.tumbling) * shape.tumbling;
      add(e.user, start, start + shape.tumbling, e);
    } else if (shape.hopping) {
      const [size, advance] = shape.hopping;
      for (let start = Math.floor(e.ts / advance) * advance; start > e.ts - size; start -= advance) add(e.user, start, start + size, e);
    }
  }
  return fold(groups);
}

describe("windows on the real broker: the output equals a batch computation", () => {
  const env = bedEnv();
  const suffix = uniqueSuffix();
  const dir = join(env.state.dir, `runtime-windows-${suffix}`);
  const events = generate(20261125);
  const all = events.flat();
  let a: Admin;
  const workers: RuntimeProcess[] = [];

  before(() => {
    a = admin(env.bootstrap);
  });
  after(async () => {
    for (const w of workers) if (isAlive(w.proc.pid)) await stopProcess(w.proc.pid);
    await a?.close();
  });

  const records = (es: Event[]): KeyedRecord[] =>
    es.map((e) => ({ key: `${e.partition}`, value: JSON.stringify({ user: e.user, ts: e.ts, amount: e.amount }) }));

  /** Runs one pipeline over the generated events, then late and bad records, then a flush; returns what it wrote. */
  async function run(name: string, window: NonNullable<StepSpec["window"]>, emit: "onWindowClose" | "onUpdate", expectedOut: number) {
    const app = `it.${name}-${suffix}`;
    const source = `win-src-${name}-${suffix}`;
    const sink = `win-out-${name}-${suffix}`;
    const late = `win-late-${name}-${suffix}`;
    const dlq = `win-dlq-${name}-${suffix}`;
    const spec = userWindowSpec({
      bootstrap: env.bootstrap,
      source,
      sink,
      late,
      window,
      emit,
      aggregate: { lo: { min: "value.amount" }, hi: { max: "value.amount" } },
      rest: { deadLetter: { topic: dlq } },
    });
    const topology = compiled(spec, { namespace: "it", name: `${name}-${suffix}` });
    assert.equal(topology.applicationId, app);
    for (const t of [source, sink, late, dlq]) await createTopic(a, t, PARTITIONS);
    await createInternalTopics(a, topology, PARTITIONS);
    const byPartition = new Map<number, KeyedRecord[]>();
    for (const e of all) byPartition.set(e.partition, [...(byPartition.get(e.partition) ?? []), ...records([e])]);
    const producer = new Producer({ clientId: "win-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
    const send = async (p: number, rs: KeyedRecord[]) => {
      for (let i = 0; i < rs.length; i += 500)
        await producer.send({
          messages: rs.slice(i, i + 500).map((r) => ({ topic: source, partition: p, key: Buffer.from(r.key), value: Buffer.from(r.value) })),
        });
    };
    const bad: KeyedRecord[] = [
      { key: "0", value: JSON.stringify({ user: "user-1", amount: 5 }) }, // no event time
      // amount of the wrong type, at an event time whose windows are still open
      { key: "0", value: JSON.stringify({ user: "user-1", ts: T0 + (PER_PARTITION - 1) * 100, amount: "five" }) },
      { key: "0", value: '{"user": "user-1", "ts": ' }, // malformed JSON
    ];
    try {
      for (const [p, rs] of byPartition) await send(p, rs);
      await send(0, bad);
      const w = await startRuntime({ dir, namespace: "it", name: `${name}-${suffix}`, spec });
      workers.push(w);
      // Phase 1 processed, and every task's watermark past the first hour of data: then the late records.
      await waitFor(
        async () => {
          const wms = await w.samples("conveyor_runtime_task_watermark_ms");
          return wms.length === PARTITIONS && Math.min(...wms) > T0 + 60_000;
        },
        { what: `${name}: every window task's watermark to pass T0 + 1 min`, timeoutMs: 60_000, process: w.proc },
      );
      const lateEvents: Event[] = [0, 1, 2].map((p) => ({ user: `user-${p}`, ts: T0 - 3_600_000, amount: 1, partition: p }));
      for (const e of lateEvents) await send(e.partition, records([e]));
      // A record two hours ahead in each partition moves every watermark past every window of the data.
      for (let p = 0; p < PARTITIONS; p++) await send(p, [{ key: `${p}`, value: JSON.stringify({ user: FLUSH_KEY, ts: T0 + 7_200_000, amount: 0 }) }]);
      await waitFor(async () => (await w.metric("conveyor_runtime_records_out_total")) >= expectedOut, {
        what: `${name}: ${expectedOut} results to be written`,
        timeoutMs: 60_000,
        process: w.proc,
      });
      await waitFor(async () => (await w.metric("conveyor_runtime_records_in_total")) === all.length + bad.length + lateEvents.length + PARTITIONS, {
        what: `${name}: every source record to be read`,
        timeoutMs: 30_000,
        process: w.proc,
      });
      const sinkRecords = (await readToEnd(env.bootstrap, sink)).map((m) => {
        const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; windowEnd: number; n: number; total: number; lo: number; hi: number };
        assert.equal(m.key.toString(), v.key, "a result is keyed by its group key");
        return { key: v.key, start: v.windowStart, end: v.windowEnd, n: v.n, total: v.total, lo: v.lo, hi: v.hi, ts: m.timestamp };
      });
      const lateOut = await readToEnd(env.bootstrap, late);
      const dead = await readToEnd(env.bootstrap, dlq);
      const counts = {
        in: await w.metric("conveyor_runtime_records_in_total"),
        aggregated: await w.metric("conveyor_runtime_records_aggregated_total"),
        late: await w.metric("conveyor_runtime_records_late_total"),
        dlq: await w.metric("conveyor_runtime_dead_letters_total"),
      };
      return { sinkRecords: sinkRecords.filter((r) => r.key !== FLUSH_KEY), lateOut, dead, counts, lateEvents, bad, worker: w };
    } finally {
      await producer.close();
    }
  }

  const shapes: { name: string; window: NonNullable<StepSpec["window"]>; shape: Parameters<typeof reference>[1] }[] = [
    { name: "tumbling", window: { tumbling: "10s", grace: "2s" }, shape: { tumbling: 10_000 } },
    { name: "hopping", window: { hopping: { size: "10s", advance: "5s" } }, shape: { hopping: [10_000, 5_000] } },
    { name: "session", window: { session: { gap: "500ms" } }, shape: { session: 500 } },
  ];

  for (const s of shapes) {
    test(`${s.name}, emit on close: one result per window, equal to the batch computation; only the injected records are late`, async () => {
      const want = reference(all, s.shape);
      const r = await run(`${s.name}-close`, s.window, "onWindowClose", want.size);
      const got = new Map(r.sinkRecords.map((x) => [id(x), { key: x.key, start: x.start, end: x.end, n: x.n, total: x.total, lo: x.lo, hi: x.hi }]));
      assert.equal(r.sinkRecords.length, got.size, "no window was emitted twice");
      assert.equal(got.size, want.size, "as many windows as the batch computation");
      for (const [k, w] of want) assert.deepEqual(got.get(k), w, `window ${k}`);
      // Late: exactly the three records injected an hour behind, with the watermark they met.
      assert.deepEqual(
        r.lateOut.map((m) => (JSON.parse(m.value.toString()) as { ts: number }).ts).sort(),
        r.lateEvents.map((e) => e.ts),
      );
      for (const m of r.lateOut) assert.ok(Number([...m.headers].find(([k]) => k.toString() === "conveyor.late.watermark")?.[1].toString()) > T0);
      // The bad records: in the DLQ with the step that refused them.
      const steps = r.dead.map((d) => [...d.headers].find(([k]) => k.toString() === DLQ_HEADERS.step)?.[1].toString()).sort();
      assert.deepEqual(steps, ["agg", "eventTime", "source"]);
      const input = all.length + r.bad.length + r.lateEvents.length + PARTITIONS;
      process.stdout.write(
        `# ${s.name}: ${r.counts.in} in = ${r.counts.aggregated} aggregated + ${r.counts.late} late + ${r.counts.dlq} dead letters; ${got.size} windows\n`,
      );
      assert.equal(r.counts.in, input);
      assert.equal(r.counts.in, r.counts.aggregated + r.counts.late + r.counts.dlq, "the counts balance exactly");
      await stopProcess(r.worker.proc.pid);
    });
  }

  for (const s of shapes.filter((x) => x.name !== "hopping")) {
    test(`${s.name}, emit on update: a result per update, and each window's last one equals the batch computation`, async () => {
      const want = reference(all, s.shape);
      // Tumbling: one update per record. Sessions: one per record too, each the session as merged so far.
      const updates = all.length;
      const r = await run(`${s.name}-update`, s.window, "onUpdate", updates);
      assert.equal(r.sinkRecords.length, updates, "one result per record that counted");
      const last = new Map<string, (typeof r.sinkRecords)[number]>();
      for (const x of r.sinkRecords) last.set(id(x), x);
      for (const [k, w] of want) {
        const x = last.get(k);
        assert.ok(x, `no result for window ${k}`);
        assert.deepEqual({ key: x.key, start: x.start, end: x.end, n: x.n, total: x.total, lo: x.lo, hi: x.hi }, w, `window ${k}`);
      }
      if (s.name === "tumbling") {
        const perWindow = new Map<string, number>();
        for (const x of r.sinkRecords) perWindow.set(id(x), (perWindow.get(id(x)) ?? 0) + 1);
        for (const [k, w] of want) assert.equal(perWindow.get(k), w.n, `updates of ${k}`);
      }
      await stopProcess(r.worker.proc.pid);
    });
  }
});
