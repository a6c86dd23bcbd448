// Data-safety defect 4 (a removed source topic freezes every watermark). The state-schema hash leaves the
// source topics out, so removing one rolls the workers without a state reset; the stored watermark table used to
// bring the removed topic's partitions back into the expected set, and their last markers (not idle) held the
// task's watermark for good: no window closed again. Now the table forgets topics that are no longer sources.
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { stopProcess, waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, groupLag, produce, readToEnd } from "../support/kafka.ts";
import { compiled, runtimeSuite, startRuntime, userWindowSpec } from "../support/runtime.ts";

const HOUR = Date.parse("2023-03-01T10:00:00Z");

describe("defect 4: a source topic removed by an edit that keeps the state", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-source-removed");

  test("the windows go on closing after the edit, and hold what both topics brought before it", async () => {
    const name = `removed-${suffix}`;
    const [kept, removed, sink, late] = ["kept", "removed", "out", "late"].map((t) => `sr-${t}-${suffix}`) as [string, string, string, string];
    const specOf = (topics: string[]) => {
      const s = userWindowSpec({ bootstrap: env.bootstrap, source: kept, sink, late, window: { tumbling: "1h" }, emit: "onWindowClose" });
      return { ...s, source: { ...s.source, topics } };
    };
    const before = specOf([kept, removed]);
    const afterEdit = specOf([kept]);
    const t1 = compiled(before, { namespace: "it", name });
    const t2 = compiled(afterEdit, { namespace: "it", name });
    const hashes = (t: typeof t1) => t.steps.flatMap((s) => (s.kind === "window" ? [s.stateSchemaHash] : []));
    assert.deepEqual(hashes(t2), hashes(t1), "the premise: removing a source keeps the state (same state-schema hash)");
    for (const t of [kept, removed, sink, late]) await createTopic(a, t, 1);
    await createInternalTopics(a, t1, 1);

    const records = (topic: string, n: number, at: number) =>
      produce(
        env.bootstrap,
        topic,
        Array.from({ length: n }, (_, i) => ({ key: `u-${i % 3}`, value: JSON.stringify({ user: `u-${i % 3}`, ts: at + i, amount: 1 }) })),
      );
    await records(kept, 30, HOUR);
    await records(removed, 30, HOUR + 1_000);
    const stateDir = join(dir, "p-0-state");
    const w1 = await startRuntime({ dir, namespace: "it", name, spec: before, pod: "p-0", stateDir });
    workers.push(w1);
    for (const topic of [kept, removed])
      await waitFor(async () => (await groupLag(a, t1.applicationId, topic)) === 0n, {
        what: `${topic} read and committed`,
        timeoutMs: 60_000,
        process: w1.proc,
      });
    // the task has heard from both sources, neither idle (idleTimeout is 10 minutes): its table holds both
    await waitFor(async () => (await w1.metric("conveyor_runtime_task_watermark_ms")) > HOUR - 60_000, {
      what: "the task to hear from both sources",
      timeoutMs: 30_000,
      process: w1.proc,
    });
    await stopProcess(w1.proc.pid);

    // The edit: the removed topic is no longer a source. Data an hour on closes the window of HOUR.
    const w2 = await startRuntime({ dir, namespace: "it", name, spec: afterEdit, pod: "p-0", stateDir });
    workers.push(w2);
    await records(kept, 3, HOUR + 2 * 3_600_000);
    await waitFor(async () => (await w2.metric("conveyor_runtime_records_out_total")) >= 3, {
      what: "the windows of the first hour to close after the edit",
      timeoutMs: 60_000,
      process: w2.proc,
    });
    const counts: Record<string, number> = {};
    for (const m of await readToEnd(env.bootstrap, sink)) {
      const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; n: number };
      if (v.windowStart === HOUR) counts[v.key] = v.n;
    }
    assert.deepEqual(counts, { "u-0": 20, "u-1": 20, "u-2": 20 }, "each window holds both topics' records");
  });
});
