// Controller plumbing: informers for StreamPipelines and the kinds they own, feeding one work queue.
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
  PolicyV1Api,
  setHeaderOptions,
  type V1PersistentVolumeClaim,
  type V1Pod,
  type V1StatefulSet,
} from "@kubernetes/client-node";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, type StreamPipelineStatus, VERSION } from "./api.ts";
import { FIELD_MANAGER, HTTP_PORT, type OperatorConfig, PIPELINE_LABEL, secretsVersion, selectorString } from "./children.ts";
import { type CachedInformer, cachedInformer, leanClaim, leanMetadata, leanPod } from "./informers.ts";
import type { KafkaAdmin, KafkaConnection } from "./kafka-admin.ts";
import { connectionFor, readSecrets } from "./kafka-connection.ts";
import { abortableKubeConfig } from "./kube-abort.ts";
import { retryAfterMs, statusCode } from "./kube-errors.ts";
import { pooledKubeConfig } from "./kube-pool.ts";
import { errorMessage, type Logger } from "./log.ts";
import { forgetScaling, type OperatorMetrics, operatorMetrics } from "./metrics.ts";
import { APPLIED_HASH_ANNOTATION, firstDifference, sameStatus, upToDate, withAppliedHash } from "./quiet-apply.ts";
import { type Context, conditionMessage, reconcile } from "./reconcile.ts";
import { Autoscaler } from "./scaling/autoscaler.ts";
import { LagReader } from "./scaling/lag-reader.ts";
import { CAPACITY_CONDITION, CAPACITY_FIELD_MANAGER, CapacityWatch } from "./state-capacity.ts";
import { ORPHANED_AT_ANNOTATION } from "./state-volumes.ts";
import { SCRAPE_TIMEOUT_MS, WATERMARK_FIELD_MANAGER, WatermarkObserver, type WatermarkStatus } from "./watermark-status.ts";
import { cappedBackoff, WorkQueue } from "./work-queue.ts";
import { ownedWorkerPods, SCRAPE_MAX_BYTES, scrapeMetrics } from "./worker-scrape.ts";

const MANAGED_SELECTOR = "app.kubernetes.io/managed-by=conveyor-operator";
/** The workers' PVCs carry the pods' selector labels (the volume claim template's), not the operator's. */
const RUNTIME_SELECTOR = "app.kubernetes.io/name=conveyor-runtime";
/**
 * Reconciles at once: each waits on the apiserver and Kafka most of its time, so a few in flight keep a burst of
 * edits moving (controller-runtime's MaxConcurrentReconciles, which it leaves at 1, is raised for I/O-bound
 * reconcilers the same way). CONVEYOR_RECONCILE_CONCURRENCY sets it.
 */
export const DEFAULT_CONCURRENCY = 8;

export interface ControllerOptions {
  kubeConfig: KubeConfig;
  config: OperatorConfig;
  log: Logger;
  metrics: OperatorMetrics;
  kafka: KafkaAdmin;
  /** watch only these namespaces (namespaced RBAC); empty or absent means all */
  watchNamespaces?: string[];
  /**
   * aborts when this process stops leading: every Kubernetes request of the reconciles and the watermark
   * observer ends then and none starts after, nor any Kafka write; absent without leader election
   */
  leadership?: AbortSignal;
  /** reconciles at once, never two of one pipeline; DEFAULT_CONCURRENCY when absent */
  concurrency?: number;
}

/** The Kafka admin of one leadership term: a write asked for after the term ended fails and is not made. */
export function fencedKafka(kafka: KafkaAdmin, leadership: AbortSignal): KafkaAdmin {
  const fenced =
    <A extends unknown[], R>(call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      leadership.throwIfAborted();
      return call(...args);
    };
  return {
    partitionCounts: (...a) => kafka.partitionCounts(...a),
    topicIds: (...a) => kafka.topicIds(...a),
    ensureTopics: fenced((...a) => kafka.ensureTopics(...a)),
    deleteTopics: fenced((...a) => kafka.deleteTopics(...a)),
    growTopic: fenced((...a) => kafka.growTopic(...a)),
    deleteGroup: fenced((...a) => kafka.deleteGroup(...a)),
    // The admin is the process's: closing is the caller's, not a term's.
    close: async () => {},
  };
}

