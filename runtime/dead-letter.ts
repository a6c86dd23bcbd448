// Dead letters: the record as it came in (key, value, headers, timestamp), plus headers that say what failed,
// where, and where the record came from, so that it can be inspected and replayed.
import { externalHeaders, isInternalHeader } from "./headers.ts";
import { MAX_RECORD_BYTES, type Outcome, recordBytes, type SourceRecord } from "./stateless.ts";

export const DLQ_HEADERS = {
  error: "conveyor.error",
  kind: "conveyor.error.kind",
  step: "conveyor.error.step",
  pipeline: "conveyor.pipeline",
  topic: "conveyor.source.topic",
  partition: "conveyor.source.partition",
  offset: "conveyor.source.offset",
  /** when the record failed, in milliseconds since the epoch: the copy keeps the source record's timestamp */
  time: "conveyor.error.time",
  /** the copy's value was cut to fit the broker's record limit: the original length in bytes */
  valueTruncated: "conveyor.error.value-truncated",
  /** the source record's own headers were left out to fit: how many */
  headersDropped: "conveyor.error.headers-dropped",
  /** the copy's key was cut to fit: the original length in bytes */
  keyTruncated: "conveyor.error.key-truncated",
} as const;

/** Headers are bounded: an error message longer than this is cut, and says so. */
export const MAX_ERROR_HEADER = 2048;

export type Failure = Extract<Outcome, { ok: false }>;

export type DeadLetter = { key?: Buffer; value?: Buffer; headers: Map<Buffer, Buffer>; timestamp: bigint };

export function deadLetterRecord(r: SourceRecord, failure: Failure, pipeline: string, maxBytes = MAX_RECORD_BYTES, now = Date.now()): DeadLetter {
  const error = failure.error.length > MAX_ERROR_HEADER ? `${failure.error.slice(0, MAX_ERROR_HEADER)}… (cut)` : failure.error;
  const ours: [string, string][] = [
    [DLQ_HEADERS.error, error],
    [DLQ_HEADERS.kind, failure.kind],
    [DLQ_HEADERS.step, failure.step],
    [DLQ_HEADERS.pipeline, pipeline],
    [DLQ_HEADERS.topic, r.topic],
    [DLQ_HEADERS.partition, String(r.partition)],
    [DLQ_HEADERS.offset, String(r.offset)],
    [DLQ_HEADERS.time, String(now)],
  ];
  // conveyor.* headers are the runtime's: whatever a producer sent under those names, or the runtime wrote on an
  // internal record, gives way to the reasons, so that a DLQ reader can trust every conveyor.* header it sees
  const headers = new Map(externalHeaders(r.headers));
  for (const [k, v] of ours) headers.set(Buffer.from(k), Buffer.from(v, "utf8"));
  return refit({ key: r.key ?? undefined, value: r.value ?? undefined, headers, timestamp: r.timestamp }, maxBytes);
}

/**
 * A dead letter cut to fit `maxBytes`, and saying so. A record near the limit (a source topic may allow larger
 * ones) plus the reasons would be refused by the broker, and the batch with it, again at every retry. The value
 * goes first, then the headers that are not the runtime's (conveyor.*), then the key.
 */
export function refit(d: DeadLetter, maxBytes: number): DeadLetter {
  let { key, value, headers } = d;
  const over = () => recordBytes(key, value, headers) - maxBytes;
  if (over() <= 0) return d;
  const cut: [string, string][] = [];
  if (value && over() > 0) {
    cut.push([DLQ_HEADERS.valueTruncated, String(value.length)]);
    value = value.subarray(0, Math.max(0, value.length - over() - 256));
  }
  if (over() > 0) {
    const reasons = new Map<Buffer, Buffer>();
    for (const [k, v] of headers) if (isInternalHeader(k)) reasons.set(k, v);
    cut.push([DLQ_HEADERS.headersDropped, String(headers.size - reasons.size)]);
    headers = reasons;
  }
  if (key && over() > 0) {
    cut.push([DLQ_HEADERS.keyTruncated, String(key.length)]);
    key = key.subarray(0, Math.max(0, key.length - over() - 256));
  }
  headers = new Map(headers);
  for (const [k, v] of cut) headers.set(Buffer.from(k), Buffer.from(v, "utf8"));
  return { key, value, headers, timestamp: d.timestamp };
}

/** Where a failure is logged when there is no dead-letter topic. */
export function describeFailure(r: SourceRecord, failure: Failure): string {
  return `record ${r.topic}/${r.partition}@${r.offset} failed at step "${failure.step}" (${failure.kind}): ${failure.error}`;
}
