import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { KubernetesObject, V1StatefulSet } from "@kubernetes/client-node";
import type { StreamPipeline, StreamPipelineStatus } from "./api.ts";
import { statefulSetFor } from "./children.ts";
import { matchesSelector } from "./controller.ts";
import { leanClaim, leanMetadata, leanPod } from "./informers.ts";
import { retryAfterMs } from "./kube-errors.ts";
import { APPLIED_HASH_ANNOTATION, canonical, firstDifference, sameStatus, upToDate, withAppliedHash } from "./quiet-apply.ts";
import { compile } from "./topology/compile.ts";

const p: StreamPipeline = {
  apiVersion: "conveyor.dev/v1alpha1",
  kind: "StreamPipeline",
  metadata: { name: "orders", namespace: "team-a", uid: "uid-1", generation: 3 },
  spec: { kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["in"] }, sink: { topic: "out" }, steps: [{ name: "keep", filter: "value.n > 0" }] },
};

function desiredSts(pipeline = p): V1StatefulSet {
  const r = compile(pipeline.spec, { namespace: "team-a", name: "orders" });
  if (!r.ok) throw new Error("does not compile");
  return withAppliedHash(statefulSetFor(pipeline, r.topology, { runtimeImage: "rt:1", stateSize: "1Gi", allowedImages: [] }));
}

/** What the apiserver stores of an applied object: it, with defaults and fields of its own added. */
function stored(o: V1StatefulSet): V1StatefulSet {
  const s = structuredClone(o);
  s.metadata = { ...s.metadata, resourceVersion: "42", uid: "sts-uid", generation: 1, creationTimestamp: new Date(0) };
  const spec = s.spec as NonNullable<V1StatefulSet["spec"]>;
  spec.revisionHistoryLimit = 10;
  spec.updateStrategy = { type: "RollingUpdate", rollingUpdate: { partition: 0 } };
  const c = spec.template.spec?.containers[0];
  if (c) {
    c.terminationMessagePath = "/dev/termination-log";
    for (const port of c.ports ?? []) port.protocol = "TCP";
  }
  s.status = { replicas: 1, readyReplicas: 1, observedGeneration: 1 };
  return s;
}

