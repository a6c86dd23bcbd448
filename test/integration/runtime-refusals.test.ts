// Data-safety defect 5 (records the broker refuses crash-loop the worker). A window result that failed after the
// window went to the DLQ with the window's end as its Kafka timestamp, which a broker refuses when it lies more
// than message.timestamp.after.max.ms (an hour) ahead; the DLQ copy of a record near the limit, plus the reasons,
// was larger than a broker takes. Either refusal failed the whole batch, and the batch failed the same way after
// every restart. Now the DLQ record takes the triggering record's timestamp, and a copy too large is cut to fit.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigResourceTypes, IncrementalAlterConfigOperationTypes } from "@platformatic/kafka";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import { Producer } from "../../runtime/kafka/client.ts";
import { isAlive, waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, groupLag, header, readToEnd } from "../support/kafka.ts";
import { compiled, passThroughSpec, runtimeSuite, startRuntime } from "../support/runtime.ts";

describe("defect 5: records the broker would refuse", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-refusals");

  const send = async (messages: { topic: string; key?: Buffer; value: Buffer; headers?: Map<Buffer, Buffer> }[]) => {
    const p = new Producer({ clientId: "refusals", bootstrapBrokers: [env.bootstrap], acks: -1, idempotent: true });
    try {
      for (const m of messages) await p.send({ messages: [m] });
    } finally {
      await p.close();
    }
  };

  test("window results failing after a 30-day window: in the DLQ, stamped with the record's time, not the window's end", async () => {
    const name = `future-end-${suffix}`;
    const [source, sink, dlq] = ["src", "out", "dlq"].map((t) => `ref-${t}-${suffix}`) as [string, string, string];
    const spec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], startFrom: "earliest" as const, eventTime: "value.ts" },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "month", window: { tumbling: "720h" }, aggregate: { n: { count: {} } }, emit: "onUpdate" as const },
        // a step after the window that fails on every result (CEL int division by zero)
        { name: "ratio", map: "value.n / 0" },
      ],
      sink: { topic: sink },
      deadLetter: { topic: dlq },
    };
    const topology = compiled(spec, { namespace: "it", name });
    for (const t of [source, sink, dlq]) await createTopic(a, t, 1);
    await createInternalTopics(a, topology, 1);
    const now = Date.now();
    await send(
      Array.from({ length: 5 }, (_, i) => ({ topic: source, key: Buffer.from(`u${i}`), value: Buffer.from(JSON.stringify({ user: `u${i}`, ts: now })) })),
    );
    const w = await startRuntime({ dir, namespace: "it", name, spec });
    workers.push(w);
    // the results fail in the keyed stage, after the repartition topic: the source's lag says nothing of them
    await waitFor(async () => (await w.metric("conveyor_runtime_dead_letters_total")) >= 5, {
      what: "the five failed window results written to the DLQ",
      timeoutMs: 60_000,
      process: w.proc,
    });
    const dead = await readToEnd(env.bootstrap, dlq);
    assert.equal(dead.length, 5, "each window result that failed is a dead letter");
    for (const d of dead) {
      assert.equal(header(d.headers, DLQ_HEADERS.step), "ratio");
      assert.ok(Number(d.timestamp) <= Date.now() + 60_000, `stamped ${new Date(Number(d.timestamp)).toISOString()}: not the window's end`);
      const v = JSON.parse(d.value.toString()) as { windowEnd: number };
      assert.ok(v.windowEnd > now, "the window's end is in the value");
    }
    assert.ok(isAlive(w.proc.pid), "the worker is still running");
  });

  test("1.5 MB records from a source that allows them: their dead letters cut to fit, the others written, nothing replayed", async () => {
    const name = `large-${suffix}`;
    const [source, sink, dlq] = ["lsrc", "lout", "ldlq"].map((t) => `ref-${t}-${suffix}`) as [string, string, string];
    await createTopic(a, source, 1, { "max.message.bytes": String(3 * 1024 * 1024) });
    for (const t of [sink, dlq]) await createTopic(a, t, 1);
    const big = 1_500_000;
    const trace = (i: number) => new Map([[Buffer.from("trace"), Buffer.from(`t${i}`)]]);
    await send([
      { topic: source, key: Buffer.from("a"), value: Buffer.from(JSON.stringify({ i: 0 })), headers: trace(0) },
      // valid JSON, too large for the sink: a dead letter (encode) whose copy is too large too
      { topic: source, key: Buffer.from("b"), value: Buffer.from(JSON.stringify({ i: 1, pad: "x".repeat(big) })), headers: trace(1) },
      // not JSON: a dead letter (parse) whose copy is too large
      { topic: source, key: Buffer.from("c"), value: Buffer.alloc(big, "{"), headers: trace(2) },
      { topic: source, key: Buffer.from("d"), value: Buffer.from(JSON.stringify({ i: 3 })), headers: trace(3) },
    ]);
    const w = await startRuntime({
      dir,
      namespace: "it",
      name,
      spec: passThroughSpec({ bootstrap: env.bootstrap, source, sink, dlq }),
    });
    workers.push(w);
    await waitFor(async () => (await groupLag(a, `it.${name}`, source)) === 0n, { what: "the source read and committed", timeoutMs: 60_000, process: w.proc });
    const out = await readToEnd(env.bootstrap, sink);
    assert.deepEqual(
      out.map((m) => m.key.toString()),
      ["a", "d"],
    );
    const dead = await readToEnd(env.bootstrap, dlq);
    assert.deepEqual(
      dead.map((d) => [d.key.toString(), header(d.headers, DLQ_HEADERS.kind), header(d.headers, "conveyor.error.value-truncated")]),
      [
        ["b", "encode", String(Buffer.byteLength(JSON.stringify({ i: 1, pad: "x".repeat(big) })))],
        ["c", "parse", String(big)],
      ],
    );
    for (const d of dead) assert.ok(d.value.length < 1_000_000 && d.value.length > 900_000, `the copy keeps the value's first ${d.value.length} bytes`);
    assert.ok(isAlive(w.proc.pid), "the worker is still running");
  });

  test("a sink that takes at most 20,000-byte records, and a DLQ at most 8,000: the larger results in the DLQ, cut to fit, the worker on", async () => {
    const name = `small-sink-${suffix}`;
    const [source, sink, dlq] = ["ssrc", "sout", "sdlq"].map((t) => `ref-${t}-${suffix}`) as [string, string, string];
    await createTopic(a, source, 1);
    await createTopic(a, sink, 1, { "max.message.bytes": "20000" });
    await createTopic(a, dlq, 1, { "max.message.bytes": "8000" });
    await send(
      [100, 30_000, 200, 12_000, 300].map((n, i) => ({
        topic: source,
        key: Buffer.from(`k${i}`),
        value: Buffer.from(JSON.stringify({ i, pad: "x".repeat(n) })),
      })),
    );
    const w = await startRuntime({
      dir,
      namespace: "it",
      name,
      spec: passThroughSpec({ bootstrap: env.bootstrap, source, sink, dlq }),
    });
    workers.push(w);
    await waitFor(async () => (await groupLag(a, `it.${name}`, source)) === 0n, { what: "the source read and committed", timeoutMs: 60_000, process: w.proc });
    assert.deepEqual(
      (await readToEnd(env.bootstrap, sink)).map((m) => m.key.toString()),
      ["k0", "k2", "k3", "k4"],
      "12,000 bytes fit the sink; 30,000 do not",
    );
    const dead = await readToEnd(env.bootstrap, dlq);
    assert.deepEqual(
      dead.map((d) => [d.key.toString(), header(d.headers, DLQ_HEADERS.kind), header(d.headers, DLQ_HEADERS.step)]),
      [["k1", "encode", "sink"]],
    );
    assert.match(header(dead[0]?.headers ?? new Map(), DLQ_HEADERS.error) ?? "", /max.message.bytes \(20000\).*RECORD_TOO_LARGE/);
    assert.ok(Number(header(dead[0]?.headers ?? new Map(), DLQ_HEADERS.valueTruncated)) > 30_000, "cut to the DLQ's 8,000 bytes, and says so");
    assert.ok(isAlive(w.proc.pid), "the worker is still running");
  });

  // What the limits read at the start cannot predict: a topic reconfigured since, and a refusal no limit
  // describes (a compacted topic takes no record without a key). Before, the broker's refusal failed the batch
  // and the worker exited, to fail the same way after the restart when the limits did not explain it.
  test("refusals the worker could not predict: each refused record in the DLQ, the batch's others written once, the worker on", async () => {
    const name = `unpredicted-${suffix}`;
    const [source, sink, dlq] = ["usrc", "uout", "udlq"].map((t) => `ref-${t}-${suffix}`) as [string, string, string];
    for (const t of [source, sink, dlq]) await createTopic(a, t, 1);
    const alter = (configs: Record<string, string>) =>
      a.incrementalAlterConfigs({
        resources: [
          {
            resourceType: ConfigResourceTypes.TOPIC,
            resourceName: sink,
            configs: Object.entries(configs).map(([n, value]) => ({ name: n, configOperation: IncrementalAlterConfigOperationTypes.SET, value })),
          },
        ],
      });
    const record = (key: string | undefined, pad: number) => ({
      topic: source,
      ...(key ? { key: Buffer.from(key) } : {}),
      value: Buffer.from(JSON.stringify({ key, pad: "x".repeat(pad) })),
    });
    const w = await startRuntime({
      dir,
      namespace: "it",
      name,
      spec: { ...passThroughSpec({ bootstrap: env.bootstrap, source, sink, dlq }), processing: { guarantee: "exactlyOnce" } },
    });
    workers.push(w);
    const drained = async (what: string) => waitFor(async () => (await groupLag(a, `it.${name}`, source)) === 0n, { what, timeoutMs: 60_000, process: w.proc });
    await send([record("k0", 10)]);
    await drained("the first record through");

    // the sink takes at most 20,000 bytes from now on: the worker read 1 MiB when it started
    await alter({ "max.message.bytes": "20000" });
    await send([record("k1", 30_000), record("k2", 10)]);
    await drained("the records after the sink shrank through");

    // the sink is compacted from now on: a record without a key is refused (INVALID_RECORD)
    await alter({ "cleanup.policy": "compact" });
    await send([record("k3", 10), record(undefined, 10), record("k5", 10)]);
    await drained("the records after the sink was compacted through");

    assert.deepEqual(
      (await readToEnd(env.bootstrap, sink)).map((m) => m.key?.toString()),
      ["k0", "k2", "k3", "k5"],
      "every record the sink takes, once",
    );
    const dead = await readToEnd(env.bootstrap, dlq);
    assert.deepEqual(
      dead.map((d) => [d.key?.toString() ?? null, header(d.headers, DLQ_HEADERS.kind), header(d.headers, DLQ_HEADERS.step)]),
      [
        ["k1", "encode", "sink"],
        [null, "encode", "sink"],
      ],
    );
    assert.match(header(dead[0]?.headers ?? new Map(), DLQ_HEADERS.error) ?? "", /max.message.bytes \(20000\)/, "the limits, read again, name the cause");
    assert.match(header(dead[1]?.headers ?? new Map(), DLQ_HEADERS.error) ?? "", /INVALID_RECORD/, "the broker's own reason");
    assert.ok((await w.metric("conveyor_runtime_write_refusals_total")) >= 2, "each refusal counted");
    assert.ok(isAlive(w.proc.pid), "the worker is still running");
  });
});
