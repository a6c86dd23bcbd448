// processing.maxRecordsPerSecond on the real broker: a worker with a cap of 1,000 records/s drains a backlog of
// 6,000 no faster than the cap allows (a second's burst, then the rate), and still drains all of it. Both bounds
// are safe on a slow machine: slowness only makes a worker later, never faster than its cap.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic, keyedRecords, produce } from "../support/kafka.ts";
import { type RuntimeProcess, startRuntime } from "../support/runtime.ts";

const RATE = 1_000;
const RECORDS = 6_000;

describe("maxRecordsPerSecond caps what one worker consumes", () => {
  const env = bedEnv();
  let w: RuntimeProcess | undefined;
  after(async () => {
    if (w && isAlive(w.proc.pid)) await stopProcess(w.proc.pid);
  });

  test(`${RECORDS} records at a cap of ${RATE}/s: never ahead of a second's burst plus the rate, and all of them in the end`, async () => {
    const suffix = uniqueSuffix();
    const source = `rl-src-${suffix}`;
    const sink = `rl-out-${suffix}`;
    const a = admin(env.bootstrap);
    try {
      for (const t of [source, sink]) await createTopic(a, t, 2);
      await produce(env.bootstrap, source, keyedRecords(RECORDS));
      const spec: StreamPipelineSpec = {
        kafka: { bootstrapServers: [env.bootstrap] },
        source: { topics: [source], startFrom: "earliest", format: "string" },
        steps: [{ name: "tag", map: '{"v": value, "limited": true}' }],
        sink: { topic: sink },
        processing: { maxRecordsPerSecond: RATE },
      };
      const t0 = performance.now();
      w = await startRuntime({ dir: join(env.state.dir, `rl-${suffix}`), namespace: "it", name: `rl-${suffix}`, spec });
      const worker = w;
      const samples: { s: number; n: number }[] = [];
      await waitFor(
        async () => {
          const n = await worker.metric("conveyor_runtime_records_in_total");
          samples.push({ s: (performance.now() - t0) / 1000, n });
          return n >= RECORDS;
        },
        { what: `all ${RECORDS} records read`, timeoutMs: 60_000, intervalMs: 250, process: worker.proc },
      );
      const seconds = (performance.now() - t0) / 1000;
      process.stdout.write(`# ${RECORDS} records in ${seconds.toFixed(1)} s at a cap of ${RATE}/s\n`);
      // The bucket starts full when the worker starts, after t0: a second's burst, then the rate.
      for (const x of samples) assert.ok(x.n <= RATE + RATE * x.s, `${x.n} records read ${x.s.toFixed(2)} s after the start, above the cap`);
      assert.ok(seconds >= (RECORDS - RATE) / RATE, `${RECORDS} records took ${seconds.toFixed(1)} s, less than the cap allows`);
    } finally {
      await a.close();
    }
  });
});
