// Event-time windows that give the answer the data implies, whatever order the partitions are read in. A seeded
// generator writes a backlog into 6 source partitions whose event-time ranges lie hours apart at any offset (each
// partition in its own order, within maxOutOfOrderness). Kafka Streams, whose stream time is the highest event
// time seen, drops most of such a backlog as late (TESTBED.md). Conveyor's watermarks travel through the
// repartition topic as markers and merge by minimum, so:
// - the replay, by 2 exactly-once workers with one SIGKILLed and restarted halfway, gives the batch computation's
//   windows, each once, for tumbling, hopping and session windows; no record is late;
// - a second replay with a worker killed again and again gives the same output, window for window;
// - records injected hours behind every partition's watermark are late, and only those;
// - markers cost a stated number of records per 1,000 on the repartition topic;
// - a source partition with no records stops holding windows back after idleTimeout, and a record that comes to
//   it later is late only if its window has closed.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type Admin } from "@platformatic/kafka";
import { Producer } from "../../runtime/kafka/client.ts";
import { MARKER_HEADER } from "../../runtime/watermarks.ts";
import type { StepSpec, StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createInternalTopics, createTopic, forEachToEnd, groupLag, readToEnd } from "../support/kafka.ts";
import { prng } from "../support/prng.ts";
import { compiled, type RuntimeProcess, startRuntime, userWindowSpec, WorkerSet } from "../support/runtime.ts";

const RECORDS = Number(process.env.CONVEYOR_ORDER_RECORDS ?? 1_000_000);
const PARTITIONS = 6;
const USERS = 40;
/** Event time advances this much a record within a partition. */
const STEP_MS = 50;
/** Partition p's event times start p x 3 h after partition 0's: far apart at any offset. */
const APART_MS = 3 * 3_600_000;
const DISORDER_MS = 4_000;
const HOUR = 3_600_000;
// A day back, on the hour: every event time is in the past (a broker refuses timestamps an hour ahead).
const T0 = Math.floor((Date.now() - 24 * HOUR) / HOUR) * HOUR;
const FLUSH_KEY = "zz-flush";

interface Event {
  user: string;
  ts: number;
  amount: number;
  partition: number;
}

/** Per partition: event times rising STEP_MS a record from the partition's own start, each up to 4 s behind. */
function generate(seed: number, perPartition: number): Event[][] {
  const rand = prng(seed);
  return Array.from({ length: PARTITIONS }, (_, p) =>
    Array.from({ length: perPartition }, (_, i) => ({
      user: `user-${Math.floor(rand() * USERS)}`,
      ts: T0 + p * APART_MS + i * STEP_MS - Math.floor(rand() * DISORDER_MS),
      amount: 1 + Math.floor(rand() * 100),
      partition: p,
    })),
  );
}

interface Win {
  key: string;
  start: number;
  end: number;
  n: number;
  total: number;
}
const id = (w: { key: string; start: number; end: number }) => `${w.key}|${w.start}|${w.end}`;

/** The batch computation: every event, in no particular order, into the windows it belongs to. */
function reference(events: Event[], shape: { tumbling?: number; hopping?: [number, number]; session?: number }): Map<string, Win> {
  const out = new Map<string, Win>();
  const add = (key: string, start: number, end: number, amount: number) => {
    const k = id({ key, start, end });
    const w = out.get(k) ?? { key, start, end, n: 0, total: 0 };
    w.n++;
    w.total += amount;
    out.set(k, w);
  };
  if (shape.session !== undefined) {
    const gap = shape.session;
    const byUser = new Map<string, Event[]>();
    for (const e of events) {
      const list = byUser.get(e.user) ?? [];
      list.push(e);
      byUser.set(e.user, list);
    }
    for (const [user, es] of byUser) {
      es.sort((a, b) => a.ts - b.ts);
      let from = 0;
      for (let i = 1; i <= es.length; i++) {
        const prev = es[i - 1] as Event;
        if (i < es.length && (es[i] as Event).ts < prev.ts + gap) continue;
        const start = (es[from] as Event).ts;
        for (let j = from; j < i; j++) add(user, start, prev.ts + gap, (es[j] as Event).amount);
        from = i;
      }
    }
    return out;
  }
  for (const e of events) {
    if (shape.tumbling !== undefined) {
      const start = Math.floor(e.ts / shape.tumbling) * shape.tumbling;
      add(e.user, start, start + shape.tumbling, e.amount);
    } else if (shape.hopping) {
      const [size, advance] = shape.hopping;
      for (let start = Math.floor(e.ts / advance) * advance; start > e.ts - size; start -= advance) add(e.user, start, start + size, e.amount);
    }
  }
  return out;
}

