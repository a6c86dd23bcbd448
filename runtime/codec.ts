// Records in and out of CEL. JSON integers become CEL ints (bigint) and other numbers doubles, so that
// `value.count + 1` works as a user expects; ints go back out as JSON numbers, digit for digit.

export type Format = "json" | "string" | "bytes";

/** A failure the record, not the worker, is to blame for: it sends the record to the dead-letter topic. */
/** What a dead letter's conveyor.error.kind says: the value did not decode, an expression failed, the output
 * did not encode, or the event time is one no watermark may follow. */
export type RecordErrorKind = "parse" | "eval" | "encode" | "eventTime";

export class RecordError extends Error {
  override name = "RecordError";
  readonly kind: RecordErrorKind;
  constructor(kind: RecordErrorKind, message: string) {
    super(message);
    this.kind = kind;
  }
}

function intsToBigInt(v: unknown): unknown {
  if (typeof v === "number") return Number.isInteger(v) ? BigInt(v) : v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = intsToBigInt(v[i]);
    return v;
  }
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    for (const k in o) o[k] = intsToBigInt(o[k]);
  }
  return v;
}

export function decodeValue(raw: Buffer | undefined | null, format: Format): unknown {
  if (raw === undefined || raw === null) return null;
  switch (format) {
    case "bytes":
      return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
    case "string":
      return raw.toString("utf8");
    case "json":
      try {
        return intsToBigInt(JSON.parse(raw.toString("utf8")));
      } catch (err) {
        throw new RecordError("parse", `the value is not JSON: ${err instanceof Error ? err.message : String(err)}`);
      }
  }
}

/** Keys are read as UTF-8 text, or null when the record has none. */
export function decodeKey(raw: Buffer | undefined | null): string | null {
  return raw === undefined || raw === null || raw.length === 0 ? null : raw.toString("utf8");
}

// Node 24 has JSON.rawJSON (ES2025); TypeScript 5.9's lib does not declare it yet.
const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON;

function jsonReplacer(_key: string, v: unknown): unknown {
  if (typeof v === "bigint") return rawJSON(v.toString());
  // JSON has no Infinity or NaN: JSON.stringify would write null, and the reader would get another value
  if (typeof v === "number" && !Number.isFinite(v)) throw new Error(`${v} is not a finite number`);
  if (v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (v instanceof Map) return Object.fromEntries(v);
  return v;
}

/** The fast path cannot write this value alike: the replacer's path writes it (or says why it cannot). */
const SLOW = Symbol("slow");

/**
 * JSON text for the values records mostly hold (null, bools, strings, ints, finite doubles, lists and plain
 * maps) without JSON.stringify's replacer, which takes V8 off its fast path for every value; SLOW for anything
 * else (bytes, timestamps, Maps, and non-finite numbers outside `internal`, which wraps them as it wraps integral
 * doubles and ints past 2^53),
 * which the replacer's path then writes. For what it writes, the text is the replacer's, byte for byte
 * (codec.test.ts holds the two against each other).
 */
function fastJson(v: unknown, internal: boolean): string | typeof SLOW {
  switch (typeof v) {
    case "string":
      return JSON.stringify(v);
    case "boolean":
      return v ? "true" : "false";
    case "bigint":
      // past 2^53 the internal encoding keeps the digits as text, in its wrapper
      return internal && (v > SAFE || v < -SAFE) ? `{${BIG_KEY}:"${v}"}` : v.toString();
    case "number":
      if (!internal) return Number.isFinite(v) ? JSON.stringify(v) : SLOW;
      // a double that is integral, or not finite, is wrapped so that it reads back as a double
      if (!Number.isFinite(v)) return `{${DOUBLE_KEY}:"${v}"}`;
      return Number.isInteger(v) ? `{${DOUBLE_KEY}:${JSON.stringify(v)}}` : JSON.stringify(v);
    case "object": {
      if (v === null) return "null";
      if (Array.isArray(v)) {
        let out = "[";
        for (let i = 0; i < v.length; i++) {
          const x = v[i];
          const t = x === undefined || typeof x === "function" || typeof x === "symbol" ? "null" : fastJson(x, internal);
          if (t === SLOW) return SLOW;
          out += i === 0 ? t : `,${t}`;
        }
        return `${out}]`;
      }
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return SLOW;
      let out = "{";
      let first = true;
      for (const k of Object.keys(v)) {
        const x = (v as Record<string, unknown>)[k];
        if (x === undefined || typeof x === "function" || typeof x === "symbol") continue;
        // a key that names one of the internal wrappers: the replacer's path decides
        if (internal && k.charCodeAt(0) === 0) return SLOW;
        const t = fastJson(x, internal);
        if (t === SLOW) return SLOW;
        out += `${first ? "" : ","}${JSON.stringify(k)}:${t}`;
        first = false;
      }
      return `${out}}`;
    }
    default:
      return SLOW;
  }
}

export function encodeValue(v: unknown, format: Format): Buffer | undefined {
  switch (format) {
    case "json":
      try {
        const fast = fastJson(v, false);
        return Buffer.from(fast === SLOW ? replacerJson(v, false) : fast, "utf8");
      } catch (err) {
        throw new RecordError("encode", `the value cannot be written as JSON: ${err instanceof Error ? err.message : String(err)}`);
      }
    case "string":
      if (typeof v !== "string") throw new RecordError("encode", `the sink's format is string, but the value is ${celTypeOf(v)}`);
      return Buffer.from(v, "utf8");
    case "bytes":
      if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      if (typeof v === "string") return Buffer.from(v, "utf8");
      if (v === null) return undefined;
      throw new RecordError("encode", `the sink's format is bytes, but the value is ${celTypeOf(v)}`);
  }
}

/** A key for Kafka: a scalar's text. Equal CEL values give equal bytes, so they land on one partition. */
export function encodeKey(v: unknown): Buffer | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v === "string") return Buffer.from(v, "utf8");
  if (typeof v === "bigint" || typeof v === "number" || typeof v === "boolean") return Buffer.from(String(v), "utf8");
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw new RecordError("encode", `a key must be a string, a number, a bool or bytes, not ${celTypeOf(v)}`);
}

