// The walking skeleton end to end: `kubectl apply` a StreamPipeline, the operator (a local process, as
// `npm run operator` runs it) makes a StatefulSet of runtime pods on the shim node, and every record produced
// to the source reaches the sink exactly once, with the group at 2 members and lag 0.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { defaultOperatorConfig } from "../../src/children.ts";
import { makeContext } from "../../src/controller.ts";
import { platformaticKafkaAdmin } from "../../src/kafka-admin.ts";
import { jsonLogger } from "../../src/log.ts";
import { reconcile } from "../../src/reconcile.ts";
import { freePort, type Started, startProcess, stopProcess, tail, waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic, groupLag, keyedRecords, produce, readToEnd } from "../support/kafka.ts";
import { eventReasons, type Kube, kube, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";
import { deletePipelines, startOperator } from "../support/operator.ts";
import { teardown } from "../support/suite.ts";

const kubectl = (args: string[], input?: string) => runKubectl(bedEnv().kubeconfig, args, input);

describe("walking skeleton: a StreamPipeline copies its source to its sink", () => {
  const env = bedEnv();
  let k: Kube;
  let a: Admin;
  let ns: string;
  let operator: Started;
  const cleanups: (() => Promise<void>)[] = [];
  const suffix = uniqueSuffix();
  const source = `skeleton-src-${suffix}`;
  const sink = `skeleton-sink-${suffix}`;

  const readPipeline = async () =>
    (await k.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name: "copy" })) as StreamPipeline;

  before(async () => {
    k = kube();
    a = admin(env.bootstrap);
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "skeleton");
    kubectl(["apply", "--server-side", "-f", join(repoRoot, "crds")]);
    kubectl(["wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);
    await createTopic(a, source, 3);
    await createTopic(a, sink, 3);
    operator = (await startOperator(ns)).proc;
  });

  after(async () => {
    // every step runs even when a finalizer does not finish (the failure is still reported): a leaked operator
    // would reconcile the next suites' pipelines, and an open client keeps this file's process alive
    await teardown(
      () => operator && deletePipelines(k, ns, operator),
      () => operator && stopProcess(operator.pid),
      ...cleanups,
      () => a?.close(),
    );
  });

  test("kubectl apply of a 2-replica pipeline brings up its workers", async () => {
    const manifest = {
      apiVersion: API_VERSION,
      kind: KIND,
      metadata: { name: "copy", namespace: ns },
      spec: {
        kafka: { bootstrapServers: [env.bootstrap] },
        // The records are opaque text, copied as they are.
        source: { topics: [source], format: "string" },
        sink: { topic: sink, format: "string" },
        replicas: 2,
      },
    };
    kubectl(["apply", "-f", "-"], JSON.stringify(manifest));
    const p = await waitFor(
      async () => {
        const sp = await readPipeline();
        return sp.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ? sp : false;
      },
      { what: "the pipeline to be Ready", timeoutMs: 90_000, process: operator },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\noperator log:\n${tail(operator.log)}\npods:\n${kubectl(["get", "pods", "-n", ns, "-o", "wide"])}`);
    });
    assert.equal(p.status?.consumerGroup, `${ns}.copy`);
    assert.equal(p.status?.replicas, 2);
    assert.equal(p.status?.readyReplicas, 2);

    const sts = await k.apps.readNamespacedStatefulSet({ name: "copy", namespace: ns });
    const cm = await k.core.readNamespacedConfigMap({ name: "copy-config", namespace: ns });
    const svc = await k.core.readNamespacedService({ name: "copy", namespace: ns });
    const pdb = await k.policy.readNamespacedPodDisruptionBudget({ name: "copy", namespace: ns });
    assert.equal(svc.spec?.clusterIP, "None", "the StatefulSet's governing Service is headless");
    assert.equal(sts.spec?.serviceName, "copy");
    assert.equal(pdb.spec?.maxUnavailable, 1);
    assert.deepEqual(pdb.spec?.selector?.matchLabels, sts.spec?.selector?.matchLabels, "the budget covers the workers");
    await waitFor(async () => (await k.policy.readNamespacedPodDisruptionBudget({ name: "copy", namespace: ns })).status?.expectedPods === 2, {
      what: "the disruption controller to count both workers under the budget",
      timeoutMs: 30_000,
    });
    for (const child of [sts, cm, svc, pdb]) {
      const owner = child.metadata?.ownerReferences?.[0];
      assert.equal(owner?.kind, KIND);
      assert.equal(owner?.uid, p.metadata?.uid);
      assert.equal(owner?.controller, true);
    }
    assert.ok(
      sts.metadata?.managedFields?.some((f) => f.manager === "conveyor-operator" && f.operation === "Apply"),
      "children are server-side applied",
    );
    const config = JSON.parse(cm.data?.["pipeline.json"] ?? "{}") as { topology?: { sink?: { topic?: string }; applicationId?: string } };
    assert.equal(config.topology?.sink?.topic, sink);
    assert.equal(config.topology?.applicationId, `${ns}.copy`);

    await waitFor(
      async () => {
        const g = (await a.describeGroups({ groups: [`${ns}.copy`] })).get(`${ns}.copy`);
        return (g?.state === "Stable" || g?.state === "STABLE") && g.members.size === 2;
      },
      { what: "the consumer group to be stable with 2 members", timeoutMs: 60_000 },
    );
  });

  test("10,000 records reach the sink, none twice, and the group's lag is 0", async () => {
    const records = keyedRecords(10_000, suffix);
    await produce(env.bootstrap, source, records);
    await waitFor(async () => (await groupLag(a, `${ns}.copy`, source)) === 0n, { what: "the group's lag to reach 0", timeoutMs: 90_000 });
    const out = await readToEnd(env.bootstrap, sink);
    const values = out.map((m) => m.value.toString());
    assert.equal(values.length, 10_000, "the sink holds exactly as many records as the source");
    assert.equal(new Set(values).size, 10_000, "a record reached the sink twice");
    assert.deepEqual(new Set(values), new Set(records.map((r) => r.value)));
    const g = (await a.describeGroups({ groups: [`${ns}.copy`] })).get(`${ns}.copy`);
    assert.equal(g?.members.size, 2);
  });

  test("reconciling twice in a row changes nothing: every resourceVersion stays", async () => {
    const versions = async () => ({
      pipeline: (await readPipeline()).metadata?.resourceVersion,
      sts: (await k.apps.readNamespacedStatefulSet({ name: "copy", namespace: ns })).metadata?.resourceVersion,
      cm: (await k.core.readNamespacedConfigMap({ name: "copy-config", namespace: ns })).metadata?.resourceVersion,
      svc: (await k.core.readNamespacedService({ name: "copy", namespace: ns })).metadata?.resourceVersion,
      pdb: (await k.policy.readNamespacedPodDisruptionBudget({ name: "copy", namespace: ns })).metadata?.resourceVersion,
    });
    const kafka = platformaticKafkaAdmin();
    try {
      const ctx = makeContext(
        k.kc,
        defaultOperatorConfig,
        jsonLogger({ test: "idempotence" }, () => undefined),
        kafka,
      );
      await reconcile(await readPipeline(), ctx);
      const before = await versions();
      await reconcile(await readPipeline(), ctx);
      await reconcile(await readPipeline(), ctx);
      assert.deepEqual(await versions(), before);
    } finally {
      await kafka.close();
    }
  });

  test("the conditions follow observedGeneration through an edit", async () => {
    const before = await readPipeline();
    kubectl(["patch", "streampipeline", "copy", "-n", ns, "--type=merge", "-p", JSON.stringify({ spec: { scaling: { lagPerReplica: 5000 } } })]);
    const after = await waitFor(
      async () => {
        const p = await readPipeline();
        const gen = p.metadata?.generation ?? 0;
        return gen > (before.metadata?.generation ?? 0) &&
          p.status?.observedGeneration === gen &&
          p.status.conditions?.every((c) => c.observedGeneration === gen)
          ? p
          : false;
      },
      { what: "status and every condition to observe the new generation", timeoutMs: 30_000, process: operator },
    );
    assert.deepEqual(after.status?.conditions?.map((c) => c.type).sort(), ["Degraded", "Progressing", "Ready"]);
    assert.equal(after.status?.conditions?.find((c) => c.type === "Ready")?.status, "True");
  });

  test("kubectl scale goes through the scale subresource to the StatefulSet", async () => {
    kubectl(["scale", "streampipeline", "copy", "-n", ns, "--replicas=1"]);
    await waitFor(
      async () => {
        const sts = await k.apps.readNamespacedStatefulSet({ name: "copy", namespace: ns });
        const sp = await readPipeline();
        return sts.spec?.replicas === 1 && sp.status?.replicas === 1 && sp.status.conditions?.some((c) => c.type === "Ready" && c.status === "True");
      },
      { what: "the pipeline to settle at 1 worker", timeoutMs: 60_000, process: operator },
    );
    const scale = JSON.parse(kubectl(["get", "--raw", `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}/copy/scale`])) as {
      spec: { replicas: number };
      status: { replicas: number; selector: string };
    };
    assert.equal(scale.spec.replicas, 1);
    assert.equal(scale.status.replicas, 1);
    assert.equal(scale.status.selector, "app.kubernetes.io/name=conveyor-runtime,conveyor.dev/pipeline=copy");
  });

  test("a pipeline whose expression does not compile says so in its status, with the step and the column", async () => {
    const manifest = {
      apiVersion: API_VERSION,
      kind: KIND,
      metadata: { name: "broken", namespace: ns },
      spec: {
        kafka: { bootstrapServers: [env.bootstrap] },
        source: { topics: [source] },
        steps: [{ name: "big", filter: "value.amount >" }],
        sink: { topic: `${sink}-broken` },
      },
    };
    kubectl(["apply", "-f", "-"], JSON.stringify(manifest));
    const p = await waitFor(
      async () => {
        const sp = (await k.custom.getNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace: ns,
          plural: PLURAL,
          name: "broken",
        })) as StreamPipeline;
        return sp.status?.conditions?.some((c) => c.type === "Degraded" && c.status === "True") ? sp : false;
      },
      { what: "the broken pipeline to be Degraded", timeoutMs: 30_000, process: operator },
    );
    const degraded = p.status?.conditions?.find((c) => c.type === "Degraded");
    assert.equal(degraded?.reason, "InvalidTopology");
    assert.match(degraded?.message ?? "", /spec\.steps\[0\]\.filter \(step "big"\) at line 1, column 15: Unexpected token: EOF/);
    assert.equal(degraded?.observedGeneration, p.metadata?.generation);
    assert.equal(p.status?.conditions?.find((c) => c.type === "Ready")?.status, "False");
    const sts = await k.apps.listNamespacedStatefulSet({ namespace: ns });
    assert.ok(!sts.items.some((s) => s.metadata?.name === "broken"), "no workers are made for a topology that does not compile");
    await waitFor(async () => (await eventReasons(k, ns, "broken")).includes("InvalidTopology"), {
      what: "a Warning event InvalidTopology",
      timeoutMs: 10_000,
    });
  });
});
