// Turns a pod's volumes into host directories, as a kubelet's volume manager would.
import { chmodSync, chownSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { CoreV1Api, V1ObjectFieldSelector, V1Pod, V1Volume } from "@kubernetes/client-node";

export class VolumeError extends Error {
  override name = "VolumeError";
  /** true when waiting may help (a PVC not bound yet, a ConfigMap not created yet) */
  readonly retryable: boolean;
  constructor(message: string, retryable: boolean) {
    super(message);
    this.retryable = retryable;
  }
}

export function fieldValue(pod: V1Pod, ref: V1ObjectFieldSelector): string {
  const path = ref.fieldPath;
  const labels = path.match(/^metadata\.labels\['(.+)'\]$/);
  if (labels?.[1]) return pod.metadata?.labels?.[labels[1]] ?? "";
  const annotations = path.match(/^metadata\.annotations\['(.+)'\]$/);
  if (annotations?.[1]) return pod.metadata?.annotations?.[annotations[1]] ?? "";
  switch (path) {
    case "metadata.name":
      return pod.metadata?.name ?? "";
    case "metadata.namespace":
      return pod.metadata?.namespace ?? "";
    case "metadata.uid":
      return pod.metadata?.uid ?? "";
    case "spec.nodeName":
      return pod.spec?.nodeName ?? "";
    case "spec.serviceAccountName":
      return pod.spec?.serviceAccountName ?? "";
    case "status.podIP":
      return pod.status?.podIP ?? "";
    case "status.hostIP":
      return pod.status?.hostIP ?? "";
    default:
      throw new VolumeError(`fieldRef ${path} is not supported by the node shim`, false);
  }
}

function writeFiles(dir: string, files: Map<string, Buffer>, mode: number): void {
  mkdirSync(dir, { recursive: true });
  for (const [rel, data] of files) {
    const target = join(dir, rel);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, data, { mode });
  }
}

function pick(data: Map<string, Buffer>, items: { key: string; path: string }[] | undefined): Map<string, Buffer> {
  if (!items || items.length === 0) return data;
  const out = new Map<string, Buffer>();
  for (const it of items) {
    const v = data.get(it.key);
    if (v !== undefined) out.set(it.path, v);
  }
  return out;
}

function isNotFound(err: unknown): boolean {
  return typeof err === "object" && err !== null && "code" in err && (err as { code: number }).code === 404;
}

async function configMapData(api: CoreV1Api, namespace: string, name: string, optional: boolean): Promise<Map<string, Buffer>> {
  try {
    const cm = await api.readNamespacedConfigMap({ name, namespace });
    const out = new Map<string, Buffer>();
    for (const [k, v] of Object.entries(cm.data ?? {})) out.set(k, Buffer.from(v));
    for (const [k, v] of Object.entries(cm.binaryData ?? {})) out.set(k, Buffer.from(v, "base64"));
    return out;
  } catch (err) {
    if (isNotFound(err)) {
      if (optional) return new Map();
      throw new VolumeError(`configmap "${name}" not found`, true);
    }
    throw err;
  }
}

async function secretData(api: CoreV1Api, namespace: string, name: string, optional: boolean): Promise<Map<string, Buffer>> {
  try {
    const s = await api.readNamespacedSecret({ name, namespace });
    const out = new Map<string, Buffer>();
    for (const [k, v] of Object.entries(s.data ?? {})) out.set(k, Buffer.from(v, "base64"));
    return out;
  } catch (err) {
    if (isNotFound(err)) {
      if (optional) return new Map();
      throw new VolumeError(`secret "${name}" not found`, true);
    }
    throw err;
  }
}

export interface VolumeContext {
  api: CoreV1Api;
  pod: V1Pod;
  /** the pod's own directory on the host */
  podDir: string;
  /** the group that owns writable volumes (the pod's fsGroup) */
  fsGroup?: number;
}

/** Makes each volume a host directory and returns name -> directory. */
export async function prepareVolumes(ctx: VolumeContext): Promise<Map<string, string>> {
  const { api, pod } = ctx;
  const ns = pod.metadata?.namespace ?? "default";
  const out = new Map<string, string>();
  for (const v of pod.spec?.volumes ?? []) {
    out.set(v.name, await prepareVolume(ctx, ns, v, api));
  }
  return out;
}

