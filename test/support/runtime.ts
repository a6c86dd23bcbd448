// Runs the Conveyor runtime as a local worker process against the bed's broker, without Kubernetes: the
// pipeline's compiled config in a file, a state directory, and probes and metrics on a free port.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after } from "node:test";
import type { Admin } from "@platformatic/kafka";
import type { StepSpec, StreamPipelineSpec } from "../../src/api-types.gen.ts";
import type { PipelineConfig } from "../../src/pipeline-config.ts";
import { type CompiledTopology, compile, formatCompileError } from "../../src/topology/compile.ts";
import { sampleValue } from "../../src/watermark-status.ts";
import { freePort, isAlive, type Started, startProcess, stopProcess } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { type BedEnv, bedEnv, uniqueSuffix } from "./bed.ts";
import { admin, createInternalTopics, createTopic } from "./kafka.ts";

export interface RuntimeProcess {
  proc: Started;
  port: number;
  topology: CompiledTopology;
  /** the sum of a metric's samples (all label sets), read from /metrics */
  metric(name: string): Promise<number>;
  /** every sample of a metric, one per label set */
  samples(name: string): Promise<number[]>;
}

/** Compiles a spec as the operator does; a spec that does not compile fails the test with its errors. */
export function compiled(spec: StreamPipelineSpec, meta: { namespace: string; name: string }): CompiledTopology {
  const r = compile(spec, meta);
  if (!r.ok) throw new Error(`the test's pipeline does not compile: ${r.errors.map(formatCompileError).join("; ")}`);
  return r.topology;
}

export async function startRuntime(opts: {
  dir: string;
  namespace: string;
  name: string;
  spec: StreamPipelineSpec;
  /** the pod's name: each worker of a pipeline needs its own */
  pod?: string;
  /** the state volume; defaults to <dir>/<pod>-state */
  stateDir?: string;
  /** more environment for the worker (a tuning knob a test shortens) */
  env?: Record<string, string>;
  /** the checkout whose runtime runs (previousRuntime); this repository's by default */
  root?: string;
}): Promise<RuntimeProcess> {
  const topology = compiled(opts.spec, { namespace: opts.namespace, name: opts.name });
  const config: PipelineConfig = {
    pipeline: { namespace: opts.namespace, name: opts.name },
    consumerGroup: topology.applicationId,
    kafka: { bootstrapServers: [...opts.spec.kafka.bootstrapServers] },
    topology,
  };
  const pod = opts.pod ?? `${opts.name}-0`;
  mkdirSync(opts.dir, { recursive: true });
  const file = join(opts.dir, `${pod}.json`);
  writeFileSync(file, JSON.stringify(config));
  const port = await freePort();
  const proc = startProcess({
    name: `runtime ${pod}`,
    cmd: process.execPath,
    args: [join(opts.root ?? repoRoot, "runtime/main.ts")],
    log: join(opts.dir, `${pod}.log`),
    cwd: opts.root ?? repoRoot,
    env: {
      ...process.env,
      CONVEYOR_CONFIG: file,
      CONVEYOR_STATE_DIR: opts.stateDir ?? join(opts.dir, `${pod}-state`),
      POD_NAME: pod,
      POD_IP: "127.0.0.1",
      CONVEYOR_HTTP_PORT: String(port),
      ...opts.env,
    },
  });
  const samples = async (name: string): Promise<number[]> => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    return text
      .split("\n")
      .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
      .map((l) => sampleValue(l.split(" ").at(-1) ?? ""));
  };
  const metric = async (name: string) => (await samples(name)).reduce((a, b) => a + b, 0);
  return { proc, port, topology, metric, samples };
}

/**
 * The kubelet's part for the worker pods of one pipeline: each pod keeps its name and state directory, as a
 * StatefulSet's would, and a pod whose process exited is started again by `supervise()`.
 */
export class WorkerSet {
  readonly workers = new Map<string, RuntimeProcess>();
  restarts = 0;
  private readonly base: { dir: string; namespace: string; name: string; spec: StreamPipelineSpec; env?: Record<string, string> };
  readonly pods: string[];

  constructor(base: { dir: string; namespace: string; name: string; spec: StreamPipelineSpec; env?: Record<string, string> }, pods: string[]) {
    this.base = base;
    this.pods = pods;
  }

  /** Starts a pod's worker: this repository's runtime, or the one checked out at `root` (previousRuntime). */
  async start(pod: string, root?: string): Promise<RuntimeProcess> {
    const w = await startRuntime({ ...this.base, pod, stateDir: join(this.base.dir, `${pod}-state`), ...(root ? { root } : {}) });
    this.workers.set(pod, w);
    return w;
  }

  async startAll(): Promise<void> {
    for (const pod of this.pods) await this.start(pod);
  }

  /** Starts again every pod whose process has exited. */
  async supervise(): Promise<void> {
    for (const pod of this.pods) {
      const w = this.workers.get(pod);
      if (w && !isAlive(w.proc.pid)) {
        this.restarts++;
        await this.start(pod);
      }
    }
  }

  /** Signals a pod's process group (the worker and anything it started). */
  kill(pod: string, signal: NodeJS.Signals): void {
    const w = this.workers.get(pod);
    if (!w || !isAlive(w.proc.pid)) throw new Error(`pod ${pod} is not running`);
    process.kill(-w.proc.pid, signal);
  }

