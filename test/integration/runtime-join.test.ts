// A stream-table join on the real broker (issue 18, item 4): payments (2 partitions) joined, left, with the
// accounts input (3 partitions: the two sides meet through the keyBy's key groups, not their own partitioning), on
// event time: each payment gets the account's tier as it stood at the payment's time, whatever order the two
// topics are read in. An account deleted by a Kafka tombstone has none from then on; a user without an account has
// none at all. Exactly-once, 2 workers, one SIGKILLed halfway. Then a payment older than the watermark is late, and
// goes to the late topic.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Producer } from "../../runtime/kafka/client.ts";
import { LATE_HEADERS } from "../../runtime/stages.ts";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, groupLag, header, produce, readToEnd } from "../support/kafka.ts";
import { compiled, runtimeSuite, startRuntime, WorkerSet } from "../support/runtime.ts";

const T0 = Date.parse("2023-07-01T00:00:00Z");
const USERS = 20;
/** 100 ms of event time apart: five minutes */
const PAYMENTS = 3_000;
/** each account changes tier every 30 s of event time */
const TIER_EVERY = 30_000;
/** u-0's account is deleted (a tombstone) at this time; u-19 never has one */
const DELETED_AT = T0 + 150_000;

interface Payment {
  user: string;
  ts: number;
  amount: number;
}

/** Each source and input's watermark: 1 s out of order, idle after 10 minutes (never, in a test). */
const WM = { maxOutOfOrderness: "1s", idleTimeout: "10m" };

/** A test's topics: `<prefix>-<name>-<suffix>` for each name. */
function topicNames<const N extends readonly string[]>(prefix: string, suffix: string, ...names: N): { [K in keyof N]: string } {
  return names.map((n) => `${prefix}-${n}-${suffix}`) as { [K in keyof N]: string };
}

/**
 * Two workers through the input: w-1 SIGKILLed once at most `half` records are left to read, and started again;
 * until nothing is left and `done` holds.
 */
async function throughKill(set: WorkerSet, o: { lag: () => Promise<bigint>; half: number; done: () => Promise<boolean>; what: string }): Promise<void> {
  await set.startAll();
  await waitFor(async () => (await o.lag()) <= BigInt(o.half), { what: "half the input committed", timeoutMs: 120_000, intervalMs: 100 });
  assert.ok(isAlive(set.workers.get("w-1")?.proc.pid ?? -1));
  set.kill("w-1", "SIGKILL");
  await waitFor(
    async () => {
      await set.supervise();
      return (await o.lag()) === 0n && (await o.done());
    },
    { what: o.what, timeoutMs: 240_000, intervalMs: 1_000 },
  );
  assert.ok(set.restarts >= 1, "the killed worker was started again");
}

