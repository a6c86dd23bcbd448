// npm run bench:runtime: this runtime's throughput on a real broker, beside the previous design's (the runtime of
// BENCH_BASELINE, the commit before windows went to disk), Kafka Streams' on the same data and the broker's own
// rates, in one run. It starts a broker of its own, writes N JSON records of about 150 B into a 6-partition source
// once (1,000 users), and N more into a second source whose every record has a user of its own, then runs each row
// as one worker process of this runtime (runtime/main.ts), one of the previous design's, each in a consumer group
// and into a sink of its own, and then as one process of a Kafka Streams application with the same topology
// (bench/kafka-streams, one stream thread) under an application id of its own. Each is timed from its start until
// its group's committed offsets reach the source's end offsets and, for windowed rows, its repartition topic's
// too, and its CPU time is read at that moment. Kafka's own tools, run from the same jars, give the broker's
// produce and consume rates that the rows are compared with.
// BENCH_RECORDS (default 1,000,000) sets N; CONVEYOR_BENCH_DIR (default /tmp/conveyor-bench-runtime) the state;
// BENCH_BASELINE (default 04e1456..., the last commit that kept windows in the heap) the previous design's commit,
// or none to leave that column out. BENCH_CPU_PROF=<dir> writes a V8 CPU profile of each worker of ours into
// <dir>/<worker name>/ (node --cpu-prof, written when the worker stops); `node bench/profile-summary.ts <file>`
// sums it up by where the time went.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Admin } from "@platformatic/kafka";
import { Producer } from "../runtime/kafka/client.ts";
import type { StepSpec, StreamPipelineSpec } from "../src/api-types.gen.ts";
import { type KafkaCluster, startKafka } from "../test/env/kafka.ts";
import { isAlive, startProcess, stopProcess, waitFor } from "../test/env/proc.ts";
import { ensureKafka } from "../test/env/toolchain.ts";
import { admin, brokers, createInternalTopics, createTopic, endOffsets } from "../test/support/kafka.ts";
import { prng } from "../test/support/prng.ts";
import { compiled, previousRuntime, type RuntimeProcess, startRuntime } from "../test/support/runtime.ts";
import { cpuSeconds, type KafkaStreamsProcess, kafkaStreamsJar, kafkaStreamsVersion, ourWorkerHeapMiB, runKafkaStreams } from "./kafka-streams.ts";
import { k, type Measured, notes, type Row, type RowResult, type Side, tables } from "./runtime-report.ts";
import { firstLine, peakRssMiB, reached, stopBroker, stopLiveOnSignal, workerError } from "./worker-run.ts";

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
// A row's side (this runtime, the previous one, Kafka Streams) slower than 2,000 records/s fails on its deadline
// rather than holding the bench.
const ROW_TIMEOUT_MS = Number(process.env.BENCH_ROW_TIMEOUT_MS ?? 60_000 + (RECORDS / 2_000) * 1_000);
const TOOL_TIMEOUT_MS = 60_000 + (RECORDS / 20_000) * 1_000;
const POLL_MS = 100;
/** value.user is one of USERS */
const SOURCE = "bench-source";
/** value.user is user-<i> for the i-th record: every record a key, and so a window, of its own */
const DISTINCT_SOURCE = "bench-source-distinct";
const NAMESPACE = "bench";
const LATE_METRIC = "conveyor_runtime_records_late_total";
/** The last commit whose runtime kept its windows in the JS heap (RocksDB a mirror of them). */
const DEFAULT_BASELINE = "04e145679652c150dc5d5db6022cd686d939409b";
const BASELINE_ENV = process.env.BENCH_BASELINE || DEFAULT_BASELINE;
/** The previous design's commit, whose runtime every row runs too; undefined: BENCH_BASELINE=none, no such column. */
const BASELINE = BASELINE_ENV === "none" ? undefined : BASELINE_ENV;
/** The previous design's pipelines are named <row>-prev: their own group, internal topics, sink and dead letters. */
const PREVIOUS_SUFFIX = "-prev";

const ROWS: Row[] = [
  { name: "stateless-alo", kind: "stateless", guarantee: "atLeastOnce", source: SOURCE, keys: USERS },
  { name: "stateless-eos", kind: "stateless", guarantee: "exactlyOnce", source: SOURCE, keys: USERS },
  { name: "windowed-alo", kind: "windowed", guarantee: "atLeastOnce", source: SOURCE, keys: USERS },
  { name: "windowed-eos", kind: "windowed", guarantee: "exactlyOnce", source: SOURCE, keys: USERS },
  // The state-heavy row: a window per record, RECORDS of them over the run (each closes as the event time passes it).
  { name: "distinct-keys-eos", kind: "windowed", guarantee: "exactlyOnce", source: DISTINCT_SOURCE, keys: RECORDS },
];

