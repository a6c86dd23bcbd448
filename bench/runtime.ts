// npm run bench:runtime: the runtime's throughput on a real broker, beside the broker's own rates, in one run.
// It starts a broker of its own, writes N JSON records of about 150 B into a 6-partition source once, then runs
// each row as one worker process of the real runtime (runtime/main.ts) in a consumer group of its own, and
// times it from the worker's start until the group's committed offsets reach the source's end offsets and,
// for windowed rows, the repartition topic's too: Kafka's own tools, run from the same jars, give the broker's
// produce and consume rates that the rows are compared with.
// BENCH_RECORDS (default 1,000,000) sets N; CONVEYOR_BENCH_DIR (default /tmp/conveyor-bench-runtime) the state.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Admin, Producer } from "@platformatic/kafka";
import type { StepSpec, StreamPipelineSpec } from "../src/api-types.gen.ts";
import { type KafkaCluster, startKafka, stopKafka } from "../test/env/kafka.ts";
import { isAlive, signalGroup, startProcess, stopProcess, waitFor } from "../test/env/proc.ts";
import { ensureKafka } from "../test/env/toolchain.ts";
import { admin, brokers, committedOffsets, createInternalTopics, createTopic, endOffsets } from "../test/support/kafka.ts";
import { prng } from "../test/support/prng.ts";
import { compiled, type RuntimeProcess, startRuntime } from "../test/support/runtime.ts";

const RECORDS = Number(process.env.BENCH_RECORDS ?? 1_000_000);
const DIR = process.env.CONVEYOR_BENCH_DIR ?? "/tmp/conveyor-bench-runtime";
const PARTITIONS = 6;
const RECORD_BYTES = 150;
const USERS = 1_000;
const PRODUCE_BATCH = 2_000;
// The event times of the whole run span 30 minutes, so that a small run closes windows too. Within a source
// partition they rise, each shifted back by up to 2 s, well inside the 30 s the pipeline allows: a late record
// here is one the runtime made late, not the data.
const EVENT_SPAN_MS = 30 * 60_000;
const DISORDER_MS = 2_000;
const MAX_OUT_OF_ORDERNESS = "30s";
// In the past: a broker refuses record timestamps more than an hour ahead of its clock.
const T0 = Math.floor((Date.now() - 3 * 3_600_000) / 60_000) * 60_000;
// A row slower than 2,000 records/s fails on its deadline rather than holding the bench.
const ROW_TIMEOUT_MS = Number(process.env.BENCH_ROW_TIMEOUT_MS ?? 60_000 + (RECORDS / 2_000) * 1_000);
const TOOL_TIMEOUT_MS = 60_000 + (RECORDS / 20_000) * 1_000;
const POLL_MS = 100;
const SOURCE = "bench-source";
const NAMESPACE = "bench";
const LATE_METRIC = "conveyor_runtime_records_late_total";

/** Kafka Streams 4.3.1 on this machine kind, from ../shared/design/TESTBED.md: not measured in this run. */
const KAFKA_STREAMS_ANCHOR = { stateless: { atLeastOnce: 147_600, exactlyOnce: 152_100 }, windowed: { atLeastOnce: 40_000, exactlyOnce: 37_000 } };

type Guarantee = NonNullable<NonNullable<StreamPipelineSpec["processing"]>["guarantee"]>;

interface Row {
  name: string;
  kind: "stateless" | "windowed";
  guarantee: Guarantee;
}

const ROWS: Row[] = [
  { name: "stateless-alo", kind: "stateless", guarantee: "atLeastOnce" },
  { name: "stateless-eos", kind: "stateless", guarantee: "exactlyOnce" },
  { name: "windowed-alo", kind: "windowed", guarantee: "atLeastOnce" },
  { name: "windowed-eos", kind: "windowed", guarantee: "exactlyOnce" },
];

interface Measured {
  seconds: number;
  in: number;
  out: number;
  late?: number;
  /** marker records on the repartition topic per 1,000 data records written there */
  markersPer1000?: number;
  /** records on the window store's changelog topic (under exactlyOnce, with transaction markers) */
  changelog?: number;
  rssMiB?: number;
}

type RowResult = { row: Row; ok: true; m: Measured } | { row: Row; ok: false; reason: string };

