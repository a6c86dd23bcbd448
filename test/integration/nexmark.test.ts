// Nexmark on the bed (issue 18): one generated data set (persons, auctions and bids, seeded) written once to
// three topics, and each query of examples/nexmark run on it as its example has it, by 2 exactly-once workers, one
// of them SIGKILLed halfway and started again as a StatefulSet would. Each query's read_committed output must
// be exactly the batch computation of the same data (test/support/nexmark/queries.ts): every row once, none
// missing; for a table (q18, q19), which writes each change of a key, the last value of every key. A last event per partition of each topic, past every window of the data,
// moves the watermarks past the data's windows.
// The queries run a few at a time, each with its own workers, group, internal topics and sink.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import { isAlive, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createInternalTopics, createTopic, groupLag, readToEnd } from "../support/kafka.ts";
import { type NexmarkDataSet, nexmarkDataSet } from "../support/nexmark/generator.ts";
import {
  eventCount,
  finalRows,
  isFlushRow,
  NEXMARK_PIPELINES,
  type NexmarkQuery,
  type NexmarkTopics,
  nexmarkInputs,
  nexmarkSpecFor,
  normalizedRow,
  writeEvents,
} from "../support/nexmark/pipelines.ts";
import { sortedRows } from "../support/nexmark/queries.ts";
import { compiled, WorkerSet } from "../support/runtime.ts";

const EVENTS = Number(process.env.CONVEYOR_NEXMARK_EVENTS ?? 40_000);
/** 200 events a second of event time: 40,000 events span 200 s, twenty 10 s windows. */
const EVENTS_PER_SECOND = 200;
const PARTITIONS = 4;
const DAY = 86_400_000;
/** Three days ago, 100 s before midnight: the data crosses a midnight (q17's days), and each day it touches ended a day ago or more. */
const BASE = Math.floor(Date.now() / DAY) * DAY - 2 * DAY - 100_000;

/**
 * Queries run this many at a time: most of a query's time is the group waiting out the killed worker's session
 * (10 s), not work, so they overlap well on 2 cores.
 */
const CONCURRENCY = 6;

describe("Nexmark: each query's output equals the batch computation, with a worker SIGKILLed halfway", { concurrency: CONCURRENCY }, () => {
  const env = bedEnv();
  const suffix = uniqueSuffix();
  const dir = join(env.state.dir, `nexmark-${suffix}`);
  const topics: NexmarkTopics = { persons: `nexmark-persons-${suffix}`, auctions: `nexmark-auctions-${suffix}`, bids: `nexmark-bids-${suffix}` };
  const a = admin(env.bootstrap);
  const sets: WorkerSet[] = [];
  let data: NexmarkDataSet;

  before(async () => {
    data = nexmarkDataSet({ seed: 20261205, events: EVENTS, baseTime: BASE, eventsPerSecond: EVENTS_PER_SECOND });
    for (const topic of Object.values(topics)) await createTopic(a, topic, PARTITIONS, { "retention.ms": "-1" });
    await writeEvents(env.bootstrap, topics, PARTITIONS, data, "nexmark-test");
  });

  after(async () => {
    for (const s of sets) await s.stopAll();
    await a.close();
  });

  for (const q of Object.keys(NEXMARK_PIPELINES) as NexmarkQuery[]) {
    test(`${q}`, async () => {
      const name = `nexmark-${q}-${suffix}`;
      const sink = `nexmark-${q}-out-${suffix}`;
      const spec = nexmarkSpecFor(q, { bootstrap: env.bootstrap, topics, sink });
      const inputs = nexmarkInputs(q);
      // what the group has left of the query's input topics
      const lag = async () => {
        let sum = 0n;
        for (const k of inputs) sum += await groupLag(a, topology.applicationId, topics[k]);
        return sum;
      };
      const topology = compiled(spec, { namespace: "it", name });
      await createTopic(a, sink, PARTITIONS, { "retention.ms": "-1" });
      await createInternalTopics(a, topology, PARTITIONS);
      const expected = sortedRows(NEXMARK_PIPELINES[q].expected(data) as object[]);
      assert.ok(expected.length > 0, `${q} has rows on this data`);

      const t0 = Date.now();
      // a directory per query: the workers' configs, logs and state volumes are its own
      const set = new WorkerSet({ dir: join(dir, q), namespace: "it", name, spec }, ["w-0", "w-1"]);
      sets.push(set);
      await set.startAll();
      const total = BigInt(inputs.reduce((n, k) => n + eventCount(data, k, PARTITIONS), 0));
      await waitFor(async () => (await lag()) <= total / 2n, {
        what: `${q}: the group to commit half its input (${inputs.join(", ")})`,
        timeoutMs: 180_000,
        intervalMs: 100,
      });
      const victim = set.workers.get("w-1");
      assert.ok(victim && isAlive(victim.proc.pid));
      set.kill("w-1", "SIGKILL");
      // until it is reaped it still looks alive, and a small query could finish before supervise() restarts it
      await waitFor(() => !isAlive(victim.proc.pid), { what: `${q}: the killed worker to be gone`, timeoutMs: 10_000, intervalMs: 20 });
      const table = NEXMARK_PIPELINES[q].kind === "table";
      const rows = async () => {
        const records = await readToEnd(env.bootstrap, sink, { readCommitted: true, timeoutMs: 60_000 });
        return (table ? finalRows(records) : records.map((m) => m.value))
          .map((v) => normalizedRow(q, JSON.parse(v.toString()) as Record<string, unknown>))
          .filter((r) => !isFlushRow(r));
      };
      // A table's rows change until its last update is in: it is waited for until it is the answer (a row count
      // says nothing of the values), and compared once more after.
      const done = async () => {
        const got = await rows();
        if (!table) return got.length >= expected.length;
        return got.length === expected.length && isDeepStrictEqual(sortedRows(got), expected);
      };
      await waitFor(
        async () => {
          await set.supervise();
          return (await lag()) === 0n && (await done());
        },
        { what: `${q}: its input read and ${expected.length} rows in the read_committed sink`, timeoutMs: 300_000, intervalMs: 1_000 },
      ).catch(async (err: unknown) => {
        throw new Error(`${err instanceof Error ? err.message : String(err)}; ${(await rows()).length} rows so far`);
      });
      const got = sortedRows(await rows());
      await set.stopAll();
      process.stdout.write(
        `# nexmark ${q}: ${total} records of ${inputs.join(", ")}, ${got.length} rows (expected ${expected.length}) in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${set.restarts} restart(s)\n`,
      );
      assert.ok(set.restarts >= 1, "the killed worker was started again");
      assert.deepEqual(got, expected);
    });
  }
});
