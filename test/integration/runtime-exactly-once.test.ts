// Exactly-once under faults, on a broker of its own (it is restarted mid-run). A backlog of keyed records, each
// key's records numbered 0, 1, 2, ..., runs through keyBy -> a day-long tumbling window (count, and the max
// sequence number) emitting on every update, with 2 workers. The test plays the kubelet: it SIGKILLs a random
// worker whenever the output has grown by a random step (every fifth stop is a SIGTERM instead: a drain under
// load), restarts any worker that exits (same pod name, same state directory, as a StatefulSet would), and
// restarts the broker once halfway.
// - exactlyOnce: the read_committed output holds, per key, exactly the updates n = 1..N_k, each once, and
//   update n carries sequence n-1: nothing lost, nothing counted twice, in order.
// - atLeastOnce: the same run loses nothing (every sequence number shows up in some update), and the test
//   reports how many duplicates it saw.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Producer } from "../../runtime/kafka/client.ts";
import { MARKER_HEADER } from "../../runtime/watermarks.ts";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { type KafkaCluster, startBroker, startKafka, stopKafka, waitForBroker } from "../env/kafka.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { ensureKafka } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, committedOffsets, createInternalTopics, createTopic, endOffsets, forEachToEnd, groupLag, readToEnd } from "../support/kafka.ts";
import { prng } from "../support/prng.ts";
import { compiled, WorkerSet } from "../support/runtime.ts";

const RECORDS = Number(process.env.CONVEYOR_EOS_RECORDS ?? 1_000_000);
const KILLS = Number(process.env.CONVEYOR_EOS_KILLS ?? 20);
const KEYS = 500;
const PARTITIONS = 6;
const T0 = Math.floor((Date.now() - 3 * 3_600_000) / 86_400_000) * 86_400_000;

interface Update {
  key: string;
  n: number;
  last: number;
}

