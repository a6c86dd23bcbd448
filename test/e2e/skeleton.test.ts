// The walking skeleton end to end: `kubectl apply` a StreamPipeline, the operator (a local process, as
// `npm run operator` runs it) makes a StatefulSet of runtime pods on the shim node, and every record produced
// to the source reaches the sink exactly once, with the group at 2 members and lag 0.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { type Started, startProcess, stopProcess, tail, waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic, groupLag, keyedRecords, produce, readToEnd } from "../support/kafka.ts";
import { type Kube, kube, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";

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
    operator = startProcess({
      name: "operator",
      cmd: process.execPath,
      args: [join(repoRoot, "src/main.ts")],
      log: join(env.state.dir, `operator-skeleton-${suffix}.log`),
      cwd: repoRoot,
      env: { ...process.env, KUBECONFIG: env.kubeconfig },
    });
  });

  after(async () => {
    if (operator) await stopProcess(operator.pid);
    for (const c of cleanups) await c();
    await a?.close();
  });

  test("kubectl apply of a 2-replica pipeline brings up its workers", async () => {
    const manifest = {
      apiVersion: API_VERSION,
      kind: KIND,
      metadata: { name: "copy", namespace: ns },
      spec: { kafka: { bootstrapServers: [env.bootstrap] }, source: { topics: [source] }, sink: { topic: sink }, replicas: 2 },
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
    for (const child of [sts, cm]) {
      const owner = child.metadata?.ownerReferences?.[0];
      assert.equal(owner?.kind, KIND);
      assert.equal(owner?.uid, p.metadata?.uid);
      assert.equal(owner?.controller, true);
    }
    assert.ok(
      sts.metadata?.managedFields?.some((f) => f.manager === "conveyor-operator" && f.operation === "Apply"),
      "children are server-side applied",
    );
    const config = JSON.parse(cm.data?.["pipeline.json"] ?? "{}") as { sink?: { topic?: string } };
    assert.equal(config.sink?.topic, sink);

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
});
