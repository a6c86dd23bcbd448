// `conveyor describe` (and `conveyor top`) on the bed, against a windowed, lag-scaled pipeline with a backlog, dead letters and a
// scale-up: each section's figures equal what Kafka's own kafka-consumer-groups --describe (from the bed's
// jars), the status and the Events say. Offsets move while the workers run, so the tool runs just before and
// just after, and describe's figures must lie between its two readings.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import type { StreamPipelineSpec } from "../../src/api.ts";
import type { Description } from "../../src/cli/describe.ts";
import { waitFor } from "../env/proc.ts";
import { ensureKafka, repoRoot } from "../env/toolchain.ts";
import { uniqueSuffix } from "../support/bed.ts";
import { createTopic, endOffsets, produce } from "../support/kafka.ts";
import { applyPipeline, withDiagnostics } from "../support/scaling.ts";
import { operatorSuite } from "../support/suite.ts";

const run = promisify(execFile);
const NAME = "orders-per-user";
const PARTITIONS = 2;
const GOOD = 16_000;
const BAD = 30;
/** each worker reads at most this: the backlog outlasts the scale-up and the readings */
const PER_WORKER = 150;

interface ToolRow {
  topic: string;
  partition: number;
  current?: bigint;
  end: bigint;
  lag?: bigint;
  clientId?: string;
}

/** kafka-consumer-groups.sh --describe, as Kafka's script runs it, parsed by its header's columns. */
async function consumerGroups(bootstrap: string, group: string): Promise<ToolRow[]> {
  const { stdout } = await run(
    "java",
    [
      "-cp",
      `${await ensureKafka()}/*`,
      "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
      "--bootstrap-server",
      bootstrap,
      "--describe",
      "--group",
      group,
    ],
    { encoding: "utf8", timeout: 60_000 },
  );
  const lines = stdout.split("\n").filter((l) => l.trim() !== "");
  const header = lines.findIndex((l) => l.startsWith("GROUP"));
  assert.ok(header >= 0, `no table in kafka-consumer-groups' output:\n${stdout}`);
  const cols = (lines[header] as string).trim().split(/\s+/);
  const col = (cells: string[], name: string) => cells[cols.indexOf(name)];
  const offset = (v: string | undefined) => (v === undefined || v === "-" ? undefined : BigInt(v));
  return lines.slice(header + 1).map((l) => {
    const cells = l.trim().split(/\s+/);
    const clientId = col(cells, "CLIENT-ID");
    return {
      topic: col(cells, "TOPIC") as string,
      partition: Number(col(cells, "PARTITION")),
      ...(offset(col(cells, "CURRENT-OFFSET")) !== undefined ? { current: offset(col(cells, "CURRENT-OFFSET")) } : {}),
      end: offset(col(cells, "LOG-END-OFFSET")) ?? -1n,
      ...(offset(col(cells, "LAG")) !== undefined ? { lag: offset(col(cells, "LAG")) } : {}),
      ...(clientId && clientId !== "-" ? { clientId } : {}),
    };
  });
}