describe("exactly-once under worker kills and a broker restart", () => {
  const env = bedEnv();
  let kafka: KafkaCluster | undefined;
  const sets: WorkerSet[] = [];

  after(async () => {
    for (const set of sets) await set.stopAll();
    if (kafka) await stopKafka(kafka);
  });

  async function run(guarantee: "exactlyOnce" | "atLeastOnce", seed: number) {
    const suffix = uniqueSuffix();
    const dir = join(env.state.dir, `eos-${guarantee}-${suffix}`);
    kafka = await startKafka({ dir: join(dir, "kafka") });
    const cluster = kafka;
    const bootstrap = cluster.bootstrap;
    const a = admin(bootstrap);
    const rand = prng(seed);
    try {
      const source = `eos-src-${suffix}`;
      const sink = `eos-out-${suffix}`;
      const name = `eos-${guarantee.toLowerCase()}-${suffix}`;
      const spec: StreamPipelineSpec = {
        kafka: { bootstrapServers: [bootstrap] },
        source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "1s", idleTimeout: "10m" } },
        steps: [
          { name: "by-key", keyBy: "value.k" },
          { name: "per-day", window: { tumbling: "24h" }, aggregate: { n: { count: {} }, last: { max: "value.seq" } }, emit: "onUpdate" },
        ],
        sink: { topic: sink },
        processing: { guarantee, commitInterval: "100ms" },
      };
      const topology = compiled(spec, { namespace: "it", name });
      for (const t of [source, sink]) await createTopic(a, t, PARTITIONS, { "retention.ms": "-1" });
      await createInternalTopics(a, topology, PARTITIONS);

      // The backlog: key k's records numbered in order, keys interleaved.
      const seqs = new Map<string, number>();
      const producer = new Producer({ clientId: "eos-test", bootstrapBrokers: [bootstrap], idempotent: true, acks: -1 });
      try {
        const batch = 5_000;
        for (let i = 0; i < RECORDS; i += batch) {
          const messages = [];
          for (let j = i; j < Math.min(RECORDS, i + batch); j++) {
            const k = `k${Math.floor(rand() * KEYS)}`;
            const seq = seqs.get(k) ?? 0;
            seqs.set(k, seq + 1);
            messages.push({ topic: source, key: Buffer.from(k), value: Buffer.from(JSON.stringify({ k, seq, ts: T0 + j })) });
          }
          await producer.send({ messages });
        }
      } finally {
        await producer.close();
      }

      // The kubelet's part: a worker that exits is started again, with its pod name and state directory.
      const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0", "w-1"]);
      sets.push(set);
      await set.startAll();
      const supervise = () => set.supervise();
      const produced = async () => (await endOffsets(a, sink, false)).reduce((x, y) => x + y, 0n);

      let kills = 0;
      let terms = 0;
      let brokerRestarted = false;
      const t0 = Date.now();
      // Kill i comes at a random point near the (i+1)-th of KILLS+1 equal parts of the output, so all of them
      // fall inside the run.
      const targets = Array.from({ length: KILLS }, (_, i) => BigInt(Math.floor((RECORDS * (i + 1 + (rand() - 0.5) / 2)) / (KILLS + 1))));
      while (kills < KILLS) {
        const target = targets[kills] as bigint;
        // A random moment: once the output has grown by a random amount.
        await waitFor(
          async () => {
            await supervise();
            return (await produced()) >= target;
          },
          { what: `the output to grow past ${target} (kill ${kills + 1} of ${KILLS})`, timeoutMs: 180_000, intervalMs: 100 },
        );
        const pod = set.pods[Math.floor(rand() * set.pods.length)] as string;
        const victim = set.workers.get(pod);
        if (victim && isAlive(victim.proc.pid)) {
          const drain = kills % 5 === 4;
          set.kill(pod, drain ? "SIGTERM" : "SIGKILL");
          if (drain) terms++;
          kills++;
        }
        if (!brokerRestarted && kills === Math.floor(KILLS / 2)) {
          const b = cluster.brokers[0];
          assert.ok(b);
          await stopProcess(cluster.pids.get(b.nodeId) ?? 0, 15_000);
          cluster.pids.set(b.nodeId, startBroker(b).pid);
          await waitForBroker(cluster, b);
          brokerRestarted = true;
        }
      }
      // Then let it finish: every source record consumed, every update in the sink.
      await waitFor(
        async () => {
          await supervise();
          return (await groupLag(a, topology.applicationId, source)) === 0n;
        },
        { what: "the group to consume the whole source", timeoutMs: 300_000, intervalMs: 500 },
      );
      let seen = 0;
      const updates = await waitFor(
        async () => {
          await supervise();
          const out = await readToEnd(bootstrap, sink, { readCommitted: true, timeoutMs: 120_000 });
          seen = out.length;
          return out.length >= RECORDS ? out : false;
        },
        { what: `${RECORDS} updates in the read_committed sink`, timeoutMs: 180_000, intervalMs: 2_000 },
      ).catch(async (err: unknown) => {
        // Stuck or lost? Where each partition's readers are against its stable and its last offset.
        const rows = [];
        const open: [string, number][] = [];
        for (const t of [source, ...topology.internalTopics, sink]) {
          const [stable, high] = [await endOffsets(a, t, true), await endOffsets(a, t, false)];
          const committed = await committedOffsets(a, topology.applicationId, t, stable.length);
          rows.push(`${t}: ${stable.map((e, p) => `p${p} committed ${committed[p]} stable ${e} end ${high[p]}`).join("; ")}`);
          stable.forEach((e, p) => e !== high[p] && open.push([t, p]));
        }
        const report = await lossReport(bootstrap, topology.internalTopics.find((x) => x.endsWith("-repartition")) as string, sink, seqs);
        // a report that fails says so, and never hides the failure it reports on
        const txns = await transactionsReport(bootstrap, open).catch(
          (e: unknown) => `(the transactions report failed: ${e instanceof Error ? e.message : String(e)})`,
        );
        const logs = set.pods.map((pod) => `${pod}:\n${lastLines(join(dir, `${pod}.log`), 25)}`).join("\n");
        const broker = lastLines(cluster.brokers[0]?.log ?? "", 30, / (WARN|ERROR) |Transaction|[Tt]xn/);
        throw new Error(
          `${err instanceof Error ? err.message : String(err)}\n${seen} updates; offsets:\n${rows.join("\n")}\n${report}\n${txns}\nthe workers' last log lines:\n${logs}\nthe broker's last warnings and transaction lines:\n${broker}`,
        );
      });
      const seconds = (Date.now() - t0) / 1000;
      await set.stopAll();
      const parsed: Update[] = updates.map((m) => {
        const v = JSON.parse(m.value.toString()) as { key: string; n: number; last: number };
        return { key: v.key, n: v.n, last: v.last };
      });
      return { parsed, seqs, kills, terms, restarts: set.restarts, brokerRestarted, seconds };
    } finally {
      await a.close();
      await stopKafka(cluster);
      kafka = undefined;
    }
  }

  test(`exactlyOnce: ${RECORDS} records, ${KILLS} SIGKILLs and a broker restart; every key's updates are 1..N once each`, async () => {
    const r = await run("exactlyOnce", 20261129);
    process.stdout.write(
      `# exactlyOnce: ${RECORDS} records, ${r.parsed.length} updates in ${r.seconds.toFixed(0)} s, ${r.kills} stops (${r.terms} of them SIGTERM), ${r.restarts} restarts, broker restarted: ${r.brokerRestarted}\n`,
    );
    assert.equal(r.kills, KILLS);
    assert.ok(r.terms > 0 || KILLS < 5, "some stops were SIGTERM drains");
    assert.ok(r.brokerRestarted);
    const byKey = new Map<string, Update[]>();
    for (const u of r.parsed) {
      const list = byKey.get(u.key) ?? [];
      list.push(u);
      byKey.set(u.key, list);
    }
    assert.equal(byKey.size, r.seqs.size, "every key has updates");
    for (const [key, n] of r.seqs) {
      const got = (byKey.get(key) ?? []).map((u) => u.n).sort((x, y) => x - y);
      assert.deepEqual(
        got,
        Array.from({ length: n }, (_, i) => i + 1),
        `key ${key}: updates 1..${n}, each once`,
      );
      for (const u of byKey.get(key) ?? []) assert.equal(u.last, u.n - 1, `key ${key}: update ${u.n} counts sequence ${u.n - 1}`);
    }
    assert.equal(r.parsed.length, RECORDS, "no duplicate and no loss");
  });

  test(`atLeastOnce: the same run loses nothing, and says how many duplicates it saw`, async () => {
    const r = await run("atLeastOnce", 20261130);
    const seen = new Map<string, Set<number>>();
    for (const u of r.parsed) {
      const s = seen.get(u.key) ?? new Set<number>();
      s.add(u.last);
      seen.set(u.key, s);
    }
    for (const [key, n] of r.seqs) {
      const s = seen.get(key) ?? new Set<number>();
      const missing = Array.from({ length: n }, (_, i) => i).filter((i) => !s.has(i));
      assert.deepEqual(missing, [], `key ${key}: every sequence number reached the sink`);
    }
    process.stdout.write(
      `# atLeastOnce: ${RECORDS} records, ${r.parsed.length} updates (${r.parsed.length - RECORDS} duplicates) in ${r.seconds.toFixed(0)} s, ${r.kills} stops (${r.terms} SIGTERM), ${r.restarts} restarts\n`,
    );
    assert.ok(r.parsed.length >= RECORDS);
  });
});

