// Issue 17, item 4: a task that restores does not hold the worker's other tasks. Before, a worker restored every
// task it was given before it read anything: one large changelog stopped all its partitions for as long as the
// restore took. Now a restoring task's partition is left out of the fetches while the others are read and
// processed, and /readyz waits until every task has restored.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { encodeInternal } from "../../runtime/codec.ts";
import { Producer } from "../../runtime/kafka/client.ts";
import { RESTORE_CHECKPOINT_OFFSETS } from "../../runtime/task.ts";
import { storeKey } from "../../runtime/window.ts";
import { isAlive, signalGroup, waitFor } from "../env/proc.ts";
import { endOffsets } from "../support/kafka.ts";
import { runtimeSuite, startRuntime, windowedPipeline } from "../support/runtime.ts";

/** the changelog the restore reads: KEYS windows, each written UPDATES times (about 100 MB) */
const KEYS = 2_000;
const UPDATES = 150;
const PAD = "p".repeat(300);
const HOUR = Date.parse("2023-03-01T10:00:00Z");
/** live records while the worker starts: this many every SEND_EVERY_MS, for at most SEND_FOR_MS */
const PER_SEND = 40;
const SEND_EVERY_MS = 20;
const SEND_FOR_MS = 90_000;

/** Fills a changelog partition as a long-running task leaves it: KEYS windows, each written UPDATES times. */
async function fillChangelog(bootstrap: string, changelog: string, partition: number): Promise<void> {
  const producer = new Producer({ clientId: "bg-restore", bootstrapBrokers: [bootstrap], acks: -1, idempotent: true });
  try {
    for (let u = 0; u < UPDATES; u++) {
      const messages = Array.from({ length: KEYS }, (_, k) => {
        const user = `old-${k}`;
        return {
          topic: changelog,
          partition,
          key: storeKey(HOUR + 3_600_000, HOUR, Buffer.from(user)),
          value: encodeInternal({ k: user, a: { n: BigInt(u + 1), total: BigInt(u + 1), pad: PAD }, t: Date.now() }),
        };
      });
      await producer.send({ messages });
    }
  } finally {
    await producer.close();
  }
}

interface Sample {
  at: number;
  restoring: number;
  aggregated: number;
  ready: boolean;
}

