// The Nexmark examples compile as the webhook would compile them, and those without a window write, record for
// record, what the batch computation gives (the ones with windows run on the bed: test/integration/nexmark.test.ts).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { graphOf } from "../../../runtime/graph.ts";
import { SourceStage } from "../../../runtime/stages.ts";
import { SinkEncoder } from "../../../runtime/stateless.ts";
import { compile, formatCompileError } from "../../../src/topology/compile.ts";
import { nexmarkDataSet } from "./generator.ts";
import { NEXMARK_PIPELINES, type NexmarkQuery, nexmarkSpec, normalizedRow } from "./pipelines.ts";
import { sortedRows } from "./queries.ts";

const data = nexmarkDataSet({ seed: 7, events: 20_000 });

describe("the Nexmark examples", () => {
  for (const q of Object.keys(NEXMARK_PIPELINES) as NexmarkQuery[]) {
    test(`${q} compiles`, () => {
      const r = compile(nexmarkSpec(q), { namespace: "nexmark", name: `nexmark-${q}` });
      assert.ok(r.ok, r.ok ? "" : r.errors.map(formatCompileError).join("; "));
      assert.equal(graphOf(r.topology).eventTime, NEXMARK_PIPELINES[q].windowed);
    });
    if (NEXMARK_PIPELINES[q].windowed) continue;
    test(`${q} writes the batch computation's rows`, () => {
      const r = compile(nexmarkSpec(q), { namespace: "nexmark", name: `nexmark-${q}` });
      assert.ok(r.ok);
      const t = r.topology;
      const stage = new SourceStage(t, graphOf(t), new SinkEncoder(t.sink));
      const rows: Record<string, unknown>[] = [];
      data.bids.forEach((b, i) => {
        const o = stage.process({
          topic: "nexmark-bids",
          partition: 0,
          offset: BigInt(i),
          timestamp: BigInt(b.dateTime),
          key: Buffer.from(String(b.auction)),
          value: Buffer.from(JSON.stringify(b)),
        });
        assert.ok(o.ok, o.ok ? "" : o.error);
        for (const s of o.sink) rows.push(normalizedRow(q, JSON.parse(s.value?.toString() ?? "null") as Record<string, unknown>));
      });
      const expected = NEXMARK_PIPELINES[q].expected(data) as object[];
      assert.ok(expected.length > 0);
      assert.deepEqual(sortedRows(rows), sortedRows(expected));
    });
  }
});
