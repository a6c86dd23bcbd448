// Dead letters as the conveyor command reads them: a record of the DLQ topic with the headers the runtime wrote
// (runtime/dead-letter.ts), and the reads `describe`, `dlq tail` and `dlq replay` share.
import type { Message } from "@platformatic/kafka";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import type { KafkaIo } from "../../runtime/kafka/kafka-io.ts";

export interface DeadLetter {
  /** where it sits in the DLQ topic */
  partition: number;
  offset: bigint;
  /** when the record failed (conveyor.error.time; before that header existed, the record's own timestamp) */
  time: number;
  kind: string;
  step: string;
  error: string;
  source: { topic?: string; partition?: number; offset?: string };
  message: Message<Buffer, Buffer, Buffer, Buffer>;
}

export function header(h: Map<Buffer, Buffer> | undefined, key: string): string | undefined {
  for (const [k, v] of h ?? []) if (k.toString() === key) return v.toString("utf8");
  return undefined;
}

export function deadLetterOf(m: Message<Buffer, Buffer, Buffer, Buffer>): DeadLetter {
  const h = m.headers as unknown as Map<Buffer, Buffer>;
  const partition = Number(header(h, DLQ_HEADERS.partition));
  const time = Number(header(h, DLQ_HEADERS.time));
  const topic = header(h, DLQ_HEADERS.topic);
  const offset = header(h, DLQ_HEADERS.offset);
  return {
    partition: m.partition,
    offset: m.offset,
    time: Number.isFinite(time) ? time : Number(m.timestamp),
    kind: header(h, DLQ_HEADERS.kind) ?? "?",
    step: header(h, DLQ_HEADERS.step) ?? "?",
    error: header(h, DLQ_HEADERS.error) ?? "",
    source: { ...(topic !== undefined ? { topic } : {}), ...(Number.isInteger(partition) ? { partition } : {}), ...(offset !== undefined ? { offset } : {}) },
    message: m,
  };
}

export function sourceOf(d: DeadLetter): string {
  return `${d.source.topic ?? "?"}/${d.source.partition ?? "?"}@${d.source.offset ?? "?"}`;
}

/**
 * Reads each partition of `topic` from its end back at most `perPartition` records, up to the end as it is now,
 * under read_committed, and hands over the dead letters. Returns, per partition, whether the read stopped at the
 * bound before the partition's start.
 */
export async function readBack(io: KafkaIo, topic: string, perPartition: bigint, visit: (d: DeadLetter) => void): Promise<Map<number, { cut: boolean }>> {
  const partitions = (await io.partitionCounts([topic])).get(topic) ?? 0;
  const all = Array.from({ length: partitions }, (_, p) => p);
  const [start, end] = await Promise.all([io.offsetsAt(topic, all, "earliest", true), io.offsetsAt(topic, all, "latest", true)]);
  const out = new Map<number, { cut: boolean }>();
  for (const p of all) {
    const first = start.get(p) ?? 0n;
    const last = end.get(p) ?? 0n;
    const from = last - perPartition > first ? last - perPartition : first;
    await io.readPartition(topic, p, from, {
      readCommitted: true,
      stallMs: 15_000,
      onRecords: async (batch) => {
        for (const m of batch) visit(deadLetterOf(m as Message<Buffer, Buffer, Buffer, Buffer>));
      },
    });
    out.set(p, { cut: from > first });
  }
  return out;
}
