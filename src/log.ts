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

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