const encode = (e: { user: string; ts: number; amount: number }) => Buffer.from(JSON.stringify({ user: e.user, ts: e.ts, amount: e.amount }));

async function write(producer: Producer, topic: string, partition: number, events: { user: string; ts: number; amount: number }[]): Promise<void> {
  for (let i = 0; i < events.length; i += 2_000)
    await producer.send({ messages: events.slice(i, i + 2_000).map((e) => ({ topic, partition, key: Buffer.from(e.user), value: encode(e) })) });
}

describe("event-time order independence: watermarks through the repartition topic", () => {
  const env = bedEnv();
  const perPartition = Math.floor(RECORDS / PARTITIONS);
  const events = generate(20261129, perPartition);
  const all = events.flat();
  let a: Admin;
  let producer: Producer;
  const sets: WorkerSet[] = [];

  before(() => {
    a = admin(env.bootstrap);
    producer = new Producer({ clientId: "order-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
  });
  after(async () => {
    for (const s of sets) await s.stopAll();
    await producer?.close();
    await a?.close();
  });

  /**
   * Replays the backlog through keyBy -> window (emit on close) with 2 exactly-once workers, SIGKILLing a worker
   * at each of `killsAt` (fractions of the source consumed), then injects late records and a flush. Returns the
   * read_committed output and late topic, and the repartition topic's marker count.
   */
  async function replay(name: string, window: NonNullable<StepSpec["window"]>, want: number, killsAt: number[]) {
    const suffix = uniqueSuffix();
    const dir = join(env.state.dir, `order-${name}-${suffix}`);
    const source = `order-src-${name}-${suffix}`;
    const sink = `order-out-${name}-${suffix}`;
    const late = `order-late-${name}-${suffix}`;
    const spec = userWindowSpec({
      bootstrap: env.bootstrap,
      source,
      sink,
      late,
      window,
      emit: "onWindowClose",
      rest: { processing: { guarantee: "exactlyOnce" } },
    });
    const meta = { namespace: "it", name: `order-${name}-${suffix}` };
    const topology = compiled(spec, meta);
    for (const t of [source, sink, late]) await createTopic(a, t, PARTITIONS, { "retention.ms": "-1" });
    await createInternalTopics(a, topology, PARTITIONS);
    for (let p = 0; p < PARTITIONS; p++) await write(producer, source, p, events[p] as Event[]);

    const t0 = Date.now();
    // The run is audited on the repartition topic afterwards (every source record crossed it once; what the
    // markers cost): the workers keep it whole for the day instead of purging what they committed.
    const set = new WorkerSet({ dir, ...meta, spec, env: { CONVEYOR_REPARTITION_PURGE_INTERVAL_MS: "86400000" } }, ["w-0", "w-1"]);
    sets.push(set);
    await set.startAll();
    const consumed = async () => BigInt(all.length) - (await groupLag(a, topology.applicationId, source));
    const rand = prng(killsAt.length);
    for (const at of killsAt) {
      const target = BigInt(Math.floor(all.length * at));
      await waitFor(
        async () => {
          await set.supervise();
          return (await consumed()) >= target;
        },
        { what: `${name}: ${target} source records consumed`, timeoutMs: 300_000, intervalMs: 200 },
      );
      await set.supervise(); // both running: the victim may be the one that died last time
      set.kill(set.pods[Math.floor(rand() * set.pods.length)] as string, "SIGKILL");
    }
    const backlogDone = async () => {
      await set.supervise();
      return (await groupLag(a, topology.applicationId, source)) === 0n;
    };
    await waitFor(backlogDone, { what: `${name}: the whole backlog consumed`, timeoutMs: 600_000, intervalMs: 500 });
    const replaySeconds = (Date.now() - t0) / 1000;
    // Partition 0 holds the earliest event times: once replayed, the watermark (a minimum) is its last event time
    // less the disorder it may have and maxOutOfOrderness.
    const partition0End = T0 + (perPartition - 1) * STEP_MS - DISORDER_MS - 5_000;
    // The late records are injected once the replay has closed what partition 0 can close: they are hours behind
    // every partition's watermark, so by the rules they and only they are late.
    await waitFor(
      async () => {
        await set.supervise();
        const wms = (await Promise.all([...set.workers.values()].map((w) => w.samples("conveyor_runtime_task_watermark_ms").catch(() => [])))).flat();
        return wms.length === PARTITIONS && Math.min(...wms) >= partition0End;
      },
      { what: `${name}: every window task's watermark at the end of partition 0's event times`, timeoutMs: 120_000, intervalMs: 500 },
    );
    const lateEvents = Array.from({ length: PARTITIONS }, (_, p) => ({ user: `user-${p}`, ts: T0 - 2 * HOUR + p * 60_000, amount: 1, partition: p }));
    for (const e of lateEvents) await write(producer, source, e.partition, [e]);
    // A record a day ahead in every partition moves every watermark past every window of the data.
    for (let p = 0; p < PARTITIONS; p++) await write(producer, source, p, [{ user: FLUSH_KEY, ts: T0 + 20 * HOUR, amount: 0 }]);
    await waitFor(backlogDone, { what: `${name}: the late records and the flush consumed`, timeoutMs: 120_000, intervalMs: 500 });
    const out = await waitFor(
      async () => {
        await set.supervise();
        const rs = await readToEnd(env.bootstrap, sink, { readCommitted: true, timeoutMs: 120_000 });
        return rs.length >= want ? rs : false;
      },
      { what: `${name}: ${want} windows in the read_committed sink`, timeoutMs: 180_000, intervalMs: 2_000 },
    );
    const lateOut = await readToEnd(env.bootstrap, late, { readCommitted: true });
    let markers = 0;
    const data = await forEachToEnd(
      env.bootstrap,
      topology.internalTopics.find((t) => t.endsWith("-repartition")) as string,
      (m) => {
        if ([...m.headers.keys()].some((k) => k.toString() === MARKER_HEADER)) markers++;
      },
      { readCommitted: true, timeoutMs: 180_000 },
    );
    await set.stopAll();
    const windows = out
      .map((m) => JSON.parse(m.value.toString()) as { key: string; windowStart: number; windowEnd: number; n: number; total: number })
      .filter((v) => v.key !== FLUSH_KEY)
      .map((v) => ({ key: v.key, start: v.windowStart, end: v.windowEnd, n: v.n, total: v.total }));
    return { windows, lateOut, lateEvents, markers, dataRecords: data - markers, replaySeconds, restarts: set.restarts, dir };
  }

  function assertEqualsReference(name: string, got: Win[], want: Map<string, Win>, logs: string): void {
    const byId = new Map(got.map((w) => [id(w), w]));
    // On a difference, its extent first: how many windows, how many records, which keys and times, and where
    // the workers' logs are.
    const wrong = [...want].filter(([k, w]) => byId.has(k) && (byId.get(k)?.n !== w.n || byId.get(k)?.total !== w.total));
    if (wrong.length > 0) {
      const extra = wrong.reduce((s, [k, w]) => s + ((byId.get(k)?.n ?? 0) - w.n), 0);
      const starts = wrong.map(([, w]) => w.start);
      process.stdout.write(
        `# ${name}: ${wrong.length} windows differ, ${extra} records more than the batch computation in all; ` +
          `keys ${[...new Set(wrong.map(([, w]) => w.key))].sort().join(",")}; starts ${Math.min(...starts)}..${Math.max(...starts)} ` +
          `(T0 ${T0}); worker logs in ${logs}\n`,
      );
    }
    assert.equal(got.length, byId.size, `${name}: no window emitted twice`);
    const missing = [...want.keys()].filter((k) => !byId.has(k));
    const extra = [...byId.keys()].filter((k) => !want.has(k));
    assert.deepEqual({ missing: missing.slice(0, 5), extra: extra.slice(0, 5) }, { missing: [], extra: [] }, `${name}: the batch computation's windows`);
    for (const [k, w] of want) assert.deepEqual(byId.get(k), w, `${name}: window ${k}`);
  }

  function assertLate(name: string, r: Awaited<ReturnType<typeof replay>>): void {
    assert.deepEqual(
      r.lateOut.map((m) => (JSON.parse(m.value.toString()) as { ts: number }).ts).sort((x, y) => x - y),
      r.lateEvents.map((e) => e.ts),
      `${name}: the late topic holds exactly the records injected hours behind`,
    );
  }

  const tumbling = reference(all, { tumbling: 60_000 });
  let first: Win[] | undefined;

  test(`tumbling 1 min: ${all.length} records replayed with a worker killed halfway equal the batch computation; nothing else is late`, async () => {
    const r = await replay("tumbling", { tumbling: "1m" }, tumbling.size, [0.5]);
    const per1000 = (r.markers * 1000) / r.dataRecords;
    process.stdout.write(
      `# tumbling: ${all.length} records in ${r.replaySeconds.toFixed(0)} s, ${r.windows.length} windows, ${r.lateOut.length} late, ${r.restarts} restarts; ` +
        `repartition: ${r.dataRecords} data records, ${r.markers} markers = ${per1000.toFixed(1)} per 1,000\n`,
    );
    assert.equal(r.dataRecords, all.length + r.lateEvents.length + PARTITIONS, "every source record crossed the repartition topic once");
    assertEqualsReference("tumbling", r.windows, tumbling, r.dir);
    assertLate("tumbling", r);
    // Markers go out per source partition when its watermark advanced and at most every few hundred ms, not per
    // record: the bound the README states.
    assert.ok(per1000 < 50, `markers per 1,000 data records: ${per1000.toFixed(1)}, above the stated bound of 50`);
    first = r.windows;
  });

  test("tumbling 1 min again, a worker killed 4 times: the same windows as the first replay, each once", async () => {
    const r = await replay("tumbling-again", { tumbling: "1m" }, tumbling.size, [0.2, 0.4, 0.6, 0.8]);
    process.stdout.write(`# tumbling again: ${r.windows.length} windows in ${r.replaySeconds.toFixed(0)} s, ${r.restarts} restarts\n`);
    assertEqualsReference("tumbling again", r.windows, tumbling, r.dir);
    assertLate("tumbling again", r);
    assert.ok(first, "the first replay ran");
    const sorted = (ws: Win[]) => ws.map((w) => JSON.stringify(w)).sort();
    assert.deepEqual(sorted(r.windows), sorted(first), "both replays wrote the same windows");
  });

  for (const [name, window, shape] of [
    ["hopping 1 min every 30 s", { hopping: { size: "1m", advance: "30s" } }, { hopping: [60_000, 30_000] }],
    ["session windows with a 10 s gap", { session: { gap: "10s" } }, { session: 10_000 }],
  ] as const) {
    test(`${name}: ${all.length} records replayed with a worker killed halfway equal the batch computation`, async () => {
      const short = name.split(" ")[0] as string;
      const want = reference(all, shape as Parameters<typeof reference>[1]);
      const r = await replay(short, window as NonNullable<StepSpec["window"]>, want.size, [0.5]);
      process.stdout.write(`# ${short}: ${r.windows.length} windows in ${r.replaySeconds.toFixed(0)} s, ${r.lateOut.length} late, ${r.restarts} restarts\n`);
      assert.equal(r.dataRecords, all.length + r.lateEvents.length + PARTITIONS, `${short}: every source record crossed the repartition topic once`);
      assertEqualsReference(short, r.windows, want, r.dir);
      assertLate(short, r);
    });
  }
});

describe("idleness: a source partition with no records stops holding windows back", () => {
  const env = bedEnv();
  let a: Admin;
  let producer: Producer;
  const workers: RuntimeProcess[] = [];

  before(() => {
    a = admin(env.bootstrap);
    producer = new Producer({ clientId: "idle-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
  });
  after(async () => {
    for (const w of workers) if (isAlive(w.proc.pid)) await stopProcess(w.proc.pid);
    await producer?.close();
    await a?.close();
  });

  test("after idleTimeout the windows of the busy partition close; a record that comes to the idle one later is late only if its window closed", async () => {
    const suffix = uniqueSuffix();
    const dir = join(env.state.dir, `idle-${suffix}`);
    const source = `idle-src-${suffix}`;
    const pipeline = (name: string, idleTimeout: string): StreamPipelineSpec => ({
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "1s", idleTimeout } },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        {
          name: "agg",
          window: { tumbling: "10s" },
          aggregate: { n: { count: {} }, total: { sum: "value.amount" } },
          emit: "onWindowClose",
          late: { topic: `${name}-late` },
        },
      ],
      sink: { topic: `${name}-out` },
    });
    const idle = pipeline(`idle-${suffix}`, "2s");
    const control = pipeline(`idle-control-${suffix}`, "10m");
    await createTopic(a, source, 2);
    for (const spec of [idle, control]) {
      const topology = compiled(spec, { namespace: "it", name: spec.sink.topic });
      for (const t of [spec.sink.topic, `${spec.sink.topic.replace(/-out$/, "")}-late`]) await createTopic(a, t, 2);
      await createInternalTopics(a, topology, 2);
    }
    // Partition 0: one minute of events, 100 ms apart, in order. Partition 1: nothing.
    const busy = Array.from({ length: 600 }, (_, i) => ({ user: "u", ts: T0 + i * 100, amount: 1 }));
    await write(producer, source, 0, busy);
    const start = async (spec: StreamPipelineSpec) => {
      const w = await startRuntime({ dir, namespace: "it", name: spec.sink.topic, spec });
      workers.push(w);
      return w;
    };
    const [wIdle, wControl] = [await start(idle), await start(control)];
    // Partition 1 goes idle: the watermark is partition 0's alone, 59 s, and the windows ending by then close.
    const closed = await waitFor(
      async () => {
        const rs = await readToEnd(env.bootstrap, idle.sink.topic);
        return rs.length >= 5 ? rs : false;
      },
      { what: "the 5 windows that partition 0 alone closes", timeoutMs: 60_000, intervalMs: 500, process: wIdle.proc },
    );
    const win = (m: { value: Buffer }) => {
      const v = JSON.parse(m.value.toString()) as { windowStart: number; n: number };
      return { start: v.windowStart - T0, n: v.n };
    };
    assert.deepEqual(
      closed.map(win),
      [0, 10_000, 20_000, 30_000, 40_000].map((start) => ({ start, n: 100 })),
    );
    // Without idleness nothing can close: partition 1 never sent a watermark. The control pipeline has read
    // everything by now and emitted nothing.
    await waitFor(async () => (await wControl.metric("conveyor_runtime_records_in_total")) === busy.length, {
      what: "the control pipeline to read partition 0",
      timeoutMs: 60_000,
      process: wControl.proc,
    });
    assert.equal((await readToEnd(env.bootstrap, control.sink.topic)).length, 0, "without idleness, no window closes");
    await stopProcess(wControl.proc.pid);

    // Partition 1 wakes up: a record whose window [0 s, 10 s) has closed is late; one in [50 s, 60 s), still open
    // at watermark 59 s, counts. Partition 1 is back in the minimum, so a flush on both closes the rest.
    await write(producer, source, 1, [
      { user: "u", ts: T0 + 5_000, amount: 1 },
      { user: "u", ts: T0 + 57_000, amount: 1 },
    ]);
    for (const p of [0, 1]) await write(producer, source, p, [{ user: FLUSH_KEY, ts: T0 + HOUR, amount: 0 }]);
    const rest = await waitFor(
      async () => {
        const rs = (await readToEnd(env.bootstrap, idle.sink.topic)).filter((m) => m.key.toString() !== FLUSH_KEY);
        return rs.length >= 6 ? rs : false;
      },
      { what: "the window [50 s, 60 s) after the flush", timeoutMs: 60_000, intervalMs: 500, process: wIdle.proc },
    );
    assert.deepEqual(rest.slice(5).map(win), [{ start: 50_000, n: 101 }], "the open window took partition 1's record");
    const late = await readToEnd(env.bootstrap, `idle-${suffix}-late`);
    assert.deepEqual(
      late.map((m) => (JSON.parse(m.value.toString()) as { ts: number }).ts - T0),
      [5_000],
      "only the record whose window had closed is late",
    );
  });
});
