// Headers named conveyor.* belong to the runtime: it writes them (the event time on a repartition record, a
// watermark marker, a dead letter's or a late record's reasons) and reads some of them back. A producer we do
// not control may send records carrying the same names, so every conveyor.* header a record brings in is dropped
// where the record enters the pipeline, and the runtime's own are dropped again before a record leaves for the
// sink: what the runtime reads is only ever what it wrote itself.

export const INTERNAL_HEADER_PREFIX = "conveyor.";
const PREFIX = Buffer.from(INTERNAL_HEADER_PREFIX, "latin1");

/** conveyor.*, in any case: a name a reader might take for ours. */
export function isInternalHeader(name: Buffer): boolean {
  if (name.length < PREFIX.length) return false;
  for (let i = 0; i < PREFIX.length; i++) {
    const c = name[i] as number;
    // ASCII letters compare without case; the prefix has no other letters
    if ((c >= 0x41 && c <= 0x5a ? c + 0x20 : c) !== PREFIX[i]) return false;
  }
  return true;
}

/** The headers without any conveyor.* one; the same map when there was none to drop. */
export function externalHeaders(h: Map<Buffer, Buffer> | undefined): Map<Buffer, Buffer> {
  if (!h) return new Map();
  if (h.size === 0) return h;
  let internal = false;
  for (const k of h.keys()) if (isInternalHeader(k)) internal = true;
  if (!internal) return h;
  const out = new Map<Buffer, Buffer>();
  for (const [k, v] of h) if (!isInternalHeader(k)) out.set(k, v);
  return out;
}
