import assert from "node:assert/strict";
import { test } from "node:test";
import { parseBytes } from "./quantity.ts";

test("byte quantities: binary and decimal suffixes, numbers, and what is refused", () => {
  const cases: [string | number, number | undefined][] = [
    ["64Mi", 64 * 1024 * 1024],
    ["1Gi", 1024 ** 3],
    ["1.5Ki", 1536],
    ["2G", 2e9],
    ["512", 512],
    [4096, 4096],
    ["100m", undefined],
    ["-1Mi", undefined],
    ["1e3", undefined],
    [1.5, undefined],
    ["Mi", undefined],
  ];
  for (const [q, want] of cases) assert.equal(parseBytes(q), want, String(q));
});
