// Pure builders of the objects a StreamPipeline owns. No I/O here: reconcile applies what these return.
import { createHash } from "node:crypto";
import type {
  V1Affinity,
  V1ConfigMap,
  V1EnvVar,
  V1OwnerReference,
  V1PodDisruptionBudget,
  V1Service,
  V1StatefulSet,
  V1Toleration,
  V1Volume,
  V1VolumeMount,
} from "@kubernetes/client-node";
import { API_VERSION, KIND, type StreamPipeline } from "./api.ts";
import { SPEC_DEFAULTS } from "./api-types.gen.ts";
import { CONFIG_FILE, enabledTls, KAFKA_PASSWORD_ENV, KAFKA_TLS_MOUNT, KAFKA_USERNAME_ENV, pipelineConfigFor } from "./pipeline-config.ts";
import type { CompiledTopology } from "./topology/compile.ts";
import { parseBytes } from "./topology/quantity.ts";

export interface OperatorConfig {
  runtimeImage: string;
  /** size of each worker's state volume until the spec says otherwise */
  stateSize: string;
  /**
   * Prefixes of the images a pipeline's spec.template.image may name, besides runtimeImage itself (always
   * allowed). Empty: the operator's own runtime image only.
   */
  allowedImages: string[];
}

export const defaultOperatorConfig: OperatorConfig = {
  runtimeImage: "ghcr.io/conveyor-dev/conveyor/runtime:0.1.0",
  stateSize: "1Gi",
  allowedImages: [],
};

/** Whether a pipeline may run `image`: the operator's runtime image, or one under an allowed prefix. */
export function imageAllowed(image: string, config: OperatorConfig): boolean {
  return image === config.runtimeImage || config.allowedImages.some((prefix) => prefix !== "" && image.startsWith(prefix));
}

/** A worker's resources unless spec.template.resources says otherwise, key by key. */
export const DEFAULT_RESOURCES = { requests: { cpu: "250m", memory: "512Mi" }, limits: { memory: "1Gi" } } as const;
/**
 * The share of the container's memory limit the runtime's V8 heap may take; the rest is RocksDB's (block cache,
 * memtables) and Node's own. Node reads the limit from the container's cgroup.
 */
export const HEAP_PERCENT_OF_LIMIT = 60;

export const FIELD_MANAGER = "conveyor-operator";
export const CONFIG_HASH_ANNOTATION = "conveyor.dev/config-hash";
/** a digest of the resourceVersions of the Secrets the workers read: a rotated Secret rolls them */
export const SECRETS_VERSION_ANNOTATION = "conveyor.dev/secrets-version";
export const PIPELINE_LABEL = "conveyor.dev/pipeline";
export const RUNTIME_UID = 65532;
export const HTTP_PORT = 8080;
export const CONFIG_MOUNT = "/etc/conveyor";
export const STATE_MOUNT = "/var/lib/conveyor/state";

export function labelsFor(p: StreamPipeline): Record<string, string> {
  return {
    "app.kubernetes.io/name": "conveyor-runtime",
    "app.kubernetes.io/instance": p.metadata?.name ?? "",
    "app.kubernetes.io/managed-by": "conveyor-operator",
    [PIPELINE_LABEL]: p.metadata?.name ?? "",
  };
}

export function selectorLabels(p: StreamPipeline): Record<string, string> {
  return { "app.kubernetes.io/name": "conveyor-runtime", [PIPELINE_LABEL]: p.metadata?.name ?? "" };
}

export function selectorString(p: StreamPipeline): string {
  return Object.entries(selectorLabels(p))
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

export function ownerReference(p: StreamPipeline): V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    name: p.metadata?.name ?? "",
    uid: p.metadata?.uid ?? "",
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function configMapName(p: StreamPipeline): string {
  return `${p.metadata?.name}-config`;
}

export function configMapFor(p: StreamPipeline, topology: CompiledTopology): V1ConfigMap {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: configMapName(p),
      namespace: p.metadata?.namespace,
      labels: labelsFor(p),
      ownerReferences: [ownerReference(p)],
    },
    data: { [CONFIG_FILE]: `${JSON.stringify(pipelineConfigFor(p, topology), null, 2)}\n` },
  };
}

