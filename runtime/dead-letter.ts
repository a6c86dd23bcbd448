// Dead letters: the record as it came in (key, value, headers, timestamp), plus headers that say what failed,
// where, and where the record came from, so that it can be inspected and replayed.
import { externalHeaders } from "./headers.ts";
import type { Outcome, SourceRecord } from "./stateless.ts";

export const DLQ_HEADERS = {
  error: "conveyor.error",
  kind: "conveyor.error.kind",
  step: "conveyor.error.step",
  pipeline: "conveyor.pipeline",
  topic: "conveyor.source.topic",
  partition: "conveyor.source.partition",
  offset: "conveyor.source.offset",
} as const;

/** Headers are bounded: an error message longer than this is cut, and says so. */
export const MAX_ERROR_HEADER = 2048;

export type Failure = Extract<Outcome, { ok: false }>;

export function deadLetterRecord(
  r: SourceRecord,
  failure: Failure,
  pipeline: string,
): { key?: Buffer; value?: Buffer; headers: Map<Buffer, Buffer>; timestamp: bigint } {
  const error = failure.error.length > MAX_ERROR_HEADER ? `${failure.error.slice(0, MAX_ERROR_HEADER)}… (cut)` : failure.error;
  const ours: [string, string][] = [
    [DLQ_HEADERS.error, error],
    [DLQ_HEADERS.kind, failure.kind],
    [DLQ_HEADERS.step, failure.step],
    [DLQ_HEADERS.pipeline, pipeline],
    [DLQ_HEADERS.topic, r.topic],
    [DLQ_HEADERS.partition, String(r.partition)],
    [DLQ_HEADERS.offset, String(r.offset)],
  ];
  // conveyor.* headers are the runtime's: whatever a producer sent under those names, or the runtime wrote on an
  // internal record, gives way to the reasons, so that a DLQ reader can trust every conveyor.* header it sees
  const headers = new Map(externalHeaders(r.headers));
  for (const [k, v] of ours) headers.set(Buffer.from(k), Buffer.from(v, "utf8"));
  return { key: r.key ?? undefined, value: r.value ?? undefined, headers, timestamp: r.timestamp };
}

/** Where a failure is logged when there is no dead-letter topic. */
export function describeFailure(r: SourceRecord, failure: Failure): string {
  return `record ${r.topic}/${r.partition}@${r.offset} failed at step "${failure.step}" (${failure.kind}): ${failure.error}`;
}
