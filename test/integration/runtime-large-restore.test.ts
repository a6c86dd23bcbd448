// Data-safety defect 7 (a large restore fails for ever). A restore had a fixed 300 s deadline, and the checkpoint
// was deleted when the task opened, so a restore cut short (the deadline, a crash, an eviction) began again from
// the changelog's start, and a changelog too large for the deadline failed the same way at every try. Now a
// restore fails only when it stalls, its checkpoint moves on as it reads, a restore cut short goes on from
// there, and conveyor_runtime_restore_remaining_records says how far it has to go.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { encodeInternal } from "../../runtime/codec.ts";
import { Producer } from "../../runtime/kafka/client.ts";
import { RESTORE_CHECKPOINT_OFFSETS } from "../../runtime/task.ts";
import { storeKey } from "../../runtime/window.ts";
import { isAlive, signalGroup, waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, endOffsets, produce, readToEnd } from "../support/kafka.ts";
import { compiled, runtimeSuite, startRuntime, userWindowSpec } from "../support/runtime.ts";

const KEYS = 1_000;
const UPDATES = 120;
const HOUR = Date.parse("2023-03-01T10:00:00Z");
const PAD = "p".repeat(700);

describe("defect 7: a large restore cut short goes on from where it got to", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-large-restore");

  test(`${KEYS * UPDATES} changelog records: killed half way, the next restore reads only the rest, and every window is whole`, {
    timeout: 240_000,
  }, async () => {
    const name = `large-${suffix}`;
    const [source, sink, late] = ["src", "out", "late"].map((t) => `lr-${t}-${suffix}`) as [string, string, string];
    const spec = userWindowSpec({ bootstrap: env.bootstrap, source, sink, late, window: { tumbling: "1h" }, emit: "onWindowClose" });
    const topology = compiled(spec, { namespace: "it", name });
    for (const t of [source, sink, late]) await createTopic(a, t, 1);
    await createInternalTopics(a, topology, 1);
    const changelog = topology.steps.flatMap((s) => (s.kind === "window" ? [s.changelogTopic] : []))[0] as string;

    // A changelog as a long-running task leaves it: every key's window written again and again, ~100 MB in all.
    const producer = new Producer({ clientId: "large-restore", bootstrapBrokers: [env.bootstrap], acks: -1, idempotent: true });
    try {
      for (let u = 0; u < UPDATES; u++) {
        const messages = Array.from({ length: KEYS }, (_, k) => {
          const user = `u-${k}`;
          return {
            topic: changelog,
            partition: 0,
            key: storeKey(HOUR + 3_600_000, HOUR, Buffer.from(user)),
            value: encodeInternal({ k: user, a: { n: BigInt(u + 1), total: BigInt(u + 1), pad: PAD }, t: Date.now() }),
          };
        });
        await producer.send({ messages });
      }
    } finally {
      await producer.close();
    }
    const total = Number((await endOffsets(a, changelog, false))[0]);
    assert.equal(total, KEYS * UPDATES);

    const stateDir = join(dir, "p-0-state");
    const start = async () => {
      const w = await startRuntime({ dir, namespace: "it", name, spec, pod: "p-0", stateDir });
      workers.push(w);
      return w;
    };
    const first = await start();
    // Cut short once the restore has passed two of its checkpoints (and well before its end).
    const killAt = total - 2 * Number(RESTORE_CHECKPOINT_OFFSETS) - 1;
    const seen: number[] = [];
    await waitFor(
      async () => {
        const [remaining] = await first.samples("conveyor_runtime_restore_remaining_records");
        if (remaining !== undefined) seen.push(remaining);
        return remaining !== undefined && remaining > 0 && remaining <= killAt;
      },
      { what: "the restore to be under way", timeoutMs: 60_000, intervalMs: 20, process: first.proc },
    );
    signalGroup(first.proc.pid, "SIGKILL");
    await waitFor(() => !isAlive(first.proc.pid), { what: "the first worker gone", timeoutMs: 10_000 });
    const cutAt = seen.at(-1) as number;
    process.stdout.write(`# restore killed with ${cutAt} of ${total} records to go (remaining seen: ${seen.slice(0, 5).join(", ")}, …)\n`);
    assert.ok(cutAt > 0 && cutAt < total, "the metric showed the restore going");

    const second = await start();
    await waitFor(async () => (await second.metric("conveyor_runtime_restored_records_total")) > 0, {
      what: "the second restore to finish",
      timeoutMs: 120_000,
      process: second.proc,
    });
    const restored = await second.metric("conveyor_runtime_restored_records_total");
    const line = readFileSync(join(dir, "p-0.log"), "utf8")
      .split("\n")
      .filter((l) => l.includes('"task restored"'))
      .at(-1);
    process.stdout.write(`# second restore read ${restored} of ${total}: ${line}\n`);
    // the changelog is compacted as it goes, so what a restore reads is fewer records than offsets: where it began
    // is what tells a restore that went on from one that began again
    const report = JSON.parse(line ?? "{}") as { from?: string; fromCheckpoint?: boolean };
    assert.equal(report.fromCheckpoint, true, "the second restore began at the checkpoint the first one left");
    assert.ok(Number(report.from) >= 2 * Number(RESTORE_CHECKPOINT_OFFSETS), `it went on from offset ${report.from}, not from the start`);
    assert.equal(await second.metric("conveyor_runtime_restore_remaining_records"), 0);

    // Every window whole: the last write of each key.
    await produce(env.bootstrap, source, [{ key: "zz", value: JSON.stringify({ user: "zz", ts: HOUR + 2 * 3_600_000, amount: 1 }) }]);
    await waitFor(async () => (await second.metric("conveyor_runtime_records_out_total")) >= KEYS, {
      what: "the windows written",
      timeoutMs: 60_000,
      process: second.proc,
    });
    const counts = new Map<number, number>();
    for (const m of await readToEnd(env.bootstrap, sink)) {
      const v = JSON.parse(m.value.toString()) as { n: number };
      counts.set(v.n, (counts.get(v.n) ?? 0) + 1);
    }
    assert.deepEqual([...counts], [[UPDATES, KEYS]], "each of the windows holds its last count");
  });
});