/**
 * The StatefulSet's governing Service: headless, so each worker has a stable DNS name
 * (`<pipeline>-0.<pipeline>.<namespace>.svc`), published before it is ready so that peers find a restoring one.
 */
export function serviceFor(p: StreamPipeline): V1Service {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: p.metadata?.name, namespace: p.metadata?.namespace, labels: labelsFor(p), ownerReferences: [ownerReference(p)] },
    spec: {
      clusterIP: "None",
      publishNotReadyAddresses: true,
      selector: selectorLabels(p),
      ports: [{ name: "http", port: HTTP_PORT, targetPort: "http" }],
    },
  };
}

/**
 * At most one worker voluntarily down at a time (a node drain, say): each one that leaves hands its partitions
 * over and its successor restores state, so draining them together would stall the whole pipeline. Unhealthy
 * pods may always be evicted, so a broken worker never blocks a drain.
 */
export function podDisruptionBudgetFor(p: StreamPipeline): V1PodDisruptionBudget {
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: { name: p.metadata?.name, namespace: p.metadata?.namespace, labels: labelsFor(p), ownerReferences: [ownerReference(p)] },
    spec: { maxUnavailable: 1, selector: { matchLabels: selectorLabels(p) }, unhealthyPodEvictionPolicy: "AlwaysAllow" },
  };
}

/** A hash of what the workers read at start, so that a change rolls the pods. */
export function configHash(cm: V1ConfigMap): string {
  return createHash("sha256")
    .update(JSON.stringify(cm.data ?? {}))
    .digest("hex")
    .slice(0, 16);
}

/** The workers fixed and external modes run: spec.replicas, which the scale subresource writes. */
export function specReplicas(p: StreamPipeline): number {
  return p.spec.replicas ?? SPEC_DEFAULTS.replicas;
}

/** Resource quantities as the API takes them: strings (a bare number is a count of units). */
function quantities(q: Record<string, number | string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(q ?? {}).map(([k, v]) => [k, String(v)]));
}

/** A cpu or memory quantity as a number (cores, bytes), for comparing; undefined for what it cannot read. */
function amount(resource: string, q: string): number | undefined {
  if (resource === "cpu") {
    const m = /^([0-9]+(?:\.[0-9]+)?)(m?)$/.exec(q);
    return m ? Number(m[1]) / (m[2] === "m" ? 1000 : 1) : undefined;
  }
  return resource === "memory" ? parseBytes(q) : undefined;
}

/**
 * The spec's resources over the defaults, key by key. A default request above a limit the spec sets is lowered
 * to that limit (the apiserver refuses a request over its limit).
 */
export function workerResources(spec: { requests?: Record<string, number | string>; limits?: Record<string, number | string> } | undefined) {
  const limits: Record<string, string> = { ...DEFAULT_RESOURCES.limits, ...quantities(spec?.limits) };
  const asked = quantities(spec?.requests);
  const requests: Record<string, string> = { ...DEFAULT_RESOURCES.requests, ...asked };
  for (const [resource, limit] of Object.entries(limits)) {
    const request = requests[resource];
    if (request === undefined || resource in asked) continue;
    const r = amount(resource, request);
    const l = amount(resource, limit);
    if (r !== undefined && l !== undefined && r > l) requests[resource] = limit;
  }
  return { requests, limits };
}

