import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { V1StatefulSet } from "@kubernetes/client-node";
import type { PipelineCondition, StreamPipeline } from "./api.ts";
import { conditionMessage, MAX_CONDITION_MESSAGE, setCondition, statusFor } from "./reconcile.ts";

const t0 = "2026-01-01T00:00:00.000Z";
const t1 = "2026-01-01T00:05:00.000Z";

function pipeline(replicas: number, conditions?: PipelineCondition[]): StreamPipeline {
  return {
    metadata: { name: "p", namespace: "ns", generation: 2 },
    spec: { kafka: { bootstrapServers: ["k:1"] }, source: { topics: ["a"] }, sink: { topic: "b" }, replicas },
    status: conditions ? { conditions } : undefined,
  };
}

function sts(replicas: number, ready: number, observed = 1, generation = 1, desired = replicas): V1StatefulSet {
  return {
    metadata: { generation },
    spec: { replicas: desired, selector: {}, serviceName: "", template: {} },
    status: { replicas, readyReplicas: ready, observedGeneration: observed },
  };
}

describe("pipeline status", () => {
  const cases: { name: string; want: number; sts: V1StatefulSet; ready: string; reason: string }[] = [
    { name: "all workers ready", want: 2, sts: sts(2, 2), ready: "True", reason: "WorkersReady" },
    { name: "one of two ready", want: 2, sts: sts(2, 1), ready: "False", reason: "WorkersStarting" },
    { name: "StatefulSet not yet observed its new generation", want: 2, sts: sts(2, 2, 1, 2), ready: "False", reason: "WorkersStarting" },
    { name: "scaled to zero", want: 0, sts: sts(0, 0), ready: "True", reason: "ScaledToZero" },
    { name: "still scaling down", want: 1, sts: sts(2, 2, 1, 1, 1), ready: "False", reason: "WorkersStarting" },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const s = statusFor(pipeline(c.want), c.sts, new Date(t0));
      const ready = s.conditions?.find((x) => x.type === "Ready");
      assert.equal(ready?.status, c.ready);
      assert.equal(ready?.reason, c.reason);
      assert.equal(ready?.observedGeneration, 2);
      assert.deepEqual(
        s.conditions?.map((x) => x.type),
        ["Ready", "Progressing", "Degraded"],
      );
      assert.equal(s.observedGeneration, 2);
      assert.equal(s.consumerGroup, "ns.p");
    });
  }

  test("a condition keeps its transition time while its status holds, and takes a new one when it flips", () => {
    const first = setCondition(undefined, { type: "Ready", status: "False", reason: "A", message: "", lastTransitionTime: t0 });
    const same = setCondition(first, { type: "Ready", status: "False", reason: "B", message: "m", lastTransitionTime: t1 });
    assert.equal(same.length, 1);
    assert.equal(same[0]?.lastTransitionTime, t0);
    assert.equal(same[0]?.reason, "B");
    const flipped = setCondition(same, { type: "Ready", status: "True", reason: "C", message: "", lastTransitionTime: t1 });
    assert.equal(flipped[0]?.lastTransitionTime, t1);
  });

  test("condition messages are well-formed and bounded, whatever an error quotes", () => {
    const loneSurrogate = "Unexpected character: \ud83d";
    assert.equal(conditionMessage(loneSurrogate).isWellFormed(), true);
    assert.equal(conditionMessage("ok 🙂"), "ok 🙂");
    const long = conditionMessage("x".repeat(MAX_CONDITION_MESSAGE * 2));
    assert.equal(long.length, MAX_CONDITION_MESSAGE);
    assert.ok(long.endsWith("…"));
  });
});
