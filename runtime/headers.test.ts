import assert from "node:assert/strict";
import { test } from "node:test";
import { externalHeaders, isInternalHeader } from "./headers.ts";

const h = (...pairs: [string, string][]) => new Map(pairs.map(([k, v]) => [Buffer.from(k), Buffer.from(v)]));
const names = (m: Map<Buffer, Buffer>) => [...m.keys()].map((k) => k.toString());

test("conveyor.* headers, in any case, are the runtime's; others pass untouched", () => {
  for (const n of ["conveyor.marker", "conveyor.event-time", "Conveyor.Marker", "CONVEYOR.error.kind", "conveyor."])
    assert.ok(isInternalHeader(Buffer.from(n)), n);
  for (const n of ["conveyor", "conveyorx.marker", "x-conveyor.marker", "traceparent", ""]) assert.ok(!isInternalHeader(Buffer.from(n)), n);
  const mixed = h(["traceparent", "00-1"], ["conveyor.marker", "1"], ["Conveyor.event-time", "0"], ["tenant", "a"]);
  assert.deepEqual(names(externalHeaders(mixed)), ["traceparent", "tenant"]);
  const clean = h(["traceparent", "00-1"]);
  assert.equal(externalHeaders(clean), clean, "nothing to drop: the same map");
  assert.deepEqual(names(externalHeaders(undefined)), []);
});
