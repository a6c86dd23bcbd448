// Faults under a running operator: kube-apiserver restarts (the operator recovers its watches and
// converges), and the operator is killed with SIGKILL mid-reconcile (a new one converges, with no duplicate
// or orphaned children).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import type { V1ConfigMap, V1StatefulSet } from "@kubernetes/client-node";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { restartApiserver } from "../env/bed.ts";
import { stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic } from "../support/kafka.ts";
import { type Kube, kube, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";
import { deletePipelines, type OperatorProcess, startOperator } from "../support/operator.ts";
import { teardown } from "../support/suite.ts";

describe("faults under a running operator", () => {
  const env = bedEnv();
  const kubectl = (args: string[], input?: string) => runKubectl(env.kubeconfig, args, input);
  let k: Kube;
  let ns: string;
  let op: OperatorProcess | undefined;
  const cleanups: (() => Promise<void>)[] = [];

  const source = `faults-in-${uniqueSuffix()}`;

  before(async () => {
    k = kube();
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "faults");
    kubectl(["apply", "--server-side", "--force-conflicts", "-f", "crds"]);
    // The source the pipelines name: the operator checks it exists before it runs them.
    const a = admin(env.bootstrap);
    try {
      await createTopic(a, source, 1);
    } finally {
      await a.close();
    }
  });
  after(async () => {
    // every step runs even when a finalizer does not finish (the failure is still reported): a leaked operator
    // would reconcile the next suites' pipelines
    await teardown(
      () => op && deletePipelines(k, ns, op.proc),
      () => op && stopProcess(op.proc.pid),
      ...cleanups,
    );
  });

  const manifest = (name: string, replicas = 0) =>
    JSON.stringify({
      apiVersion: API_VERSION,
      kind: KIND,
      metadata: { name, namespace: ns },
      spec: { kafka: { bootstrapServers: [env.bootstrap] }, source: { topics: [source] }, sink: { topic: "faults-out" }, replicas },
    });
  const ready = async (name: string) => {
    const p = (await k.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name })) as StreamPipeline;
    return p.status?.observedGeneration === p.metadata?.generation && p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
  };

  test("after a kube-apiserver restart the operator recovers its watches and converges", async () => {
    op = await startOperator(ns);
    kubectl(["apply", "-f", "-"], manifest("before"));
    await waitFor(() => ready("before"), { what: "the first pipeline to be Ready", timeoutMs: 60_000, process: op.proc });

    // Down for longer than the lease's renew deadline (6 s): the operator steps down, then leads again.
    const { downForMs } = await restartApiserver(env.state.dir, 7_000);
    process.stdout.write(`# kube-apiserver was down and back to ready in ${downForMs} ms\n`);

    // Only a working watch sees these: a new pipeline and an edit of the old one.
    const t0 = Date.now();
    kubectl(["apply", "-f", "-"], manifest("after"));
    process.stdout.write(`# kubectl apply right after the restart took ${Date.now() - t0} ms\n`);
    kubectl(["patch", "streampipeline", "before", "-n", ns, "--type=merge", "-p", JSON.stringify({ spec: { replicas: 1, sink: { topic: "faults-out-2" } } })]);
    await waitFor(() => ready("after"), { what: "a pipeline created after the restart to be Ready", timeoutMs: 90_000, process: op.proc });
    process.stdout.write(`# the new pipeline was Ready ${Date.now() - t0} ms after the apply\n`);
    await waitFor(
      async () => {
        const cm = await k.core.readNamespacedConfigMap({ name: "before-config", namespace: ns });
        return (cm.data?.["pipeline.json"] ?? "").includes("faults-out-2");
      },
      { what: "an edit made after the restart to reach the children", timeoutMs: 90_000, process: op.proc },
    );
    const log = readFileSync(op.proc.log, "utf8");
    assert.match(log, /stepping down: leadership lost/, "the outage should have outlasted the renew deadline");
    assert.equal((log.match(/"became leader"/g) ?? []).length, 2, "it led, stepped down, and led again");
  });

  test("kill -9 of the operator mid-reconcile: a new one converges, with no duplicate or orphaned children", async () => {
    assert.ok(op);
    const names = Array.from({ length: 6 }, (_, i) => `burst-${i}`);
    for (const n of names) kubectl(["apply", "-f", "-"], manifest(n));
    // Kill it while it works through the burst.
    await waitFor(
      async () => {
        const list = await k.apps.listNamespacedStatefulSet({ namespace: ns });
        return list.items.some((s) => s.metadata?.name?.startsWith("burst-"));
      },
      { what: "the operator to start on the burst", timeoutMs: 30_000, process: op.proc },
    );
    process.kill(op.proc.pid, "SIGKILL");
    await stopProcess(op.proc.pid);
    op = await startOperator(ns);
    for (const n of names) await waitFor(() => ready(n), { what: `${n} to be Ready after the restart`, timeoutMs: 90_000, process: op.proc });

    const pipelines = (
      (await k.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL })) as { items: StreamPipeline[] }
    ).items;
    const uids = new Map(pipelines.map((p) => [p.metadata?.uid, p.metadata?.name]));
    const sts: V1StatefulSet[] = (await k.apps.listNamespacedStatefulSet({ namespace: ns })).items;
    const cms: V1ConfigMap[] = (await k.core.listNamespacedConfigMap({ namespace: ns, labelSelector: "app.kubernetes.io/managed-by=conveyor-operator" })).items;
    for (const [kind, children] of [
      ["StatefulSet", sts],
      ["ConfigMap", cms],
    ] as const) {
      const owners = children.map((c) => c.metadata?.ownerReferences?.find((o) => o.controller)?.uid);
      assert.ok(
        owners.every((u) => uids.has(u)),
        `an orphaned ${kind}`,
      );
      assert.equal(new Set(owners).size, owners.length, `two ${kind}s for one pipeline`);
      assert.equal(children.length, pipelines.length, `one ${kind} per pipeline`);
    }
  });
});
