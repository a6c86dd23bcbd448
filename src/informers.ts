// Informers whose caches hold only what the operator reads. client-node's ListWatch keeps each object as the
// apiserver sends it, managedFields and all (often half an object's size, and more for one with several field
// managers); here every listed and watched object first goes through a transform, as controller-runtime's
// cache.Options.DefaultTransform does, so the cache of a thousand pipelines and their children stays small.
import {
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  type ObjectCache,
  type V1ObjectMeta,
  type V1PersistentVolumeClaim,
  type V1Pod,
  Watch,
} from "@kubernetes/client-node";

export type CachedInformer<T extends KubernetesObject> = Informer<T> & ObjectCache<T>;

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

/** An object's metadata without managedFields and kubectl's copy of the last applied object: nothing reads them. */
export function leanMetadata<T extends KubernetesObject>(o: T): T {
  if (!o.metadata) return o;
  const { managedFields: _fields, ...metadata } = o.metadata;
  if (metadata.annotations?.[LAST_APPLIED] !== undefined) {
    const { [LAST_APPLIED]: _last, ...annotations } = metadata.annotations;
    metadata.annotations = annotations;
  }
  return { ...o, metadata };
}

/** The identity of an object, and what says who owns it and why: its name, labels, annotations and owners. */
function leanIdentity(o: KubernetesObject): V1ObjectMeta {
  const m = leanMetadata(o).metadata ?? {};
  return {
    name: m.name,
    namespace: m.namespace,
    ...(m.labels ? { labels: m.labels } : {}),
    ...(m.annotations ? { annotations: m.annotations } : {}),
    ...(m.ownerReferences ? { ownerReferences: m.ownerReferences } : {}),
    ...(m.deletionTimestamp ? { deletionTimestamp: m.deletionTimestamp } : {}),
    resourceVersion: m.resourceVersion,
    uid: m.uid,
  };
}

/** A PVC as the state-volume code reads it: its identity, its request and its capacity. */
export function leanClaim(pvc: V1PersistentVolumeClaim): V1PersistentVolumeClaim {
  const storage = pvc.spec?.resources?.requests?.storage;
  const capacity = pvc.status?.capacity?.storage;
  return {
    metadata: leanIdentity(pvc),
    ...(storage !== undefined ? { spec: { resources: { requests: { storage } } } } : {}),
    ...(capacity !== undefined ? { status: { capacity: { storage: capacity } } } : {}),
  };
}

/** A pod as the watermark observer reads it: its identity and owner, its phase, its Ready condition and its IP. */
export function leanPod(pod: V1Pod): V1Pod {
  const ready = pod.status?.conditions?.find((c) => c.type === "Ready");
  return {
    metadata: leanIdentity(pod),
    status: {
      ...(pod.status?.phase ? { phase: pod.status.phase } : {}),
      ...(pod.status?.podIP ? { podIP: pod.status.podIP } : {}),
      ...(ready ? { conditions: [{ type: "Ready", status: ready.status }] } : {}),
    },
  };
}

/** Watch events pass through `transform`; watches ask for bookmarks, so a quiet watch resumes without a relist. */
class TransformingWatch<T extends KubernetesObject> extends Watch {
  private readonly transform: (o: T) => T;

  constructor(kc: KubeConfig, transform: (o: T) => T) {
    super(kc);
    this.transform = transform;
  }

  override watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    return super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true },
      (phase, obj) => callback(phase, phase === "ADDED" || phase === "MODIFIED" || phase === "DELETED" ? this.transform(obj as T) : obj),
      done,
    );
  }
}

/**
 * An informer (list, then watch) over `path` whose cache holds each object as `transform` returns it. The
 * label selector, when given, applies to the list function's call too: the caller passes it to both.
 */
export function cachedInformer<T extends KubernetesObject>(
  kc: KubeConfig,
  path: string,
  list: () => Promise<KubernetesListObject<T>>,
  transform: (o: T) => T,
  labelSelector?: string,
): CachedInformer<T> {
  const listLean = async (): Promise<KubernetesListObject<T>> => {
    const l = await list();
    return { ...l, items: l.items.map(transform) };
  };
  return new ListWatch<T>(path, new TransformingWatch<T>(kc, transform), listLean, false, labelSelector);
}
