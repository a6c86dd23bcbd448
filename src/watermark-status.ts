// status.watermarks: the event-time progress of a pipeline with a window step, as its workers report it. Every
// WATERMARK_INTERVAL_MS the operator reads each running worker's /metrics (the runtime's watermark gauges, the
// same numbers Prometheus scrapes) and writes the merged view into the status, with a field manager of its own,
// and only when a watermark moved: a pipeline whose event time stands still costs one pod list per interval.
import type { StreamPipeline, StreamPipelineStatus } from "./api.ts";
import { errorMessage } from "./log.ts";

export type WatermarkStatus = NonNullable<StreamPipelineStatus["watermarks"]>;

export const WATERMARK_INTERVAL_MS = 15_000;
/** How long one worker's /metrics may take before it counts as unread. */
export const SCRAPE_TIMEOUT_MS = 2_000;
/** The field manager of status.watermarks: the reconcile's status applies never carry the field. */
export const WATERMARK_FIELD_MANAGER = "conveyor-operator-watermarks";

const SOURCE_WATERMARK = "conveyor_runtime_source_watermark_ms";
const SOURCE_IDLE = "conveyor_runtime_source_idle";
const TASK_WATERMARK = "conveyor_runtime_task_watermark_ms";

/** What one worker reports: per source partition ("topic:partition") and per window task partition. */
export interface WorkerWatermarks {
  sources: Map<string, { topic: string; partition: number; watermark?: number; idle?: boolean }>;
  tasks: Map<number, number>;
}

/** A sample value in the Prometheus text format, where infinities are +Inf and -Inf. */
export function sampleValue(text: string): number {
  if (text === "+Inf") return Number.POSITIVE_INFINITY;
  if (text === "-Inf") return Number.NEGATIVE_INFINITY;
  return Number(text);
}

/** The labels of one sample line (`name{a="x",b="y"} v`); the runtime's label values never hold quotes. */
export function labelsOf(line: string): Record<string, string> {
  const open = line.indexOf("{");
  const close = line.lastIndexOf("}");
  const out: Record<string, string> = {};
  if (open < 0 || close < open) return out;
  for (const m of line.slice(open + 1, close).matchAll(/(\w+)="([^"]*)"/g)) out[m[1] as string] = m[2] as string;
  return out;
}

/** The watermark gauges in one worker's /metrics text. */
export function parseWorkerWatermarks(text: string): WorkerWatermarks {
  const out: WorkerWatermarks = { sources: new Map(), tasks: new Map() };
  for (const line of text.split("\n")) {
    const name = line.slice(0, line.search(/[{ ]/));
    if (name !== SOURCE_WATERMARK && name !== SOURCE_IDLE && name !== TASK_WATERMARK) continue;
    const labels = labelsOf(line);
    const value = sampleValue(line.slice(line.lastIndexOf(" ") + 1));
    const partition = Number(labels.partition);
    if (!Number.isInteger(partition) || Number.isNaN(value)) continue;
    if (name === TASK_WATERMARK) {
      // A pipeline with windows in several sub-topologies has a task of each per partition: the lowest says
      // how far event time is through all of them (one after a keyBy never runs ahead of the one before).
      out.tasks.set(partition, Math.min(out.tasks.get(partition) ?? Number.POSITIVE_INFINITY, value));
      continue;
    }
    const topic = labels.topic ?? "";
    const key = `${topic}:${partition}`;
    const entry = out.sources.get(key) ?? { topic, partition };
    if (name === SOURCE_WATERMARK) entry.watermark = value;
    else entry.idle = value === 1;
    out.sources.set(key, entry);
  }
  return out;
}

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * One view from every worker's report. A partition two workers report (one of them about to let it go in a
 * rebalance) takes the higher watermark: watermarks never go back. `low` is the lowest window task watermark,
 * and only when every task reported has one: until then some window task has not heard from every source.
 */
export function mergeWatermarks(reports: WorkerWatermarks[], unread: string[], now: Date): WatermarkStatus {
  const sources = new Map<string, { topic: string; partition: number; watermark?: number; idle?: boolean }>();
  const tasks = new Map<number, number>();
  for (const r of reports) {
    for (const [key, s] of r.sources) {
      const prev = sources.get(key);
      const watermark = Math.max(prev?.watermark ?? Number.NEGATIVE_INFINITY, s.watermark ?? Number.NEGATIVE_INFINITY);
      sources.set(key, {
        topic: s.topic,
        partition: s.partition,
        ...(Number.isFinite(watermark) ? { watermark } : {}),
        idle: (prev?.idle ?? true) && (s.idle ?? false),
      });
    }
    for (const [p, wm] of r.tasks) tasks.set(p, Math.max(tasks.get(p) ?? Number.NEGATIVE_INFINITY, wm));
  }
  const taskValues = [...tasks.values()];
  const low = taskValues.length > 0 ? Math.min(...taskValues) : Number.NEGATIVE_INFINITY;
  return {
    observedTime: now.toISOString(),
    ...(Number.isFinite(low) ? { low: iso(low) } : {}),
    sources: [...sources.values()]
      .sort((a, b) => (a.topic === b.topic ? a.partition - b.partition : a.topic < b.topic ? -1 : 1))
      .map((s) => ({
        topic: s.topic,
        partition: s.partition,
        ...(s.watermark !== undefined ? { watermark: iso(s.watermark) } : {}),
        idle: s.idle ?? false,
      })),
    tasks: [...tasks].sort(([a], [b]) => a - b).map(([partition, wm]) => ({ partition, ...(Number.isFinite(wm) ? { watermark: iso(wm) } : {}) })),
    ...(unread.length > 0 ? { unread } : {}),
  };
}