/** Processes this run started and has not stopped yet, so that an interrupt stops them too. */
const live = new Set<number>();

function say(s: string): void {
  process.stderr.write(`[bench] ${s}\n`);
}

/** Record i goes to partition i % 6; its event time is its place within that partition, on the 30 minutes. */
async function produceSource(bootstrap: string): Promise<number> {
  const rand = prng(20261125);
  const perPartition = Math.ceil(RECORDS / PARTITIONS);
  const pad = (base: string) => "x".repeat(Math.max(0, RECORD_BYTES - base.length - ',"pad":""'.length));
  const producer = new Producer({ clientId: "bench-producer", bootstrapBrokers: brokers(bootstrap), acks: -1, idempotent: true });
  const t0 = performance.now();
  try {
    for (let i = 0; i < RECORDS; i += PRODUCE_BATCH) {
      const messages = [];
      for (let j = i; j < Math.min(RECORDS, i + PRODUCE_BATCH); j++) {
        const user = `user-${Math.floor(rand() * USERS)}`;
        const amount = 1 + Math.floor(rand() * 100);
        const ts = T0 + Math.floor((Math.floor(j / PARTITIONS) * EVENT_SPAN_MS) / perPartition) - Math.floor(rand() * DISORDER_MS);
        const base = `{"user":"${user}","amount":${amount},"ts":${ts}}`;
        const value = `${base.slice(0, -1)},"pad":"${pad(base)}"}`;
        messages.push({ topic: SOURCE, partition: j % PARTITIONS, key: Buffer.from(user), value: Buffer.from(value) });
      }
      await producer.send({ messages });
    }
  } finally {
    await producer.close();
  }
  return RECORDS / ((performance.now() - t0) / 1000);
}

function specFor(row: Row, bootstrap: string): StreamPipelineSpec {
  const steps: StepSpec[] =
    row.kind === "stateless"
      ? [
          { name: "big", filter: "value.amount > 10" },
          { name: "shape", map: "{'user': value.user, 'amount': value.amount}" },
        ]
      : [
          { name: "by-user", keyBy: "value.user" },
          {
            name: "per-minute",
            window: { tumbling: "1m" },
            aggregate: { count: { count: {} }, total: { sum: "value.amount" } },
            emit: "onWindowClose",
            late: { drop: true },
          },
        ];
  return {
    kafka: { bootstrapServers: [bootstrap] },
    source: {
      topics: [SOURCE],
      startFrom: "earliest",
      ...(row.kind === "windowed" ? { eventTime: "value.ts", watermark: { maxOutOfOrderness: MAX_OUT_OF_ORDERNESS } } : {}),
    },
    steps,
    sink: { topic: `bench-sink-${row.name}` },
    deadLetter: { topic: `bench-dlq-${row.name}` },
    processing: { guarantee: row.guarantee, commitInterval: "100ms" },
  };
}

async function reached(a: Admin, group: string, topic: string, ends: bigint[]): Promise<boolean> {
  const committed = await committedOffsets(a, group, topic, ends.length);
  return ends.every((e, p) => (committed[p] ?? -1n) >= e);
}

const sum = (xs: bigint[]) => xs.reduce((s, x) => s + x, 0n);

/** The runtime logs JSON lines; the last error line says why a worker exited. */
function workerError(log: string): string | undefined {
  const lines = readFileSync(log, "utf8").trimEnd().split("\n").reverse();
  for (const line of lines) {
    try {
      const l = JSON.parse(line) as { level?: string; msg?: string; error?: string };
      if (l.level === "error") return [l.msg, l.error].filter(Boolean).join(": ");
    } catch {
      // not a log line of the runtime's (a Node warning, say)
    }
  }
  return undefined;
}

function peakRssMiB(pid: number): number | undefined {
  try {
    const kb = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmHWM:\s+(\d+) kB/m)?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined;
  }
}

