// Kafka error codes inside the errors @platformatic/kafka throws: it wraps protocol errors in response and
// aggregate errors, so a code may sit a few levels down.

/** Every non-zero Kafka error code inside err, each once. */
export function kafkaCodes(err: unknown): number[] {
  const codes: number[] = [];
  const walk = (e: unknown, depth: number) => {
    if (!e || typeof e !== "object" || depth > 6) return;
    const rec = e as { errorCode?: unknown; apiCode?: unknown; response?: unknown; errors?: unknown[]; cause?: unknown };
    if (typeof rec.errorCode === "number") codes.push(rec.errorCode);
    // Some protocol errors carry their code only as apiCode (AddPartitionsToTxn's, for one).
    if (typeof rec.apiCode === "number") codes.push(rec.apiCode);
    if (Array.isArray(rec.errors)) for (const x of rec.errors) walk(x, depth + 1);
    if (rec.cause) walk(rec.cause, depth + 1);
    if (rec.response && typeof rec.response === "object") {
      const json = JSON.stringify(rec.response, (_k, v: unknown) => (typeof v === "bigint" ? Number(v) : v));
      // errorCode, and the partition-level partitionErrorCode of some responses
      for (const m of json.matchAll(/[eE]rrorCode":(\d+)/g)) codes.push(Number(m[1]));
    }
  };
  walk(err, 0);
  return [...new Set(codes.filter((c) => c !== 0))];
}

/** True when err carries Kafka error codes and every one of them is allowed. */
export function onlyCodes(err: unknown, allowed: number[]): boolean {
  const codes = kafkaCodes(err);
  return codes.length > 0 && codes.every((c) => allowed.includes(c));
}

/** The group moved on while a batch was in flight: its offsets cannot be committed, and its work is redone. */
export const REBALANCE_CODES = [
  22, // ILLEGAL_GENERATION
  25, // UNKNOWN_MEMBER_ID
  27, // REBALANCE_IN_PROGRESS
] as const;

export function isRebalanceError(err: unknown): boolean {
  return onlyCodes(err, [...REBALANCE_CODES]);
}