/** True when two views say the same, whenever they were read. */
export function sameWatermarks(a: WatermarkStatus | undefined, b: WatermarkStatus | undefined): boolean {
  if (!a || !b) return a === b;
  const { observedTime: _a, ...restA } = a;
  const { observedTime: _b, ...restB } = b;
  return JSON.stringify(restA) === JSON.stringify(restB);
}

export interface WorkerPod {
  name: string;
  ip?: string;
  /** the pod's Ready condition; false while its worker starts (or stops) */
  ready?: boolean;
}

/** True when a connection was refused: nothing listens on the port, at any depth of the error's causes. */
function refused(err: unknown, depth = 0): boolean {
  if (typeof err !== "object" || err === null || depth > 4) return false;
  if ((err as { code?: unknown }).code === "ECONNREFUSED") return true;
  return refused((err as { cause?: unknown }).cause, depth + 1);
}

export interface WatermarkDeps {
  /** the pipelines the operator knows, from its informer caches */
  pipelines(): StreamPipeline[];
  /** the pipeline's worker pods that are running, with their IPs */
  workerPods(p: StreamPipeline): Promise<WorkerPod[]>;
  /** one worker's /metrics text */
  scrape(pod: WorkerPod): Promise<string>;
  /** server-side apply of status.watermarks alone */
  applyWatermarks(p: StreamPipeline, watermarks: WatermarkStatus): Promise<void>;
  now(): Date;
  warn(msg: string, fields: Record<string, unknown>): void;
  /** the state-capacity forecast, fed each pass with the workers' metrics (pod name -> text) */
  capacity?: { observe(p: StreamPipeline, scraped: ReadonlyMap<string, string>): Promise<unknown>; retain(keys: ReadonlySet<string>): void };
}

/** The pipelines whose watermarks are read: a window step, and workers ready to report. */
export function observed(p: StreamPipeline): boolean {
  return (
    !p.metadata?.deletionTimestamp && (p.status?.readyReplicas ?? 0) > 0 && (p.spec.steps ?? []).some((s) => s.window !== undefined || s.join !== undefined)
  );
}

/**
 * Reads the watermarks of one pipeline's workers and writes them when they changed. A worker that cannot be
 * read is named in `unread` (its partitions are missing from the lists until the next read), and the read is
 * tried again at the next interval. One exception: a pod not Ready that refuses the connection is a worker
 * process that has not opened its port yet (it does so before it joins the group) or has closed it on the way
 * out. It holds no partition, so nothing is missing, and it is left out rather than named as unread.
 */
export async function refreshWatermarks(p: StreamPipeline, deps: WatermarkDeps): Promise<WatermarkStatus | undefined> {
  const pods = await deps.workerPods(p);
  const reports: WorkerWatermarks[] = [];
  const unread: string[] = [];
  const scraped = new Map<string, string>();
  await Promise.all(
    pods.map(async (pod) => {
      if (!pod.ip) {
        unread.push(`${pod.name}: no pod IP yet`);
        return;
      }
      try {
        const text = await deps.scrape(pod);
        scraped.set(pod.name, text);
        reports.push(parseWorkerWatermarks(text));
      } catch (err) {
        if (pod.ready === false && refused(err)) return;
        unread.push(`${pod.name}: ${errorMessage(err)}`);
      }
    }),
  );
  unread.sort();
  // The same reads feed the capacity forecast; a failure there is its own, and leaves the watermarks alone.
  await deps.capacity?.observe(p, scraped).catch((err: unknown) =>
    deps.warn("forecasting the state volumes' capacity failed; trying again at the next interval", {
      pipeline: `${p.metadata?.namespace}/${p.metadata?.name}`,
      error: errorMessage(err),
    }),
  );
  const next = mergeWatermarks(reports, unread, deps.now());
  if (sameWatermarks(p.status?.watermarks, next)) return undefined;
  await deps.applyWatermarks(p, next);
  return next;
}

/** Every WATERMARK_INTERVAL_MS, refreshes status.watermarks of each observed pipeline; one pass at a time. */
export class WatermarkObserver {
  private readonly deps: WatermarkDeps;
  private readonly intervalMs: number;
  private timer?: NodeJS.Timeout;
  private pass: Promise<void> = Promise.resolve();
  private running = false;
  private stopped = false;

  constructor(deps: WatermarkDeps, intervalMs = WATERMARK_INTERVAL_MS) {
    this.deps = deps;
    this.intervalMs = intervalMs;
  }

  start(): void {
    this.timer = setInterval(() => {
      // A pass still under way (many pipelines, slow workers) makes this tick skip: passes never pile up.
      if (this.running) return;
      this.running = true;
      this.pass = this.runOnce().finally(() => {
        this.running = false;
      });
    }, this.intervalMs);
  }

  /** One pass over the observed pipelines; a pipeline whose read or write failed is tried again next pass. */
  async runOnce(): Promise<void> {
    let pipelines: StreamPipeline[];
    try {
      pipelines = this.deps.pipelines().filter(observed);
      this.deps.capacity?.retain(new Set(pipelines.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`)));
    } catch (err) {
      this.deps.warn("listing the pipelines to read watermarks of failed; trying again at the next interval", { error: errorMessage(err) });
      return;
    }
    for (const p of pipelines) {
      if (this.stopped) return;
      try {
        await refreshWatermarks(p, this.deps);
      } catch (err) {
        this.deps.warn("reading the watermarks failed; trying again at the next interval", {
          pipeline: `${p.metadata?.namespace}/${p.metadata?.name}`,
          error: errorMessage(err),
        });
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.pass;
  }
}
