// What a broker takes into an output topic, read from the topic's own configuration when the worker starts: a
// user's sink may allow smaller records than the broker's default, or no timestamps from long ago. A record the
// broker would refuse fails its whole batch, and the batch fails the same way after every restart; so each
// record bound for the sink, the late topic or the DLQ is checked before it is sent, and one the broker would
// refuse goes to the DLQ instead (cut to fit, when it is the DLQ's own record that is too large).
import type { OutRecord } from "./stages.ts";
import { recordBytes } from "./stateless.ts";

export interface TopicLimits {
  /** max.message.bytes: a record batch's bytes */
  maxMessageBytes: number;
  /** message.timestamp.type: LogAppendTime topics take any timestamp, the broker sets its own */
  logAppendTime: boolean;
  /** message.timestamp.before.max.ms and message.timestamp.after.max.ms */
  beforeMaxMs: number;
  afterMaxMs: number;
}

/** Kafka's defaults, for a topic whose configuration could not be read. */
export const DEFAULT_TOPIC_LIMITS: TopicLimits = {
  maxMessageBytes: 1_048_588,
  logAppendTime: false,
  beforeMaxMs: Number.MAX_SAFE_INTEGER,
  afterMaxMs: 3_600_000,
};

/** Bytes a record batch of one record adds beyond its key, value and headers (v2 format, with room to spare). */
export const BATCH_OVERHEAD_BYTES = 512;

export const LIMIT_CONFIGS = ["max.message.bytes", "message.timestamp.type", "message.timestamp.before.max.ms", "message.timestamp.after.max.ms"];

/** Limits from a described topic configuration; a value that is absent or unreadable keeps Kafka's default. */
export function limitsFrom(configs: Map<string, string | null | undefined>): TopicLimits {
  const num = (name: string, fallback: number) => {
    const v = Number(configs.get(name));
    return configs.get(name) != null && Number.isFinite(v) ? Math.min(v, Number.MAX_SAFE_INTEGER) : fallback;
  };
  return {
    maxMessageBytes: num("max.message.bytes", DEFAULT_TOPIC_LIMITS.maxMessageBytes),
    logAppendTime: configs.get("message.timestamp.type") === "LogAppendTime",
    beforeMaxMs: num("message.timestamp.before.max.ms", DEFAULT_TOPIC_LIMITS.beforeMaxMs),
    afterMaxMs: num("message.timestamp.after.max.ms", DEFAULT_TOPIC_LIMITS.afterMaxMs),
  };
}

/** Why the broker would refuse this record into its topic, or undefined when it takes it. */
export function refusal(r: OutRecord, limits: TopicLimits, now: number): string | undefined {
  const bytes = recordBytes(r.key, r.value, r.headers) + BATCH_OVERHEAD_BYTES;
  if (bytes > limits.maxMessageBytes)
    return `the record is about ${bytes} bytes, over ${r.topic}'s max.message.bytes (${limits.maxMessageBytes}): the broker would refuse it (RECORD_TOO_LARGE)`;
  if (r.timestamp !== undefined && !limits.logAppendTime) {
    const ts = Number(r.timestamp);
    if (ts > now + limits.afterMaxMs || ts < now - limits.beforeMaxMs)
      return `its timestamp ${new Date(ts).toISOString()} is outside what ${r.topic} takes (message.timestamp.before.max.ms ${limits.beforeMaxMs}, after.max.ms ${limits.afterMaxMs}): the broker would refuse it (INVALID_TIMESTAMP)`;
  }
  return undefined;
}