/** A name for an error worth a metric label: its class, and the HTTP status for API errors. */
export function errorReason(err: unknown): string {
  if (!(err instanceof Error)) return "Unknown";
  const code = statusCode(err);
  return code !== undefined ? `${err.name}${code}` : err.name;
}

/** A delete whose object is gone already has done what it was for. */
async function unlessGone(deletion: Promise<unknown>): Promise<void> {
  try {
    await deletion;
  } catch (err) {
    if (statusCode(err) !== 404) throw err;
  }
}

/** Where a pipeline lives, as the custom-objects API names it. */
function pipelineRef(p: StreamPipeline): { group: string; version: string; plural: string; namespace: string; name: string } {
  return { group: GROUP, version: VERSION, plural: PLURAL, namespace: p.metadata?.namespace ?? "", name: p.metadata?.name ?? "" };
}

/**
 * The side effects reconcile may have, against one cluster. The autoscaler is the caller's to close; without
 * one, a lag reader of its own is made, which holds no connection until a pipeline in lag mode is read.
 */
export function makeContext(
  kc: KubeConfig,
  config: OperatorConfig,
  log: Logger,
  kafka: KafkaAdmin,
  metrics: OperatorMetrics = operatorMetrics(),
  autoscaler = new Autoscaler(new LagReader({ now: Date.now })),
  pipelines: () => StreamPipeline[] = () => [],
  cache?: ContextCache,
): Context & { forget(key: string): void } {
  const count = (call: string) => metrics.kubeRequests.inc({ call });
  // The dedupe key last recorded per pipeline and reason (the generation unless the caller says otherwise), so
  // that a retried reconcile does not repeat itself; one entry per pipeline and reason, however many events,
  // dropped when the pipeline goes.
  const recorded = new Map<string, Map<string, string>>();
  const custom = kc.makeApiClient(CustomObjectsApi);
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const applyOptions = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
  return {
    config,
    log,
    kafka,
    autoscaler,
    metrics,
    now: () => new Date(),
    connectionFor: (p) => connectionFor(core, p, () => count("readSecret")),
    pipelines,
    secretsVersion: async (p) => {
      const secrets = await readSecrets(core, p, () => count("readSecret"));
      return secretsVersion(Object.fromEntries([...secrets].map(([name, s]) => [name, s.metadata?.resourceVersion ?? ""])));
    },
    setFinalizers: async (p, finalizers) => {
      count("setFinalizers");
      await custom.patchNamespacedCustomObject({ ...pipelineRef(p), body: { metadata: { finalizers, resourceVersion: p.metadata?.resourceVersion } } }, merge);
    },
    deleteStatefulSet: async (namespace, name) => {
      count("deleteStatefulSet");
      await unlessGone(apps.deleteNamespacedStatefulSet({ name, namespace, propagationPolicy: "Background" }));
    },
    forget: (key) => {
      recorded.delete(key);
    },
    event: async (p, type, reason, message, dedupeKey = String(p.metadata?.generation)) => {
      const pipelineKey = `${p.metadata?.namespace}/${p.metadata?.name}`;
      const mine = recorded.get(pipelineKey) ?? new Map<string, string>();
      recorded.set(pipelineKey, mine);
      const key = `${p.metadata?.uid}/${reason}`;
      const before = mine.get(key);
      if (before === dedupeKey) return;
      mine.set(key, dedupeKey);
      const now = new Date();
      count("createEvent");
      try {
        await core.createNamespacedEvent({
          namespace: p.metadata?.namespace ?? "",
          body: {
            metadata: { generateName: `${p.metadata?.name}.`, namespace: p.metadata?.namespace },
            involvedObject: { apiVersion: API_VERSION, kind: KIND, name: p.metadata?.name, namespace: p.metadata?.namespace, uid: p.metadata?.uid },
            type,
            reason,
            message: conditionMessage(message),
            source: { component: FIELD_MANAGER },
            reportingComponent: FIELD_MANAGER,
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        });
      } catch (err) {
        if (before === undefined) mine.delete(key);
        else mine.set(key, before);
        log.warn("could not record an event", { pipeline: `${p.metadata?.namespace}/${p.metadata?.name}`, reason, error: errorMessage(err) });
      }
    },
    listStateVolumes: async (namespace, selector, fresh = false) => {
      let items: V1PersistentVolumeClaim[];
      if (cache && !fresh) items = cache.claims(namespace, selector);
      else {
        count("listPersistentVolumeClaims");
        items = (await core.listNamespacedPersistentVolumeClaim({ namespace, labelSelector: selector })).items;
      }
      return items.map((pvc) => ({
        name: pvc.metadata?.name ?? "",
        ...(pvc.spec?.resources?.requests?.storage !== undefined ? { requested: String(pvc.spec.resources.requests.storage) } : {}),
        ...(pvc.status?.capacity?.storage !== undefined ? { capacity: String(pvc.status.capacity.storage) } : {}),
        ...(pvc.metadata?.annotations?.[ORPHANED_AT_ANNOTATION] !== undefined ? { orphanedAt: pvc.metadata.annotations[ORPHANED_AT_ANNOTATION] } : {}),
        ...(pvc.metadata?.deletionTimestamp ? { deleting: true } : {}),
      }));
    },
    markStateVolume: async (namespace, name, orphanedAt) => {
      count("patchPersistentVolumeClaim");
      await core.patchNamespacedPersistentVolumeClaim(
        { name, namespace, body: { metadata: { annotations: { [ORPHANED_AT_ANNOTATION]: orphanedAt } } } },
        merge,
      );
    },
    resizeStateVolume: async (namespace, name, size) => {
      count("patchPersistentVolumeClaim");
      await core.patchNamespacedPersistentVolumeClaim({ name, namespace, body: { spec: { resources: { requests: { storage: size } } } } }, merge);
    },
    readStatefulSet: async (namespace, name) => {
      count("listStatefulSets");
      return (await apps.listNamespacedStatefulSet({ namespace, fieldSelector: `metadata.name=${name}` })).items[0];
    },
    orphanStatefulSet: async (namespace, name) => {
      count("deleteStatefulSet");
      await unlessGone(apps.deleteNamespacedStatefulSet({ name, namespace, propagationPolicy: "Orphan" }));
    },
    deleteStateVolume: async (namespace, name) => {
      count("deletePersistentVolumeClaim");
      await unlessGone(core.deleteNamespacedPersistentVolumeClaim({ name, namespace }));
    },
    countPods: async (namespace, selector) => {
      count("listPods");
      return (await core.listNamespacedPod({ namespace, labelSelector: selector })).items.length;
    },
    apply: async <T extends KubernetesObject>(obj: T) => {
      const desired = withAppliedHash(obj);
      const cached = cache?.object(obj.kind ?? "", obj.metadata?.namespace ?? "", obj.metadata?.name ?? "");
      if (cached && upToDate(cached, desired)) {
        metrics.writesSkipped.inc({ kind: obj.kind ?? "" });
        return cached as T;
      }
      const hash = desired.metadata?.annotations?.[APPLIED_HASH_ANNOTATION];
      if (cached?.metadata?.annotations?.[APPLIED_HASH_ANNOTATION] === hash)
        // applied as wanted before, and changed since by someone else (or stored otherwise than written): the
        // field, never its value
        log.info("applying again an object that differs from what was applied", {
          kind: obj.kind,
          object: `${obj.metadata?.namespace}/${obj.metadata?.name}`,
          field: firstDifference(cached, desired),
        });
      count("apply");
      return (await objects.patch(desired, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply)) as T;
    },
    applyStatus: async (p: StreamPipeline, full: StreamPipelineStatus) => {
      // status.watermarks is the watermark observer's (its own field manager): a reconcile that carried the
      // field from its cached object could put back older watermarks.
      // So is the condition StateCapacityAtRisk, the capacity forecast's (see state-capacity.ts).
      const { watermarks: _observed, ...rest } = full;
      const status = { ...rest, ...(rest.conditions ? { conditions: rest.conditions.filter((c) => c.type !== CAPACITY_CONDITION) } : {}) };
      const stored = cache?.pipeline(p.metadata?.namespace ?? "", p.metadata?.name ?? "");
      if (stored && stored.metadata?.uid === p.metadata?.uid && sameStatus(stored.status, status, ["watermarks"], [CAPACITY_CONDITION])) {
        metrics.writesSkipped.inc({ kind: "StreamPipelineStatus" });
        return;
      }
      count("applyStatus");
      await custom.patchNamespacedCustomObjectStatus(
        {
          ...pipelineRef(p),
          body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: p.metadata?.name, namespace: p.metadata?.namespace }, status },
          fieldManager: FIELD_MANAGER,
          force: true,
        },
        applyOptions,
      );
    },
  };
}

