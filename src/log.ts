// JSON logs, one object per line, with fields that a log pipeline can index.
export type Fields = Record<string, unknown>;

export interface Logger {
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

export function jsonLogger(base: Fields = {}, out: (line: string) => void = (l) => process.stdout.write(l)): Logger {
  const write = (level: string, msg: string, fields?: Fields) => {
    const rec: Fields = { time: new Date().toISOString(), level, msg, ...base, ...fields };
    out(`${JSON.stringify(rec, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v instanceof Error ? v.message : v))}\n`);
  };
  return {
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    child: (f) => jsonLogger({ ...base, ...f }, out),
  };
}

/** An error's message, with the causes and inner errors a client library wraps in it (Kafka's, say). */
export function errorMessage(err: unknown, depth = 0): string {
  if (!(err instanceof Error)) return String(err);
  const inner: unknown[] = [...(err instanceof AggregateError ? err.errors : []), ...(err.cause !== undefined ? [err.cause] : [])];
  if (inner.length === 0 || depth >= 6) return err.message;
  const details = [...new Set(inner.map((e) => errorMessage(e, depth + 1)))].slice(0, 5);
  return `${err.message} (${details.join("; ")})`;
}
