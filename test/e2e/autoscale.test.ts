// scaling.mode lag end to end: a burst on a stateless exactly-once pipeline whose workers each consume at most
// 2,000 records/s. The operator must scale the StatefulSet from 1 to the policy's target in one step within
// seconds of seeing the backlog, drain it, come back down only after the stabilization window, and the sink
// must hold every record exactly once. Every change is observed through watches, with the time it arrived.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import type { ScalingStatus } from "../../src/api.ts";
import { type KafkaCluster, startBroker, startKafka, stopKafka, waitForBroker } from "../env/kafka.ts";
import { BED_GATEWAY } from "../env/net.ts";
import { stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic, groupLag, produceInOneTransaction } from "../support/kafka.ts";
import { type Kube, kube, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";
import { deletePipelines, type OperatorProcess, startOperator } from "../support/operator.ts";
import { applyPipeline, copyIds, Observer, waitForIds, withDiagnostics } from "../support/scaling.ts";
import { teardown } from "../support/suite.ts";

const PARTITIONS = 4;
const PER_WORKER = 2_000;
/**
 * The burst test's cap per worker: half of PER_WORKER, so that two exactly-once workers use well under the 2 cores
 * the bed shares with Kafka and the control plane. The test is about the policy's sizing, and the drain time it
 * checks is then set by the cap, not by how busy the machine is.
 */
const BURST_PER_WORKER = 1_000;
const CATCH_UP_S = 30;
/** Between one and two workers' targetCatchUp of backlog: 2 workers, 2 of the 4 partitions each. */
const BURST = 55_000;
/** What one worker drains in targetCatchUp at its cap: the policy's estimate before it has measured a rate. */
const LAG_PER_REPLICA = BURST_PER_WORKER * CATCH_UP_S;
const STABILIZATION_MS = 30_000;
const NAME = "burst";

describe("scaling.mode lag: a burst scales the workers up in one step, drains, and scales back down; an idle pipeline sleeps at zero", () => {
  const env = bedEnv();
  const kubectl = (args: string[], input?: string) => runKubectl(env.kubeconfig, args, input);
  let k: Kube;
  let a: Admin;
  let ns: string;
  let op: OperatorProcess;
  let observer: Observer;
  const cleanups: (() => Promise<void>)[] = [];
  const suffix = uniqueSuffix();
  const source = `autoscale-src-${suffix}`;
  const sink = `autoscale-sink-${suffix}`;

  before(async () => {
    k = kube();
    a = admin(env.bootstrap);
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "autoscale");
    kubectl(["apply", "--server-side", "--force-conflicts", "-f", "crds"]);
    kubectl(["wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);
    await createTopic(a, source, PARTITIONS, { "retention.ms": "-1" });
    await createTopic(a, sink, PARTITIONS, { "retention.ms": "-1" });
    op = await startOperator(ns);
    observer = new Observer(k.kc, NAME);
    await observer.start(ns);
  });

  after(async () => {
    // every step runs even when a finalizer does not finish (the failure is still reported): a leaked operator
    // would reconcile the next suites' pipelines, and an open client keeps this file's process alive
    await teardown(
      () => observer?.stop(),
      () => op && deletePipelines(k, ns, op.proc),
      () => op && stopProcess(op.proc.pid),
      ...cleanups,
      () => a?.close(),
    );
  });

  test("1 → target in one step within seconds, the backlog drains, down after the window, every record once", { timeout: 240_000 }, async (t) => {
    const withLog = withDiagnostics(op, kubectl, ns);
    applyPipeline(kubectl, ns, NAME, {
      ...copyIds(env.bootstrap, source, sink, {
        processing: { guarantee: "exactlyOnce", maxRecordsPerSecond: BURST_PER_WORKER },
        scaling: {
          mode: "lag",
          minReplicas: 1,
          maxReplicas: 4,
          targetCatchUp: `${CATCH_UP_S}s`,
          lagPerReplica: LAG_PER_REPLICA,
          scaleDownStabilization: `${STABILIZATION_MS / 1000}s`,
        },
      }),
      steps: [
        { name: "keep", filter: "value.id >= 0" },
        { name: "shape", map: "{'id': value.id, 'burst': true}" },
      ],
    });
    // Settled: one worker, the group Stable with it, and the autoscaler content with that.
    await waitFor(
      () => {
        const s = observer.decisions.at(-1)?.scaling;
        return s?.reason === "Steady" && s.desired === 1 && s.lag === 0 && observer.currentReplicas === 1;
      },
      { what: "one settled worker, with the autoscaler Steady at 1", timeoutMs: 60_000, process: op.proc },
    ).catch(withLog);

    // The burst lands at once: one transaction, visible to read_committed readers (the workers and the lag
    // reader) when it commits. Written bit by bit, the autoscaler would rightly follow it up in several steps.
    const burstStart = Date.now();
    await produceInOneTransaction(
      env.bootstrap,
      `burst-${ns}`,
      Array.from({ length: BURST }, (_, id) => ({ topic: source, key: Buffer.from(`k-${id % 101}`), value: Buffer.from(JSON.stringify({ id })) })),
    );
    const burstEnd = Date.now();

    // Up: in one step, to the policy's target. The StatefulSet is applied before the status is written: wait
    // for both.
    const upDecision = await waitFor(() => (observer.currentReplicas ?? 1) > 1 && observer.decisions.find((d) => d.scaling.reason === "ScaleUp"), {
      what: "the StatefulSet to scale up, and status.scaling to say why",
      timeoutMs: 20_000,
      process: op.proc,
    }).catch(withLog);
    const up = observer.replicas.find((r) => r.replicas > 1) as { seen: number; replicas: number };
    assert.ok(upDecision, "the scale-up decision is in status.scaling");
    assert.equal(up.replicas, upDecision.scaling.desired, "the StatefulSet runs what the policy decided");
    assert.equal(up.replicas, 2, "the backlog needs 2 workers' targetCatchUp, and 2 share the 4 partitions evenly");
    assert.equal(upDecision.scaling.cappedBy, undefined);
    const afterBurst = observer.decisions.filter((d) => Date.parse(d.scaling.sampleTime) >= burstStart);
    const firstLag = afterBurst.find((d) => (d.scaling.lag ?? 0) > 0);
    const firstBeyondOne = afterBurst.find((d) => (d.scaling.lag ?? 0) > BURST_PER_WORKER * CATCH_UP_S);
    assert.ok(firstLag && firstBeyondOne, "status.scaling showed the backlog");
    const reactionMs = up.seen - Date.parse(firstLag.scaling.sampleTime);
    assert.ok(up.seen - Date.parse(firstBeyondOne.scaling.sampleTime) <= 10_000, "scaled within 10 s of a backlog one worker cannot drain in targetCatchUp");

    // Drained: the group's lag on the source reaches 0; the replicas never went up again on the way.
    await waitFor(async () => (await groupLag(a, `${ns}.${NAME}`, source)) === 0n, {
      what: "the backlog to drain",
      timeoutMs: 90_000,
      intervalMs: 250,
      process: op.proc,
    }).catch(withLog);
    const drainedAt = Date.now();
    // The target was sized to drain in targetCatchUp: within 25 % of it, counted from the scale-up.
    const drainS = (drainedAt - up.seen) / 1000;
    assert.ok(drainS >= 0.75 * CATCH_UP_S && drainS <= 1.25 * CATCH_UP_S, `drained ${drainS.toFixed(1)} s after the scale-up; targetCatchUp ${CATCH_UP_S} s`);

    // Down: once the target has held for a whole window after the scale-up, in one step, back to minReplicas.
    await waitFor(() => observer.currentReplicas === 1, { what: "the StatefulSet to come back to 1", timeoutMs: 75_000, process: op.proc }).catch(withLog);
    const changes = observer.replicas.filter((r) => r.seen >= up.seen);
    const ups = changes.filter((c, i) => i > 0 && c.replicas > (changes[i - 1] as { replicas: number }).replicas);
    assert.deepEqual(ups, [], "no second scale-up: the first step went straight to the target");
    const downs = changes.slice(1);
    assert.equal(downs.length, 1, `down once, straight to minReplicas: ${downs.map((d) => d.replicas).join(" -> ")}`);
    let previous = up.seen;
    for (const d of downs) {
      assert.ok(d.seen - previous >= STABILIZATION_MS - 1_000, `a scale-down ${d.seen - previous} ms after the previous step, within the window`);
      previous = d.seen;
    }
    for (const d of observer.decisions.filter((x) => x.scaling.reason === "ScaleDown"))
      assert.notEqual(d.scaling.lag, undefined, "a scale-down is never decided on an unknown lag");

    // Events: one per decision that changed the replicas, none swallowed by the per-generation dedupe.
    const events = await waitFor(
      async () => {
        const list = await k.core.listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.name=${NAME}` });
        const scale = list.items.filter((e) => e.source?.component === "conveyor-operator" && /^Scaled|^WokeUp/.test(e.reason ?? ""));
        return scale.length === 1 + downs.length ? scale.sort((x, y) => (x.firstTimestamp?.getTime() ?? 0) - (y.firstTimestamp?.getTime() ?? 0)) : false;
      },
      { what: "one event per scale step", timeoutMs: 10_000 },
    );
    assert.deepEqual(
      events.map((e) => e.reason),
      ["ScaledUp", ...downs.map(() => "ScaledDown")],
    );
    assert.deepEqual([...observer.generations], [1], "the operator never wrote the spec: a GitOps tool stays Synced");

    // Every record reached the sink once (read_committed, counted by id).
    assert.equal(await waitForIds(env.bootstrap, sink, BURST, op), BURST, "every record once: as many records as distinct ids");

    const metrics = await (await fetch(`http://127.0.0.1:${op.port}/metrics`)).text();
    const labels = `namespace="${ns}",pipeline="${NAME}"`;
    assert.match(metrics, new RegExp(`conveyor_scaling_desired_replicas\\{${labels}\\} 1\\n`));
    assert.match(metrics, new RegExp(`conveyor_scaling_decisions_total\\{${labels},reason="ScaleUp"\\} 1\\n`));

    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    t.diagnostic(`burst of ${BURST} records produced in ${s(burstEnd - burstStart)}`);
    t.diagnostic(
      `reaction: ${s(reactionMs)} from the first status.scaling sample with lag (${firstLag.scaling.lag}) to replicas 1 -> ${up.replicas} ` +
        `(${s(up.seen - burstStart)} after the burst began; decision: ${upDecision.scaling.reason}, lag ${upDecision.scaling.lag})`,
    );
    t.diagnostic(`drain: ${s(drainedAt - burstStart)} from the start of the burst to group lag 0 (${s(drainedAt - up.seen)} after the scale-up)`);
    t.diagnostic(
      `scale-down: ${downs.map((d) => `${s(d.seen - up.seen)} after the scale-up -> ${d.replicas}`).join(", ")}; ` +
        `learned perReplicaRate ${observer.decisions.at(-1)?.scaling.perReplicaRate} records/s`,
    );
    t.diagnostic(`scale events: ${events.length} (${events.map((e) => e.reason).join(", ")}); decisions seen: ${observer.decisions.length}`);
    for (const e of events) t.diagnostic(`  ${e.reason}: ${e.message}`);
  });
  test("minReplicas 0: to zero after scaleToZeroAfter with no input, woken by new records within seconds, and to zero again", {
    timeout: 180_000,
  }, async (t) => {
    const name = "sleepy";
    const from = `sleepy-src-${suffix}`;
    const to = `sleepy-sink-${suffix}`;
    const records = 5_000;
    await createTopic(a, from, 2, { "retention.ms": "-1" });
    await createTopic(a, to, 2, { "retention.ms": "-1" });
    const watch = new Observer(k.kc, name);
    await watch.start(ns);
    const withLog = withDiagnostics(op, kubectl, ns);
    try {
      applyPipeline(
        kubectl,
        ns,
        name,
        copyIds(env.bootstrap, from, to, {
          processing: { guarantee: "exactlyOnce" },
          scaling: { mode: "lag", minReplicas: 0, maxReplicas: 2, scaleToZeroAfter: "5s", scaleDownStabilization: "10s", lagPerReplica: LAG_PER_REPLICA },
        }),
      );
      // No input: one worker starts (the spec's replicas), and goes once the pipeline has idled for 5 s.
      // The StatefulSet is applied before the status is written: wait for both.
      const asleep = await waitFor(
        () => watch.replicas.some((r) => r.replicas > 0) && watch.currentReplicas === 0 && watch.decisions.find((d) => d.scaling.reason === "ScaleToZero"),
        { what: "the workers to start and then go to zero, and status.scaling to say ScaleToZero", timeoutMs: 60_000, process: op.proc },
      ).catch(withLog);
      const idleFor = Date.parse(asleep.scaling.sampleTime) - Date.parse(asleep.scaling.state.idleSince ?? asleep.scaling.sampleTime);
      assert.ok(idleFor >= 5_000, `to zero after ${idleFor} ms of no input and no lag, not before scaleToZeroAfter`);

      const sent = Date.now();
      await produceInOneTransaction(
        env.bootstrap,
        `sleepy-${ns}`,
        Array.from({ length: records }, (_, id) => ({ topic: from, key: Buffer.from(`k-${id % 13}`), value: Buffer.from(JSON.stringify({ id })) })),
      );
      const woke = await waitFor(() => (watch.currentReplicas ?? 0) > 0 && watch.decisions.find((d) => d.scaling.reason === "WakeUp"), {
        what: "new records to wake a worker",
        timeoutMs: 30_000,
        process: op.proc,
      }).catch(withLog);
      const up = watch.replicas.filter((r) => r.seen >= sent).find((r) => r.replicas > 0) as { seen: number; replicas: number };
      assert.equal(up.replicas, 1, `${records} records are well within one worker's lagPerReplica`);
      const firstLag = watch.decisions.find((d) => Date.parse(d.scaling.sampleTime) >= sent && (d.scaling.lag ?? 0) > 0);
      assert.ok(firstLag, "status.scaling showed the records as lag");
      assert.ok(up.seen - Date.parse(firstLag.scaling.sampleTime) <= 10_000, "woken within 10 s of the first sample with lag, as a scale-up");

      assert.equal(await waitForIds(env.bootstrap, to, records, op).catch(withLog), records, "each record once");

      await waitFor(() => watch.currentReplicas === 0 && watch.replicas.filter((r) => r.seen >= up.seen).length >= 2, {
        what: "the workers to go to zero again once the records are done",
        timeoutMs: 60_000,
        process: op.proc,
      }).catch(withLog);
      const events = await waitFor(
        async () => {
          const list = await k.core.listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.name=${name}` });
          const scale = list.items.filter((e) => e.source?.component === "conveyor-operator" && /^Scaled|^WokeUp/.test(e.reason ?? ""));
          return scale.length >= 3 ? scale.sort((x, y) => (x.firstTimestamp?.getTime() ?? 0) - (y.firstTimestamp?.getTime() ?? 0)) : false;
        },
        { what: "the scale events", timeoutMs: 10_000 },
      );
      assert.deepEqual(
        events.map((e) => e.reason),
        ["ScaledToZero", "WokeUp", "ScaledToZero"],
      );
      t.diagnostic(
        `asleep after ${(idleFor / 1000).toFixed(1)} s idle; woken ${((up.seen - sent) / 1000).toFixed(1)} s after the records were sent ` +
          `(${((up.seen - Date.parse(firstLag.scaling.sampleTime)) / 1000).toFixed(1)} s after the first sample with lag ${firstLag.scaling.lag}); ${woke.scaling.reason}`,
      );
    } finally {
      watch.stop();
    }
  });
  test("a windowed pipeline sleeps too: its own watermark markers neither keep it up nor wake it", { timeout: 180_000 }, async () => {
    const name = "sleepy-windows";
    const from = `sleepy-windows-src-${suffix}`;
    await createTopic(a, from, 2, { "retention.ms": "-1" });
    await createTopic(a, `${from}-out`, 2, { "retention.ms": "-1" });
    const watch = new Observer(k.kc, name);
    await watch.start(ns);
    const withLog = withDiagnostics(op, kubectl, ns);
    try {
      applyPipeline(kubectl, ns, name, {
        kafka: { bootstrapServers: [env.bootstrap] },
        source: { topics: [from], format: "json", startFrom: "earliest", eventTime: "value.ts" },
        steps: [
          { name: "by-user", keyBy: "value.user" },
          { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
        ],
        sink: { topic: `${from}-out`, format: "json" },
        scaling: { mode: "lag", minReplicas: 0, maxReplicas: 2, scaleToZeroAfter: "5s", scaleDownStabilization: "10s" },
      });
      await waitFor(() => watch.replicas.some((r) => r.replicas > 0) && watch.currentReplicas === 0, {
        what: "the windowed workers to start, write markers, and still go to zero",
        timeoutMs: 60_000,
        process: op.proc,
      }).catch(withLog);
      const asleep = (watch.replicas.at(-1) as { seen: number }).seen;
      // Three decisions at zero with the markers the workers left behind: none wakes it.
      await waitFor(() => watch.decisions.filter((d) => Date.parse(d.scaling.sampleTime) > asleep).length >= 3, {
        what: "three decisions at zero",
        timeoutMs: 30_000,
        process: op.proc,
      }).catch(withLog);
      assert.equal(watch.currentReplicas, 0);
      assert.deepEqual([...new Set(watch.decisions.filter((d) => Date.parse(d.scaling.sampleTime) > asleep).map((d) => d.scaling.reason))], ["Steady"]);

      await produceInOneTransaction(
        env.bootstrap,
        `sleepy-windows-${ns}`,
        Array.from({ length: 100 }, (_, id) => ({ topic: from, value: Buffer.from(JSON.stringify({ user: `u-${id % 7}`, ts: Date.now() - 60_000 })) })),
      );
      await waitFor(() => (watch.currentReplicas ?? 0) > 0 && watch.decisions.some((d) => d.scaling.reason === "WakeUp"), {
        what: "source records to wake it",
        timeoutMs: 30_000,
        process: op.proc,
      }).catch(withLog);
    } finally {
      watch.stop();
    }
  });

  test("a sawtooth load, a tooth every 15 s for 75 s: one step up, no step down while the bursts go on, one step down after", {
    timeout: 300_000,
  }, async (t) => {
    const name = "sawtooth";
    const from = `sawtooth-src-${suffix}`;
    const to = `sawtooth-sink-${suffix}`;
    const windowMs = 45_000;
    const periodMs = 15_000;
    const teeth = 6;
    // Each tooth is more than one worker drains in targetCatchUp (10 s at 2,000/s), less than two do in one period.
    const perTooth = 30_000;
    await createTopic(a, from, PARTITIONS, { "retention.ms": "-1" });
    await createTopic(a, to, PARTITIONS, { "retention.ms": "-1" });
    const watch = new Observer(k.kc, name);
    await watch.start(ns);
    const withLog = withDiagnostics(op, kubectl, ns);
    try {
      applyPipeline(
        kubectl,
        ns,
        name,
        copyIds(env.bootstrap, from, to, {
          processing: { maxRecordsPerSecond: PER_WORKER },
          scaling: {
            mode: "lag",
            minReplicas: 1,
            maxReplicas: 2,
            targetCatchUp: "10s",
            lagPerReplica: PER_WORKER * 10,
            scaleDownStabilization: `${windowMs / 1000}s`,
          },
        }),
      );
      await watch.settledAtOne(op.proc).catch(withLog);
      const start = Date.now();
      for (let tooth = 0; tooth < teeth; tooth++) {
        // Each tooth at its time: a deadline-bound wait on the clock, not on the pipeline.
        await waitFor(() => Date.now() >= start + tooth * periodMs, { what: `tooth ${tooth + 1}`, timeoutMs: periodMs + 5_000, intervalMs: 100 });
        await produceInOneTransaction(
          env.bootstrap,
          `sawtooth-${ns}`,
          Array.from({ length: perTooth }, (_, i) => {
            const id = tooth * perTooth + i;
            return { topic: from, key: Buffer.from(`k-${id % 101}`), value: Buffer.from(JSON.stringify({ id })) };
          }),
        );
      }
      const lastTooth = Date.now();
      await waitFor(() => watch.currentReplicas === 1 && watch.replicas.some((r) => r.seen > lastTooth), {
        what: "the step down once the load has stopped",
        timeoutMs: windowMs + 90_000,
        process: op.proc,
      }).catch(withLog);
      const steps = watch.replicas.filter((r) => r.seen >= start);
      assert.deepEqual(
        steps.map((r) => r.replicas),
        [2, 1],
        `the replicas went ${steps.map((r) => r.replicas).join(" -> ")}: each tooth within the window holds the step down`,
      );
      assert.ok((steps[1]?.seen ?? 0) > lastTooth, "no step down while the teeth came");
      await waitForIds(env.bootstrap, to, teeth * perTooth, op).catch(withLog);
      const decisions = watch.decisions.filter((d) => Date.parse(d.scaling.sampleTime) >= start);
      t.diagnostic(
        `${teeth} teeth of ${perTooth} records every ${periodMs / 1000} s: replicas ${steps.map((r) => `${r.replicas} at +${((r.seen - start) / 1000).toFixed(1)} s`).join(", ")}; ` +
          `${decisions.length} decisions (${[...new Set(decisions.map((d) => d.scaling.reason))].join(", ")}); 2 scale events, the fewest possible`,
      );
    } finally {
      watch.stop();
    }
  });
});

describe("scaling.mode lag with its broker stopped: no scale-in on reads that fail, and scaling goes on once it is back", () => {
  const env = bedEnv();
  const kubectl = (args: string[], input?: string) => runKubectl(env.kubeconfig, args, input);
  const suffix = uniqueSuffix();
  const name = "outage";
  const source = `outage-src-${suffix}`;
  const sink = `outage-sink-${suffix}`;
  // Long enough that the drain ends well inside it: the broker goes down before a scale-in is due.
  const window = 40_000;
  let kafka: KafkaCluster;
  let k: Kube;
  let a: Admin;
  let ns: string;
  let op: OperatorProcess;
  let watch: Observer;
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    // on the pod network, where the workers reach it
    kafka = await startKafka({ dir: join(env.state.dir, `outage-${suffix}`, "kafka"), host: BED_GATEWAY });
    k = kube();
    a = admin(kafka.bootstrap);
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "outage");
    kubectl(["apply", "--server-side", "--force-conflicts", "-f", "crds"]);
    await createTopic(a, source, PARTITIONS, { "retention.ms": "-1" });
    await createTopic(a, sink, PARTITIONS, { "retention.ms": "-1" });
    op = await startOperator(ns);
    watch = new Observer(k.kc, name);
    await watch.start(ns);
  });
  after(async () => {
    await teardown(
      () => watch?.stop(),
      () => op && deletePipelines(k, ns, op.proc),
      () => op && stopProcess(op.proc.pid),
      ...cleanups,
      () => a?.close(),
      () => kafka && stopKafka(kafka),
    );
  });

  test("2 workers, the backlog drained, the broker stopped past the stabilization window: still 2; back, then down once", { timeout: 240_000 }, async (t) => {
    const withLog = withDiagnostics(op, kubectl, ns);
    applyPipeline(
      kubectl,
      ns,
      name,
      copyIds(kafka.bootstrap, source, sink, {
        processing: { maxRecordsPerSecond: PER_WORKER },
        scaling: {
          mode: "lag",
          minReplicas: 1,
          maxReplicas: 2,
          targetCatchUp: `${CATCH_UP_S}s`,
          lagPerReplica: LAG_PER_REPLICA,
          scaleDownStabilization: `${window / 1000}s`,
        },
      }),
    );
    await watch.settledAtOne(op.proc).catch(withLog);
    // A backlog more than one worker drains in targetCatchUp: up to 2.
    await produceInOneTransaction(
      kafka.bootstrap,
      `outage-${ns}`,
      Array.from({ length: 2 * LAG_PER_REPLICA - 10_000 }, (_, id) => ({
        topic: source,
        key: Buffer.from(`k-${id % 101}`),
        value: Buffer.from(JSON.stringify({ id })),
      })),
    );
    await waitFor(() => watch.currentReplicas === 2, { what: "the scale-up to 2", timeoutMs: 30_000, process: op.proc }).catch(withLog);
    await waitFor(async () => (await groupLag(a, `${ns}.${name}`, source)) === 0n, {
      what: "the backlog to drain",
      timeoutMs: 120_000,
      intervalMs: 500,
      process: op.proc,
    }).catch(withLog);

    // Down within the window after the scale-up: from now on a scale-in would be due, had the reads succeeded.
    const broker = kafka.brokers[0];
    assert.ok(broker);
    await stopProcess(kafka.pids.get(broker.nodeId) ?? 0, 15_000);
    kafka.pids.delete(broker.nodeId);
    // Down from here: a read begun during the broker's controlled shutdown may still have succeeded.
    const stoppedAt = Date.now();
    const unknown = await waitFor(() => watch.decisions.find((d) => Date.parse(d.scaling.sampleTime) > stoppedAt && (d.scaling.errors?.length ?? 0) > 0), {
      what: "status.scaling to say the reads fail",
      timeoutMs: 30_000,
      process: op.proc,
    }).catch(withLog);
    // Decisions on failing reads for longer than the stabilization window.
    await waitFor(() => watch.decisions.some((d) => Date.parse(d.scaling.sampleTime) > stoppedAt + window + 2_000), {
      what: "decisions past the stabilization window with the broker down",
      timeoutMs: window + 30_000,
      process: op.proc,
    }).catch(withLog);
    const during = watch.decisions.filter((d) => Date.parse(d.scaling.sampleTime) > stoppedAt);
    assert.ok(during.length >= 3, `decisions kept coming while the broker was down (${during.length})`);
    assert.deepEqual(
      watch.replicas.filter((r) => r.seen > stoppedAt),
      [],
      "no change of the replicas while the lag could not be read",
    );
    for (const d of during) {
      assert.equal(d.scaling.desired, 2);
      assert.ok(["UnknownLag", "UnknownGroup", "UnknownRate", "HoldRebalance"].includes(d.scaling.reason), `a decision while down: ${d.scaling.reason}`);
    }

    const restartedAt = Date.now();
    kafka.pids.set(broker.nodeId, startBroker(broker).pid);
    await waitForBroker(kafka, broker);
    // Back: the reads succeed again, and a full window of known readings later, one step down.
    await waitFor(() => watch.currentReplicas === 1, { what: "the scale-down once the broker is back", timeoutMs: 120_000, process: op.proc }).catch(withLog);
    const down = watch.replicas.at(-1) as { seen: number };
    // A scale-in waits a full window of known readings after the last unknown one.
    const lastUnknown = watch.decisions.filter((d) => (d.scaling.errors?.length ?? 0) > 0).at(-1) as { scaling: ScalingStatus };
    assert.ok(Date.parse(lastUnknown.scaling.sampleTime) >= restartedAt - 5_000, "reads failed until about the restart");
    assert.ok(
      down.seen - Date.parse(lastUnknown.scaling.sampleTime) >= window - 1_000,
      `the scale-down ${down.seen - Date.parse(lastUnknown.scaling.sampleTime)} ms after the last failed read, within the window`,
    );
    t.diagnostic(
      `reads failing in status ${((Date.parse(unknown.scaling.sampleTime) - stoppedAt) / 1000).toFixed(1)} s after the stop (${unknown.scaling.reason}: ${unknown.scaling.errors?.[0]}); ` +
        `${during.length} decisions while down, replicas held at 2; down to 1 ${((down.seen - restartedAt) / 1000).toFixed(1)} s after the restart`,
    );
  });
});
