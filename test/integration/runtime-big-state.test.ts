// Issue 17: state on disk with bounded memory. The previous runtime kept every open window in a JS Map: one
// exactly-once worker holding 1.5M open 1-hour windows reached 2,875 MiB of RSS. Here one exactly-once worker,
// its V8 heap capped at 128 MiB, holds 2M open 1-hour windows (each record its own key) until a last record per
// source partition closes them all; every window comes out once and equal to the batch reference. The windows
// live in RocksDB, read and written through a 16 MiB state cache. The test prints the state's bytes on disk, the
// peak heap (sampled) and the peak RSS. It runs 1M windows in `npm test` (the previous design held about 1.9 KB
// of heap per window: some 15 times the cap); CONVEYOR_BIG_STATE_KEYS sets another count (2M took 6 min), and
// CONVEYOR_BIG_STATE_RUNTIME=previous runs the same test on the previous design, which dies of the cap.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { Producer } from "../../runtime/kafka/client.ts";
import { isAlive, waitFor } from "../env/proc.ts";
import { brokers, endOffsets, forEachToEnd, groupLag } from "../support/kafka.ts";
import { previousRuntime, runtimeSuite, startRuntime, windowedPipeline } from "../support/runtime.ts";

const KEYS = Number(process.env.CONVEYOR_BIG_STATE_KEYS ?? 1_000_000);
/** The last commit whose runtime kept its windows in the JS heap. */
const PREVIOUS = "04e145679652c150dc5d5db6022cd686d939409b";
const HEAP_MIB = 128;
const PARTITIONS = 2;
const HOUR = 3_600_000;
const T0 = Date.parse("2023-03-01T10:00:00Z");
/** Time for the run, at a pessimistic 4,000 records/s each way (in, and the results out), and two minutes more. */
const RUN_MS = 120_000 + (KEYS / 4_000) * 1_000 * 2;

const amountOf = (i: number) => (i % 100) + 1;

function vmKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  return Number(m?.[1] ?? 0);
}

describe("issue 17: a window state many times the heap, on disk, with bounded memory", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-big-state");

  test(`${KEYS} open 1-hour windows, one per key, under a ${HEAP_MIB} MiB heap, exactly once`, { timeout: RUN_MS + 120_000 }, async () => {
    const name = `big-${suffix}`;
    const { spec, topology, source, sink, repartition } = await windowedPipeline(a, {
      bootstrap: env.bootstrap,
      prefix: "big",
      suffix,
      name,
      window: { tumbling: "1h" },
      partitions: PARTITIONS,
      outPartitions: PARTITIONS,
      rest: { processing: { guarantee: "exactlyOnce" }, state: { cacheSize: "16Mi" } },
    });
    const root = process.env.CONVEYOR_BIG_STATE_RUNTIME === "previous" ? { root: previousRuntime(PREVIOUS, dir) } : {};
    const w = await startRuntime({ dir, namespace: "it", name, spec, env: { NODE_OPTIONS: `--max-old-space-size=${HEAP_MIB}` }, ...root });
    workers.push(w);
    let peakHeap = 0;
    let peakState = 0;
    const sampler = setInterval(() => {
      w.metric("conveyor_runtime_heap_used_bytes").then(
        (v) => {
          peakHeap = Math.max(peakHeap, v);
        },
        () => {},
      );
      w.metric("conveyor_runtime_state_bytes").then(
        (v) => {
          peakState = Math.max(peakState, v);
        },
        () => {},
      );
    }, 500);
    try {
      const t0 = Date.now();
      const producer = new Producer({ clientId: "big-state", bootstrapBrokers: brokers(env.bootstrap), acks: -1, idempotent: true });
      try {
        for (let i = 0; i < KEYS; i += 5_000) {
          const messages = [];
          for (let j = i; j < Math.min(KEYS, i + 5_000); j++) {
            const value = JSON.stringify({ user: `user-${j}`, amount: amountOf(j), ts: T0 + Math.floor((j * (HOUR - 10_000)) / KEYS) });
            messages.push({ topic: source, partition: j % PARTITIONS, key: Buffer.from(`user-${j}`), value: Buffer.from(value) });
          }
          await producer.send({ messages });
        }
        // the watermark passes the hour on every source partition: every window closes
        await producer.send({
          messages: Array.from({ length: PARTITIONS }, (_, p) => ({
            topic: source,
            partition: p,
            key: Buffer.from(`closer-${p}`),
            value: Buffer.from(JSON.stringify({ user: `closer-${p}`, amount: 0, ts: T0 + 2 * HOUR })),
          })),
        });
      } finally {
        await producer.close();
      }
      await waitFor(
        async () => {
          if ((await groupLag(a, topology.applicationId, source)) !== 0n || (await groupLag(a, topology.applicationId, repartition)) !== 0n) return false;
          const out = (await endOffsets(a, sink)).reduce((n, e) => n + e, 0n);
          return out >= BigInt(KEYS);
        },
        { what: `every window's result in the sink`, timeoutMs: RUN_MS, intervalMs: 1_000, process: w.proc },
      );
      const seconds = (Date.now() - t0) / 1000;
      const hwm = vmKiB(w.proc.pid, "VmHWM");
      clearInterval(sampler);

      const seen = new Uint8Array(KEYS);
      let wrong = 0;
      let extra = 0;
      await forEachToEnd(
        env.bootstrap,
        sink,
        (m) => {
          const v = JSON.parse(m.value.toString()) as { key: string; n: number; total: number; windowStart: number };
          const i = Number(v.key.slice("user-".length));
          if (!Number.isInteger(i) || i < 0 || i >= KEYS || seen[i]) {
            extra++;
            return;
          }
          seen[i] = 1;
          if (v.n !== 1 || v.total !== amountOf(i) || v.windowStart !== T0) wrong++;
        },
        { timeoutMs: RUN_MS },
      );
      const missing = seen.reduce((n, s) => n + (s ? 0 : 1), 0);
      process.stdout.write(
        `# ${KEYS} windows in ${seconds.toFixed(0)} s (${Math.round(KEYS / seconds)} records/s): state on disk up to ${(peakState / 2 ** 20).toFixed(0)} MiB; heap up to ${(peakHeap / 2 ** 20).toFixed(0)} MiB (sampled, cap ${HEAP_MIB} MiB); peak RSS ${(hwm / 1024).toFixed(0)} MiB\n`,
      );
      assert.equal(missing, 0, "every window came out");
      assert.equal(extra, 0, "none twice, and none that was not sent");
      assert.equal(wrong, 0, "each equal to the batch reference");
      assert.ok(isAlive(w.proc.pid), "the worker ran to the end without a restart");
    } finally {
      clearInterval(sampler);
    }
  });
});