describe("issue 17: a task restores in the background", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-background-restore");

  test("while one task restores a large changelog, the worker's other task counts its records; ready only after", { timeout: 240_000 }, async (t) => {
    const name = `bg-${suffix}`;
    const { spec, topology, source } = await windowedPipeline(a, {
      bootstrap: env.bootstrap,
      prefix: "bg",
      suffix,
      name,
      window: { tumbling: "1h" },
      partitions: 2,
      rest: { processing: { guarantee: "exactlyOnce", commitInterval: "100ms" } },
    });
    const changelog = topology.steps.flatMap((s) => (s.kind === "window" ? [s.changelogTopic] : []))[0] as string;

    // Task 1's changelog, as a long-running task leaves it; task 0's is empty.
    await fillChangelog(env.bootstrap, changelog, 1);
    assert.equal(Number((await endOffsets(a, changelog, false))[1]), KEYS * UPDATES);

    // Live records into both source partitions from before the worker starts until its restore is over.
    const live = new Producer({ clientId: "bg-live", bootstrapBrokers: [env.bootstrap], acks: -1, idempotent: true });
    let sending = true;
    let sent = 0;
    const now = Date.now();
    const sender = (async () => {
      const until = Date.now() + SEND_FOR_MS;
      while (sending && Date.now() < until) {
        const messages = Array.from({ length: PER_SEND }, (_, i) => {
          const user = `u-${(sent + i) % 500}`;
          return { topic: source, partition: (sent + i) % 2, key: Buffer.from(user), value: Buffer.from(JSON.stringify({ user, ts: now, amount: 1 })) };
        });
        await live.send({ messages });
        sent += PER_SEND;
        await new Promise((resolve) => setTimeout(resolve, SEND_EVERY_MS));
      }
    })();

    const samples: Sample[] = [];
    let restored = 0;
    try {
      await waitFor(async () => sent > 0, { what: "the first live records sent", timeoutMs: 10_000, intervalMs: 20 });
      const w = await startRuntime({ dir, namespace: "it", name, spec, pod: "p-0" });
      workers.push(w);
      // Sampled as fast as the metrics answer, from the worker's start until both tasks have restored.
      await waitFor(
        async () => {
          let text: string;
          let ready: boolean;
          try {
            ready = (await fetch(`http://127.0.0.1:${w.port}/readyz`)).status === 200;
            text = await (await fetch(`http://127.0.0.1:${w.port}/metrics`)).text();
          } catch {
            return false; // not listening yet
          }
          const value = (metric: string) =>
            text
              .split("\n")
              .filter((l) => l.startsWith(`${metric} `) || l.startsWith(`${metric}{`))
              .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
          samples.push({
            at: Date.now(),
            restoring: value("conveyor_runtime_restoring_tasks"),
            aggregated: value("conveyor_runtime_records_aggregated_total"),
            ready,
          });
          return ready;
        },
        { what: "the worker ready: both tasks restored", timeoutMs: 120_000, intervalMs: 10, process: w.proc },
      );
      // and the records sent meanwhile all counted, task 1's too
      sending = false;
      await sender;
      await waitFor(async () => (await w.metric("conveyor_runtime_records_aggregated_total")) >= sent, {
        what: `all ${sent} live records counted`,
        timeoutMs: 60_000,
        process: w.proc,
      });
      assert.equal(await w.metric("conveyor_runtime_records_aggregated_total"), sent, "each live record counted once");
      // the broker may have compacted a rolled segment of it: at least each window's last write
      restored = await w.metric("conveyor_runtime_restored_records_total");
      assert.ok(restored >= KEYS && restored <= KEYS * UPDATES, `task 1 restored ${restored} changelog records`);
    } finally {
      sending = false;
      await sender.catch(() => undefined);
      await live.close();
    }

    const during = samples.filter((s) => s.restoring > 0);
    assert.ok(during.length >= 2, `the restore was seen under way (${during.length} samples)`);
    const counted = (during.at(-1) as Sample).aggregated - (during[0] as Sample).aggregated;
    const restoreMs = (during.at(-1) as Sample).at - (during[0] as Sample).at;
    t.diagnostic(
      `task 1 restored ${restored} changelog records (${KEYS * UPDATES} offsets) in about ${restoreMs} ms; meanwhile task 0 counted ${counted} records; ${sent} live records in all`,
    );
    assert.ok(counted > 0, "task 0 counted records while task 1 restored");
    assert.ok(
      during.every((s) => !s.ready),
      "not ready while a task restores",
    );
    assert.equal(samples.at(-1)?.restoring, 0, "ready once no task restores");
  });

  test("a SIGTERM during a restore stops it where it got to: a clean exit, and the next start goes on from there", { timeout: 240_000 }, async () => {
    const name = `bg-stop-${suffix}`;
    const { spec, topology } = await windowedPipeline(a, {
      bootstrap: env.bootstrap,
      prefix: "bg-stop",
      suffix,
      name,
      window: { tumbling: "1h" },
      partitions: 1,
    });
    const changelog = topology.steps.flatMap((s) => (s.kind === "window" ? [s.changelogTopic] : []))[0] as string;
    await fillChangelog(env.bootstrap, changelog, 0);
    const total = KEYS * UPDATES;
    const start = async () => {
      const w = await startRuntime({ dir, namespace: "it", name, spec, pod: "s-0" });
      workers.push(w);
      return w;
    };
    const first = await start();
    // past two of the restore's checkpoints, and well before its end
    const stopAt = total - 2 * Number(RESTORE_CHECKPOINT_OFFSETS) - 1;
    await waitFor(
      async () => {
        const [remaining] = await first.samples("conveyor_runtime_restore_remaining_records").catch(() => []);
        return remaining !== undefined && remaining > 0 && remaining <= stopAt;
      },
      { what: "the restore under way", timeoutMs: 60_000, intervalMs: 20, process: first.proc },
    );
    signalGroup(first.proc.pid, "SIGTERM");
    await waitFor(() => !isAlive(first.proc.pid), { what: "the worker gone after its SIGTERM", timeoutMs: 30_000, intervalMs: 50 });
    const log = (pod: string) => readFileSync(join(dir, `${pod}.log`), "utf8").split("\n");
    assert.ok(
      log("s-0").some((l) => l.includes('"msg":"stopped"')),
      "a clean stop, not a crash",
    );
    assert.ok(!log("s-0").some((l) => l.includes('"task restored"')), "it stopped before its restore was done");

    const second = await start();
    await waitFor(async () => (await second.metric("conveyor_runtime_restored_records_total")) > 0, {
      what: "the second restore done",
      timeoutMs: 120_000,
      process: second.proc,
    });
    const line = log("s-0")
      .filter((l) => l.includes('"task restored"'))
      .at(-1);
    const report = JSON.parse(line ?? "{}") as { from?: string; fromCheckpoint?: boolean; records?: number };
    process.stdout.write(`# after a SIGTERM half way, the next restore: ${line}\n`);
    assert.equal(report.fromCheckpoint, true, "it began where the stopped restore had got to");
    assert.ok(Number(report.from) >= 2 * Number(RESTORE_CHECKPOINT_OFFSETS), `from offset ${report.from}, not from the start`);
    assert.ok((report.records ?? 0) > 0, "and read what the stopped one had not");
  });
});
