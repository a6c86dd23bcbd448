// Issue 17: a rolling upgrade from the runtime before the state redesign (windows in the JS heap, RocksDB a
// mirror) to this one (windows in RocksDB, read through a bounded cache), on a running windowed pipeline of two
// exactly-once workers. The first part of the backlog runs on the previous runtime; then each worker in turn is
// stopped (SIGTERM: its tasks close with checkpoints) and started again on this one, over the same state
// directory, as a StatefulSet rolls its pods; then the rest of the backlog. No state is reset (the new runtime
// opens the old stores from their checkpoints), and every window comes out once, equal to a batch computation.
// Tumbling and session windows: an old session store has no index by key, and gets one when it opens.
// Then the same from the last release before the task model and the graph of sub-topologies (the runtime split
// into a stream thread, task manager, record collector and producer; processors as data): its stores, topics and
// state-schema hashes must carry over as they are.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isMarker } from "../../runtime/watermarks.ts";
import type { StepSpec } from "../../src/api-types.gen.ts";
import { stopProcess, waitFor } from "../env/proc.ts";
import { committedOffsets, forEachToEnd, groupLag, produce } from "../support/kafka.ts";
import { previousRuntime, runtimeSuite, WorkerSet, windowedPipeline } from "../support/runtime.ts";

/** The last commit whose runtime kept its windows in the JS heap. */
const HEAP_RUNTIME = "04e145679652c150dc5d5db6022cd686d939409b";
/** The last release before the task model and sub-topologies as data (issue 17, items 2 and 3). */
const BEFORE_GRAPH = "5d9fa24dd9b14711bca0de5439305379ced87de6";
const PARTITIONS = 2;
const USERS = 12;
const T0 = Date.parse("2023-03-01T10:00:00Z");
const SESSION_GAP_MS = 20_000;

interface Event {
  user: string;
  ts: number;
  amount: number;
}

/** Per user, an event every 7 s for 10 minutes, with a pause of a minute after minute 3 and 7 (sessions end). */
function events(): Event[] {
  const out: Event[] = [];
  for (let t = 0; t < 600_000; t += 7_000) {
    const minute = Math.floor(t / 60_000);
    if (minute === 4 || minute === 8) continue;
    for (let u = 0; u < USERS; u++) out.push({ user: `u${u}`, ts: T0 + t + u * 100, amount: (u + t / 1_000) % 13 });
  }
  return out;
}

/** The windows a batch computation gives: key/windowStart/windowEnd -> [count, sum]. */
function reference(es: Event[], window: "tumbling" | "session"): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  const byUser = new Map<string, Event[]>();
  for (const e of es) byUser.set(e.user, [...(byUser.get(e.user) ?? []), e]);
  for (const [user, list] of byUser) {
    list.sort((a, b) => a.ts - b.ts);
    if (window === "tumbling") {
      for (const e of list) {
        const start = Math.floor(e.ts / 60_000) * 60_000;
        const id = `${user}/${start}/${start + 60_000}`;
        const [n, s] = out.get(id) ?? [0, 0];
        out.set(id, [n + 1, s + e.amount]);
      }
      continue;
    }
    let cur: { start: number; end: number; n: number; s: number } | undefined;
    for (const e of list) {
      if (cur && e.ts < cur.end) {
        cur.end = Math.max(cur.end, e.ts + SESSION_GAP_MS);
        cur.n++;
        cur.s += e.amount;
        continue;
      }
      if (cur) out.set(`${user}/${cur.start}/${cur.end}`, [cur.n, cur.s]);
      cur = { start: e.ts, end: e.ts + SESSION_GAP_MS, n: 1, s: e.amount };
    }
    if (cur) out.set(`${user}/${cur.start}/${cur.end}`, [cur.n, cur.s]);
  }
  return out;
}

