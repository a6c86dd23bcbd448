import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { WorkQueue } from "./work-queue.ts";

describe("work queue", () => {
  test("a key added many times while queued is processed once", async () => {
    const seen: string[] = [];
    let release = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const q = new WorkQueue(
      async (k) => {
        seen.push(k);
        if (k === "blocker") await gate;
        return {};
      },
      () => assert.fail("no error expected"),
      { concurrency: 1 },
    );
    q.add("blocker");
    q.add("a");
    q.add("b");
    q.add("a");
    q.add("a");
    assert.equal(q.depth, 2);
    release();
    await q.idle();
    assert.deepEqual(seen, ["blocker", "a", "b"]);
  });

  test("one key never runs twice at once; an add during a run causes exactly one more run", async () => {
    let running = 0;
    let maxRunning = 0;
    let runs = 0;
    const q = new WorkQueue(
      async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        runs++;
        await delay(20);
        running--;
        return {};
      },
      () => assert.fail("no error expected"),
      { concurrency: 4 },
    );
    q.add("k");
    await delay(5);
    q.add("k");
    q.add("k");
    await delay(60);
    await q.idle();
    assert.equal(maxRunning, 1);
    assert.equal(runs, 2);
  });

  test("failures retry with capped exponential backoff", async () => {
    const errors: number[] = [];
    let calls = 0;
    const q = new WorkQueue(
      async () => {
        calls++;
        if (calls <= 4) throw new Error("boom");
        return {};
      },
      (_k, _e, retryInMs) => errors.push(retryInMs),
      { concurrency: 1, baseBackoffMs: 5, maxBackoffMs: 20 },
    );
    q.add("k");
    const deadline = Date.now() + 5_000;
    while (calls < 5 && Date.now() < deadline) await delay(5);
    q.stop();
    assert.equal(calls, 5);
    assert.deepEqual(errors, [5, 10, 20, 20]);
  });

  test("requeueAfter brings the key back", async () => {
    let calls = 0;
    const q = new WorkQueue(
      async () => {
        calls++;
        return calls === 1 ? { requeueAfterMs: 10 } : {};
      },
      () => assert.fail("no error expected"),
    );
    q.add("k");
    const deadline = Date.now() + 5_000;
    while (calls < 2 && Date.now() < deadline) await delay(5);
    assert.equal(calls, 2);
    q.stop();
  });
});
