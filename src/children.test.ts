import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StreamPipeline } from "./api.ts";
import {
  statefulSetFor as build,
  CONFIG_HASH_ANNOTATION,
  configMapFor,
  defaultOperatorConfig,
  type OperatorConfig,
  podDisruptionBudgetFor,
  selectorString,
  serviceFor,
} from "./children.ts";
import { compile } from "./topology/compile.ts";

function pipeline(overrides: Partial<StreamPipeline["spec"]> = {}): StreamPipeline {
  return {
    apiVersion: "conveyor.dev/v1alpha1",
    kind: "StreamPipeline",
    metadata: { name: "orders", namespace: "team-a", uid: "uid-1", generation: 3 },
    spec: { kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["in"] }, sink: { topic: "out" }, ...overrides },
  };
}

function topologyOf(p: StreamPipeline) {
  const r = compile(p.spec, { namespace: p.metadata?.namespace ?? "", name: p.metadata?.name ?? "" });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.topology;
}

const statefulSetFor = (p: StreamPipeline, config: OperatorConfig) => build(p, topologyOf(p), config);

describe("children of a StreamPipeline", () => {
  test("the ConfigMap carries the runtime's config and a controller owner reference", () => {
    const cm = configMapFor(pipeline(), topologyOf(pipeline()));
    assert.equal(cm.metadata?.name, "orders-config");
    assert.deepEqual(cm.metadata?.ownerReferences, [
      { apiVersion: "conveyor.dev/v1alpha1", kind: "StreamPipeline", name: "orders", uid: "uid-1", controller: true, blockOwnerDeletion: true },
    ]);
    const config = JSON.parse(cm.data?.["pipeline.json"] ?? "");
    assert.deepEqual(config.pipeline, { namespace: "team-a", name: "orders" });
    assert.equal(config.consumerGroup, "team-a.orders");
    assert.deepEqual(config.kafka, { bootstrapServers: ["k:9092"] });
    assert.deepEqual(config.topology, topologyOf(pipeline()));
  });

  const replicaCases: [string, number | undefined, number][] = [
    ["defaults to 1", undefined, 1],
    ["takes spec.replicas", 4, 4],
    ["allows 0", 0, 0],
  ];
  test("suspend scales the StatefulSet to 0 whatever spec.replicas says", () => {
    assert.equal(statefulSetFor(pipeline({ replicas: 3, suspend: true }), defaultOperatorConfig).spec?.replicas, 0);
  });
  for (const [name, replicas, want] of replicaCases) {
    test(`StatefulSet replicas ${name}`, () => {
      assert.equal(statefulSetFor(pipeline(replicas === undefined ? {} : { replicas }), defaultOperatorConfig).spec?.replicas, want);
    });
  }

  test("the StatefulSet runs the runtime image restricted: non-root, read-only root, no privilege escalation, no capabilities", () => {
    const sts = statefulSetFor(pipeline(), { ...defaultOperatorConfig, runtimeImage: "example/runtime:1" });
    const pod = sts.spec?.template.spec;
    const c = pod?.containers[0];
    assert.equal(c?.image, "example/runtime:1");
    assert.equal(pod?.securityContext?.runAsNonRoot, true);
    assert.equal(pod?.securityContext?.seccompProfile?.type, "RuntimeDefault");
    assert.equal(pod?.automountServiceAccountToken, false);
    assert.equal(c?.securityContext?.readOnlyRootFilesystem, true);
    assert.equal(c?.securityContext?.allowPrivilegeEscalation, false);
    assert.deepEqual(c?.securityContext?.capabilities?.drop, ["ALL"]);
    assert.equal(sts.spec?.podManagementPolicy, "Parallel");
    assert.equal(sts.spec?.volumeClaimTemplates?.[0]?.metadata?.name, "state");
    assert.deepEqual(c?.volumeMounts?.map((m) => m.name).sort(), ["config", "state"]);
  });

  test("the selector labels match the pod template's labels, and the scale selector says the same", () => {
    const sts = statefulSetFor(pipeline(), defaultOperatorConfig);
    const labels = sts.spec?.template.metadata?.labels ?? {};
    for (const [k, v] of Object.entries(sts.spec?.selector.matchLabels ?? {})) assert.equal(labels[k], v);
    assert.equal(selectorString(pipeline()), "app.kubernetes.io/name=conveyor-runtime,conveyor.dev/pipeline=orders");
  });

  test("the headless Service governs the StatefulSet and the budget allows one worker down, both owned by the pipeline", () => {
    const p = pipeline();
    const sts = statefulSetFor(p, defaultOperatorConfig);
    const svc = serviceFor(p);
    const pdb = podDisruptionBudgetFor(p);
    assert.equal(svc.metadata?.name, sts.spec?.serviceName);
    assert.equal(svc.spec?.clusterIP, "None");
    assert.equal(svc.spec?.publishNotReadyAddresses, true);
    assert.deepEqual(svc.spec?.selector, sts.spec?.selector.matchLabels);
    assert.deepEqual(pdb.spec?.selector?.matchLabels, sts.spec?.selector.matchLabels);
    assert.equal(pdb.spec?.maxUnavailable, 1);
    assert.equal(pdb.spec?.unhealthyPodEvictionPolicy, "AlwaysAllow");
    for (const child of [svc, pdb]) {
      assert.deepEqual(child.metadata?.ownerReferences, [
        { apiVersion: "conveyor.dev/v1alpha1", kind: "StreamPipeline", name: "orders", uid: "uid-1", controller: true, blockOwnerDeletion: true },
      ]);
      assert.equal(child.metadata?.namespace, "team-a");
    }
  });

  test("a change to what the workers read changes the config hash; a replica change does not", () => {
    const hash = (p: StreamPipeline) => statefulSetFor(p, defaultOperatorConfig).spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
    assert.equal(hash(pipeline()), hash(pipeline()));
    assert.notEqual(hash(pipeline()), hash(pipeline({ sink: { topic: "elsewhere" } })));
    assert.equal(hash(pipeline()), hash(pipeline({ replicas: 7 })));
  });
});