/**
 * Where missing updates went missing: a record the source stage never wrote to the repartition topic, or one
 * written there that no committed window update counted. The second kind is listed by repartition partition
 * and offset ranges, to set beside the workers' logs of where each assignment read from.
 */
async function lossReport(bootstrap: string, repartition: string, sink: string, seqs: Map<string, number>): Promise<string> {
  const at = new Map<string, { p: number; offset: bigint }>();
  let data = 0;
  await forEachToEnd(
    bootstrap,
    repartition,
    (m) => {
      if ([...m.headers.keys()].some((k) => k.toString() === MARKER_HEADER)) return;
      data++;
      const v = JSON.parse(m.value.toString()) as { k: string; seq: number };
      at.set(`${v.k}:${v.seq}`, { p: m.partition, offset: m.offset });
    },
    { readCommitted: true, timeoutMs: 120_000 },
  );
  const counted = new Set<string>();
  await forEachToEnd(
    bootstrap,
    sink,
    (m) => {
      const v = JSON.parse(m.value.toString()) as { key: string; last: number };
      counted.add(`${v.key}:${v.last}`);
    },
    { readCommitted: true, timeoutMs: 120_000 },
  );
  let neverRepartitioned = 0;
  const uncounted = new Map<number, bigint[]>();
  for (const [key, n] of seqs)
    for (let seq = 0; seq < n; seq++) {
      if (counted.has(`${key}:${seq}`)) continue;
      const where = at.get(`${key}:${seq}`);
      if (!where) neverRepartitioned++;
      else uncounted.set(where.p, [...(uncounted.get(where.p) ?? []), where.offset]);
    }
  const spans = (offsets: bigint[]) => {
    const sorted = offsets.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
    const out: string[] = [];
    let from = sorted[0];
    for (let i = 1; i <= sorted.length; i++)
      if (i === sorted.length || (sorted[i] as bigint) - (sorted[i - 1] as bigint) > 50n) {
        out.push(`${from}..${sorted[i - 1]} (${sorted.filter((o) => o >= (from as bigint) && o <= (sorted[i - 1] as bigint)).length})`);
        from = sorted[i];
      }
    return out.join(", ");
  };
  return [
    `repartition data records: ${data}; never repartitioned: ${neverRepartitioned}`,
    ...[...uncounted].map(([p, offsets]) => `repartition p${p}: ${offsets.length} records no update counted, at ${spans(offsets)}`),
  ].join("\n");
}

