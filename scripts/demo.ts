// npm run demo: the bed, the CRD and the operator, then the lag autoscaler live. It applies
// examples/autoscale-pipeline.yaml, writes a burst and then a steady load more than the source's partitions let
// the workers read, and shows the lag, the workers and the partitions once a second as they change (the operator
// grows the source), then the scaling Events with their reasons. It leaves the bed up and says how to look around
// and how to stop it. The bed keeps pod addresses inside its own network namespace: the demo starts the bed from
// the host, then runs the rest in there, as an operator in the cluster would.
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { AppsV1Api, CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import type { Admin } from "@platformatic/kafka";
import { load } from "js-yaml";
import { GROUP, PLURAL, type ScalingStatus, type StreamPipeline, VERSION } from "../src/api.ts";
import { statusCode } from "../src/kube-errors.ts";
import { OPERATOR_NODE_FLAGS } from "../src/node-flags.ts";
import { svgPlot } from "../src/plot.ts";
import { type BedState, insideEnv, readBedState, runningBed, startBed, writeBedState } from "../test/env/bed.ts";
import { freePort, placedArgv, startProcess } from "../test/env/proc.ts";
import { ensureAll, repoRoot } from "../test/env/toolchain.ts";
import { admin, createTopic, groupLag, produceInOneTransaction, produceSteadily, type SteadyLoad } from "../test/support/kafka.ts";
import { kubectl as runKubectl } from "../test/support/kubectl.ts";

const NS = "demo";
const EXAMPLE = "examples/autoscale-pipeline.yaml";
/** The source's partitions at first; the example lets the operator grow it to 4. */
const PARTITIONS = 2;
/** Between one and two workers' targetCatchUp of backlog at 1,000 records/s each: the autoscaler goes to 2. */
const BURST = 55_000;
/** Then more than 2 workers read: the source grows, and the workers follow. */
const STEADY_RATE = 2_500;
const STEADY_MS = 40_000;
/** From the burst's commit: the steps up, the drain and the scale-down (the window) fit well within it. */
const WATCH_DEADLINE_MS = 180_000;

const say = (s: string) => process.stdout.write(`${s}\n`);
const num = (n: number | bigint | undefined) => (n === undefined ? "-" : n.toLocaleString("en-US", { maximumFractionDigits: 0 }));
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

interface Manifest {
  metadata: { name: string; namespace?: string };
  spec: { kafka: { bootstrapServers: string[] }; source: { topics: string[] }; sink: { topic: string } };
}

/** What the demo reads once a second: the operator's last decision, the StatefulSet, and the group as Kafka sees it. */
interface Sample {
  at: number;
  scaling: ScalingStatus | undefined;
  ready: string;
  replicas: number | undefined;
  readyReplicas: number;
  groupLag: bigint | undefined;
  groupState: string;
  /** partitions held by each member, largest first */
  shares: number[];
  /** the source's partitions now */
  partitions: number | undefined;
}

class Demo {
  readonly t0: number;
  readonly state: BedState;
  readonly a: Admin;
  private readonly custom: CustomObjectsApi;
  private readonly apps: AppsV1Api;

  constructor(t0: number, state: BedState) {
    this.t0 = t0;
    this.state = state;
    this.a = admin(state.kafkaBootstrap);
    const kc = new KubeConfig();
    kc.loadFromFile(state.kubeconfig);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.apps = kc.makeApiClient(AppsV1Api);
  }

  elapsed(at = Date.now()): string {
    return `${((at - this.t0) / 1000).toFixed(0)} s`;
  }

  kubectl(args: string[], input?: string): string {
    return runKubectl(this.state.kubeconfig, args, input);
  }

  async pipeline(name: string): Promise<StreamPipeline | undefined> {
    try {
      return (await this.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name })) as StreamPipeline;
    } catch (err) {
      if (statusCode(err) === 404) return undefined;
      throw err;
    }
  }

  async sample(name: string, group: string, source: string): Promise<Sample> {
    const [p, sts, lag, described, md] = await Promise.all([
      this.pipeline(name),
      this.apps.readNamespacedStatefulSet({ name, namespace: NS }).catch((err: unknown) => {
        if (statusCode(err) === 404) return undefined;
        throw err;
      }),
      // Unknown while the coordinator moves or the group is new: shown as "-", never as 0.
      groupLag(this.a, group, source).catch(() => undefined),
      this.a.describeGroups({ groups: [group] }).catch(() => undefined),
      this.a.metadata({ topics: [source], forceUpdate: true }).catch(() => undefined),
    ]);
    const g = described?.get(group);
    const shares = [...(g?.members.values() ?? [])]
      .map((m) => [...(m.assignments?.values() ?? [])].reduce((n, x) => n + (x.topic === source ? x.partitions.length : 0), 0))
      .sort((x, y) => y - x);
    return {
      at: Date.now(),
      scaling: p?.status?.scaling,
      ready: p?.status?.conditions?.find((c) => c.type === "Ready")?.status ?? "Unknown",
      replicas: sts?.spec?.replicas,
      readyReplicas: sts?.status?.readyReplicas ?? 0,
      groupLag: lag,
      groupState: g?.state ?? "-",
      shares,
      partitions: md?.topics.get(source)?.partitionsCount,
    };
  }
}

