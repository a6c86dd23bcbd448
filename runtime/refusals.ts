// Records the broker refused after all. topic-limits.ts predicts the refusals it can from the output topics'
// configuration, read when the worker starts; some it cannot: a topic reconfigured since (a smaller
// max.message.bytes), a compacted sink given a record without a key (INVALID_RECORD), a record the broker finds
// corrupt. Such a refusal fails the whole produce request, and the batch would fail the same way after every
// restart; so the worker finds the record that was refused and sends it to the DLQ instead (record-collector.ts, write).
import { kafkaCodes } from "../src/kafka-errors.ts";

/** Error codes with which a broker refuses the records of a produce request, not the request or the producer. */
export const RECORD_REFUSAL_CODES: ReadonlyMap<number, string> = new Map([
  [2, "CORRUPT_MESSAGE"],
  [10, "MESSAGE_TOO_LARGE"],
  [18, "RECORD_LIST_TOO_LARGE"],
  [32, "INVALID_TIMESTAMP"],
  [87, "INVALID_RECORD"],
]);

/** Record-level errors (KIP-467) reach the library's error as code -1, beside their partition's own code. */
const RECORD_ERROR = -1;

export interface Refusal {
  /** the topics whose partitions refused records */
  topics: Set<string>;
  /** what the broker said, per refused partition: `topic/partition: CODE: message` */
  reason: string;
}

interface PartitionResponse {
  index?: unknown;
  errorCode?: unknown;
  errorMessage?: unknown;
  recordErrors?: { batchIndexErrorMessage?: unknown }[];
}

/**
 * The refusal in a failed produce, when every error in it is one of records (RECORD_REFUSAL_CODES); undefined
 * for any other failure (a fenced producer, a broker gone, a rebalance), which the caller handles as before.
 */
export function recordRefusal(err: unknown): Refusal | undefined {
  const refused: { topic: string; partition: number; code: number; message: string }[] = [];
  const seen = new Set<unknown>();
  const walk = (e: unknown, depth: number) => {
    if (!e || typeof e !== "object" || depth > 6 || seen.has(e)) return;
    seen.add(e);
    const rec = e as { response?: { responses?: unknown }; errors?: unknown[]; cause?: unknown };
    const responses = rec.response?.responses;
    if (Array.isArray(responses)) {
      for (const t of responses as { name?: unknown; partitionResponses?: unknown }[]) {
        if (typeof t?.name !== "string" || !Array.isArray(t.partitionResponses)) continue;
        for (const p of t.partitionResponses as PartitionResponse[]) {
          if (typeof p.errorCode !== "number" || p.errorCode === 0) continue;
          const records = (p.recordErrors ?? []).map((r) => r.batchIndexErrorMessage).filter((m): m is string => typeof m === "string");
          const message = [typeof p.errorMessage === "string" ? p.errorMessage : "", ...records].filter((m) => m !== "").join("; ");
          refused.push({ topic: t.name, partition: Number(p.index), code: p.errorCode, message });
        }
      }
    }
    if (Array.isArray(rec.errors)) for (const x of rec.errors) walk(x, depth + 1);
    if (rec.cause) walk(rec.cause, depth + 1);
  };
  walk(err, 0);
  if (refused.length === 0 || !refused.every((r) => RECORD_REFUSAL_CODES.has(r.code))) return undefined;
  if (!kafkaCodes(err).every((c) => c === RECORD_ERROR || RECORD_REFUSAL_CODES.has(c))) return undefined;
  return {
    topics: new Set(refused.map((r) => r.topic)),
    reason: refused.map((r) => `${r.topic}/${r.partition}: ${RECORD_REFUSAL_CODES.get(r.code)}${r.message ? `: ${r.message}` : ""}`).join("; "),
  };
}

/** A produce of one record (of a batch written one record at a time) that the broker refused: the record is known. */
export class RefusedRecord extends Error {
  readonly index: number;
  readonly refusal: Refusal;
  constructor(index: number, refusal: Refusal) {
    super(`the broker refused a record: ${refusal.reason}`);
    this.index = index;
    this.refusal = refusal;
  }
}