  async stopAll(): Promise<void> {
    for (const w of this.workers.values()) if (isAlive(w.proc.pid)) await stopProcess(w.proc.pid);
  }
}

/**
 * The windowed pipeline the runtime's window tests replay: keyBy value.user, then a window over the event time
 * value.ts (5 s out of order allowed, idle after 10 min) counting records and summing value.amount, plus
 * `aggregate`, with late records to their own topic. `rest` adds to the spec (a dead-letter topic, the guarantee).
 */
export function userWindowSpec(o: {
  bootstrap: string;
  source: string;
  sink: string;
  late: string;
  window: NonNullable<StepSpec["window"]>;
  emit: NonNullable<StepSpec["emit"]>;
  aggregate?: NonNullable<StepSpec["aggregate"]>;
  rest?: Partial<StreamPipelineSpec>;
}): StreamPipelineSpec {
  return {
    kafka: { bootstrapServers: [o.bootstrap] },
    source: { topics: [o.source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "5s", idleTimeout: "10m" } },
    steps: [
      { name: "by-user", keyBy: "value.user" },
      { name: "agg", window: o.window, aggregate: { n: { count: {} }, total: { sum: "value.amount" }, ...o.aggregate }, emit: o.emit, late: { topic: o.late } },
    ],
    sink: { topic: o.sink },
    ...o.rest,
  };
}

/**
 * A windowed pipeline of a test's own on the bed (userWindowSpec): its topics named `<prefix>-<src|out|late>-<suffix>`,
 * the source with `partitions` partitions, the sink and late topics with `outPartitions`, and the internal topics as the
 * operator would create them (as many partitions as the source).
 */
export async function windowedPipeline(
  a: Admin,
  o: {
    bootstrap: string;
    prefix: string;
    suffix: string;
    name: string;
    window: NonNullable<StepSpec["window"]>;
    partitions: number;
    outPartitions?: number;
    rest?: Partial<StreamPipelineSpec>;
  },
): Promise<{ spec: StreamPipelineSpec; topology: CompiledTopology; source: string; sink: string; late: string; repartition: string }> {
  const [source, sink, late] = ["src", "out", "late"].map((t) => `${o.prefix}-${t}-${o.suffix}`) as [string, string, string];
  const spec = userWindowSpec({ bootstrap: o.bootstrap, source, sink, late, window: o.window, emit: "onWindowClose", ...(o.rest ? { rest: o.rest } : {}) });
  const topology = compiled(spec, { namespace: "it", name: o.name });
  const repartition = topology.internalTopics.find((t) => t.endsWith("-repartition")) as string;
  await createTopic(a, source, o.partitions);
  for (const t of [sink, late]) await createTopic(a, t, o.outPartitions ?? 1);
  await createInternalTopics(a, topology, o.partitions);
  return { spec, topology, source, sink, late, repartition };
}

/**
 * A runtime suite's own world on the shared bed, for the calling describe block: a directory and a suffix of its
 * own, an admin client, and the workers it starts (pushed onto `workers`), every one stopped after it.
 */
export function runtimeSuite(prefix: string): { env: BedEnv; suffix: string; dir: string; a: Admin; workers: RuntimeProcess[] } {
  const env = bedEnv();
  const suffix = uniqueSuffix();
  const workers: RuntimeProcess[] = [];
  const a = admin(env.bootstrap);
  after(async () => {
    for (const w of workers) if (isAlive(w.proc.pid)) await stopProcess(w.proc.pid);
    await a.close();
  });
  return { env, suffix, dir: join(env.state.dir, `${prefix}-${suffix}`), a, workers };
}

/** A stateless pipeline from `source` to `sink` through one filter, with a dead-letter topic: the runtime's plainest path. */
export function passThroughSpec(o: { bootstrap: string; source: string; sink: string; dlq: string; filter?: string; name?: string }): StreamPipelineSpec {
  return {
    kafka: { bootstrapServers: [o.bootstrap] },
    source: { topics: [o.source], startFrom: "earliest" },
    steps: [{ name: o.name ?? "all", filter: o.filter ?? "true" }],
    sink: { topic: o.sink },
    deadLetter: { topic: o.dlq },
  };
}

/**
 * The runtime as it was at `commit`, for an upgrade test: its runtime/ and src/ from git, beside this checkout's
 * node_modules, under `dir`. A clean clone has the history; the test fails, saying so, when the commit is not
 * there.
 */
export function previousRuntime(commit: string, dir: string): string {
  const root = join(dir, `runtime-${commit.slice(0, 12)}`);
  if (existsSync(join(root, "runtime/main.ts"))) return root;
  mkdirSync(root, { recursive: true });
  const archive = spawnSync("git", ["-C", repoRoot, "archive", "--format=tar", commit, "runtime", "src", "package.json"], { maxBuffer: 256 * 2 ** 20 });
  if (archive.status !== 0)
    throw new Error(`git archive ${commit} failed: ${archive.stderr.toString().trim()} (the upgrade test needs the repository's history)`);
  const untar = spawnSync("tar", ["-x", "-C", root], { input: archive.stdout });
  if (untar.status !== 0) throw new Error(`unpacking the runtime of ${commit} failed: ${untar.stderr.toString().trim()}`);
  symlinkSync(join(repoRoot, "node_modules"), join(root, "node_modules"));
  return root;
}
