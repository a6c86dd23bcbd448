// spec.template on the bed: the worker pods carry the spec's resources (over the defaults), scheduling fields,
// ServiceAccount and pod metadata; the node shim enforces limits.memory as a kubelet does, and the runtime's heap
// follows it. An image outside the operator's allowlist never runs.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SchedulingV1Api, type V1Pod } from "@kubernetes/client-node";
import type { PipelineCondition } from "../../src/api.ts";
import { HEAP_PERCENT_OF_LIMIT } from "../../src/children.ts";
import { waitFor } from "../env/proc.ts";
import { uniqueSuffix } from "../support/bed.ts";
import { createTopic } from "../support/kafka.ts";
import { applyPipeline, copyIds, withDiagnostics } from "../support/scaling.ts";
import { operatorSuite } from "../support/suite.ts";

const MI = 1024 * 1024;

/** A metric's value in a Prometheus text exposition. */
function metric(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  if (!m) throw new Error(`no ${name} in the worker's /metrics`);
  return Number(m[1]);
}

describe("the worker pod template", () => {
  const suffix = uniqueSuffix();
  const src = `tpl-src-${suffix}`;
  const sink = `tpl-sink-${suffix}`;
  const s = operatorSuite("template", async (s) => {
    await createTopic(s.a, src, 1);
    await createTopic(s.a, sink, 1);
  });

  test("resources, scheduling, account and metadata reach the pod; limits.memory is enforced and the heap follows it", { timeout: 120_000 }, async () => {
    const priorityClass = `conveyor-test-${suffix}`;
    const scheduling = s.k.kc.makeApiClient(SchedulingV1Api);
    await scheduling.createPriorityClass({
      body: { metadata: { name: priorityClass }, value: 1000, globalDefault: false },
    });
    await s.k.core.createNamespacedServiceAccount({ namespace: s.ns, body: { metadata: { name: "orders-worker" } } });
    applyPipeline(s.kubectl, s.ns, "sized", {
      ...copyIds(s.env.bootstrap, src, sink, {}),
      template: {
        metadata: { labels: { team: "payments" }, annotations: { "example.com/owner": "payments" } },
        resources: { requests: { cpu: "100m" }, limits: { memory: "384Mi" } },
        nodeSelector: { "kubernetes.io/os": "linux" },
        tolerations: [{ key: "dedicated", operator: "Equal", value: "streaming", effect: "NoSchedule" }],
        priorityClassName: priorityClass,
        serviceAccountName: "orders-worker",
      },
    });
    const withLog = withDiagnostics(s.op, s.kubectl, s.ns);
    const pod = await waitFor(
      async () => {
        const p = await s.k.core.readNamespacedPod({ name: "sized-0", namespace: s.ns }).catch(() => undefined);
        return p?.status?.podIP && p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ? p : undefined;
      },
      { what: "the worker sized-0 to be Ready", timeoutMs: 90_000, process: s.op.proc },
    ).catch(withLog);
    const c = pod.spec?.containers[0];
    assert.deepEqual(JSON.parse(JSON.stringify(c?.resources)), { requests: { cpu: "100m", memory: "384Mi" }, limits: { memory: "384Mi" } });
    assert.equal(pod.metadata?.labels?.team, "payments");
    assert.equal(pod.metadata?.annotations?.["example.com/owner"], "payments");
    assert.deepEqual(pod.spec?.nodeSelector, { "kubernetes.io/os": "linux" });
    assert.equal(
      pod.spec?.tolerations?.some((t) => t.key === "dedicated"),
      true,
    );
    assert.equal(pod.spec?.priorityClassName, priorityClass);
    assert.equal(pod.spec?.priority, 1000, "the apiserver resolved the PriorityClass");
    assert.equal(pod.spec?.serviceAccountName, "orders-worker");

    const text = await (await fetch(`http://${(pod as V1Pod).status?.podIP}:8080/metrics`)).text();
    const limit = metric(text, "conveyor_runtime_memory_limit_bytes");
    const heap = metric(text, "conveyor_runtime_heap_limit_bytes");
    assert.equal(limit, 384 * MI, "the container's cgroup holds its limits.memory, and the runtime reads it");
    const expected = (limit * HEAP_PERCENT_OF_LIMIT) / 100;
    assert.ok(Math.abs(heap - expected) <= 0.1 * expected, `the heap limit ${(heap / MI).toFixed(0)} MiB is ${HEAP_PERCENT_OF_LIMIT} % of 384 MiB`);
    await scheduling.deletePriorityClass({ name: priorityClass });
  });

  test("an image outside the operator's allowlist is refused with its field, and no worker runs it", { timeout: 60_000 }, async () => {
    applyPipeline(s.kubectl, s.ns, "foreign", { ...copyIds(s.env.bootstrap, src, sink, {}), template: { image: "evil.example.com/miner:latest" } });
    const degraded = await waitFor(
      async () => {
        const d = (await s.read("foreign")).status?.conditions?.find((x: PipelineCondition) => x.type === "Degraded");
        return d?.status === "True" ? d : undefined;
      },
      { what: "foreign: Degraded", timeoutMs: 30_000, process: s.op.proc },
    );
    assert.equal(degraded.reason, "InvalidTopology");
    assert.match(degraded.message, /spec\.template\.image: image evil\.example\.com\/miner:latest is not allowed/);
    const sts = await s.k.apps.readNamespacedStatefulSet({ name: "foreign", namespace: s.ns }).catch(() => undefined);
    assert.equal(sts, undefined, "no StatefulSet, so no pod, runs the image");
  });
});