async function startOrReuseBed(): Promise<BedState> {
  const running = runningBed();
  if (running) {
    say(`== reusing the running bed (${running.dir})`);
    return running;
  }
  say("== starting the bed: Kafka, Kubernetes, the node shim (the first run builds them, with progress below; later runs take seconds)");
  await ensureAll();
  return await startBed();
}

async function ensureOperator(state: BedState): Promise<void> {
  if ((state.extras ?? []).some((x) => x.name === "operator")) {
    say("== the operator is already running against the bed");
    return;
  }
  say("== starting the operator (npm run operator) against the bed");
  const op = startProcess({
    name: "operator",
    cmd: process.execPath,
    args: [...OPERATOR_NODE_FLAGS, join(repoRoot, "src/main.ts")],
    log: join(state.dir, "operator.log"),
    cwd: repoRoot,
    env: { ...process.env, KUBECONFIG: state.kubeconfig, POD_IP: "127.0.0.1", CONVEYOR_HTTP_PORT: String(await freePort()) },
    // in the bed's namespace (the demo runs there) and its cgroup: `bed down` stops it with the rest
    cgroup: join(state.net.cgroup, "system"),
  });
  state.extras = [...(state.extras ?? []), op];
  writeBedState(state);
}

/**
 * A rerun starts from nothing: the demo namespace's pipelines go (their finalizer takes the workers and the
 * consumer group with them), then the topics of earlier runs. Each run writes to topics of its own, so that
 * nothing an earlier run left, offsets or records, can show up in this one's numbers.
 */
async function clearEarlierRuns(demo: Demo, topics: string[]): Promise<void> {
  const left = demo.kubectl(["get", "streampipelines", "-n", NS, "-o", "name"]).trim();
  if (left !== "") {
    say(`== deleting what an earlier demo left in namespace ${NS}: ${left.split("\n").join(", ")}`);
    demo.kubectl(["delete", "streampipelines", "--all", "-n", NS, "--timeout=120s"]);
  }
  const earlier = new RegExp(`^(${topics.map((t) => t.replace(/[.]/g, "\\.")).join("|")})\\.demo-[a-z0-9]+$`);
  const stale = (await demo.a.listTopics()).filter((t) => earlier.test(t));
  if (stale.length > 0) {
    say(`== deleting the topics of earlier demos: ${stale.join(", ")}`);
    await demo.a.deleteTopics({ topics: stale });
  }
}

/** The burst in one transaction: read_committed readers (the workers and the lag reader) see all of it at once. */
async function writeBurst(bootstrap: string, topic: string, runId: string): Promise<void> {
  const clicks = Array.from({ length: BURST }, (_, id) => ({ topic, ...click(id) }));
  await produceInOneTransaction(bootstrap, `demo-burst-${runId}`, clicks);
}

/** The id-th click: keyed by its user, one in twenty from a bot. */
function click(id: number): { key: Buffer; value: Buffer } {
  const c = { id, user: `user-${id % 101}`, page: ["/", "/cart", "/pay", "/search"][id % 4], bot: id % 20 === 0 };
  return { key: Buffer.from(c.user), value: Buffer.from(JSON.stringify(c)) };
}

/** The live table: a title, a width, and what a sample shows in it. */
interface Column {
  title: string;
  width: number;
  left?: boolean;
  cell: (s: Sample) => string;
}

