// `conveyor describe`: one pipeline as an on-call engineer needs it, read from where each part lives. The status
// and Events from the apiserver; offsets, lag and dead letters from Kafka with the pipeline's own connection
// (its Secrets); state, late records and who owns which partition from each worker's /metrics, through the
// apiserver's pod proxy so that it works from outside the cluster. A part that cannot be read is named under
// "could not read", and the rest is shown.
import { setTimeout as delay } from "node:timers/promises";
import { AppsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { Admin } from "@platformatic/kafka";
import { KafkaIo } from "../../runtime/kafka/kafka-io.ts";
import { consumerGroupOf, GROUP, PLURAL, type StreamPipeline, VERSION } from "../api.ts";
import { HTTP_PORT, selectorString } from "../children.ts";
import { clientOptions, type KafkaConnection } from "../kafka-client.ts";
import { connectionFor } from "../kafka-connection.ts";
import { statusCode } from "../kube-errors.ts";
import { errorMessage } from "../log.ts";
import { pipelineMeta } from "../reconcile.ts";
import { lagTargetFor } from "../scaling/decision-record.ts";
import { readSample } from "../scaling/lag-reader.ts";
import { CAPACITY_CONDITION } from "../state-capacity.ts";
import { type CompiledTopology, compile } from "../topology/compile.ts";
import { parseBytes } from "../topology/quantity.ts";
import { labelsOf, sampleValue } from "../watermark-status.ts";
import { readBack, sourceOf } from "./dead-letters.ts";

/** What `describe` shows, and `-o json` prints; offsets are decimal strings, times ISO 8601. */
export interface Description {
  namespace: string;
  name: string;
  generation?: number;
  observedGeneration?: number;
  consumerGroup: string;
  at: string;
  conditions: { type: string; status: string; reason: string; message: string; since: string }[];
  workers: {
    desired?: number;
    ready?: number;
    scaling?: { mode: string; desired: number; current: number; reason: string; cappedBy?: string; lag?: number; inputRate?: number; consumeRate?: number };
  };
  group?: { state: string; members: number };
  partitions: PartitionRow[];
  watermarks?: {
    observedTime: string;
    low?: string;
    lowBehindMs?: number;
    sources: { topic: string; partition: number; watermark?: string; behindMs?: number; idle: boolean }[];
    tasks: { partition: number; watermark?: string; behindMs?: number }[];
  };
  state: { pod: string; ready: boolean; stateBytes?: number; volume?: string; capacityBytes?: number; restoringRecords?: number }[];
  capacity?: { status: string; reason: string; message: string };
  deadLetters?: DeadLetterSummary;
  late: { step: string; action: string; count: number }[];
  /** with --watch: the group's total lag and the workers, read every intervalMs */
  trend?: { intervalMs: number; points: { at: string; lag?: number; workers?: number; ready?: number }[] };
  history: { at: string; reason: string; message: string }[];
  /** the parts that could not be read, and why */
  errors: string[];
}

export interface PartitionRow {
  topic: string;
  kind: "source" | "repartition";
  partition: number;
  /** absent: the group has committed nothing there yet */
  committed?: string;
  end?: string;
  /** end - committed, as kafka-consumer-groups shows it; absent when either is unknown */
  lag?: string;
  /** the worker whose /metrics reports the partition as its own */
  owner?: string;
}

export interface DeadLetterSummary {
  topic: string;
  windowMs: number;
  /** dead letters written within the window (by their conveyor.error.time), among those read */
  count: number;
  /** true when the read stopped at its bound before reaching the window's start: count is a lower bound */
  atLeast: boolean;
  byKind: { kind: string; step: string; count: number }[];
  last: { at: string; kind: string; step: string; source: string; error: string }[];
}

export interface DescribeOptions {
  now?: () => number;
  /** how far back dead letters count: an hour */
  dlqWindowMs?: number;
  /** the most dead letters read per partition of the DLQ topic */
  dlqMaxPerPartition?: number;
  progress?: (line: string) => void;
  /** the timeout of each worker's /metrics read */
  scrapeTimeoutMs?: number;
  /** read the lag and the workers again every intervalMs for this long, for the trend's sparklines */
  watchMs?: number;
  intervalMs?: number;
}

const SCALING_REASONS = new Set(["ScaledUp", "ScaledDown", "ScaledToZero", "WokeUp", "PartitionsGrown"]);
const HISTORY = 8;
const LAST_DEAD_LETTERS = 3;

/** A StreamPipeline, or an error that says it is not there. */
export async function readPipeline(kc: KubeConfig, namespace: string, name: string): Promise<StreamPipeline> {
  return (await kc
    .makeApiClient(CustomObjectsApi)
    .getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL, name })
    .catch((err: unknown) => {
      if (statusCode(err) === 404) throw new Error(`streampipeline ${namespace}/${name} not found`);
      throw err;
    })) as StreamPipeline;
}