export function celTypeOf(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "bigint") return "int";
  if (typeof v === "number") return "double";
  if (typeof v === "string") return "string";
  if (typeof v === "boolean") return "bool";
  if (v instanceof Uint8Array) return "bytes";
  if (v instanceof Date) return "timestamp";
  if (Array.isArray(v)) return "list";
  return "map";
}

// The internal encoding, for repartition records and state: JSON that keeps CEL types across a round trip.
// Ints are plain JSON integers (wrapped as text beyond 2^53, so no digit is lost); a double that happens to be integral is wrapped so it stays a double; bytes and
// timestamps are wrapped too. A user map whose only key is one of these markers would be misread; the NUL in
// them makes that unlikely.
const DOUBLE = "\u0000d";
const BYTES = "\u0000b";
const TIME = "\u0000t";
const BIG = "\u0000i";
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** The wrappers' keys as JSON writes them (NUL escaped). */
const DOUBLE_KEY = JSON.stringify(DOUBLE);
const BIG_KEY = JSON.stringify(BIG);

function internalReplacer(this: unknown, key: string, v: unknown): unknown {
  if (key === DOUBLE || key === TIME || key === BIG) return v; // the inside of a wrapper: written as it is
  // JSON.stringify calls toJSON (a Date's) before the replacer: read the raw value from the holder.
  const x = (this as Record<string, unknown> | undefined)?.[key] ?? v;
  if (typeof x === "bigint") return x > SAFE || x < -SAFE ? { [BIG]: x.toString() } : rawJSON(x.toString());
  // a double that is integral, or not finite (Infinity and NaN, which JSON would write as null), is wrapped:
  // a reload gives back the same value
  if (typeof x === "number") return Number.isInteger(x) ? { [DOUBLE]: x } : Number.isFinite(x) ? x : { [DOUBLE]: String(x) };
  if (x instanceof Uint8Array) return { [BYTES]: Buffer.from(x).toString("base64") };
  if (x instanceof Date) return { [TIME]: x.getTime() };
  if (x instanceof Map) return Object.fromEntries(x);
  return v;
}

function fromInternal(v: unknown): unknown {
  if (typeof v === "number") return Number.isInteger(v) ? BigInt(v) : v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = fromInternal(v[i]);
    return v;
  }
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (DOUBLE in o) return Number(o[DOUBLE]);
    if (BIG in o) return BigInt(String(o[BIG]));
    if (BYTES in o) return new Uint8Array(Buffer.from(String(o[BYTES]), "base64"));
    if (TIME in o) return new Date(Number(o[TIME]));
    for (const k in o) o[k] = fromInternal(o[k]);
  }
  return v;
}

export function encodeInternal(v: unknown): Buffer {
  const fast = fastJson(v, true);
  return Buffer.from(fast === SLOW ? replacerJson(v, true) : fast, "utf8");
}

/** The JSON text through JSON.stringify's replacer: every value the fast path leaves (and the reference it is held to). */
export function replacerJson(v: unknown, internal: boolean): string {
  return JSON.stringify(v, internal ? internalReplacer : jsonReplacer) ?? "null";
}

export function decodeInternal(raw: Buffer | undefined | null): unknown {
  if (raw === undefined || raw === null) return null;
  return fromInternal(JSON.parse(raw.toString("utf8")));
}
