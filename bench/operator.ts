// npm run bench:operator -- [N]: the operator's cost at N pipelines (default 1,000) on the test bed, this checkout's
// beside the previous commit's (BENCH_BASELINE, default HEAD~1; none leaves that column out), in one run.
// For each operator, one after the other, in a namespace of its own that it alone watches (no leader election):
// - N small suspended pipelines (one filter each, one shared source and sink topic, no workers) are created at
//   once, 16 requests in flight; timed until every pipeline's status carries its generation;
// - then, once its reconciles have stopped for 10 s (the queue has drained; at most 5 minutes), 60 s of steady state: the API requests it makes outside
//   its watches (conveyor_kube_requests_total, split into writes and reads by the call's name) per pipeline per
//   minute, and its reconciles;
// - then a burst of N spec edits (each filter changes), timed the same way, with the requests it cost;
// - then a second pass with running workers, as many as the bed holds (BENCH_RUNNING, default 3 pipelines of one
//   worker each, windowed, so that the watermark observer reads them): time until all are Ready, and 60 s of
//   steady state, counted per running pipeline (the suspended ones stay).
// Its peak RSS (VmHWM) and peak V8 heap (sampled by bench/operator-probe.ts) cover the whole run of that operator.
// BENCH_OPERATOR_FLAGS="--flag ..." runs this checkout's operator with other Node flags, to try them.
// The bench takes a running bed (CONVEYOR_BED_DIR, default /tmp/conveyor-test-bed), or starts one there and stops
// it at the end, and runs inside the bed's network namespace, as npm test does.
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, VERSION } from "../src/api.ts";
import { type Bed, insideEnv, runningBed, startBed } from "../test/env/bed.ts";
import { freePort, isAlive, placedArgv, type Started, startProcess, stopProcess, waitFor } from "../test/env/proc.ts";
import { ensureAll, repoRoot } from "../test/env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../test/support/bed.ts";
import { admin, createTopic } from "../test/support/kafka.ts";
import { type Kube, kube } from "../test/support/kube.ts";
import { kubectl } from "../test/support/kubectl.ts";
import { isReadCall, type OperatorRequests, operatorRequests } from "../test/support/operator.ts";
import { previousRuntime } from "../test/support/runtime.ts";
import { cpuSeconds } from "./kafka-streams.ts";
import { peakRssMiB } from "./worker-run.ts";

const N = Number(process.argv[2] ?? process.env.BENCH_PIPELINES ?? 1_000);
const RUNNING = Number(process.env.BENCH_RUNNING ?? 3);
const DIR = process.env.CONVEYOR_BENCH_DIR ?? "/tmp/conveyor-bench-operator";
const BED_DIR = process.env.CONVEYOR_BED_DIR ?? "/tmp/conveyor-test-bed";
const BASELINE_ENV = process.env.BENCH_BASELINE || "HEAD~1";
const IN_FLIGHT = 16;
const STEADY_MS = 60_000;
/** How long the queue may take to drain after the status of every pipeline carries its generation. */
const SETTLE_MS = 300_000;
const QUIET_MS = 10_000;
const CONVERGE_TIMEOUT_MS = 120_000 + N * 600;
const POLL_MS = 2_000;
const INSIDE = process.env.CONVEYOR_BENCH_INSIDE === "1";
/** BENCH_OPERATOR_FLAGS="--flag ...": this checkout's operator runs with these Node flags instead of its npm script's. */
const FLAGS_OVERRIDE = process.env.BENCH_OPERATOR_FLAGS === undefined ? undefined : process.env.BENCH_OPERATOR_FLAGS.split(/\s+/).filter((f) => f !== "");

function say(s: string): void {
  process.stderr.write(`[bench] ${s}\n`);
}

if (!Number.isInteger(N) || N < 1) throw new Error(`the pipeline count must be a positive integer, not ${process.argv[2]}`);