describe("conveyor describe", () => {
  const suffix = uniqueSuffix();
  const source = `describe-src-${suffix}`;
  const sink = `describe-out-${suffix}`;
  const late = `describe-late-${suffix}`;
  const dlq = `describe-dlq-${suffix}`;
  const s = operatorSuite("describe", async (s) => {
    await createTopic(s.a, source, PARTITIONS);
    for (const t of [sink, late, dlq]) await createTopic(s.a, t, 1);
  });
  const cli = async (...args: string[]) =>
    (
      await run(process.execPath, [join(repoRoot, "src/cli/main.ts"), ...args], {
        encoding: "utf8",
        env: { ...process.env, KUBECONFIG: s.env.kubeconfig },
        timeout: 60_000,
      })
    ).stdout;

  test("a windowed pipeline with a backlog, dead letters and a scale-up: Kafka's, the status' and the Events' figures", { timeout: 300_000 }, async () => {
    const now = Date.now();
    const good = Array.from({ length: GOOD }, (_, i) => ({
      key: `u${i % 40}`,
      value: JSON.stringify({ user: `u${i % 40}`, amount: i % 100, ts: now - 60_000 + Math.floor((i * 60_000) / GOOD) }),
    }));
    const bad = Array.from({ length: BAD }, (_, i) => ({ key: `bad${i}`, value: `{not json ${i}` }));
    await produce(s.env.bootstrap, source, [...bad, ...good]);
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [s.env.bootstrap] },
      source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "5s" } },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "per-10s", window: { tumbling: "10s", grace: "1s" }, aggregate: { n: { count: {} }, total: { sum: "value.amount" } }, late: { topic: late } },
      ],
      sink: { topic: sink },
      deadLetter: { topic: dlq },
      processing: { maxRecordsPerSecond: PER_WORKER },
      scaling: { mode: "lag", minReplicas: 1, maxReplicas: PARTITIONS, targetCatchUp: "10s", scaleDownStabilization: "5m" },
    };
    applyPipeline(s.kubectl, s.ns, NAME, spec);
    const group = `${s.ns}.${NAME}`;
    const fail = withDiagnostics(s.op, s.kubectl, s.ns);
    // Two ready workers (the scale-up), watermarks in the status, every dead letter written, and a commit on
    // each source partition.
    await waitFor(
      async () => {
        const p = await s.read(NAME);
        const dead = (await endOffsets(s.a, dlq)).reduce((x, y) => x + y, 0n);
        return p.status?.readyReplicas === 2 && p.status.watermarks?.low !== undefined && dead >= BigInt(BAD);
      },
      { what: "two ready workers, watermarks and the dead letters", timeoutMs: 150_000, process: s.op.proc },
    ).catch(fail);
    await waitFor(
      async () => (await consumerGroups(s.env.bootstrap, group)).filter((r) => r.topic === source && r.current !== undefined).length === PARTITIONS,
      {
        what: "a commit on each source partition",
        timeoutMs: 60_000,
      },
    );

    const before = await consumerGroups(s.env.bootstrap, group);
    const statusBefore = (await s.read(NAME)).status;
    const d = JSON.parse(await cli("describe", NAME, "-n", s.ns, "-o", "json")) as Description;
    const statusAfter = (await s.read(NAME)).status;
    const after = await consumerGroups(s.env.bootstrap, group);

    assert.deepEqual(d.errors, [], "describe read every part");
    assert.equal(d.consumerGroup, group);
    // Partitions: the source's and the repartition topic's, each between the tool's two readings.
    const repartition = d.partitions.filter((r) => r.kind === "repartition");
    assert.equal(d.partitions.filter((r) => r.kind === "source").length, PARTITIONS);
    assert.equal(repartition.length, PARTITIONS);
    let backlog = 0n;
    for (const r of d.partitions) {
      const b = before.find((x) => x.topic === r.topic && x.partition === r.partition);
      const a = after.find((x) => x.topic === r.topic && x.partition === r.partition);
      assert.ok(b && a, `kafka-consumer-groups shows ${r.topic}/${r.partition}`);
      const where = `${r.topic}/${r.partition}: describe ${JSON.stringify(r)}, the tool before ${b.current}/${b.end}, after ${a.current}/${a.end}`;
      assert.ok(r.end !== undefined && BigInt(r.end) >= b.end && BigInt(r.end) <= a.end, `end offset, ${where}`);
      if (b.current !== undefined) {
        assert.ok(r.committed !== undefined && BigInt(r.committed) >= b.current && BigInt(r.committed) <= (a.current ?? -1n), `committed offset, ${where}`);
        assert.equal(BigInt(r.lag ?? -1), BigInt(r.end) - BigInt(r.committed), `lag is end - committed, ${where}`);
      }
      // the owner, when no rebalance moved the partition between the tool's readings
      if (b.clientId !== undefined && b.clientId === a.clientId) assert.equal(r.owner, b.clientId, `owner, ${where}`);
      backlog += BigInt(r.lag ?? 0);
    }
    // the source drains first (the keyBy half is quick); the windowed half behind the repartition topic is work
    // the same workers still have to do, as the autoscaler counts it
    assert.ok(backlog > 0n, "the pipeline still had a backlog (source or repartition) when described");
    assert.ok(
      before.some((r) => r.clientId !== undefined),
      "kafka-consumer-groups names the members that own the partitions",
    );
    // Workers and scaling, as the status says.
    assert.equal(d.workers.desired, 2);
    assert.equal(d.group?.members, 2);
    assert.ok([statusBefore?.scaling?.desired, statusAfter?.scaling?.desired].includes(d.workers.scaling?.desired));
    // Watermarks: the status' own, with how far behind now.
    assert.ok([statusBefore?.watermarks?.observedTime, statusAfter?.watermarks?.observedTime].includes(d.watermarks?.observedTime), "the status' watermarks");
    const w = [statusBefore, statusAfter].find((x) => x?.watermarks?.observedTime === d.watermarks?.observedTime)?.watermarks;
    assert.equal(d.watermarks?.low, w?.low);
    assert.deepEqual(
      d.watermarks?.sources.map((x) => [x.topic, x.partition, x.watermark]),
      (w?.sources ?? []).map((x) => [x.topic, x.partition, x.watermark]),
    );
    assert.ok((d.watermarks?.lowBehindMs ?? 0) > 0);
    // State: every worker holds some, on a volume of the size the spec asks (the default 1Gi).
    assert.equal(d.state.length, 2);
    for (const w of d.state) {
      assert.equal(w.capacityBytes, 2 ** 30, `${w.pod}'s volume`);
      assert.ok((w.stateBytes ?? 0) >= 0, `${w.pod} reports its state bytes`);
    }
    assert.ok(
      d.state.some((w) => (w.stateBytes ?? 0) > 0),
      "a worker holds windows",
    );
    // Dead letters: all of them, written within the hour, as the source's parse failures.
    assert.deepEqual(d.deadLetters?.byKind, [{ kind: "parse", step: "source", count: BAD }]);
    assert.equal(d.deadLetters?.count, BAD);
    assert.equal(d.deadLetters?.atLeast, false);
    assert.match(d.deadLetters?.last[0]?.error ?? "", /JSON/);
    // The scale-up, as the Events say.
    const events = JSON.parse(s.kubectl(["get", "events", "-n", s.ns, "--field-selector", `involvedObject.name=${NAME},reason=ScaledUp`, "-o", "json"])) as {
      items: { message?: string }[];
    };
    assert.ok(events.items.length > 0);
    assert.ok(
      d.history.some((h) => h.reason === "ScaledUp" && h.message === events.items[0]?.message),
      `the ScaledUp Event in ${JSON.stringify(d.history)}`,
    );

    // conveyor top: the pipeline's line, as its status says.
    const lagBefore = (await s.read(NAME)).status?.lag;
    const top = await cli("top", "-n", s.ns, "--once");
    const lagAfter = (await s.read(NAME)).status?.lag;
    const row = top.split("\n").find((l) => l.startsWith(`${NAME} `));
    assert.ok(row, top);
    const cells = row.trim().split(/\s+/);
    assert.equal(cells[1], "2/2", row);
    assert.ok(
      [lagBefore, lagAfter].map((n) => n?.toLocaleString("en-US")).includes(cells[2]),
      `top's lag ${cells[2]}, the status' ${lagBefore} and ${lagAfter}`,
    );
    assert.match(row, /WorkersReady/);

    // The text: every section, in 80 columns, with the trend of 6 s of readings.
    const text = await cli("describe", NAME, "-n", s.ns, "--watch", "6");
    assert.match(text, /^TREND, every 2s for [4-8]s\n {2}lag {9}[▁▂▃▄▅▆▇█]{3,5} /m);
    for (const l of text.trimEnd().split("\n")) assert.ok(l.length <= 80, `${l.length} columns: ${l}`);
    for (const section of ["CONDITIONS", "PARTITIONS", "WATERMARKS", "STATE", "DEAD LETTERS", "TREND", "SCALING AND PARTITION GROWTH"])
      assert.match(text, new RegExp(`^${section}`, "m"));
    process.stdout.write(`# conveyor describe ${NAME}:\n${text.replace(/^/gm, "#   ")}`);
  });
});