const COLUMNS: Column[] = [
  { title: "lag", width: 8, cell: (s) => num(s.scaling?.lag) },
  { title: "group lag", width: 9, cell: (s) => num(s.groupLag) },
  { title: "desired", width: 7, cell: (s) => String(s.scaling?.desired ?? "-") },
  { title: "workers/ready", width: 13, cell: (s) => `${s.replicas ?? "-"}/${s.readyReplicas}` },
  { title: "group", width: 18, left: true, cell: (s) => s.groupState },
  { title: "partitions held", width: 15, left: true, cell: (s) => `${s.shares.length > 0 ? s.shares.join("+") : "-"} of ${s.partitions ?? "-"}` },
  { title: "in/s", width: 7, cell: (s) => num(s.scaling?.inputRate) },
  { title: "consumed/s", width: 10, cell: (s) => num(s.scaling?.consumeRate) },
  {
    title: "decision",
    width: 0,
    left: true,
    cell: (s) => (s.scaling ? `${s.scaling.reason}${s.scaling.cappedBy ? ` (capped by ${s.scaling.cappedBy})` : ""}` : "-"),
  },
];

function tableLine(t: string, text: (c: Column) => string): string {
  return [t.padStart(6), ...COLUMNS.map((c) => (c.left ? text(c).padEnd(c.width) : text(c).padStart(c.width)))].join("  ").trimEnd();
}

interface ScaleStep {
  at: number;
  from: number;
  to: number;
}

/**
 * Once a second, one line, and a marked one whenever the StatefulSet's replicas change. Done once the workers
 * scaled up and came back to one that holds every partition with nothing behind, or at the deadline.
 */
async function watchScaling(
  demo: Demo,
  name: string,
  group: string,
  source: string,
  burstAt: number,
): Promise<{ steps: ScaleStep[]; settled: boolean; samples: Sample[] }> {
  say(tableLine("t", (c) => c.title));
  const steps: ScaleStep[] = [];
  const samples: Sample[] = [];
  let replicas: number | undefined;
  let partitions: number | undefined;
  const deadline = burstAt + WATCH_DEADLINE_MS;
  for (let tick = Date.now(); ; tick += 1_000) {
    const s = await demo.sample(name, group, source);
    samples.push(s);
    say(tableLine(demo.elapsed(s.at), (c) => c.cell(s)));
    if (replicas !== undefined && s.replicas !== undefined && s.replicas !== replicas) {
      steps.push({ at: s.at, from: replicas, to: s.replicas });
      const why = s.scaling ? `${s.scaling.reason}, lag ${num(s.scaling.lag)}` : "no decision in status yet";
      say(`  >>> ${demo.elapsed(s.at)}: workers ${replicas} -> ${s.replicas} (${why}), ${secs(s.at - burstAt)} after the burst was committed`);
    }
    replicas = s.replicas ?? replicas;
    if (partitions !== undefined && s.partitions !== undefined && s.partitions !== partitions)
      say(
        `  >>> ${demo.elapsed(s.at)}: ${source} grown from ${partitions} to ${s.partitions} partitions, ${secs(s.at - burstAt)} after the burst was committed`,
      );
    partitions = s.partitions ?? partitions;
    const oneWorkerHoldsAll = s.groupState === "Stable" && s.shares.length === 1 && s.shares[0] === s.partitions;
    if (steps.length > 0 && s.replicas === 1 && s.readyReplicas === 1 && oneWorkerHoldsAll && s.groupLag === 0n) return { steps, settled: true, samples };
    if (Date.now() > deadline) return { steps, settled: false, samples };
    await delay(Math.max(0, tick + 1_000 - Date.now()));
  }
}

/** The run as a picture: the group's lag (left axis), and the desired and ready workers and the partitions (right). */
function demoPlot(samples: Sample[], burstAt: number, source: string): string {
  const t = (s: Sample) => (s.at - burstAt) / 1000;
  const n = (v: bigint | number | undefined) => (v === undefined ? undefined : Number(v));
  return svgPlot({
    title: `npm run demo: a burst of ${num(BURST)} clicks, then ${num(STEADY_RATE)}/s for ${secs(STEADY_MS)} (workers read at most 1,000/s each)`,
    xLabel: "seconds after the burst was committed",
    leftLabel: "group lag, records",
    rightLabel: "workers, partitions",
    series: [
      { name: "group lag", color: "#1f77b4", axis: "left", points: samples.map((s) => ({ t: t(s), v: n(s.groupLag) })) },
      { name: "desired workers", color: "#d62728", axis: "right", step: true, dashed: true, points: samples.map((s) => ({ t: t(s), v: s.scaling?.desired })) },
      { name: "ready workers", color: "#2ca02c", axis: "right", step: true, points: samples.map((s) => ({ t: t(s), v: s.readyReplicas })) },
      {
        name: `partitions of ${source.split(".")[0]}`,
        color: "#9467bd",
        axis: "right",
        step: true,
        points: samples.map((s) => ({ t: t(s), v: s.partitions })),
      },
    ],
  });
}

