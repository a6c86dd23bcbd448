// Data-safety defect 8 (CEL without a run-time bound). All limits were at parse time and evaluation is
// synchronous: one record with a big list under a nested comprehension blocked the event loop for minutes,
// heartbeats stopped, the partition moved, and the next worker blocked on the same record. Now an expression with
// a comprehension reads the record through a budget, and a record over it goes to the DLQ (kind eval).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import { waitFor } from "../env/proc.ts";
import { createTopic, groupLag, produce, readToEnd } from "../support/kafka.ts";
import { passThroughSpec, runtimeSuite, startRuntime } from "../support/runtime.ts";

describe("defect 8: a record that would keep an expression busy for minutes", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-cel-budget");

  test("60,000 items under a nested comprehension: to the DLQ as eval within seconds; the records around it pass", async () => {
    const name = `cel-${suffix}`;
    const [source, sink, dlq] = ["src", "out", "dlq"].map((t) => `cel-${t}-${suffix}`) as [string, string, string];
    for (const t of [source, sink, dlq]) await createTopic(a, t, 1);
    const record = (id: number, n: number) => ({ key: `k${id}`, value: JSON.stringify({ id, items: Array.from({ length: n }, (_, i) => i) }) });
    // 60,000 items: 1.8 billion comparisons unbounded, about half an hour of one core
    await produce(env.bootstrap, source, [record(0, 10), record(1, 60_000), record(2, 10)]);
    const w = await startRuntime({
      dir,
      namespace: "it",
      name,
      spec: passThroughSpec({ bootstrap: env.bootstrap, source, sink, dlq, name: "distinct", filter: "value.items.all(a, value.items.exists(b, b == a))" }),
    });
    workers.push(w);
    await waitFor(async () => (await groupLag(a, `it.${name}`, source)) === 0n, {
      what: "all three records read and committed",
      timeoutMs: 60_000,
      process: w.proc,
    });
    assert.deepEqual(
      (await readToEnd(env.bootstrap, sink)).map((m) => m.key.toString()),
      ["k0", "k2"],
    );
    const dead = await readToEnd(env.bootstrap, dlq);
    assert.equal(dead.length, 1);
    const h = Object.fromEntries([...(dead[0]?.headers ?? [])].map(([k, v]) => [k.toString(), v.toString()]));
    assert.equal(dead[0]?.key.toString(), "k1");
    assert.equal(h[DLQ_HEADERS.kind], "eval");
    assert.equal(h[DLQ_HEADERS.step], "distinct");
    assert.match(h[DLQ_HEADERS.error] ?? "", /over its evaluation budget/);
  });
});
