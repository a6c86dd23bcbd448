// State volumes of removed workers, with state.retention.whenScaled Retain and an orphanTTL. A windowed
// pipeline of 2 workers is scaled to 1: the operator marks worker 1's PVC as orphaned and lists it in status.
// Scaled back within the TTL, worker 1 mounts the same PVC and restores from its local checkpoint, reading only
// what was written to the changelog while it was away. Scaled to 1 again and left past the TTL, the PVC is
// deleted; scaled back once more, worker 1 starts on a new, empty volume and reads its tasks' whole changelog.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ORPHANED_AT_ANNOTATION } from "../../src/state-volumes.ts";
import { tail, waitFor } from "../env/proc.ts";
import { uniqueSuffix } from "../support/bed.ts";
import { createTopic, groupLag, produce, produceSteadily } from "../support/kafka.ts";
import { eventReasons, statusCode } from "../support/kube.ts";
import { applyPipeline } from "../support/scaling.ts";
import { operatorSuite } from "../support/suite.ts";

const NAME = "warm";
const TTL_S = 30;
const KEYS = 400;

describe("state volumes: orphaned on scale-down, reused warm within orphanTTL, deleted after it", () => {
  const suffix = uniqueSuffix();
  const source = `pvc-src-${suffix}`;
  const suite = operatorSuite("volumes", async ({ a }) => {
    await createTopic(a, source, 4, { "retention.ms": "-1" });
    await createTopic(a, `${source}-out`, 4, { "retention.ms": "-1" });
  });
  const { env, kubectl } = suite;
  const group = () => `${suite.ns}.${NAME}`;
  const repartition = () => `${suite.ns}_${NAME}_by-key-repartition`;

  const read = (name = NAME) => suite.read(name);
  const pvc = (ordinal: number) => `state-${NAME}-${ordinal}`;
  const readPvc = async (ordinal: number) =>
    suite.k.core.readNamespacedPersistentVolumeClaim({ namespace: suite.ns, name: pvc(ordinal) }).catch((err: unknown) => {
      if (statusCode(err) === 404) return undefined;
      throw err;
    });
  const withLog = (err: Error): never => {
    throw new Error(
      `${err.message}\noperator log:\n${tail(suite.op.proc.log, 30)}\npods and volumes:\n${kubectl(["get", "pods,pvc", "-n", suite.ns, "-o", "wide"])}`,
    );
  };
  const scaleTo = (n: number) => kubectl(["scale", "streampipeline", NAME, "-n", suite.ns, `--replicas=${n}`]);
  /** Records with event times spread over many windows, so that the changelog has a record per key and window. */
  let sent = 0;
  const send = async (n: number) => {
    const T0 = Date.parse("2026-06-01T00:00:00Z");
    await produce(
      env.bootstrap,
      source,
      Array.from({ length: n }, (_, i) => {
        const id = sent + i;
        return { key: `k${id % KEYS}`, value: JSON.stringify({ k: `k${id % KEYS}`, ts: T0 + id * 100 }) };
      }),
    );
    sent += n;
  };
  const drained = async (what: string) => {
    for (const topic of [source, repartition()])
      await waitFor(async () => (await groupLag(suite.a, group(), topic)) <= 40n, {
        what: `${what}: ${topic} read`,
        timeoutMs: 90_000,
        intervalMs: 500,
        process: suite.op.proc,
      }).catch(withLog);
  };
  /** Worker 1's restored changelog records, from its metrics, once it is ready and has restored. */
  const restoredByWorker1 = async (): Promise<number> =>
    waitFor(
      async () => {
        const pod = await suite.k.core.readNamespacedPod({ namespace: suite.ns, name: `${NAME}-1` }).catch(() => undefined);
        const ready = pod?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        if (!ready || !pod?.status?.podIP) return false;
        const text = await (await fetch(`http://${pod.status.podIP}:8080/metrics`)).text();
        const lines = text.split("\n").filter((l) => l.startsWith("conveyor_runtime_restored_records_total{"));
        return lines.length > 0 ? lines.reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0) : false;
      },
      { what: "worker 1 ready, with its restored records counted", timeoutMs: 90_000, intervalMs: 500, process: suite.op.proc },
    ).catch(withLog);

  test("marked when its worker goes, reused warm when it comes back, deleted after the TTL; a cold start reads far more", { timeout: 420_000 }, async (t) => {
    const { k, ns, op } = suite;
    applyPipeline(kubectl, ns, NAME, {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], format: "json", startFrom: "earliest", eventTime: "value.ts" },
      steps: [
        { name: "by-key", keyBy: "value.k" },
        { name: "per-10s", window: { tumbling: "10s" }, aggregate: { n: { count: {} } } },
      ],
      sink: { topic: `${source}-out`, format: "json" },
      replicas: 2,
      state: { retention: { whenScaled: "Retain", orphanTTL: `${TTL_S}s` } },
    });
    await send(20_000);
    await drained("the first records");
    const firstRestore = await restoredByWorker1();

    // Down to 1: worker 1's volume stays, marked, and listed with its expiry.
    scaleTo(1);
    const marked = await waitFor(
      async () => {
        const gone = (await k.core.listNamespacedPod({ namespace: ns, labelSelector: `conveyor.dev/pipeline=${NAME}` })).items.length === 1;
        const at = (await readPvc(1))?.metadata?.annotations?.[ORPHANED_AT_ANNOTATION];
        const listed = (await read()).status?.orphanedVolumes?.find((v) => v.name === pvc(1));
        return gone && at && listed ? { at, listed } : false;
      },
      { what: `${pvc(1)} marked as orphaned and in status.orphanedVolumes`, timeoutMs: 60_000, intervalMs: 500, process: op.proc },
    ).catch(withLog);
    assert.equal(Date.parse(marked.listed.expiresAt) - Date.parse(marked.listed.orphanedAt), TTL_S * 1000);
    assert.equal((await readPvc(0))?.metadata?.annotations?.[ORPHANED_AT_ANNOTATION], undefined, "worker 0's volume is not orphaned");

    // Worker 0 takes all the tasks and writes on; worker 1 comes back within the TTL to the same volume.
    await send(2_000);
    await drained("the records while worker 1 was away");
    const orphanedFor = Date.now() - Date.parse(marked.at);
    assert.ok(orphanedFor < TTL_S * 1000, `back within the TTL (${orphanedFor} ms)`);
    const warmUid = (await readPvc(1))?.metadata?.uid;
    scaleTo(2);
    const warm = await restoredByWorker1();
    assert.equal((await readPvc(1))?.metadata?.uid, warmUid, "the same PVC");
    await waitFor(async () => (await readPvc(1))?.metadata?.annotations?.[ORPHANED_AT_ANNOTATION] === undefined && !(await read()).status?.orphanedVolumes, {
      what: "the mark gone",
      timeoutMs: 30_000,
      intervalMs: 500,
    }).catch(withLog);

    // Down again, and left: the volume goes once the TTL is up, and a new worker 1 starts cold.
    await drained("before the second scale-down");
    scaleTo(1);
    const downAt = Date.now();
    await waitFor(async () => (await readPvc(1)) === undefined, {
      what: `${pvc(1)} deleted after the ${TTL_S} s TTL`,
      timeoutMs: (TTL_S + 60) * 1000,
      intervalMs: 500,
      process: op.proc,
    }).catch(withLog);
    const deletedAfter = Date.now() - downAt;
    assert.ok(deletedAfter >= TTL_S * 1000, `not before the TTL (${deletedAfter} ms)`);
    // The operator deletes the volume, then writes the status in the same reconcile: wait for that write.
    await waitFor(async () => (await read()).status?.orphanedVolumes === undefined, {
      what: `${pvc(1)} gone from status.orphanedVolumes`,
      timeoutMs: 30_000,
      intervalMs: 250,
      process: op.proc,
    }).catch(withLog);
    scaleTo(2);
    const cold = await restoredByWorker1();
    assert.notEqual((await readPvc(1))?.metadata?.uid, warmUid, "a new PVC");

    assert.ok(warm * 4 <= cold, `a warm volume reads far fewer changelog records: warm ${warm}, cold ${cold}`);
    const reasons = await eventReasons(k, ns, NAME);
    for (const r of ["StateVolumeOrphaned", "StateVolumeReused", "StateVolumeDeleted"]) assert.ok(reasons.includes(r), `an Event ${r}: ${reasons.join(", ")}`);

    t.diagnostic(
      `changelog records restored by worker 1: first start ${firstRestore}, warm after ${(orphanedFor / 1000).toFixed(1)} s away ${warm}, cold ${cold}`,
    );
    t.diagnostic(`orphaned volume deleted ${(deletedAfter / 1000).toFixed(1)} s after the scale-down (orphanTTL ${TTL_S} s)`);
  });

  test("a larger state.storage.size: requests raised in place, the StatefulSet replaced without restarting its pods, the condition says what is pending", {
    timeout: 180_000,
  }, async (t) => {
    const { k, ns, op } = suite;
    const name = "sized";
    const sts = async () => (await k.apps.listNamespacedStatefulSet({ namespace: ns, fieldSelector: `metadata.name=${name}` })).items[0];
    const claim = (ordinal: number) =>
      k.core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: `state-${name}-${ordinal}` }).catch((err: unknown) => {
        if (statusCode(err) === 404) return undefined;
        throw err;
      });
    applyPipeline(kubectl, ns, name, {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], format: "json" },
      steps: [{ name: "shape", map: "{'k': value.k}" }],
      sink: { topic: `${source}-sized`, format: "json" },
      replicas: 1,
      state: { storage: { size: "1Gi" } },
    });
    const before = await waitFor(
      async () => {
        const pod = await k.core.readNamespacedPod({ namespace: ns, name: `${name}-0` }).catch(() => undefined);
        const ready = pod?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        const s = await sts();
        return ready && s ? { pod: pod?.metadata?.uid, sts: s.metadata?.uid } : false;
      },
      { what: "one ready worker", timeoutMs: 60_000, process: op.proc },
    ).catch(withLog);

    const changedAt = Date.now();
    kubectl(["patch", "streampipeline", name, "-n", ns, "--type", "merge", "-p", JSON.stringify({ spec: { state: { storage: { size: "2Gi" } } } })]);
    const replaced = await waitFor(
      async () => {
        const s = await sts();
        const size = s?.spec?.volumeClaimTemplates?.[0]?.spec?.resources?.requests?.storage;
        return s && s.metadata?.uid !== before.sts && size === "2Gi" ? s : false;
      },
      { what: "a new StatefulSet with 2Gi volumes", timeoutMs: 60_000, intervalMs: 250, process: op.proc },
    ).catch(withLog);
    const replacedAfter = Date.now() - changedAt;
    assert.equal((await claim(0))?.spec?.resources?.requests?.storage, "2Gi", "the running worker's volume was raised in place");
    const condition = await waitFor(async () => (await read(name)).status?.conditions?.find((c) => c.type === "StateVolumesResizing"), {
      what: "the condition StateVolumesResizing",
      timeoutMs: 30_000,
      intervalMs: 500,
    }).catch(withLog);
    const capacity = (await claim(0))?.status?.capacity?.storage;
    if (capacity === "2Gi") assert.deepEqual([condition.status, condition.reason], ["False", "Resized"]);
    else {
      // The bed's host-path provisioner cannot expand a volume: the resize waits on it, and the condition says so.
      assert.deepEqual([condition.status, condition.reason], ["True", "ResizePending"], condition.message);
      assert.match(condition.message, new RegExp(`state-${name}-0 \\(requests 2Gi, has ${capacity}\\)`));
    }
    // The worker was adopted, not restarted.
    await waitFor(async () => (await read(name)).status?.conditions?.find((c) => c.type === "Ready")?.status === "True", {
      what: "Ready again",
      timeoutMs: 30_000,
      intervalMs: 500,
    }).catch(withLog);
    const pod = await k.core.readNamespacedPod({ namespace: ns, name: `${name}-0` });
    assert.equal(pod.metadata?.uid, before.pod, "the same pod");
    assert.equal(pod.metadata?.ownerReferences?.[0]?.uid, replaced.metadata?.uid, "owned by the new StatefulSet");
    assert.ok((await eventReasons(k, ns, name)).includes("StateVolumesResized"));

    // A new worker gets the new size.
    kubectl(["scale", "streampipeline", name, "-n", ns, "--replicas=2"]);
    const second = await waitFor(async () => (await claim(1))?.spec?.resources?.requests?.storage, {
      what: `state-${name}-1`,
      timeoutMs: 60_000,
      process: op.proc,
    }).catch(withLog);
    assert.equal(second, "2Gi");
    t.diagnostic(
      `StatefulSet replaced ${(replacedAfter / 1000).toFixed(1)} s after the edit; state-${name}-0 has ${capacity}; ${condition.reason}: ${condition.message}`,
    );
  });

  test("state growing toward a small volume: StateCapacityAtRisk says when it fills, and a Warning says what to change", { timeout: 180_000 }, async (t) => {
    const { k, a, ns, op } = suite;
    const name = "filling";
    const from = `${source}-filling`;
    await createTopic(a, from, 1, { "retention.ms": "-1" });
    applyPipeline(kubectl, ns, name, {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [from], format: "json", eventTime: "value.ts" },
      steps: [
        { name: "by-key", keyBy: "value.k" },
        { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
      ],
      sink: { topic: `${from}-out`, format: "json" },
      replicas: 1,
      state: { storage: { size: "4Mi" } },
    });
    await waitFor(async () => (await read(name)).status?.readyReplicas === 1, { what: "one ready worker", timeoutMs: 60_000, process: op.proc }).catch(withLog);
    // A new key in every record: each is a window of its own in the store, which only grows.
    const T0 = Date.parse("2026-06-01T00:00:00Z");
    const start = Date.now();
    const load = produceSteadily(env.bootstrap, from, {
      rate: 500,
      durationMs: 60_000,
      value: (id) => Buffer.from(JSON.stringify({ k: `key-${id}`, ts: T0 + id })),
    });
    const atRisk = await waitFor(
      async () => {
        const c = (await read(name)).status?.conditions?.find((x) => x.type === "StateCapacityAtRisk");
        return c?.status === "True" ? c : false;
      },
      { what: "StateCapacityAtRisk True", timeoutMs: 120_000, intervalMs: 1_000, process: op.proc },
    ).catch(withLog);
    const seenAfter = Date.now() - start;
    await load;
    assert.equal(atRisk.reason, "VolumeFillsSoon");
    assert.match(atRisk.message, new RegExp(`^state-${name}-0 holds [0-9.]+ MiB of 4\\.00 MiB`));
    assert.match(atRisk.message, /shorten the window or state\.ttl, or raise state\.storage\.size/);
    const managers = ((await read(name)).metadata?.managedFields ?? []).filter((f) =>
      JSON.stringify(f.fieldsV1 ?? {}).includes('"k:{\\"type\\":\\"StateCapacityAtRisk\\"}"'),
    );
    assert.deepEqual(
      managers.map((f) => f.manager),
      ["conveyor-operator-capacity"],
      "only the forecast owns the condition: a reconcile never writes it back",
    );
    const warnings = (await k.core.listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.name=${name}` })).items.filter(
      (e) => e.reason === "StateCapacityAtRisk" && e.type === "Warning",
    );
    assert.equal(warnings.length, 1);
    t.diagnostic(`StateCapacityAtRisk ${(seenAfter / 1000).toFixed(1)} s after the load began: ${atRisk.message}`);
  });
});
