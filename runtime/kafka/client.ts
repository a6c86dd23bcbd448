// The Kafka client's Producer, with the one correction every producer of the project needs: import Producer from
// here, never from @platformatic/kafka (client.test.ts holds every file to that).
//
// A record batch stores each record's timestamp as a delta from the batch's first, a zigzag varlong. Under
// @platformatic/kafka 2.12.1, @platformatic/dynamic-buffer 0.3.1 writes it wrongly once the delta passes 2^31 ms
// (24.8 days) either way: its zigzag takes the sign from bit 31 instead of bit 63, and its varint loop looks at
// bits 7 to 31 only. Such a record reaches the broker milliseconds off (about |delta| / 2^32 ms), silently. It
// happens whenever a batch mixes old and new timestamps: a table's tombstone at its own time among records of
// now (the join test's u-0, deleted 9 ms late, joined one payment with the old tier), a backlog replayed beside
// watermark markers, a sink record that keeps its source record's timestamp. The correction replaces the
// buffer's writeVarInt64, the only writer of the record format's varlongs, process-wide, and only while the
// library still gets it wrong (an upgrade that fixes it turns this off; kafka-quirks.test.ts then fails, naming
// this file as the workaround that can go).
import { Writer } from "@platformatic/kafka";

export { Producer } from "@platformatic/kafka";

/** The record format's varlong: zigzag over 64 bits, then 7 bits a byte, the lowest first (Kafka's ByteUtils). */
export function varLong(value: bigint): Buffer {
  let u = BigInt.asUintN(64, (value << 1n) ^ (value >> 63n));
  const bytes: number[] = [];
  while (u >= 0x80n) {
    bytes.push(Number(u & 0x7fn) | 0x80);
    u >>= 7n;
  }
  bytes.push(Number(u));
  return Buffer.from(bytes);
}

interface VarLongBuffer {
  writeVarInt64(value: bigint, append?: boolean): unknown;
  append(b: Buffer): unknown;
  prepend(b: Buffer): unknown;
  readonly buffer: Buffer;
}

const prototype = Object.getPrototypeOf(Writer.create().dynamicBuffer) as VarLongBuffer;
const libraryWrite = prototype.writeVarInt64;

/** How the library itself writes a varlong, the correction aside. */
export function libraryVarLong(value: bigint): Buffer {
  const b = Writer.create().dynamicBuffer as unknown as VarLongBuffer;
  libraryWrite.call(b, value);
  return b.buffer;
}

/** Values either side of where the library goes wrong: when it writes all of them right, it needs no correction. */
const PROBES = [0n, -1n, 2n ** 31n, -(2n ** 31n) - 1n, 2n ** 32n + 5n, -108_339_495_064n, 2n ** 63n - 1n, -(2n ** 63n)];

/** Whether this process's producers write varlongs through the correction. */
export const varLongCorrected: boolean = PROBES.some((v) => !libraryVarLong(v).equals(varLong(v)));

if (varLongCorrected) {
  prototype.writeVarInt64 = function (this: VarLongBuffer, value: bigint, append = true) {
    const b = varLong(value);
    if (append) this.append(b);
    else this.prepend(b);
  };
}
