// The operator at rest writes nothing: a reconcile of a pipeline whose children and status are as wanted makes no
// API write (issue 21), and what someone else changes or deletes is still put back, because the informers watch
// every child. N is sized to fit CI; `npm run bench:operator` measures the same at 1,000 pipelines.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { V1ConfigMap, V1Service } from "@kubernetes/client-node";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { APPLIED_HASH_ANNOTATION } from "../../src/quiet-apply.ts";
import { type Started, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic } from "../support/kafka.ts";
import { type Kube, kube, testNamespace } from "../support/kube.ts";
import { kubectl } from "../support/kubectl.ts";
import { deletePipelines, type OperatorProcess, type OperatorRequests, operatorRequests, startOperator, writesBetween } from "../support/operator.ts";
import { teardown } from "../support/suite.ts";

const N = 12;

describe("an operator with nothing to change writes nothing", () => {
  const env = bedEnv();
  let k: Kube;
  let ns: string;
  let op: OperatorProcess;
  let proc: Started;
  const cleanups: (() => Promise<void>)[] = [];
  const suffix = uniqueSuffix();
  const source = `quiet-src-${suffix}`;
  const names = Array.from({ length: N }, (_, i) => `p-${i}`);

  const list = async () =>
    ((await k.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: ns })) as { items: StreamPipeline[] }).items;

  /** Waits until the reconciles have stood still for 3 s, and returns the reading then. */
  async function quiet(what: string): Promise<OperatorRequests> {
    let last = await operatorRequests(op.port);
    let since = Date.now();
    return waitFor(
      async () => {
        const now = await operatorRequests(op.port);
        if (now.reconciles !== last.reconciles) since = Date.now();
        last = now;
        return Date.now() - since >= 3_000 ? now : false;
      },
      { what, timeoutMs: 60_000, intervalMs: 500, process: proc },
    );
  }

  before(async () => {
    k = kube();
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "quiet");
    const a = admin(env.bootstrap);
    try {
      await createTopic(a, source, 2);
    } finally {
      await a.close();
    }
    op = await startOperator(ns, undefined, { CONVEYOR_WATCH_NAMESPACES: ns });
    proc = op.proc;
    for (const name of names) {
      const p = {
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name, namespace: ns },
        spec: {
          kafka: { bootstrapServers: [env.bootstrap] },
          source: { topics: [source] },
          steps: [{ name: "keep", filter: "value.n > 0" }],
          sink: { topic: `${source}-out` },
          suspend: true,
        },
      };
      await k.custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: ns, body: p });
    }
    await waitFor(async () => (await list()).filter((p) => p.status?.observedGeneration === p.metadata?.generation).length === N, {
      what: `${N} pipelines to carry their generation in status`,
      timeoutMs: 60_000,
      process: proc,
    });
  });

  after(async () => {
    await teardown(
      () => proc && deletePipelines(k, ns, proc),
      () => proc && stopProcess(proc.pid),
      ...cleanups,
    );
  });

  test(`a second reconcile of each of ${N} unchanged pipelines makes no write`, async () => {
    const before = await quiet("the first reconciles to end");
    // A metadata edit (no new generation) brings every pipeline back through the queue, unchanged.
    for (const name of names)
      await k.custom.patchNamespacedCustomObject(
        {
          group: GROUP,
          version: VERSION,
          plural: PLURAL,
          namespace: ns,
          name,
          body: [{ op: "add", path: "/metadata/annotations", value: { "example.com/touched": suffix } }],
        },
        undefined,
      );
    const afterTouch = await waitFor(
      async () => {
        const now = await operatorRequests(op.port);
        return now.reconciles - before.reconciles >= N ? now : false;
      },
      { what: `${N} more reconciles`, timeoutMs: 60_000, process: proc },
    );
    const settled = await quiet("the reconciles of the touched pipelines to end");
    assert.ok(afterTouch.reconciles - before.reconciles >= N);
    assert.deepEqual(Object.fromEntries(writesBetween(before, settled)), {}, "the reconciles of unchanged pipelines wrote");
    // each of them looked at its four children and its status, and left them
    assert.ok(settled.skipped - before.skipped >= N * 5, `skipped ${settled.skipped - before.skipped} writes, fewer than ${N * 5}`);
  });

  test("a child someone deletes or edits is put back, and only that child is written", async () => {
    const before = await quiet("the operator to be at rest");
    await k.core.deleteNamespacedConfigMap({ name: "p-0-config", namespace: ns });
    kubectl(env.kubeconfig, ["-n", ns, "patch", "service/p-1", "--type=merge", "-p", '{"spec":{"publishNotReadyAddresses":false}}']);
    const cm = await waitFor(
      async () => {
        try {
          return await k.core.readNamespacedConfigMap({ name: "p-0-config", namespace: ns });
        } catch {
          return false;
        }
      },
      { what: "the deleted ConfigMap to come back", timeoutMs: 30_000, process: proc },
    );
    assert.ok((cm as V1ConfigMap).metadata?.annotations?.[APPLIED_HASH_ANNOTATION]);
    await waitFor(async () => ((await k.core.readNamespacedService({ name: "p-1", namespace: ns })) as V1Service).spec?.publishNotReadyAddresses === true, {
      what: "the edited Service to be put back",
      timeoutMs: 30_000,
      process: proc,
    });
    const settled = await quiet("the operator to be at rest again");
    assert.deepEqual(Object.fromEntries(writesBetween(before, settled)), { apply: 2 }, "one apply for each changed child, and nothing else");
  });
});
