// Backpressure on the real broker: the broker throttles the worker's producer to 200 kB/s with a client quota
// (a slow sink), and a backlog of 1M records waits in the source. The worker keeps going at the sink's pace,
// and its resident memory stays under a stated bound: it reads a batch of maxInFlight records, pauses, and reads
// on only once the batch is written, so the backlog stays on the broker. The bound is the same worker's peak RSS
// with nothing to read, measured in the same run, plus 192 MiB: the backlog's payload alone is 130 MB, and held
// as objects it would be several times that, so a worker that buffered it could not stay under.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type Admin } from "@platformatic/kafka";
import { Producer } from "../../runtime/kafka/client.ts";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic } from "../support/kafka.ts";
import { type RuntimeProcess, startRuntime } from "../support/runtime.ts";

const BACKLOG = Number(process.env.CONVEYOR_BACKPRESSURE_RECORDS ?? 1_000_000);
/** The bound this test states: a worker's RSS while the backlog waits exceeds its idle RSS by less than this. */
const RSS_HEADROOM_MIB = 192;
const SINK_BYTES_PER_SECOND = 200_000;
const WATCH_MS = 20_000;

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
  assert.ok(Number.isFinite(kb), `no VmRSS for ${pid}`);
  return kb / 1024;
}

describe("backpressure: a throttled sink and a 1M-record backlog", () => {
  const env = bedEnv();
  const suffix = uniqueSuffix();
  let a: Admin | undefined;
  let w: RuntimeProcess | undefined;
  const pod = `bp-${suffix}-0`;

  after(async () => {
    if (w && isAlive(w.proc.pid)) await stopProcess(w.proc.pid);
    if (a) {
      await a.alterClientQuotas({
        entries: [{ entities: [{ entityType: "client-id", entityName: `${pod}-producer` }], ops: [{ key: "producer_byte_rate", remove: true }] }],
      });
      await a.close();
    }
  });

  /** Peak RSS over WATCH_MS, a sample every 250 ms, each one also a check that the worker is alive. */
  async function watchRss(worker: RuntimeProcess): Promise<number[]> {
    const samples: number[] = [];
    const t0 = Date.now();
    await waitFor(
      () => {
        samples.push(rssMiB(worker.proc.pid));
        return Date.now() - t0 >= WATCH_MS;
      },
      { what: `${WATCH_MS} ms of RSS samples`, timeoutMs: WATCH_MS + 10_000, intervalMs: 250, process: worker.proc },
    );
    return samples;
  }

  test(`RSS stays within ${RSS_HEADROOM_MIB} MiB of an idle worker's while the worker drains at the sink's pace`, async () => {
    a = admin(env.bootstrap);
    const source = `bp-src-${suffix}`;
    const sink = `bp-out-${suffix}`;
    const empty = `bp-empty-${suffix}`;
    await createTopic(a, source, 3);
    await createTopic(a, sink, 3);
    await createTopic(a, empty, 3);
    const spec = (topic: string): StreamPipelineSpec => ({
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [topic], startFrom: "earliest" },
      steps: [{ name: "shape", map: "{'n': value.n, 'pad': value.pad}" }],
      sink: { topic: sink },
      processing: { maxInFlight: 1000 },
    });
    const dir = join(env.state.dir, `backpressure-${suffix}`);
    // The baseline: the same pipeline with nothing to read.
    const idle = await startRuntime({ dir, namespace: "it", name: `bp-idle-${suffix}`, spec: spec(empty), pod: `bp-idle-${suffix}-0` });
    w = idle;
    await waitFor(async () => (await fetch(`http://127.0.0.1:${idle.port}/readyz`)).ok, {
      what: "the idle worker to be ready",
      timeoutMs: 30_000,
      process: idle.proc,
    });
    const idlePeak = Math.max(...(await watchRss(idle)));
    await stopProcess(idle.proc.pid);
    const producer = new Producer({ clientId: "bp-test", bootstrapBrokers: [env.bootstrap], acks: 1 });
    try {
      const pad = "x".repeat(100);
      for (let i = 0; i < BACKLOG; i += 10_000)
        await producer.send({
          messages: Array.from({ length: Math.min(10_000, BACKLOG - i) }, (_, j) => ({
            topic: source,
            key: Buffer.from(`k${(i + j) % 1000}`),
            value: Buffer.from(JSON.stringify({ n: i + j, pad })),
          })),
        });
    } finally {
      await producer.close();
    }
    // The slow sink: the broker delays the worker's produce responses to keep it under the rate.
    await a.alterClientQuotas({
      entries: [
        {
          entities: [{ entityType: "client-id", entityName: `${pod}-producer` }],
          ops: [{ key: "producer_byte_rate", value: SINK_BYTES_PER_SECOND, remove: false }],
        },
      ],
    });
    w = await startRuntime({ dir, namespace: "it", name: `bp-${suffix}`, spec: spec(source), pod });
    const worker = w;
    await waitFor(async () => (await worker.metric("conveyor_runtime_records_out_total")) > 0, {
      what: "the first records through the throttled sink",
      timeoutMs: 30_000,
      process: worker.proc,
    });
    const t0 = Date.now();
    const outAtStart = await worker.metric("conveyor_runtime_records_out_total");
    const samples = await watchRss(worker);
    const written = (await worker.metric("conveyor_runtime_records_out_total")) - outAtStart;
    const read = await worker.metric("conveyor_runtime_records_in_total");
    const peak = Math.max(...samples);
    const rate = written / ((Date.now() - t0) / 1000);
    process.stdout.write(
      `# backpressure: ${BACKLOG} records waiting; ${rate.toFixed(0)} records/s through a ${SINK_BYTES_PER_SECOND / 1000} kB/s sink; ${read} read in all; RSS peak ${peak.toFixed(0)} MiB over ${samples.length} samples, idle peak ${idlePeak.toFixed(0)} MiB (bound: idle + ${RSS_HEADROOM_MIB} MiB)\n`,
    );
    assert.ok(written > 0, "the worker goes on at the sink's pace");
    assert.ok(read < BACKLOG / 2, `the backlog stays on the broker: ${read} of ${BACKLOG} read`);
    assert.ok(peak < idlePeak + RSS_HEADROOM_MIB, `RSS peaked at ${peak.toFixed(0)} MiB, idle at ${idlePeak.toFixed(0)} MiB`);
  });
});