describe("join: a stream with a table input, on event time", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-join");

  test("each payment with the account as it stood at its time, left, exactly once across a SIGKILL; an old one is late", async () => {
    const name = `join-${suffix}`;
    const [payments, accounts, sink, late, dlq] = topicNames("join", suffix, "payments", "accounts", "out", "late", "dlq");
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [payments], startFrom: "earliest", eventTime: "value.ts", watermark: WM },
      inputs: [{ name: "accounts", topics: [accounts], eventTime: "value.ts", watermark: WM }],
      steps: [
        { name: "by-user", keyBy: "value.user" },
        // the accounts topic is keyed by user: a tombstone has only its key
        { name: "with-account", join: { input: "accounts", key: "key", as: "account", type: "left" }, late: { topic: late } },
        { name: "project", map: "{'user': value.user, 'ts': value.ts, 'amount': value.amount, 'tier': value.account == null ? 'none' : value.account.tier}" },
      ],
      sink: { topic: sink },
      deadLetter: { topic: dlq },
      processing: { guarantee: "exactlyOnce" },
    };
    const topology = compiled(spec, { namespace: "it", name });
    await createTopic(a, payments, 2);
    await createTopic(a, accounts, 3);
    for (const t of [sink, late, dlq]) await createTopic(a, t, 2);
    await createInternalTopics(a, topology, 2);

    const paid: Payment[] = Array.from({ length: PAYMENTS }, (_, i) => ({ user: `u-${(i * 7) % USERS}`, ts: T0 + i * 100, amount: 1 + (i % 50) }));
    const tierAt = (p: Payment): string => {
      if (p.user === `u-${USERS - 1}`) return "none";
      if (p.user === "u-0" && p.ts >= DELETED_AT) return "none";
      return `t-${Math.floor((p.ts - T0) / TIER_EVERY)}`;
    };
    const expected = paid.map((p) => ({ ...p, tier: tierAt(p) }));
    assert.ok(new Set(expected.map((e) => e.tier)).size > 5, "the tiers change over the data");

    const producer = new Producer({ clientId: "join-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
    const json = (v: unknown) => Buffer.from(JSON.stringify(v));
    try {
      const messages: { topic: string; partition?: number; key: Buffer; value?: Buffer }[] = [];
      // the accounts' versions, in event-time order in each partition, as the watermark's bound (1 s) says: a
      // tombstone written after later versions would be late, and then whether the payments of its time had been
      // joined before it came would depend on read timing. The payments are the workers' to interleave.
      for (let k = 0; k * TIER_EVERY < PAYMENTS * 100; k++)
        for (let u = 0; u < USERS - 1; u++) {
          const ts = T0 + k * TIER_EVERY;
          if (u === 0 && ts === DELETED_AT) messages.push({ topic: accounts, key: Buffer.from("u-0") }); // at its Kafka timestamp below
          if (u === 0 && ts >= DELETED_AT) continue;
          messages.push({ topic: accounts, key: Buffer.from(`u-${u}`), value: json({ user: `u-${u}`, ts, tier: `t-${k}` }) });
        }
      for (const p of paid) messages.push({ topic: payments, key: Buffer.from(p.user), value: json(p) });
      // an hour on, in every partition of both: every held payment is released (the flush records' own stay held)
      for (const partition of [0, 1])
        messages.push({ topic: payments, partition, key: Buffer.from("flush"), value: json({ user: "flush", ts: T0 + 3_600_000, amount: 0 }) });
      for (const partition of [0, 1, 2])
        messages.push({ topic: accounts, partition, key: Buffer.from("flush"), value: json({ user: "flush", ts: T0 + 3_600_000, tier: "x" }) });
      assert.equal(messages.filter((m) => m.value === undefined).length, 1, "u-0's tombstone is among the accounts");
      for (let i = 0; i < messages.length; i += 500)
        await producer.send({
          messages: messages.slice(i, i + 500).map((m) => (m.value === undefined ? { ...m, timestamp: BigInt(DELETED_AT) } : m)),
        });
    } finally {
      await producer.close();
    }

    const lag = async () => (await groupLag(a, topology.applicationId, payments)) + (await groupLag(a, topology.applicationId, accounts));
    const read = (t: string) => readToEnd(env.bootstrap, t, { readCommitted: true, timeoutMs: 60_000 });
    const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0", "w-1"]);
    try {
      await throughKill(set, {
        lag,
        half: PAYMENTS / 2,
        done: async () => (await read(sink)).length >= expected.length,
        what: `${expected.length} joined payments in the sink`,
      });
      const order = (x: Payment, y: Payment) => x.ts - y.ts || x.user.localeCompare(y.user);
      const got = (await read(sink)).map((m) => JSON.parse(m.value.toString()) as Payment & { tier: string });
      assert.deepEqual(got.sort(order), expected.sort(order), "every payment once, with the tier of its time");
      assert.deepEqual(await read(dlq), [], "nothing failed");

      // every payment of the data is out, so the watermark is past them: one of their time now is late
      const old = { user: "u-1", ts: T0 + 1_000, amount: 7 };
      const p2 = new Producer({ clientId: "join-test-late", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
      try {
        await p2.send({ messages: [{ topic: payments, key: Buffer.from(old.user), value: json(old) }] });
      } finally {
        await p2.close();
      }
      await waitFor(async () => (await read(late)).length >= 1, { what: "the old payment in the late topic", timeoutMs: 60_000, intervalMs: 500 });
      const lateRecords = await read(late);
      assert.equal(lateRecords.length, 1);
      const lateRecord = lateRecords[0] as (typeof lateRecords)[number];
      assert.deepEqual(JSON.parse(lateRecord.value.toString()), old);
      assert.equal(header(lateRecord.headers, LATE_HEADERS.step), "with-account");
      assert.equal((await read(sink)).length, expected.length, "and not in the sink");
    } finally {
      await set.stopAll();
    }
  });
  test("with state.ttl 2s a table key not updated for that long goes: its delete reaches the changelog, and a payment after meets none", async () => {
    const name = `join-ttl-${suffix}`;
    const [payments, accounts, sink] = ["payments", "accounts", "out"].map((t) => `join-ttl-${t}-${suffix}`) as [string, string, string];
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [payments], startFrom: "earliest", eventTime: "value.ts", watermark: WM },
      inputs: [{ name: "accounts", topics: [accounts], eventTime: "value.ts", watermark: WM }],
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "with-account", join: { input: "accounts", key: "value.user", as: "account", type: "left" } },
        { name: "project", map: "{'user': value.user, 'ts': value.ts, 'tier': value.account == null ? 'none' : value.account.tier}" },
      ],
      sink: { topic: sink },
      state: { ttl: "2s" },
      processing: { commitInterval: "100ms" },
    };
    const topology = compiled(spec, { namespace: "it", name });
    for (const t of [payments, accounts, sink]) await createTopic(a, t, 1);
    await createInternalTopics(a, topology, 1);
    const changelog = topology.internalTopics.find((t) => t.endsWith("-changelog")) as string;
    const json = (key: string, v: object) => ({ key, value: JSON.stringify(v) });
    /** a record of each topic this far on: the watermark passes every payment before it */
    const flush = async (ts: number) => {
      await produce(env.bootstrap, payments, [json("flush", { user: "flush", ts })]);
      await produce(env.bootstrap, accounts, [json("flush", { user: "flush", ts, tier: "x" })]);
    };
    const rows = async () => (await readToEnd(env.bootstrap, sink)).map((m) => JSON.parse(m.value.toString()) as { user: string; ts: number; tier: string });

    const w = await startRuntime({ dir, namespace: "it", name, spec, pod: "ttl-0" });
    workers.push(w);
    await produce(env.bootstrap, accounts, [json("u-1", { user: "u-1", ts: T0, tier: "gold" })]);
    await produce(env.bootstrap, payments, [json("u-1", { user: "u-1", ts: T0 + 100 })]);
    await flush(T0 + 60_000);
    await waitFor(async () => (await rows()).length >= 1, { what: "the first payment joined", timeoutMs: 30_000, process: w.proc });
    assert.deepEqual(await rows(), [{ user: "u-1", ts: T0 + 100, tier: "gold" }], "joined while the account is fresh");

    await waitFor(
      async () =>
        (await readToEnd(env.bootstrap, changelog, { readCommitted: false })).some(
          (m) => (!m.value || m.value.length === 0) && m.key.toString("latin1").includes("u-1"),
        ),
      { what: "the sweep's delete of u-1's versions in the changelog", timeoutMs: 20_000, intervalMs: 250, process: w.proc },
    );
    await produce(env.bootstrap, payments, [json("u-1", { user: "u-1", ts: T0 + 61_000 })]);
    await flush(T0 + 120_000);
    const u1 = async () => (await rows()).filter((r) => r.user === "u-1");
    await waitFor(async () => (await u1()).length >= 2, { what: "the second payment joined", timeoutMs: 30_000, process: w.proc });
    assert.deepEqual(
      await u1(),
      [
        { user: "u-1", ts: T0 + 100, tier: "gold" },
        { user: "u-1", ts: T0 + 61_000, tier: "none" },
      ],
      "the account expired: none",
    );
  });

  test("a windowed outer join of views and clicks, then 10 s windows per ad: every window exact across a SIGKILL, none late", async () => {
    // views (2 partitions) and clicks (3) by view id: a click up to 30 s after its view joins it; one later, or of
    // an id no view has, comes out alone, and so does a view with no click, once the watermark is 30 s past it.
    // The join forwards its watermark less those 30 s: the 10 s windows after the next keyBy take those late
    // results in time, and a late one would show in the late topic and in a count.
    const name = `wjoin-${suffix}`;
    const [views, clicks, sink, late, dlq] = topicNames("wjoin", suffix, "views", "clicks", "out", "late", "dlq");
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [views], startFrom: "earliest", eventTime: "value.ts", watermark: WM },
      inputs: [{ name: "clicks", topics: [clicks], eventTime: "value.ts", watermark: WM }],
      steps: [
        { name: "by-view", keyBy: "value.id" },
        { name: "with-click", join: { input: "clicks", key: "value.id", as: "click", type: "outer", within: "30s" } },
        {
          name: "kind",
          map: "{'ad': has(value.ad) ? value.ad : value.click.ad, 'pair': has(value.ad) && value.click != null ? 1 : 0, 'unclicked': has(value.ad) && value.click == null ? 1 : 0, 'orphan': has(value.ad) ? 0 : 1}",
        },
        { name: "by-ad", keyBy: "value.ad" },
        {
          name: "per-10s",
          window: { tumbling: "10s" },
          aggregate: { n: { count: {} }, pairs: { sum: "value.pair" }, unclicked: { sum: "value.unclicked" }, orphans: { sum: "value.orphan" } },
          late: { topic: late },
        },
      ],
      sink: { topic: sink },
      deadLetter: { topic: dlq },
      processing: { guarantee: "exactlyOnce" },
    };
    const topology = compiled(spec, { namespace: "it", name });
    await createTopic(a, views, 2);
    await createTopic(a, clicks, 3);
    for (const t of [sink, late, dlq]) await createTopic(a, t, 2);
    await createInternalTopics(a, topology, 2);

    const VIEWS = 3_000;
    const ADS = 10;
    const viewed = Array.from({ length: VIEWS }, (_, i) => ({ id: `v-${i}`, ad: `ad-${i % ADS}`, ts: T0 + i * 100 }));
    const clicked: { id: string; ad: string; ts: number }[] = [];
    for (const [i, v] of viewed.entries()) {
      // a third clicked 0 to 40 s after the view (a quarter of those too late to join), a ninth twice
      if (i % 3 === 0) clicked.push({ id: v.id, ad: v.ad, ts: v.ts + ((i * 7_919) % 40_000) });
      if (i % 9 === 0) clicked.push({ id: v.id, ad: v.ad, ts: v.ts + 5_000 });
    }
    for (let j = 0; j < 100; j++) clicked.push({ id: `o-${j}`, ad: `ad-${j % ADS}`, ts: T0 + j * 3_000 });
    clicked.sort((x, y) => x.ts - y.ts);
    // the batch computation: the outer join, then per ad and 10 s window of each row's event time
    const rows: { ad: string; t: number; kind: "pairs" | "unclicked" | "orphans" }[] = [];
    const clicksOf = new Map<string, typeof clicked>();
    for (const c of clicked) clicksOf.set(c.id, [...(clicksOf.get(c.id) ?? []), c]);
    const joinedClicks = new Set<(typeof clicked)[number]>();
    for (const v of viewed) {
      const met = (clicksOf.get(v.id) ?? []).filter((c) => Math.abs(c.ts - v.ts) <= 30_000);
      for (const c of met) {
        joinedClicks.add(c);
        rows.push({ ad: v.ad, t: Math.max(v.ts, c.ts), kind: "pairs" });
      }
      if (met.length === 0) rows.push({ ad: v.ad, t: v.ts, kind: "unclicked" });
    }
    for (const c of clicked) if (!joinedClicks.has(c)) rows.push({ ad: c.ad, t: c.ts, kind: "orphans" });
    type Window = { key: string; windowStart: number; n: number; pairs: number; unclicked: number; orphans: number };
    const windows = new Map<string, Window>();
    for (const r of rows) {
      const start = r.t - ((r.t - 0) % 10_000);
      const id = `${r.ad}@${start}`;
      const w = windows.get(id) ?? { key: r.ad, windowStart: start, n: 0, pairs: 0, unclicked: 0, orphans: 0 };
      w.n++;
      w[r.kind]++;
      windows.set(id, w);
    }
    const expected = [...windows.values()];
    const kinds = { pairs: 0, unclicked: 0, orphans: 0 };
    for (const r of rows) kinds[r.kind]++;
    assert.ok(kinds.pairs > 800 && kinds.unclicked > 1_500 && kinds.orphans > 200, `every kind of row: ${JSON.stringify(kinds)}`);

    // sent live, 30 s of event time at a time, each part read before the next: the watermark moves in steps, as
    // in production, so a join that forwarded its watermark as it stands would send unmatched rows late (read as
    // one backlog, one fetch can take it all and the watermark jumps past everything at once)
    const CHUNK = 30_000;
    const producer = new Producer({ clientId: "wjoin-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
    const json = (v: unknown) => Buffer.from(JSON.stringify(v));
    const lag = async () => (await groupLag(a, topology.applicationId, views)) + (await groupLag(a, topology.applicationId, clicks));
    const read = (t: string) => readToEnd(env.bootstrap, t, { readCommitted: true, timeoutMs: 60_000 });
    const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0", "w-1"]);
    try {
      await set.startAll();
      const chunks = Math.ceil((VIEWS * 100) / CHUNK) + 2;
      for (let k = 0; k < chunks; k++) {
        const inChunk = (t: number) => t >= T0 + k * CHUNK && t < T0 + (k + 1) * CHUNK;
        const messages = [
          ...viewed.filter((v) => inChunk(v.ts)).map((v) => ({ topic: views, key: Buffer.from(v.id), value: json(v) })),
          ...clicked.filter((c) => inChunk(c.ts)).map((c) => ({ topic: clicks, key: Buffer.from(c.id), value: json(c) })),
        ];
        for (let i = 0; i < messages.length; i += 500) await producer.send({ messages: messages.slice(i, i + 500) });
        await waitFor(
          async () => {
            await set.supervise();
            return (await lag()) === 0n;
          },
          { what: `part ${k} of the input committed`, timeoutMs: 120_000, intervalMs: 100 },
        );
        if (k === Math.floor(chunks / 2)) {
          assert.ok(isAlive(set.workers.get("w-1")?.proc.pid ?? -1));
          set.kill("w-1", "SIGKILL");
        }
      }
      // an hour on, in every partition of both: the watermark passes every row (these rows' own windows stay open)
      const flush = [
        ...[0, 1].map((partition) => ({
          topic: views,
          partition,
          key: Buffer.from("flush"),
          value: json({ id: `flush-v${partition}`, ad: "flush", ts: T0 + 3_600_000 }),
        })),
        ...[0, 1, 2].map((partition) => ({
          topic: clicks,
          partition,
          key: Buffer.from("flush"),
          value: json({ id: `flush-c${partition}`, ad: "flush", ts: T0 + 3_600_000 }),
        })),
      ];
      await producer.send({ messages: flush });
      await waitFor(
        async () => {
          await set.supervise();
          // a row late to its window fails the test below at once, not after the deadline
          return (await lag()) === 0n && ((await read(sink)).length >= expected.length || (await read(late)).length > 0);
        },
        { what: `${expected.length} windows in the sink`, timeoutMs: 240_000, intervalMs: 1_000 },
      );
      assert.ok(set.restarts >= 1, "the killed worker was started again");
      const order = (x: Window, y: Window) => x.windowStart - y.windowStart || x.key.localeCompare(y.key);
      const got = (await read(sink)).map((m) => {
        const w = JSON.parse(m.value.toString()) as Window & { windowEnd: number };
        return { key: w.key, windowStart: w.windowStart, n: w.n, pairs: w.pairs, unclicked: w.unclicked, orphans: w.orphans };
      });
      assert.equal((await read(late)).length, 0, "no row came late to its window");
      assert.deepEqual(got.sort(order), expected.sort(order), "every window once, exact");
      assert.deepEqual(await read(dlq), [], "nothing failed");
    } finally {
      await set.stopAll();
      await producer.close();
    }
  });

  test("two joins, the second after a later keyBy: each payment with its account and its merchant as they stood at its time, across a SIGKILL", async () => {
    // payments by user joined with accounts, then by merchant with merchants: the merchants' records go straight
    // from the source stage into the second keyBy's topic, and the watermark reaches the second join through the
    // first sub-topology's tasks, which forward it
    const name = `join2-${suffix}`;
    const [payments, accounts, merchants, sink, dlq] = topicNames("join2", suffix, "payments", "accounts", "merchants", "out", "dlq");
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [payments], startFrom: "earliest", eventTime: "value.ts", watermark: WM },
      inputs: [
        { name: "accounts", topics: [accounts], eventTime: "value.ts", watermark: WM },
        { name: "merchants", topics: [merchants], eventTime: "value.ts", watermark: WM },
      ],
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "with-account", join: { input: "accounts", key: "value.user", as: "account", type: "left" } },
        {
          name: "tiered",
          map: "{'user': value.user, 'merchant': value.merchant, 'ts': value.ts, 'tier': value.account == null ? 'none' : value.account.tier}",
        },
        { name: "by-merchant", keyBy: "value.merchant" },
        { name: "with-merchant", join: { input: "merchants", key: "value.merchant", as: "m", type: "left" } },
        {
          name: "project",
          map: "{'user': value.user, 'merchant': value.merchant, 'ts': value.ts, 'tier': value.tier, 'category': value.m == null ? 'none' : value.m.category}",
        },
      ],
      sink: { topic: sink },
      deadLetter: { topic: dlq },
      processing: { guarantee: "exactlyOnce" },
    };
    const topology = compiled(spec, { namespace: "it", name });
    await createTopic(a, payments, 2);
    await createTopic(a, accounts, 3);
    await createTopic(a, merchants, 2);
    for (const t of [sink, dlq]) await createTopic(a, t, 2);
    await createInternalTopics(a, topology, 2);

    const MERCHANTS = 5;
    const CATEGORY_EVERY = 45_000;
    const paid = Array.from({ length: PAYMENTS }, (_, i) => ({ user: `u-${(i * 7) % USERS}`, merchant: `m-${(i * 3) % MERCHANTS}`, ts: T0 + i * 100 }));
    // u-19 has no account; m-4 gets its first category only after a minute
    const tierAt = (p: (typeof paid)[number]) => (p.user === `u-${USERS - 1}` ? "none" : `t-${Math.floor((p.ts - T0) / TIER_EVERY)}`);
    const categoryAt = (p: (typeof paid)[number]) =>
      p.merchant === `m-${MERCHANTS - 1}` && p.ts < T0 + 60_000 ? "none" : `c-${p.merchant}-${Math.floor((p.ts - T0) / CATEGORY_EVERY)}`;
    const expected = paid.map((p) => ({ ...p, tier: tierAt(p), category: categoryAt(p) }));
    assert.ok(new Set(expected.map((e) => e.category)).size > 20, "the categories change over the data");

    const producer = new Producer({ clientId: "join2-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
    const json = (v: unknown) => Buffer.from(JSON.stringify(v));
    try {
      const messages: { topic: string; partition?: number; key: Buffer; value: Buffer }[] = [];
      // each table in event-time order in each partition, as the watermark's bound says; the payments are the
      // workers' to interleave with them
      for (let k = 0; k * TIER_EVERY < PAYMENTS * 100; k++)
        for (let u = 0; u < USERS - 1; u++)
          messages.push({ topic: accounts, key: Buffer.from(`u-${u}`), value: json({ user: `u-${u}`, ts: T0 + k * TIER_EVERY, tier: `t-${k}` }) });
      for (let k = 0; k * CATEGORY_EVERY < PAYMENTS * 100; k++)
        for (let m = 0; m < MERCHANTS; m++) {
          const ts = T0 + k * CATEGORY_EVERY;
          if (m === MERCHANTS - 1 && ts < T0 + 60_000) continue;
          messages.push({ topic: merchants, key: Buffer.from(`m-${m}`), value: json({ merchant: `m-${m}`, ts, category: `c-m-${m}-${k}` }) });
        }
      // m-4's first category, at exactly a minute (between the 45 s steps)
      messages.push({
        topic: merchants,
        key: Buffer.from(`m-${MERCHANTS - 1}`),
        value: json({ merchant: `m-${MERCHANTS - 1}`, ts: T0 + 60_000, category: `c-m-${MERCHANTS - 1}-1` }),
      });
      messages.sort((x, y) => (JSON.parse(x.value.toString()) as { ts: number }).ts - (JSON.parse(y.value.toString()) as { ts: number }).ts);
      for (const p of paid) messages.push({ topic: payments, key: Buffer.from(p.user), value: json(p) });
      const flush = { user: "flush", merchant: "flush", ts: T0 + 3_600_000, tier: "x", category: "x" };
      for (const partition of [0, 1]) messages.push({ topic: payments, partition, key: Buffer.from("flush"), value: json(flush) });
      for (const partition of [0, 1, 2]) messages.push({ topic: accounts, partition, key: Buffer.from("flush"), value: json(flush) });
      for (const partition of [0, 1]) messages.push({ topic: merchants, partition, key: Buffer.from("flush"), value: json(flush) });
      for (let i = 0; i < messages.length; i += 500) await producer.send({ messages: messages.slice(i, i + 500) });
    } finally {
      await producer.close();
    }

    const lag = async () =>
      (await groupLag(a, topology.applicationId, payments)) +
      (await groupLag(a, topology.applicationId, accounts)) +
      (await groupLag(a, topology.applicationId, merchants));
    const read = (t: string) => readToEnd(env.bootstrap, t, { readCommitted: true, timeoutMs: 60_000 });
    const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0", "w-1"]);
    try {
      await throughKill(set, {
        lag,
        half: PAYMENTS / 2,
        done: async () => (await read(sink)).length >= expected.length,
        what: `${expected.length} payments through both joins`,
      });
      type Row = (typeof expected)[number];
      const order = (x: Row, y: Row) => x.ts - y.ts || x.user.localeCompare(y.user);
      const got = (await read(sink)).map((m) => JSON.parse(m.value.toString()) as Row);
      assert.deepEqual(got.sort(order), expected.sort(order), "every payment once, with the tier and the category of its time");
      assert.deepEqual(await read(dlq), [], "nothing failed");
    } finally {
      await set.stopAll();
    }
  });

  test("a global table: both workers hold all of it before they take a record, then follow its updates (a rename, a tombstone, new keys); one SIGKILLed reads it whole again", async () => {
    const name = `global-${suffix}`;
    const [payments, countries, sink, dlq] = topicNames("global", suffix, "payments", "countries", "out", "dlq");
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [payments], startFrom: "earliest" },
      inputs: [{ name: "countries", topics: [countries], global: true }],
      steps: [
        // no keyBy: each worker looks its own records up in its own copy of the whole table
        { name: "with-country", join: { input: "countries", key: "key", lookup: "value.country", as: "c", type: "left" } },
        { name: "named", map: "{'id': value.id, 'country': value.country, 'name': value.c == null ? 'none' : value.c.name}" },
      ],
      sink: { topic: sink },
      deadLetter: { topic: dlq },
      processing: { guarantee: "exactlyOnce" },
    };
    await createTopic(a, payments, 2);
    await createTopic(a, countries, 3);
    for (const t of [sink, dlq]) await createTopic(a, t, 2);
    const json = (v: unknown) => Buffer.from(JSON.stringify(v));
    const country = (code: string, partition: number, value?: { name: string }) => ({
      topic: countries,
      partition,
      key: Buffer.from(code),
      ...(value ? { value: json(value) } : {}),
    });
    const producer = new Producer({ clientId: "global-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
    const codes = ["fr", "ch", "jp", "us", "br", "de", "xx"];
    const pay = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => ({
        topic: payments,
        key: Buffer.from(String(from + i)),
        value: json({ id: from + i, country: codes[(from + i) % codes.length] }),
      }));
    type Row = { id: number; country: string; name: string };
    const rows = async () =>
      (await readToEnd(env.bootstrap, sink, { readCommitted: true, timeoutMs: 60_000 }))
        .map((m) => JSON.parse(m.value.toString()) as Row)
        .sort((x, y) => x.id - y.id);
    const entries = async (pod: string) => (await set.workers.get(pod)?.metric("conveyor_runtime_global_table_entries")) ?? -1;
    const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0", "w-1"]);
    try {
      // the table before the workers start, over 3 partitions; jp twice, the later value wins
      await producer.send({
        messages: [
          country("fr", 0, { name: "France" }),
          country("ch", 1, { name: "Switzerland" }),
          country("jp", 2, { name: "Nippon" }),
          country("jp", 2, { name: "Japan" }),
          country("us", 1, { name: "United States" }),
          country("br", 2, { name: "Brazil" }),
        ],
      });
      await set.startAll();
      for (const pod of set.pods)
        await waitFor(async () => (await entries(pod)) === 5, { what: `${pod}'s global table read`, timeoutMs: 60_000, intervalMs: 250 });
      await producer.send({ messages: pay(0, 700) });
      const first: Record<string, string> = { fr: "France", ch: "Switzerland", jp: "Japan", us: "United States", br: "Brazil", de: "none", xx: "none" };
      const expected = (from: number, n: number, names: Record<string, string>) =>
        Array.from({ length: n }, (_, i) => ({
          id: from + i,
          country: codes[(from + i) % codes.length] as string,
          name: names[codes[(from + i) % codes.length] as string] as string,
        }));
      await waitFor(async () => (await rows()).length >= 700, { what: "the first 700 payments named", timeoutMs: 60_000, intervalMs: 500 });
      assert.deepEqual(await rows(), expected(0, 700, first), "each payment with its country's name, whichever worker took it");

      // each key in its partition, as a producer partitioning by key writes it (a table, like log compaction,
      // orders a key's records within one partition); partition 0's three go in one record batch, so a worker
      // holds 6 keys only once it has applied all four: 5 + de + it - ch
      await producer.send({
        messages: [
          country("fr", 0, { name: "République française" }),
          country("de", 0, { name: "Germany" }),
          country("it", 0, { name: "Italy" }),
          country("ch", 1),
        ],
      });
      set.kill("w-1", "SIGKILL");
      await waitFor(
        async () => {
          await set.supervise();
          return (await entries("w-0")) === 6 && (await entries("w-1")) === 6;
        },
        { what: "both tables with the updates: w-0 by its refresh, w-1 read whole again", timeoutMs: 60_000, intervalMs: 250 },
      );
      assert.ok(set.restarts >= 1, "the killed worker was started again");
      await producer.send({ messages: pay(700, 700) });
      const second = { ...first, fr: "République française", ch: "none", de: "Germany" };
      await waitFor(async () => (await rows()).length >= 1_400, { what: "the next 700 payments named", timeoutMs: 60_000, intervalMs: 500 });
      assert.deepEqual(
        await rows(),
        [...expected(0, 700, first), ...expected(700, 700, second)],
        "every payment once, the later ones with the table's updates",
      );
      assert.deepEqual(await readToEnd(env.bootstrap, dlq), [], "nothing failed");
    } finally {
      await set.stopAll();
      await producer.close();
    }
  });

  test("a table-table join of two changelog topics: each key's results and tombstones in event-time order, exactly once across a SIGKILL", async () => {
    // accounts and limits, both keyed by user, on Kafka timestamps, tombstones deleting a key: whenever either
    // side of a user changes, the account with its limit (left: null while it has none), or a tombstone when the
    // account goes
    const name = `tjoin-${suffix}`;
    const [accounts, limits, sink, dlq] = topicNames("tjoin", suffix, "accounts", "limits", "out", "dlq");
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [accounts], startFrom: "earliest", watermark: WM },
      inputs: [{ name: "limits", topics: [limits], watermark: WM }],
      steps: [
        { name: "by-user", keyBy: "key" },
        { name: "with-limit", join: { input: "limits", key: "key", as: "limit", type: "left", table: true } },
      ],
      sink: { topic: sink },
      deadLetter: { topic: dlq },
      processing: { guarantee: "exactlyOnce" },
    };
    const topology = compiled(spec, { namespace: "it", name });
    await createTopic(a, accounts, 2);
    await createTopic(a, limits, 3);
    for (const t of [sink, dlq]) await createTopic(a, t, 2);
    await createInternalTopics(a, topology, 2);

    const CHANGES = 2_000;
    // Kafka timestamps of the last hour: the sink records keep them, and the broker's retention (7 days) would
    // delete a segment of records from T0 at once
    const start = Math.floor(Date.now() / 1_000) * 1_000 - 3_600_000;
    // every change at its own time, 100 ms apart: an account or a limit of one of 20 users, one in 8 a deletion
    const changes = Array.from({ length: CHANGES }, (_, i) => {
      const side = (i * 7) % 3 === 0 ? 1 : 0;
      const user = `u-${(i * 11) % USERS}`;
      const deleted = (i * 13) % 8 === 0;
      return { side, user, ts: start + i * 100, value: deleted ? undefined : side === 0 ? { user, plan: `p-${i}` } : { max: i } };
    });
    // the batch computation: per user, its results in event-time order (null: a tombstone)
    const expected = new Map<string, (object | null)[]>();
    const latest = [new Map<string, object>(), new Map<string, object>()];
    for (const c of changes) {
      const had = latest[0]?.has(c.user);
      if (c.value === undefined) latest[c.side]?.delete(c.user);
      else latest[c.side]?.set(c.user, c.value);
      const account = latest[0]?.get(c.user);
      const list = expected.get(c.user) ?? [];
      if (account) list.push({ ...account, limit: latest[1]?.get(c.user) ?? null });
      else if (had) list.push(null);
      expected.set(c.user, list);
    }
    const total = [...expected.values()].reduce((n, l) => n + l.length, 0);
    assert.ok(
      [...expected.values()].some((l) => l.includes(null)),
      "some account is deleted",
    );

    const producer = new Producer({ clientId: "tjoin-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
    try {
      const messages = changes.map((c) => ({
        topic: c.side === 0 ? accounts : limits,
        key: Buffer.from(c.user),
        timestamp: BigInt(c.ts),
        ...(c.value ? { value: Buffer.from(JSON.stringify(c.value)) } : {}),
      }));
      for (const [topic, n] of [
        [accounts, 2],
        [limits, 3],
      ] as const)
        for (let partition = 0; partition < n; partition++)
          messages.push({
            topic,
            partition,
            key: Buffer.from("flush"),
            timestamp: BigInt(start + 3_600_000),
            value: Buffer.from("{}"),
          } as (typeof messages)[number]);
      for (let i = 0; i < messages.length; i += 500) await producer.send({ messages: messages.slice(i, i + 500) });
    } finally {
      await producer.close();
    }

    const lag = async () => (await groupLag(a, topology.applicationId, accounts)) + (await groupLag(a, topology.applicationId, limits));
    const read = (t: string) => readToEnd(env.bootstrap, t, { readCommitted: true, timeoutMs: 60_000 });
    const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0", "w-1"]);
    try {
      await throughKill(set, {
        lag,
        half: CHANGES / 2,
        done: async () => (await read(sink)).length >= total,
        what: `${total} results and tombstones in the sink`,
      });
      const got = new Map<string, (object | null)[]>();
      for (const m of await read(sink)) {
        const user = m.key.toString();
        got.set(user, [...(got.get(user) ?? []), m.value && m.value.length > 0 ? (JSON.parse(m.value.toString()) as object) : null]);
      }
      assert.deepEqual(got, expected, "each user's results and tombstones, once each, in event-time order");
      assert.deepEqual(await read(dlq), [], "nothing failed");
    } finally {
      await set.stopAll();
    }
  });
});