describe("a reconcile that finds an object as it wants it writes nothing", () => {
  test("canonical JSON ignores key order and undefined values", () => {
    assert.equal(canonical({ b: 1, a: [1, { d: undefined, c: "x" }] }), canonical({ a: [1, { c: "x" }], b: 1 }));
    assert.notEqual(canonical({ a: [1, 2] }), canonical({ a: [2, 1] }));
  });

  test("the digest annotation covers the object, not an earlier digest", () => {
    const a = withAppliedHash<KubernetesObject>({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x" } });
    const again = withAppliedHash(a);
    assert.equal(again.metadata?.annotations?.[APPLIED_HASH_ANNOTATION], a.metadata?.annotations?.[APPLIED_HASH_ANNOTATION]);
    const other = withAppliedHash<KubernetesObject>({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x", labels: { a: "b" } } });
    assert.notEqual(other.metadata?.annotations?.[APPLIED_HASH_ANNOTATION], a.metadata?.annotations?.[APPLIED_HASH_ANNOTATION]);
  });

  test("a stored StatefulSet with the apiserver's defaults and status is up to date", () => {
    const want = desiredSts();
    assert.equal(firstDifference(stored(want), want), undefined);
    assert.ok(upToDate(stored(want), want));
  });

  test("someone else's edit of a field the operator sets is seen, and applied over", () => {
    const want = desiredSts();
    const edited = stored(want);
    (edited.spec as NonNullable<V1StatefulSet["spec"]>).replicas = 7;
    assert.equal(firstDifference(edited, want), ".spec.replicas");
    assert.ok(!upToDate(edited, want));
    const env = stored(want);
    env.spec?.template.spec?.containers[0]?.env?.pop();
    assert.equal(firstDifference(env, want), ".spec.template.spec.containers[0].env");
  });

  test("a field the operator no longer sets changes the digest, so the apply that removes it is made", () => {
    const withSelector = desiredSts({ ...p, spec: { ...p.spec, template: { nodeSelector: { zone: "a" } } } });
    const without = desiredSts();
    // field by field, the old object has everything the new one sets; only the digest tells them apart
    assert.equal(firstDifference(stored(withSelector), without), ".metadata.annotations.conveyor.dev/applied-hash");
    assert.ok(!upToDate(stored(withSelector), without));
  });

  test("no object, one being deleted, or one applied before digests is applied", () => {
    const want = desiredSts();
    assert.ok(!upToDate(undefined, want));
    assert.ok(!upToDate({ ...stored(want), metadata: { ...stored(want).metadata, deletionTimestamp: new Date() } }, want));
    const { [APPLIED_HASH_ANNOTATION]: _h, ...annotations } = want.metadata?.annotations ?? {};
    assert.ok(!upToDate({ ...stored(want), metadata: { ...stored(want).metadata, annotations } }, want));
  });

  test("a status is compared in the fields its manager owns, conditions as a set", () => {
    const t = "2026-12-06T00:00:00.000Z";
    const written: StreamPipelineStatus = {
      observedGeneration: 3,
      replicas: 0,
      conditions: [
        { type: "Ready", status: "True", reason: "Suspended", message: "0 of 0 workers ready", lastTransitionTime: t, observedGeneration: 3 },
        { type: "Degraded", status: "False", reason: "Healthy", message: "ok", lastTransitionTime: t, observedGeneration: 3 },
      ],
    };
    const others = {
      watermarks: { observedTime: t, sources: [], tasks: [] },
      conditions: [
        ...[...(written.conditions ?? [])].reverse(),
        { type: "StateCapacityAtRisk", status: "False" as const, reason: "Fits", message: "", lastTransitionTime: t },
      ],
    };
    const storedStatus = { ...written, ...others } as StreamPipelineStatus;
    assert.ok(sameStatus(storedStatus, written, ["watermarks"], ["StateCapacityAtRisk"]));
    assert.ok(!sameStatus(storedStatus, { ...written, replicas: 1 }, ["watermarks"], ["StateCapacityAtRisk"]));
    // a field the manager wrote before and writes no more must go: a write
    assert.ok(!sameStatus({ ...storedStatus, lag: 5 }, written, ["watermarks"], ["StateCapacityAtRisk"]));
    assert.ok(!sameStatus(undefined, written, ["watermarks"], ["StateCapacityAtRisk"]));
  });
});

describe("informer caches hold what the reconciles read", () => {
  test("managedFields and kubectl's last-applied copy go; the rest stays", () => {
    const o: KubernetesObject = {
      metadata: {
        name: "x",
        managedFields: [{ manager: "kubectl", operation: "Apply" }],
        annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{...}", keep: "1" },
      },
    };
    assert.deepEqual(leanMetadata(o), { metadata: { name: "x", annotations: { keep: "1" } } });
  });

  test("a PVC keeps its name, labels, annotations, request and capacity", () => {
    const pvc = leanClaim({
      metadata: { name: "state-a-0", namespace: "n", labels: { a: "b" }, managedFields: [{}], resourceVersion: "3", uid: "u" },
      spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } }, volumeName: "pv-1" },
      status: { phase: "Bound", capacity: { storage: "2Gi" } },
    });
    assert.deepEqual(pvc, {
      metadata: { name: "state-a-0", namespace: "n", labels: { a: "b" }, resourceVersion: "3", uid: "u" },
      spec: { resources: { requests: { storage: "1Gi" } } },
      status: { capacity: { storage: "2Gi" } },
    });
  });

  test("a pod keeps its owner, phase, IP and Ready condition", () => {
    const pod = leanPod({
      metadata: { name: "a-0", namespace: "n", ownerReferences: [{ apiVersion: "apps/v1", kind: "StatefulSet", name: "a", uid: "s" }] },
      spec: { containers: [{ name: "runtime", image: "rt:1" }] },
      status: {
        phase: "Running",
        podIP: "10.0.0.2",
        conditions: [
          { type: "Ready", status: "True" },
          { type: "PodScheduled", status: "True" },
        ],
      },
    });
    assert.equal(pod.spec, undefined);
    assert.deepEqual(pod.status, { phase: "Running", podIP: "10.0.0.2", conditions: [{ type: "Ready", status: "True" }] });
    assert.equal(pod.metadata?.ownerReferences?.[0]?.uid, "s");
  });

  test("a label selector of k=v terms matches labels that carry them all", () => {
    assert.ok(matchesSelector({ a: "1", b: "2", c: "3" }, "a=1,b=2"));
    assert.ok(!matchesSelector({ a: "1" }, "a=1,b=2"));
    assert.ok(!matchesSelector(undefined, "a=1"));
    assert.ok(!matchesSelector({ a: "10" }, "a=1"));
  });

  test("a 429's Retry-After is read from the header or the Status", () => {
    assert.equal(retryAfterMs({ code: 429, headers: { "retry-after": "2" } }), 2_000);
    assert.equal(retryAfterMs({ code: 429, body: JSON.stringify(JSON.stringify({ kind: "Status", details: { retryAfterSeconds: 1 } })) }), 1_000);
    assert.equal(retryAfterMs({ code: 429, body: { details: { retryAfterSeconds: 3 } } }), 3_000);
    assert.equal(retryAfterMs(new Error("other")), undefined);
  });
});
