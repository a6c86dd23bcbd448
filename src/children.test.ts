import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StreamPipeline } from "./api.ts";
import {
  statefulSetFor as build,
  CONFIG_HASH_ANNOTATION,
  configMapFor,
  defaultOperatorConfig,
  imageAllowed,
  type OperatorConfig,
  podDisruptionBudgetFor,
  referencedSecrets,
  SECRETS_VERSION_ANNOTATION,
  secretsVersion,
  selectorString,
  serviceFor,
} from "./children.ts";
import { compile } from "./topology/compile.ts";
import { imageErrors } from "./validate.ts";

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

  test("Kafka credentials reach the workers by reference: env from the Secret's keys and Secret volumes, never the ConfigMap", () => {
    const p = pipeline({
      kafka: {
        bootstrapServers: ["k:9093"],
        sasl: { mechanism: "scram-sha-512", secretRef: { name: "kafka-user", passwordKey: "pw" } },
        tls: { caSecretRef: { name: "kafka-ca" }, clientSecretRef: { name: "kafka-client" } },
      },
    });
    const sts = build(p, topologyOf(p), defaultOperatorConfig, 1, "abc123");
    const c = sts.spec?.template.spec?.containers[0];
    const env = Object.fromEntries((c?.env ?? []).map((e) => [e.name, e.valueFrom?.secretKeyRef]));
    assert.deepEqual(env.CONVEYOR_KAFKA_SASL_USERNAME, { name: "kafka-user", key: "username" });
    assert.deepEqual(env.CONVEYOR_KAFKA_SASL_PASSWORD, { name: "kafka-user", key: "pw" });
    const volumes = Object.fromEntries((sts.spec?.template.spec?.volumes ?? []).map((v) => [v.name, v.secret]));
    assert.deepEqual(volumes["kafka-ca"], { secretName: "kafka-ca", items: [{ key: "ca.crt", path: "ca.crt" }] });
    assert.equal(volumes["kafka-client"]?.secretName, "kafka-client");
    assert.deepEqual(
      c?.volumeMounts?.filter((m) => m.name.startsWith("kafka-")).map((m) => [m.mountPath, m.readOnly]),
      [
        ["/etc/conveyor-kafka/ca", true],
        ["/etc/conveyor-kafka/client", true],
      ],
    );
    assert.equal(sts.spec?.template.metadata?.annotations?.[SECRETS_VERSION_ANNOTATION], "abc123");
    const config = JSON.parse(configMapFor(p, topologyOf(p)).data?.["pipeline.json"] ?? "");
    assert.deepEqual(config.kafka, {
      bootstrapServers: ["k:9093"],
      sasl: { mechanism: "SCRAM-SHA-512" },
      tls: { caFile: "/etc/conveyor-kafka/ca/ca.crt", certFile: "/etc/conveyor-kafka/client/tls.crt", keyFile: "/etc/conveyor-kafka/client/tls.key" },
    });
    assert.deepEqual(
      [...referencedSecrets(p)],
      [
        ["kafka-user", ["username", "pw"]],
        ["kafka-ca", ["ca.crt"]],
        ["kafka-client", ["tls.crt", "tls.key"]],
      ],
    );
  });

  test("a pipeline without credentials mounts nothing of Kafka's and carries no secrets annotation; TLS off means no TLS", () => {
    const p = pipeline({ kafka: { bootstrapServers: ["k:9092"], tls: { enabled: false, caSecretRef: { name: "kafka-ca" } } } });
    const sts = build(p, topologyOf(p), defaultOperatorConfig);
    assert.deepEqual(
      sts.spec?.template.spec?.volumes?.map((v) => v.name),
      ["config"],
    );
    assert.equal(sts.spec?.template.metadata?.annotations?.[SECRETS_VERSION_ANNOTATION], undefined);
    assert.deepEqual(JSON.parse(configMapFor(p, topologyOf(p)).data?.["pipeline.json"] ?? "").kafka, { bootstrapServers: ["k:9092"] });
    assert.equal(referencedSecrets(p).size, 0);
  });

  test("the secrets version is a digest of resourceVersions: it changes with any of them, not with their order", () => {
    const v = secretsVersion({ a: "10", b: "20" });
    assert.equal(secretsVersion({ b: "20", a: "10" }), v);
    assert.notEqual(secretsVersion({ a: "11", b: "20" }), v);
    assert.equal(secretsVersion({}), "");
  });

  test("the worker pod template is honoured: resources key by key over the defaults, scheduling, account and pod metadata", () => {
    const p = pipeline({
      template: {
        metadata: { labels: { team: "payments", "conveyor.dev/pipeline": "forged" }, annotations: { "prometheus.io/scrape": "true" } },
        resources: { requests: { cpu: "1" }, limits: { memory: "2Gi", cpu: 2 } },
        nodeSelector: { pool: "streaming" },
        tolerations: [{ key: "dedicated", operator: "Equal", value: "streaming", effect: "NoSchedule" }],
        affinity: { podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [] } },
        priorityClassName: "streaming-high",
        serviceAccountName: "orders-worker",
      },
    });
    const sts = statefulSetFor(p, defaultOperatorConfig);
    const pod = sts.spec?.template;
    const c = pod?.spec?.containers[0];
    assert.deepEqual(c?.resources, { requests: { cpu: "1", memory: "512Mi" }, limits: { memory: "2Gi", cpu: "2" } });
    assert.equal(pod?.metadata?.labels?.team, "payments");
    assert.equal(pod?.metadata?.labels?.["conveyor.dev/pipeline"], "orders", "the selector's labels cannot be overridden");
    assert.equal(pod?.metadata?.annotations?.["prometheus.io/scrape"], "true");
    assert.ok(pod?.metadata?.annotations?.[CONFIG_HASH_ANNOTATION]);
    assert.deepEqual(pod?.spec?.nodeSelector, { pool: "streaming" });
    assert.equal(pod?.spec?.tolerations?.[0]?.key, "dedicated");
    assert.ok(pod?.spec?.affinity?.podAntiAffinity);
    assert.equal(pod?.spec?.priorityClassName, "streaming-high");
    assert.equal(pod?.spec?.serviceAccountName, "orders-worker");
    assert.equal(pod?.spec?.automountServiceAccountToken, false, "the workers never call the apiserver");
    assert.equal(c?.env?.find((e) => e.name === "NODE_OPTIONS")?.value, "--max-old-space-size-percentage=60", "the heap follows the memory limit");
  });

  test("a limit under a default request lowers that request to it; a request the spec sets stays", () => {
    const c = (resources: object) => statefulSetFor(pipeline({ template: { resources } }), defaultOperatorConfig).spec?.template.spec?.containers[0];
    assert.deepEqual(c({ limits: { memory: "384Mi", cpu: "100m" } })?.resources, {
      requests: { cpu: "100m", memory: "384Mi" },
      limits: { memory: "384Mi", cpu: "100m" },
    });
    assert.deepEqual(c({ requests: { memory: "256Mi" }, limits: { memory: "384Mi" } })?.resources?.requests, { cpu: "250m", memory: "256Mi" });
  });

  test("defaults: requests and a memory limit; no CPU limit; the operator's runtime image", () => {
    const c = statefulSetFor(pipeline(), defaultOperatorConfig).spec?.template.spec?.containers[0];
    assert.deepEqual(c?.resources, { requests: { cpu: "250m", memory: "512Mi" }, limits: { memory: "1Gi" } });
    assert.equal(c?.image, defaultOperatorConfig.runtimeImage);
  });

  test("only the operator's runtime image, or one under an allowed prefix, may run", () => {
    const config = { ...defaultOperatorConfig, allowedImages: ["registry.example.com/team-a/"] };
    assert.equal(imageAllowed(defaultOperatorConfig.runtimeImage, defaultOperatorConfig), true);
    assert.equal(imageAllowed("evil/miner:latest", defaultOperatorConfig), false);
    assert.equal(imageAllowed("registry.example.com/team-a/runtime:1.2", config), true);
    assert.equal(imageAllowed("registry.example.com/team-b/runtime:1.2", config), false);
    const refused = imageErrors({ ...pipeline().spec, template: { image: "evil/miner:latest" } }, defaultOperatorConfig);
    assert.deepEqual(
      refused.map((e) => e.field),
      ["spec.template.image"],
    );
    assert.match(refused[0]?.message ?? "", /image evil\/miner:latest is not allowed/);
  });
});