/** What the informers hold, for a reconcile that reads before it writes. */
export interface ContextCache {
  /** a child of a pipeline (ConfigMap, Service, PodDisruptionBudget, StatefulSet) as last seen */
  object(kind: string, namespace: string, name: string): KubernetesObject | undefined;
  /** a pipeline as last seen */
  pipeline(namespace: string, name: string): StreamPipeline | undefined;
  /** the PVCs of a namespace whose labels match `selector` ("k=v,k=v") */
  claims(namespace: string, selector: string): V1PersistentVolumeClaim[];
}

/** Whether `labels` carry every `k=v` of `selector`. */
export function matchesSelector(labels: Record<string, string> | undefined, selector: string): boolean {
  return selector
    .split(",")
    .filter((term) => term !== "")
    .every((term) => {
      const eq = term.indexOf("=");
      return labels?.[term.slice(0, eq)] === term.slice(eq + 1);
    });
}

/** The kinds of child the operator applies, each watched by the operator's label. */
const CHILD_KINDS = ["StatefulSet", "ConfigMap", "Service", "PodDisruptionBudget"] as const;
type ChildKind = (typeof CHILD_KINDS)[number];
/** Each kind's resource, as the API paths and the informer metrics name it. */
const CHILD_RESOURCES: Record<ChildKind, string> = {
  StatefulSet: "statefulsets",
  ConfigMap: "configmaps",
  Service: "services",
  PodDisruptionBudget: "poddisruptionbudgets",
};