/** The Secrets a pipeline's workers read, each with the keys they need from it (name → keys). */
export function referencedSecrets(p: StreamPipeline): Map<string, string[]> {
  const k = p.spec.kafka;
  const tls = enabledTls(k);
  const refs = new Map<string, string[]>();
  const need = (name: string, ...keys: string[]) => refs.set(name, [...new Set([...(refs.get(name) ?? []), ...keys])]);
  if (k.sasl) {
    const ref = k.sasl.secretRef;
    need(ref.name, ref.usernameKey ?? SPEC_DEFAULTS["kafka.sasl.secretRef.usernameKey"], ref.passwordKey ?? SPEC_DEFAULTS["kafka.sasl.secretRef.passwordKey"]);
  }
  if (tls?.caSecretRef) need(tls.caSecretRef.name, tls.caSecretRef.key ?? SPEC_DEFAULTS["kafka.tls.caSecretRef.key"]);
  if (tls?.clientSecretRef) need(tls.clientSecretRef.name, "tls.crt", "tls.key");
  return refs;
}

/** A digest of the Secrets' resourceVersions (name → version), never of their content. */
export function secretsVersion(versions: Record<string, string>): string {
  const entries = Object.entries(versions).sort(([a], [b]) => a.localeCompare(b));
  if (entries.length === 0) return "";
  return createHash("sha256").update(JSON.stringify(entries)).digest("hex").slice(0, 16);
}

/**
 * The workers' Kafka credentials, by reference only: the SASL username and password as environment variables
 * from the Secret's keys, the CA and client certificate as Secret volumes. The ConfigMap names where they are.
 */
function kafkaCredentials(p: StreamPipeline): { env: V1EnvVar[]; volumes: V1Volume[]; mounts: V1VolumeMount[] } {
  const k = p.spec.kafka;
  const env: V1EnvVar[] = [];
  const volumes: V1Volume[] = [];
  const mounts: V1VolumeMount[] = [];
  if (k.sasl) {
    const ref = k.sasl.secretRef;
    env.push(
      { name: KAFKA_USERNAME_ENV, valueFrom: { secretKeyRef: { name: ref.name, key: ref.usernameKey ?? SPEC_DEFAULTS["kafka.sasl.secretRef.usernameKey"] } } },
      { name: KAFKA_PASSWORD_ENV, valueFrom: { secretKeyRef: { name: ref.name, key: ref.passwordKey ?? SPEC_DEFAULTS["kafka.sasl.secretRef.passwordKey"] } } },
    );
  }
  const tls = enabledTls(k);
  if (tls?.caSecretRef) {
    const key = tls.caSecretRef.key ?? SPEC_DEFAULTS["kafka.tls.caSecretRef.key"];
    volumes.push({ name: "kafka-ca", secret: { secretName: tls.caSecretRef.name, items: [{ key, path: "ca.crt" }] } });
    mounts.push({ name: "kafka-ca", mountPath: `${KAFKA_TLS_MOUNT}/ca`, readOnly: true });
  }
  if (tls?.clientSecretRef) {
    volumes.push({
      name: "kafka-client",
      secret: {
        secretName: tls.clientSecretRef.name,
        items: [
          { key: "tls.crt", path: "tls.crt" },
          { key: "tls.key", path: "tls.key" },
        ],
      },
    });
    mounts.push({ name: "kafka-client", mountPath: `${KAFKA_TLS_MOUNT}/client`, readOnly: true });
  }
  return { env, volumes, mounts };
}

/**
 * `replicas` is the lag autoscaler's decision in lag mode; by default the spec's. A suspended pipeline runs
 * none either way.
 */