export async function describePipeline(kc: KubeConfig, namespace: string, name: string, opts: DescribeOptions = {}): Promise<Description> {
  const now = opts.now ?? Date.now;
  const progress = opts.progress ?? (() => {});
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  progress(`reading streampipeline ${namespace}/${name}`);
  const p = await readPipeline(kc, namespace, name);
  const errors: string[] = [];
  const failed =
    (what: string) =>
    (err: unknown): undefined => {
      errors.push(`${what}: ${errorMessage(err)}`);
      return undefined;
    };
  const compiled = compile(p.spec, pipelineMeta(p));
  const topology = compiled.ok ? compiled.topology : undefined;
  if (!compiled.ok) errors.push(`the topology: it does not compile (${compiled.errors.length} errors; see the Ready condition)`);
  const status = p.status ?? {};
  const group = consumerGroupOf(p);
  const at = now();

  progress("reading the workers and their /metrics");
  const [pods, claims, sts, events] = await Promise.all([
    core.listNamespacedPod({ namespace, labelSelector: selectorString(p) }).then((l) => l.items, failed("the worker pods")),
    core.listNamespacedPersistentVolumeClaim({ namespace, labelSelector: selectorString(p) }).then((l) => l.items, failed("the state volumes")),
    apps.readNamespacedStatefulSet({ namespace, name }).catch((err: unknown) => (statusCode(err) === 404 ? undefined : failed("the StatefulSet")(err))),
    core
      .listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${name},involvedObject.uid=${p.metadata?.uid ?? ""}` })
      .then((l) => l.items, failed("the Events")),
  ]);
  const workers = (pods ?? []).filter((pod) => pod.metadata?.deletionTimestamp === undefined).sort((a, b) => podOrdinal(a) - podOrdinal(b));
  const metrics = new Map<string, string>();
  await Promise.all(
    workers
      .filter((pod) => pod.status?.phase === "Running")
      .map(async (pod) => {
        const podName = pod.metadata?.name ?? "";
        const text = await withTimeout(
          core.connectGetNamespacedPodProxyWithPath({ name: `${podName}:${HTTP_PORT}`, namespace, path: "metrics" }),
          opts.scrapeTimeoutMs ?? 5_000,
          `reading ${podName}'s /metrics`,
        ).catch(failed(`${podName}'s /metrics`));
        if (typeof text === "string") metrics.set(podName, text);
      }),
  );

  const description: Description = {
    namespace,
    name,
    ...(p.metadata?.generation !== undefined ? { generation: p.metadata.generation } : {}),
    ...(status.observedGeneration !== undefined ? { observedGeneration: status.observedGeneration } : {}),
    consumerGroup: group,
    at: new Date(at).toISOString(),
    conditions: (status.conditions ?? []).map((c) => ({ type: c.type, status: c.status, reason: c.reason, message: c.message, since: c.lastTransitionTime })),
    workers: {
      ...(sts?.spec?.replicas !== undefined ? { desired: sts.spec.replicas } : {}),
      ...(status.readyReplicas !== undefined ? { ready: status.readyReplicas } : {}),
      ...(status.scaling
        ? {
            scaling: {
              mode: p.spec.scaling?.mode ?? "fixed",
              desired: status.scaling.desired,
              current: status.scaling.current,
              reason: status.scaling.reason,
              ...(status.scaling.cappedBy ? { cappedBy: status.scaling.cappedBy } : {}),
              ...(status.scaling.lag !== undefined ? { lag: status.scaling.lag } : {}),
              ...(status.scaling.inputRate !== undefined ? { inputRate: status.scaling.inputRate } : {}),
              ...(status.scaling.consumeRate !== undefined ? { consumeRate: status.scaling.consumeRate } : {}),
            },
          }
        : {}),
    },
    partitions: [],
    state: workers.map((pod) => {
      const podName = pod.metadata?.name ?? "";
      const text = metrics.get(podName);
      const claim = (claims ?? []).find((c) => c.metadata?.name === `state-${podName}`);
      const capacity = claim?.status?.capacity?.storage;
      const restoring = text === undefined ? undefined : sum(samplesOf(text, "conveyor_runtime_restore_remaining_records"));
      return {
        pod: podName,
        ready: pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false,
        ...(text !== undefined && samplesOf(text, "conveyor_runtime_state_bytes").length > 0
          ? { stateBytes: sum(samplesOf(text, "conveyor_runtime_state_bytes")) }
          : {}),
        ...(claim?.metadata?.name ? { volume: claim.metadata.name } : {}),
        ...(capacity !== undefined && parseBytes(String(capacity)) !== undefined ? { capacityBytes: parseBytes(String(capacity)) } : {}),
        ...(restoring ? { restoringRecords: restoring } : {}),
      };
    }),
    late: lateRecords(metrics),
    history: (events ?? [])
      .filter((e) => SCALING_REASONS.has(e.reason ?? ""))
      .map((e) => ({ at: eventTime(e), reason: e.reason ?? "", message: e.message ?? "" }))
      .sort((x, y) => Date.parse(x.at) - Date.parse(y.at))
      .slice(-HISTORY),
    errors,
  };
  const capacity = status.conditions?.find((c) => c.type === CAPACITY_CONDITION);
  if (capacity) description.capacity = { status: capacity.status, reason: capacity.reason, message: capacity.message };
  if (status.watermarks) {
    const behind = (w?: string) => (w === undefined ? {} : { behindMs: at - Date.parse(w) });
    const w = status.watermarks;
    description.watermarks = {
      observedTime: w.observedTime,
      ...(w.low !== undefined ? { low: w.low, lowBehindMs: at - Date.parse(w.low) } : {}),
      sources: (w.sources ?? []).map((s) => ({ ...s, ...behind(s.watermark) })),
      tasks: (w.tasks ?? []).map((t) => ({ ...t, ...behind(t.watermark) })),
    };
  }

  if (!topology) return description;
  progress(`reading offsets from Kafka (${p.spec.kafka.bootstrapServers.join(", ")})`);
  const conn = await connectionFor(core, p).catch(failed("the Kafka credentials"));
  if (!conn) return description;
  const admin = new Admin({ clientId: "conveyor-describe", ...clientOptions(conn), timeout: 5_000, retries: 1 });
  try {
    const target = lagTargetFor(p, topology, conn);
    const reading = await readSample(admin, target, now);
    errors.push(...reading.errors);
    const { sample } = reading;
    if (sample.groupState !== undefined) description.group = { state: sample.groupState, members: sample.members ?? 0 };
    const owners = ownersFrom(metrics);
    const internal = new Set(target.internalTopics ?? []);
    const keys = [...new Set([...(sample.endOffsets?.keys() ?? []), ...(sample.committed?.keys() ?? [])])];
    description.partitions = keys
      .map((key) => {
        const cut = key.lastIndexOf(":");
        const topic = key.slice(0, cut);
        const partition = Number(key.slice(cut + 1));
        const end = sample.endOffsets?.get(key);
        const committed = sample.committed?.get(key);
        const row: PartitionRow = { topic, kind: internal.has(topic) ? "repartition" : "source", partition };
        if (committed !== undefined) row.committed = String(committed);
        if (end !== undefined) row.end = String(end);
        if (end !== undefined && committed !== undefined) row.lag = String(end > committed ? end - committed : 0n);
        const owner = owners.get(key);
        if (owner) row.owner = owner;
        return row;
      })
      .sort((x, y) => target.topics.indexOf(x.topic) - target.topics.indexOf(y.topic) || x.partition - y.partition);
    if (opts.watchMs !== undefined && opts.watchMs > 0) {
      const intervalMs = opts.intervalMs ?? 2_000;
      const points: NonNullable<Description["trend"]>["points"] = [];
      const totalLag = (r: typeof sample) => {
        if (!r.endOffsets || !r.committed) return undefined;
        let sum = 0n;
        for (const [key, end] of r.endOffsets) {
          const c = r.committed.get(key);
          if (c !== undefined && end > c) sum += end - c;
        }
        return Number(sum);
      };
      const until = now() + opts.watchMs;
      for (let next = now(); ; next += intervalMs) {
        const r = points.length === 0 ? sample : (await readSample(admin, target, now)).sample;
        const set = await apps.readNamespacedStatefulSet({ namespace, name }).catch(failed("the StatefulSet"));
        const lag = totalLag(r);
        points.push({
          at: new Date(now()).toISOString(),
          ...(lag !== undefined ? { lag } : {}),
          ...(set?.spec?.replicas !== undefined ? { workers: set.spec.replicas } : {}),
          ...(set ? { ready: set.status?.readyReplicas ?? 0 } : {}),
        });
        progress(`watching: ${points.length} readings`);
        if (next + intervalMs > until) break;
        await delay(Math.max(0, next + intervalMs - now()));
      }
      description.trend = { intervalMs, points };
    }
    if (topology.deadLetter) {
      progress(`reading the dead letters of the last hour from ${topology.deadLetter.topic}`);
      description.deadLetters = await deadLetters(conn, topology, at, opts).catch(failed(`the dead-letter topic ${topology.deadLetter.topic}`));
    }
  } finally {
    await admin.close().catch(failed("closing the Kafka admin"));
  }
  return description;
}