/**
 * The informers of one scope (every namespace, or one), each holding only what the reconciles read
 * (informers.ts): the pipelines; their children, StatefulSets, ConfigMaps, Services and PodDisruptionBudgets, by
 * the operator's label; the workers' state PVCs and pods, by the runtime's.
 */
class ScopeInformers {
  readonly pipelines: CachedInformer<StreamPipeline>;
  readonly children: Record<ChildKind, CachedInformer<KubernetesObject>>;
  readonly claims: CachedInformer<V1PersistentVolumeClaim>;
  readonly pods: CachedInformer<V1Pod>;

  constructor(kc: KubeConfig, ns: string | undefined, onList: (resource: string) => void) {
    const custom = kc.makeApiClient(CustomObjectsApi);
    const apps = kc.makeApiClient(AppsV1Api);
    const core = kc.makeApiClient(CoreV1Api);
    const policy = kc.makeApiClient(PolicyV1Api);
    const path = (group: string, resource: string) => `${group}${ns ? `/namespaces/${ns}` : ""}/${resource}`;
    const listed =
      <T extends KubernetesObject>(resource: string, list: () => Promise<KubernetesListObject<T>>) =>
      () => {
        onList(resource);
        return list();
      };
    const byLabel = { labelSelector: MANAGED_SELECTOR };
    const runtimeLabel = { labelSelector: RUNTIME_SELECTOR };
    this.pipelines = cachedInformer<StreamPipeline>(
      kc,
      path(`/apis/${GROUP}/${VERSION}`, PLURAL),
      listed(
        PLURAL,
        async () =>
          (ns
            ? await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: ns })
            : await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as KubernetesListObject<StreamPipeline>,
      ),
      leanMetadata,
    );
    const child = <T extends KubernetesObject>(group: string, resource: string, list: () => Promise<KubernetesListObject<T>>) =>
      cachedInformer<T>(kc, path(group, resource), listed(resource, list), leanMetadata, MANAGED_SELECTOR) as unknown as CachedInformer<KubernetesObject>;
    this.children = {
      StatefulSet: child("/apis/apps/v1", CHILD_RESOURCES.StatefulSet, () =>
        ns ? apps.listNamespacedStatefulSet({ namespace: ns, ...byLabel }) : apps.listStatefulSetForAllNamespaces(byLabel),
      ),
      ConfigMap: child("/api/v1", CHILD_RESOURCES.ConfigMap, () =>
        ns ? core.listNamespacedConfigMap({ namespace: ns, ...byLabel }) : core.listConfigMapForAllNamespaces(byLabel),
      ),
      Service: child("/api/v1", CHILD_RESOURCES.Service, () =>
        ns ? core.listNamespacedService({ namespace: ns, ...byLabel }) : core.listServiceForAllNamespaces(byLabel),
      ),
      PodDisruptionBudget: child("/apis/policy/v1", CHILD_RESOURCES.PodDisruptionBudget, () =>
        ns ? policy.listNamespacedPodDisruptionBudget({ namespace: ns, ...byLabel }) : policy.listPodDisruptionBudgetForAllNamespaces(byLabel),
      ),
    };
    this.claims = cachedInformer<V1PersistentVolumeClaim>(
      kc,
      path("/api/v1", "persistentvolumeclaims"),
      listed("persistentvolumeclaims", () =>
        ns ? core.listNamespacedPersistentVolumeClaim({ namespace: ns, ...runtimeLabel }) : core.listPersistentVolumeClaimForAllNamespaces(runtimeLabel),
      ),
      leanClaim,
      RUNTIME_SELECTOR,
    );
    this.pods = cachedInformer<V1Pod>(
      kc,
      path("/api/v1", "pods"),
      listed("pods", () => (ns ? core.listNamespacedPod({ namespace: ns, ...byLabel }) : core.listPodForAllNamespaces(byLabel))),
      leanPod,
      MANAGED_SELECTOR,
    );
  }

  all(): CachedInformer<KubernetesObject>[] {
    return [this.pipelines, ...Object.values(this.children), this.claims, this.pods] as CachedInformer<KubernetesObject>[];
  }
}

