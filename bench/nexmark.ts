// npm run bench:nexmark: each Nexmark query of examples/nexmark, as its example has it, on one generated data set
// (test/support/nexmark/generator.ts, seeded) on a broker of its own. It writes N events once into three
// 6-partition topics, persons, auctions and bids (then one event per partition past every window of the data,
// which closes them), and runs
// each query as one worker process of this runtime, one after the other, each in a consumer group and into a sink
// of its own. Each is timed from its start until its group's committed offsets reach the end of its input and of
// each of its repartition topics in turn, and for a windowed query until it has written as many rows as the batch
// computation gives; then it prints input records/s (bids, or q8's persons and auctions), CPU seconds per million of them (/proc/<pid>/stat),
// peak RSS, the state's bytes (conveyor_runtime_state_bytes) and the rows written beside the rows the batch
// computation of the query gives (test/support/nexmark/queries.ts).
// BENCH_EVENTS (default 1,000,000) sets N; BENCH_QUERIES=q5,q7 runs some; CONVEYOR_BENCH_DIR (default
// /tmp/conveyor-bench-nexmark) holds the broker and the workers' logs.
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Admin } from "@platformatic/kafka";
import { type KafkaCluster, startKafka } from "../test/env/kafka.ts";
import { isAlive, stopProcess, waitFor } from "../test/env/proc.ts";
import { admin, createInternalTopics, createTopic, endOffsets, forEachToEnd } from "../test/support/kafka.ts";
import { type NexmarkDataSet, nexmarkDataSet } from "../test/support/nexmark/generator.ts";
import {
  eventCount,
  isFlushRow,
  NEXMARK_PIPELINES,
  NEXMARK_TOPICS,
  type NexmarkQuery,
  type NexmarkTopicKind,
  nexmarkInputs,
  nexmarkSpecFor,
  writeEvents,
} from "../test/support/nexmark/pipelines.ts";
import { compiled, type RuntimeProcess, startRuntime } from "../test/support/runtime.ts";
import { cpuSeconds } from "./kafka-streams.ts";
import { firstLine, peakRssMiB, reached, stopBroker, stopLiveOnSignal, workerError } from "./worker-run.ts";

const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const DIR = process.env.CONVEYOR_BENCH_DIR ?? "/tmp/conveyor-bench-nexmark";
const PARTITIONS = 6;
/** Nexmark's default rate: 10,000 events a second of event time, so 1M events span 100 s. */
const EVENTS_PER_SECOND = 10_000;
const DAY = 86_400_000;
/** Three days ago, 50 s before midnight: the data crosses a midnight (q17's days), each day ended long ago. */
const BASE = Math.floor(Date.now() / DAY) * DAY - 2 * DAY - 50_000;
const NAMESPACE = "bench";
const POLL_MS = 200;
const QUERY_TIMEOUT_MS = 120_000 + (EVENTS / 2_000) * 1_000;
const WANTED = process.env.BENCH_QUERIES ? new Set(process.env.BENCH_QUERIES.split(",").map((q) => q.trim())) : undefined;

const live = new Set<number>();

function say(s: string): void {
  process.stderr.write(`[bench] ${s}\n`);
}

interface Result {
  query: NexmarkQuery;
  ok: boolean;
  reason?: string;
  seconds?: number;
  cpuSeconds?: number;
  rssMiB?: number;
  stateBytes?: number;
  rows?: number;
  expected: number;
  /** the records of its input topics */
  inputs: number;
}

