// The StreamPipeline CRD on the real apiserver: it is accepted (CEL rules within cost), applies its defaults,
// explains itself, shows its printer columns, and refuses each kind of bad spec with the field path.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { GROUP, PLURAL, type StreamPipeline, type StreamPipelineSpec, VERSION } from "../../src/api.ts";
import { crdChecker } from "../../src/crd-check.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv } from "../support/bed.ts";
import { type Kube, kube, statusCode, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";

const kubectl = (args: string[], input?: string) => runKubectl(bedEnv().kubeconfig, args, input);

function valid(): StreamPipelineSpec {
  return {
    kafka: { bootstrapServers: ["kafka.kafka:9092"] },
    source: { topics: ["payments"] },
    steps: [
      { name: "big", filter: "value.amount > 1000" },
      { name: "by-user", keyBy: "value.user" },
      { name: "per-minute", window: { tumbling: "1m", grace: "10s" }, aggregate: { n: { count: {} }, total: { sum: "value.amount" } } },
    ],
    sink: { topic: "alerts" },
  };
}

type Mutate = (s: StreamPipelineSpec & Record<string, unknown>) => void;

/** [name, mutation, the field path the message must name, a phrase of the message] */
const refused: [string, Mutate, string, RegExp][] = [
  // schema rules
  ["kafka missing", (s) => delete (s as { kafka?: unknown }).kafka, "spec.kafka", /Required value/],
  ["no bootstrap servers", (s) => (s.kafka.bootstrapServers = []), "spec.kafka.bootstrapServers", /at least 1 items/],
  ["a bootstrap server without a port", (s) => (s.kafka.bootstrapServers = ["kafka"]), "spec.kafka.bootstrapServers[0]", /should match/],
  [
    "an unknown SASL mechanism",
    (s) => (s.kafka.sasl = { mechanism: "gssapi" as "plain", secretRef: { name: "x" } }),
    "spec.kafka.sasl.mechanism",
    /Unsupported value/,
  ],
  ["a topic name with spaces", (s) => (s.source.topics = ["bad topic"]), "spec.source.topics[0]", /should match/],
  ["a duplicate source topic", (s) => (s.source.topics = ["a", "a"]), "spec.source.topics[1]", /Duplicate value/],
  ["an unknown source format", (s) => (s.source.format = "xml" as "json"), "spec.source.format", /Unsupported value/],
  ["a malformed duration", (s) => (s.source.watermark = { maxOutOfOrderness: "30 seconds" }), "spec.source.watermark.maxOutOfOrderness", /should match/],
  ["a step name that is not a DNS label", (s) => ((s.steps ?? [])[0] = { name: "Big_One", filter: "true" }), "spec.steps[0].name", /should match/],
  [
    "two steps with one name",
    (s) =>
      (s.steps = [
        { name: "a", filter: "true" },
        { name: "a", map: "value" },
      ]),
    "spec.steps[1]",
    /Duplicate value/,
  ],
  ["an unknown guarantee", (s) => (s.processing = { guarantee: "maybe" as "atLeastOnce" }), "spec.processing.guarantee", /Unsupported value/],
  ["maxInFlight 0", (s) => (s.processing = { maxInFlight: 0 }), "spec.processing.maxInFlight", /greater than or equal to 1/],
  ["negative replicas", (s) => (s.replicas = -1), "spec.replicas", /greater than or equal to 0/],
  ["a state size that is not a quantity", (s) => (s.state = { storage: { size: "lots" } }), "spec.state.storage.size", /should match/],
  ["an unknown scaling mode", (s) => (s.scaling = { mode: "magic" as "lag" }), "spec.scaling.mode", /Unsupported value/],
  // CEL rules
  [
    "a step with two kinds",
    (s) => ((s.steps ?? [])[0] = { name: "big", filter: "true", map: "value" }),
    "spec.steps[0]",
    /exactly one of filter, map, flatMap, keyBy, aggregate/,
  ],
  ["a step with no kind", (s) => ((s.steps ?? [])[0] = { name: "big" }), "spec.steps[0]", /exactly one of filter, map, flatMap, keyBy, aggregate/],
  ["a window without an aggregate", (s) => delete (s.steps ?? [])[2]?.aggregate, "spec.steps[2]", /a window step has an aggregate/],
  [
    "an aggregate on a filter",
    (s) => ((s.steps ?? [])[0] = { name: "big", filter: "true", aggregate: { n: { count: {} } } }),
    "spec.steps[0]",
    /exactly one of filter, map, flatMap, keyBy, aggregate/,
  ],
  [
    "a route and a filter in one step",
    (s) => ((s.steps ?? [])[0] = { name: "big", filter: "true", route: [{ when: "true", to: "x" }] }),
    "spec.steps[0]",
    /exactly one of filter, map, flatMap, keyBy, aggregate \(with or without a window\), route/,
  ],
  [
    "two sinks with one name",
    (s) =>
      (s.sinks = [
        { name: "a", topic: "a" },
        { name: "a", topic: "b" },
      ]),
    "spec.sinks[1]",
    /Duplicate value/,
  ],
  [
    "a window on a map",
    (s) => ((s.steps ?? [])[0] = { name: "big", map: "value", window: { tumbling: "1m" } }),
    "spec.steps[0]",
    /a window step has an aggregate/,
  ],
  [
    "tombstones from a window",
    (s) => ((s.steps ?? [])[2] = { ...(s.steps ?? [])[2], name: "per-minute", emitTombstones: true }),
    "spec.steps[2]",
    /emitTombstones belongs to an aggregate step without a window/,
  ],
  [
    "a top 0",
    (s) => ((s.steps ?? [])[2] = { ...(s.steps ?? [])[2], name: "per-minute", aggregate: { top: { topN: { limit: 0, by: "value.amount" } } } }),
    "spec.steps[2].aggregate.top.topN.limit",
    /greater than or equal to 1/,
  ],
  [
    "emit on a map step",
    (s) => ((s.steps ?? [])[0] = { name: "big", map: "value", emit: "onUpdate" }),
    "spec.steps[0]",
    /emit and late belong to window steps/,
  ],
  [
    "a window of two kinds",
    (s) => ((s.steps ?? [])[2] = { ...(s.steps ?? [])[2], name: "per-minute", window: { tumbling: "1m", session: { gap: "5m" } } }),
    "spec.steps[2].window",
    /exactly one of tumbling, hopping, session/,
  ],
  [
    "a hop longer than its window",
    (s) => ((s.steps ?? [])[2] = { ...(s.steps ?? [])[2], name: "per-minute", window: { hopping: { size: "1m", advance: "5m" } } }),
    "spec.steps[2].window.hopping",
    /advance must not exceed size/,
  ],
  [
    "an aggregation of two functions",
    (s) => ((s.steps ?? [])[2] = { ...(s.steps ?? [])[2], name: "per-minute", aggregate: { n: { count: {}, sum: "value.amount" } } }),
    "spec.steps[2].aggregate[n]",
    /exactly one of count, sum, min, max, avg, reduce, latest, topN/,
  ],
  [
    "late to a topic and dropped",
    (s) => ((s.steps ?? [])[2] = { ...(s.steps ?? [])[2], name: "per-minute", late: { topic: "late", drop: true } }),
    "spec.steps[2].late",
    /to a topic or are dropped, not both/,
  ],
  [
    "a window with no keyBy before it",
    (s) =>
      (s.steps = [
        (s.steps ?? [])[2] as NonNullable<StreamPipelineSpec["steps"]>[number],
        (s.steps ?? [])[1] as NonNullable<StreamPipelineSpec["steps"]>[number],
      ]),
    "spec.steps",
    /a window, aggregate or join step needs a keyBy step before it/,
  ],
  [
    "an outer join without within",
    (s) =>
      (s.steps = [
        { name: "by-id", keyBy: "value.id" },
        { name: "with-click", join: { input: "clicks", key: "value.id", as: "click", type: "outer" } },
      ]),
    "spec.steps[1].join",
    /an outer join is a windowed stream-stream join, and needs within/,
  ],
  [
    "a join's grace without within",
    (s) =>
      (s.steps = [
        { name: "by-id", keyBy: "value.id" },
        { name: "with-click", join: { input: "clicks", key: "value.id", as: "click", grace: "5s" } },
      ]),
    "spec.steps[1].join",
    /grace belongs to a windowed stream-stream join, with within/,
  ],
  [
    "minReplicas above maxReplicas",
    (s) => (s.scaling = { minReplicas: 5, maxReplicas: 2 }),
    "spec.scaling.minReplicas",
    /minReplicas must not exceed maxReplicas/,
  ],
  ["partition growth with no max", (s) => (s.scaling = { partitions: { autoGrow: true } }), "spec.scaling.partitions.max", /autoGrow needs max/],
];

describe("the StreamPipeline CRD on the apiserver", () => {
  let k: Kube;
  let ns: string;
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    k = kube();
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "crd-it");
    kubectl(["apply", "--server-side", "--force-conflicts", "-f", join(repoRoot, "crds")]);
    kubectl(["wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);
  });
  after(async () => {
    for (const c of cleanups) await c();
  });

  // `conveyor validate`'s offline checks must agree with the apiserver on every spec here
  const checker = crdChecker();
  const manifest = (name: string, spec: unknown) => ({ apiVersion: `${GROUP}/${VERSION}`, kind: "StreamPipeline", metadata: { name }, spec });
  const create = async (name: string, spec: unknown, dryRun?: string) => {
    const p = (await k.custom.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: ns,
      plural: PLURAL,
      body: manifest(name, spec),
      dryRun,
    })) as StreamPipeline;
    assert.deepEqual(checker.check(manifest(name, spec)).errors, [], "conveyor validate refuses what the apiserver accepted");
    return p;
  };

  test("a valid spec is accepted and gets its defaults", async () => {
    const p = await create("valid", valid());
    assert.equal(p.spec.source.format, "json");
    assert.equal(p.spec.source.startFrom, "latest");
    assert.deepEqual(p.spec.source.watermark, { maxOutOfOrderness: "30s", idleTimeout: "1m", maxFutureSkew: "5m" });
    assert.equal(p.spec.processing?.guarantee, "atLeastOnce");
    assert.equal(p.spec.processing?.commitInterval, "100ms");
    assert.equal(p.spec.replicas, 1);
    assert.equal(p.spec.suspend, false);
    assert.equal(p.spec.scaling?.mode, "fixed");
    assert.equal(p.spec.state?.retention?.whenDeleted, "Delete");
    assert.equal(p.spec.steps?.[2]?.window?.grace, "10s");
    assert.equal(p.spec.state?.storage?.size, "1Gi");
    assert.equal(p.spec.scaling?.partitions?.autoGrow, false);
  });

  test("a table (an aggregate step without a window) with latest, topN and tombstones is accepted", async () => {
    const spec = valid();
    spec.steps = [
      { name: "by-user", keyBy: "value.user" },
      {
        name: "last-payment",
        aggregate: { last: { latest: { value: "value", by: "value.at" } }, top: { topN: { limit: 3, by: "value.amount" } }, n: { count: {} } },
        emitTombstones: true,
      },
    ];
    spec.state = { ttl: "1h" };
    const p = await create("table", spec, "All");
    assert.equal(p.spec.steps?.[1]?.aggregate?.top?.topN?.limit, 3);
    assert.equal(p.spec.steps?.[1]?.emitTombstones, true);
  });

  test("a route step with named sinks is accepted, and the sinks get their defaults", async () => {
    const spec = valid();
    spec.steps = [{ name: "split", route: [{ when: "value.amount > 1000", to: "big" }] }, ...(spec.steps ?? [])];
    spec.sinks = [{ name: "big", topic: "big-payments", key: "value.user" }];
    const p = await create("route", spec, "All");
    assert.deepEqual(p.spec.sinks, [{ name: "big", topic: "big-payments", key: "value.user", format: "json" }]);
    assert.equal(p.spec.steps?.[0]?.route?.[0]?.to, "big");
  });

  test("a windowed join, and a global input's join before any keyBy, are accepted", async () => {
    const spec = valid();
    spec.inputs = [
      { name: "clicks", topics: ["clicks"] },
      { name: "countries", topics: ["countries"], global: true },
    ];
    spec.steps = [
      { name: "with-country", join: { input: "countries", key: "key", lookup: "value.country", as: "country", type: "left" } },
      { name: "by-id", keyBy: "value.id" },
      { name: "with-click", join: { input: "clicks", key: "value.id", as: "click", type: "outer", within: "30s", grace: "5s" } },
    ];
    const p = await create("joins", spec, "All");
    assert.equal(p.spec.inputs?.[0]?.global, false, "defaulted");
    assert.equal(p.spec.inputs?.[1]?.global, true);
    assert.deepEqual(p.spec.steps?.[2]?.join, { input: "clicks", key: "value.id", as: "click", type: "outer", within: "30s", grace: "5s" });
  });

  for (const [name, mutate, field, phrase] of refused) {
    test(`refused: ${name} (${field})`, async () => {
      const spec = valid() as StreamPipelineSpec & Record<string, unknown>;
      mutate(spec);
      const err = await create(`bad-${Date.now()}`, spec, "All").then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err, `the apiserver accepted: ${JSON.stringify(spec)}`);
      assert.equal(statusCode(err), 422, String(err));
      const body = JSON.parse(String((err as { body?: unknown }).body)) as { message: string; details?: { causes?: { field?: string; message?: string }[] } };
      const causes = body.details?.causes ?? [];
      const cause = causes.find((c) => c.field === field);
      assert.ok(cause, `no cause names ${field}: ${body.message}`);
      assert.match(`${cause.message}`, phrase);
      const offline = checker.check(manifest("bad", spec)).errors;
      assert.ok(
        offline.some((e) => e.field === field),
        `conveyor validate does not name ${field}: ${JSON.stringify(offline)}`,
      );
    });
  }

  test("kubectl explain describes spec.scaling", () => {
    const out = kubectl(["explain", "streampipeline.spec.scaling"]);
    assert.match(out, /How the number of workers is decided/);
    for (const field of ["mode", "minReplicas", "maxReplicas", "targetCatchUp", "lagPerReplica", "scaleDownStabilization", "partitions"]) {
      assert.match(out, new RegExp(`\\b${field}\\b`), `explain lacks ${field}`);
    }
  });

  test("kubectl get shows the printer columns", () => {
    const out = kubectl(["get", "streampipelines", "-n", ns]);
    assert.match(out.split("\n")[0] ?? "", /^NAME\s+READY\s+REPLICAS\s+DESIRED\s+LAG\s+WATERMARK\s+AGE$/);
    assert.match(kubectl(["get", "sp", "-n", ns, "-o", "name"]), /streampipeline.conveyor.dev\/valid/);
  });
});