/** Outside the bed's network namespace: take or start the bed, and run this file again in there. */
async function outside(): Promise<number> {
  let state = runningBed(BED_DIR);
  let started: Bed | undefined;
  if (state) say(`reusing the running bed in ${BED_DIR}`);
  else {
    say(`starting a bed in ${BED_DIR}`);
    await ensureAll();
    started = await startBed(BED_DIR);
    state = started;
  }
  try {
    const argv = placedArgv([process.execPath, import.meta.filename, ...process.argv.slice(2)], { netns: state.net.netns });
    const res = spawnSync(argv[0] as string, argv.slice(1), { stdio: "inherit", env: { ...process.env, ...insideEnv(state), CONVEYOR_BENCH_INSIDE: "1" } });
    return res.status ?? 1;
  } finally {
    if (started) await started.stop();
  }
}

interface Delta {
  writes: number;
  reads: number;
  reconciles: number;
  /** the calls, most first */
  top: string;
}

function delta(a: OperatorRequests, b: OperatorRequests): Delta {
  let writes = 0;
  let reads = 0;
  const byCall: [string, number][] = [];
  for (const [call, v] of b.calls) {
    const d = v - (a.calls.get(call) ?? 0);
    if (d <= 0) continue;
    byCall.push([call, d]);
    if (isReadCall(call)) reads += d;
    else writes += d;
  }
  byCall.sort((x, y) => y[1] - x[1]);
  return { writes, reads, reconciles: b.reconciles - a.reconciles, top: byCall.map(([c, d]) => `${c} ${d}`).join(", ") || "none" };
}

interface Side {
  label: string;
  commit: string;
  root: string;
  ok: boolean;
  reason?: string;
  convergeS?: number;
  steady?: Delta & { settledS: number };
  editS?: number;
  edit?: Delta;
  runningReadyS?: number;
  runningSteady?: Delta & { settledS: number };
  rssMiB?: number;
  heapMiB?: number;
  /** the most the heap held just after a full collection (live data), and what the last one left */
  liveMiB?: number;
  lastLiveMiB?: number;
  /** the operator's CPU time over the whole run, user and system */
  cpuS?: number;
}

function pipeline(ns: string, name: string, filter: string, running: boolean): StreamPipeline {
  const env = bedEnv();
  const spec = running
    ? {
        kafka: { bootstrapServers: [env.bootstrap] },
        source: { topics: [SOURCE], eventTime: "value.ts", watermark: { maxOutOfOrderness: "5s", idleTimeout: "5s" } },
        steps: [
          { name: "by-user", keyBy: "value.user" },
          { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
        ],
        sink: { topic: SINK },
        replicas: 1,
      }
    : {
        kafka: { bootstrapServers: [env.bootstrap] },
        source: { topics: [SOURCE] },
        steps: [{ name: "keep", filter }],
        sink: { topic: SINK },
        replicas: 1,
        suspend: true,
      };
  return { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace: ns }, spec } as StreamPipeline;
}

const SUFFIX = uniqueSuffix();
const SOURCE = `bench-op-src-${SUFFIX}`;
const SINK = `bench-op-sink-${SUFFIX}`;

/** Runs `fn` over `items`, `IN_FLIGHT` at a time. */
async function pool<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(IN_FLIGHT, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

async function listPipelines(k: Kube, ns: string): Promise<StreamPipeline[]> {
  return ((await k.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: ns })) as { items: StreamPipeline[] }).items;
}