/** BENCH_ROWS=stateless-eos,windowed-eos runs only those rows (all by default). */
/** BENCH_CPU_PROF=<dir>: a CPU profile of each of our workers (this runtime's and the previous design's). */
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF;
const ROWS_WANTED = process.env.BENCH_ROWS ? new Set(process.env.BENCH_ROWS.split(",").map((r) => r.trim())) : undefined;
for (const r of ROWS_WANTED ?? [])
  if (!ROWS.some((row) => row.name === r)) throw new Error(`BENCH_ROWS: no row ${r} (rows: ${ROWS.map((row) => row.name).join(", ")})`);

/** Processes this run started and has not stopped yet, so that an interrupt stops them too. */
const live = new Set<number>();

function say(s: string): void {
  process.stderr.write(`[bench] ${s}\n`);
}

/**
 * Writes RECORDS records into `topic`. Record i goes to partition i % 6; its event time is its place within that
 * partition, on the 30 minutes; its user is user(i, rand), rand the source's own random numbers.
 */
async function produceSource(bootstrap: string, topic: string, seed: number, user: (i: number, rand: () => number) => string): Promise<number> {
  const rand = prng(seed);
  const perPartition = Math.ceil(RECORDS / PARTITIONS);
  const pad = (base: string) => "x".repeat(Math.max(0, RECORD_BYTES - base.length - ',"pad":""'.length));
  const producer = new Producer({ clientId: "bench-producer", bootstrapBrokers: brokers(bootstrap), acks: -1, idempotent: true });
  const t0 = performance.now();
  try {
    for (let i = 0; i < RECORDS; i += PRODUCE_BATCH) {
      const messages = [];
      for (let j = i; j < Math.min(RECORDS, i + PRODUCE_BATCH); j++) {
        const u = user(j, rand);
        const amount = 1 + Math.floor(rand() * 100);
        const ts = T0 + Math.floor((Math.floor(j / PARTITIONS) * EVENT_SPAN_MS) / perPartition) - Math.floor(rand() * DISORDER_MS);
        const base = `{"user":"${u}","amount":${amount},"ts":${ts}}`;
        const value = `${base.slice(0, -1)},"pad":"${pad(base)}"}`;
        messages.push({ topic, partition: j % PARTITIONS, key: Buffer.from(u), value: Buffer.from(value) });
      }
      await producer.send({ messages });
    }
  } finally {
    await producer.close();
  }
  return RECORDS / ((performance.now() - t0) / 1000);
}

/**
 * One committed transaction before any row: the broker creates its transaction state topic (50 partitions) at the
 * first transactional producer, which would otherwise fall on the first exactly-once row's first side.
 */
async function warmTransactions(a: Admin, bootstrap: string): Promise<void> {
  const topic = "bench-warm-transactions";
  await createTopic(a, topic, 1, {});
  const producer = new Producer({ clientId: "bench-warm", bootstrapBrokers: brokers(bootstrap), acks: -1, idempotent: true, transactionalId: "bench-warm" });
  try {
    const tx = await producer.beginTransaction();
    await tx.send({ messages: [{ topic, key: Buffer.from("warm"), value: Buffer.from("warm") }] });
    await tx.commit();
  } finally {
    await producer.close();
  }
}

/** Creates `topic` (kept forever) and writes RECORDS records into it (produceSource); the rate, and its end offsets. */
async function writeSource(
  a: Admin,
  bootstrap: string,
  topic: string,
  seed: number,
  user: (i: number, rand: () => number) => string,
): Promise<{ rate: number; ends: bigint[] }> {
  await createTopic(a, topic, PARTITIONS, { "retention.ms": "-1" });
  say(`producing ${RECORDS} records of ${RECORD_BYTES} B into ${topic} (${PARTITIONS} partitions) with @platformatic/kafka`);
  const rate = await produceSource(bootstrap, topic, seed, user);
  const ends = await endOffsets(a, topic);
  if (sum(ends) !== BigInt(RECORDS)) throw new Error(`${topic} holds ${sum(ends)} records, not ${RECORDS}`);
  return { rate, ends };
}