/** The pipeline's Events of this run (a recreated pipeline has the same name, so the uid tells them apart). */
function printEvents(demo: Demo, name: string, uid: string): void {
  const selector = `involvedObject.name=${name}`;
  say(`== the pipeline's Events (kubectl get events -n ${NS} --field-selector ${selector})`);
  const list = JSON.parse(demo.kubectl(["get", "events", "-n", NS, "--field-selector", `${selector},involvedObject.uid=${uid}`, "-o", "json"])) as {
    items: { type?: string; reason?: string; message?: string; lastTimestamp?: string; eventTime?: string; count?: number }[];
  };
  const when = (e: { lastTimestamp?: string; eventTime?: string }) => Date.parse(e.lastTimestamp ?? e.eventTime ?? "") || 0;
  const events = list.items.sort((x, y) => when(x) - when(y));
  if (events.length === 0) say("   none");
  for (const e of events) say(`   ${demo.elapsed(when(e)).padStart(6)}  ${e.type} ${e.reason}${(e.count ?? 1) > 1 ? ` (x${e.count})` : ""}: ${e.message}`);
}

/** Starts (or reuses) the bed from the host, then runs the demo itself inside the bed's network namespace. */
async function fromHost(): Promise<boolean> {
  const t0 = Date.now();
  const state = await startOrReuseBed();
  const argv = placedArgv([process.execPath, ...process.execArgv, import.meta.filename], { netns: state.net.netns });
  const res = spawnSync(argv[0] as string, argv.slice(1), {
    stdio: "inherit",
    env: { ...process.env, ...insideEnv(state), CONVEYOR_DEMO_T0: String(t0), CONVEYOR_DEMO_BED_UP: String(Date.now()) },
  });
  if (res.error) throw res.error;
  say("   The bed is still up. From this shell (the host's network namespace, through the bed's loopback forwarder):");
  say(`   export KUBECONFIG=${state.kubeconfig} KAFKA_BOOTSTRAP=${state.kafkaHostBootstrap}`);
  say(`   kubectl get streampipelines -n ${NS}; kubectl get pods -n ${NS} -o wide; operator log: ${join(state.dir, "operator.log")}`);
  say(`   Pod addresses are reachable only inside the bed: npm run bed -- exec <command> (there KAFKA_BOOTSTRAP=${state.kafkaBootstrap})`);
  say("   stop everything with: npm run bed -- down");
  return res.status === 0;
}

