import assert from "node:assert/strict";
import { test } from "node:test";
import { types } from "node:util";
import { CEL_READ_BUDGET, runtimeProgram } from "./cel-budget.ts";
import { RecordError } from "./codec.ts";

const items = (n: number) => Array.from({ length: n }, (_, i) => ({ id: BigInt(i) }));

test("defect 8: a nested comprehension over a large list stops at the budget with an eval error", () => {
  const p = runtimeProgram("record", "value.items.all(a, value.items.exists(b, b.id == a.id))");
  assert.equal(p({ value: { items: items(200) } }), true, "a small list: the answer");
  const t0 = performance.now();
  assert.throws(
    () => p({ value: { items: items(20_000) } }),
    (err: Error) => err instanceof RecordError && err.kind === "eval" && /over its evaluation budget/.test(err.message),
  );
  const ms = performance.now() - t0;
  // 20,000^2 / 2 reads unbounded; the budget stops it after CEL_READ_BUDGET
  assert.ok(CEL_READ_BUDGET < 20_000 ** 2 / 2);
  process.stdout.write(`# stopped after ${ms.toFixed(0)} ms\n`);
});

test("each evaluation has a budget of its own, and results carry no meter", () => {
  const p = runtimeProgram("record", "value.items.filter(x, x.id % 2 == 0)");
  for (let i = 0; i < 5; i++) assert.equal((p({ value: { items: items(1_000_000 / 2) } }) as unknown[]).length, 250_000);
  const out = p({ value: { items: items(4) } }) as unknown[];
  assert.deepEqual(out, [{ id: 0n }, { id: 2n }]);
  assert.equal(
    out.some((x) => types.isProxy(x)),
    false,
  );
});

test("an expression without a comprehension runs unmetered", () => {
  const p = runtimeProgram("record", "size(value.items) > 3");
  assert.equal(p({ value: { items: items(5_000_000) } }), true);
});