async function runRow(a: Admin, bootstrap: string, row: Row, sourceEnds: bigint[]): Promise<RowResult> {
  const spec = specFor(row, bootstrap);
  const meta = { namespace: NAMESPACE, name: row.name };
  let w: RuntimeProcess | undefined;
  try {
    const topology = compiled(spec, meta);
    for (const t of [spec.sink.topic, spec.deadLetter?.topic ?? ""].filter(Boolean)) await createTopic(a, t, PARTITIONS);
    // What the operator would create; 6 partitions, as the source has.
    await createInternalTopics(a, topology, PARTITIONS);
    const repartition = topology.steps.find((s) => s.kind === "keyBy")?.repartitionTopic;
    const group = topology.applicationId;
    const t0 = performance.now();
    w = await startRuntime({ dir: join(DIR, "workers"), ...meta, spec });
    live.add(w.proc.pid);
    const worker = w;
    const deadline = t0 + ROW_TIMEOUT_MS;
    const left = () => Math.max(1, Math.ceil(deadline - performance.now()));
    await waitFor(() => reached(a, group, SOURCE, sourceEnds), {
      what: `${row.name}: the group's committed offsets to reach the source's end`,
      timeoutMs: left(),
      intervalMs: POLL_MS,
      process: worker.proc,
    });
    // Every data record is on the repartition topic once the source's offsets are committed, since a batch is
    // written before its offsets are. The end offsets now are the target: markers go on being written after it.
    // Under exactly-once they count the transactions' commit markers too.
    const repartitionEnds = repartition ? await endOffsets(a, repartition) : [];
    if (repartition) {
      await waitFor(() => reached(a, group, repartition, repartitionEnds), {
        what: `${row.name}: the group's committed offsets to reach the repartition topic's end`,
        timeoutMs: left(),
        intervalMs: POLL_MS,
        process: worker.proc,
      });
    }
    const seconds = (performance.now() - t0) / 1000;
    const recordsIn = await worker.metric("conveyor_runtime_records_in_total");
    const m: Measured = { seconds, in: recordsIn, out: await worker.metric("conveyor_runtime_records_out_total") };
    const rss = peakRssMiB(worker.proc.pid);
    if (rss !== undefined) m.rssMiB = rss;
    if (repartition) {
      m.late = await worker.metric(LATE_METRIC);
      const data = recordsIn - (await worker.metric("conveyor_runtime_records_filtered_total")) - (await worker.metric("conveyor_runtime_dead_letters_total"));
      if (data > 0) m.markersPer1000 = ((Number(sum(repartitionEnds)) - data) * 1000) / data;
      const changelog = topology.steps.find((s) => s.kind === "window")?.changelogTopic;
      if (changelog) m.changelog = Number(sum(await endOffsets(a, changelog)));
    }
    return { row, ok: true, m };
  } catch (err) {
    const exited = w && !isAlive(w.proc.pid) ? workerError(w.proc.log) : undefined;
    // waitFor's message ends with the log's tail; the table gets one line, and the log's path.
    const reason = exited ?? (err instanceof Error ? err.message : String(err)).split("\n")[0]?.replace(/; log \/.*$/, "");
    return { row, ok: false, reason: `${reason || "unknown"}${w ? ` (log ${w.proc.log})` : ""}` };
  } finally {
    if (w) {
      await stopProcess(w.proc.pid);
      live.delete(w.proc.pid);
    }
  }
}

// Warnings only, so that the tools' figures are not buried under client configuration dumps.
const TOOLS_LOG4J = [
  "log4j.rootLogger=WARN, stderr",
  "log4j.appender.stderr=org.apache.log4j.ConsoleAppender",
  "log4j.appender.stderr.Target=System.err",
  "log4j.appender.stderr.layout=org.apache.log4j.PatternLayout",
  "log4j.appender.stderr.layout.ConversionPattern=%p %m (%c)%n",
  "",
].join("\n");

/** Runs one of Kafka's tool classes from the broker's jars to completion, bounded, and returns its output. */
async function kafkaTool(lib: string, name: string, mainClass: string, args: string[]): Promise<string> {
  const log = join(DIR, `${name}.log`);
  rmSync(log, { force: true });
  const log4j = join(DIR, "tools-log4j.properties");
  writeFileSync(log4j, TOOLS_LOG4J);
  const proc = startProcess({
    name,
    cmd: "java",
    args: ["-Xmx512m", `-Dlog4j.configuration=file:${log4j}`, "-cp", `${lib}/*`, mainClass, ...args],
    log,
  });
  live.add(proc.pid);
  try {
    await waitFor(() => !isAlive(proc.pid), { what: `${name} to finish`, timeoutMs: TOOL_TIMEOUT_MS, intervalMs: POLL_MS });
  } finally {
    await stopProcess(proc.pid);
    live.delete(proc.pid);
  }
  return readFileSync(log, "utf8");
}

