// Pure builders of the objects a StreamPipeline owns. No I/O here: reconcile applies what these return.
import { createHash } from "node:crypto";
import type { V1ConfigMap, V1OwnerReference, V1PodDisruptionBudget, V1Service, V1StatefulSet } from "@kubernetes/client-node";
import { API_VERSION, KIND, type StreamPipeline } from "./api.ts";
import { SPEC_DEFAULTS } from "./api-types.gen.ts";
import { CONFIG_FILE, pipelineConfigFor } from "./pipeline-config.ts";
import type { CompiledTopology } from "./topology/compile.ts";

export interface OperatorConfig {
  runtimeImage: string;
  /** size of each worker's state volume until the spec says otherwise */
  stateSize: string;
}

export const defaultOperatorConfig: OperatorConfig = {
  runtimeImage: "conveyor/runtime:0.1.0",
  stateSize: "1Gi",
};

export const FIELD_MANAGER = "conveyor-operator";
export const CONFIG_HASH_ANNOTATION = "conveyor.dev/config-hash";
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

/**
 * `replicas` is the lag autoscaler's decision in lag mode; by default the spec's. A suspended pipeline runs
 * none either way.
 */
export function statefulSetFor(p: StreamPipeline, topology: CompiledTopology, config: OperatorConfig, replicas = specReplicas(p)): V1StatefulSet {
  const cm = configMapFor(p, topology);
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
          labels: labelsFor(p),
          annotations: { [CONFIG_HASH_ANNOTATION]: configHash(cm) },
        },
        spec: {
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
              image: p.spec.template?.image ?? config.runtimeImage,
              env: [
                { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
                { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
                { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
                { name: "CONVEYOR_CONFIG", value: `${CONFIG_MOUNT}/${CONFIG_FILE}` },
                { name: "CONVEYOR_STATE_DIR", value: STATE_MOUNT },
                { name: "CONVEYOR_HTTP_PORT", value: String(HTTP_PORT) },
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
              volumeMounts: [
                { name: "config", mountPath: CONFIG_MOUNT, readOnly: true },
                { name: "state", mountPath: STATE_MOUNT },
              ],
            },
          ],
          volumes: [{ name: "config", configMap: { name: cm.metadata?.name } }],
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