/** The three topics written, and each one's end offsets. */
async function eventTopics(a: Admin, bootstrap: string, data: NexmarkDataSet): Promise<Map<NexmarkTopicKind, bigint[]>> {
  for (const topic of Object.values(NEXMARK_TOPICS)) await createTopic(a, topic, PARTITIONS, { "retention.ms": "-1" });
  const t0 = performance.now();
  await writeEvents(bootstrap, NEXMARK_TOPICS, PARTITIONS, data, "bench-nexmark");
  say(
    `wrote ${data.persons.length} persons, ${data.auctions.length} auctions and ${data.bids.length} bids in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  const ends = new Map<NexmarkTopicKind, bigint[]>();
  for (const [kind, topic] of Object.entries(NEXMARK_TOPICS) as [NexmarkTopicKind, string][]) ends.set(kind, await endOffsets(a, topic));
  return ends;
}

async function runQuery(a: Admin, bootstrap: string, q: NexmarkQuery, topicEnds: Map<NexmarkTopicKind, bigint[]>, data: NexmarkDataSet): Promise<Result> {
  const name = `nexmark-${q}`;
  const sink = `${name}-out`;
  const spec = nexmarkSpecFor(q, { bootstrap, topics: NEXMARK_TOPICS, sink });
  const expected = NEXMARK_PIPELINES[q].expected(data).length;
  const inputs = nexmarkInputs(q).reduce((n, k) => n + eventCount(data, k, PARTITIONS), 0);
  let w: RuntimeProcess | undefined;
  try {
    const topology = compiled(spec, { namespace: NAMESPACE, name });
    await createTopic(a, sink, PARTITIONS);
    await createInternalTopics(a, topology, PARTITIONS);
    const group = topology.applicationId;
    const t0 = performance.now();
    w = await startRuntime({ dir: join(DIR, "workers"), namespace: NAMESPACE, name, spec });
    live.add(w.proc.pid);
    const worker = w;
    const deadline = t0 + QUERY_TIMEOUT_MS;
    const left = () => Math.max(1, Math.ceil(deadline - performance.now()));
    for (const k of nexmarkInputs(q)) {
      const ends = topicEnds.get(k) ?? [];
      await waitFor(() => reached(a, group, NEXMARK_TOPICS[k], ends), {
        what: `${q}: the ${k} read`,
        timeoutMs: left(),
        intervalMs: POLL_MS,
        process: worker.proc,
      });
    }
    // Each repartition topic in order: its end once the one before it is read holds all that stage wrote.
    for (const s of topology.steps) {
      if (s.kind !== "keyBy") continue;
      const ends = await endOffsets(a, s.repartitionTopic);
      await waitFor(() => reached(a, group, s.repartitionTopic, ends), {
        what: `${q}: ${s.repartitionTopic} read`,
        timeoutMs: left(),
        intervalMs: POLL_MS,
        process: worker.proc,
      });
    }
    // A watermark that closes many windows closes them over many batches, writing on after the ends above were
    // read: a windowed query is done once its sink has all its rows (the flush bids' windows stay open).
    if (NEXMARK_PIPELINES[q].kind === "windowed" || NEXMARK_PIPELINES[q].kind === "join")
      await waitFor(async () => (await worker.metric("conveyor_runtime_records_out_total")) >= expected, {
        what: `${q}: ${expected} rows written`,
        timeoutMs: left(),
        intervalMs: POLL_MS,
        process: worker.proc,
      });
    const seconds = (performance.now() - t0) / 1000;
    const r: Result = { query: q, ok: true, seconds, expected, inputs, stateBytes: await worker.metric("conveyor_runtime_state_bytes") };
    const cpu = cpuSeconds(worker.proc.pid);
    if (cpu !== undefined) r.cpuSeconds = cpu;
    const rss = peakRssMiB(worker.proc.pid);
    if (rss !== undefined) r.rssMiB = rss;
    // a table writes each change of a key: its rows are the last value of each key (a tombstone removes it)
    const table = NEXMARK_PIPELINES[q].kind === "table";
    const last = new Map<string, boolean>();
    let rows = 0;
    await forEachToEnd(
      bootstrap,
      sink,
      (m) => {
        const row = m.value && m.value.length > 0 && !isFlushRow(JSON.parse(m.value.toString()) as Record<string, unknown>);
        if (table) last.set(m.key?.toString("latin1") ?? "", row);
        else if (row) rows++;
      },
      { readCommitted: true, timeoutMs: 120_000 },
    );
    r.rows = table ? [...last.values()].filter(Boolean).length : rows;
    return r;
  } catch (err) {
    const exited = w && !isAlive(w.proc.pid) ? workerError(w.proc.log) : undefined;
    return { query: q, ok: false, expected, inputs, reason: `${exited || firstLine(err)}${w ? ` (log ${w.proc.log})` : ""}` };
  } finally {
    if (w) {
      await stopProcess(w.proc.pid);
      live.delete(w.proc.pid);
    }
  }
}

function table(results: Result[]): string {
  const head = ["query", "input", "records/s", "CPU s/1M records", "peak RSS MiB", "state bytes", "rows / batch rows", "seconds"];
  const lines = results.map((r) =>
    r.ok
      ? [
          r.query,
          String(r.inputs),
          `${(r.inputs / (r.seconds ?? 1) / 1000).toFixed(1)}k`,
          r.cpuSeconds === undefined ? "-" : ((r.cpuSeconds * 1_000_000) / r.inputs).toFixed(2),
          r.rssMiB === undefined ? "-" : r.rssMiB.toFixed(0),
          String(r.stateBytes ?? "-"),
          `${r.rows} / ${r.expected}${r.rows === r.expected ? "" : " (differ)"}`,
          (r.seconds ?? 0).toFixed(2),
        ]
      : [r.query, String(r.inputs), `failed: ${r.reason}`, "", "", "", "", ""],
  );
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? "").length)));
  return [head, ...lines]
    .map((l) =>
      l
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

async function main(): Promise<void> {
  if (!Number.isInteger(EVENTS) || EVENTS < 50) throw new Error("BENCH_EVENTS must be an integer of at least 50");
  stopLiveOnSignal(live);
  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  const t0 = performance.now();
  const data = nexmarkDataSet({ seed: 20261205, events: EVENTS, baseTime: BASE, eventsPerSecond: EVENTS_PER_SECOND });
  say(`generated ${EVENTS} events (${data.bids.length} bids) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  say(`starting a broker in ${DIR}/kafka`);
  let cluster: KafkaCluster | undefined;
  let a: Admin | undefined;
  try {
    cluster = await startKafka({ dir: join(DIR, "kafka") });
    for (const pid of cluster.pids.values()) live.add(pid);
    a = admin(cluster.bootstrap);
    const ends = await eventTopics(a, cluster.bootstrap, data);
    const results: Result[] = [];
    for (const q of Object.keys(NEXMARK_PIPELINES) as NexmarkQuery[]) {
      if (WANTED && !WANTED.has(q)) continue;
      say(`${q}: one worker`);
      const r = await runQuery(a, cluster.bootstrap, q, ends, data);
      say(r.ok ? `${q}: ${(r.seconds ?? 0).toFixed(2)} s` : `${q}: failed: ${r.reason}`);
      results.push(r);
    }
    process.stdout.write(
      `\n${EVENTS} Nexmark events (${data.persons.length} persons, ${data.auctions.length} auctions, ${data.bids.length} bids, ${EVENTS_PER_SECOND} events/s of event time), ${PARTITIONS} partitions; ` +
        `per query one worker process of this runtime, exactly-once as the examples have it, commit interval 100 ms\n\n`,
    );
    process.stdout.write(`${table(results)}\n\n`);
    process.stdout.write(
      "input: the records of the query's topics (bids, or q8's persons and auctions, with one flush event per partition); " +
        "records/s: those, from the worker's start to its group's committed offsets reaching the end of its input topics and of each repartition topic in turn (and a windowed query's rows written); " +
        "CPU: user + system seconds of the process at that moment; state bytes: conveyor_runtime_state_bytes then (RocksDB files and memtables); " +
        "rows: what the sink holds (read_committed; for a table, its keys' last values) beside what the batch computation of the query gives on the same data\n",
    );
  } finally {
    await a?.close().catch(() => undefined);
    await stopBroker(cluster, live);
    say(`logs in ${DIR}`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`[bench] failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