/**
 * For a failure report: what Kafka's own transactions tool says of the partitions left with an open transaction
 * (their producers), of hanging transactions, and of every transactional id's state.
 */
async function transactionsReport(bootstrap: string, open: [string, number][]): Promise<string> {
  const cp = `${await ensureKafka()}/*`;
  const tool = (...args: string[]) => {
    const r = spawnSync("java", ["-cp", cp, "org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", bootstrap, ...args], {
      encoding: "utf8",
      timeout: 60_000,
    });
    const text = `${r.stdout ?? ""}${r.stderr ?? ""}`
      .split("\n")
      .filter((l) => l.trim() && !l.startsWith("log4j:"))
      .join("\n");
    return `$ kafka-transactions ${args.join(" ")}\n${text || `(exit ${r.status}, ${r.error?.message ?? "no output"})`}`;
  };
  const out = open.map(([t, p]) => tool("describe-producers", "--topic", t, "--partition", String(p)));
  out.push(tool("find-hanging", "--broker-id", "1"));
  const list = tool("list");
  out.push(list);
  for (const id of list
    .split("\n")
    .slice(2, 10)
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((x) => x))
    out.push(tool("describe", "--transactional-id", id as string));
  return out.join("\n");
}

/** The last `n` lines of a file (those `only` matches, when given), or why there are none. */
function lastLines(file: string, n: number, only?: RegExp): string {
  try {
    const lines = readFileSync(file, "utf8").trimEnd().split("\n");
    return (only ? lines.filter((l) => only.test(l)) : lines).slice(-n).join("\n");
  } catch (err) {
    return `(${err instanceof Error ? err.message : String(err)})`;
  }
}
