// Cooperative rebalancing on the real broker: the workers' group takes the cooperative protocol, and when a
// third worker joins two, each of the two revokes only the partitions that move to another worker, keeps the
// rest through both rounds, and every record still reaches the sink exactly once under a steady load.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic, groupLag, produceSteadily, readToEnd } from "../support/kafka.ts";
import { compiled, type RuntimeProcess, startRuntime } from "../support/runtime.ts";

const PARTITIONS = 6;
const REVOKED = "a cooperative rebalance revoked partitions; going on with the rest";

interface LogLine {
  msg: string;
  revoked?: string[];
  generation?: number;
  assignments?: { topic: string; partitions: number[] }[];
}

const logOf = (w: RuntimeProcess): LogLine[] =>
  readFileSync(w.proc.log, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as LogLine);

describe("cooperative rebalancing: a worker joins two", () => {
  const env = bedEnv();
  const suffix = uniqueSuffix();
  const name = `rb-${suffix}`;
  const source = `rb-src-${suffix}`;
  const sink = `rb-out-${suffix}`;
  const dir = join(env.state.dir, `rebalance-${suffix}`);
  const workers: RuntimeProcess[] = [];
  let a: Admin;

  before(async () => {
    a = admin(env.bootstrap);
    await createTopic(a, source, PARTITIONS);
    await createTopic(a, sink, PARTITIONS);
  });
  after(async () => {
    for (const w of workers) if (isAlive(w.proc.pid)) await stopProcess(w.proc.pid);
    await a?.close();
  });

  test("only the partitions that move are revoked, the rest are kept through both rounds, and no record is lost or doubled", async () => {
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], startFrom: "earliest" },
      steps: [{ name: "tag", map: "{'id': value.id, 'seen': true}" }],
      sink: { topic: sink },
      processing: { guarantee: "exactlyOnce", commitInterval: "100ms" },
    };
    const group = compiled(spec, { namespace: "it", name }).applicationId;
    const start = async (ordinal: number) => {
      const w = await startRuntime({ dir, namespace: "it", name, spec, pod: `${name}-${ordinal}` });
      workers.push(w);
      return w;
    };
    /**
     * The group stable with one member per range, each holding its range of the source: the last round of a
     * rebalance is over (between the rounds of a cooperative one the group is Stable too, with partitions
     * held back).
     */
    const settledAs = (ranges: number[][]) =>
      waitFor(
        async () => {
          const g = (await a.describeGroups({ groups: [group] })).get(group);
          if (g?.state !== "Stable" || g.members.size !== ranges.length) return false;
          const held = [...g.members.values()].map((m) => [...(m.assignments?.get(source)?.partitions ?? [])].sort((x, y) => x - y));
          const sorted = (xs: number[][]) => xs.map((x) => x.join(",")).sort();
          return JSON.stringify(sorted(held)) === JSON.stringify(sorted(ranges)) ? g : false;
        },
        { what: `the group settled as ${JSON.stringify(ranges)}`, timeoutMs: 60_000 },
      );
    const revoked = (w: RuntimeProcess) => logOf(w).filter((l) => l.msg === REVOKED);

    const [w0, w1] = [await start(0), await start(1)];
    await settledAs([
      [0, 1, 2],
      [3, 4, 5],
    ]);
    // Whichever of the two joined first held all 6 for a while and gave half up: that round is not this test's.
    const [before0, before1] = [revoked(w0).length, revoked(w1).length];
    // A steady load all through the rebalance: batches are in flight when partitions are revoked.
    const load = produceSteadily(env.bootstrap, source, { rate: 2_000, durationMs: 12_000, value: (id) => Buffer.from(JSON.stringify({ id })) });
    await waitFor(async () => (await w0.metric("conveyor_runtime_records_in_total")) > 0 && (await w1.metric("conveyor_runtime_records_in_total")) > 0, {
      what: "both workers reading",
      timeoutMs: 30_000,
      process: w0.proc,
    });
    const w2 = await start(2);
    const g = await settledAs([
      [0, 1],
      [2, 3],
      [4, 5],
    ]);
    assert.equal(g.protocol, "cooperative-sticky", "every member offers the cooperative protocol, and the group takes it");
    const { perPartition } = await load;
    const produced = perPartition.reduce((x, y) => x + y, 0);
    await waitFor(async () => (await groupLag(a, group, source)) === 0n, { what: "the group's lag to reach 0", timeoutMs: 90_000, process: w2.proc });

    // The ordinal ranges: 2 workers hold [0,1,2] and [3,4,5]; 3 hold [0,1], [2,3] and [4,5]. Partition 2 moves
    // from worker 0 to 1, and 4 and 5 from worker 1 to 2: only those are revoked, in a round of their own.
    const [r0, r1] = [revoked(w0).slice(before0), revoked(w1).slice(before1)];
    assert.deepEqual(
      r0.map((l) => l.revoked),
      [[`${source}:2`]],
      "worker 0 revoked partition 2 alone",
    );
    assert.deepEqual(
      r1.map((l) => l.revoked),
      [[`${source}:4`, `${source}:5`]],
      "worker 1 revoked partitions 4 and 5 alone",
    );
    assert.deepEqual(r0[0]?.assignments, [{ topic: source, partitions: [0, 1] }], "worker 0 kept 0 and 1 through the revoking round");
    assert.deepEqual(r1[0]?.assignments, [{ topic: source, partitions: [3] }], "worker 1 kept 3 through the revoking round");
    const lastJoin = (w: RuntimeProcess) => logOf(w).findLast((l) => l.msg === "joined consumer group");
    assert.deepEqual(lastJoin(w0)?.assignments, [{ topic: source, partitions: [0, 1] }]);
    assert.deepEqual(lastJoin(w1)?.assignments, [{ topic: source, partitions: [2, 3] }], "the next round gave worker 1 partition 2");
    assert.deepEqual(lastJoin(w2)?.assignments, [{ topic: source, partitions: [4, 5] }]);
    assert.equal(revoked(w2).length, 0, "the new worker revoked nothing");

    const ids = (await readToEnd(env.bootstrap, sink)).map((m) => (JSON.parse(m.value.toString()) as { id: number }).id);
    const twice = ids.length - new Set(ids).size;
    process.stdout.write(
      `# cooperative: ${produced} records through a 2 -> 3 rebalance; revoked ${r0[0]?.revoked} and ${r1[0]?.revoked}; ${ids.length} in the sink, ${twice} twice\n`,
    );
    assert.equal(twice, 0, "a record reached the sink twice");
    assert.equal(ids.length, produced, "every record reached the sink");
  });
});