/** Dead letters written within the window, counted by kind and step, and the last few. */
async function deadLetters(conn: KafkaConnection, topology: CompiledTopology, at: number, opts: DescribeOptions): Promise<DeadLetterSummary> {
  const topic = topology.deadLetter?.topic as string;
  const windowMs = opts.dlqWindowMs ?? 3_600_000;
  const cap = BigInt(opts.dlqMaxPerPartition ?? 5_000);
  const io = new KafkaIo(clientOptions(conn), `conveyor-describe-${process.pid}`, "conveyor-describe-");
  try {
    return await readDeadLetters(io, topic, windowMs, cap, at - windowMs);
  } finally {
    await io.close();
  }
}

async function readDeadLetters(io: KafkaIo, topic: string, windowMs: number, cap: bigint, since: number): Promise<DeadLetterSummary> {
  // A dead letter keeps its source record's timestamp, so the broker's time index cannot find the window's
  // start: the read goes back from the end, at most `cap` per partition, and counts by conveyor.error.time.
  const counts = new Map<string, number>();
  const last: DeadLetterSummary["last"] = [];
  const oldest = new Map<number, number>();
  let count = 0;
  const cuts = await readBack(io, topic, cap, (d) => {
    oldest.set(d.partition, Math.min(oldest.get(d.partition) ?? Number.POSITIVE_INFINITY, d.time));
    if (!(d.time >= since)) return;
    count++;
    const key = `${d.kind}\u0000${d.step}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    last.push({ at: new Date(d.time).toISOString(), kind: d.kind, step: d.step, source: sourceOf(d), error: d.error });
    last.sort((x, y) => Date.parse(y.at) - Date.parse(x.at));
    last.length = Math.min(last.length, LAST_DEAD_LETTERS);
  });
  // the count is a lower bound when a partition's read stopped at the bound with every letter read in the window
  const atLeast = [...cuts].some(([p, c]) => c.cut && (oldest.get(p) ?? Number.POSITIVE_INFINITY) >= since);
  const byKind = [...counts]
    .map(([k, n]) => {
      const [kind, step] = k.split("\u0000") as [string, string];
      return { kind, step, count: n };
    })
    .sort((x, y) => y.count - x.count || x.kind.localeCompare(y.kind) || x.step.localeCompare(y.step));
  return { topic, windowMs, count, atLeast, byKind, last };
}

export interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** The samples of one metric in a Prometheus text exposition. */
export function samplesOf(text: string, name: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!(line.startsWith(`${name}{`) || line.startsWith(`${name} `))) continue;
    const value = sampleValue(line.slice(line.lastIndexOf(" ") + 1));
    if (!Number.isNaN(value)) out.push({ labels: labelsOf(line), value });
  }
  return out;
}

function sum(samples: Sample[]): number {
  return samples.reduce((s, x) => s + x.value, 0);
}

/** Which worker holds which partition: each worker reports lag only for the partitions it owns now. */
export function ownersFrom(metrics: ReadonlyMap<string, string>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [pod, text] of metrics)
    for (const s of samplesOf(text, "conveyor_runtime_lag_records"))
      if (s.labels.topic && s.labels.partition) out.set(`${s.labels.topic}:${s.labels.partition}`, pod);
  return out;
}

/** Late records since each worker started, summed over the workers, by step and what was done with them. */
export function lateRecords(metrics: ReadonlyMap<string, string>): Description["late"] {
  const counts = new Map<string, number>();
  for (const text of metrics.values())
    for (const s of samplesOf(text, "conveyor_runtime_records_late_total")) {
      const key = `${s.labels.step ?? "?"}\u0000${s.labels.action ?? "?"}`;
      counts.set(key, (counts.get(key) ?? 0) + s.value);
    }
  return [...counts].map(([k, count]) => {
    const [step, action] = k.split("\u0000") as [string, string];
    return { step, action, count };
  });
}

function podOrdinal(pod: V1Pod): number {
  const n = Number(/-(\d+)$/.exec(pod.metadata?.name ?? "")?.[1]);
  return Number.isFinite(n) ? n : Number.MAX_SAFE_INTEGER;
}

function eventTime(e: { lastTimestamp?: Date; eventTime?: Date; firstTimestamp?: Date; metadata?: { creationTimestamp?: Date } }): string {
  const t = e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp ?? e.metadata?.creationTimestamp;
  return t ? new Date(t).toISOString() : new Date(0).toISOString();
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
