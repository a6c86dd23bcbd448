import assert from "node:assert/strict";
import { test } from "node:test";
import { RateLimiter } from "./rate-limit.ts";

test("a full bucket lets a second's worth through at once, then asks to wait", () => {
  const r = new RateLimiter(10, 0);
  const waits = Array.from({ length: 10 }, () => r.take(0));
  assert.deepEqual(waits.slice(0, 9), Array(9).fill(0));
  assert.equal(waits[9], 100, "the tenth empties the bucket: the next token is 100 ms away at 10/s");
});

test("over a long run the rate holds: records taken when allowed average the limit", () => {
  const r = new RateLimiter(500, 0);
  let now = 0;
  let taken = 0;
  while (now < 60_000) {
    const wait = r.take(now);
    taken++;
    now += wait;
  }
  // 60 s at 500/s, plus the first second's burst of 500.
  assert.ok(Math.abs(taken - (60 * 500 + 500)) <= 2, `${taken} records in 60 s`);
});

test("an idle spell refills the bucket only up to one second's worth", () => {
  const r = new RateLimiter(100, 0);
  for (let i = 0; i < 100; i++) r.take(0);
  let free = 0;
  while (r.take(3_600_000) === 0) free++;
  assert.equal(free, 99, "after an hour idle, a second's worth again (the hundredth asks to wait)");
});

test("a rate that is not positive is refused", () => {
  assert.throws(() => new RateLimiter(0, 0), /must be positive/);
});
