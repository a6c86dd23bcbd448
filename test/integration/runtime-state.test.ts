// Window state on the real broker: a worker restarted with its state directory restores from its local
// checkpoint, reading far fewer changelog records than one whose directory was wiped, and both go on with the
// right counts; with a TTL, expired keys stop contributing and their tombstones reach the changelog.
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic, endOffsets, type KeyedRecord, produce, readToEnd } from "../support/kafka.ts";
import { compiled, type RuntimeProcess, startRuntime } from "../support/runtime.ts";

const PARTITIONS = 3;
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

  async function pipeline(name: string, ttl?: string) {
    const source = `state-src-${name}-${suffix}`;
    const sink = `state-out-${name}-${suffix}`;
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "1s", idleTimeout: "10m" } },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "per-hour", window: { tumbling: "1h" }, aggregate: { n: { count: {} } }, emit: "onUpdate" },
      ],
      sink: { topic: sink },
      processing: { commitInterval: "100ms" },
      ...(ttl ? { state: { ttl } } : {}),
    };
    const topology = compiled(spec, { namespace: "it", name: `${name}-${suffix}` });
    for (const t of [source, sink]) await createTopic(a, t, PARTITIONS);
    for (const t of topology.internalTopics) await createTopic(a, t, PARTITIONS, t.endsWith("-changelog") ? { "cleanup.policy": "compact" } : {});
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
    const p = await pipeline("ttl", "2s");
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
});