async function prepareVolume(ctx: VolumeContext, ns: string, v: V1Volume, api: CoreV1Api): Promise<string> {
  const dir = join(ctx.podDir, "volumes", v.name);
  const podName = ctx.pod.metadata?.name ?? "";
  if (v.persistentVolumeClaim) {
    const claim = v.persistentVolumeClaim.claimName;
    const pvc = await api.readNamespacedPersistentVolumeClaim({ name: claim, namespace: ns }).catch((err: unknown) => {
      if (isNotFound(err)) throw new VolumeError(`persistentvolumeclaim "${claim}" not found`, true);
      throw err;
    });
    const pvName = pvc.spec?.volumeName;
    if (pvc.status?.phase !== "Bound" || !pvName) throw new VolumeError(`persistentvolumeclaim "${claim}" is not bound yet`, true);
    const pv = await api.readPersistentVolume({ name: pvName });
    const path = pv.spec?.hostPath?.path ?? pv.spec?.local?.path;
    if (!path) throw new VolumeError(`persistentvolume "${pvName}" has no hostPath or local path the shim can mount`, false);
    mkdirSync(path, { recursive: true });
    if (ctx.fsGroup !== undefined) {
      // What a kubelet does for fsGroup: the group owns the volume root and new files inherit it.
      chownSync(path, 0, ctx.fsGroup);
      chmodSync(path, 0o2775);
    }
    return path;
  }
  if (v.hostPath) {
    mkdirSync(v.hostPath.path, { recursive: true });
    return v.hostPath.path;
  }
  if (v.emptyDir) {
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o1777);
    return dir;
  }
  if (v.configMap) {
    const data = await configMapData(api, ns, v.configMap.name ?? "", v.configMap.optional ?? false);
    writeFiles(dir, pick(data, v.configMap.items), v.configMap.defaultMode ?? 0o644);
    return dir;
  }
  if (v.secret) {
    const data = await secretData(api, ns, v.secret.secretName ?? "", v.secret.optional ?? false);
    writeFiles(dir, pick(data, v.secret.items), v.secret.defaultMode ?? 0o644);
    return dir;
  }
  if (v.downwardAPI) {
    const files = new Map<string, Buffer>();
    for (const it of v.downwardAPI.items ?? []) {
      if (it.fieldRef) files.set(it.path, Buffer.from(fieldValue(ctx.pod, it.fieldRef)));
    }
    writeFiles(dir, files, v.downwardAPI.defaultMode ?? 0o644);
    return dir;
  }
  if (v.projected) {
    const files = new Map<string, Buffer>();
    for (const src of v.projected.sources ?? []) {
      if (src.serviceAccountToken) {
        const tr = await api.createNamespacedServiceAccountToken({
          name: ctx.pod.spec?.serviceAccountName ?? "default",
          namespace: ns,
          body: {
            spec: {
              audiences: src.serviceAccountToken.audience ? [src.serviceAccountToken.audience] : [],
              expirationSeconds: src.serviceAccountToken.expirationSeconds ?? 3607,
              boundObjectRef: { apiVersion: "v1", kind: "Pod", name: podName, uid: ctx.pod.metadata?.uid },
            },
          },
        });
        files.set(src.serviceAccountToken.path, Buffer.from(tr.status?.token ?? ""));
      } else if (src.configMap) {
        for (const [k, val] of pick(await configMapData(api, ns, src.configMap.name ?? "", src.configMap.optional ?? false), src.configMap.items))
          files.set(k, val);
      } else if (src.secret) {
        for (const [k, val] of pick(await secretData(api, ns, src.secret.name ?? "", src.secret.optional ?? false), src.secret.items)) files.set(k, val);
      } else if (src.downwardAPI) {
        for (const it of src.downwardAPI.items ?? []) if (it.fieldRef) files.set(it.path, Buffer.from(fieldValue(ctx.pod, it.fieldRef)));
      }
    }
    writeFiles(dir, files, v.projected.defaultMode ?? 0o644);
    return dir;
  }
  throw new VolumeError(`volume "${v.name}" has a type the node shim does not support`, false);
}
