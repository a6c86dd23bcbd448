// Window state on the real broker: a worker restarted with its state directory restores from its local
// checkpoint, reading far fewer changelog records than one whose directory was wiped, and both go on with the
// right counts; with a TTL, expired keys stop contributing and their tombstones reach the changelog; closed
// windows leave the store with their time segment, get no tombstone, and a restore does not store them again.
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import type { StepSpec, StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createInternalTopics, createTopic, endOffsets, type KeyedRecord, produce, readToEnd } from "../support/kafka.ts";
import { compiled, type RuntimeProcess, startRuntime } from "../support/runtime.ts";

const PARTITIONS = 3;
type WindowSpec = NonNullable<StepSpec["window"]>;
// Event times inside one hour-long window that never closes during the test.
const T0 = Math.floor((Date.now() - 3 * 3_600_000) / 3_600_000) * 3_600_000;

describe("window state on the real broker: restore and TTL", () => {
  const env = bedEnv();
  const suffix = uniqueSuffix();
  const dir = join(env.state.dir, `runtime-state-${suffix}`);
  let a: Admin;
  const workers: RuntimeProcess[] = [];

  before(() => {
    a = admin(env.bootstrap);
  });
  after(async () => {
    for (const w of workers) if (isAlive(w.proc.pid)) await stopProcess(w.proc.pid);
    await a?.close();
  });

  async function pipeline(name: string, opts: { ttl?: string; window?: WindowSpec; emit?: "onUpdate" | "onWindowClose" } = {}) {
    const { ttl } = opts;
    const source = `state-src-${name}-${suffix}`;
    const sink = `state-out-${name}-${suffix}`;
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "1s", idleTimeout: "10m" } },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "per-hour", window: opts.window ?? { tumbling: "1h" }, aggregate: { n: { count: {} } }, emit: opts.emit ?? "onUpdate" },
      ],
      sink: { topic: sink },
      processing: { commitInterval: "100ms" },
      ...(ttl ? { state: { ttl } } : {}),
    };
    const topology = compiled(spec, { namespace: "it", name: `${name}-${suffix}` });
    for (const t of [source, sink]) await createTopic(a, t, PARTITIONS);
    await createInternalTopics(a, topology, PARTITIONS);
    const changelog = topology.internalTopics.find((t) => t.endsWith("-changelog")) as string;
    return { source, sink, spec, changelog, name: `${name}-${suffix}` };
  }

  const events = (users: string[], n: number, from: number): KeyedRecord[] =>
    Array.from({ length: n }, (_, i) => {
      const user = users[(from + i) % users.length] as string;
      return { key: user, value: JSON.stringify({ user, ts: T0 + from + i }) };
    });

  /** The last count the sink holds for each user: its window's total so far. */
  async function lastCounts(sink: string): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const m of await readToEnd(env.bootstrap, sink)) {
      const v = JSON.parse(m.value.toString()) as { key: string; n: number };
      out.set(v.key, v.n);
    }
    return out;
  }

  function expectedCounts(records: KeyedRecord[]): Map<string, number> {
    const out = new Map<string, number>();
    for (const r of records) out.set(r.key, (out.get(r.key) ?? 0) + 1);
    return out;
  }

  test("a kept state directory restores from its checkpoint; a wiped one from the whole changelog; counts go on", async () => {
    const p = await pipeline("restore");
    const users = Array.from({ length: 150 }, (_, i) => `user-${i}`);
    const stateDir = join(dir, "restore-state");
    const run = async (pod: string, total: number) => {
      const w = await startRuntime({ dir, namespace: "it", name: p.name, spec: p.spec, pod, stateDir });
      workers.push(w);
      await waitFor(async () => (await w.metric("conveyor_runtime_records_out_total")) >= total, {
        what: `${pod} to count ${total} records`,
        timeoutMs: 60_000,
        process: w.proc,
      });
      return w;
    };
    const sent: KeyedRecord[] = [];
    const send = async (rs: KeyedRecord[]) => {
      await produce(env.bootstrap, p.source, rs);
      sent.push(...rs);
    };

    await send(events(users, 3_000, 0));
    const first = await run("restore-0", 3_000);
    assert.equal(await first.metric("conveyor_runtime_restored_records_total"), 0, "a new task has nothing to restore");
    await stopProcess(first.proc.pid);
    assert.match(readFileSync(first.proc.log, "utf8"), /"msg":"stopped"/, "SIGTERM closed the worker cleanly");
    const changelogAfterFirst = (await endOffsets(a, p.changelog)).reduce((x, y) => x + y, 0n);
    assert.ok(changelogAfterFirst >= BigInt(users.length), `the changelog holds every window (${changelogAfterFirst} records)`);

    // Kept directory: the checkpoint says where the store is, and nothing was written since.
    await send(events(users, 300, 3_000));
    const kept = await run("restore-1", 300);
    const fromCheckpoint = await kept.metric("conveyor_runtime_restored_records_total");
    await stopProcess(kept.proc.pid);

    // Wiped directory: every changelog record is read back.
    rmSync(stateDir, { recursive: true, force: true });
    const changelogEnd = (await endOffsets(a, p.changelog)).reduce((x, y) => x + y, 0n);
    await send(events(users, 300, 3_300));
    const wiped = await run("restore-2", 300);
    const fromChangelog = await wiped.metric("conveyor_runtime_restored_records_total");
    process.stdout.write(`# restore: ${fromCheckpoint} changelog records from the checkpoint, ${fromChangelog} after a wipe (changelog end ${changelogEnd})\n`);
    assert.equal(fromCheckpoint, 0, "a clean close leaves nothing to replay");
    assert.equal(BigInt(fromChangelog), changelogEnd, "a wiped store reads the whole changelog");
    assert.deepEqual(await lastCounts(p.sink), expectedCounts(sent), "each user's count runs on across both restarts");
    await stopProcess(wiped.proc.pid);
  });

  test("with ttl 2s, an expired key stops contributing and its tombstone is in the changelog", async () => {
    const p = await pipeline("ttl", { ttl: "2s" });
    const w = await startRuntime({ dir, namespace: "it", name: p.name, spec: p.spec, pod: "ttl-0" });
    workers.push(w);
    await produce(env.bootstrap, p.source, events(["alice", "bob"], 4, 0));
    await waitFor(async () => (await w.metric("conveyor_runtime_records_out_total")) >= 4, { what: "4 updates", timeoutMs: 30_000, process: w.proc });
    assert.deepEqual(
      await lastCounts(p.sink),
      new Map([
        ["alice", 2],
        ["bob", 2],
      ]),
    );
    const tombstones = await waitFor(
      async () => {
        const records = await readToEnd(env.bootstrap, p.changelog, { readCommitted: false });
        const dead = records.filter((m) => (m.value === null || m.value === undefined || m.value.length === 0) && m.key.toString("latin1").includes("alice"));
        return dead.length > 0 && records.some((m) => m.value?.length && m.key.toString("latin1").includes("bob")) ? dead : false;
      },
      { what: "the sweeper's tombstone for alice's expired window", timeoutMs: 20_000, process: w.proc },
    );
    assert.ok(tombstones.length >= 1);
    // alice again, in the same window: her expired count does not come back.
    await produce(env.bootstrap, p.source, events(["alice"], 1, 10));
    await waitFor(async () => (await w.metric("conveyor_runtime_records_out_total")) >= 5, { what: "the fifth update", timeoutMs: 30_000, process: w.proc });
    assert.equal((await lastCounts(p.sink)).get("alice"), 1, "an expired window starts over");
    await stopProcess(w.proc.pid);
  });

  test("closed windows go with their time segment: no tombstone each, a range delete, and a restore that skips them", async () => {
    const p = await pipeline("segments", { window: { tumbling: "1m" }, emit: "onWindowClose" });
    // A few users, so that each task's changelog stays under one restore batch (1,000 records) and the
    // restore sees the final watermark table with the windows it closed.
    const users = Array.from({ length: 12 }, (_, i) => `user-${i}`);
    const stateDir = join(dir, "segments-state");
    /** Records `from` to `from + n`, one every 200 ms of event time: 300 a minute, 25 per user. */
    const minutes = (from: number, n: number): KeyedRecord[] =>
      Array.from({ length: n }, (_, i) => {
        const user = users[(from + i) % users.length] as string;
        return { key: user, value: JSON.stringify({ user, ts: T0 + (from + i) * 200 }) };
      });
    const sent: KeyedRecord[] = [];
    const send = async (rs: KeyedRecord[]) => {
      await produce(env.bootstrap, p.source, rs);
      sent.push(...rs);
    };
    /** How many windows the sink has, and whether any came twice. */
    const emitted = async () => {
      const seen = new Map<string, number>();
      for (const m of await readToEnd(env.bootstrap, p.sink)) {
        const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; n: number };
        const id = `${v.key}@${v.windowStart - T0}`;
        assert.equal(seen.has(id), false, `window ${id} was emitted twice`);
        seen.set(id, v.n);
      }
      return seen;
    };
    const expected = (closedMinutes: number) => {
      const out = new Map<string, number>();
      for (const r of sent) {
        const v = JSON.parse(r.value) as { user: string; ts: number };
        const start = Math.floor((v.ts - T0) / 60_000) * 60_000;
        if (start < closedMinutes * 60_000) out.set(`${v.user}@${start}`, (out.get(`${v.user}@${start}`) ?? 0) + 1);
      }
      return out;
    };
    const waitForWindows = async (w: RuntimeProcess, n: number) =>
      waitFor(async () => (await w.metric("conveyor_runtime_records_out_total")) >= n, { what: `${n} closed windows`, timeoutMs: 60_000, process: w.proc });

    // Minutes 0-4; minute 4 is still open when they are done, so its windows are in the changelog.
    await send(minutes(0, 1_500));
    const first = await startRuntime({ dir, namespace: "it", name: p.name, spec: p.spec, pod: "segments-0", stateDir });
    workers.push(first);
    await waitForWindows(first, 4 * users.length);
    // Minutes 5-9: minutes 4 to 8 close, and the segments before them are dropped.
    await send(minutes(1_500, 1_500));
    await waitForWindows(first, 9 * users.length);
    assert.deepEqual(await emitted(), expected(9), "each closed window, once, with its count");
    await waitFor(async () => (await first.metric("conveyor_runtime_state_segments_dropped_total")) > 0, {
      what: "a segment dropped",
      timeoutMs: 10_000,
      process: first.proc,
    });
    await stopProcess(first.proc.pid);
    const changelog = await readToEnd(env.bootstrap, p.changelog, { readCommitted: false });
    const tombstones = changelog.filter((m) => m.value === null || m.value === undefined || m.value.length === 0);
    assert.equal(tombstones.length, 0, "a closed window gets no tombstone: its segment goes whole, and retention takes its record");
    assert.ok(changelog.length >= 5 * users.length, `the changelog holds the windows that were open at a commit (${changelog.length} records)`);

    // A wiped directory restores from the changelog: the windows closed by the restored watermark are not
    // stored again (at least minute 4's, written while open), and none of them is emitted again.
    rmSync(stateDir, { recursive: true, force: true });
    await send(minutes(3_000, 600)); // minutes 10-11: minutes 9 and 10 close
    const restored = await startRuntime({ dir, namespace: "it", name: p.name, spec: p.spec, pod: "segments-1", stateDir });
    workers.push(restored);
    await waitForWindows(restored, 2 * users.length);
    const skipped = await restored.metric("conveyor_runtime_restore_closed_windows_skipped_total");
    process.stdout.write(`# segments: ${changelog.length} changelog records, 0 tombstones; a restore skipped ${skipped} closed windows\n`);
    assert.ok(skipped >= users.length, `the restore skipped ${skipped} closed windows, not minute 4's ${users.length}`);
    assert.deepEqual(await emitted(), expected(11), "minutes 9 and 10 close with their counts after the restore, and nothing earlier comes again");
    await stopProcess(restored.proc.pid);
  });
});
