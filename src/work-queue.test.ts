import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { cappedBackoff, WorkQueue } from "./work-queue.ts";

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

  test("a failure that says when to come back (a 429's Retry-After) waits at least that long", async () => {
    const errors: number[] = [];
    let calls = 0;
    const setTimer = (fn: () => void, _ms: number) => setTimeout(fn, 0);
    const shed = Object.assign(new Error("too many requests"), { retryAfter: 3_000 });
    const q = new WorkQueue(
      async () => {
        calls++;
        if (calls === 1) throw shed;
        if (calls === 2) throw new Error("boom");
        return {};
      },
      (_k, _e, retryInMs) => errors.push(retryInMs),
      { concurrency: 1, baseBackoffMs: 5, maxBackoffMs: 20, setTimer, retryAfterMs: (err) => (err as { retryAfter?: number }).retryAfter },
    );
    q.add("k");
    const deadline = Date.now() + 5_000;
    while (calls < 3 && Date.now() < deadline) await delay(2);
    q.stop();
    // the first wait is the apiserver's, not the 5 ms backoff; the backoff goes on counting after it
    assert.deepEqual(errors, [3_000, 10]);
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

  test("the backoff doubles from its base and stops at its cap", () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 100, 5_000].map((n) => cappedBackoff(n, 1_000, 30_000)),
      [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000],
    );
  });

  test("a key that waits for the same thing is polled with capped backoff; a new thing starts over, and done ends it", async () => {
    const asked: number[] = [];
    // Each requeue's delay is recorded, and the key comes back at once: the test takes no time.
    const setTimer = (fn: () => void, ms: number) => {
      asked.push(ms);
      return setTimeout(fn, 0);
    };
    const script = ["3 workers", "3 workers", "3 workers", "3 workers", "3 workers", "2 workers", "2 workers", undefined];
    let calls = 0;
    const q = new WorkQueue(
      async () => {
        const waitingFor = script[calls++];
        return waitingFor === undefined ? {} : { waitingFor };
      },
      () => assert.fail("no error expected"),
      { baseWaitMs: 1_000, maxWaitMs: 8_000, setTimer },
    );
    q.add("k");
    const deadline = Date.now() + 5_000;
    while (calls < script.length && Date.now() < deadline) await delay(2);
    await q.idle();
    await delay(5);
    q.stop();
    assert.equal(calls, script.length, "done asks for nothing more");
    assert.deepEqual(asked, [1_000, 2_000, 4_000, 8_000, 8_000, 1_000, 2_000]);
  });

  test("a failure while waiting is no progress: the wait goes on where it was", async () => {
    const asked: number[] = [];
    const setTimer = (fn: () => void, ms: number) => {
      asked.push(ms);
      return setTimeout(fn, 0);
    };
    const script: (string | Error)[] = ["pod", "pod", new Error("apiserver hiccup"), "pod"];
    let calls = 0;
    const q = new WorkQueue(
      async () => {
        const step = script[calls++];
        if (step instanceof Error) throw step;
        return { waitingFor: step };
      },
      () => {},
      { baseWaitMs: 100, maxWaitMs: 10_000, baseBackoffMs: 7, maxBackoffMs: 7, setTimer },
    );
    q.add("k");
    const deadline = Date.now() + 5_000;
    while (calls < script.length && Date.now() < deadline) await delay(2);
    await q.idle();
    q.stop();
    assert.deepEqual(asked, [100, 200, 7, 400]);
  });
});
