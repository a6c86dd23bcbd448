// Issue 17: a watermark that closes more windows than one batch takes lets them out a part per batch
// (CLOSE_BATCH, 5,000), and where it has got to is saved with each batch. Here 100,000 one-hour windows close
// at once under exactly-once; the worker is SIGKILLed while they come out, and the restarted worker goes on from
// where the last committed batch had got to: every window once, none lost.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Producer } from "../../runtime/kafka/client.ts";
import { waitFor } from "../env/proc.ts";
import { brokers, endOffsets, forEachToEnd, groupLag } from "../support/kafka.ts";
import { runtimeSuite, WorkerSet, windowedPipeline } from "../support/runtime.ts";

const KEYS = 100_000;
const HOUR = 3_600_000;
const T0 = Date.parse("2023-03-01T10:00:00Z");

describe("issue 17: a large close, cut short by a crash", () => {
  const { env, suffix, dir, a } = runtimeSuite("runtime-large-close");

  test(`${KEYS} windows closed by one watermark, the worker SIGKILLed half way: each comes out once`, { timeout: 300_000 }, async () => {
    const name = `close-${suffix}`;
    const { spec, topology, source, sink, repartition } = await windowedPipeline(a, {
      bootstrap: env.bootstrap,
      prefix: "lc",
      suffix,
      name,
      window: { tumbling: "1h" },
      partitions: 1,
      rest: { processing: { guarantee: "exactlyOnce" } },
    });
    const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0"]);
    try {
      await set.startAll();
      const producer = new Producer({ clientId: "large-close", bootstrapBrokers: brokers(env.bootstrap), acks: -1, idempotent: true });
      try {
        for (let i = 0; i < KEYS; i += 5_000) {
          const messages = [];
          for (let j = i; j < i + 5_000; j++)
            messages.push({ topic: source, key: Buffer.from(`user-${j}`), value: Buffer.from(JSON.stringify({ user: `user-${j}`, amount: 1, ts: T0 + j })) });
          await producer.send({ messages });
        }
      } finally {
        await producer.close();
      }
      await waitFor(async () => (await groupLag(a, topology.applicationId, source)) === 0n && (await groupLag(a, topology.applicationId, repartition)) === 0n, {
        what: "every record in an open window",
        timeoutMs: 120_000,
      });
      const sunk = async () => (await endOffsets(a, sink)).reduce((n, e) => n + e, 0n);
      assert.equal(await sunk(), 0n, "nothing closed yet");
      // one record past the hour (and its 5 s of out-of-orderness): every window closes
      const closer = new Producer({ clientId: "large-close-closer", bootstrapBrokers: brokers(env.bootstrap), acks: -1 });
      await closer.send({
        messages: [{ topic: source, key: Buffer.from("closer"), value: Buffer.from(JSON.stringify({ user: "closer", amount: 1, ts: T0 + 2 * HOUR })) }],
      });
      await closer.close();
      await waitFor(async () => (await sunk()) >= 5_000n, { what: "the first part of the windows out", timeoutMs: 60_000, intervalMs: 50 });
      const before = await sunk();
      set.kill("w-0", "SIGKILL");
      await waitFor(async () => (await set.supervise(), set.restarts === 1), { what: "the worker started again", timeoutMs: 30_000 });
      await waitFor(async () => (await sunk()) >= BigInt(KEYS), { what: "every window out", timeoutMs: 180_000, intervalMs: 500 });
      const seen = new Uint8Array(KEYS);
      let twice = 0;
      await forEachToEnd(env.bootstrap, sink, (m) => {
        const v = JSON.parse(m.value.toString()) as { key: string; n: number };
        const i = Number(v.key.slice("user-".length));
        if (seen[i] || v.n !== 1) twice++;
        seen[i] = 1;
      });
      const missing = seen.reduce((n, s) => n + (s ? 0 : 1), 0);
      process.stdout.write(`# ${KEYS} windows closed at once; killed with ${before} out; after the restart ${missing} missing, ${twice} twice or wrong\n`);
      assert.ok(before < BigInt(KEYS), `the kill came while windows were still coming out (${before} of ${KEYS})`);
      assert.equal(missing, 0, "none lost");
      assert.equal(twice, 0, "none twice");
    } finally {
      await set.stopAll();
    }
  });
});
