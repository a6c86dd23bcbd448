// The runtime's stateless steps on the real broker: a worker process runs filter, map and flatMap in CEL with
// a sink key, and sends bad records (malformed JSON, wrong types, missing fields) to the dead-letter topic with
// headers that say why and where from. The output equals a reference computed here, and the counts balance:
// input = passed + filtered + dead letters.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import type { PipelineConfig } from "../../src/pipeline-config.ts";
import { compile } from "../../src/topology/compile.ts";
import { freePort, isAlive, type Started, startProcess, stopProcess, tail, waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, committedOffsets, createTopic, groupLag, type KeyedRecord, produce, readToEnd } from "../support/kafka.ts";
import { prng } from "../support/prng.ts";

const N = 6_000;

/** mulberry32, seeded: the same records on every run. */

type Kind = "good" | "malformed" | "wrongType" | "missing" | "oversized";
interface Generated extends KeyedRecord {
  kind: Kind;
  amount?: number;
  id: string;
}

function generate(n: number, seed: number): Generated[] {
  const rand = prng(seed);
  return Array.from({ length: n }, (_, i) => {
    const id = `order-${i}`;
    const roll = rand();
    const amount = Math.floor(rand() * 1000);
    if (roll < 0.03) return { kind: "malformed", id, key: id, value: `{"id":"${id}","amount":${amount}` };
    if (roll < 0.06) return { kind: "wrongType", id, key: id, value: JSON.stringify({ id, amount: `${amount} EUR` }) };
    if (roll < 0.08) return { kind: "missing", id, key: id, value: JSON.stringify({ id }) };
    // An id of 520 kB: the record fits, but its result, keyed by that id, would be over 1 MB.
    if (roll < 0.083) return { kind: "oversized", id, key: id, value: JSON.stringify({ id: `${id}-${"y".repeat(520_000)}`, amount: 200 + amount }) };
    return { kind: "good", id, amount, key: id, value: JSON.stringify({ id, amount, note: "x".repeat(60) }) };
  });
}

/** The pipeline's meaning, computed independently of CEL and the runtime. */
function reference(records: Generated[]) {
  const out: { key: string; value: string }[] = [];
  let filtered = 0;
  const dead = new Map<string, string>(); // id -> failing step
  for (const r of records) {
    if (r.kind === "malformed") dead.set(r.id, "source");
    else if (r.kind === "wrongType" || r.kind === "missing") dead.set(r.id, "big");
    else if (r.kind === "oversized") dead.set(r.id, "sink");
    else if ((r.amount ?? 0) <= 100) filtered++;
    else {
      const shaped = { id: r.id, amount: r.amount, cents: (r.amount ?? 0) * 100 };
      out.push({ key: r.id, value: JSON.stringify(shaped) });
      if ((r.amount ?? 0) >= 500) out.push({ key: `${r.id}-audit`, value: JSON.stringify({ id: `${r.id}-audit`, amount: r.amount, cents: 0 }) });
    }
  }
  return { out, filtered, dead };
}