/** The summary line: "1000000 records sent, 328000.1 records/sec (46.92 MB/sec), ..."; the last such line. */
function producerRate(out: string): number {
  const m = [...out.matchAll(/(\d+) records sent, ([\d.]+) records\/sec/g)].at(-1);
  if (!m?.[2]) throw new Error(`no summary in ProducerPerformance's output:\n${out.trimEnd().split("\n").slice(-10).join("\n")}`);
  return Number(m[2]);
}

/** A header line of comma-separated names (start.time, ..., nMsg.sec, ..., fetch.nMsg.sec) and a line of values. */
function consumerRates(out: string): { total: number; fetch: number } {
  const lines = out.split("\n").map((l) => l.trim());
  const h = lines.findIndex((l) => l.startsWith("start.time"));
  const names = (lines[h] ?? "").split(",").map((s) => s.trim());
  const values = (lines[h + 1] ?? "").split(",").map((s) => s.trim());
  const get = (n: string) => Number(values[names.indexOf(n)]);
  const total = get("nMsg.sec");
  const fetch = get("fetch.nMsg.sec");
  if (h < 0 || !Number.isFinite(total) || !Number.isFinite(fetch)) {
    throw new Error(`no figures in ConsumerPerformance's output:\n${out.trimEnd().split("\n").slice(-10).join("\n")}`);
  }
  return { total, fetch };
}