describe("issue 17: rolling upgrades from earlier runtimes", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-upgrade");

  const tumbling: NonNullable<StepSpec["window"]> = { tumbling: "1m" };
  const session: NonNullable<StepSpec["window"]> = { session: { gap: `${SESSION_GAP_MS / 1000}s` } };
  for (const [kind, window, from, label] of [
    ["tumbling", tumbling, HEAP_RUNTIME, "the runtime that kept windows in the heap"],
    ["session", session, HEAP_RUNTIME, "the runtime that kept windows in the heap"],
    ["session", session, BEFORE_GRAPH, "the runtime before the task model and the graph"],
  ] as ["tumbling" | "session", NonNullable<StepSpec["window"]>, string, string][]) {
    test(`${kind} windows, from ${label}: no reset, no window twice, none lost`, { timeout: 300_000 }, async () => {
      const name = `up-${kind}-${from.slice(0, 7)}-${suffix}`;
      const { spec, topology, source, sink, repartition } = await windowedPipeline(a, {
        bootstrap: env.bootstrap,
        prefix: `up-${kind}-${from.slice(0, 7)}`,
        suffix,
        name,
        window,
        partitions: PARTITIONS,
        rest: { processing: { guarantee: "exactlyOnce" } },
      });
      const old = previousRuntime(from, dir);
      const set = new WorkerSet({ dir: `${dir}/${kind}-${from.slice(0, 7)}`, namespace: "it", name, spec }, ["w-0", "w-1"]);
      const all = events();
      const half = all.filter((e) => e.ts < T0 + 300_000);
      const rest = all.filter((e) => e.ts >= T0 + 300_000);
      const send = (es: Event[]) =>
        produce(
          env.bootstrap,
          source,
          es.map((e) => ({ key: e.user, value: JSON.stringify(e) })),
        );
      // Every record of the data through both stages and committed. The source's lag reaches 0; the repartition
      // topic's rarely does at the moment of a look, as each worker writes a watermark marker into it every 200 ms
      // or so (a CI run saw its lag never at 0 in 2 minutes, the data long done): there, the group's committed
      // offsets must be past the last record that is not a marker.
      const drained = (what: string) =>
        waitFor(
          async () => {
            if ((await groupLag(a, topology.applicationId, source)) !== 0n) return false;
            const lastData = Array.from({ length: PARTITIONS }, () => 0n);
            await forEachToEnd(env.bootstrap, repartition, (m) => {
              if (!isMarker(m) && m.offset + 1n > (lastData[m.partition] ?? 0n)) lastData[m.partition] = m.offset + 1n;
            });
            const committed = await committedOffsets(a, topology.applicationId, repartition, PARTITIONS);
            return lastData.every((o, p) => o === 0n || (committed[p] ?? -1n) >= o);
          },
          { what, timeoutMs: 120_000, intervalMs: 1_000 },
        );
      try {
        for (const pod of set.pods) workers.push(await set.start(pod, old));
        // Both previous workers in the group, each with its source partition, before any record: the runtime of
        // 5d9fa24 can wedge a partition handed over by a cooperative rebalance while records flow (a CI run saw
        // the new owner read nothing of it for 2 minutes). That defect is the old runtime's and not this test's
        // subject; the rolling update below rebalances with records flowing, on this runtime's side.
        await waitFor(
          async () => {
            const g = (await a.describeGroups({ groups: [topology.applicationId] })).get(topology.applicationId);
            if (g?.state !== "Stable" || g.members.size !== set.pods.length) return false;
            return [...g.members.values()].every((m) => (m.assignments?.get(source)?.partitions.length ?? 0) === PARTITIONS / set.pods.length);
          },
          { what: "both previous workers settled in the group, a source partition each", timeoutMs: 60_000 },
        );
        await send(half);
        await drained("the first half through the previous runtime");
        // the rolling update: one pod at a time, the highest ordinal first, as a StatefulSet rolls
        for (const pod of [...set.pods].reverse()) {
          const w = set.workers.get(pod);
          if (w) await stopProcess(w.proc.pid);
          workers.push(await set.start(pod));
        }
        await send(rest);
        // every source partition's watermark past the last window, so that every window closes
        await produce(
          env.bootstrap,
          source,
          Array.from({ length: USERS }, (_, u) => ({ key: `u${u}`, value: JSON.stringify({ user: `u${u}`, ts: T0 + 3_600_000, amount: 0 }) })),
        );
        const expected = reference(all, kind);
        const results = new Map<string, [number, number][]>();
        await waitFor(
          async () => {
            results.clear();
            await forEachToEnd(env.bootstrap, sink, (m) => {
              const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; windowEnd: number; n: number; total: number };
              const id = `${v.key}/${v.windowStart}/${v.windowEnd}`;
              results.set(id, [...(results.get(id) ?? []), [v.n, v.total]]);
            });
            return results.size >= expected.size;
          },
          { what: "every window's result in the sink", timeoutMs: 120_000, intervalMs: 1_000 },
        );
        const twice = [...results].filter(([, rs]) => rs.length > 1).map(([id]) => id);
        const wrong = [...expected].filter(([id, [n, s]]) => {
          const got = results.get(id)?.[0];
          return !got || got[0] !== n || Math.abs(got[1] - s) > 1e-9;
        });
        const unexpected = [...results.keys()].filter((id) => !expected.has(id));
        assert.deepEqual(twice, [], "no window twice");
        assert.deepEqual(
          wrong.map(([id, v]) => `${id}: expected ${v.join("/")}, got ${results.get(id)?.[0]?.join("/") ?? "none"}`),
          [],
          "every window as the batch computation has it",
        );
        assert.deepEqual(unexpected, [], "no window the batch computation lacks");
        assert.equal(set.restarts, 0);
      } finally {
        await set.stopAll();
      }
    });
  }
});
