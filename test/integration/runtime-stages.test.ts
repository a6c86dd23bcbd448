// A pipeline of two keyed stages: per user per minute (a window with 20 s of grace), then, keyed anew by the
// minute, the top user of each minute (a second window over the first one's results). A backlog replayed by 2
// exactly-once workers, one of them SIGKILLed halfway and started again as a StatefulSet would, must give
// exactly what a batch computation of the same data gives: each minute once, with its top user and its number
// of users. The first window's results reach the second only through a repartition topic, with their event
// time (their window's last millisecond) and the watermark the first stage forwards (its own less its grace):
// a watermark forwarded as it came would make every first-stage result late at the second window.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Producer } from "../../runtime/kafka/client.ts";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createInternalTopics, createTopic, groupLag, readToEnd } from "../support/kafka.ts";
import { prng } from "../support/prng.ts";
import { compiled, WorkerSet } from "../support/runtime.ts";

const PARTITIONS = 4;
const PER_PARTITION = 15_000;
const USERS = 12;
const STEP_MS = 100;
const DISORDER_MS = 4_000;
const MINUTE = 60_000;
const T0 = Math.floor((Date.now() - 3 * 3_600_000) / MINUTE) * MINUTE;
const FLUSH_USER = "zz-flush";

interface Event {
  user: string;
  ts: number;
  amount: number;
}

/** Per partition: event times rising STEP_MS a record, each up to DISORDER_MS behind, partitions 7 s apart. */
function generate(seed: number): Event[][] {
  const rand = prng(seed);
  return Array.from({ length: PARTITIONS }, (_, p) =>
    Array.from({ length: PER_PARTITION }, (_, i) => ({
      user: `user-${Math.floor(rand() * USERS)}`,
      ts: T0 + p * 7_000 + i * STEP_MS - Math.floor(rand() * DISORDER_MS),
      amount: 1 + Math.floor(rand() * 100),
    })),
  );
}

interface Minute {
  windowStart: number;
  windowEnd: number;
  users: number;
  best: { user: string; total: number };
}

/** The batch computation: totals per user and minute, then per minute the highest total (ties to the lowest user). */
function reference(events: Event[]): Map<number, Minute> {
  const totals = new Map<number, Map<string, number>>();
  for (const e of events) {
    const start = Math.floor(e.ts / MINUTE) * MINUTE;
    const perUser = totals.get(start) ?? new Map<string, number>();
    perUser.set(e.user, (perUser.get(e.user) ?? 0) + e.amount);
    totals.set(start, perUser);
  }
  const out = new Map<number, Minute>();
  for (const [start, perUser] of totals) {
    let best = { user: "", total: -1 };
    for (const [user, total] of perUser) if (total > best.total || (total === best.total && user < best.user)) best = { user, total };
    out.set(start, { windowStart: start, windowEnd: start + MINUTE, users: perUser.size, best });
  }
  return out;
}