async function brokerRates(lib: string, a: Admin, bootstrap: string): Promise<{ produce?: number; consume?: { total: number; fetch: number } }> {
  const out: { produce?: number; consume?: { total: number; fetch: number } } = {};
  try {
    await createTopic(a, "bench-perf", PARTITIONS);
    say(`ProducerPerformance: ${RECORDS} records of ${RECORD_BYTES} B into bench-perf, acks=all`);
    const text = await kafkaTool(lib, "producer-performance", "org.apache.kafka.tools.ProducerPerformance", [
      "--bootstrap-server",
      bootstrap,
      "--topic",
      "bench-perf",
      "--num-records",
      String(RECORDS),
      "--record-size",
      String(RECORD_BYTES),
      "--throughput",
      "-1",
      "--command-property",
      "acks=all",
    ]);
    out.produce = producerRate(text);
  } catch (err) {
    say(`ProducerPerformance failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    say(`ConsumerPerformance: ${RECORDS} records of ${SOURCE}`);
    const text = await kafkaTool(lib, "consumer-performance", "org.apache.kafka.tools.ConsumerPerformance", [
      "--bootstrap-server",
      bootstrap,
      "--topic",
      SOURCE,
      "--num-records",
      String(RECORDS),
      "--group",
      "bench-perf-consumer",
      "--timeout",
      "30000",
    ]);
    out.consume = consumerRates(text);
  } catch (err) {
    say(`ConsumerPerformance failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  return out;
}

const k = (n: number) => `${(n / 1000).toFixed(1)}k`;

function table(results: RowResult[], consume?: number): string {
  const head = ["row", "records", "seconds", "records/s", "vs broker consume", "out", "late", "markers/1k", "changelog", "peak RSS"];
  const rows = results.map((r) => {
    if (!r.ok) return [r.row.name, String(RECORDS), `failed: ${r.reason}`];
    const m = r.m;
    const rate = RECORDS / m.seconds;
    return [
      r.row.name,
      String(RECORDS),
      m.seconds.toFixed(2),
      k(rate),
      consume ? (rate / consume).toFixed(3) : "-",
      String(m.out),
      m.late === undefined ? "-" : String(m.late),
      m.markersPer1000 === undefined ? "-" : m.markersPer1000.toFixed(1),
      m.changelog === undefined ? "-" : String(m.changelog),
      m.rssMiB === undefined ? "-" : `${m.rssMiB.toFixed(0)} MiB`,
    ];
  });
  // A failed row's reason runs on past the columns rather than widening them.
  const widths = head.map((h, i) => Math.max(h.length, ...rows.filter((r) => r.length === head.length).map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < cells.length - 1 ? c.padEnd(widths[i] ?? 0) : c)).join("  ");
  return [line(head), ...rows.map(line)].join("\n");
}

async function main(): Promise<void> {
  if (!Number.isInteger(RECORDS) || RECORDS < PARTITIONS) throw new Error(`BENCH_RECORDS must be an integer of at least ${PARTITIONS}`);
  const interrupt = (signal: NodeJS.Signals) => {
    for (const pid of live) signalGroup(pid, "SIGTERM");
    process.stderr.write(`[bench] ${signal}: sent SIGTERM to ${[...live].join(", ") || "nothing"}\n`);
    process.exit(130);
  };
  process.once("SIGINT", interrupt);
  process.once("SIGTERM", interrupt);

  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  const lib = await ensureKafka();
  say(`starting a broker in ${DIR}/kafka`);
  let cluster: KafkaCluster | undefined;
  let a: Admin | undefined;
  try {
    cluster = await startKafka({ dir: join(DIR, "kafka") });
    for (const pid of cluster.pids.values()) live.add(pid);
    const bootstrap = cluster.bootstrap;
    a = admin(bootstrap);
    await createTopic(a, SOURCE, PARTITIONS, { "retention.ms": "-1" });
    say(`producing ${RECORDS} records of ${RECORD_BYTES} B into ${SOURCE} (${PARTITIONS} partitions) with @platformatic/kafka`);
    const produced = await produceSource(bootstrap);
    const sourceEnds = await endOffsets(a, SOURCE);
    if (sum(sourceEnds) !== BigInt(RECORDS)) throw new Error(`${SOURCE} holds ${sum(sourceEnds)} records, not ${RECORDS}`);

    const broker = await brokerRates(lib, a, bootstrap);
    const results: RowResult[] = [];
    for (const row of ROWS) {
      say(`row ${row.name}`);
      const r = await runRow(a, bootstrap, row, sourceEnds);
      if (r.ok && r.m.in !== RECORDS) say(`${row.name}: the worker read ${r.m.in} source records, not ${RECORDS}`);
      say(r.ok ? `${row.name}: ${r.m.seconds.toFixed(2)} s` : `${row.name}: failed: ${r.reason}`);
      results.push(r);
    }

    const w = process.stdout;
    w.write(`\n${RECORDS} records of ${RECORD_BYTES} B JSON, ${PARTITIONS} partitions, one worker process per row, commit interval 100 ms\n`);
    w.write(`broker, this run (Kafka's tools, acks=all):\n`);
    w.write(`  produce  ProducerPerformance   ${broker.produce ? `${k(broker.produce)} records/s` : "failed"}\n`);
    w.write(
      `  consume  ConsumerPerformance   ${broker.consume ? `${k(broker.consume.total)} records/s (fetch only ${k(broker.consume.fetch)}); the ratio uses the first` : "failed"}\n`,
    );
    w.write(`  produce  @platformatic/kafka   ${k(produced)} records/s (the source topic)\n\n`);
    w.write(`${table(results, broker.consume?.total)}\n\n`);
    w.write("records/s: from the worker's start to its committed offsets reaching the source's end (and the repartition topic's, for windowed rows)\n");
    w.write(
      `late: ${LATE_METRIC}; markers/1k: repartition records that are not data, per 1,000 data records (under exactlyOnce, with transaction markers); changelog: records on the window store's changelog, as its end offsets say\n`,
    );
    const a1 = KAFKA_STREAMS_ANCHOR;
    w.write(
      `reference, NOT this run: Kafka Streams 4.3.1 measured earlier on this machine kind (TESTBED.md; 1M records of about 78 B, medians of 3): ` +
        `filter + map ${k(a1.stateless.atLeastOnce)} / ${k(a1.stateless.exactlyOnce)}, windowed ${k(a1.windowed.atLeastOnce)} / ${k(a1.windowed.exactlyOnce)} records/s (at-least-once / exactly-once)\n`,
    );
  } finally {
    await a?.close().catch(() => undefined);
    if (cluster) {
      const pids = [...cluster.pids.values()];
      await stopKafka(cluster);
      for (const pid of pids) live.delete(pid);
    }
    say(`logs in ${DIR}`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`[bench] failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