/** Seconds from `t0` until every pipeline of the namespace satisfies `done`, polled every POLL_MS. */
async function until(k: Kube, ns: string, t0: number, what: string, done: (p: StreamPipeline) => boolean, op: Started, count: number): Promise<number> {
  let last = -1;
  await waitFor(
    async () => {
      const items = await listPipelines(k, ns);
      const n = items.filter(done).length;
      if (n !== last) {
        last = n;
        say(`  ${n}/${count} ${what} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      }
      return items.length === count && n === count;
    },
    { what: `${count} pipelines ${what}`, timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: POLL_MS, process: op },
  );
  return (Date.now() - t0) / 1000;
}

const carriesGeneration = (p: StreamPipeline) => p.status?.observedGeneration !== undefined && p.status.observedGeneration === p.metadata?.generation;
const ready = (p: StreamPipeline) => carriesGeneration(p) && p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;

/**
 * Waits until the operator's reconciles have stood still for QUIET_MS (at most `settleMs`: a pipeline with running
 * workers is reconciled whenever its watermarks move), then counts STEADY_MS of requests.
 */
async function steady(port: number, settleMs: number): Promise<Delta & { settledS: number }> {
  const settleUntil = Date.now() + settleMs;
  let before = await operatorRequests(port);
  let quietSince = Date.now();
  while (Date.now() < settleUntil && Date.now() - quietSince < QUIET_MS) {
    await delay(1_000);
    const now = await operatorRequests(port);
    if (now.reconciles !== before.reconciles) quietSince = Date.now();
    before = now;
  }
  const settledS = (Date.now() - settleUntil + settleMs) / 1000;
  say(`  settled after ${settledS.toFixed(1)} s; counting ${STEADY_MS / 1000} s`);
  await delay(STEADY_MS);
  return { ...delta(before, await operatorRequests(port)), settledS };
}

async function namespace(k: Kube, label: string): Promise<string> {
  const ns = `bench-op-${label}-${SUFFIX}`;
  await k.core.createNamespace({ body: { metadata: { name: ns } } });
  return ns;
}

/** Stops the operator, lets its pipelines go without their finalizers (nothing of theirs is in Kafka) and deletes the namespace. */
async function cleanUp(k: Kube, ns: string, op: Started | undefined): Promise<void> {
  if (op) await stopProcess(op.pid);
  for (const p of await listPipelines(k, ns).catch((err: unknown) => {
    say(`could not list the pipelines of ${ns}: ${err instanceof Error ? err.message : String(err)}`);
    return [];
  })) {
    if ((p.metadata?.finalizers ?? []).length === 0) continue;
    await k.custom
      .patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, plural: PLURAL, namespace: ns, name: p.metadata?.name ?? "", body: [{ op: "remove", path: "/metadata/finalizers" }] },
        undefined,
      )
      .catch((err: unknown) => say(`could not take the finalizer off ${p.metadata?.name}: ${err instanceof Error ? err.message : String(err)}`));
  }
  await k.core.deleteNamespace({ name: ns }).catch((err: unknown) => say(`could not delete ${ns}: ${err instanceof Error ? err.message : String(err)}`));
  // The next operator is measured on an apiserver that is not still collecting this one's thousands of objects.
  const t0 = Date.now();
  try {
    await waitFor(
      async () => {
        try {
          await k.core.readNamespace({ name: ns });
          return false;
        } catch {
          return true;
        }
      },
      { what: `namespace ${ns} to be deleted`, timeoutMs: 600_000, intervalMs: 2_000 },
    );
    say(`${ns} deleted in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } catch (err) {
    say(`${err instanceof Error ? err.message : String(err)}: going on`);
  }
}

/** The Node flags of the side's `npm run operator` (node <flags> src/main.ts): each operator runs as a user starts it. */
function operatorFlags(root: string): string[] {
  const script = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts?: Record<string, string> }).scripts?.operator ?? "";
  const words = script.split(/\s+/);
  if (words[0] !== "node" || words.at(-1) !== "src/main.ts")
    throw new Error(`${root}/package.json: the operator script is not "node [flags] src/main.ts": ${script}`);
  return words.slice(1, -1);
}

async function runSide(k: Kube, side: Side): Promise<void> {
  const heapFile = join(DIR, `heap-${side.label}.json`);
  rmSync(heapFile, { force: true });
  const ns = await namespace(k, side.label);
  const port = await freePort();
  let op: Started | undefined;
  try {
    op = startProcess({
      name: `operator ${side.label}`,
      cmd: process.execPath,
      args: [
        ...(side.label === "this" && FLAGS_OVERRIDE !== undefined ? FLAGS_OVERRIDE : operatorFlags(side.root)),
        "--import",
        join(repoRoot, "bench/operator-probe.ts"),
        join(side.root, "src/main.ts"),
      ],
      log: join(DIR, `operator-${side.label}.log`),
      cwd: side.root,
      env: {
        ...process.env,
        KUBECONFIG: bedEnv().kubeconfig,
        POD_NAME: `bench-${side.label}`,
        POD_IP: "127.0.0.1",
        CONVEYOR_HTTP_PORT: String(port),
        CONVEYOR_LEADER_ELECTION: "false",
        CONVEYOR_WATCH_NAMESPACES: ns,
        CONVEYOR_BENCH_HEAP_FILE: heapFile,
      },
    });
    const started = op;
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, { what: "the operator to be ready", timeoutMs: 60_000, process: started });
    say(`${side.label}: creating ${N} suspended pipelines in ${ns}`);
    const t0 = Date.now();
    const names = Array.from({ length: N }, (_, i) => `p-${i}`);
    await pool(names, async (name) => {
      await k.custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace: ns,
        body: pipeline(ns, name, "value.n > 0", false),
      });
    });
    say(`${side.label}: created in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    side.convergeS = await until(k, ns, t0, "carry their generation", carriesGeneration, started, N);
    side.steady = await steady(port, SETTLE_MS);
    say(`${side.label}: steady state: ${side.steady.writes} writes, ${side.steady.reads} reads in 60 s (${side.steady.top})`);
    const before = await operatorRequests(port);
    const t1 = Date.now();
    await pool(names, async (name) => {
      await k.custom.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, plural: PLURAL, namespace: ns, name, body: [{ op: "replace", path: "/spec/steps/0/filter", value: "value.n > 1" }] },
        undefined,
      );
    });
    side.editS = await until(k, ns, t1, "carry their edited generation", (p) => carriesGeneration(p) && (p.metadata?.generation ?? 0) >= 2, started, N);
    side.edit = delta(before, await operatorRequests(port));
    say(`${side.label}: the edits cost ${side.edit.writes} writes, ${side.edit.reads} reads (${side.edit.top})`);
    if (RUNNING > 0) {
      say(`${side.label}: ${RUNNING} running pipelines of one worker each`);
      const t2 = Date.now();
      const running = Array.from({ length: RUNNING }, (_, i) => `run-${i}`);
      await pool(running, async (name) => {
        await k.custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: ns, body: pipeline(ns, name, "", true) });
      });
      side.runningReadyS = await until(k, ns, t2, "Ready", (p) => !p.metadata?.name?.startsWith("run-") || ready(p), started, N + RUNNING);
      side.runningSteady = await steady(port, 60_000);
      say(`${side.label}: steady state with workers: ${side.runningSteady.writes} writes, ${side.runningSteady.reads} reads (${side.runningSteady.top})`);
      // Workers stop before the namespace goes, so that nothing of theirs outlives the bench.
      await pool(running, async (name) => {
        await k.custom.patchNamespacedCustomObject(
          { group: GROUP, version: VERSION, plural: PLURAL, namespace: ns, name, body: [{ op: "add", path: "/spec/suspend", value: true }] },
          undefined,
        );
      });
      await waitFor(async () => (await k.core.listNamespacedPod({ namespace: ns })).items.length === 0, {
        what: "the workers to stop",
        timeoutMs: 120_000,
        process: started,
      });
    }
    side.rssMiB = peakRssMiB(started.pid);
    side.cpuS = cpuSeconds(started.pid);
    const heap = JSON.parse(readFileSync(heapFile, "utf8")) as { heapUsed: number; peakLive: number; lastLive: number };
    side.heapMiB = heap.heapUsed / 2 ** 20;
    side.liveMiB = heap.peakLive / 2 ** 20;
    side.lastLiveMiB = heap.lastLive / 2 ** 20;
    side.ok = true;
  } catch (err) {
    side.ok = false;
    side.reason = (err instanceof Error ? err.message : String(err)).split("\n")[0];
    if (op && isAlive(op.pid)) side.rssMiB = peakRssMiB(op.pid);
  } finally {
    await cleanUp(k, ns, op);
  }
}

const f1 = (v: number | undefined) => (v === undefined ? "-" : v.toFixed(1));
const f2 = (v: number | undefined) => (v === undefined ? "-" : v.toFixed(2));
const perPipelineMinute = (d: Delta | undefined, count: number, which: "writes" | "reads") =>
  d === undefined ? undefined : d[which] / count / (STEADY_MS / 60_000);
const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || b === 0 ? "-" : (a / b).toFixed(2));

function table(sides: Side[]): string {
  const rows: [string, (s: Side) => number | undefined, (v: number | undefined) => string][] = [
    [`${N} created: all carry their generation, s`, (s) => s.convergeS, f1],
    ["then until the reconciles stop for 10 s, s", (s) => (s.steady ? s.steady.settledS - QUIET_MS / 1000 : undefined), f1],
    ["steady: writes per pipeline per minute", (s) => perPipelineMinute(s.steady, N, "writes"), f2],
    ["steady: reads per pipeline per minute", (s) => perPipelineMinute(s.steady, N, "reads"), f2],
    ["steady: reconciles per pipeline per minute", (s) => (s.steady ? s.steady.reconciles / N : undefined), f2],
    [`${N} edits: all carry their generation, s`, (s) => s.editS, f1],
    ["edits: writes per pipeline", (s) => (s.edit ? s.edit.writes / N : undefined), f2],
    ["edits: reads per pipeline", (s) => (s.edit ? s.edit.reads / N : undefined), f2],
    ...(RUNNING > 0
      ? ([
          [`${RUNNING} running: all Ready, s`, (s) => s.runningReadyS, f1],
          ["running: writes per running pipeline per minute", (s) => perPipelineMinute(s.runningSteady, RUNNING, "writes"), f2],
          ["running: reads per running pipeline per minute", (s) => perPipelineMinute(s.runningSteady, RUNNING, "reads"), f2],
        ] as [string, (s: Side) => number | undefined, (v: number | undefined) => string][])
      : []),
    ["operator CPU time over the run, s", (s) => s.cpuS, f1],
    ["peak RSS, MiB", (s) => s.rssMiB, f1],
    ["peak V8 heap used, MiB", (s) => s.heapMiB, f1],
    ["peak live heap (after a full GC), MiB", (s) => s.liveMiB, f1],
    ["live heap after the last full GC, MiB", (s) => s.lastLiveMiB, f1],
  ];
  const heads = ["", ...sides.map((s) => `${s.label} (${s.commit.slice(0, 7)})`), ...(sides.length === 2 ? ["this/prev"] : [])];
  const lines = rows.map(([name, get, fmt]) => [
    name,
    ...sides.map((s) => fmt(get(s))),
    ...(sides.length === 2 ? [ratio(get(sides[1] as Side), get(sides[0] as Side))] : []),
  ]);
  const widths = heads.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? "").length)));
  const fmtRow = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  ");
  return [fmtRow(heads), ...lines.map(fmtRow)].join("\n");
}

async function inside(): Promise<number> {
  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  const k = kube();
  kubectl(bedEnv().kubeconfig, ["apply", "--server-side", "-f", join(repoRoot, "crds")]);
  const a = admin(bedEnv().bootstrap);
  try {
    await createTopic(a, SOURCE, 3);
    await createTopic(a, SINK, 3);
  } finally {
    await a.close();
  }
  const head = spawnSync("git", ["-C", repoRoot, "rev-parse", "HEAD"], { encoding: "utf8" }).stdout.trim();
  const sides: Side[] = [];
  if (BASELINE_ENV !== "none") {
    const commit = spawnSync("git", ["-C", repoRoot, "rev-parse", BASELINE_ENV], { encoding: "utf8" }).stdout.trim();
    if (!commit) throw new Error(`BENCH_BASELINE ${BASELINE_ENV} is no commit here`);
    sides.push({ label: "prev", commit, root: previousRuntime(commit, join(DIR, "previous")), ok: false });
  }
  sides.push({ label: "this", commit: head, root: repoRoot, ok: false });
  for (const side of sides) await runSide(k, side);
  process.stdout.write(`\nbench:operator, ${N} pipelines (and ${RUNNING} with a running worker) on the bed\n${table(sides)}\n`);
  process.stdout.write("writes: every call but list and read; the counts are the operator's own (conveyor_kube_requests_total), outside its watches\n");
  for (const s of sides)
    process.stdout.write(`${s.label} steady calls: ${s.steady?.top ?? "-"}; edit calls: ${s.edit?.top ?? "-"}; log ${join(DIR, `operator-${s.label}.log`)}\n`);
  const failed = sides.filter((s) => !s.ok);
  for (const s of failed) process.stdout.write(`${s.label} failed: ${s.reason}\n`);
  return failed.length > 0 ? 1 : 0;
}

(INSIDE ? inside() : outside()).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`[bench] ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
