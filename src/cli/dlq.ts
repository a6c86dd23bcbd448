// `conveyor dlq tail` and `conveyor dlq replay`: look at a pipeline's dead letters, and once the cause is fixed,
// send them back without the runtime's error headers. A replay keeps its progress in a consumer group of its
// own and writes in Kafka transactions that commit that progress with the records, so a replay that is killed
// and run again writes no record twice and leaves none out.
import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import type { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { Admin, FindCoordinatorKeyTypes, type Message } from "@platformatic/kafka";
import { isInternalHeader } from "../../runtime/headers.ts";
// the project's Producer: it writes record timestamps correctly (runtime/kafka/client.ts)
import { Producer } from "../../runtime/kafka/client.ts";
import { KafkaIo } from "../../runtime/kafka/kafka-io.ts";
import { commitInTransaction } from "../../runtime/kafka/member-commit.ts";
import type { StreamPipeline } from "../api.ts";
import { clientOptions, type KafkaConnection } from "../kafka-client.ts";
import { connectionFor } from "../kafka-connection.ts";
import { errorMessage } from "../log.ts";
import { pipelineMeta } from "../reconcile.ts";
import { type CompiledTopology, compile, sourceTopicsOf } from "../topology/compile.ts";
import { type DeadLetter, deadLetterOf, readBack, sourceOf } from "./dead-letters.ts";
import { readPipeline } from "./describe.ts";

export interface PipelineKafka {
  pipeline: StreamPipeline;
  topology: CompiledTopology;
  connection: KafkaConnection;
  dlq: string;
}

/** The pipeline, its compiled topology and its Kafka connection; an error says why one cannot be had. */
export async function pipelineKafka(kc: KubeConfig, core: CoreV1Api, namespace: string, name: string): Promise<PipelineKafka> {
  const pipeline = await readPipeline(kc, namespace, name);
  const compiled = compile(pipeline.spec, pipelineMeta(pipeline));
  if (!compiled.ok)
    throw new Error(`streampipeline ${namespace}/${name} does not compile: ${compiled.errors.map((e) => `${e.field}: ${e.message}`).join("; ")}`);
  const dlq = compiled.topology.deadLetter?.topic;
  if (!dlq) throw new Error(`streampipeline ${namespace}/${name} has no dead-letter topic (spec.deadLetter.topic)`);
  return { pipeline, topology: compiled.topology, connection: await connectionFor(core, pipeline), dlq };
}

/** "2h", "30m", "45s" ago, or an ISO 8601 time: milliseconds since the epoch. */
export function parseSince(text: string, now = Date.now()): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (m) return now - Number(m[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "ms" | "s" | "m" | "h" | "d"];
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new Error(`--since ${text}: give a duration (90s, 30m, 2h, 1d) or a time (2026-12-06T03:00:00Z)`);
  return t;
}

export interface TailOptions {
  limit: number;
  kind?: string;
  step?: string;
  since?: number;
}

/** The last `limit` dead letters that match, oldest first. */
export async function tail(p: PipelineKafka, opts: TailOptions): Promise<DeadLetter[]> {
  const io = new KafkaIo(clientOptions(p.connection), `conveyor-dlq-${process.pid}`, "conveyor-dlq-");
  const kept: DeadLetter[] = [];
  try {
    // read back further than the limit: filters may pass over some
    await readBack(io, p.dlq, BigInt(Math.max(opts.limit * 20, 1_000)), (d) => {
      if (matches(d, opts)) kept.push(d);
    });
  } finally {
    await io.close();
  }
  return kept.sort((a, b) => a.time - b.time || a.partition - b.partition || Number(a.offset - b.offset)).slice(-opts.limit);
}

export function formatLetter(d: DeadLetter): string {
  const value = d.message.value?.toString("utf8") ?? "";
  const key = d.message.key?.toString("utf8");
  return [
    `${new Date(d.time).toISOString()}  ${d.kind} at step ${d.step}, from ${sourceOf(d)} (dlq ${d.partition}@${d.offset})`,
    `  error: ${d.error}`,
    `  key:   ${key === undefined ? "(none)" : JSON.stringify(key.length > 200 ? `${key.slice(0, 200)}…` : key)}`,
    `  value: ${JSON.stringify(value.length > 400 ? `${value.slice(0, 400)}…` : value)}`,
  ].join("\n");
}

function matches(d: DeadLetter, f: { kind?: string; step?: string; since?: number }): boolean {
  return (f.kind === undefined || d.kind === f.kind) && (f.step === undefined || d.step === f.step) && (f.since === undefined || d.time >= f.since);
}

export interface ReplayOptions {
  /** "source": each letter back to the source topic and partition it came from; or a topic */
  to: string;
  kind?: string;
  step?: string;
  since?: number;
  /** --since as given ("2h"): a rerun of the same command names the same replay, though "2h ago" has moved */
  sinceText?: string;
  dryRun: boolean;
  /** records per transaction */
  batch: number;
  /** at most this many records a second (unset: as fast as the broker takes them) */
  rate?: number;
  progress: (line: string) => void;
}

export interface ReplayReport {
  group: string;
  transactionalId: string;
  /** replayed now, by where they went */
  replayed: Map<string, number>;
  /** read and passed over: not matching the filters */
  filtered: number;
  /** matching, but not replayable to the source: they came from a topic that is not one of the pipeline's sources */
  skipped: Map<string, number>;
  /** dead letters a replay with these options already went past */
  alreadyDone: bigint;
}

/**
 * The replay's consumer group and transactional id, one per pipeline and set of options: the same command run
 * again goes on where it stopped; a replay with other filters or another target starts from the beginning.
 */
export function replayIdentity(p: PipelineKafka, o: Pick<ReplayOptions, "to" | "kind" | "step" | "since" | "sinceText">): string {
  const filters = JSON.stringify({ to: o.to, kind: o.kind ?? null, step: o.step ?? null, since: o.sinceText ?? o.since ?? null });
  const hash = createHash("sha256").update(filters).digest("hex").slice(0, 12);
  return `${p.topology.applicationId}.conveyor-replay.${hash}`;
}

export async function replay(p: PipelineKafka, opts: ReplayOptions): Promise<ReplayReport> {
  const id = replayIdentity(p, opts);
  const report: ReplayReport = { group: id, transactionalId: id, replayed: new Map(), filtered: 0, skipped: new Map(), alreadyDone: 0n };
  const sources = new Set(sourceTopicsOf(p.topology));
  const conn = clientOptions(p.connection);
  const admin = new Admin({ clientId: "conveyor-dlq-replay", ...conn });
  const io = new KafkaIo(conn, `conveyor-dlq-replay-${process.pid}`, "conveyor-dlq-replay-");
  const producer = opts.dryRun
    ? undefined
    : new Producer<Buffer, Buffer, Buffer, Buffer>({
        clientId: "conveyor-dlq-replay",
        ...conn,
        idempotent: true,
        acks: -1,
        transactionalId: id,
        retryDelay: 20,
      });
  try {
    const partitions = (await io.partitionCounts([p.dlq])).get(p.dlq) ?? 0;
    const all = Array.from({ length: partitions }, (_, i) => i);
    const [start, end] = await Promise.all([io.offsetsAt(p.dlq, all, "earliest", true), io.offsetsAt(p.dlq, all, "latest", true)]);
    const committed = new Map<number, bigint>();
    for (const g of await admin.listConsumerGroupOffsets({ groups: [id] }))
      for (const t of g.topics)
        if (t.name === p.dlq) for (const x of t.partitions) if (x.committedOffset >= 0n) committed.set(x.partitionIndex, x.committedOffset);
    const targetPartitions = new Map<string, number>();
    const partitionsOf = async (topic: string) => {
      let n = targetPartitions.get(topic);
      if (n === undefined) {
        n = (await io.partitionCounts([topic])).get(topic) ?? 0;
        targetPartitions.set(topic, n);
      }
      return n;
    };
    const coordinator = opts.dryRun ? -1 : await groupCoordinator(admin, id);
    let first = true;
    const total = all.reduce((n, i) => n + Number((end.get(i) ?? 0n) - (committed.get(i) ?? start.get(i) ?? 0n)), 0);
    let done = 0;
    for (const partition of all) {
      const from = committed.get(partition) ?? start.get(partition) ?? 0n;
      report.alreadyDone += from - (start.get(partition) ?? 0n);
      if (from >= (end.get(partition) ?? 0n)) continue;
      await io.readPartition(p.dlq, partition, from, {
        readCommitted: true,
        stallMs: 30_000,
        onRecords: async (batch) => {
          for (let i = 0; i < batch.length; i += opts.batch) {
            const chunk = batch.slice(i, i + opts.batch) as Message<Buffer, Buffer, Buffer, Buffer>[];
            const began = Date.now();
            const out: { topic: string; partition?: number; key?: Buffer; value?: Buffer; headers: Map<Buffer, Buffer>; timestamp: bigint }[] = [];
            for (const m of chunk) {
              const d = deadLetterOf(m);
              if (!matches(d, opts)) {
                report.filtered++;
                continue;
              }
              const topic = opts.to === "source" ? d.source.topic : opts.to;
              if (topic === undefined || (opts.to === "source" && !sources.has(topic))) {
                const why = topic === undefined ? "no conveyor.source.topic header" : `${topic} is not a source of the pipeline`;
                report.skipped.set(why, (report.skipped.get(why) ?? 0) + 1);
                continue;
              }
              // back where it was read from, so that its key's partition is the producer's own choice again
              const keep = opts.to === "source" && d.source.partition !== undefined && d.source.partition < (await partitionsOf(topic));
              const headers = new Map<Buffer, Buffer>();
              for (const [k, v] of (m.headers as unknown as Map<Buffer, Buffer>) ?? []) if (!isInternalHeader(k)) headers.set(k, v);
              out.push({
                topic,
                ...(keep ? { partition: d.source.partition } : {}),
                ...(m.key ? { key: m.key } : {}),
                ...(m.value ? { value: m.value } : {}),
                headers,
                timestamp: m.timestamp,
              });
            }
            const next = (chunk.at(-1)?.offset ?? from) + 1n;
            if (producer) {
              await inTransaction(producer, first, async (tx) => {
                if (out.length > 0) await tx.send({ messages: out });
                await tx.addConsumer({ groupId: id } as never);
                await commitInTransaction(producer, tx.id, { groupId: id, generationId: -1, memberId: "", coordinatorId: coordinator }, [
                  { topic: p.dlq, partition, offset: next, leaderEpoch: -1 },
                ]);
              });
              first = false;
            }
            for (const r of out) report.replayed.set(r.topic, (report.replayed.get(r.topic) ?? 0) + 1);
            done += chunk.length;
            opts.progress(`${opts.dryRun ? "would replay" : "replayed"} ${sum(report.replayed)} of ${done} read (about ${total} to read)`);
            if (opts.rate !== undefined) await delay(Math.max(0, began + (1_000 * chunk.length) / opts.rate - Date.now()));
          }
        },
      });
    }
    return report;
  } finally {
    const errors: string[] = [];
    await producer?.close().catch((err: unknown) => errors.push(`closing the producer: ${errorMessage(err)}`));
    await io.close().catch((err: unknown) => errors.push(`closing the reader: ${errorMessage(err)}`));
    await admin.close().catch((err: unknown) => errors.push(`closing the admin: ${errorMessage(err)}`));
    for (const e of errors) opts.progress(e);
  }
}

function sum(m: Map<string, number>): number {
  return [...m.values()].reduce((a, b) => a + b, 0);
}

async function groupCoordinator(admin: Admin, group: string): Promise<number> {
  const found = await admin.findCoordinator({ keyType: FindCoordinatorKeyTypes.GROUP, keys: [group] });
  const node = found.find((c) => c.key === group)?.nodeId;
  if (node === undefined || node < 0) throw new Error(`no coordinator found for group ${group}`);
  return node;
}

type Transaction = Awaited<ReturnType<Producer<Buffer, Buffer, Buffer, Buffer>["beginTransaction"]>>;

/**
 * One transaction. The first asks for a new producer epoch, which fences a replay killed halfway and aborts the
 * transaction it left open; while the broker aborts it, it answers CONCURRENT_TRANSACTIONS, tried again for 60 s.
 */
async function inTransaction(producer: Producer<Buffer, Buffer, Buffer, Buffer>, first: boolean, work: (tx: Transaction) => Promise<void>): Promise<void> {
  let tx: Transaction;
  const deadline = Date.now() + 60_000;
  for (let wait = 50; ; wait = Math.min(wait * 2, 1_000)) {
    try {
      tx = await producer.beginTransaction(first ? { producerId: -1n, producerEpoch: -1 } : {});
      break;
    } catch (err) {
      if (!first || Date.now() > deadline) throw err;
      await delay(wait);
    }
  }
  try {
    await work(tx);
    await tx.commit();
  } catch (err) {
    // a fenced or broken transaction may refuse the abort too; the broker then aborts it at its timeout
    const aborted = await tx.abort().then(
      () => undefined,
      (abortErr: unknown) => abortErr,
    );
    if (aborted !== undefined) throw new Error(`${errorMessage(err)}; aborting the transaction failed too: ${errorMessage(aborted)}`, { cause: err });
    throw err;
  }
}