export function statefulSetFor(p: StreamPipeline, topology: CompiledTopology, config: OperatorConfig, replicas = specReplicas(p), secrets = ""): V1StatefulSet {
  const cm = configMapFor(p, topology);
  const credentials = kafkaCredentials(p);
  const tpl = p.spec.template;
  return {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: {
      name: p.metadata?.name,
      namespace: p.metadata?.namespace,
      labels: labelsFor(p),
      ownerReferences: [ownerReference(p)],
    },
    spec: {
      replicas: p.spec.suspend ? 0 : replicas,
      serviceName: p.metadata?.name ?? "",
      // Workers start together: a scale-up should not wait for pods one by one.
      podManagementPolicy: "Parallel",
      persistentVolumeClaimRetentionPolicy: {
        whenScaled: p.spec.state?.retention?.whenScaled ?? SPEC_DEFAULTS["state.retention.whenScaled"],
        whenDeleted: p.spec.state?.retention?.whenDeleted ?? SPEC_DEFAULTS["state.retention.whenDeleted"],
      },
      selector: { matchLabels: selectorLabels(p) },
      template: {
        metadata: {
          // the spec's labels and annotations, under the operator's own: the selector and the hashes always hold
          labels: { ...tpl?.metadata?.labels, ...labelsFor(p) },
          annotations: {
            ...tpl?.metadata?.annotations,
            [CONFIG_HASH_ANNOTATION]: configHash(cm),
            ...(secrets ? { [SECRETS_VERSION_ANNOTATION]: secrets } : {}),
          },
        },
        spec: {
          ...(tpl?.serviceAccountName ? { serviceAccountName: tpl.serviceAccountName } : {}),
          ...(tpl?.nodeSelector ? { nodeSelector: tpl.nodeSelector } : {}),
          ...(tpl?.tolerations ? { tolerations: tpl.tolerations as V1Toleration[] } : {}),
          ...(tpl?.affinity ? { affinity: tpl.affinity as V1Affinity } : {}),
          ...(tpl?.priorityClassName ? { priorityClassName: tpl.priorityClassName } : {}),
          automountServiceAccountToken: false,
          terminationGracePeriodSeconds: 30,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: RUNTIME_UID,
            runAsGroup: RUNTIME_UID,
            fsGroup: RUNTIME_UID,
            seccompProfile: { type: "RuntimeDefault" },
          },
          containers: [
            {
              name: "runtime",
              image: tpl?.image ?? config.runtimeImage,
              resources: workerResources(tpl?.resources),
              env: [
                { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
                { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
                { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
                { name: "CONVEYOR_CONFIG", value: `${CONFIG_MOUNT}/${CONFIG_FILE}` },
                { name: "CONVEYOR_STATE_DIR", value: STATE_MOUNT },
                { name: "CONVEYOR_HTTP_PORT", value: String(HTTP_PORT) },
                // the heap follows the container's memory limit, which Node reads from its cgroup
                { name: "NODE_OPTIONS", value: `--max-old-space-size-percentage=${HEAP_PERCENT_OF_LIMIT}` },
                ...credentials.env,
              ],
              ports: [{ name: "http", containerPort: HTTP_PORT }],
              readinessProbe: { httpGet: { path: "/readyz", port: "http" }, periodSeconds: 2, failureThreshold: 3 },
              livenessProbe: { httpGet: { path: "/healthz", port: "http" }, periodSeconds: 10, failureThreshold: 6 },
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                runAsNonRoot: true,
                capabilities: { drop: ["ALL"] },
              },
              volumeMounts: [{ name: "config", mountPath: CONFIG_MOUNT, readOnly: true }, { name: "state", mountPath: STATE_MOUNT }, ...credentials.mounts],
            },
          ],
          volumes: [{ name: "config", configMap: { name: cm.metadata?.name } }, ...credentials.volumes],
        },
      },
      volumeClaimTemplates: [
        {
          apiVersion: "v1",
          kind: "PersistentVolumeClaim",
          metadata: { name: "state", labels: selectorLabels(p) },
          spec: {
            accessModes: ["ReadWriteOnce"],
            resources: { requests: { storage: String(p.spec.state?.storage?.size ?? config.stateSize) } },
            ...(p.spec.state?.storage?.storageClassName ? { storageClassName: p.spec.state.storage.storageClassName } : {}),
          },
        },
      ],
    },
  };
}
