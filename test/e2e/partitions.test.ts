// Partition growth end to end. A stateless pipeline whose source has 2 partitions, fed faster than 2 capped
// workers read, grows the source while the producer keeps writing, and the workers follow past 2; every record
// reaches the sink once, including those written to the new partitions before any worker read them (the
// pipeline starts from latest, so a new partition read from its end would lose them). A windowed pipeline
// behind keyBy scales past its source's partitions, up to its key groups (the repartition topic, created with
// partitions.max partitions and never grown), with exact windowed results, and ScalingLimited says that the
// key groups cap it.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import { waitFor } from "../env/proc.ts";
import { uniqueSuffix } from "../support/bed.ts";
import { createTopic, forEachToEnd, groupLag, produceInOneTransaction, produceSteadily } from "../support/kafka.ts";
import { applyPipeline, copyIds, Observer, waitForIds, withDiagnostics } from "../support/scaling.ts";
import { operatorSuite } from "../support/suite.ts";

const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function partitionCount(a: Admin, topic: string): Promise<number> {
  return (await a.metadata({ topics: [topic], forceUpdate: true })).topics.get(topic)?.partitionsCount ?? 0;
}

describe("partition growth: sources grow where keyed state allows, and the workers follow", () => {
  const suite = operatorSuite("partitions");
  const { env, kubectl, read } = suite;
  const suffix = uniqueSuffix();

  test("a stateless pipeline capped by 2 partitions grows them while records keep coming; every record reaches the sink once", {
    timeout: 300_000,
  }, async (t) => {
    const { k, a, ns, op } = suite;
    const name = "grows";
    const from = `grow-src-${suffix}`;
    const to = `grow-sink-${suffix}`;
    const perWorker = 400;
    const rate = 1_500;
    const produceMs = 45_000;
    await createTopic(a, from, 2, { "retention.ms": "-1" });
    await createTopic(a, to, 6, { "retention.ms": "-1" });
    const watch = new Observer(k.kc, name);
    await watch.start(ns);
    const withLog = withDiagnostics(op, kubectl, ns);
    try {
      const spec = copyIds(env.bootstrap, from, to, {
        processing: { guarantee: "exactlyOnce", maxRecordsPerSecond: perWorker },
        scaling: {
          mode: "lag",
          minReplicas: 1,
          maxReplicas: 6,
          targetCatchUp: "20s",
          lagPerReplica: perWorker * 20,
          scaleDownStabilization: "5m",
          partitions: { autoGrow: true, max: 6 },
        },
      });
      // From latest: a worker that began a new partition at its end would skip what was written before it came.
      applyPipeline(kubectl, ns, name, { ...spec, source: { ...spec.source, startFrom: "latest" } });
      await watch.settledAtOne(op.proc).catch(withLog);
      const initial = await waitFor(async () => (await read(name)).status?.sources, { what: "status.sources", timeoutMs: 10_000 });
      assert.deepEqual(initial, [{ topic: from, partitions: 2, initialPartitions: 2 }]);

      // A steady producer, round robin over the partitions there are: the new ones take records as soon as they exist.
      const start = Date.now();
      const load = await produceSteadily(env.bootstrap, from, { rate, durationMs: produceMs, value: (id) => Buffer.from(JSON.stringify({ id })) });
      const perPartition = load.perPartition;
      const produced = perPartition.reduce((x, y) => x + y, 0);
      const grownSeen = load.grownAt;
      const grownTo = await partitionCount(a, from);
      assert.ok(grownTo > 2 && grownTo <= 6, `the source grew past 2 partitions, within max: ${grownTo}`);
      const inNew = perPartition.slice(2).reduce((x, y) => x + (y ?? 0), 0);
      assert.ok(inNew > 0, "records were written to the new partitions");

      // Every record, the new partitions' included, reaches the sink, once.
      assert.equal(await waitForIds(env.bootstrap, to, produced, op).catch(withLog), produced, "each record once");
      const peak = Math.max(...watch.replicas.map((r) => r.replicas));
      assert.ok(peak > 2, `the workers went past the source's first 2 partitions: peak ${peak}`);
      assert.ok(peak <= grownTo, `no more workers than partitions: peak ${peak}, partitions ${grownTo}`);

      const status = (await read(name)).status;
      assert.deepEqual(status?.sources, [{ topic: from, partitions: grownTo, initialPartitions: 2 }]);
      const events = (await k.core.listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.name=${name}` })).items.filter(
        (e) => e.reason === "PartitionsGrown",
      );
      assert.ok(events.length >= 1, "each growth is an event");
      for (const e of events) assert.match(e.message ?? "", new RegExp(`^grew ${from} from \\d+ to \\d+ partitions`));
      const cm = (await k.core.readNamespacedConfigMap({ namespace: ns, name: `${name}-config` })).data?.["pipeline.json"] ?? "{}";
      assert.deepEqual(JSON.parse(cm).initialPartitions, { [from]: 2 }, "the workers know which partitions were added");

      t.diagnostic(`produced ${produced} records at ${rate}/s for ${s(produceMs)}; ${inNew} of them into the new partitions`);
      t.diagnostic(`grown to ${grownTo} partitions; first seen by the producer ${grownSeen ? s(grownSeen - start) : "never"} after it began`);
      t.diagnostic(`replicas: ${watch.replicas.map((r) => `${r.replicas} at ${s(r.seen - start)}`).join(", ")}`);
      for (const e of events) t.diagnostic(`  ${e.reason}: ${e.message}`);
    } finally {
      watch.stop();
    }
  });

  test("a windowed pipeline behind keyBy scales past its source's partitions to its key groups, with exact windows; ScalingLimited names the cap", {
    timeout: 300_000,
  }, async (t) => {
    const { k, a, ns, op } = suite;
    const name = "keyed";
    const from = `keyed-src-${suffix}`;
    const to = `keyed-sink-${suffix}`;
    const keyGroups = 4;
    const records = 40_000;
    const keys = 40;
    const T0 = Date.parse("2026-03-01T00:00:00Z");
    const windowMs = 10_000;
    await createTopic(a, from, 2, { "retention.ms": "-1" });
    await createTopic(a, to, 2, { "retention.ms": "-1" });
    const watch = new Observer(k.kc, name);
    await watch.start(ns);
    const withLog = withDiagnostics(op, kubectl, ns);
    try {
      applyPipeline(kubectl, ns, name, {
        kafka: { bootstrapServers: [env.bootstrap] },
        source: { topics: [from], format: "json", startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "1s", idleTimeout: "5s" } },
        steps: [
          { name: "by-key", keyBy: "value.k" },
          { name: "per-10s", window: { tumbling: "10s" }, aggregate: { n: { count: {} } }, emit: "onUpdate" },
        ],
        sink: { topic: to, format: "json" },
        processing: { guarantee: "exactlyOnce", maxRecordsPerSecond: 1_000 },
        scaling: {
          mode: "lag",
          minReplicas: 1,
          maxReplicas: 8,
          targetCatchUp: "20s",
          lagPerReplica: 2_000,
          scaleDownStabilization: "5m",
          partitions: { autoGrow: true, max: keyGroups },
        },
      });
      await watch.settledAtOne(op.proc).catch(withLog);
      const repartition = `${ns}_${name}_by-key-repartition`;
      assert.equal(await partitionCount(a, repartition), keyGroups, "the repartition topic has partitions.max partitions: the key groups");

      // One transaction: event times rise with the id, so no record is late in any partition.
      const reference = new Map<string, number>();
      const burst = Array.from({ length: records }, (_, i) => {
        const k = `k${i % keys}`;
        const ts = T0 + Math.floor(i * 2.5);
        const w = `${k}@${ts - (ts % windowMs)}`;
        reference.set(w, (reference.get(w) ?? 0) + 1);
        return { topic: from, key: Buffer.from(k), value: Buffer.from(JSON.stringify({ k, ts })) };
      });
      const start = Date.now();
      await produceInOneTransaction(env.bootstrap, `keyed-${ns}`, burst);

      const up = await waitFor(() => watch.decisions.find((d) => d.scaling.reason === "ScaleUp" && d.scaling.desired > 2), {
        what: "a scale-up past the source's 2 partitions",
        timeoutMs: 30_000,
        process: op.proc,
      }).catch(withLog);
      assert.equal(up.scaling.desired, keyGroups, "to the key groups: the backlog asks for more");
      assert.equal(up.scaling.cappedBy, "partitions");
      const limited = await waitFor(
        async () => {
          const c = (await read(name)).status?.conditions?.find((x) => x.type === "ScalingLimited");
          return c?.status === "True" ? c : false;
        },
        { what: "ScalingLimited", timeoutMs: 10_000 },
      );
      assert.equal(limited.reason, "KeyGroupsCapParallelism");
      assert.match(limited.message, new RegExp(`${repartition}, whose ${keyGroups} partitions are the pipeline's key groups`));

      // Drained through both stages; then the last update of each window is its count.
      for (const topic of [from, repartition])
        await waitFor(async () => (await groupLag(a, `${ns}.${name}`, topic)) <= BigInt(keyGroups * 10), {
          what: `the group to drain ${topic}`,
          timeoutMs: 150_000,
          intervalMs: 500,
          process: op.proc,
        }).catch(withLog);
      const drained = Date.now();
      const last = new Map<string, number>();
      let finalCounts = 0;
      await waitFor(
        async () => {
          last.clear();
          await forEachToEnd(env.bootstrap, to, (m) => {
            const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; n: number };
            last.set(`${v.key}@${v.windowStart}`, v.n);
          });
          finalCounts = [...reference].filter(([w, n]) => last.get(w) === n).length;
          return finalCounts === reference.size;
        },
        { what: `every window's last update at its count (${reference.size} windows)`, timeoutMs: 60_000, intervalMs: 1_000 },
      ).catch((err: Error) => withLog(new Error(`${err.message}: ${finalCounts} of ${reference.size} right`)));
      assert.deepEqual(new Map([...last].sort()), new Map([...reference].sort()), "every window, and no other, at its exact count");
      assert.equal(await partitionCount(a, from), 2, "a backlog with no new input grows no partition");
      assert.equal(await partitionCount(a, repartition), keyGroups, "the key groups are never grown");
      assert.ok(Math.max(...watch.replicas.map((r) => r.replicas)) <= keyGroups);

      t.diagnostic(`${records} records in ${reference.size} windows; up to ${up.scaling.desired} workers ${s(up.seen - start)} after the burst`);
      t.diagnostic(`drained both stages ${s(drained - start)} after the burst; ScalingLimited: ${limited.message}`);
    } finally {
      watch.stop();
    }
  });
});