describe("the runtime's stateless steps on the real broker", () => {
  const env = bedEnv();
  const suffix = uniqueSuffix();
  const source = `steps-src-${suffix}`;
  const sink = `steps-out-${suffix}`;
  const dlq = `steps-dlq-${suffix}`;
  const dir = join(env.state.dir, `runtime-steps-${suffix}`);
  let a: Admin;
  let worker: Started | undefined;
  let port = 0;

  const spec = (deadLetter: boolean, name: string): StreamPipelineSpec => ({
    kafka: { bootstrapServers: [env.bootstrap] },
    source: { topics: [source], startFrom: "earliest" },
    steps: [
      { name: "big", filter: "value.amount > 100" },
      { name: "shape", map: "{'id': value.id, 'amount': value.amount, 'cents': value.amount * 100}" },
      { name: "audit", flatMap: "value.amount >= 500 ? [value, {'id': value.id + '-audit', 'amount': value.amount, 'cents': 0}] : [value]" },
    ],
    sink: { topic: deadLetter ? sink : `${sink}-${name}`, key: "value.id" },
    ...(deadLetter ? { deadLetter: { topic: dlq } } : {}),
  });

  const startWorker = async (name: string, s: StreamPipelineSpec): Promise<Started> => {
    const compiled = compile(s, { namespace: "it", name: `${name}-${suffix}` });
    if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
    const config: PipelineConfig = {
      pipeline: { namespace: "it", name: `${name}-${suffix}` },
      consumerGroup: compiled.topology.applicationId,
      kafka: { bootstrapServers: [env.bootstrap] },
      topology: compiled.topology,
    };
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(config));
    port = await freePort();
    return startProcess({
      name: `runtime ${name}`,
      cmd: process.execPath,
      args: [join(repoRoot, "runtime/main.ts")],
      log: join(dir, `${name}.log`),
      cwd: repoRoot,
      env: { ...process.env, CONVEYOR_CONFIG: file, POD_NAME: `${name}-0`, POD_IP: "127.0.0.1", CONVEYOR_HTTP_PORT: String(port) },
    });
  };
  const metric = async (name: string): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    return text
      .split("\n")
      .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
      .reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
  };

  before(async () => {
    a = admin(env.bootstrap);
    await createTopic(a, source, 3);
    await createTopic(a, sink, 3);
    await createTopic(a, dlq, 1);
  });
  after(async () => {
    if (worker && isAlive(worker.pid)) await stopProcess(worker.pid);
    await a?.close();
  });

  const records = generate(N, 20261125);
  const ref = reference(records);

  test(`${N} records: the sink equals the reference, bad ones reach the DLQ with their reasons, and the counts balance`, async () => {
    // Small batches: a request of several 520 kB records would be over the broker's 1 MiB.
    await produce(env.bootstrap, source, records, 50);
    worker = await startWorker("main", spec(true, "main"));
    const group = `it.main-${suffix}`;
    await waitFor(async () => (await groupLag(a, group, source).catch(() => -1n)) === 0n, {
      what: "the worker to consume every record",
      timeoutMs: 90_000,
      process: worker,
    });

    const out = await readToEnd(env.bootstrap, sink);
    const got = out.map((m) => `${m.key.toString()} ${m.value.toString()}`).sort();
    const want = ref.out.map((r) => `${r.key} ${r.value}`).sort();
    assert.equal(got.length, want.length, "as many sink records as the reference");
    assert.deepEqual(got, want);

    // Every dead letter is exactly one bad record: the same bytes, the failing step, and where it came from.
    const bySource = new Map((await readToEnd(env.bootstrap, source)).map((m) => [`${m.partition}@${m.offset}`, m]));
    const dead = await readToEnd(env.bootstrap, dlq);
    assert.equal(dead.length, ref.dead.size);
    const seen = new Set<string>();
    for (const d of dead) {
      const h = Object.fromEntries([...d.headers].map(([k, v]) => [k.toString(), v.toString()]));
      const original = bySource.get(`${h[DLQ_HEADERS.partition]}@${h[DLQ_HEADERS.offset]}`);
      assert.ok(original, `the DLQ headers point at a source record: ${JSON.stringify(h)}`);
      assert.equal(h[DLQ_HEADERS.topic], source);
      assert.equal(d.value.toString(), original.value.toString(), "the dead letter carries the record as it came");
      const id = original.key.toString();
      assert.equal(h[DLQ_HEADERS.step], ref.dead.get(id), `the failing step of ${id}`);
      assert.equal(h[DLQ_HEADERS.kind], { source: "parse", sink: "encode" }[h[DLQ_HEADERS.step] ?? ""] ?? "eval");
      assert.ok((h[DLQ_HEADERS.error] ?? "").length > 0, "the error is named");
      assert.equal(h[DLQ_HEADERS.pipeline], `it/main-${suffix}`);
      seen.add(id);
    }
    assert.equal(seen.size, ref.dead.size, "no bad record twice, none missing");
    const sample = (kind: Kind) => dead.find((d) => records.find((r) => r.key === d.key.toString())?.kind === kind);
    const error = (kind: Kind) => sample(kind)?.headers && [...(sample(kind)?.headers ?? [])].find(([k]) => k.toString() === DLQ_HEADERS.error)?.[1].toString();
    assert.match(error("malformed") ?? "", /not JSON/);
    assert.match(error("wrongType") ?? "", /no such overload/);
    assert.match(error("missing") ?? "", /No such key: amount/);

    // The worker measures its own lag per partition: every source partition, at 0 once it has read them all.
    const lagLines = async () =>
      (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).split("\n").filter((l) => l.startsWith("conveyor_runtime_lag_records{"));
    const lags = await waitFor(
      async () => {
        const ls = await lagLines();
        return ls.length === 3 && ls.every((l) => l.endsWith(" 0")) ? ls : false;
      },
      { what: "the worker's lag gauges to read 0 for its 3 partitions", timeoutMs: 20_000, process: worker },
    );
    assert.ok(lags.every((l) => l.includes(`topic="${source}"`)));

    const input = await metric("conveyor_runtime_records_in_total");
    const filtered = await metric("conveyor_runtime_records_filtered_total");
    const deadLetters = await metric("conveyor_runtime_dead_letters_total");
    const passed = records.length - ref.dead.size - ref.filtered;
    process.stdout.write(`# ${input} in = ${passed} passed + ${filtered} filtered + ${deadLetters} dead letters; ${out.length} sink records\n`);
    assert.equal(input, N);
    assert.equal(filtered, ref.filtered);
    assert.equal(deadLetters, ref.dead.size);
    assert.equal(input, passed + filtered + deadLetters, "the counts balance exactly");
  });

  test("SIGTERM drains, commits and exits 0", async () => {
    assert.ok(worker);
    const w = worker;
    await stopProcess(w.pid);
    assert.match(readFileSync(w.log, "utf8"), /"msg":"stopped"/);
  });

  test("without a dead-letter topic, a bad record stops the worker before its offset is committed", async () => {
    const name = "nodlq";
    const topic = `${source}-${name}`;
    await createTopic(a, topic, 1);
    await createTopic(a, `${sink}-${name}`, 1);
    await produce(env.bootstrap, topic, [
      { key: "ok-1", value: JSON.stringify({ id: "ok-1", amount: 500 }) },
      { key: "bad", value: JSON.stringify({ id: "bad" }) },
      { key: "ok-2", value: JSON.stringify({ id: "ok-2", amount: 500 }) },
    ]);
    const s = spec(false, name);
    s.source.topics = [topic];
    worker = await startWorker(name, s);
    const w = worker;
    await waitFor(() => !isAlive(w.pid), { what: "the worker to stop on the bad record", timeoutMs: 60_000 });
    const log = readFileSync(w.log, "utf8");
    assert.match(log, /record [\w.-]+\/0@1 failed at step \\"big\\" \(eval\): No such key: amount; the pipeline has no deadLetter topic/, tail(w.log));
    const committed = await committedOffsets(a, `it.${name}-${suffix}`, topic, 1);
    assert.ok((committed[0] ?? 0n) <= 1n, `the bad record's offset must not be committed past: ${committed[0]}`);
  });
});