export class Controller {
  private readonly queue: WorkQueue;
  private readonly scopes: ScopeInformers[];
  private readonly ctx: Context & { forget(key: string): void };
  /** one lag reader for the process's term as leader, closed when the controller stops */
  private readonly autoscaler: Autoscaler;
  private readonly log: Logger;
  private readonly metrics: OperatorMetrics;
  private readonly watermarks: WatermarkObserver;
  private stopped = false;
  synced = false;

  constructor(opts: ControllerOptions) {
    const kc = pooledKubeConfig(opts.kubeConfig);
    this.log = opts.log;
    this.metrics = opts.metrics;
    // One set of informers per scope: every namespace, or each the operator may see. The watches read only;
    // what writes, and what it reads on the way, ends with the term.
    const namespaces: (string | undefined)[] = opts.watchNamespaces && opts.watchNamespaces.length > 0 ? opts.watchNamespaces : [undefined];
    this.scopes = namespaces.map((ns) => new ScopeInformers(kc, ns, (resource) => this.metrics.informerLists.inc({ resource })));
    const scopeOf = (namespace: string) => this.scopes.find((s, i) => namespaces[i] === undefined || namespaces[i] === namespace);
    const termKc = opts.leadership ? abortableKubeConfig(kc, opts.leadership) : kc;
    const kafka = opts.leadership ? fencedKafka(opts.kafka, opts.leadership) : opts.kafka;
    this.autoscaler = new Autoscaler(new LagReader({ now: Date.now }));
    const cache: ContextCache = {
      object: (kind, namespace, name) =>
        CHILD_KINDS.includes(kind as ChildKind) ? scopeOf(namespace)?.children[kind as ChildKind].get(name, namespace) : undefined,
      pipeline: (namespace, name) => scopeOf(namespace)?.pipelines.get(name, namespace),
      claims: (namespace, selector) => (scopeOf(namespace)?.claims.list(namespace) ?? []).filter((c) => matchesSelector(c.metadata?.labels, selector)),
    };
    this.ctx = makeContext(termKc, opts.config, opts.log, kafka, opts.metrics, this.autoscaler, () => this.pipelineList(), cache);
    const termCustom = termKc.makeApiClient(CustomObjectsApi);
    const applyOptions = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
    const count = (call: string) => this.metrics.kubeRequests.inc({ call });
    this.watermarks = new WatermarkObserver({
      pipelines: () => this.pipelineList(),
      workerPods: async (p) => {
        const namespace = p.metadata?.namespace ?? "";
        const scope = scopeOf(namespace);
        const sts = scope?.children.StatefulSet.get(p.metadata?.name ?? "", namespace) as V1StatefulSet | undefined;
        if (!scope || !sts) return [];
        const selector = selectorString(p);
        return ownedWorkerPods(
          p,
          sts,
          scope.pods.list(namespace).filter((pod) => matchesSelector(pod.metadata?.labels, selector)),
        );
      },
      scrape: (pod) => {
        const host = pod.ip?.includes(":") ? `[${pod.ip}]` : pod.ip; // an IPv6 pod address goes in brackets
        return scrapeMetrics(`http://${host}:${HTTP_PORT}/metrics`, { timeoutMs: SCRAPE_TIMEOUT_MS, maxBytes: SCRAPE_MAX_BYTES });
      },
      applyWatermarks: async (p: StreamPipeline, watermarks: WatermarkStatus) => {
        count("applyWatermarks");
        await termCustom.patchNamespacedCustomObjectStatus(
          {
            ...pipelineRef(p),
            body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: p.metadata?.name, namespace: p.metadata?.namespace }, status: { watermarks } },
            fieldManager: WATERMARK_FIELD_MANAGER,
            force: true,
          },
          applyOptions,
        );
      },
      now: () => new Date(),
      warn: (msg, fields) => this.log.warn(msg, fields),
      capacity: new CapacityWatch({
        stateVolumes: (p) => this.ctx.listStateVolumes(p.metadata?.namespace ?? "", selectorString(p)),
        applyCondition: async (p, condition) => {
          count("applyCapacityCondition");
          await termCustom.patchNamespacedCustomObjectStatus(
            {
              ...pipelineRef(p),
              body: {
                apiVersion: API_VERSION,
                kind: KIND,
                metadata: { name: p.metadata?.name, namespace: p.metadata?.namespace },
                status: { conditions: [{ ...condition, observedGeneration: p.metadata?.generation }] },
              },
              fieldManager: CAPACITY_FIELD_MANAGER,
              force: true,
            },
            applyOptions,
          );
        },
        event: (p, reason, message, dedupeKey) => this.ctx.event(p, "Warning", reason, message, dedupeKey),
        now: Date.now,
      }),
    });

    this.queue = new WorkQueue(
      (key) => this.reconcileKey(key),
      (key, err, retryInMs) => {
        if (opts.leadership?.aborted) {
          this.log.info("reconcile stopped: leadership lost", { pipeline: key, error: errorMessage(err) });
          return;
        }
        this.metrics.reconcileErrors.inc({ reason: errorReason(err) });
        this.log.error("reconcile failed", { pipeline: key, error: errorMessage(err), reason: errorReason(err), retryInMs });
      },
      // An apiserver that sheds load (API Priority and Fairness answers 429) says when to come back.
      { concurrency: opts.concurrency ?? DEFAULT_CONCURRENCY, retryAfterMs },
    );
  }

  private pipelineList(): StreamPipeline[] {
    return this.scopes.flatMap((s) => s.pipelines.list());
  }

  private async reconcileKey(key: string): Promise<{ requeueAfterMs?: number; waitingFor?: string }> {
    this.metrics.queueDepth.set(this.queue.depth);
    const [namespace, name] = key.split("/") as [string, string];
    const p = this.scopes.map((i) => i.pipelines.get(name, namespace)).find((x) => x !== undefined);
    if (!p) {
      // Nothing of a pipeline that is gone stays in memory: its scaling, its events' dedupe keys, its series.
      this.autoscaler.forget(key);
      this.ctx.forget(key);
      await forgetScaling(this.metrics, { namespace, pipeline: name });
      return {};
    }
    const end = this.metrics.reconcileDuration.startTimer();
    try {
      const action = await reconcile(p, this.ctx);
      end({ result: "success" });
      this.metrics.reconciles.inc({ result: "success" });
      return "done" in action ? {} : action;
    } catch (err) {
      end({ result: "error" });
      this.metrics.reconciles.inc({ result: "error" });
      throw err;
    }
  }

  private enqueuePipeline = (p: KubernetesObject): void => {
    this.queue.add(`${p.metadata?.namespace}/${p.metadata?.name}`);
  };

  private enqueueOwner = (o: KubernetesObject): void => {
    const owner = o.metadata?.ownerReferences?.find((r) => r.controller && r.kind === KIND && r.apiVersion === API_VERSION);
    if (owner) this.queue.add(`${o.metadata?.namespace}/${owner.name}`);
  };

  /** A PVC of a worker, by the pipeline label its volume claim template gives it. */
  private enqueueLabelled = (o: KubernetesObject): void => {
    const name = o.metadata?.labels?.[PIPELINE_LABEL];
    if (name) this.queue.add(`${o.metadata?.namespace}/${name}`);
  };

  private watch<T extends KubernetesObject>(name: string, informer: Informer<T>, handler?: (o: T) => void): Promise<void> {
    if (handler) {
      informer.on("add", handler);
      informer.on("update", handler);
      informer.on("delete", handler);
    }
    // A failed list or watch starts again with capped backoff, or when the apiserver says (429), and counts.
    let failures = 0;
    const restart = (err: unknown) => {
      if (this.stopped) return;
      const delayMs = Math.max(cappedBackoff(failures++, 1_000, 30_000), retryAfterMs(err) ?? 0);
      this.metrics.informerErrors.inc({ resource: name });
      this.log.warn("watch failed; restarting it", { informer: name, error: errorMessage(err), retryInMs: delayMs });
      setTimeout(() => {
        if (!this.stopped) informer.start().catch(restart);
      }, delayMs);
    };
    informer.on("error", restart);
    // an event is a watch that works again: the next failure starts the backoff over
    const working = () => {
      failures = 0;
    };
    for (const verb of ["add", "update", "delete"] as const) informer.on(verb, working);
    return informer.start();
  }

  async start(): Promise<void> {
    // Children and volumes first: a pipeline's first reconcile finds its objects in the caches.
    for (const s of this.scopes) {
      for (const kind of CHILD_KINDS) await this.watch(CHILD_RESOURCES[kind], s.children[kind], this.enqueueOwner);
      await this.watch("persistentvolumeclaims", s.claims, this.enqueueLabelled);
      await this.watch("pods", s.pods);
    }
    for (const s of this.scopes) await this.watch("streampipelines", s.pipelines, this.enqueuePipeline);
    this.synced = true;
    this.watermarks.start();
    this.log.info("controller started");
  }

  /** Stops taking work, waits for reconciles in flight to finish, then stops the watches. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.watermarks.stop();
    this.queue.stop();
    await this.queue.idle();
    await Promise.all(this.scopes.flatMap((s) => s.all()).map((i) => i.stop()));
    await this.autoscaler.close();
  }
}
