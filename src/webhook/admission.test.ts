import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StreamPipelineSpec } from "../api-types.gen.ts";
import { review } from "./admission.ts";

const spec = (filter: string): StreamPipelineSpec => ({
  kafka: { bootstrapServers: ["k:9092"] },
  source: { topics: ["payments"] },
  steps: [
    { name: "big", filter },
    { name: "shape", map: "{'id': value.id}" },
  ],
  sink: { topic: "alerts" },
});
const request = (s: StreamPipelineSpec | undefined, uid = "u-1") => ({
  apiVersion: "admission.k8s.io/v1",
  kind: "AdmissionReview",
  request: { uid, operation: "CREATE", namespace: "team-a", name: "fraud", object: s && { metadata: { name: "fraud", namespace: "team-a" }, spec: s } },
});

describe("the validating webhook's review", () => {
  const cases: { name: string; spec?: StreamPipelineSpec; allowed: boolean; message?: RegExp; field?: string; cause?: RegExp }[] = [
    { name: "a topology that compiles", spec: spec("value.amount > 100"), allowed: true },
    {
      name: "a broken expression: field, step, line and column",
      spec: spec("value.amount >"),
      allowed: false,
      message: /^StreamPipeline team-a\/fraud: the topology does not compile: spec\.steps\[0\]\.filter \(step "big"\) at line 1, column \d+: /,
      field: "spec.steps[0].filter",
      cause: /^step "big", line 1, column \d+: /,
    },
    {
      name: "a filter that is not a bool",
      spec: spec("value.amount + 1"),
      allowed: false,
      message: /spec\.steps\[0\]\.filter \(step "big"\).*bool/,
      field: "spec.steps[0].filter",
      cause: /^step "big": a filter must give a bool, but this expression gives int$/,
    },
    { name: "a request without an object (a delete)", allowed: true },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { review: out, verdict } = review(request(c.spec, "uid-42"));
      assert.equal(out.apiVersion, "admission.k8s.io/v1");
      assert.equal(out.kind, "AdmissionReview");
      assert.equal(out.response?.uid, "uid-42", "the answer carries the request's uid");
      assert.equal(out.response?.allowed, c.allowed);
      assert.equal(verdict, c.allowed ? "allowed" : "denied");
      if (c.allowed) {
        assert.equal(out.response?.status, undefined);
        return;
      }
      assert.equal(out.response?.status?.code, 422);
      assert.equal(out.response?.status?.reason, "Invalid");
      assert.match(out.response?.status?.message ?? "", c.message ?? /./);
      assert.equal(out.response?.status?.details?.causes[0]?.field, c.field);
      assert.match(out.response?.status?.details?.causes[0]?.message ?? "", c.cause ?? /./);
      assert.equal(out.response?.status?.details?.kind, "StreamPipeline");
    });
  }

  test("every compile error is reported, not just the first", () => {
    const s = spec("value.amount >");
    s.steps?.push({ name: "also-bad", map: "((" });
    const { review: out } = review(request(s));
    const causes = out.response?.status?.details?.causes ?? [];
    assert.deepEqual(
      causes.map((c) => c.field),
      ["spec.steps[0].filter", "spec.steps[2].map"],
    );
  });

  test("a body that is not an AdmissionReview is an error, not an answer", () => {
    assert.throws(() => review({ kind: "Something" }), /request\.uid is missing/);
    assert.throws(() => review(undefined), /request\.uid is missing/);
  });
});