/** The row's pipeline under the name `name`, whose sink and dead-letter topics are its own. */
function specFor(row: Row, bootstrap: string, name: string): StreamPipelineSpec {
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
      topics: [row.source],
      startFrom: "earliest",
      ...(row.kind === "windowed" ? { eventTime: "value.ts", watermark: { maxOutOfOrderness: MAX_OUT_OF_ORDERNESS } } : {}),
    },
    steps,
    sink: { topic: `bench-sink-${name}` },
    deadLetter: { topic: `bench-dlq-${name}` },
    processing: { guarantee: row.guarantee, commitInterval: "100ms" },
  };
}

const sum = (xs: bigint[]) => xs.reduce((s, x) => s + x, 0n);

/**
 * The row as one worker process of a runtime: this checkout's, or the one checked out at `root` (previousRuntime),
 * as the pipeline `name`, whose consumer group, internal topics, sink and dead letters are its own.
 */
async function runRuntime(a: Admin, bootstrap: string, row: Row, sourceEnds: bigint[], runtime: { name: string; root?: string }): Promise<Side> {
  const spec = specFor(row, bootstrap, runtime.name);
  const meta = { namespace: NAMESPACE, name: runtime.name };
  let w: RuntimeProcess | undefined;
  try {
    const topology = compiled(spec, meta);
    for (const t of [spec.sink.topic, spec.deadLetter?.topic ?? ""].filter(Boolean)) await createTopic(a, t, PARTITIONS);
    // What the operator would create; 6 partitions, as the source has.
    await createInternalTopics(a, topology, PARTITIONS);
    const repartition = topology.steps.find((s) => s.kind === "keyBy")?.repartitionTopic;
    const group = topology.applicationId;
    const t0 = performance.now();
    const env = CPU_PROF_DIR ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${join(CPU_PROF_DIR, runtime.name)}` } : undefined;
    w = await startRuntime({ dir: join(DIR, "workers"), ...meta, spec, root: runtime.root, ...(env ? { env } : {}) });
    live.add(w.proc.pid);
    const worker = w;
    const deadline = t0 + ROW_TIMEOUT_MS;
    const left = () => Math.max(1, Math.ceil(deadline - performance.now()));
    await waitFor(() => reached(a, group, row.source, sourceEnds), {
      what: `${runtime.name}: the group's committed offsets to reach the source's end`,
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
        what: `${runtime.name}: the group's committed offsets to reach the repartition topic's end`,
        timeoutMs: left(),
        intervalMs: POLL_MS,
        process: worker.proc,
      });
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(worker.proc.pid);
    const recordsIn = await worker.metric("conveyor_runtime_records_in_total");
    const m: Measured = { seconds, in: recordsIn, out: await worker.metric("conveyor_runtime_records_out_total") };
    if (cpu !== undefined) m.cpuSeconds = cpu;
    const rss = peakRssMiB(worker.proc.pid);
    if (rss !== undefined) m.rssMiB = rss;
    if (repartition) {
      m.late = await worker.metric(LATE_METRIC);
      const data = recordsIn - (await worker.metric("conveyor_runtime_records_filtered_total")) - (await worker.metric("conveyor_runtime_dead_letters_total"));
      if (data > 0) m.markersPer1000 = ((Number(sum(repartitionEnds)) - data) * 1000) / data;
      const changelog = topology.steps.find((s) => s.kind === "window")?.changelogTopic;
      if (changelog) m.changelog = Number(sum(await endOffsets(a, changelog)));
    }
    return { ok: true, m };
  } catch (err) {
    const exited = w && !isAlive(w.proc.pid) ? workerError(w.proc.log) : undefined;
    return { ok: false, reason: `${exited || firstLine(err)}${w ? ` (log ${w.proc.log})` : ""}` };
  } finally {
    if (w) {
      await stopProcess(w.proc.pid);
      live.delete(w.proc.pid);
    }
  }
}

/** Kafka Streams' guarantee for each of the runtime's. */
const KS_GUARANTEE = { atLeastOnce: "at_least_once", exactlyOnce: "exactly_once_v2" } as const;

type Jar = { ok: true; path: string } | { ok: false; reason: string };

/** Topics that a Kafka Streams application made for itself: <application.id>-<store or node name><suffix>. */
async function internalTopicsOf(a: Admin, applicationId: string, suffix: "-repartition" | "-changelog"): Promise<string[]> {
  return (await a.listTopics()).filter((t) => t.startsWith(`${applicationId}-`) && t.endsWith(suffix)).sort();
}

/** The app prints why its stream thread died on a line of its own. */
function kafkaStreamsError(log: string): string | undefined {
  try {
    return readFileSync(log, "utf8")
      .split("\n")
      .reverse()
      .find((l) => l.startsWith("kafka streams failed: "));
  } catch {
    return undefined;
  }
}

/**
 * The row's topology as the Kafka Streams app (bench/kafka-streams), on the same source, under an application id
 * (and so a consumer group) of its own, timed as our worker is: from its start until its group's committed offsets
 * reach the source's end and, for windowed rows, the end of the repartition topic it made.
 */
async function runKafkaStreamsSide(a: Admin, bootstrap: string, jar: Jar, row: Row, sourceEnds: bigint[]): Promise<Side> {
  if (!jar.ok) return { ok: false, reason: `not built: ${jar.reason}` };
  const applicationId = `bench-ks-${row.name}`;
  let ks: KafkaStreamsProcess | undefined;
  try {
    const sink = `bench-ks-sink-${row.name}`;
    await createTopic(a, sink, PARTITIONS);
    const t0 = performance.now();
    ks = runKafkaStreams({
      jar: jar.path,
      bootstrap,
      topology: row.kind,
      guarantee: KS_GUARANTEE[row.guarantee],
      source: row.source,
      sink,
      applicationId,
      dir: join(DIR, "kafka-streams"),
    });
    live.add(ks.pid);
    const app = ks;
    say(`${row.name}: ${app.argv.join(" ")}`);
    const deadline = t0 + ROW_TIMEOUT_MS;
    const left = () => Math.max(1, Math.ceil(deadline - performance.now()));
    await waitFor(() => reached(a, applicationId, row.source, sourceEnds), {
      what: `${row.name}: Kafka Streams' committed offsets to reach the source's end`,
      timeoutMs: left(),
      intervalMs: POLL_MS,
      process: app.proc,
    });
    // As for the runtime: every data record is on the repartition topic once the source's offsets are committed, and
    // nothing but data and (under exactly-once) transaction markers goes there, so its end offsets now are the target.
    let repartitionEnds: bigint[] = [];
    if (row.kind === "windowed") {
      const found = await internalTopicsOf(a, applicationId, "-repartition");
      const repartition = found[0];
      if (found.length !== 1 || repartition === undefined) {
        throw new Error(`expected one repartition topic named ${applicationId}-*-repartition, found ${found.join(", ") || "none"}`);
      }
      repartitionEnds = await endOffsets(a, repartition);
      await waitFor(() => reached(a, applicationId, repartition, repartitionEnds), {
        what: `${row.name}: Kafka Streams' committed offsets to reach the end of ${repartition}`,
        timeoutMs: left(),
        intervalMs: POLL_MS,
        process: app.proc,
      });
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(app.pid);
    const rss = peakRssMiB(app.pid);
    const m: Measured = { seconds };
    if (cpu !== undefined) m.cpuSeconds = cpu;
    if (rss !== undefined) m.rssMiB = rss;
    // Its counters come with its exit.
    const stats = await app.stop();
    live.delete(app.pid);
    if (!stats) say(`${row.name}: Kafka Streams printed no STATS line on its way out (log ${app.proc.log})`);
    if (stats) {
      m.in = stats.in;
      m.out = stats.out;
    }
    if (row.kind === "windowed") {
      if (stats) {
        m.late = stats.dropped - stats.malformed;
        // Nothing is filtered before its groupBy: every well-formed source record is a data record there.
        const data = stats.in - stats.malformed;
        if (data > 0) m.markersPer1000 = ((Number(sum(repartitionEnds)) - data) * 1000) / data;
      }
      // The window store's and the suppression buffer's.
      let changelog = 0n;
      for (const t of await internalTopicsOf(a, applicationId, "-changelog")) changelog += sum(await endOffsets(a, t));
      m.changelog = Number(changelog);
    }
    return { ok: true, m };
  } catch (err) {
    const exited = ks && !isAlive(ks.pid) ? kafkaStreamsError(ks.proc.log) : undefined;
    return { ok: false, reason: `${exited || firstLine(err)}${ks ? ` (log ${ks.proc.log})` : ""}` };
  } finally {
    if (ks) {
      await ks.stop();
      live.delete(ks.pid);
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

type Checkout = { ok: true; root: string } | { ok: false; reason: string };

/**
 * The previous design's runtime, checked out from git (git archive) under the bench's directory, before the broker
 * starts; undefined with BENCH_BASELINE=none. A commit that is not there fails that column's rows, not the bench.
 */
function previousCheckout(): Checkout | undefined {
  if (!BASELINE) return undefined;
  try {
    return { ok: true, root: previousRuntime(BASELINE, join(DIR, "previous")) };
  } catch (err) {
    return { ok: false, reason: firstLine(err) };
  }
}

async function main(): Promise<void> {
  if (!Number.isInteger(RECORDS) || RECORDS < PARTITIONS) throw new Error(`BENCH_RECORDS must be an integer of at least ${PARTITIONS}`);
  stopLiveOnSignal(live);

  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  // Before the broker starts: the first build takes a while, and no row is running meanwhile.
  const buildLog = join(DIR, "kafka-streams-build.log");
  const jar: Jar = await kafkaStreamsJar({ log: buildLog, live }).then(
    (path): Jar => ({ ok: true, path }),
    (err: unknown): Jar => ({ ok: false, reason: `${firstLine(err)} (log ${buildLog})` }),
  );
  if (!jar.ok) say(`the Kafka Streams side did not build; its rows will say why: ${jar.reason}`);
  const checkout = previousCheckout();
  if (checkout && !checkout.ok) say(`the previous design's runtime is not there; its rows will say why: ${checkout.reason}`);
  const lib = await ensureKafka();
  say(`starting a broker in ${DIR}/kafka`);
  let cluster: KafkaCluster | undefined;
  let a: Admin | undefined;
  try {
    cluster = await startKafka({ dir: join(DIR, "kafka") });
    for (const pid of cluster.pids.values()) live.add(pid);
    const bootstrap = cluster.bootstrap;
    a = admin(bootstrap);
    const users = await writeSource(a, bootstrap, SOURCE, 20261125, (_, rand) => `user-${Math.floor(rand() * USERS)}`);
    const distinct = await writeSource(a, bootstrap, DISTINCT_SOURCE, 20261126, (i) => `user-${i}`);
    const endsOf = new Map([
      [SOURCE, users.ends],
      [DISTINCT_SOURCE, distinct.ends],
    ]);

    const broker = await brokerRates(lib, a, bootstrap);
    say("one transaction, so that the transaction state topic exists before the first exactly-once row");
    await warmTransactions(a, bootstrap);
    const results: RowResult[] = [];
    for (const row of ROWS.filter((r) => !ROWS_WANTED || ROWS_WANTED.has(r.name))) {
      const sourceEnds = endsOf.get(row.source) ?? [];
      const checkIn = (who: string, side: Side) => {
        if (side.ok && side.m.in !== undefined && side.m.in !== RECORDS) say(`${row.name}: ${who} read ${side.m.in} source records, not ${RECORDS}`);
        say(side.ok ? `${row.name}: ${who} ${side.m.seconds.toFixed(2)} s` : `${row.name}: ${who} failed: ${side.reason}`);
      };
      say(`row ${row.name}: this runtime`);
      const current = await runRuntime(a, bootstrap, row, sourceEnds, { name: row.name });
      checkIn("this runtime", current);
      let previous: Side | undefined;
      if (checkout) {
        say(`row ${row.name}: the previous design's runtime (${BASELINE})`);
        previous = checkout.ok
          ? await runRuntime(a, bootstrap, row, sourceEnds, { name: `${row.name}${PREVIOUS_SUFFIX}`, root: checkout.root })
          : { ok: false, reason: `not checked out: ${checkout.reason}` };
        checkIn("the previous design", previous);
      }
      say(`row ${row.name}: Kafka Streams`);
      const ks = await runKafkaStreamsSide(a, bootstrap, jar, row, sourceEnds);
      checkIn("Kafka Streams", ks);
      results.push({ row, current, previous, ks });
    }

    const w = process.stdout;
    w.write(
      `\n${RECORDS} records of ${RECORD_BYTES} B JSON, ${PARTITIONS} partitions; per row one worker process of this runtime (this), ` +
        `${BASELINE ? "one of the previous design's (prev), " : ""}then one Kafka Streams process (KS) with one stream thread, ` +
        `one after the other; commit interval 100 ms\n`,
    );
    w.write(`broker, this run (Kafka's tools, acks=all):\n`);
    w.write(`  produce  ProducerPerformance   ${broker.produce ? `${k(broker.produce)} records/s` : "failed"}\n`);
    w.write(
      `  consume  ConsumerPerformance   ${broker.consume ? `${k(broker.consume.total)} records/s (fetch only ${k(broker.consume.fetch)}); the ratio uses the first` : "failed"}\n`,
    );
    w.write(`  produce  @platformatic/kafka   ${k(users.rate)} records/s (${SOURCE}), ${k(distinct.rate)} records/s (${DISTINCT_SOURCE})\n\n`);
    w.write(`${tables(results, { records: RECORDS, consume: broker.consume?.total, baseline: BASELINE })}\n\n`);
    w.write(notes({ baseline: BASELINE, lateMetric: LATE_METRIC, kafkaStreamsVersion, heapMiB: ourWorkerHeapMiB() }));
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
