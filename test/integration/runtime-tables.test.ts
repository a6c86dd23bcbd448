// Tables on the real broker (issue 18, item 2): an aggregate step without a window writes each key a batch
// changed, once, and state.ttl expires idle keys: with emitTombstones the sink gets a tombstone for each, the
// changelog (compacted, kept) gets one too, and a key that comes back starts over. The exactness of tables across
// a SIGKILL is Nexmark q18 and q19's (test/integration/nexmark.test.ts).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Producer } from "../../runtime/kafka/client.ts";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, readToEnd } from "../support/kafka.ts";
import { compiled, runtimeSuite, startRuntime } from "../support/runtime.ts";

const USERS = 10;
const PER_USER = 30;

describe("tables: running aggregates per key", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-tables");

  test("each change once per batch; idle keys expire with tombstones in the sink and the changelog; a key that returns starts over", async () => {
    const name = `table-${suffix}`;
    const [source, sink] = ["src", "out"].map((t) => `table-${t}-${suffix}`) as [string, string];
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], startFrom: "earliest", eventTime: "value.ts" },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        {
          name: "totals",
          aggregate: { n: { count: {} }, total: { sum: "value.amount" }, last: { latest: { value: "value.amount" } } },
          emitTombstones: true,
        },
      ],
      sink: { topic: sink },
      state: { ttl: "3s" },
      processing: { guarantee: "exactlyOnce" },
    };
    const topology = compiled(spec, { namespace: "it", name });
    const table = topology.steps[1];
    assert.ok(table?.kind === "window");
    for (const t of [source, sink]) await createTopic(a, t, 2);
    await createInternalTopics(a, topology, 2);

    const t0 = Date.now() - 60_000;
    const send = async (records: { user: string; amount: number; ts: number }[]) => {
      const producer = new Producer({ clientId: "tables-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
      try {
        await producer.send({ messages: records.map((r) => ({ topic: source, key: Buffer.from(r.user), value: Buffer.from(JSON.stringify(r)) })) });
      } finally {
        await producer.close();
      }
    };
    const records = Array.from({ length: USERS * PER_USER }, (_, i) => ({ user: `u-${i % USERS}`, amount: i, ts: t0 + i }));
    await send(records);
    const w = await startRuntime({ dir, namespace: "it", name, spec });
    workers.push(w);

    type Row = { key: string; n: number; total: number; last: number };
    const read = async () => readToEnd(env.bootstrap, sink, { readCommitted: true, timeoutMs: 30_000 });
    const state = (msgs: Awaited<ReturnType<typeof read>>) => {
      const last = new Map<string, Row | null>();
      for (const m of msgs) last.set(m.key.toString(), m.value && m.value.length > 0 ? (JSON.parse(m.value.toString()) as Row) : null);
      return last;
    };
    const expected = new Map(
      Array.from({ length: USERS }, (_, u) => {
        const mine = records.filter((r) => r.user === `u-${u}`);
        return [`u-${u}`, { key: `u-${u}`, n: PER_USER, total: mine.reduce((s, r) => s + r.amount, 0), last: mine[mine.length - 1]?.amount ?? -1 }];
      }),
    );
    let seen = await read();
    // the totals arrive, each key's last update being its total, before the TTL (3 s of processing time) ends them
    await waitFor(
      async () => {
        seen = await read();
        const s = state(seen);
        return [...expected].every(([k, v]) => s.get(k)?.n === v.n || s.get(k) === null);
      },
      { what: "every user's total in the sink", timeoutMs: 60_000, intervalMs: 200, process: w.proc },
    );
    const totals = seen.filter((m) => m.value && m.value.length > 0).map((m) => JSON.parse(m.value.toString()) as Row);
    for (const [k, v] of expected) assert.deepEqual(totals.filter((r) => r.key === k).at(-1), v, `${k}'s last value is its total`);
    assert.ok(totals.length < records.length, `each change once per batch: ${totals.length} updates for ${records.length} records`);

    // nothing more comes: 3 s on, every key expires, and the sink and the changelog get its tombstone
    await waitFor(async () => [...state(await read()).values()].every((v) => v === null), {
      what: "a tombstone in the sink for every key",
      timeoutMs: 30_000,
      intervalMs: 500,
      process: w.proc,
    });
    const changelog = state(await readToEnd(env.bootstrap, table.changelogTopic, { readCommitted: true, timeoutMs: 30_000 }));
    const windowKeys = [...changelog.keys()].filter((k) => k.charCodeAt(0) === 1);
    assert.equal(windowKeys.length, USERS, "one store key per user");
    assert.ok(
      windowKeys.every((k) => changelog.get(k) === null),
      "each deleted from the changelog",
    );

    // a user who comes back starts from nothing
    await send([{ user: "u-0", amount: 7, ts: t0 + 100_000 }]);
    await waitFor(async () => state(await read()).get("u-0")?.n === 1, { what: "u-0 counted anew", timeoutMs: 30_000, intervalMs: 200, process: w.proc });
    assert.deepEqual(state(await read()).get("u-0"), { key: "u-0", n: 1, total: 7, last: 7 });
  });
});