describe("a pipeline of two keyed stages: a window's results keyed anew and aggregated again", () => {
  const env = bedEnv();
  const sets: WorkerSet[] = [];
  after(async () => {
    for (const s of sets) await s.stopAll();
  });

  test(`per user per minute, then the top user per minute: ${PARTITIONS * PER_PARTITION} records, 2 exactly-once workers, one SIGKILLed halfway; equal to a batch computation`, async () => {
    const suffix = uniqueSuffix();
    const dir = join(env.state.dir, `stages-${suffix}`);
    const a = admin(env.bootstrap);
    try {
      const source = `stages-src-${suffix}`;
      const sink = `stages-out-${suffix}`;
      const name = `stages-${suffix}`;
      const spec: StreamPipelineSpec = {
        kafka: { bootstrapServers: [env.bootstrap] },
        source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "5s", idleTimeout: "10m" } },
        steps: [
          { name: "by-user", keyBy: "value.user" },
          { name: "per-user", window: { tumbling: "1m", grace: "20s" }, aggregate: { total: { sum: "value.amount" } } },
          { name: "by-minute", keyBy: "value.windowStart" },
          {
            name: "top",
            window: { tumbling: "1m" },
            aggregate: {
              best: {
                reduce: {
                  init: "{'user': '', 'total': -1}",
                  expr: "value.total > acc.total || (value.total == acc.total && value.key < acc.user) ? {'user': value.key, 'total': value.total} : acc",
                },
              },
              users: { count: {} },
            },
          },
        ],
        sink: { topic: sink },
        processing: { guarantee: "exactlyOnce", commitInterval: "100ms" },
      };
      const topology = compiled(spec, { namespace: "it", name });
      await createTopic(a, source, PARTITIONS, { "retention.ms": "-1" });
      await createTopic(a, sink, PARTITIONS, { "retention.ms": "-1" });
      await createInternalTopics(a, topology, PARTITIONS);
      const events = generate(20261205);
      const producer = new Producer({ clientId: "stages-test", bootstrapBrokers: [env.bootstrap], acks: -1, idempotent: true });
      try {
        for (let p = 0; p < PARTITIONS; p++) {
          // a last record an hour ahead in every partition moves every watermark past every minute of the data
          const flush: Event = { user: FLUSH_USER, ts: T0 + 3_600_000, amount: 0 };
          const part = [...(events[p] as Event[]), flush];
          for (let i = 0; i < part.length; i += 5_000)
            await producer.send({
              messages: part.slice(i, i + 5_000).map((e) => ({ topic: source, partition: p, key: Buffer.from(e.user), value: Buffer.from(JSON.stringify(e)) })),
            });
        }
      } finally {
        await producer.close();
      }

      const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0", "w-1"]);
      sets.push(set);
      await set.startAll();
      const total = BigInt(PARTITIONS * (PER_PARTITION + 1));
      // halfway: half the source committed by the group, then one worker dies without a word
      await waitFor(async () => (await groupLag(a, topology.applicationId, source)) <= total / 2n, {
        what: "the group to commit half the source",
        timeoutMs: 180_000,
        intervalMs: 100,
      });
      const victim = set.workers.get("w-1");
      assert.ok(victim && isAlive(victim.proc.pid));
      set.kill("w-1", "SIGKILL");
      const expected = reference(events.flat());
      const minutes = await waitFor(
        async () => {
          await set.supervise();
          const out = await readToEnd(env.bootstrap, sink, { readCommitted: true, timeoutMs: 60_000 });
          return out.length >= expected.size ? out : false;
        },
        { what: `${expected.size} minutes in the read_committed sink`, timeoutMs: 300_000, intervalMs: 1_000 },
      );
      // nothing more comes: both stages have read all they were given
      await waitFor(async () => (await groupLag(a, topology.applicationId, source)) === 0n, { what: "the source read to its end", timeoutMs: 60_000 });
      const again = await readToEnd(env.bootstrap, sink, { readCommitted: true, timeoutMs: 60_000 });
      const got = again.map((m) => JSON.parse(m.value.toString()) as Minute & { key: number });
      process.stdout.write(
        `# stages: ${PARTITIONS * PER_PARTITION} records, ${expected.size} minutes expected, ${minutes.length} then ${got.length} in the sink, ${set.restarts} restart(s)\n`,
      );
      const byStart = new Map<number, Minute[]>();
      for (const m of got) byStart.set(m.windowStart, [...(byStart.get(m.windowStart) ?? []), m]);
      for (const [start, list] of byStart) assert.equal(list.length, 1, `minute ${new Date(start).toISOString()} once, not ${list.length} times`);
      assert.ok(set.restarts >= 1, "the killed worker was started again");
      assert.deepEqual(
        got.map((m) => ({ windowStart: m.windowStart, windowEnd: m.windowEnd, users: m.users, best: m.best })).sort((x, y) => x.windowStart - y.windowStart),
        [...expected.values()].sort((x, y) => x.windowStart - y.windowStart),
      );
      for (const m of got) assert.equal(String(m.key), String(m.windowStart), "keyed by the minute");
    } finally {
      await a.close();
    }
  });
});
