// Data-safety defect 6 (repartition topics grow for ever). They are created with retention.ms -1 and nothing
// purged them, and watermark markers go into every partition every 200 ms even when idle. Now each worker
// deletes what it has committed (DeleteRecords), as Kafka Streams does, and the topic's segments (segment.ms
// 10 min) roll, so the broker frees what was purged at its next retention check. After a load the topic holds
// few records, though its bytes wait for the segment to roll; after an idle hour (simulated: segments of a
// second, a retention check every 5 s on the bed, a purge every second) it holds a few seconds of markers.
// The run is of 1M records; CONVEYOR_PURGE_RECORDS sets another count.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigResourceTypes, IncrementalAlterConfigOperationTypes } from "@platformatic/kafka";
import { waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, groupLag, produce } from "../support/kafka.ts";
import { compiled, runtimeSuite, startRuntime, userWindowSpec } from "../support/runtime.ts";

const PARTITIONS = 2;
const RECORDS = Number(process.env.CONVEYOR_PURGE_RECORDS ?? 1_000_000);
const T0 = Date.parse("2023-03-01T10:00:00Z");
/** Time to process the records, at a pessimistic 2,000 records/s, and a minute more. */
const LOAD_MS = 60_000 + RECORDS / 2;

describe("defect 6: repartition topics are purged of what every reader committed", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-repartition-purge");

  test(`${RECORDS} records, then an idle spell: the topic keeps only what came since the last purge`, { timeout: 2 * LOAD_MS + 60_000 }, async () => {
    const name = `purge-${suffix}`;
    const [source, sink, late] = ["src", "out", "late"].map((t) => `rp-${t}-${suffix}`) as [string, string, string];
    const spec = userWindowSpec({ bootstrap: env.bootstrap, source, sink, late, window: { tumbling: "1m" }, emit: "onWindowClose" });
    const topology = compiled(spec, { namespace: "it", name });
    const repartition = topology.internalTopics.find((t) => t.endsWith("-repartition")) as string;
    await createTopic(a, source, PARTITIONS);
    for (const t of [sink, late]) await createTopic(a, t, 1);
    await createInternalTopics(a, topology, PARTITIONS);
    await produce(
      env.bootstrap,
      source,
      Array.from({ length: RECORDS }, (_, i) => ({ key: `u-${i % 50}`, value: JSON.stringify({ user: `u-${i % 50}`, ts: T0 + i * 10, amount: 1 }) })),
    );

    /** Records written to the topic in all, and those it still holds (end minus log start), over its partitions. */
    const sizes = async () => {
      const partitions = Array.from({ length: PARTITIONS }, (_, p) => ({ partitionIndex: p }));
      const [start, end] = await Promise.all(
        [-2n, -1n].map(async (timestamp) => {
          const res = await a.listOffsets({ topics: [{ name: repartition, partitions: partitions.map((p) => ({ ...p, timestamp })) }] });
          return (res[0]?.partitions ?? []).reduce((n, p) => n + p.offset, 0n);
        }),
      );
      const dirs = await a.describeLogDirs({ topics: [{ name: repartition, partitions: partitions.map((p) => p.partitionIndex) }] });
      let bytes = 0n;
      for (const b of dirs) for (const r of b.results) for (const t of r.topics) for (const p of t.partitions) bytes += p.partitionSize;
      return { written: Number(end), held: Number((end as bigint) - (start as bigint)), bytes: Number(bytes) };
    };

    const w = await startRuntime({ dir, namespace: "it", name, spec, env: { CONVEYOR_REPARTITION_PURGE_INTERVAL_MS: "1000" } });
    workers.push(w);
    await waitFor(async () => (await groupLag(a, topology.applicationId, repartition)) === 0n && (await groupLag(a, topology.applicationId, source)) === 0n, {
      what: "every record through the repartition topic and committed",
      timeoutMs: LOAD_MS,
      process: w.proc,
    });
    // the next purge after the last commit
    await waitFor(async () => (await sizes()).held < RECORDS / 10, { what: "the committed records purged", timeoutMs: 15_000, process: w.proc });
    const loaded = await sizes();

    // Idle: only markers now, every 200 ms into every partition. An idle hour rolls the 10-minute segments six
    // times; segments of a second stand for it here.
    await a.incrementalAlterConfigs({
      resources: [
        {
          resourceType: ConfigResourceTypes.TOPIC,
          resourceName: repartition,
          configs: [{ name: "segment.ms", configOperation: IncrementalAlterConfigOperationTypes.SET, value: "1000" }],
        },
      ],
    });
    const idleStart = Date.now();
    await waitFor(async () => Date.now() - idleStart >= 10_000 && (await sizes()).bytes < loaded.bytes / 20, {
      what: "an idle spell of 10 s, and the purged segments freed",
      timeoutMs: 40_000,
      intervalMs: 500,
      process: w.proc,
    });
    const idle = await sizes();
    process.stdout.write(
      `# ${RECORDS} records: after the load ${loaded.written} written, ${loaded.held} held, ${loaded.bytes} bytes; after ${Math.round((Date.now() - idleStart) / 1000)} s idle (segments of 1 s) ${idle.written} written, ${idle.held} held, ${idle.bytes} bytes\n`,
    );
    assert.ok(loaded.written >= RECORDS, "every record went through the topic");
    assert.ok(idle.written > loaded.written, "markers went on being written while idle");
    assert.ok(
      idle.held <= (idle.written - loaded.written) / 2,
      `idle markers are purged too: ${idle.held} held of ${idle.written - loaded.written} written while idle`,
    );
    assert.ok(idle.bytes < loaded.bytes / 20, `the purged segments are freed: ${idle.bytes} bytes after the idle spell, ${loaded.bytes} after the load`);
    assert.ok((await w.metric("conveyor_runtime_repartition_purged_to_offset")) > RECORDS / 2, "the purge shows in the metric");
    assert.equal(await w.metric("conveyor_runtime_repartition_purge_failures_total"), 0);
  });
});
