// Data-safety defect 1 (a restore after retention reads nothing). A restore without a checkpoint started at
// offset 0 with the library's default fallback (latest): once retention, or a DeleteRecords, had moved the
// changelog's log start past 0, the reader jumped to the end, the restore "succeeded" with 0 records, and every
// window restarted empty. A stale checkpoint (a kept volume back late, the changelog moved on past it) took the
// same path and kept the old state. Now a restore reads from the log start; a checkpoint below it is discarded,
// as Kafka Streams does; what retention removed is counted.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { isAlive, signalGroup, stopProcess, waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, endOffsets, groupLag, produce, readToEnd } from "../support/kafka.ts";
import { compiled, type RuntimeProcess, runtimeSuite, startRuntime, userWindowSpec } from "../support/runtime.ts";

const USERS = 5;
const HOUR = Date.parse("2023-03-01T10:00:00Z");
const FLUSH_USER = "zz-flush";

describe("defect 1: a restore after retention reads the changelog from its log start", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-restore-retention");

  /** A pipeline of its own: 1-hour windows per user, exactly once, every topic one partition. */
  async function pipeline(name: string) {
    const [source, sink, late] = ["src", "out", "late"].map((t) => `rr-${t}-${name}`) as [string, string, string];
    const spec = userWindowSpec({
      bootstrap: env.bootstrap,
      source,
      sink,
      late,
      window: { tumbling: "1h" },
      emit: "onWindowClose",
      rest: { processing: { guarantee: "exactlyOnce" } },
    });
    const topology = compiled(spec, { namespace: "it", name });
    for (const t of [source, sink, late]) await createTopic(a, t, 1);
    await createInternalTopics(a, topology, 1);
    const changelog = topology.steps.flatMap((s) => (s.kind === "window" ? [s.changelogTopic] : []))[0] as string;
    const repartition = topology.internalTopics.find((t) => t.endsWith("-repartition")) as string;
    let sent = 0;
    const send = async (perUser: number, user = (i: number) => `u-${i % USERS}`, at = HOUR) => {
      const records = Array.from({ length: perUser * USERS }, (_, i) => {
        const u = user(i);
        return { key: u, value: JSON.stringify({ user: u, ts: at + sent++ * 10, amount: 1 }) };
      });
      await produce(env.bootstrap, source, records);
    };
    const start = async (pod: string) => {
      const w = await startRuntime({ dir, namespace: "it", name, spec, pod, stateDir: join(dir, `${name}-${pod}-state`) });
      workers.push(w);
      return w;
    };
    const caughtUp = (w: RuntimeProcess) =>
      // both stages: the keyed one writes the changelog, after the source's records have gone through the
      // repartition topic
      waitFor(async () => (await groupLag(a, topology.applicationId, source)) === 0n && (await groupLag(a, topology.applicationId, repartition)) === 0n, {
        what: `${name}: the source and the repartition topic read and committed`,
        timeoutMs: 60_000,
        process: w.proc,
      });
    const kill = async (w: RuntimeProcess) => {
      signalGroup(w.proc.pid, "SIGKILL");
      await waitFor(() => !isAlive(w.proc.pid), { what: "the worker gone", timeoutMs: 10_000 });
    };
    /** Closes every window of the data (an hour on), and gives each user's count. */
    const counts = async (w: RuntimeProcess): Promise<Record<string, number>> => {
      await produce(env.bootstrap, source, [{ key: FLUSH_USER, value: JSON.stringify({ user: FLUSH_USER, ts: HOUR + 2 * 3_600_000, amount: 1 }) }]);
      await waitFor(async () => (await w.metric("conveyor_runtime_records_out_total")) >= USERS, {
        what: `${name}: the windows written`,
        timeoutMs: 60_000,
        process: w.proc,
      });
      const out: Record<string, number> = {};
      for (const m of await readToEnd(env.bootstrap, sink)) {
        const v = JSON.parse(m.value.toString()) as { key: string; n: number };
        out[v.key] = v.n;
      }
      return out;
    };
    const trim = async (to: bigint) => {
      await a.deleteRecords({ topics: [{ name: changelog, partitions: [{ partition: 0, offset: to }] }] });
    };
    const changelogEnd = async () => (await endOffsets(a, changelog, false))[0] as bigint;
    return { send, start, caughtUp, kill, counts, trim, changelogEnd };
  }

  const everyUser = (n: number) => Object.fromEntries(Array.from({ length: USERS }, (_, i) => [`u-${i}`, n]));

  test("a crash after retention moved the log start: the windows come back from what the changelog still holds", async () => {
    const p = await pipeline(`crash-${suffix}`);
    await p.send(40);
    const w1 = await p.start("p-0");
    await p.caughtUp(w1);
    const trimmedTo = await p.changelogEnd();
    // every window is written again after the trim point: what is left holds each one's whole count
    await p.send(1);
    await p.caughtUp(w1);
    await p.trim(trimmedTo);
    await p.kill(w1); // no clean close, no checkpoint: a restore from the changelog

    const w2 = await p.start("p-0");
    await waitFor(async () => (await w2.metric("conveyor_runtime_restored_records_total")) > 0, {
      what: "the restore to read what the changelog still holds",
      timeoutMs: 60_000,
      process: w2.proc,
    });
    assert.equal(await w2.metric("conveyor_runtime_restore_retention_skipped_offsets_total"), Number(trimmedTo), "the offsets retention removed are counted");
    assert.deepEqual(await p.counts(w2), everyUser(41), "every window as if nothing had crashed");
  });

  test("a stale checkpoint (a kept volume back after the changelog moved past it): discarded, and the state restored from the log start", async () => {
    const p = await pipeline(`stale-${suffix}`);
    await p.send(40);
    const w1 = await p.start("p-0");
    await p.caughtUp(w1);
    await stopProcess(w1.proc.pid); // a clean close: the volume keeps a checkpoint
    const checkpoints = readdirSync(dir, { recursive: true }).filter(
      (f) => String(f).includes(`stale-${suffix}-p-0-state`) && String(f).endsWith(".checkpoint"),
    );
    assert.equal(checkpoints.length, 1, "the clean close left a checkpoint");

    // Another pod runs the pipeline meanwhile, and the changelog moves on past the checkpoint.
    const other = await p.start("p-1");
    await p.send(1);
    await p.caughtUp(other);
    const trimmedTo = await p.changelogEnd();
    await p.send(1);
    await p.caughtUp(other);
    await p.trim(trimmedTo);
    await p.kill(other);

    // The first pod's volume comes back with its old checkpoint.
    const w2 = await p.start("p-0");
    await waitFor(async () => (await w2.metric("conveyor_runtime_restored_records_total")) > 0, {
      what: "the restore to read what the changelog still holds",
      timeoutMs: 60_000,
      process: w2.proc,
    });
    assert.equal(
      await w2.metric("conveyor_runtime_restore_retention_skipped_offsets_total"),
      Number(trimmedTo),
      "restored from the log start, not the checkpoint",
    );
    assert.deepEqual(await p.counts(w2), everyUser(42), "the windows hold what the other pod added, not the old volume's counts");
  });
});
