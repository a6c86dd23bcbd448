import assert from "node:assert/strict";
import { test } from "node:test";
import { compareBy, compareRanked, insertTop, orderProblem, type Ranked } from "./order.ts";

test("`by` values compare as SQL orders columns: numbers of either kind, strings, bytes, timestamps, lists in turn", () => {
  assert.ok(compareBy(2n, 2.5) < 0);
  assert.ok(compareBy(3n, 2.5) > 0);
  assert.equal(compareBy(2n ** 62n, 2n ** 62n), 0);
  assert.ok(compareBy(2n ** 62n + 1n, 2n ** 62n) > 0, "ints beyond 2^53 by their exact value");
  assert.ok(compareBy("a", "b") < 0);
  assert.ok(compareBy(new Uint8Array([1, 2]), new Uint8Array([1, 3])) < 0);
  assert.ok(compareBy(new Date(5), new Date(4)) > 0);
  assert.ok(compareBy(false, true) < 0);
  assert.ok(compareBy([1n, "b"], [1n, "a"]) > 0, "the second column decides");
  assert.ok(compareBy([1n], [1n, "a"]) < 0, "a prefix first");
  assert.throws(() => compareBy(1n, "1"), /cannot be ordered/);
});

test("what cannot rank records is named", () => {
  assert.match(orderProblem(null) ?? "", /null/);
  assert.match(orderProblem({ a: 1 }) ?? "", /map/);
  assert.match(orderProblem(Number.NaN) ?? "", /NaN/);
  assert.match(orderProblem([1n, [2n]]) ?? "", /list inside a list/);
  assert.equal(orderProblem([1n, "x", new Date(0)]), undefined);
});

test("equal `by`: the values' encoding decides, so neither wins by arriving first", () => {
  assert.ok(compareRanked([1n, "b"], [1n, "a"]) > 0);
  assert.ok(compareRanked([1n, "a"], [1n, "b"]) < 0);
  assert.equal(compareRanked([1n, { x: 1n }], [1n, { x: 1n }]), 0);
});

test("insertTop keeps the n greatest, greatest first, and gives the same list back when x does not make it", () => {
  let top: Ranked[] = [];
  for (const b of [4n, 1n, 9n, 6n, 6n, 2n]) top = insertTop(top, [b, `v${b}`], 3);
  assert.deepEqual(
    top.map((r) => r[0]),
    [9n, 6n, 6n],
  );
  const same = insertTop(top, [0n, "v0"], 3);
  assert.equal(same, top);
});