async function main(): Promise<boolean> {
  const t0 = Number(process.env.CONVEYOR_DEMO_T0);
  const state = readBedState(process.env.CONVEYOR_BED_DIR);
  if (!state) throw new Error(`no bed state in ${process.env.CONVEYOR_BED_DIR}`);
  const demo = new Demo(t0, state);
  const bedUpAt = Number(process.env.CONVEYOR_DEMO_BED_UP);

  say("== installing the StreamPipeline CRD");
  demo.kubectl(["apply", "--server-side", "--force-conflicts", "-f", join(repoRoot, "crds")]);
  demo.kubectl(["wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);
  await ensureOperator(state);

  const manifest = load(readFileSync(join(repoRoot, EXAMPLE), "utf8")) as Manifest;
  const name = manifest.metadata.name;
  const group = `${NS}.${name}`;
  const runId = Date.now().toString(36);
  const [baseSource = "clicks"] = manifest.spec.source.topics;
  const baseSink = manifest.spec.sink.topic;
  const source = `${baseSource}.demo-${runId}`;
  const sink = `${baseSink}.demo-${runId}`;
  manifest.metadata.namespace = NS;
  manifest.spec.kafka.bootstrapServers = state.kafkaBootstrap.split(",");
  manifest.spec.source.topics = [source];
  manifest.spec.sink.topic = sink;

  let result: { steps: ScaleStep[]; settled: boolean; samples: Sample[] };
  let burstAt: number;
  let uid: string;
  let steadyLoad: SteadyLoad | undefined;
  try {
    demo.kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } }));
    await clearEarlierRuns(demo, [baseSource, baseSink]);
    say(`== creating topics ${source} (${PARTITIONS} partitions) and ${sink}`);
    await createTopic(demo.a, source, PARTITIONS);
    await createTopic(demo.a, sink, PARTITIONS);

    say(`== applying ${EXAMPLE} in namespace ${NS} as ${name}, on those topics`);
    say("   scaling: lag, 1 to 4 workers, targetCatchUp 30s, scaleDownStabilization 30s, partitions grown up to 4; each worker reads at most 1,000 records/s");
    demo.kubectl(["apply", "-f", "-"], JSON.stringify(manifest));
    uid = (await demo.pipeline(name))?.metadata?.uid ?? "";

    say("== waiting for one Ready worker, and the autoscaler content with it (Steady at 1, lag 0)");
    let last = "";
    const settleBy = Date.now() + 120_000;
    for (;;) {
      const s = await demo.sample(name, group, source);
      const now = `Ready=${s.ready}, workers ${s.replicas ?? "-"} (${s.readyReplicas} ready), decision ${s.scaling?.reason ?? "-"} at ${s.scaling?.desired ?? "-"}`;
      if (now !== last) say(`   ${demo.elapsed(s.at).padStart(6)}  ${now}`);
      last = now;
      if (s.ready === "True" && s.readyReplicas === 1 && s.scaling?.reason === "Steady" && s.scaling.desired === 1 && s.scaling.lag === 0) break;
      if (Date.now() > settleBy) throw new Error(`the pipeline did not settle at one worker within 120 s; operator log: ${join(state.dir, "operator.log")}`);
      await delay(500);
    }
    say(demo.kubectl(["get", "streampipelines,statefulsets,pods", "-n", NS]).trimEnd());

    say(`== writing a burst of ${num(BURST)} clicks to ${source} in one transaction`);
    const writeStart = Date.now();
    await writeBurst(state.kafkaBootstrap, source, runId);
    burstAt = Date.now();
    say(`   committed in ${secs(burstAt - writeStart)}: the workers and the autoscaler see all of it at once`);
    say(`== and a steady ${num(STEADY_RATE)} clicks/s for ${secs(STEADY_MS)}: more than 2 workers read, so the source's 2 partitions cap them`);
    say("== lag, workers and partitions, once a second (lag: what the operator last read; group lag: read now)");
    // The load and the watch together; either failing fails the demo.
    [steadyLoad, result] = await Promise.all([
      produceSteadily(state.kafkaBootstrap, source, { rate: STEADY_RATE, durationMs: STEADY_MS, value: (id) => click(BURST + id).value }),
      watchScaling(demo, name, group, source, burstAt),
    ]);
  } finally {
    await demo.a.close();
  }

  const up = result.steps.find((x) => x.to > x.from);
  if (!result.settled) {
    say(
      up
        ? `!! not back to one idle worker within ${WATCH_DEADLINE_MS / 1000} s of the burst; the operator log says why: ${join(state.dir, "operator.log")}`
        : `!! no scale-up within ${WATCH_DEADLINE_MS / 1000} s of the burst; the operator log says why: ${join(state.dir, "operator.log")}`,
    );
  }
  const plot = join(state.dir, "demo.svg");
  writeFileSync(plot, demoPlot(result.samples, burstAt, source));
  say(`== lag, workers and partitions over time, drawn in ${plot}`);
  printEvents(demo, name, uid);
  say(demo.kubectl(["get", "streampipelines", "-n", NS]).trimEnd());

  const end = Date.now();
  say(`== done in ${secs(end - t0)} (bed ${secs(bedUpAt - t0)})`);
  if (up) say(`   first scale-up, ${up.from} -> ${up.to} workers: ${secs(up.at - t0)} after the demo started, ${secs(up.at - burstAt)} after the burst`);
  if (steadyLoad) {
    const grown = steadyLoad.perPartition.slice(PARTITIONS).reduce((x, y) => x + y, 0);
    say(
      steadyLoad.grownAt
        ? `   the source grew ${secs(steadyLoad.grownAt - burstAt)} after the burst; ${num(grown)} of the steady load's clicks went to its new partitions`
        : "   the source did not grow",
    );
  }
  return result.settled;
}

(process.env.CONVEYOR_DEMO_T0 === undefined ? fromHost() : main()).then(
  (ok) => process.exit(ok ? 0 : 1),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
